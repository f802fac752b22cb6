//! The published, immutable view of the replicated state that the request path reads.

use std::sync::Arc;

use aigw_config::{Bootstrap, ModelSettings, UpstreamSettings};
use arc_swap::ArcSwap;

use crate::keys::KeyTable;

/// One consistent version of the cluster state.
#[derive(Debug, Clone, Default)]
pub struct StateSnapshot {
    /// Bumped on every applied change, so readers can tell snapshots apart.
    pub version: u64,
    pub keys: KeyTable,
    pub upstreams: Vec<UpstreamSettings>,
    pub models: Vec<ModelSettings>,
}

impl StateSnapshot {
    /// The state a new cluster starts from: the config's `[bootstrap]` section.
    pub fn from_bootstrap(bootstrap: &Bootstrap) -> Self {
        Self {
            version: 1,
            keys: KeyTable::from_settings(&bootstrap.keys),
            upstreams: bootstrap.upstreams.clone(),
            models: bootstrap.models.clone(),
        }
    }
}

/// The handle through which state is published and read. Cloning shares it.
#[derive(Debug, Clone)]
pub struct ClusterState {
    current: Arc<ArcSwap<StateSnapshot>>,
}

impl ClusterState {
    pub fn new(initial: StateSnapshot) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(initial)),
        }
    }

    /// The current snapshot; lock-free, never waits.
    pub fn load(&self) -> Arc<StateSnapshot> {
        self.current.load_full()
    }

    /// Publishes a new snapshot and returns it. Its version is one past the current one.
    pub fn publish(&self, mut next: StateSnapshot) -> Arc<StateSnapshot> {
        next.version = self.current.load().version + 1;
        let next = Arc::new(next);
        self.current.store(next.clone());
        next
    }
}
