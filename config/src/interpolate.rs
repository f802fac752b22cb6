//! `${NAME}` interpolation of string values from the environment.
//!
//! Interpolation happens while each string value is deserialized (see `raw::Text`), not as a
//! text substitution before parsing: that way an unset variable is reported at the value's own
//! line and key, and a substituted value can never change the TOML structure around it.
//!
//! Serde's `Deserialize` takes no context argument, so the environment lookup reaches the
//! string values through a thread-local scope that [`with_env`] installs around one
//! deserialization. The scope holds only owned values (names already looked up and the names
//! still wanted), never the caller's borrowed lookup function, so no lifetime has to be erased.

use std::cell::RefCell;
use std::collections::HashMap;

/// Why a string value could not be interpolated. Messages never contain a variable's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InterpolateError {
    #[error(
        "environment variable `{0}` is not set; expected it to be set (write `$${{` for a literal `${{`)"
    )]
    Unset(String),
    #[error("unterminated `${{`; expected `${{NAME}}` (write `$${{` for a literal `${{`)")]
    Unterminated,
    #[error(
        "invalid environment variable name `{0}`; expected ASCII letters, digits and `_`, not starting with a digit"
    )]
    InvalidName(String),
}

/// Replaces every `${NAME}` in `input` with `lookup(NAME)`; `$${` stands for a literal `${`.
///
/// Substituted values are not scanned again, so a secret that happens to contain `${` is used
/// as it is instead of being expanded a second time.
pub(crate) fn expand(
    input: &str,
    mut lookup: impl FnMut(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let from_dollar = &rest[dollar..];
        if let Some(after) = from_dollar.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = from_dollar.strip_prefix("${") {
            let close = after.find('}').ok_or(InterpolateError::Unterminated)?;
            let name = &after[..close];
            if !is_variable_name(name) {
                return Err(InterpolateError::InvalidName(name.to_owned()));
            }
            let value = lookup(name).ok_or_else(|| InterpolateError::Unset(name.to_owned()))?;
            out.push_str(&value);
            rest = &after[close + 1..];
        } else {
            out.push('$');
            rest = &from_dollar[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The environment as seen by one deserialization pass.
#[derive(Default)]
struct Scope {
    /// Names already looked up, with their value (`None`: unset).
    known: HashMap<String, Option<String>>,
    /// Names met in this pass that were not in `known`.
    wanted: Vec<String>,
}

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Restores the enclosing scope even if the deserialization panics.
struct ScopeGuard {
    previous: Option<Scope>,
}

impl ScopeGuard {
    fn enter(scope: Scope) -> Self {
        Self {
            previous: SCOPE.replace(Some(scope)),
        }
    }

    /// Takes this pass's scope back; dropping `self` then restores the enclosing one.
    fn exit(self) -> Scope {
        SCOPE.take().unwrap_or_default()
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        SCOPE.set(self.previous.take());
    }
}

/// Runs `deserialize` with `env` as the source of `${NAME}` values.
///
/// A pass meets names it has not looked up yet, records them and substitutes an empty string
/// so it can go on; the names are then looked up and the pass runs again. Nothing checks the
/// content of a string during deserialization (validation comes after), so a placeholder
/// cannot cause an error of its own, and the last pass sees every value. Each repeated pass
/// looks up at least one new name, so the loop ends; in practice it runs twice at most.
pub(crate) fn with_env<T>(
    env: &dyn Fn(&str) -> Option<String>,
    mut deserialize: impl FnMut() -> T,
) -> T {
    let mut known = HashMap::new();
    loop {
        let guard = ScopeGuard::enter(Scope {
            known,
            wanted: Vec::new(),
        });
        let result = deserialize();
        let scope = guard.exit();
        if scope.wanted.is_empty() {
            return result;
        }
        known = scope.known;
        for name in scope.wanted {
            let value = env(&name);
            known.insert(name, value);
        }
    }
}

/// Expands `input` against the scope installed by [`with_env`].
pub(crate) fn expand_in_scope(input: &str) -> Result<String, InterpolateError> {
    SCOPE.with_borrow_mut(|slot| {
        let scope = slot
            .as_mut()
            .expect("config strings are only deserialized inside interpolate::with_env");
        expand(input, |name| match scope.known.get(name) {
            Some(value) => value.clone(),
            None => {
                if !scope.wanted.iter().any(|w| w == name) {
                    scope.wanted.push(name.to_owned());
                }
                Some(String::new())
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example.com".to_owned()),
            "TRICKY" => Some("${HOST}".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn variables_are_replaced_anywhere_in_the_string() {
        assert_eq!(
            expand("http://${HOST}:80/${HOST}", env).unwrap(),
            "http://example.com:80/example.com"
        );
    }

    #[test]
    fn double_dollar_brace_is_a_literal_dollar_brace() {
        assert_eq!(expand("a$${HOST}b", env).unwrap(), "a${HOST}b");
    }

    #[test]
    fn lone_dollars_are_kept() {
        assert_eq!(expand("cost: $5, $$, $", env).unwrap(), "cost: $5, $$, $");
    }

    #[test]
    fn substituted_values_are_not_expanded_again() {
        assert_eq!(expand("${TRICKY}", env).unwrap(), "${HOST}");
    }

    #[test]
    fn unset_variable_is_an_error_naming_it() {
        let err = expand("x${NOPE}", env).unwrap_err();
        assert_eq!(err, InterpolateError::Unset("NOPE".to_owned()));
        assert!(err.to_string().contains("`NOPE` is not set"));
    }

    #[test]
    fn unterminated_reference_is_an_error() {
        assert_eq!(
            expand("${HOST", env).unwrap_err(),
            InterpolateError::Unterminated
        );
    }

    #[test]
    fn invalid_names_are_rejected() {
        for bad in ["${}", "${1A}", "${A-B}", "${A B}"] {
            assert!(
                matches!(expand(bad, env), Err(InterpolateError::InvalidName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn with_env_looks_up_each_name_once_and_reruns_until_all_are_known() {
        let calls = RefCell::new(Vec::new());
        let lookup = |name: &str| {
            calls.borrow_mut().push(name.to_owned());
            env(name)
        };
        let out = with_env(&lookup, || {
            (
                expand_in_scope("${HOST}").unwrap(),
                expand_in_scope("${HOST}/${HOST}").unwrap(),
            )
        });
        assert_eq!(out.0, "example.com");
        assert_eq!(out.1, "example.com/example.com");
        assert_eq!(*calls.borrow(), ["HOST"]);
    }
}
