//! The replicated records: API keys and the cluster-wide settings document.
//!
//! Everything here travels through the Raft log and snapshots, encoded with bincode, which is
//! not self-describing: no `flatten`, `untagged` or `skip_serializing_if` in these types.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// SHA-256 of a key's secret: what the cluster stores and compares, never the secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeySecretHash([u8; 32]);

impl KeySecretHash {
    pub fn of_secret(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    fn prefix_hex(&self, bytes: usize) -> String {
        hex::encode(&self.0[..bytes])
    }
}

impl fmt::Debug for KeySecretHash {
    // Not the secret, but a short prefix is enough to tell keys apart in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeySecretHash({}..)", self.prefix_hex(4))
    }
}

/// A key's stable public identifier, safe to log and show.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyId(String);

impl KeyId {
    /// The id of a key created from the config's `[bootstrap]`: derived from its hash, so every
    /// node that bootstraps the same key agrees on its id.
    pub fn for_bootstrap(hash: &KeySecretHash) -> Self {
        Self(format!("key_{}", hash.prefix_hex(8)))
    }

    /// A fresh random id for a key created through the admin API.
    pub fn random() -> Self {
        Self(format!("key_{:016x}", rand::random::<u64>()))
    }

    pub fn parse(id: &str) -> Option<Self> {
        let valid = id.starts_with("key_")
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        valid.then(|| Self(id.to_owned()))
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

/// Which models a key may call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllowedModels {
    All,
    Only(Vec<String>),
}

impl AllowedModels {
    pub fn allows(&self, model: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(models) => models.iter().any(|m| m == model),
        }
    }

    /// As the admin API and the config write it: `["*"]` or a list of names.
    pub fn to_names(&self) -> Vec<String> {
        match self {
            Self::All => vec!["*".to_owned()],
            Self::Only(models) => models.clone(),
        }
    }

    pub fn from_names(names: Vec<String>) -> Self {
        if names.iter().any(|n| n == "*") {
            Self::All
        } else {
            Self::Only(names)
        }
    }
}

impl From<&aigw_config::ModelAccess> for AllowedModels {
    fn from(access: &aigw_config::ModelAccess) -> Self {
        match access {
            aigw_config::ModelAccess::All => Self::All,
            aigw_config::ModelAccess::Only(models) => Self::Only(models.clone()),
        }
    }
}

/// One API key as the cluster stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: KeyId,
    pub name: String,
    pub secret_hash: KeySecretHash,
    pub models: AllowedModels,
    pub enabled: bool,
    /// Unix seconds after which the key is refused.
    pub expires_at: Option<u64>,
    pub metadata: BTreeMap<String, String>,
    /// Unix seconds, from the command that created it (the leader's clock).
    pub created_at: u64,
    /// Raft log index of the last change to this key.
    pub revision: u64,
}

impl KeyRecord {
    /// Whether a request with this key may proceed at `now` (unix seconds).
    pub fn is_usable(&self, now: u64) -> bool {
        self.enabled && self.expires_at.is_none_or(|at| now < at)
    }
}

/// The fields of a key that `PATCH /admin/v1/keys/{id}` may change; `None` leaves one as is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub models: Option<AllowedModels>,
    pub enabled: Option<bool>,
    /// `Some(None)` removes the expiry.
    pub expires_at: Option<Option<u64>>,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// The cluster-wide settings (upstreams, models) as a TOML document, stored as written:
/// `${ENV}` references stay references, so upstream credentials never enter the Raft log; each
/// node resolves them from its own environment when it parses the document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsDoc {
    pub toml: String,
    /// Raft log index of the change that wrote this document; 0 before any.
    pub revision: u64,
}
