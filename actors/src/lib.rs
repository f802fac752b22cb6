//! The runtime decisions of an aigw node: which target serves a request (balancing), and later
//! upstream health and breakers, key quotas and leases, session affinity, each owned by a
//! supervised actor.
//!
//! Owns: decisions as pure functions and lock-free structures the request path can consult
//! without awaiting anything.
//!
//! Never: performs HTTP, reads config files, or blocks the request path on an actor reply.
//!
//! Called by: the node's proxy, once per request, to choose a target.
#![forbid(unsafe_code)]

mod balance;

pub use balance::WeightedRotation;
