//! Config errors as the operator reads them: `file:line:column: key.path: what was expected`.
//!
//! Every error, from a TOML syntax error to a reference to an unknown upstream, is turned into
//! a [`ConfigError`] here or in `validate`, so they all look the same.

use std::fmt;
use std::ops::Range;

use serde_path_to_error::Segment;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as the caller named it.
    pub file: String,
    /// 1-based line; 0 when the error concerns the whole file (it could not be read).
    pub line: usize,
    /// 1-based column in characters; 0 when `line` is 0.
    pub column: usize,
    /// Dotted key path such as `bootstrap.models[0].targets[0].upstream`; empty for errors
    /// that belong to no key (a syntax error, an unreadable file).
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file)?;
        if self.line > 0 {
            write!(f, "{}:{}:", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, " {}:", self.key)?;
        }
        write!(f, " {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a config file, in file order; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// `errors` must not be empty; callers only build this when something went wrong.
    pub(crate) fn new(mut errors: Vec<ConfigError>) -> Self {
        debug_assert!(!errors.is_empty());
        // Validation walks the config section by section; the operator reads it top to bottom.
        errors.sort_by_key(|e| (e.line, e.column));
        Self(errors)
    }

    pub(crate) fn one(error: ConfigError) -> Self {
        Self(vec![error])
    }

    /// The individual errors, in file order.
    pub fn as_slice(&self) -> &[ConfigError] {
        &self.0
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Builds errors for one file, turning byte offsets into line and column.
pub(crate) struct Locator<'a> {
    pub(crate) file: &'a str,
    pub(crate) text: &'a str,
}

impl Locator<'_> {
    pub(crate) fn error(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = span.map_or((0, 0), |span| line_column(self.text, span.start));
        ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        }
    }

    /// A syntax error: the text is not TOML, so there is no key path yet.
    pub(crate) fn syntax(&self, error: &toml::de::Error) -> ConfigError {
        self.error(error.span(), "", error.message())
    }

    /// A deserialization error: TOML, but not the shape or type the config expects.
    pub(crate) fn deserialize(
        &self,
        error: &serde_path_to_error::Error<toml::de::Error>,
    ) -> ConfigError {
        let inner = error.inner();
        let mut key = key_path(error.path());
        let message = inner.message();
        // serde's messages say "field"; the file says "key". A missing key is not in the path
        // (the path stops at its table), so it is added to keep `key` precise.
        let message = if let Some((_, rest)) = backticked_after(message, "unknown field `") {
            format!("unknown key; {}", rest.trim_start_matches(", "))
        } else if let Some((name, _)) = backticked_after(message, "missing field `") {
            push_key(&mut key, name);
            "missing required key".to_owned()
        } else {
            message.to_owned()
        };
        self.error(inner.span(), key, message)
    }
}

/// `("name", rest)` for a message `"{prefix}name`{rest}"`.
fn backticked_after<'m>(message: &'m str, prefix: &str) -> Option<(&'m str, &'m str)> {
    let after = message.strip_prefix(prefix)?;
    let end = after.find('`')?;
    Some((&after[..end], &after[end + 1..]))
}

/// 1-based line and character column of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn key_path(path: &serde_path_to_error::Path) -> String {
    let mut key = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            // `toml::Spanned` is deserialized as a map with private keys; they are not config keys.
            Segment::Map { key: name } if name.starts_with("$__serde_spanned_private") => {}
            Segment::Map { key: name } => push_key(&mut key, name),
            Segment::Enum { variant } => push_key(&mut key, variant),
            Segment::Unknown => {}
        }
    }
    key
}

/// Appends `name` to a dotted path, quoting it the way TOML would if it is not a bare key.
pub(crate) fn push_key(path: &mut String, name: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        path.push_str(name);
    } else {
        path.push_str(&format!("{name:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        let quote = text.find('"').unwrap();
        assert_eq!(line_column(text, quote), (2, 6));
        assert_eq!(line_column(text, text.len()), (3, 1));
    }

    #[test]
    fn error_display_is_file_line_column_key_message() {
        let error = ConfigError {
            file: "aigw.toml".into(),
            line: 14,
            column: 12,
            key: "bootstrap.models[0].targets[0].upstream".into(),
            message: "unknown upstream \"vllm-b\"".into(),
        };
        assert_eq!(
            error.to_string(),
            "aigw.toml:14:12: bootstrap.models[0].targets[0].upstream: unknown upstream \"vllm-b\""
        );
    }

    #[test]
    fn positionless_keyless_error_shows_only_the_file() {
        let error = ConfigError {
            file: "missing.toml".into(),
            line: 0,
            column: 0,
            key: String::new(),
            message: "cannot read".into(),
        };
        assert_eq!(error.to_string(), "missing.toml: cannot read");
    }

    #[test]
    fn errors_display_one_per_line_in_file_order() {
        let at = |line| ConfigError {
            file: "f".into(),
            line,
            column: 1,
            key: "k".into(),
            message: "m".into(),
        };
        let errors = ConfigErrors::new(vec![at(9), at(3)]);
        assert_eq!(errors.to_string(), "f:3:1: k: m\nf:9:1: k: m");
    }

    #[test]
    fn keys_that_are_not_bare_are_quoted() {
        let mut path = "node".to_owned();
        push_key(&mut path, "a.b");
        assert_eq!(path, "node.\"a.b\"");
    }
}
