//! Reading Kubernetes objects as `kubectl get … -o yaml` (or `-o json`)
//! prints them: single documents, multi-document YAML and `kind: List`
//! (JSON is read by the same YAML parser). Objects are kept as JSON values
//! and read field by field, so that a problem names the field it is in.

use std::collections::BTreeMap;

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

/// One object: its kind, `namespace/name` and body.
#[derive(Debug, Clone)]
pub struct Object {
    pub(crate) kind: String,
    pub(crate) api_version: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) body: Value,
}

impl Object {
    /// `Kind namespace/name`, as problems name it.
    pub(crate) fn id(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    /// `metadata.creationTimestamp` (RFC 3339 sorts as text).
    pub(crate) fn created(&self) -> &str {
        self.body
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `metadata.annotations`, the string-valued ones.
    pub(crate) fn annotations(&self) -> BTreeMap<&str, &str> {
        self.body
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A label's value.
    pub(crate) fn label(&self, key: &str) -> Option<&str> {
        self.body
            .pointer("/metadata/labels")
            .and_then(|l| l.get(key))
            .and_then(Value::as_str)
    }

    /// The field at `path` (dotted, as problems print it).
    pub(crate) fn at(&self, path: &'static str) -> Field<'_> {
        let mut value = Some(&self.body);
        for key in path.split('.') {
            value = value.and_then(|v| v.get(key));
        }
        Field {
            value,
            path: path.to_string(),
        }
    }
}

/// A field of an object and where it is, for problems.
#[derive(Debug, Clone)]
pub(crate) struct Field<'a> {
    pub(crate) value: Option<&'a Value>,
    pub(crate) path: String,
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub(crate) field: String,
    pub(crate) message: String,
}

impl Bad {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Bad {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl<'a> Field<'a> {
    /// A member of this object.
    pub(crate) fn get(&self, key: &str) -> Field<'a> {
        Field {
            value: self.value.and_then(|v| v.get(key)),
            path: format!("{}.{key}", self.path),
        }
    }

    /// A string, if present (`null` counts as absent).
    pub(crate) fn text(&self) -> Result<Option<&'a str>, Bad> {
        match self.value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.bad(format!("expected a string, found {other}"))),
        }
    }

    /// A string that must be there.
    pub(crate) fn required(&self) -> Result<&'a str, Bad> {
        self.text()?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| self.bad("missing"))
    }

    /// A whole number, if present.
    pub(crate) fn number(&self) -> Result<Option<i64>, Bad> {
        match self.value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.bad(format!("expected a whole number, found {n}"))),
            Some(other) => Err(self.bad(format!("expected a number, found {other}"))),
        }
    }

    /// A port given by number or by name (`IntOrString`).
    pub(crate) fn port(&self) -> Result<Option<PortRef>, Bad> {
        match self.value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                Some(p) if p > 0 => Ok(Some(PortRef::Number(p))),
                _ => Err(self.bad(format!("{n} is not a port"))),
            },
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(match s.parse::<u16>() {
                Ok(p) if p > 0 => PortRef::Number(p),
                _ => PortRef::Name(s.clone()),
            })),
            Some(other) => Err(self.bad(format!("expected a port number or name, found {other}"))),
        }
    }

    /// The items of a list (absent: none), each with its index in its path.
    pub(crate) fn items(&self) -> Result<Vec<Field<'a>>, Bad> {
        match self.value {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, v)| Field {
                    value: Some(v),
                    path: format!("{}[{i}]", self.path),
                })
                .collect()),
            Some(other) => Err(self.bad(format!("expected a list, found {other}"))),
        }
    }

    pub(crate) fn is_present(&self) -> bool {
        !matches!(self.value, None | Some(Value::Null))
    }

    pub(crate) fn bad(&self, message: impl Into<String>) -> Bad {
        Bad::new(self.path.clone(), message)
    }
}

/// A port by number or by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PortRef {
    Number(u16),
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(name) => f.write_str(name),
        }
    }
}

/// Why an input could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub(crate) struct Unreadable {
    pub(crate) source_name: String,
    pub(crate) message: String,
}

/// The objects in one input text (`source_name` names it in problems);
/// documents that are not objects (no `kind`) are skipped and reported.
pub(crate) fn read(
    source_name: &str,
    text: &str,
) -> Result<(Vec<Object>, Vec<String>), Unreadable> {
    let documents = YamlLoader::load_from_str(text).map_err(|e| Unreadable {
        source_name: source_name.to_string(),
        message: e.to_string(),
    })?;
    let mut objects = Vec::new();
    let mut skipped = Vec::new();
    for (i, document) in documents.iter().enumerate() {
        let value = to_json(document);
        if value.is_null() {
            continue;
        }
        flatten(
            value,
            &mut objects,
            &mut skipped,
            &format!("{source_name}: document {}", i + 1),
        );
    }
    Ok((objects, skipped))
}

