//! Upstream health across the cluster: what this node tells its peers, and how it weighs what
//! they tell it.
//!
//! Each node gossips one [`UpstreamView`] per upstream. The merge rule ([`is_avoided`]):
//! a node trusts its own observations first, so its own `Down` avoids the upstream and its own
//! `Up` keeps using it whatever the peers say (it can reach the upstream; they may be the ones
//! cut off). Only with no verdict of its own (`Unknown`: just started, probes disabled and no
//! recent traffic) does it defer to the cluster, avoiding an upstream that at least `quorum`
//! live peers report down. A quorum rather than any one peer, so that a single node with a
//! broken network cannot make the others shun a healthy upstream.
//!
//! The gossip itself belongs to the cluster crate; it reads `Upstreams::local_views` and feeds
//! `Upstreams::set_peer_views` (upstreams.rs).

use std::collections::BTreeMap;

use aigw_config::NodeId;

/// One node's verdict on one upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamView {
    Up,
    Down,
    Unknown,
}

impl UpstreamView {
    /// The wire form gossip carries: `up`, `down` or `unknown`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Unknown => "unknown",
        }
    }

    /// The inverse of [`UpstreamView::as_str`]; anything else (a newer peer's word) is
    /// `Unknown`, which never makes a node avoid an upstream on its own.
    pub fn parse(text: &str) -> Self {
        match text {
            "up" => Self::Up,
            "down" => Self::Down,
            _ => Self::Unknown,
        }
    }
}

/// Whether a node whose own view is `own` avoids an upstream that `peers_down` live peers
/// report down.
pub fn is_avoided(own: UpstreamView, peers_down: u32, quorum: u32) -> bool {
    match own {
        UpstreamView::Down => true,
        UpstreamView::Up => false,
        UpstreamView::Unknown => peers_down >= quorum.max(1),
    }
}

/// The latest views of the live peers: node -> upstream id -> view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerViews {
    nodes: BTreeMap<NodeId, BTreeMap<String, UpstreamView>>,
}

impl PeerViews {
    pub fn new(nodes: BTreeMap<NodeId, BTreeMap<String, UpstreamView>>) -> Self {
        Self { nodes }
    }

    /// How many peers report `upstream` down.
    pub fn down_count(&self, upstream: &str) -> u32 {
        self.nodes
            .values()
            .filter(|views| views.get(upstream) == Some(&UpstreamView::Down))
            .count() as u32
    }

    /// Each peer's view of `upstream`, by node id.
    pub fn of<'a>(
        &'a self,
        upstream: &'a str,
    ) -> impl Iterator<Item = (NodeId, UpstreamView)> + 'a {
        self.nodes
            .iter()
            .filter_map(move |(node, views)| views.get(upstream).map(|view| (*node, *view)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use UpstreamView::{Down, Unknown, Up};

    #[test]
    fn own_observations_come_first() {
        for peers_down in [0, 1, 5] {
            assert!(is_avoided(Down, peers_down, 2), "own down always avoids");
            assert!(!is_avoided(Up, peers_down, 2), "own up always keeps it");
        }
    }

    #[test]
    fn with_no_verdict_of_its_own_a_node_follows_a_quorum_of_peers() {
        assert!(!is_avoided(Unknown, 0, 2));
        assert!(!is_avoided(Unknown, 1, 2));
        assert!(is_avoided(Unknown, 2, 2));
        assert!(is_avoided(Unknown, 3, 2));
        assert!(is_avoided(Unknown, 1, 1));
        assert!(
            !is_avoided(Unknown, 0, 0),
            "a quorum of zero peers would avoid everything"
        );
    }

    #[test]
    fn down_count_counts_only_peers_that_say_down() {
        let views = |v: UpstreamView| BTreeMap::from([("a".to_owned(), v)]);
        let peers = PeerViews::new(BTreeMap::from([
            (2, views(Down)),
            (3, views(Up)),
            (4, views(Down)),
            (5, views(Unknown)),
            (6, BTreeMap::new()),
        ]));
        assert_eq!(peers.down_count("a"), 2);
        assert_eq!(peers.down_count("b"), 0);
        assert_eq!(peers.of("a").count(), 4);
    }

    #[test]
    fn views_round_trip_through_their_wire_form() {
        for view in [Up, Down, Unknown] {
            assert_eq!(UpstreamView::parse(view.as_str()), view);
        }
        assert_eq!(UpstreamView::parse("degraded"), Unknown);
    }
}
