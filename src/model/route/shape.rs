//! Recognises what a map line's regex means for SNI route keys, so that the
//! shapes OpenShift writes are answered by hash lookups instead of running
//! a regex per route.
//!
//! Route keys are host names as the ClientHello reader hands them over:
//! lowercase letters, digits, `-`, `_` and `.` (the *key alphabet*). The
//! shape is decided from the parsed regex (`regex-syntax` HIR), never from
//! its text: every part of the pattern is reduced to what it can match over
//! the key alphabet. A part that needs a character outside it (`/`, `:`, an
//! upper-case letter) can never match; a repetition or alternative of such
//! a part can only match the empty string. What remains is compared with
//! the two shapes that hash (an exact host, a one-label wildcard); anything
//! else is `General` and scanned in file order, never dropped.

use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// What a pattern means for host-name keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Matches exactly these keys (one, or two when a trailing `\.?`
    /// also admits the name with a final dot).
    Exact(Vec<String>),
    /// Matches `<label>.<suffix>` for one of these suffixes, where the
    /// label holds no dot (it may be empty, as `[^.]*` may).
    Wildcard(Vec<String>),
    /// No host name can match it: it needs a character that keys never
    /// hold (a path route such as `^a\.test/api(/.*)?$`).
    Never,
    /// Anything else: evaluated as a regex, in file order.
    General,
}

/// Classifies `pattern`; an unparsable pattern is `General` (the compiler
/// then reports it). Unknown shapes are `General`, never a guess.
pub(crate) fn classify(pattern: &str) -> Shape {
    if let Some(shape) = openshift_form(pattern) {
        return shape;
    }
    match regex_syntax::Parser::new().parse(pattern) {
        Ok(hir) => classify_hir(&hir),
        Err(_) => Shape::General,
    }
}

/// The exact texts OpenShift's generator writes, recognised without
/// parsing (parsing costs ~5 µs a line, most of a 100,000-route load):
/// `^<host>\.?(:[0-9]+)?(/.*)?$`, the same after `[^\.]*\.` (wildcard),
/// and `^<host>\.?(:[0-9]+)?/<path>(/.*)?$` (a path route). The whole text
/// must be one of these, with a host of lowercase letters, digits, `_`, `-`
/// and `\.`, and a path of plain characters only, so that the `/` is
/// required. Anything else goes to the parser; the unit tests check that
/// both give the same answer.
fn openshift_form(pattern: &str) -> Option<Shape> {
    let anchored = pattern.strip_prefix('^')?;
    // `os_sni_passthrough.map`: `^<host>$`, the name alone.
    if let Some(name) = anchored.strip_suffix('$').and_then(host_name) {
        return Some(Shape::Exact(vec![name]));
    }
    let body = anchored.strip_suffix("(/.*)?$")?;
    let (wildcard, body) = match body.strip_prefix("[^\\.]*\\.") {
        Some(rest) => (true, rest),
        None => (false, body),
    };
    // The host holds no `?`: the first one ends its `\\.?` (a one-byte
    // search instead of a substring one, for every line of a large map).
    let host_end = body.find('?')?.checked_sub(2)?;
    let (host, tail) = body.split_at_checked(host_end)?;
    let rest = tail.strip_prefix("\\.?(:[0-9]+)?")?;
    let name = host_name(host)?;
    if !rest.is_empty() {
        let path_char = |c: char| c.is_ascii_alphanumeric() || "/_-.~%".contains(c);
        return (rest.starts_with('/') && rest.chars().all(path_char)).then_some(Shape::Never);
    }
    let keys = vec![name.clone(), format!("{name}.")];
    Some(if wildcard {
        Shape::Wildcard(keys)
    } else {
        Shape::Exact(keys)
    })
}

