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
    pub limits: KeyLimits,
    /// The MCP servers (`/v1/mcp/{server}`) this key may use; `None`: every one.
    pub mcp_servers: Option<Vec<String>>,
    /// What the records of this key's calls keep of their bodies; `None`: the node's policy
    /// (or the model's).
    pub records: Option<aigw_config::Capture>,
}

/// How long a period budget lasts before it starts afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Period {
    Minute,
    Hour,
    Day,
    Month,
    Total,
}

impl Period {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "minute" => Self::Minute,
            "hour" => Self::Hour,
            "day" => Self::Day,
            "month" => Self::Month,
            "total" => Self::Total,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
            Self::Total => "total",
        }
    }

    /// Which period `unix_secs` falls in (UTC): budgets of different periods never mix.
    pub fn id_at(&self, unix_secs: u64) -> u64 {
        match self {
            Self::Minute => unix_secs / 60,
            Self::Hour => unix_secs / 3600,
            Self::Day => unix_secs / 86_400,
            Self::Month => {
                let (year, month) = civil_year_month(unix_secs / 86_400);
                year * 12 + month
            }
            Self::Total => 0,
        }
    }

    /// Unix seconds at which the period containing `unix_secs` ends (`None` for `total`).
    pub fn ends_after(&self, unix_secs: u64) -> Option<u64> {
        match self {
            Self::Minute => Some((unix_secs / 60 + 1) * 60),
            Self::Hour => Some((unix_secs / 3600 + 1) * 3600),
            Self::Day => Some((unix_secs / 86_400 + 1) * 86_400),
            Self::Month => {
                let mut day = unix_secs / 86_400;
                let now = civil_year_month(day);
                while civil_year_month(day) == now {
                    day += 1;
                }
                Some(day * 86_400)
            }
            Self::Total => None,
        }
    }
}

/// (year, month 0..12) of a count of days since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil_year_month(days: u64) -> (u64, u64) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as u64, (month - 1) as u64)
}

/// A budget: at most `limit` per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub limit: u64,
    pub period: Period,
}

/// What a key's period budgets count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Dimension {
    Calls,
    Tokens,
    InputTokens,
    OutputTokens,
}

impl Dimension {
    pub const ALL: [Dimension; 4] = [
        Self::Calls,
        Self::Tokens,
        Self::InputTokens,
        Self::OutputTokens,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Calls => "calls",
            Self::Tokens => "tokens",
            Self::InputTokens => "input_tokens",
            Self::OutputTokens => "output_tokens",
        }
    }
}

/// A key's limits; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLimits {
    /// Requests per minute, cluster-wide.
    pub rpm: Option<u64>,
    /// Tokens (input + output) per minute, cluster-wide.
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u32>,
    pub calls: Option<Budget>,
    pub tokens: Option<Budget>,
    pub input_tokens: Option<Budget>,
    pub output_tokens: Option<Budget>,
    /// Requests the key may take at once, cluster-wide, above the steady `rpm` rate; each
    /// node's bucket holds its share's part. `None`: a sixth of `rpm` (a 10 s burst).
    pub rpm_burst: Option<u64>,
    /// Tokens the key may take at once, cluster-wide; `None`: a sixth of `tpm`.
    pub tpm_burst: Option<u64>,
}

impl KeyLimits {
    pub fn budget(&self, dimension: Dimension) -> Option<Budget> {
        match dimension {
            Dimension::Calls => self.calls,
            Dimension::Tokens => self.tokens,
            Dimension::InputTokens => self.input_tokens,
            Dimension::OutputTokens => self.output_tokens,
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether admission needs a token estimate (a TPM limit or a token budget).
    pub fn counts_tokens(&self) -> bool {
        self.tpm.is_some()
            || self.tokens.is_some()
            || self.input_tokens.is_some()
            || self.output_tokens.is_some()
    }
}

impl KeyRecord {
    /// Whether this key may use the MCP server `name`.
    pub fn may_use_mcp_server(&self, name: &str) -> bool {
        self.mcp_servers
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == name))
    }

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
    pub limits: Option<KeyLimits>,
    /// `Some(None)` lets the key use every MCP server.
    pub mcp_servers: Option<Option<Vec<String>>>,
    /// `Some(None)` leaves the capture to the node and the model.
    pub records: Option<Option<aigw_config::Capture>>,
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
