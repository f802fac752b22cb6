//! What every handler shares: snapshots to read and the node's request limits.

use std::ops::Deref;
use std::sync::Arc;

use aigw_cluster::ClusterState;
use arc_swap::ArcSwap;

use crate::proxy::RouteTable;

#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

pub(crate) struct Shared {
    /// Keys and settings; read per request, written only by the cluster.
    pub cluster: ClusterState,
    /// Routes built from the settings in `cluster`, with the upstream clients they own.
    pub routes: ArcSwap<RouteTable>,
    pub max_body_bytes: usize,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
