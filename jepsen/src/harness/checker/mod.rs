//! The checkers: a generic linearizability search ([`linearizable`]) and what the keys
//! workload claims ([`keys`]): per-key registers linearizable, no acknowledged write lost, no
//! refused create applied.

pub mod keys;
pub mod linearizable;
