//! Choosing the target of each attempt of one request: the best priority tier that has an
//! available target not yet tried, then the model's strategy within that tier.
//!
//! Availability is read, never awaited: each target's [`Admission`] comes from its upstream
//! actor's published snapshot (merged with the peers' views), and a half-open upstream is
//! taken only with one of its probe permits. The targets tried so far are a `u64` mask, so a
//! request's whole failover sequence allocates nothing.
//!
//! - `weighted`: the tier's smooth weighted rotation; an unavailable scheduled target is
//!   replaced by a weighted draw among the available ones.
//! - `least-loaded`: power of two choices on `(in flight + 1) * latency / weight`.
//! - `sticky`: the session's binding when its upstream is available in this tier (first
//!   attempt only: a failed binding is what moves a session); otherwise weighted rendezvous
//!   hashing over the available targets, which every node computes alike. Without a session
//!   key, `weighted`.
//!
//! Panic mode (`routing.panic_mode`): a request that finds no target available in any tier,
//! before any attempt, tries the avoided targets anyway, best tier first and within a tier the
//! least recently failed first (the likeliest to have recovered). Its attempts say so
//! ([`Pick::panic`]), and the caller takes each from the retry budget. Failover from a normal
//! attempt never enters panic: a request that had an available target was not refused.

use aigw_actors::{
    Admission, Attempt, SessionKey, better_of_two, load_cost, rendezvous_pick, two_distinct,
};
use aigw_config::Strategy;

use super::routes::{ModelRoute, RouteTarget, Tier};

pub(crate) struct Picker<'r> {
    route: &'r ModelRoute,
    session: Option<SessionKey>,
    /// The upstream the session is bound to, if it is bound.
    bound: Option<std::sync::Arc<str>>,
    tried: u64,
    /// Whether a request that finds nothing available may try the avoided targets.
    panic_mode: bool,
    /// An attempt has been begun (panic mode starts only before the first).
    attempted: bool,
    /// This request is in panic: every further pick ignores availability.
    panicking: bool,
}

/// One attempt's target, begun.
pub(crate) struct Pick<'r> {
    pub target: &'r RouteTarget,
    pub attempt: Attempt,
    /// Taken in panic mode: its target was not available.
    pub panic: bool,
}

impl<'r> Picker<'r> {
    pub fn new(
        route: &'r ModelRoute,
        session: Option<SessionKey>,
        bound: Option<std::sync::Arc<str>>,
        panic_mode: bool,
    ) -> Self {
        Self {
            route,
            session,
            bound,
            tried: 0,
            panic_mode,
            attempted: false,
            panicking: false,
        }
    }