/// A host as OpenShift quotes it (lowercase letters, digits, `_`, `-`,
/// `\\.` and `\\-`), unquoted; `None` for anything else.
fn host_name(quoted: &str) -> Option<String> {
    let mut name = String::with_capacity(quoted.len());
    // Bytes, not chars: anything outside ASCII is refused anyway.
    let mut bytes = quoted.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => name.push(char::from(b)),
            b'\\' => match bytes.next()? {
                e @ (b'.' | b'-') => name.push(char::from(e)),
                _ => return None,
            },
            _ => return None,
        }
    }
    let bare = name.is_empty() || name.starts_with('.') || name.ends_with('.');
    (!bare).then_some(name)
}

/// Classifies a parsed pattern.
pub(crate) fn classify_hir(hir: &Hir) -> Shape {
    let HirKind::Concat(parts) = hir.kind() else {
        return match reduce(hir) {
            Reduced::Never => Shape::Never,
            _ => Shape::General,
        };
    };
    let anchored = matches!(
        parts.first().map(Hir::kind),
        Some(HirKind::Look(Look::Start))
    ) && matches!(parts.last().map(Hir::kind), Some(HirKind::Look(Look::End)));
    if !anchored || parts.len() < 2 {
        return match reduce(hir) {
            Reduced::Never => Shape::Never,
            _ => Shape::General,
        };
    }
    match reduce_concat(&parts[1..parts.len() - 1]) {
        Reduced::Never => Shape::Never,
        Reduced::Unknown => Shape::General,
        Reduced::Seq(atoms) => from_atoms(&atoms),
    }
}

/// One position of a reduced pattern, over the key alphabet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Atom {
    /// Exactly this byte.
    Byte(u8),
    /// `\.?`: a dot or nothing.
    OptionalDot,
    /// `[^.]*`: any run of key bytes other than a dot.
    Label,
}

/// What a part of a pattern can match over the key alphabet.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reduced {
    /// Nothing at all.
    Never,
    /// Exactly the strings this sequence describes.
    Seq(Vec<Atom>),
    /// Something the hash shapes cannot express.
    Unknown,
}

/// Longest sequence a counted repetition is unrolled to.
const MAX_UNROLLED: usize = 255;

/// Bytes a route key may hold.
fn in_key_alphabet(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
}

/// The key bytes a class admits, in order.
fn class_bytes(class: &Class) -> Vec<u8> {
    let admitted = |b: u8| match class {
        Class::Unicode(c) => c
            .ranges()
            .iter()
            .any(|r| (r.start()..=r.end()).contains(&char::from(b))),
        Class::Bytes(c) => c
            .ranges()
            .iter()
            .any(|r| (r.start()..=r.end()).contains(&b)),
    };
    (0u8..128)
        .filter(|&b| in_key_alphabet(b) && admitted(b))
        .collect()
}

/// Whether `class` admits every key byte except the dot, and nothing else
/// of the key alphabet: `[^.]`, `[^\.]`, `[^./]` and the like.
fn is_label_class(class: &Class) -> bool {
    let bytes = class_bytes(class);
    let all = (0u8..128).filter(|&b| in_key_alphabet(b) && b != b'.');
    bytes.iter().copied().eq(all)
}

