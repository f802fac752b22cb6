//! API keys as the cluster stores them: never the secret, only its SHA-256.
//!
//! A presented bearer secret is hashed once and looked up in a hash map, so the lookup costs
//! one SHA-256 and one probe whatever the number of keys, and comparing hashes leaks nothing
//! useful about the secret through timing.

use std::collections::HashMap;
use std::fmt;

use aigw_config::{KeySettings, ModelAccess};
use sha2::{Digest, Sha256};

/// SHA-256 of a key's secret: what the cluster stores and compares.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeySecretHash([u8; 32]);

impl KeySecretHash {
    pub fn of_secret(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }
}

impl fmt::Debug for KeySecretHash {
    // The hash is not the secret, but a short prefix is enough to tell keys apart in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeySecretHash({}..)", hex::encode(&self.0[..4]))
    }
}

/// A key's stable public identifier, safe to log and show (`key_` + a hash prefix).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    fn from_hash(hash: &KeySecretHash) -> Self {
        Self(format!("key_{}", hex::encode(&hash.0[..8])))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the cluster knows about one key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: KeyId,
    pub name: String,
    pub models: ModelAccess,
}

/// All keys, indexed by the hash of their secret.
#[derive(Debug, Clone, Default)]
pub struct KeyTable {
    by_hash: HashMap<KeySecretHash, KeyRecord>,
}

impl KeyTable {
    pub fn from_settings(keys: &[KeySettings]) -> Self {
        let by_hash = keys
            .iter()
            .map(|k| {
                let hash = KeySecretHash::of_secret(k.secret.expose());
                let record = KeyRecord {
                    id: KeyId::from_hash(&hash),
                    name: k.name.clone(),
                    models: k.models.clone(),
                };
                (hash, record)
            })
            .collect();
        Self { by_hash }
    }

    /// The key whose secret is `secret`, if any.
    pub fn authenticate(&self, secret: &str) -> Option<&KeyRecord> {
        self.by_hash.get(&KeySecretHash::of_secret(secret))
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_config::Secret;

    fn key(name: &str, secret: &str) -> KeySettings {
        KeySettings {
            name: name.into(),
            secret: Secret::new(secret.into()),
            models: ModelAccess::All,
        }
    }

    #[test]
    fn the_right_secret_authenticates_and_a_wrong_one_does_not() {
        let table = KeyTable::from_settings(&[key("a", "sk-alpha-123"), key("b", "sk-beta-456")]);
        assert_eq!(table.authenticate("sk-alpha-123").unwrap().name, "a");
        assert_eq!(table.authenticate("sk-beta-456").unwrap().name, "b");
        assert!(table.authenticate("sk-alpha-12").is_none());
        assert!(table.authenticate("").is_none());
    }

    #[test]
    fn key_id_and_debug_never_show_the_secret() {
        let table = KeyTable::from_settings(&[key("a", "sk-alpha-123")]);
        let record = table.authenticate("sk-alpha-123").unwrap();
        assert!(record.id.as_str().starts_with("key_"));
        let shown = format!("{record:?} {:?}", KeySecretHash::of_secret("sk-alpha-123"));
        assert!(!shown.contains("sk-alpha-123"));
    }
}
