//! The replicated data model of an aigw cluster: API keys (held as hashes of their secrets) and
//! the cluster-wide settings (upstreams, models and their targets), published as immutable
//! snapshots.
//!
//! Owns: the types every node agrees on and the snapshot the request path reads. Today the state
//! is built once from the config's `[bootstrap]` section; the Raft log (cluster issue) will apply
//! versioned changes to the same types and publish new snapshots through the same handle.
//!
//! Never: does network or disk I/O on the read side. `ClusterState::load` is a lock-free
//! `ArcSwap` load, so the request path never waits on this crate.
//!
//! Called by: the node (auth and routing read snapshots), later the actors (quota leases).
#![forbid(unsafe_code)]

mod keys;
mod snapshot;

pub use keys::{KeyId, KeyRecord, KeySecretHash, KeyTable};
pub use snapshot::{ClusterState, StateSnapshot};
