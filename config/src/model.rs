//! The typed settings a parsed config file turns into.
//!
//! Invariants (established by `validate`, relied on by every caller): upstream ids, model names
//! and key names are unique and non-empty; every target names a declared upstream; every model
//! a key lists is declared; weights and upstream timeouts are greater than zero; base URLs are
//! `http(s)://host...` without a trailing `/`; key secrets have at least 8 characters; health
//! probe intervals, timeouts and thresholds, breaker windows and open periods are greater than
//! zero and `max_open_for >= open_for`; ratios are within 0..=1; a model has at most
//! [`MAX_TARGETS_PER_MODEL`] targets; `routing.max_attempts` is within 1..=[`MAX_ATTEMPTS`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::Secret;

/// A whole config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub node: NodeSettings,
    pub server: ServerSettings,
    pub routing: RoutingSettings,
    pub cluster: ClusterSettings,
    pub admin: Option<AdminSettings>,
    pub records: RecordsSettings,
    pub bootstrap: Bootstrap,
}

/// `[records]`: the node's request records (docs/RECORDS.md): what is captured and how the local
/// log under `data_dir/records/` is written and kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsSettings {
    /// Off: no record is written.
    pub enabled: bool,
    /// Whether bodies are kept (`Full`) or only the metadata.
    pub capture: Capture,
    /// A request or response body longer than this is cut there and flagged `truncated`.
    pub max_body_bytes: usize,
    /// Longest time a written record waits for its fsync: what a kill -9 may lose.
    pub fsync_interval: Duration,
    /// A segment file rolls past this size or this age; closed ones are compressed.
    pub segment_bytes: u64,
    pub segment_age: Duration,
    /// Closed segments beyond this total size, or older than this, are deleted, oldest first.
    pub retain_bytes: u64,
    pub retain_age: Duration,
    /// Where the records are shipped, each from its own cursor in the log.
    pub sinks: Vec<SinkSettings>,
}

/// `[[records.sinks]]`: one destination of the node's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSettings {
    /// Unique among the node's sinks; names the sink's cursor file.
    pub name: String,
    pub kind: SinkKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkKind {
    /// NATS JetStream: each record published to `subject` with `Nats-Msg-Id` = its id, into
    /// `stream` (created when missing).
    Nats {
        url: String,
        subject: String,
        stream: String,
        auth: NatsAuth,
    },
    /// Kafka: each record produced to `topic` (created with `partitions` when missing), keyed
    /// by the key's id so one key's records stay in order, the record's id in the
    /// `aigw-record-id` header.
    Kafka {
        brokers: Vec<String>,
        topic: String,
        partitions: i32,
    },
}

/// How a NATS sink authenticates (at most one way).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NatsAuth {
    #[default]
    None,
    /// `token`.
    Token(Secret),
    /// `user` and `password`.
    UserPassword { user: String, password: Secret },
}

/// What a record keeps of a call's bodies. Stored on keys in the cluster's state (bincode), so
/// the variants' order is part of the on-disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capture {
    /// The request and response bodies (up to `max_body_bytes`), and every field of metadata.
    Full,
    /// Every field of metadata, no body.
    Metadata,
    /// As `Full`, and a stream's chunks as they came (each event's data), beside the
    /// assembled completion.
    Raw,
}

impl Capture {
    pub fn as_str(self) -> &'static str {
        match self {
            Capture::Full => "full",
            Capture::Metadata => "metadata",
            Capture::Raw => "raw",
        }
    }

    /// Whether the bodies are kept.
    pub fn keeps_bodies(self) -> bool {
        self != Capture::Metadata
    }

    /// The one of the two that keeps less: `metadata` over `full` over `raw`.
    pub fn stricter(self, other: Capture) -> Capture {
        let rank = |c: Capture| match c {
            Capture::Metadata => 0,
            Capture::Full => 1,
            Capture::Raw => 2,
        };
        if rank(other) < rank(self) {
            other
        } else {
            self
        }
    }
}

