//! The checkers: a generic linearizability search ([`linearizable`]) and what the keys
//! workload claims ([`keys`]): per-key registers linearizable, no acknowledged write lost, no
//! refused create applied; and what the quota workload claims ([`quota`]): budgets never
//! exceeded, rates within R·(1 + β) per 60 s window.

pub mod keys;
pub mod linearizable;
pub mod quota;
