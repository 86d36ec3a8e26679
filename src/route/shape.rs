//! Recognises the regex shapes OpenShift writes into its maps, so that they
//! can be answered by hash lookups instead of running a regex per route.
//!
//! Route keys are SNI host names as the ClientHello reader hands them over:
//! lowercase letters, digits, `-`, `_` and `.`, no trailing dot. Against
//! such keys the optional port and path groups can only match the empty
//! string, which is what makes the rewriting below exact.

/// What a pattern means for host-name keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// Matches exactly this key.
    Exact(String),
    /// Matches `<label>.<suffix>` where the label holds no dot.
    Wildcard(String),
    /// Requires a `/`, so no host name matches it (a path route).
    Never,
    /// Anything else: evaluated as a regex, in file order.
    General,
}

/// Classifies `pattern`. Unknown shapes are `General`, never a guess.
pub fn classify(pattern: &str) -> Shape {
    let Some(body) = pattern.strip_prefix('^') else {
        return Shape::General;
    };
    let (wildcard, rest) = match strip_any(body, &["[^\\.]*\\.", "[^.]*\\."]) {
        Some(rest) => (true, rest),
        None => (false, body),
    };
    let (host, rest) = host_literal(rest);
    if host.is_empty() {
        return Shape::General;
    }
    let rest = rest.strip_prefix("\\.?").unwrap_or(rest);
    let rest = rest.strip_prefix("(:[0-9]+)?").unwrap_or(rest);
    if let Some(path) = strip_any(rest, &["/", "\\/"]) {
        // A literal `/` in a regex without alternation: every match has one.
        return if path.contains('|') || path.ends_with("\\$") {
            Shape::General
        } else {
            Shape::Never
        };
    }
    let rest = strip_any(rest, &["(/.*)?", "(\\/.*)?"]).unwrap_or(rest);
    if rest != "$" {
        return Shape::General;
    }
    if wildcard {
        Shape::Wildcard(host)
    } else {
        Shape::Exact(host)
    }
}

fn strip_any<'a>(s: &'a str, prefixes: &[&str]) -> Option<&'a str> {
    prefixes.iter().find_map(|p| s.strip_prefix(p))
}

/// Reads a regex-quoted host name (`www\.example\.com`) from the front of
/// `s`; returns the unquoted host and what follows it.
fn host_literal(s: &str) -> (String, &str) {
    let bytes = s.as_bytes();
    let mut host = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            host.push(char::from(b));
            i += 1;
        } else if b == b'\\' && matches!(bytes.get(i + 1), Some(b'.' | b'-')) {
            // `\.?` belongs to the suffix, not the host.
            if bytes.get(i + 1) == Some(&b'.') && bytes.get(i + 2) == Some(&b'?') {
                break;
            }
            host.push(char::from(bytes[i + 1]));
            i += 2;
        } else {
            break;
        }
    }
    (host, &s[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openshift_shapes() {
        let exact = Shape::Exact("www.example.com".into());
        assert_eq!(classify(r"^www\.example\.com\.?(:[0-9]+)?(/.*)?$"), exact);
        assert_eq!(classify(r"^www\.example\.com(:[0-9]+)?(\/.*)?$"), exact);
        assert_eq!(classify(r"^www\.example\.com$"), exact);
        assert_eq!(
            classify(r"^[^\.]*\.wild\.test\.?(:[0-9]+)?(/.*)?$"),
            Shape::Wildcard("wild.test".into())
        );
        assert_eq!(
            classify(r"^www\.example\.com\.?(:[0-9]+)?/x/y(/.*)?$"),
            Shape::Never
        );
    }

    #[test]
    fn anything_else_is_general() {
        for p in [
            r"www\.example\.com$",
            r"^www\.example\.com",
            r"^www.example\.com$",
            r"^a\.test|b\.test$",
            r"^a\.test/x|.*$",
            r"^(a|b)\.test$",
            r"^a\.test\$",
            r"^.*$",
            r"^a\.test$|^b$",
        ] {
            assert_eq!(classify(p), Shape::General, "{p}");
        }
    }
}