    /// The next target to try, with its attempt begun; `None` when no untried target is
    /// available in any tier (in panic: when every target has been tried).
    pub fn next(&mut self) -> Option<Pick<'r>> {
        if !self.panicking {
            if let Some((target, attempt)) = self.next_available() {
                self.attempted = true;
                return Some(Pick {
                    target,
                    attempt,
                    panic: false,
                });
            }
            if self.attempted || !self.panic_mode {
                return None;
            }
            self.panicking = true;
        }
        let index = self.least_recently_failed()?;
        self.tried |= bit(index);
        let target = &self.route.targets[index];
        // Past the breaker: its outcome still reaches the actor (ignored while open).
        let attempt = target.handle.begin(Admission::Open)?;
        self.attempted = true;
        Some(Pick {
            target,
            attempt,
            panic: true,
        })
    }

    /// In panic: the untried target of the best tier that failed least recently (one never
    /// seen failing here first, then the earliest failure).
    fn least_recently_failed(&self) -> Option<usize> {
        self.route.tiers.iter().find_map(|tier| {
            tier.range
                .clone()
                .filter(|&i| self.tried & bit(i) == 0)
                .min_by_key(|&i| self.route.targets[i].handle.failed_at())
        })
    }

    fn next_available(&mut self) -> Option<(&'r RouteTarget, Attempt)> {
        let route = self.route;
        for tier in &route.tiers {
            loop {
                let (usable, probe_only) = self.usable(tier);
                if usable == 0 {
                    break;
                }
                let index = self.choose(tier, usable)?;
                self.tried |= bit(index);
                let admission = if probe_only & bit(index) != 0 {
                    Admission::ProbeOnly
                } else {
                    Admission::Open
                };
                let target = &route.targets[index];
                // A half-open upstream whose permits are all taken is skipped like a tried one.
                if let Some(attempt) = target.handle.begin(admission) {
                    return Some((target, attempt));
                }
            }
        }
        None
    }

    /// The untried targets of `tier` that may be used, and which of those only as probes.
    fn usable(&self, tier: &Tier) -> (u64, u64) {
        let mut usable = 0;
        let mut probe_only = 0;
        for index in tier.range.clone() {
            if self.tried & bit(index) != 0 {
                continue;
            }
            match self.route.targets[index].handle.admission() {
                Admission::Open => usable |= bit(index),
                Admission::ProbeOnly => {
                    usable |= bit(index);
                    probe_only |= bit(index);
                }
                Admission::Avoided => {}
            }
        }
        (usable, probe_only)
    }

    fn choose(&self, tier: &Tier, usable: u64) -> Option<usize> {
        let targets = &self.route.targets;
        match (self.route.strategy, self.session) {
            (Strategy::Weighted, _) | (Strategy::Sticky, None) => weighted(tier, usable),
            (Strategy::LeastLoaded, _) => {
                let count = usable.count_ones() as usize;
                if count == 1 {
                    return nth_set_bit(usable, 0);
                }
                let (a, b) = two_distinct(count, rand::random(), rand::random());
                let (a, b) = (nth_set_bit(usable, a)?, nth_set_bit(usable, b)?);
                Some(better_of_two(a, b, |i| {
                    let handle = &targets[i].handle;
                    load_cost(handle.in_flight(), handle.latency_ms(), targets[i].weight)
                }))
            }
            (Strategy::Sticky, Some(session)) => {
                if self.tried == 0
                    && let Some(bound) = &self.bound
                    && let Some(index) = tier
                        .range
                        .clone()
                        .find(|&i| usable & bit(i) != 0 && targets[i].upstream.id == *bound)
                {
                    return Some(index);
                }
                rendezvous_pick(
                    session,
                    set_bits(usable).map(|i| (i, &*targets[i].upstream.id, targets[i].weight)),
                )
            }
        }
    }
}

fn weighted(tier: &Tier, usable: u64) -> Option<usize> {
    let start = tier.range.start;
    tier.rotation
        .pick_usable(|i| usable & bit(start + i) != 0, rand::random())
        .map(|i| start + i)
}

fn bit(index: usize) -> u64 {
    1 << index
}

fn set_bits(mask: u64) -> impl Iterator<Item = usize> {
    (0..u64::BITS as usize).filter(move |&i| mask & bit(i) != 0)
}

