//! The config file exactly as written: serde's view of the TOML contract.
//!
//! These types mirror the file's shape (sections, keys, optional keys, unknown keys rejected)
//! and keep the span of every value that `validate` may need to point at. They hold strings as
//! written (after `${NAME}` interpolation) and check nothing about their content: turning them
//! into typed settings is `validate`'s job, which can then report every problem at once
//! instead of stopping at serde's first error.
//!
//! No `Debug` here: these types hold secrets in plain strings.

use std::ops::Range;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::interpolate;

/// A string value after `${NAME}` interpolation, with the span of the value in the file.
///
/// Every string in the config is a `Text`, so interpolation applies to any string value.
pub(crate) struct Text {
    pub(crate) value: String,
    pub(crate) span: Range<usize>,
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let written = Spanned::<String>::deserialize(deserializer)?;
        // The error carries no span of its own; toml attaches the value's span to it.
        let value =
            interpolate::expand_in_scope(written.get_ref()).map_err(serde::de::Error::custom)?;
        Ok(Self {
            value,
            span: written.span(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) node: RawNode,
    #[serde(default)]
    pub(crate) server: RawServer,
    #[serde(default)]
    pub(crate) routing: RawRouting,
    #[serde(default)]
    pub(crate) cluster: RawCluster,
    pub(crate) admin: Option<RawAdmin>,
    #[serde(default)]
    pub(crate) records: RawRecords,
    #[serde(default)]
    pub(crate) bootstrap: RawBootstrap,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRecords {
    pub(crate) enabled: Option<bool>,
    pub(crate) capture: Option<Text>,
    pub(crate) max_body_bytes: Option<Spanned<usize>>,
    pub(crate) fsync_interval: Option<Text>,
    pub(crate) segment_bytes: Option<Spanned<u64>>,
    pub(crate) segment_age: Option<Text>,
    pub(crate) retain_bytes: Option<Spanned<u64>>,
    pub(crate) retain_age: Option<Text>,
    #[serde(default)]
    pub(crate) sinks: Vec<RawSink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSink {
    pub(crate) name: Text,
    pub(crate) kind: Text,
    pub(crate) url: Option<Text>,
    pub(crate) subject: Option<Text>,
    pub(crate) stream: Option<Text>,
    pub(crate) token: Option<Text>,
    pub(crate) user: Option<Text>,
    pub(crate) password: Option<Text>,
    #[serde(default)]
    pub(crate) brokers: Vec<Text>,
    pub(crate) topic: Option<Text>,
    pub(crate) partitions: Option<Spanned<i32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub(crate) id: u64,
    pub(crate) api_listen: Text,
    pub(crate) admin_listen: Option<Text>,
    pub(crate) cluster_listen: Option<Text>,
    pub(crate) data_dir: Option<Text>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub(crate) max_body_bytes: Option<Spanned<usize>>,
    pub(crate) max_upload_bytes: Option<Spanned<usize>>,
    pub(crate) shutdown_grace: Option<Text>,
    pub(crate) header_read_timeout: Option<Text>,
    pub(crate) body_idle_timeout: Option<Text>,
    pub(crate) keep_alive_timeout: Option<Text>,
    pub(crate) max_connections: Option<Spanned<usize>>,
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<Text>,
    pub(crate) id_secret: Option<Text>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouting {
    pub(crate) max_attempts: Option<Spanned<u32>>,
    #[serde(default)]
    pub(crate) retry_budget: RawRetryBudget,
    pub(crate) session_ttl: Option<Text>,
    pub(crate) peer_down_quorum: Option<Spanned<u32>>,
    pub(crate) panic_mode: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetryBudget {
    pub(crate) ratio: Option<Spanned<f64>>,
    pub(crate) min_per_second: Option<u32>,
    pub(crate) window: Option<Text>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub(crate) name: Option<Text>,
    #[serde(default)]
    pub(crate) initial_members: Vec<Text>,
    pub(crate) join: Option<Text>,
    pub(crate) heartbeat: Option<Text>,
    pub(crate) election_timeout_min: Option<Text>,
    pub(crate) election_timeout_max: Option<Text>,
    pub(crate) write_timeout: Option<Text>,
    pub(crate) snapshot_every: Option<Spanned<u64>>,
    pub(crate) gossip_interval: Option<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub(crate) token: Text,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBootstrap {
    #[serde(default)]
    pub(crate) upstreams: Vec<RawUpstream>,
    #[serde(default)]
    pub(crate) models: Vec<RawModel>,
    #[serde(default)]
    pub(crate) keys: Vec<RawKey>,
    #[serde(default)]
    pub(crate) mcp_servers: Vec<RawBackend>,
    #[serde(default)]
    pub(crate) agents: Vec<RawAgent>,
    #[serde(default)]
    pub(crate) sandboxes: Vec<RawBackend>,
}

/// `[[bootstrap.mcp_servers]]` and `[[bootstrap.sandboxes]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub(crate) name: Text,
    pub(crate) url: Text,
    pub(crate) headers: Option<Spanned<std::collections::BTreeMap<String, Text>>>,
}

/// `[[bootstrap.agents]]`: a backend named by its agent `type`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    #[serde(rename = "type")]
    pub(crate) kind: Text,
    pub(crate) url: Text,
    pub(crate) headers: Option<Spanned<std::collections::BTreeMap<String, Text>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub(crate) id: Text,
    pub(crate) kind: Text,
    pub(crate) base_url: Text,
    pub(crate) api_key: Option<Text>,
    #[serde(default)]
    pub(crate) timeouts: RawTimeouts,
    #[serde(default)]
    pub(crate) health: RawHealth,
    #[serde(default)]
    pub(crate) breaker: RawBreaker,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    pub(crate) connect: Option<Text>,
    pub(crate) response_head: Option<Text>,
    pub(crate) idle: Option<Text>,
    pub(crate) total: Option<Text>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub(crate) enabled: Option<bool>,
    pub(crate) path: Option<Text>,
    pub(crate) interval: Option<Text>,
    pub(crate) timeout: Option<Text>,
    pub(crate) healthy_threshold: Option<Spanned<u32>>,
    pub(crate) unhealthy_threshold: Option<Spanned<u32>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreaker {
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) failure_rate: Option<Spanned<f64>>,
    pub(crate) window: Option<Text>,
    pub(crate) min_requests: Option<u32>,
    pub(crate) open_for: Option<Text>,
    pub(crate) max_open_for: Option<Text>,
    pub(crate) half_open_probes: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModel {
    pub(crate) name: Text,
    pub(crate) strategy: Option<Text>,
    pub(crate) tokenizer: Option<Text>,
    pub(crate) default_max_tokens: Option<Spanned<u64>>,
    pub(crate) records: Option<Text>,
    pub(crate) targets: Spanned<Vec<RawTarget>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    pub(crate) upstream: Text,
    pub(crate) model: Text,
    pub(crate) weight: Option<Spanned<u32>>,
    pub(crate) priority: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKey {
    pub(crate) name: Text,
    pub(crate) secret: Text,
    pub(crate) models: Option<Spanned<Vec<Text>>>,
    #[serde(default)]
    pub(crate) limits: RawLimits,
    pub(crate) mcp_servers: Option<Spanned<Vec<Text>>>,
    pub(crate) records: Option<Text>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub(crate) rpm: Option<Spanned<u64>>,
    pub(crate) tpm: Option<Spanned<u64>>,
    pub(crate) max_concurrent: Option<Spanned<u32>>,
    pub(crate) calls: Option<RawBudget>,
    pub(crate) tokens: Option<RawBudget>,
    pub(crate) input_tokens: Option<RawBudget>,
    pub(crate) output_tokens: Option<RawBudget>,
    pub(crate) rpm_burst: Option<Spanned<u64>>,
    pub(crate) tpm_burst: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBudget {
    pub(crate) limit: Spanned<u64>,
    pub(crate) period: Text,
}
