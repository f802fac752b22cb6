//! A secret string (API key, admin token) that stays out of logs.

use std::fmt;

/// A secret value. `Debug` prints `Secret(***)` and there is deliberately no `Display`, so a
/// secret only leaves this type through [`Secret::expose`], where a reader can see it happen.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    /// The secret itself, for sending upstream or hashing; never for logging.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Compares in time that depends on the lengths only, so `==` on a token a client presented
/// does not reveal how many leading bytes were right.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
    }
}

impl Eq for Secret {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_does_not_leak_the_secret() {
        let secret = Secret::new("sk-very-secret".to_owned());
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(Secret(***))");
        assert_eq!(secret.expose(), "sk-very-secret");
    }

    #[test]
    fn equal_only_when_every_byte_matches() {
        let s = |v: &str| Secret::new(v.to_owned());
        assert_eq!(s("abcdefgh"), s("abcdefgh"));
        assert_ne!(s("abcdefgh"), s("abcdefgx"));
        assert_ne!(s("abcdefgh"), s("abcdefg"));
    }
}