fn reduce(hir: &Hir) -> Reduced {
    match hir.kind() {
        HirKind::Empty => Reduced::Seq(Vec::new()),
        HirKind::Literal(lit) => {
            if lit.0.iter().all(|&b| in_key_alphabet(b)) {
                Reduced::Seq(lit.0.iter().map(|&b| Atom::Byte(b)).collect())
            } else {
                Reduced::Never
            }
        }
        HirKind::Class(class) => match class_bytes(class).as_slice() {
            [] => Reduced::Never,
            [b] => Reduced::Seq(vec![Atom::Byte(*b)]),
            _ => Reduced::Unknown,
        },
        HirKind::Look(_) => Reduced::Unknown,
        HirKind::Capture(capture) => reduce(&capture.sub),
        HirKind::Concat(parts) => reduce_concat(parts),
        HirKind::Alternation(branches) => {
            let mut kept: Option<Vec<Atom>> = None;
            for branch in branches {
                match reduce(branch) {
                    Reduced::Never => continue,
                    Reduced::Unknown => return Reduced::Unknown,
                    Reduced::Seq(atoms) => match &kept {
                        None => kept = Some(atoms),
                        Some(k) if *k == atoms => {}
                        Some(_) => return Reduced::Unknown,
                    },
                }
            }
            kept.map_or(Reduced::Never, Reduced::Seq)
        }
        HirKind::Repetition(rep) => {
            if rep.min == 0 && rep.max.is_none() {
                if let HirKind::Class(class) = unwrap_captures(&rep.sub).kind() {
                    if is_label_class(class) {
                        return Reduced::Seq(vec![Atom::Label]);
                    }
                }
            }
            match reduce(&rep.sub) {
                Reduced::Never if rep.min == 0 => Reduced::Seq(Vec::new()),
                Reduced::Never => Reduced::Never,
                Reduced::Seq(atoms) if atoms.is_empty() => Reduced::Seq(atoms),
                Reduced::Seq(atoms)
                    if rep.min == 0 && rep.max == Some(1) && atoms == [Atom::Byte(b'.')] =>
                {
                    Reduced::Seq(vec![Atom::OptionalDot])
                }
                Reduced::Seq(atoms)
                    if rep.max == Some(rep.min)
                        && atoms.len() * rep.min as usize <= MAX_UNROLLED =>
                {
                    Reduced::Seq(atoms.repeat(rep.min as usize))
                }
                _ => Reduced::Unknown,
            }
        }
    }
}

fn unwrap_captures(hir: &Hir) -> &Hir {
    match hir.kind() {
        HirKind::Capture(c) => unwrap_captures(&c.sub),
        _ => hir,
    }
}

/// A concatenation can match nothing if any part can match nothing,
/// whatever the other parts are.
fn reduce_concat(parts: &[Hir]) -> Reduced {
    let mut out = Vec::new();
    let mut unknown = false;
    for part in parts {
        match reduce(part) {
            Reduced::Never => return Reduced::Never,
            Reduced::Unknown => unknown = true,
            Reduced::Seq(atoms) => out.extend(atoms),
        }
    }
    if unknown {
        Reduced::Unknown
    } else {
        Reduced::Seq(out)
    }
}