impl Default for RecordsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            capture: Capture::Full,
            max_body_bytes: 1024 * 1024,
            fsync_interval: Duration::from_millis(50),
            segment_bytes: 64 << 20,
            segment_age: Duration::from_secs(3600),
            retain_bytes: 10 << 30,
            retain_age: Duration::from_secs(7 * 24 * 3600),
            sinks: Vec::new(),
        }
    }
}

impl Config {
    /// A commented example config: every section and key, with its default where it has one.
    /// It needs `AIGW_ADMIN_TOKEN` and `AIGW_DEMO_KEY` in the environment.
    pub fn example() -> &'static str {
        include_str!("../aigw.example.toml")
    }
}

/// A node's id in the cluster (`node.id`): what Raft, gossip and the actors name a node by.
/// Defined here, the bottom crate, so that the cluster and the actors share one type.
pub type NodeId = u64;

/// `[node]`: this process's identity and the addresses it listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    pub id: NodeId,
    pub api_listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub cluster_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
}

/// `[server]`: limits of the client-facing HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Greater than zero.
    pub max_body_bytes: usize,
    /// Largest multipart upload (audio transcription, video input reference) streamed through;
    /// greater than zero.
    pub max_upload_bytes: usize,
    pub shutdown_grace: Duration,
    /// How long a client may take to send a whole request head (HTTP/1); greater than zero.
    pub header_read_timeout: Duration,
    /// The longest gap between two pieces of a request body while a handler reads it; greater
    /// than zero.
    pub body_idle_timeout: Duration,
    /// A client connection with no request in flight for this long is closed (before its first
    /// request too); greater than zero.
    pub keep_alive_timeout: Duration,
    /// Open client connections on the API listener; a connection over it is answered 503 and
    /// closed at once. Greater than zero.
    pub max_connections: usize,
    /// Peers whose `X-Forwarded-For`, `Forwarded`, `X-Real-IP` and `X-Forwarded-Host` are
    /// believed and passed on to pass-through backends; from any other peer they are dropped.
    pub trusted_proxies: Vec<CidrBlock>,
    /// Signs the ids the gateway hands out for upstream-held state (video jobs), so that any
    /// node can route a follow-up and nobody can forge one. Every node of a cluster needs the
    /// same value; at least 16 characters. `None`: derived from `admin.token`, or random per
    /// process when there is none.
    pub id_secret: Option<Secret>,
}

/// A block of IP addresses: `10.0.0.0/8`, `2001:db8::/32`, or one address (`/32`, `/128`).
/// The address is stored with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidrBlock {
    network: IpAddr,
    prefix: u8,
}

impl CidrBlock {
    /// Parses `address/prefix` or a bare address; `None` when it is neither.
    pub fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.trim().parse().ok()?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if p.trim().bytes().all(|b| b.is_ascii_digit()) => p.trim().parse().ok()?,
            Some(_) => return None,
            None => bits,
        };
        if prefix > bits {
            return None;
        }
        Some(Self {
            network: mask(address, prefix),
            prefix,
        })
    }

    /// Whether `address` is in the block; an IPv4-mapped IPv6 address counts as its IPv4 one.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        address.is_ipv4() == self.network.is_ipv4() && mask(address, self.prefix) == self.network
    }
}

impl fmt::Display for CidrBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn mask(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & keep).into())
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & keep).into())
        }
    }
}

/// Shortest `server.id_secret`.
pub const MIN_ID_SECRET_CHARS: usize = 16;

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            max_upload_bytes: 25 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(75),
            max_connections: 10_000,
            trusted_proxies: Vec::new(),
            id_secret: None,
        }
    }
}

/// `[cluster]`: how this node forms or joins a cluster, and Raft's and gossip's timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Stored in the data dir and checked on every node-to-node call.
    pub name: String,
    /// The members that form a new cluster; empty: this node alone. When non-empty it lists
    /// this node, at `node.cluster_listen`.
    pub initial_members: Vec<ClusterMember>,
    /// Join an existing cluster through this member's cluster address (`--join` overrides).
    pub join: Option<SocketAddr>,
    pub heartbeat: Duration,
    /// Greater than `heartbeat`.
    pub election_timeout_min: Duration,
    /// Greater than `election_timeout_min`.
    pub election_timeout_max: Duration,
    /// How long an admin write or linearizable read may wait for a leader and a quorum.
    pub write_timeout: Duration,
    /// Log entries between snapshots; at least 10.
    pub snapshot_every: u64,
    pub gossip_interval: Duration,
}

