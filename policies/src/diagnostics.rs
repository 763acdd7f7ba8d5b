//! Problems found in a policy file, located like a compiler's messages.

use std::fmt;
use std::ops::Range;

/// A policy file's text and the name it is reported under (usually its path).
#[derive(Debug, Clone)]
pub struct PolicySource {
    /// Name shown in diagnostics, such as `policies/snds.toml`.
    pub name: String,
    /// The whole file.
    pub text: String,
}

impl PolicySource {
    /// A source from a name and its text.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
        }
    }

    /// Reads a policy file from disk.
    pub fn read(path: &std::path::Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Ok(Self::new(path.display().to_string(), text))
    }

    /// One-based line and column (in characters) of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// How bad a problem is: errors make the policy unusable, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Something the author probably wants to know, such as a data column the
    /// policy does not mention (it stays hidden from every role).
    Warning,
    /// The policy cannot be used.
    Error,
}

/// One problem, with the byte range of the policy text it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Byte range in the policy file, when the problem has a place there.
    pub span: Option<Range<usize>>,
    /// What is wrong, and where useful, how to fix it.
    pub message: String,
}

impl Diagnostic {
    /// An error at a place in the file.
    pub fn error(span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            span,
            message: message.into(),
        }
    }

    /// A warning at a place in the file.
    pub fn warning(span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            span,
            message: message.into(),
        }
    }

    /// Renders as `file:line:column: error: message`, as compilers do, so that
    /// editors and terminals can jump to the place.
    pub fn render(&self, source: &PolicySource) -> String {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &self.span {
            Some(span) => {
                let (line, column) = source.line_column(span.start);
                format!("{}:{line}:{column}: {level}: {}", source.name, self.message)
            }
            None => format!("{}: {level}: {}", source.name, self.message),
        }
    }
}

/// Every problem found in one policy file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Adds a problem.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    /// Adds an error.
    pub fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.push(Diagnostic::error(span, message));
    }

    /// Adds a warning.
    pub fn warning(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.push(Diagnostic::warning(span, message));
    }

    /// True when at least one problem is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    /// The problems, in file order (problems without a place last).
    pub fn sorted(&self) -> Vec<&Diagnostic> {
        let mut all: Vec<&Diagnostic> = self.0.iter().collect();
        all.sort_by_key(|d| d.span.as_ref().map_or(usize::MAX, |s| s.start));
        all
    }

    /// All problems rendered one per line, in file order.
    pub fn render(&self, source: &PolicySource) -> String {
        self.sorted()
            .iter()
            .map(|d| d.render(source))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A policy that could not be loaded, with its rendered problems.
#[derive(Debug, Clone)]
pub struct PolicyError {
    /// The file the problems are in.
    pub source_name: String,
    /// The rendered problems, one per line.
    pub rendered: String,
    /// The problems themselves.
    pub diagnostics: Diagnostics,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rendered)
    }
}

impl std::error::Error for PolicyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let source = PolicySource::new("p.toml", "a = 1\nbé = 2\n");
        assert_eq!(source.line_column(0), (1, 1));
        assert_eq!(source.line_column(6), (2, 1));
        // "bé" is three bytes; the `=` after it is the fourth character.
        assert_eq!(source.line_column(10), (2, 4));
    }
}