/// The hash shape of an anchored sequence: bytes, optionally after
/// `[^.]*\.`, optionally ending in `\.?`.
fn from_atoms(atoms: &[Atom]) -> Shape {
    let (atoms, optional_dot) = match atoms.split_last() {
        Some((Atom::OptionalDot, rest)) => (rest, true),
        _ => (atoms, false),
    };
    let (wildcard, atoms) = match atoms {
        [Atom::Label, Atom::Byte(b'.'), rest @ ..] => (true, rest),
        _ => (false, atoms),
    };
    let mut text = String::with_capacity(atoms.len() + 1);
    for atom in atoms {
        match atom {
            Atom::Byte(b) => text.push(char::from(*b)),
            Atom::OptionalDot | Atom::Label => return Shape::General,
        }
    }
    if wildcard && text.is_empty() {
        return Shape::General;
    }
    let mut keys = vec![text.clone()];
    if optional_dot {
        text.push('.');
        keys.push(text);
    }
    if wildcard {
        Shape::Wildcard(keys)
    } else {
        Shape::Exact(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(host: &str) -> Shape {
        Shape::Exact(vec![host.into(), format!("{host}.")])
    }

    #[test]
    fn openshift_shapes() {
        let e = exact("www.example.com");
        assert_eq!(classify(r"^www\.example\.com\.?(:[0-9]+)?(/.*)?$"), e);
        assert_eq!(classify(r"^www\.example\.com\.?(:[0-9]+)?(\/.*)?$"), e);
        assert_eq!(
            classify(r"^www\.example\.com$"),
            Shape::Exact(vec!["www.example.com".into()])
        );
        assert_eq!(
            classify(r"^[^\.]*\.wild\.test\.?(:[0-9]+)?(/.*)?$"),
            Shape::Wildcard(vec!["wild.test".into(), "wild.test.".into()])
        );
        assert_eq!(
            classify(r"^www\.example\.com\.?(:[0-9]+)?/x/y(/.*)?$"),
            Shape::Never
        );
    }

    /// Tails that look like paths but admit the empty string keep the line
    /// a host route: HAProxy matches `a.test` with every one of them.
    #[test]
    fn optional_path_tails_still_match_the_host() {
        let a = Shape::Exact(vec!["a.test".into()]);
        for p in [
            r"^a\.test/?$",
            r"^a\.test/{0,1}$",
            r"^a\.test/*$",
            r"^a\.test(/.*)?$",
            r"^a\.test(/|/api)?$",
            r"^a\.test(:[0-9]+|/x)?$",
            r"^a\.test(/.*|)$",
            r"^(a)\.test$",
            r"^a\.(test|TEST)$",
            r"^A\.test$|^a\.test$",
        ] {
            let shape = classify(p);
            assert!(
                shape == a || shape == Shape::General,
                "{p} must not be Never: {shape:?}"
            );
            assert_ne!(shape, Shape::Never, "{p}");
        }
        assert_eq!(classify(r"^a\.test/?$"), a);
        assert_eq!(classify(r"^a\.t{1}est/*$"), a);
    }

    #[test]
    fn required_non_host_characters_never_match() {
        for p in [
            r"^a\.test/$",
            r"^a\.test/+$",
            r"^a\.test/{1,3}$",
            r"^a\.test:443$",
            r"^A\.test$",
            r"a\.test/x",
            r"^a\.test/x|^b\.test/y$",
        ] {
            assert_eq!(classify(p), Shape::Never, "{p}");
        }
    }

    /// The texts recognised without parsing get the answer the parser gives.
    #[test]
    fn openshift_forms_agree_with_the_parser() {
        for p in [
            r"^www\.example\.com\.?(:[0-9]+)?(/.*)?$",
            r"^a-b_c\.test\.?(:[0-9]+)?(/.*)?$",
            r"^a\-b\.test\.?(:[0-9]+)?(/.*)?$",
            r"^[^\.]*\.wild\.test\.?(:[0-9]+)?(/.*)?$",
            r"^www\.example\.com\.?(:[0-9]+)?/x/y(/.*)?$",
            r"^www\.example\.com\.?(:[0-9]+)?/x.y/~z%20(/.*)?$",
            r"^www\.example\.com\.?(:[0-9]+)?/(/.*)?$",
            r"^www\.example\.com$",
            r"^a-b_c\.t\-est$",
        ] {
            let fast = openshift_form(p).expect(p);
            let hir = regex_syntax::Parser::new().parse(p).expect(p);
            assert_eq!(fast, classify_hir(&hir), "{p}");
        }
        for p in [
            r"^www\.example\.com\.?(:[0-9]+)?/?(/.*)?$",
            r"^www\.example\.com\.?(:[0-9]+)?/*(/.*)?$",
            r"^www\.example\.com\.?(:[0-9]+)?/x|y(/.*)?$",
            r"^WWW\.example\.com\.?(:[0-9]+)?(/.*)?$",
            r"^www.example\.com\.?(:[0-9]+)?(/.*)?$",
            r"^\.a\.?(:[0-9]+)?(/.*)?$",
            r"^[^\.]*\.\.?(:[0-9]+)?(/.*)?$",
            r"^www\.example\.com\.?$",
            r"^www.example\.com$",
            r"^\.a$",
            r"^a\.$",
        ] {
            assert_eq!(openshift_form(p), None, "{p} goes to the parser");
        }
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
            r"^.*$",
            r"^a\.test$|^b$",
            r"^[a-z]*\.wild\.test$",
            r"^(?m)a\.test$",
            r"^\ba",
            r"^a\.test(/x)?\b$",
            r"^[^\.]*\.?$",
        ] {
            assert_eq!(classify(p), Shape::General, "{p}");
        }
    }
}