/// One `"ID@HOST:PORT"` of `cluster.initial_members`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterMember {
    pub id: u64,
    pub addr: SocketAddr,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            name: "aigw".to_owned(),
            initial_members: Vec::new(),
            join: None,
            heartbeat: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: Duration::from_millis(1000),
            write_timeout: Duration::from_secs(5),
            snapshot_every: 10_000,
            gossip_interval: Duration::from_millis(200),
        }
    }
}

/// Most targets one model may list: routing keeps per-request sets of targets as 64-bit masks.
pub const MAX_TARGETS_PER_MODEL: usize = 64;

/// Most upstream attempts one request may make (`routing.max_attempts`).
pub const MAX_ATTEMPTS: u32 = 10;

/// `[routing]`: how this node fails over between targets and keeps sessions sticky.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingSettings {
    /// Upstream attempts per request, the first included; 1 disables failover.
    pub max_attempts: u32,
    pub retry_budget: RetryBudgetSettings,
    /// How long a sticky session's binding outlives its last request.
    pub session_ttl: Duration,
    /// A node with no verdict of its own on an upstream avoids it when at least this many
    /// live peers report it down (the gossiped views; see aigw-actors' `cluster_view`).
    pub peer_down_quorum: u32,
    /// Panic mode (Envoy's healthy panic threshold, at zero): a request that finds no target
    /// of its model available in any tier tries the avoided ones anyway, least recently
    /// failed first, every such attempt within the retry budget, instead of a 503 at once.
    pub panic_mode: bool,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            retry_budget: RetryBudgetSettings::default(),
            session_ttl: Duration::from_secs(600),
            peer_down_quorum: 2,
            panic_mode: true,
        }
    }
}

/// The node-wide cap on retries (attempts after a request's first), like Finagle's and
/// linkerd's retry budgets: over `window`, retries may be `ratio` of the requests plus
/// `min_per_second` per second, so a dead set of upstreams never multiplies the load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryBudgetSettings {
    pub ratio: Ratio,
    pub min_per_second: u32,
    /// Greater than zero.
    pub window: Duration,
}

impl Default for RetryBudgetSettings {
    fn default() -> Self {
        Self {
            ratio: Ratio::from_millionths(200_000),
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// A number within 0..=1, held in millionths so settings stay `Eq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ratio(u32);

impl Ratio {
    pub const ZERO: Self = Self(0);

    /// `None` unless `value` is within 0..=1.
    pub fn new(value: f64) -> Option<Self> {
        (0.0..=1.0)
            .contains(&value)
            .then(|| Self((value * 1_000_000.0).round() as u32))
    }

    /// `millionths` is clamped to 1_000_000.
    pub const fn from_millionths(millionths: u32) -> Self {
        Self(if millionths > 1_000_000 {
            1_000_000
        } else {
            millionths
        })
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 1_000_000.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// `[admin]`: access to the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub token: Secret,
}

/// `[bootstrap]`: the upstreams, models and keys a new cluster starts with.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bootstrap {
    pub upstreams: Vec<UpstreamSettings>,
    pub models: Vec<ModelSettings>,
    pub keys: Vec<KeySettings>,
    /// MCP servers, agent backends and sandboxes (`[[bootstrap.mcp_servers]]`, ...).
    pub backends: crate::Backends,
    /// `upstreams`, `models` and the backends as written in the file, `${ENV}` references kept: the
    /// cluster-wide settings document a new cluster starts from.
    pub settings_toml: String,
}

impl fmt::Debug for Bootstrap {
    // The settings document may hold a literal secret (an `api_key` written inline), so its
    // text is not shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bootstrap")
            .field("upstreams", &self.upstreams)
            .field("models", &self.models)
            .field("keys", &self.keys)
            .field("backends", &self.backends)
            .field(
                "settings_toml",
                &format_args!("<{} bytes>", self.settings_toml.len()),
            )
            .finish()
    }
}

/// `[[bootstrap.upstreams]]`: one server the gateway forwards requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub id: UpstreamId,
    pub kind: UpstreamKind,
    /// `http://` or `https://`, with a host, without a trailing `/`.
    pub base_url: String,
    /// Sent upstream as `Authorization: Bearer <api_key>` (`openai`) or `x-api-key` (`anthropic`).
    pub api_key: Option<Secret>,
    pub timeouts: UpstreamTimeouts,
    pub health: HealthCheckSettings,
    pub breaker: BreakerSettings,
}

/// The API an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamKind {
    /// Any OpenAI-compatible server (OpenAI, vLLM, llama.cpp, ...).
    OpenAi,
    /// Anthropic's Messages API (`POST {base_url}/messages`, `x-api-key`, `anthropic-version`);
    /// chat completions are translated to it and back.
    Anthropic,
}

