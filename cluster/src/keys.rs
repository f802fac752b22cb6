//! The key table the request path authenticates against: a view of the replicated keys,
//! indexed by the SHA-256 of their secrets.
//!
//! A presented secret is hashed once and looked up, so the cost is one SHA-256 and two probes
//! whatever the number of keys; comparing hashes leaks nothing useful through timing. The maps
//! are persistent (structural sharing), so publishing a new table after a change is cheap.

use imbl::{HashMap, OrdMap};

use crate::model::{KeyId, KeyRecord, KeySecretHash};

#[derive(Debug, Clone, Default)]
pub struct KeyTable {
    keys: OrdMap<KeyId, KeyRecord>,
    by_hash: HashMap<KeySecretHash, KeyId>,
}

impl KeyTable {
    pub(crate) fn new(
        keys: OrdMap<KeyId, KeyRecord>,
        by_hash: HashMap<KeySecretHash, KeyId>,
    ) -> Self {
        Self { keys, by_hash }
    }

    /// The key whose secret is `secret`, if any (enabled or not: the caller decides).
    pub fn authenticate(&self, secret: &str) -> Option<&KeyRecord> {
        let id = self.by_hash.get(&KeySecretHash::of_secret(secret))?;
        self.keys.get(id)
    }

    pub fn get(&self, id: &KeyId) -> Option<&KeyRecord> {
        self.keys.get(id)
    }

    /// All keys, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = &KeyRecord> {
        self.keys.values()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
