//! Reads HAProxy `map_reg` files: one `<regex> <value>` a line, `#` comments
//! and blank lines ignored. Pure text in, numbered entries out; what the
//! value means is up to the caller.

/// One map line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapLine {
    /// 1-based line number, for `file:line` messages and `route` output.
    pub line: usize,
    /// The regex, as written.
    pub pattern: String,
    /// Everything after the regex, trimmed.
    pub value: String,
}

/// A line that is not `<regex> <value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// Splits a map file into entries; every bad line is reported, the good
/// ones are kept in file order.
pub fn parse(text: &str) -> (Vec<MapLine>, Vec<LineError>) {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut parts = trimmed.splitn(2, char::is_whitespace);
        let pattern = parts.next().unwrap_or_default();
        let value = parts.next().map(str::trim).unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

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
