//! The replicated state as a plain struct with an `apply` that a test can call directly.
//!
//! Invariants kept here:
//! - `by_hash` and `keys` describe the same set of keys (a secret hash maps to exactly one id).
//! - `apply` is deterministic: same commands in the same order give the same state on every
//!   node. Nothing in it reads a clock, the environment or a random source; those values travel
//!   inside the command.

use imbl::{HashMap, OrdMap};
use openraft::{LogId, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::command::{Command, Outcome, Rejection};
use crate::model::{KeyId, KeyRecord, KeySecretHash, SettingsDoc};
use crate::raft::{Node, NodeId};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct StateMachineData {
    pub last_applied: Option<LogId<NodeId>>,
    pub last_membership: StoredMembership<NodeId, Node>,
    pub bootstrapped: bool,
    pub keys: OrdMap<KeyId, KeyRecord>,
    pub by_hash: HashMap<KeySecretHash, KeyId>,
    pub settings: SettingsDoc,
}

impl StateMachineData {
    /// Applies the command of log entry `index`.
    pub fn apply(&mut self, index: u64, command: Command) -> Outcome {
        match command {
            Command::Bootstrap {
                keys,
                settings_toml,
            } => {
                if self.bootstrapped {
                    return Outcome::Bootstrapped { applied: false };
                }
                self.bootstrapped = true;
                self.settings = SettingsDoc {
                    toml: settings_toml,
                    revision: index,
                };
                for key in keys {
                    // Config validation already refuses duplicate secrets; a duplicate here is
                    // skipped rather than allowed to break the one-hash-one-key invariant.
                    let _ = self.insert_key(index, key);
                }
                Outcome::Bootstrapped { applied: true }
            }
            Command::CreateKey { key } => match self.insert_key(index, key) {
                Ok(key) => Outcome::Key(key),
                Err(rejection) => Outcome::Rejected(rejection),
            },
            Command::UpdateKey { id, patch } => {
                let Some(key) = self.keys.get_mut(&id) else {
                    return Outcome::Rejected(Rejection::NoSuchKey(id));
                };
                if let Some(name) = patch.name {
                    key.name = name;
                }
                if let Some(models) = patch.models {
                    key.models = models;
                }
                if let Some(enabled) = patch.enabled {
                    key.enabled = enabled;
                }
                if let Some(expires_at) = patch.expires_at {
                    key.expires_at = expires_at;
                }
                if let Some(metadata) = patch.metadata {
                    key.metadata = metadata;
                }
                key.revision = index;
                Outcome::Key(key.clone())
            }
            Command::DeleteKey { id } => match self.keys.remove(&id) {
                Some(key) => {
                    self.by_hash.remove(&key.secret_hash);
                    Outcome::KeyDeleted(id)
                }
                None => Outcome::Rejected(Rejection::NoSuchKey(id)),
            },
            Command::PutSettings {
                toml,
                expected_revision,
            } => {
                let current = self.settings.revision;
                if let Some(expected) = expected_revision
                    && expected != current
                {
                    return Outcome::Rejected(Rejection::StaleSettings { expected, current });
                }
                self.settings = SettingsDoc {
                    toml,
                    revision: index,
                };
                Outcome::SettingsWritten { revision: index }
            }
        }
    }

    fn insert_key(&mut self, index: u64, mut key: KeyRecord) -> Result<KeyRecord, Rejection> {
        if self.keys.contains_key(&key.id) {
            return Err(Rejection::DuplicateKeyId(key.id));
        }
        if self.by_hash.contains_key(&key.secret_hash) {
            return Err(Rejection::DuplicateSecret);
        }
        key.revision = index;
        self.by_hash.insert(key.secret_hash, key.id.clone());
        self.keys.insert(key.id.clone(), key.clone());
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AllowedModels, KeyPatch};

    fn key(id: &str, secret: &str) -> KeyRecord {
        KeyRecord {
            id: KeyId::parse(id).unwrap(),
            name: id.to_owned(),
            secret_hash: KeySecretHash::of_secret(secret),
            models: AllowedModels::All,
            enabled: true,
            expires_at: None,
            metadata: Default::default(),
            created_at: 1,
            revision: 0,
        }
    }

    #[test]
    fn bootstrap_applies_once() {
        let mut sm = StateMachineData::default();
        let first = Command::Bootstrap {
            keys: vec![key("key_a", "secret-a")],
            settings_toml: "x".into(),
        };
        let second = Command::Bootstrap {
            keys: vec![key("key_b", "secret-b")],
            settings_toml: "y".into(),
        };
        assert_eq!(sm.apply(1, first), Outcome::Bootstrapped { applied: true });
        assert_eq!(
            sm.apply(2, second),
            Outcome::Bootstrapped { applied: false }
        );
        assert_eq!(sm.keys.len(), 1);
        assert_eq!(
            sm.settings,
            SettingsDoc {
                toml: "x".into(),
                revision: 1
            }
        );
    }

    #[test]
    fn keys_are_created_updated_and_deleted_with_their_hash_index() {
        let mut sm = StateMachineData::default();
        let created = sm.apply(
            3,
            Command::CreateKey {
                key: key("key_a", "secret-a"),
            },
        );
        assert!(matches!(created, Outcome::Key(ref k) if k.revision == 3));
        let dup = sm.apply(
            4,
            Command::CreateKey {
                key: key("key_b", "secret-a"),
            },
        );
        assert_eq!(dup, Outcome::Rejected(Rejection::DuplicateSecret));

        let patch = KeyPatch {
            enabled: Some(false),
            ..KeyPatch::default()
        };
        let id = KeyId::parse("key_a").unwrap();
        let updated = sm.apply(
            5,
            Command::UpdateKey {
                id: id.clone(),
                patch,
            },
        );
        assert!(matches!(updated, Outcome::Key(ref k) if !k.enabled && k.revision == 5));

        assert_eq!(
            sm.apply(6, Command::DeleteKey { id: id.clone() }),
            Outcome::KeyDeleted(id.clone())
        );
        assert!(sm.by_hash.is_empty() && sm.keys.is_empty());
        assert_eq!(
            sm.apply(7, Command::DeleteKey { id: id.clone() }),
            Outcome::Rejected(Rejection::NoSuchKey(id))
        );
    }

    #[test]
    fn settings_writes_check_the_expected_revision() {
        let mut sm = StateMachineData::default();
        let put = |toml: &str, expected| Command::PutSettings {
            toml: toml.into(),
            expected_revision: expected,
        };
        assert_eq!(
            sm.apply(2, put("a", Some(0))),
            Outcome::SettingsWritten { revision: 2 }
        );
        assert_eq!(
            sm.apply(3, put("b", Some(0))),
            Outcome::Rejected(Rejection::StaleSettings {
                expected: 0,
                current: 2
            })
        );
        assert_eq!(
            sm.apply(4, put("c", None)),
            Outcome::SettingsWritten { revision: 4 }
        );
        assert_eq!(sm.settings.toml, "c");
    }

    #[test]
    fn state_round_trips_through_bincode() {
        let mut sm = StateMachineData::default();
        sm.apply(
            1,
            Command::CreateKey {
                key: key("key_a", "secret-a"),
            },
        );
        let bytes = bincode::serde::encode_to_vec(&sm, bincode::config::standard()).unwrap();
        let (back, _): (StateMachineData, _) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, sm);
    }
}