impl UpstreamKind {
    /// The kinds' names as written in the settings (`kind = "..."`).
    pub const NAMES: [&'static str; 2] = ["openai", "anthropic"];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "openai" => Some(Self::OpenAi),
            "anthropic" => Some(Self::Anthropic),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        }
    }
}

/// How long each phase of an upstream request may take; each is greater than zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// Establishing the TCP (and TLS) connection.
    pub connect: Duration,
    /// From sending the request to receiving the response head; generous because a model may
    /// think for a long time before the first byte.
    pub response_head: Duration,
    /// Longest silence between two chunks of a streamed body.
    pub idle: Duration,
    /// The whole request, body included.
    pub total: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            response_head: Duration::from_secs(300),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

/// Active health probes of one upstream: a GET every `interval`; a 2xx answer within `timeout`
/// passes, anything else fails. `unhealthy_threshold` failures in a row mark it down,
/// `healthy_threshold` passes in a row mark it up again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSettings {
    pub enabled: bool,
    /// Starting with `/`: a path on the upstream's host (`/health`); otherwise relative to
    /// `base_url` (`models` probes `<base_url>/models`, which every OpenAI-compatible server has).
    pub path: String,
    /// Greater than zero.
    pub interval: Duration,
    /// Greater than zero.
    pub timeout: Duration,
    /// At least 1.
    pub healthy_threshold: u32,
    /// At least 1.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "models".to_owned(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        }
    }
}

/// Passive outlier detection and the circuit breaker of one upstream.
///
/// The breaker opens on `consecutive_failures` failed requests in a row, or when at least
/// `min_requests` requests in the last `window` failed at `failure_rate` or more. It stays
/// open for `open_for`, doubled on each reopening up to `max_open_for`, then lets
/// `half_open_probes` requests through: all succeed and it closes, one fails and it reopens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerSettings {
    /// 0 disables this trigger.
    pub consecutive_failures: u32,
    /// Zero disables this trigger.
    pub failure_rate: Ratio,
    /// Greater than zero.
    pub window: Duration,
    pub min_requests: u32,
    /// Greater than zero.
    pub open_for: Duration,
    /// At least `open_for`.
    pub max_open_for: Duration,
    /// At least 1.
    pub half_open_probes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: Ratio::from_millionths(500_000),
            window: Duration::from_secs(30),
            min_requests: 20,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(120),
            half_open_probes: 3,
        }
    }
}

/// `[[bootstrap.models]]`: a model name clients ask for, and where it is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSettings {
    pub name: String,
    pub strategy: Strategy,
    /// The encoding that counts this model's input for token limits; `None`: chosen from the
    /// first target's model name (OpenAI's names), else `cl100k_base`.
    pub tokenizer: Option<TokenEncoding>,
    /// Output tokens reserved for a request that names no `max_tokens` /
    /// `max_completion_tokens`; `None`: the gateway's default (1024). Greater than zero.
    pub default_max_tokens: Option<u64>,
    /// What the records of this model's calls keep; `None`: the node's `records.capture`.
    pub records: Option<Capture>,
    /// At least one, at most [`MAX_TARGETS_PER_MODEL`].
    pub targets: Vec<TargetSettings>,
}

