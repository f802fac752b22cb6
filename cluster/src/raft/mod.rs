//! openraft wiring: the type config, storage (log and state machine on redb) and the network
//! (bincode over HTTP/1.1 on the cluster address). Kept in this one module so a later move to
//! openraft 0.10 stays local.

mod log_store;
pub(crate) mod network;
mod state_store;
pub(crate) mod store;

use std::io::Cursor;

use crate::command::{Outcome, Proposal};

pub(crate) use log_store::LogStore;
pub(crate) use network::{Network, PeerClient};
pub(crate) use state_store::StateStore;

pub use aigw_config::NodeId;
pub type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// aigw's Raft types: commands in, outcomes out, snapshots as bytes.
    pub TypeConfig:
        D = Proposal,
        R = Outcome,
        NodeId = NodeId,
        Node = Node,
        SnapshotData = Cursor<Vec<u8>>,
);

pub(crate) type Raft = openraft::Raft<TypeConfig>;
pub(crate) type Entry = openraft::Entry<TypeConfig>;

/// bincode's standard configuration, used for everything we encode.
pub(crate) fn encode<T: serde::Serialize>(
    value: &T,
) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map(|(value, _)| value)
}
