//! Every upstream of a node, by id: the handles the request path and the admin view read, and
//! the door through which gossip brings the peers' views in and takes this node's out.

use std::collections::BTreeMap;
use std::sync::Arc;

use aigw_config::NodeId;
use arc_swap::ArcSwap;

use crate::cluster_view::{PeerViews, UpstreamView};
use crate::upstream::UpstreamHandle;

pub struct Upstreams {
    node_id: NodeId,
    /// In settings order.
    handles: Vec<Arc<UpstreamHandle>>,
    peers: ArcSwap<PeerViews>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("node_id", &self.node_id)
            .field("handles", &self.handles)
            .finish_non_exhaustive()
    }
}

impl Upstreams {
    pub fn new(node_id: NodeId, handles: Vec<Arc<UpstreamHandle>>) -> Self {
        Self {
            node_id,
            handles,
            peers: ArcSwap::from_pointee(PeerViews::default()),
        }
    }

    /// The board of a new settings revision: `handles` (those of kept upstreams are the same
    /// `Arc`s as here), with the peers' views as last set here, so an upstream the cluster
    /// avoids stays avoided until the next gossip round instead of looking fresh.
    pub(crate) fn successor(&self, handles: Vec<Arc<UpstreamHandle>>) -> Self {
        let peers = self.peers.load_full();
        for handle in &handles {
            handle.set_peers_down(peers.down_count(handle.id()));
        }
        Self {
            node_id: self.node_id,
            handles,
            peers: ArcSwap::new(peers),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn get(&self, id: &str) -> Option<&Arc<UpstreamHandle>> {
        self.handles.iter().find(|h| &**h.id() == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<UpstreamHandle>> {
        self.handles.iter()
    }

    /// This node's view of every upstream, by id: what gossip publishes for this node.
    /// Cheap (one snapshot load per upstream); call it on every gossip round.
    pub fn local_views(&self) -> BTreeMap<String, UpstreamView> {
        self.handles
            .iter()
            .map(|h| (h.id().to_string(), h.view()))
            .collect()
    }

    /// Replaces the peers' views with those of the live peers now (a peer that left or died
    /// must be left out: only live nodes count towards the quorum). This node's own entry,
    /// if present, is ignored. Upstreams a peer does not mention count as not down.
    pub fn set_peer_views(&self, mut peers: BTreeMap<NodeId, BTreeMap<String, UpstreamView>>) {
        peers.remove(&self.node_id);
        let peers = PeerViews::new(peers);
        for handle in &self.handles {
            handle.set_peers_down(peers.down_count(handle.id()));
        }
        self.peers.store(Arc::new(peers));
    }

    /// The peers' views as last set.
    pub fn peer_views(&self) -> Arc<PeerViews> {
        self.peers.load_full()
    }
}

#[cfg(test)]
mod tests {
    use aigw_config::{BreakerSettings, HealthCheckSettings};

    use super::*;
    use crate::upstream::{Admission, UpstreamPolicy};

    fn upstreams() -> Upstreams {
        let policy = UpstreamPolicy {
            health: HealthCheckSettings::default(),
            breaker: BreakerSettings::default(),
        };
        let handles = ["a", "b"]
            .into_iter()
            .map(|id| UpstreamHandle::new(id.into(), policy.clone(), 2))
            .collect();
        Upstreams::new(1, handles)
    }

    #[test]
    fn local_views_cover_every_upstream() {
        let views = upstreams().local_views();
        assert_eq!(
            views.into_iter().collect::<Vec<_>>(),
            [
                ("a".to_owned(), UpstreamView::Unknown),
                ("b".to_owned(), UpstreamView::Unknown)
            ]
        );
    }

    #[test]
    fn peer_views_set_the_down_counts_and_ignore_this_nodes_own_entry() {
        let upstreams = upstreams();
        let down_a = || BTreeMap::from([("a".to_owned(), UpstreamView::Down)]);
        upstreams.set_peer_views(BTreeMap::from([
            (1, down_a()),
            (2, down_a()),
            (3, down_a()),
        ]));
        assert_eq!(upstreams.get("a").unwrap().peers_down(), 2);
        assert_eq!(upstreams.get("b").unwrap().peers_down(), 0);
        assert_eq!(upstreams.get("a").unwrap().admission(), Admission::Avoided);
        assert_eq!(upstreams.peer_views().of("a").count(), 2);
        // Peer 3 died: only live peers count.
        upstreams.set_peer_views(BTreeMap::from([(2, down_a())]));
        assert_eq!(upstreams.get("a").unwrap().admission(), Admission::Open);
    }

    #[test]
    fn a_successor_board_keeps_the_peers_views_for_old_and_new_upstreams() {
        let upstreams = upstreams();
        let down = |id: &str| BTreeMap::from([(id.to_owned(), UpstreamView::Down)]);
        let mut both = down("a");
        both.extend(down("c"));
        upstreams.set_peer_views(BTreeMap::from([(2, both.clone()), (3, both)]));
        let kept = Arc::clone(upstreams.get("a").unwrap());
        let added = UpstreamHandle::new("c".into(), kept.policy().clone(), 2);
        let next = upstreams.successor(vec![Arc::clone(&kept), Arc::clone(&added)]);
        assert_eq!(next.node_id(), 1);
        assert!(Arc::ptr_eq(next.get("a").unwrap(), &kept));
        assert!(next.get("b").is_none());
        assert_eq!(
            added.peers_down(),
            2,
            "a new upstream learns the peers' views at once"
        );
        assert_eq!(added.admission(), Admission::Avoided);
        assert_eq!(next.peer_views().of("a").count(), 2);
    }
}