/// A tiktoken encoding, by its tiktoken name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenEncoding {
    O200kBase,
    O200kHarmony,
    Cl100kBase,
    P50kBase,
    R50kBase,
}

impl TokenEncoding {
    pub const ALL: [Self; 5] = [
        Self::O200kBase,
        Self::O200kHarmony,
        Self::Cl100kBase,
        Self::P50kBase,
        Self::R50kBase,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::O200kBase => "o200k_base",
            Self::O200kHarmony => "o200k_harmony",
            Self::Cl100kBase => "cl100k_base",
            Self::P50kBase => "p50k_base",
            Self::R50kBase => "r50k_base",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// How a request picks among the available targets of the best priority tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Smooth weighted round-robin in proportion to `weight`.
    #[default]
    Weighted,
    /// Requests of one session (`x-session-id`, else the body's `user`) keep going to the same
    /// target while it is available; the first binding is rendezvous hashing, so every node
    /// picks the same target.
    Sticky,
    /// Power of two choices on requests in flight times latency.
    LeastLoaded,
}

/// One place a model is served: an upstream and the model's name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSettings {
    pub upstream: UpstreamId,
    /// The model name sent to the upstream.
    pub model: String,
    /// Greater than zero.
    pub weight: u32,
    /// Lower is preferred; a higher number is used only when every target with a lower one is
    /// unavailable.
    pub priority: u32,
}

/// `[[bootstrap.keys]]`: an API key clients authenticate with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySettings {
    pub name: String,
    pub secret: Secret,
    pub models: ModelAccess,
    pub limits: KeyLimitSettings,
    /// The `[[bootstrap.mcp_servers]]` this key may use (declared, no duplicates); `None`:
    /// every one.
    pub mcp_servers: Option<Vec<String>>,
    /// `records = "full" | "metadata"`: this key's capture policy, over the node's.
    pub records: Option<Capture>,
}

/// `limits = {...}` of a bootstrap key; every field optional, every number greater than 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLimitSettings {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u32>,
    pub calls: Option<BudgetSettings>,
    pub tokens: Option<BudgetSettings>,
    pub input_tokens: Option<BudgetSettings>,
    pub output_tokens: Option<BudgetSettings>,
    /// Requests / tokens the key may take at once cluster-wide; only with `rpm` / `tpm`.
    pub rpm_burst: Option<u64>,
    pub tpm_burst: Option<u64>,
}

/// `{ limit = N, period = "day" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSettings {
    pub limit: u64,
    pub period: LimitPeriod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitPeriod {
    Minute,
    Hour,
    Day,
    Month,
    Total,
}

/// Which models a key may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelAccess {
    /// `models = ["*"]`.
    All,
    /// Only these model names (declared, non-empty, no duplicates).
    Only(Vec<String>),
}

impl ModelAccess {
    pub fn allows(&self, model: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.iter().any(|name| name == model),
        }
    }
}

/// The id of an upstream: non-empty, ASCII letters, digits, `.`, `_` and `-` only, so it is
/// safe in URLs, metric labels and log lines without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamId(String);

/// Why a string is not an [`UpstreamId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid upstream id {0:?}; expected a non-empty id of ASCII letters, digits, '.', '_' and '-'"
)]
pub struct InvalidUpstreamId(String);

impl UpstreamId {
    pub fn new(id: String) -> Result<Self, InvalidUpstreamId> {
        let valid = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if valid {
            Ok(Self(id))
        } else {
            Err(InvalidUpstreamId(id))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UpstreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_id_accepts_only_url_safe_characters() {
        assert_eq!(
            UpstreamId::new("vllm-a.b_1".into()).unwrap().as_str(),
            "vllm-a.b_1"
        );
        for bad in ["", "a b", "a/b", "é"] {
            assert!(UpstreamId::new(bad.into()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn model_access_all_allows_everything_and_only_allows_its_list() {
        assert!(ModelAccess::All.allows("anything"));
        let only = ModelAccess::Only(vec!["a".into(), "b".into()]);
        assert!(only.allows("b"));
        assert!(!only.allows("c"));
    }
}
