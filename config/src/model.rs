//! The typed settings a parsed config file turns into.
//!
//! Invariants (established by `validate`, relied on by every caller): upstream ids, model names
//! and key names are unique and non-empty; every target names a declared upstream; every model
//! a key lists is declared; weights and upstream timeouts are greater than zero; base URLs are
//! `http(s)://host...` without a trailing `/`; key secrets have at least 8 characters.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::Secret;

/// A whole config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub node: NodeSettings,
    pub server: ServerSettings,
    pub admin: Option<AdminSettings>,
    pub bootstrap: Bootstrap,
}

impl Config {
    /// A commented example config: every section and key, with its default where it has one.
    /// It needs `AIGW_ADMIN_TOKEN` and `AIGW_DEMO_KEY` in the environment.
    pub fn example() -> &'static str {
        include_str!("../aigw.example.toml")
    }
}

/// `[node]`: this process's identity and the addresses it listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    pub id: u64,
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
    pub shutdown_grace: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// `[admin]`: access to the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub token: Secret,
}

/// `[bootstrap]`: the upstreams, models and keys a new cluster starts with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bootstrap {
    pub upstreams: Vec<UpstreamSettings>,
    pub models: Vec<ModelSettings>,
    pub keys: Vec<KeySettings>,
}

/// `[[bootstrap.upstreams]]`: one server the gateway forwards requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub id: UpstreamId,
    pub kind: UpstreamKind,
    /// `http://` or `https://`, with a host, without a trailing `/`.
    pub base_url: String,
    /// Sent upstream as `Authorization: Bearer <api_key>`.
    pub api_key: Option<Secret>,
    pub timeouts: UpstreamTimeouts,
}

/// The API an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamKind {
    /// Any OpenAI-compatible server (OpenAI, vLLM, llama.cpp, ...).
    OpenAi,
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

/// `[[bootstrap.models]]`: a model name clients ask for, and where it is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSettings {
    pub name: String,
    pub strategy: Strategy,
    /// At least one.
    pub targets: Vec<TargetSettings>,
}

/// How a request picks among a model's targets of the best priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// At random in proportion to `weight`.
    #[default]
    Weighted,
    /// Requests from the same caller keep going to the same target while it is available.
    Sticky,
    /// The target with the fewest requests in flight.
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
    /// Lower is preferred; higher priorities are used only when lower ones are unavailable.
    pub priority: u32,
}

/// `[[bootstrap.keys]]`: an API key clients authenticate with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySettings {
    pub name: String,
    pub secret: Secret,
    pub models: ModelAccess,
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
