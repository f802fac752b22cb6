//! Every change to the replicated state is one `Command`, applied in one `match`
//! (`StateMachineData::apply`), so the whole replicated behaviour reads in one place.

use serde::{Deserialize, Serialize};

use crate::model::{KeyId, KeyPatch, KeyRecord};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The config's `[bootstrap]`: applied once, by the first leader of a new cluster. Later
    /// copies (another node's, a restarted leader's) are no-ops.
    Bootstrap {
        keys: Vec<KeyRecord>,
        settings_toml: String,
    },
    CreateKey {
        key: KeyRecord,
    },
    UpdateKey {
        id: KeyId,
        patch: KeyPatch,
    },
    DeleteKey {
        id: KeyId,
    },
    /// Replaces the settings document when `expected_revision` is `None` or still current.
    PutSettings {
        toml: String,
        expected_revision: Option<u64>,
    },
}

/// What applying a command did; returned to the writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Bootstrapped {
        applied: bool,
    },
    Key(KeyRecord),
    KeyDeleted(KeyId),
    SettingsWritten {
        revision: u64,
    },
    /// Raft bookkeeping entries (blank, membership) answer this.
    Nothing,
    Rejected(Rejection),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("no key with id `{0}`")]
    NoSuchKey(KeyId),
    #[error("a key with id `{0}` already exists")]
    DuplicateKeyId(KeyId),
    #[error("another key already has this secret")]
    DuplicateSecret,
    #[error("settings changed meanwhile: expected revision {expected}, current is {current}")]
    StaleSettings { expected: u64, current: u64 },
}
