//! The cluster: what every node agrees on (Raft over openraft, log and state machine on redb)
//! and what nodes tell each other (gossip over chitchat), with no external database.
//!
//! Owns: the replicated data model (keys as SHA-256 hashes of their secrets, the cluster-wide
//! settings document, quota ledgers, the owners of video jobs), the one `Command` enum that changes it, the snapshots the request path
//! reads, node-to-node RPC, membership and cluster status.
//!
//! Never: puts Raft, gossip or a peer on the request path. `ClusterState::load` is a lock-free
//! `ArcSwap` load of the last applied state; only admin writes and linearizable reads wait on
//! the cluster, and those are bounded by the write timeout.
//!
//! Called by: the node (auth and routing read snapshots; the admin API writes and reads).
#![forbid(unsafe_code)]

mod command;
mod data_dir;
mod gossip;
mod keys;
mod model;
mod node;
mod peer;
mod raft;
mod rpc;
mod settings;
mod snapshot;
mod state_machine;
mod videos;

pub use command::{BudgetKey, Command, Outcome, Proposal, RatePlan, Rejection};
pub use data_dir::{create_private_dir, create_private_file};
pub use gossip::{Advertised, GossipMember};
pub use keys::KeyTable;
pub use model::{
    AllowedModels, Budget, Dimension, KeyId, KeyLimits, KeyPatch, KeyRecord, KeySecretHash, Period,
    SettingsDoc,
};
pub use node::{
    ClusterError, ClusterNode, ClusterOptions, ClusterStatus, ClusterTiming, MemberStatus,
    unix_now, unix_now_ms,
};
pub use peer::{PeerBody, PeerReply};
pub use raft::NodeId;
pub use raft::network::PeerError;
pub use raft::store::StoreError;
pub use settings::{EnvLookup, Settings, parse_settings, process_env, redact_settings};
pub use snapshot::{ClusterState, StateSnapshot, bootstrap_command};
pub use state_machine::{BudgetState, Lease};
pub use videos::{JOBS_PER_KEY, RETENTION_SECS, VideoJob, VideoOwners};