fn nth_set_bit(mask: u64, n: usize) -> Option<usize> {
    set_bits(mask).nth(n)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use aigw_actors::{UpstreamHandle, UpstreamPolicy, UpstreamView, Upstreams};
    use aigw_cluster::StateSnapshot;

    use super::*;
    use crate::proxy::{RouteTable, endpoints};

    /// A route over a, b (priority 0) and c (priority 1), with upstream handles but no actors;
    /// availability is set through peer views (quorum 1, no verdict of its own).
    fn table(strategy: &str) -> (RouteTable, Upstreams) {
        crate::install_crypto_provider();
        let mut text = String::from("[node]\nid = 1\napi_listen = \"127.0.0.1:0\"\n");
        for id in ["a", "b", "c"] {
            text.push_str(&format!(
                "[[bootstrap.upstreams]]\nid = \"{id}\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n"
            ));
        }
        text.push_str(&format!(
            "[[bootstrap.models]]\nname = \"m\"\nstrategy = \"{strategy}\"\ntargets = [{{ upstream = \"c\", model = \"x\", priority = 1 }}, {{ upstream = \"a\", model = \"x\" }}, {{ upstream = \"b\", model = \"x\" }}]\n"
        ));
        let config = aigw_config::parse_with_env(&text, "t.toml", &|_| None).unwrap();
        let snapshot = StateSnapshot::from_bootstrap(&config.bootstrap);
        let (endpoints, specs) = endpoints(&snapshot).unwrap();
        let handles = specs
            .iter()
            .map(|s| {
                UpstreamHandle::new(
                    s.id.clone(),
                    UpstreamPolicy::of(&config.bootstrap.upstreams[0]),
                    1,
                )
            })
            .collect();
        let upstreams = Upstreams::new(1, handles);
        (
            RouteTable::build(&snapshot, &endpoints, &upstreams).unwrap(),
            upstreams,
        )
    }

    fn down(upstreams: &Upstreams, ids: &[&str]) {
        let views = ids
            .iter()
            .map(|id| ((*id).to_owned(), UpstreamView::Down))
            .collect();
        upstreams.set_peer_views(BTreeMap::from([(2, views)]));
    }

    fn first_pick(route: &ModelRoute, session: Option<SessionKey>, bound: Option<&str>) -> String {
        let mut picker = Picker::new(route, session, bound.map(Arc::from), false);
        picker.next().unwrap().target.upstream.id.to_string()
    }

    #[test]
    fn a_lower_tier_is_used_only_when_every_higher_target_is_unavailable() {
        let (table, upstreams) = table("weighted");
        let route = table.get("m").unwrap();
        assert_eq!(route.tiers.len(), 2);
        for _ in 0..20 {
            assert_ne!(first_pick(route, None, None), "c");
        }
        down(&upstreams, &["a"]);
        for _ in 0..20 {
            assert_eq!(first_pick(route, None, None), "b");
        }
        down(&upstreams, &["a", "b"]);
        assert_eq!(first_pick(route, None, None), "c");
        down(&upstreams, &["a", "b", "c"]);
        assert!(Picker::new(route, None, None, false).next().is_none());
    }

    #[test]
    fn failover_tries_each_available_target_once_best_tier_first() {
        let (table, _upstreams) = table("least-loaded");
        let route = table.get("m").unwrap();
        let mut picker = Picker::new(route, None, None, true);
        let mut order = Vec::new();
        while let Some(pick) = picker.next() {
            assert!(!pick.panic);
            order.push(pick.target.upstream.id.to_string());
        }
        assert_eq!(order.len(), 3);
        assert_eq!(order[2], "c");
    }

    #[test]
    fn a_sticky_session_goes_to_its_binding_else_to_its_rendezvous_winner() {
        let (table, upstreams) = table("sticky");
        let route = table.get("m").unwrap();
        let session = SessionKey::new("m", "conversation");
        let winner = first_pick(route, Some(session), None);
        for _ in 0..10 {
            assert_eq!(first_pick(route, Some(session), None), winner);
        }
        let other = if winner == "a" { "b" } else { "a" };
        assert_eq!(first_pick(route, Some(session), Some(other)), other);
        // A binding to an unavailable upstream falls back to rendezvous among the rest.
        down(&upstreams, &[other]);
        assert_eq!(first_pick(route, Some(session), Some(other)), winner);
    }

    #[test]
    fn in_panic_mode_a_request_with_nothing_available_tries_every_target_best_tier_first() {
        let (table, upstreams) = table("weighted");
        let route = table.get("m").unwrap();
        down(&upstreams, &["a", "b", "c"]);
        let mut picker = Picker::new(route, None, None, true);
        let mut order = Vec::new();
        while let Some(pick) = picker.next() {
            assert!(pick.panic);
            order.push(pick.target.upstream.id.to_string());
        }
        // Neither a nor b has failed here (only the peers say down): tier 0 first, then c.
        assert_eq!(order.len(), 3);
        assert_eq!(order[2], "c", "{order:?}");
        // A request that had an available target does not panic when it runs out.
        down(&upstreams, &["b", "c"]);
        let mut picker = Picker::new(route, None, None, true);
        let first = picker.next().unwrap();
        assert_eq!((&*first.target.upstream.id, first.panic), ("a", false));
        assert!(picker.next().is_none());
    }

    #[test]
    fn set_bits_walk_the_mask_in_order() {
        assert_eq!(set_bits(0b1011_0000).collect::<Vec<_>>(), [4, 5, 7]);
        assert_eq!(nth_set_bit(0b1011_0000, 2), Some(7));
        assert_eq!(nth_set_bit(0b1011_0000, 3), None);
        assert_eq!(set_bits(1 << 63).collect::<Vec<_>>(), [63]);
    }
}
