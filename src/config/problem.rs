//! Configuration problems, each pinned to `file:line` so that `check`, the
//! logs and (later) the stats page can say exactly what to fix.

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong (or worth a warning) in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based; `None` when the file as a whole is at fault (unreadable).
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    /// A problem on line `line` of `file`.
    pub fn at(file: &Path, line: usize, message: String) -> Self {
        Problem {
            file: file.to_path_buf(),
            line: Some(line),
            message,
        }
    }

    /// `file:line` (or just `file`).
    pub fn location(&self) -> String {
        match self.line {
            Some(line) => format!("{}:{line}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location(), self.message)
    }
}

/// Every problem found in one load; a load with any error is refused as a
/// whole. Warnings are kept so that they are shown alongside.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A file's text with its path, to turn byte offsets into line numbers.
pub(crate) struct Source<'a> {
    pub(crate) path: &'a Path,
    pub(crate) text: &'a str,
}

impl Source<'_> {
    /// Line (1-based) of a byte offset.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    pub(crate) fn problem(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            file: self.path.to_path_buf(),
            line: Some(self.line_of(span.start)),
            message: message.into(),
        }
    }
}
