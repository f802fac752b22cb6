//! Gossip (chitchat over UDP on the cluster address): membership, liveness, each node's
//! addresses and version, and whatever small values other parts of the node publish (upstream
//! health). Eventually consistent; nothing here is used to decide what is true, only what is
//! probably alive.
//!
//! The gossip keys are private to this module: callers use `set_local` / `peer_values` and the
//! typed `GossipMember`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::UdpTransport;
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, spawn_chitchat};

use crate::raft::NodeId;

const KEY_API: &str = "api";
const KEY_ADMIN: &str = "admin";
const KEY_VERSION: &str = "version";
/// Prefix for values published by other parts of the node (`set_local`).
const USER_PREFIX: &str = "x:";

/// What gossip says about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipMember {
    pub node_id: NodeId,
    pub cluster_addr: SocketAddr,
    pub live: bool,
    pub api_addr: Option<String>,
    pub admin_addr: Option<String>,
    pub version: Option<String>,
}

/// What this node announces about itself.
#[derive(Debug, Clone, Default)]
pub struct Advertised {
    pub api_addr: Option<String>,
    pub admin_addr: Option<String>,
    pub version: String,
}

pub(crate) struct Gossip {
    handle: ChitchatHandle,
}

impl Gossip {
    pub async fn start(
        node_id: NodeId,
        cluster_name: &str,
        listen: SocketAddr,
        seeds: Vec<SocketAddr>,
        advertised: &Advertised,
        interval: Duration,
    ) -> anyhow::Result<Self> {
        // A new generation on every start, so peers drop what they knew of the old process.
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(node_id.to_string(), generation, listen),
            cluster_id: cluster_name.to_owned(),
            gossip_interval: interval,
            listen_addr: listen,
            seed_nodes: seeds
                .into_iter()
                .filter(|s| *s != listen)
                .map(|s| s.to_string())
                .collect(),
            failure_detector_config: FailureDetectorConfig {
                initial_interval: interval * 10,
                dead_node_grace_period: Duration::from_secs(3600),
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V1,
        };
        let mut kvs = vec![(KEY_VERSION.to_owned(), advertised.version.clone())];
        if let Some(api) = &advertised.api_addr {
            kvs.push((KEY_API.to_owned(), api.clone()));
        }
        if let Some(admin) = &advertised.admin_addr {
            kvs.push((KEY_ADMIN.to_owned(), admin.clone()));
        }
        let handle = spawn_chitchat(config, kvs, &UdpTransport).await?;
        Ok(Self { handle })
    }

    /// Every node gossip knows of (itself included), live or not, by node id.
    pub async fn members(&self) -> BTreeMap<NodeId, GossipMember> {
        self.handle
            .with_chitchat(|chitchat| {
                let live: Vec<ChitchatId> = chitchat.live_nodes().cloned().collect();
                let mut members = BTreeMap::new();
                for (id, state) in chitchat.node_states() {
                    let Ok(node_id) = id.node_id.parse::<NodeId>() else {
                        continue;
                    };
                    let member = GossipMember {
                        node_id,
                        cluster_addr: id.gossip_advertise_addr,
                        live: live.contains(id),
                        api_addr: state.get(KEY_API).map(str::to_owned),
                        admin_addr: state.get(KEY_ADMIN).map(str::to_owned),
                        version: state.get(KEY_VERSION).map(str::to_owned),
                    };
                    // After a restart the old generation may linger: keep the live or newest one.
                    let newer = members
                        .get(&node_id)
                        .is_none_or(|m: &GossipMember| !m.live || member.live);
                    if newer {
                        members.insert(node_id, member);
                    }
                }
                members
            })
            .await
    }

    /// Publishes a value under this node for peers to read.
    pub async fn set_local(&self, key: &str, value: &str) {
        let key = format!("{USER_PREFIX}{key}");
        let value = value.to_owned();
        self.handle
            .with_chitchat(move |chitchat| {
                chitchat.self_node_state().set(key.clone(), value.clone())
            })
            .await;
    }

    /// The values every live node (this one included) published under keys starting with
    /// `prefix`, as (node id, key without the prefix, value).
    pub async fn live_values(&self, prefix: &str) -> Vec<(NodeId, String, String)> {
        let full = format!("{USER_PREFIX}{prefix}");
        self.handle
            .with_chitchat(move |chitchat| {
                let live: Vec<ChitchatId> = chitchat.live_nodes().cloned().collect();
                let mut out = Vec::new();
                for id in &live {
                    let (Some(state), Ok(node_id)) =
                        (chitchat.node_state(id), id.node_id.parse::<NodeId>())
                    else {
                        continue;
                    };
                    for (key, value) in state.key_values() {
                        if let Some(rest) = key.strip_prefix(full.as_str()) {
                            out.push((node_id, rest.to_owned(), value.to_owned()));
                        }
                    }
                }
                out
            })
            .await
    }

    pub async fn shutdown(self) {
        let _ = self.handle.shutdown().await;
    }
}
