//! Every change to the replicated state is one `Command`, applied in one `match`
//! (`StateMachineData::apply`), so the whole replicated behaviour reads in one place.

use serde::{Deserialize, Serialize};

use crate::model::{Dimension, KeyId, KeyPatch, KeyRecord};
use crate::raft::NodeId;
use crate::videos::VideoJob;

/// One period budget of one key: the unit leases are granted from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BudgetKey {
    pub key: KeyId,
    pub dimension: Dimension,
    /// The period's id (`Period::id_at`), as the requesting node's clock saw it.
    pub period: u64,
}

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
    /// A node asks for up to `want` units of a budget: `available -= granted`. It may give
    /// back the lease this one replaces in the same entry (`release`: its budget, id and the
    /// units it used), so the returned units are there for the grant.
    GrantLease {
        budget: BudgetKey,
        node: NodeId,
        lease: u64,
        want: u64,
        release: Option<(BudgetKey, u64, u64)>,
    },
    /// A node gives a lease back with what it used (at least the truth):
    /// `available += slice - used`.
    CloseLease {
        budget: BudgetKey,
        lease: u64,
        used: u64,
    },
    /// A restarted node closes every lease it held before, counting each as fully used: it
    /// cannot know better, and over-counting strands capacity but never over-admits.
    CloseLeasesOf {
        node: NodeId,
    },
    /// A restarted node closes every lease it held before, each with the used count it
    /// persisted (`marks`: lease id → count, at least what it admitted); a lease without a mark
    /// counts as fully used. (Appended after `CloseLeasesOf`, which it generalises, so logs
    /// written before it still decode.)
    SettleLeasesOf {
        node: NodeId,
        marks: Vec<(u64, u64)>,
    },
    /// The leader's rate plans for one interval: per key, each voter's share of its RPM and
    /// TPM, by demand. Inactive when written: a node applies a share below its fallback at
    /// once, and a share above it only after `ActivateRates` (docs/QUOTAS.md).
    PlanRates {
        plans: Vec<(KeyId, RatePlan)>,
    },
    /// Every node whose share in these plans is below its fallback has applied them: the
    /// raised shares may now be used.
    ActivateRates {
        plans: Vec<(KeyId, u64)>,
    },
    /// `key` created `job` (its upstream answered the create); `at` is the creating node's
    /// clock in seconds since the epoch, which also ages out old entries (videos.rs). Ignored
    /// when the key no longer exists.
    RecordVideo {
        key: KeyId,
        job: VideoJob,
        at: u64,
    },
    /// `key` deleted `job`: its entry goes, if it is `key`'s.
    ForgetVideo {
        key: KeyId,
        job: VideoJob,
    },
}

/// One key's rate shares over `[t0_ms, t1_ms)` of wall-clock time (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatePlan {
    pub t0_ms: u64,
    pub t1_ms: u64,
    /// Per voter: its share of the key's RPM and TPM per minute (`None`: no such limit).
    pub shares: Vec<(NodeId, Option<u64>, Option<u64>)>,
    pub active: bool,
}

/// One write as it goes through Raft: the command and the id of the write. A writer that gets
/// no answer (its leader died, a forward timed out) sends the same proposal again; if an
/// earlier copy was committed, the state machine answers the copy with the first outcome
/// instead of applying it twice (a create would otherwise answer 409 for the key it made).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: u128,
    pub command: Command,
}

impl Proposal {
    /// A new write of `command`, with a random id.
    pub fn new(command: Command) -> Self {
        Self {
            id: rand::random(),
            command,
        }
    }
}

/// What applying a command did; returned to the writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Bootstrapped {
        applied: bool,
    },
    /// Boxed: a key record is large next to the other outcomes.
    Key(Box<KeyRecord>),
    KeyDeleted(KeyId),
    SettingsWritten {
        revision: u64,
    },
    /// `granted` may be less than asked, or 0 when the budget is spent.
    LeaseGranted {
        granted: u64,
    },
    /// `PlanRates` was applied at this log index.
    RatesPlanned {
        index: u64,
    },
    LeasesClosed {
        count: u64,
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
    #[error("key `{0}` has no such budget")]
    NoSuchBudget(KeyId),
}