/// Adds `value`, or the items of a `List`, to `objects`.
fn flatten(value: Value, objects: &mut Vec<Object>, skipped: &mut Vec<String>, at: &str) {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind == "List" || (kind.ends_with("List") && value.get("items").is_some()) {
        if let Some(Value::Array(items)) = value.get("items").cloned() {
            for (i, item) in items.into_iter().enumerate() {
                flatten(item, objects, skipped, &format!("{at}, item {i}"));
            }
        }
        return;
    }
    if kind.is_empty() {
        skipped.push(format!("{at}: not a Kubernetes object (no kind)"));
        return;
    }
    let text = |p: &str| {
        value
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let name = text("/metadata/name");
    if name.is_empty() {
        skipped.push(format!("{at}: {kind} without metadata.name"));
        return;
    }
    let namespace = Some(text("/metadata/namespace"))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string());
    // Names go into file names, backend names and map lines: only what
    // Kubernetes itself allows (DNS-1123), so none can add a line or a path.
    if !dns_1123(&name) || !dns_1123(&namespace) || namespace.contains('.') {
        skipped.push(format!(
            "{at}: {kind} {namespace:?}/{name:?}: not a Kubernetes name (DNS-1123)"
        ));
        return;
    }
    objects.push(Object {
        kind: kind.to_string(),
        api_version: text("/apiVersion"),
        namespace,
        name,
        body: value,
    });
}

/// A DNS-1123 subdomain: lowercase letters, digits, `-` and `.`, at most
/// 253, starting and ending with a letter or digit.
pub(crate) fn dns_1123(name: &str) -> bool {
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    name.len() <= 253
        && edge(name.as_bytes().first())
        && edge(name.as_bytes().last())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// A YAML document as a JSON value (keys become strings).
fn to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::String(r.clone()), Value::Number),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        Yaml::Real(r) => r.clone(),
                        _ => String::new(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Null | Yaml::BadValue | Yaml::Alias(_) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_documents_and_json_are_read_alike() {
        let yaml = "apiVersion: v1\nkind: List\nitems:\n- kind: Service\n  metadata: {name: a, namespace: ns}\n---\nkind: Secret\nmetadata:\n  name: b\n---\n# nothing\n";
        let (objects, skipped) = read("in.yaml", yaml).expect("read");
        let ids: Vec<_> = objects.iter().map(Object::id).collect();
        assert_eq!(ids, ["Service ns/a", "Secret default/b"]);
        assert!(skipped.is_empty(), "{skipped:?}");
        let json = r#"{"kind":"List","items":[{"kind":"Route","metadata":{"name":"r","namespace":"x"},"spec":{"port":{"targetPort":8080}}}]}"#;
        let (objects, _) = read("in.json", json).expect("read");
        assert_eq!(objects[0].id(), "Route x/r");
        assert_eq!(
            objects[0].at("spec.port.targetPort").port(),
            Ok(Some(PortRef::Number(8080)))
        );
    }

    #[test]
    fn fields_name_themselves_in_problems() {
        let (objects, skipped) = read(
            "in.yaml",
            "kind: Route\nmetadata: {name: r}\nspec: {host: 5, to: [1]}\n---\n{}\n",
        )
        .expect("read");
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        let route = &objects[0];
        let bad = route.at("spec.host").text().expect_err("not a string");
        assert_eq!(bad.field, "spec.host");
        let items = route.at("spec.to").items().expect("a list");
        assert_eq!(items[0].path, "spec.to[0]");
        assert!(read("in.yaml", "a: [").is_err());
    }

    #[test]
    fn names_that_are_not_kubernetes_names_are_skipped() {
        let text = "kind: Route\nmetadata: {name: \"a/../b\"}\n---\nkind: Route\nmetadata: {name: \"x y\", namespace: n}\n---\nkind: Route\nmetadata: {name: ok, namespace: \"N\"}\n";
        let (objects, skipped) = read("in.yaml", text).expect("read");
        assert!(objects.is_empty(), "{objects:?}");
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(dns_1123("web-1.shop") && !dns_1123("-a") && !dns_1123("a_b"));
    }
}
