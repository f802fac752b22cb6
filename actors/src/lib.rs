//! The runtime decisions of an aigw node, and the supervised actors that own the state behind
//! them: which target serves a request (balancing, sticky sessions), whether an upstream may
//! be used (health probes, outlier detection, circuit breaker, the cluster's view), and how
//! many retries the node can afford (retry budget), and the leases of key budgets this node
//! spends from (the pure lease arithmetic, and the key actors that renew them).
//!
//! Owns: a supervision tree per node (`NodeSupervisor` -> `UpstreamSupervisor` ->
//! `UpstreamActor`, `SessionSupervisor` -> `SessionActor`, `KeySupervisor` -> `KeyActor`;
//! node_supervisor.rs draws it), the
//! snapshots those actors publish, and the decisions as pure functions and plain structs
//! (breaker transitions, window arithmetic, EWMA, rendezvous hashing, power of two choices,
//! the retry budget) tested without a runtime.
//!
//! Never: performs HTTP or writes to Raft (the node injects health probes as a
//! [`HealthProbe`] and the budget ledger as a [`LeaseLedger`]), reads config
//! files, or makes the request path await an actor: requests read published snapshots and
//! atomics, and report outcomes by cast.
//!
//! Called by: the node, which starts the tree ([`NodeActors`]), hands it the upstreams of each
//! new settings revision (unchanged ones keep their actor and state:
//! [`NodeActors::plan_upstreams`], [`NodeActors::apply_upstreams`]), routes each request with
//! the handles it exposes, and reports each attempt through an [`Attempt`]; and the node's
//! gossip loop, through [`Upstreams::local_views`] and [`Upstreams::set_peer_views`].
#![forbid(unsafe_code)]

mod balance;
mod breaker;
mod cluster_view;
mod ewma;
mod hash;
mod health;
mod key;
pub mod lease;
mod least_loaded;
mod mailbox;
mod node_supervisor;
mod outlier;
mod rendezvous;
mod retry_budget;
mod session;
mod session_supervisor;
mod upstream;
mod upstream_supervisor;
mod upstreams;
mod window;

/// Defined in aigw-config so the cluster and the actors name a node alike.
pub use aigw_config::NodeId;
pub use balance::{WeightedRotation, weighted_choice};
pub use breaker::{Breaker, BreakerState};
pub use cluster_view::{PeerViews, UpstreamView, is_avoided};
pub use ewma::Ewma;
pub use health::{Health, HealthProbe, ProbeFuture, ProbeResult, ProbeTracker};
pub use key::{KeyActors, KeyLeases, KeyMsg, LeaseLedger, LeaseSlot, renewal_wanted};
pub use least_loaded::{better_of_two, load_cost, two_distinct};
pub use node_supervisor::{ApplyError, NodeActors, UpstreamPlan, UpstreamSpec};
pub use outlier::OutlierDetector;
pub use rendezvous::{SessionKey, rendezvous_pick, rendezvous_score};
pub use retry_budget::{RetryBudget, SharedRetryBudget};
pub use session::{SessionBinding, Sessions};
pub use upstream::{
    Admission, Attempt, AttemptResult, Outcome, QUIET_FLUSH, UpstreamHandle, UpstreamMsg,
    UpstreamPolicy, UpstreamStatus,
};
pub use upstreams::Upstreams;
