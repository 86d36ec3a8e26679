//! Reads HAProxy `map_reg` files: one `<regex> <value>` a line, `#` comments
//! and blank lines ignored. Pure text in, numbered entries out; what the
//! value means is up to the caller.

/// One map line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MapLine {
    /// 1-based line number, for `file:line` messages and `route` output.
    pub(crate) line: usize,
    /// The regex, as written.
    pub(crate) pattern: String,
    /// Everything after the regex, trimmed.
    pub(crate) value: String,
}

/// A line that is not `<regex> <value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

/// Splits a map file into entries; every bad line is reported, the good
/// ones are kept in file order.
pub(crate) fn parse(text: &str) -> (Vec<MapLine>, Vec<LineError>) {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (pattern, value) = split_value(trimmed);
        if value.is_empty() {
            errors.push(LineError {
                line,
                message: format!("`{pattern}` has no value: expected `<regex> <value>`"),
            });
            continue;
        }
        lines.push(MapLine {
            line,
            pattern: pattern.to_string(),
            value: value.to_string(),
        });
    }
    (lines, errors)
}

/// `<regex> <value>` at the first whitespace; the value trimmed, empty
/// when there is none. Looks at bytes while they are ASCII (map files
/// are), at chars from the first that is not.
fn split_value(line: &str) -> (&str, &str) {
    // The ASCII characters `char::is_whitespace` takes (with \x0B, which
    // `u8::is_ascii_whitespace` leaves out).
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r');
    let at = match line.bytes().position(|b| space(b) || !b.is_ascii()) {
        Some(i) if line.as_bytes()[i].is_ascii() => Some(i),
        Some(_) => line.find(char::is_whitespace),
        None => None,
    };
    match at {
        Some(i) => (&line[..i], line[i..].trim()),
        None => (line, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split is at the first whitespace of any kind, as before the
    /// byte-wise fast path.
    #[test]
    fn values_split_at_any_whitespace() {
        for (line, pattern, value) in [
            ("^a$ b", "^a$", "b"),
            ("^a$\tb  c ", "^a$", "b  c"),
            ("^a$\x0Bb", "^a$", "b"),
            ("^a$\u{2003}b", "^a$", "b"),
            ("^é$ b", "^é$", "b"),
            ("^é$\u{00A0}b", "^é$", "b"),
            ("^a$", "^a$", ""),
        ] {
            assert_eq!(split_value(line), (pattern, value), "{line:?}");
            let old = {
                let mut parts = line.splitn(2, char::is_whitespace);
                let p = parts.next().unwrap_or_default();
                (p, parts.next().map(str::trim).unwrap_or_default())
            };
            assert_eq!(split_value(line), old, "{line:?}");
        }
    }

    #[test]
    fn comments_blanks_and_values() {
        let text = "# routes\n\n  ^a\\.test$ be_tcp:ns:a\n^b$\tbe_tcp:ns:b  \n^c$\n";
        let (lines, errors) = parse(text);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].line, 3);
        assert_eq!(lines[0].pattern, "^a\\.test$");
        assert_eq!(lines[1].value, "be_tcp:ns:b");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 5);
    }
}
