//! Demand-weighted rate shares (docs/QUOTAS.md, "Rates").
//!
//! Without a plan every voter enforces the fallback share φ = R / N of a key's RPM and TPM.
//! The leader plans, every [`TICK`], one interval of [`INTERVAL_MS`] starting at least
//! [`LEAD_MS`] ahead: each voter's share by the demand the nodes gossip, summing to at most R,
//! with φ kept for every voter it cannot hear (a node cut off keeps running on φ).
//!
//! A plan is safe to apply before everyone has it because of how a node reads it:
//! - a share **below** φ is used as soon as the node has applied the plan, over
//!   `[t0 − g, t1 + g]` by its clock;
//! - a share **above** φ is used only once the plan is *active* and only over `[t0 + g, t1 − g]`;
//!   the leader activates a plan (a second entry) after every node whose share it lowered
//!   has gossiped that it applied the plan.
//!
//! So at any instant each node uses at most its planned share or φ, and a raised share is in
//! use only while every lowered one is: the shares in use sum to at most R, with clocks
//! within g of each other.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aigw_cluster::{ClusterNode, Command, KeyId, NodeId, Outcome, RatePlan};

use super::Quotas;

/// The clock guard g: the skew between nodes the plans tolerate.
pub(crate) const GUARD_MS: u64 = 250;
/// How long one plan lasts.
const INTERVAL_MS: u64 = 2000;
/// How far ahead of its start a plan is written.
const LEAD_MS: u64 = 1500;
/// How often the leader plans.
const TICK: Duration = Duration::from_millis(1000);
/// The gossip keys each node publishes its demand and its applied index under.
const DEMAND_KEY: &str = "rates-demand";
const APPLIED_KEY: &str = "rates-applied";
/// Keys whose demand a node gossips, at most (the busiest).
const MAX_GOSSIPED_KEYS: usize = 256;

/// Which of a key's two rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rate {
    Rpm,
    Tpm,
}

/// A node's share of one rate limit at `now_ms`, per minute: by the rules in the module doc,
/// `fallback` (φ) when no plan speaks for this moment.
pub(crate) fn share_at<'p>(
    plans: impl IntoIterator<Item = &'p RatePlan>,
    me: NodeId,
    rate: Rate,
    fallback: f64,
    now_ms: u64,
) -> f64 {
    let mut lowered: Option<f64> = None;
    let mut raised: Option<f64> = None;
    for plan in plans {
        let Some(mine) = plan
            .shares
            .iter()
            .find(|(node, _, _)| *node == me)
            .and_then(|(_, rpm, tpm)| match rate {
                Rate::Rpm => *rpm,
                Rate::Tpm => *tpm,
            })
        else {
            continue;
        };
        let mine = mine as f64;
        if mine < fallback {
            if now_ms + GUARD_MS >= plan.t0_ms && now_ms <= plan.t1_ms + GUARD_MS {
                lowered = Some(lowered.map_or(mine, |l: f64| l.min(mine)));
            }
        } else if plan.active && now_ms >= plan.t0_ms + GUARD_MS && now_ms + GUARD_MS <= plan.t1_ms
        {
            raised = Some(mine);
        }
    }
    lowered.or(raised).unwrap_or(fallback)
}

/// Each voter's share of a limit of `limit` per minute, by `demand` (per minute, per node), or
/// `None` when the even split φ is as good: every node's demand fits φ, or none leaves any of
/// its φ unused. Voters not in `reachable` keep φ;
/// every reachable one keeps at least a quarter of its even part of the rest, so new demand
/// there is served until the next plan. The shares sum to at most `limit`.
pub(crate) fn allocate(
    limit: u64,
    voters: &[NodeId],
    reachable: &BTreeSet<NodeId>,
    demand: &BTreeMap<NodeId, f64>,
) -> Option<Vec<(NodeId, u64)>> {
    if voters.len() < 2 {
        return None;
    }
    let phi = limit / voters.len() as u64;
    let live: Vec<NodeId> = voters
        .iter()
        .copied()
        .filter(|v| reachable.contains(v))
        .collect();
    let wanted = |node: &NodeId| demand.get(node).copied().unwrap_or(0.0);
    let even = |node: &NodeId| wanted(node) <= phi as f64;
    if live.is_empty() || live.iter().all(even) || !live.iter().any(even) {
        return None;
    }
    let pool = limit - phi * (voters.len() - live.len()) as u64;
    let floor = pool / (4 * live.len() as u64);
    let spare = pool - floor * live.len() as u64;
    let total: f64 = live.iter().map(wanted).sum();
    Some(
        voters
            .iter()
            .map(|node| {
                let share = if reachable.contains(node) {
                    floor + (spare as f64 * wanted(node) / total).floor() as u64
                } else {
                    phi
                };
                (*node, share)
            })
            .collect(),
    )
}

/// Per key: requests and tokens per minute a node was asked for (admitted or not).
type Demand = BTreeMap<String, (f64, f64)>;

/// Runs for the node's life: gossips this node's applied index (as it changes) and demand,
/// and while this node leads, plans the rate shares of the keys in demand.
pub(crate) async fn keep_rates(quotas: Arc<Quotas>) {
    tokio::spawn(publish_applied(quotas.cluster.clone()));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let demand = quotas.take_demand(TICK.as_secs_f64());
        publish(&quotas.cluster, &demand).await;
        if quotas.cluster.state().load().voters < 2 || !is_leader(&quotas.cluster).await {
            continue;
        }
        if let Err(error) = plan_once(&quotas, demand).await {
            tracing::debug!(%error, "no rate plan this round");
        }
    }
}

async fn is_leader(cluster: &ClusterNode) -> bool {
    cluster.status().await.state == "leader"
}

async fn publish(cluster: &ClusterNode, demand: &BTreeMap<KeyId, (f64, f64)>) {
    let mut busiest: Vec<(&KeyId, &(f64, f64))> = demand.iter().collect();
    busiest.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    let demand: Demand = busiest
        .into_iter()
        .take(MAX_GOSSIPED_KEYS)
        .map(|(key, rates)| (key.to_string(), *rates))
        .collect();
    if let Ok(value) = serde_json::to_string(&demand) {
        cluster.gossip_set(DEMAND_KEY, &value).await;
    }
}

/// Gossips this node's applied index whenever it changes (at most every 50 ms): the leader
/// waits for it before activating a plan.
async fn publish_applied(cluster: ClusterNode) {
    let mut changes = cluster.state().subscribe();
    loop {
        let applied = cluster.state().load().version;
        cluster.gossip_set(APPLIED_KEY, &applied.to_string()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// What the live peers gossip under `key`, by node (this node is not among them).
async fn peers<T: serde::de::DeserializeOwned>(
    cluster: &ClusterNode,
    key: &str,
) -> BTreeMap<NodeId, T> {
    cluster
        .gossip_values(key)
        .await
        .into_iter()
        // The key comes back without the prefix asked for: empty for exactly `key`.
        .filter(|(node, rest, _)| *node != cluster.id() && rest.is_empty())
        .filter_map(|(node, _, value)| Some((node, serde_json::from_str(&value).ok()?)))
        .collect()
}

async fn plan_once(quotas: &Quotas, own: BTreeMap<KeyId, (f64, f64)>) -> Result<(), String> {
    let cluster = &quotas.cluster;
    let me = cluster.id();
    let snapshot = cluster.state().load();
    let peers: BTreeMap<NodeId, Demand> = peers(cluster, DEMAND_KEY).await;
    let mut reachable: BTreeSet<NodeId> = peers.keys().copied().collect();
    reachable.insert(me);
    // Demand per key, per node.
    let mut demand: BTreeMap<KeyId, BTreeMap<NodeId, (f64, f64)>> = BTreeMap::new();
    for (key, rates) in own {
        demand.entry(key).or_default().insert(me, rates);
    }
    for (node, gossiped) in &peers {
        for (key, rates) in gossiped {
            if let Some(key) = KeyId::parse(key) {
                demand.entry(key).or_default().insert(*node, *rates);
            }
        }
    }
    let now = now_ms();
    let voters = &snapshot.voter_ids;
    let mut plans = Vec::new();
    for (key, by_node) in demand {
        let Some(record) = snapshot.keys.get(&key) else {
            continue;
        };
        let (rpm, tpm) = (record.limits.rpm, record.limits.tpm);
        let of = |pick: fn(&(f64, f64)) -> f64| -> BTreeMap<NodeId, f64> {
            by_node.iter().map(|(n, r)| (*n, pick(r))).collect()
        };
        let rpm_shares = rpm.and_then(|limit| allocate(limit, voters, &reachable, &of(|r| r.0)));
        let tpm_shares = tpm.and_then(|limit| allocate(limit, voters, &reachable, &of(|r| r.1)));
        if rpm_shares.is_none() && tpm_shares.is_none() {
            continue;
        }
        let last_end = snapshot
            .rate_plans
            .get(&key)
            .and_then(|kept| kept.last())
            .map_or(0, |plan| plan.t1_ms);
        let t0_ms = last_end.max(now + LEAD_MS);
        if t0_ms > now + LEAD_MS + INTERVAL_MS {
            continue; // planned far enough ahead already
        }
        let share = |shares: &Option<Vec<(NodeId, u64)>>, limit: Option<u64>, node: NodeId| {
            let limit = limit?;
            Some(
                shares
                    .as_ref()
                    .and_then(|s| s.iter().find(|(n, _)| *n == node).map(|(_, v)| *v))
                    .unwrap_or(limit / voters.len() as u64),
            )
        };
        let shares: Vec<(NodeId, Option<u64>, Option<u64>)> = voters
            .iter()
            .map(|node| {
                (
                    *node,
                    share(&rpm_shares, rpm, *node),
                    share(&tpm_shares, tpm, *node),
                )
            })
            .collect();
        // The nodes this plan lowers below φ: they must have it before a raise is used.
        let n = voters.len() as u64;
        let below = |share: Option<u64>, limit: Option<u64>| matches!((share, limit), (Some(s), Some(l)) if s < l / n);
        let lowered: Vec<NodeId> = shares
            .iter()
            .filter(|(_, r, t)| below(*r, rpm) || below(*t, tpm))
            .map(|(node, _, _)| *node)
            .collect();
        plans.push((
            key,
            RatePlan {
                t0_ms,
                t1_ms: t0_ms + INTERVAL_MS,
                shares,
                active: false,
            },
            lowered,
        ));
    }
    if plans.is_empty() {
        return Ok(());
    }
    let written = plans
        .iter()
        .map(|(key, plan, _)| (key.clone(), plan.clone()))
        .collect();
    let index = match cluster.write(Command::PlanRates { plans: written }).await {
        Ok(Outcome::RatesPlanned { index }) => index,
        Ok(other) => return Err(format!("unexpected outcome {other:?}")),
        Err(error) => return Err(error.to_string()),
    };
    // Confirmations may take a while on a loaded cluster; a raise is still worth having for
    // the rest of its interval, so the wait goes on in the background until the plans end.
    let cluster = cluster.clone();
    tokio::spawn(async move {
        let mut pending = plans;
        while !pending.is_empty() {
            let applied = applied_by_node(&cluster, me).await;
            let (ready, waiting): (Vec<_>, Vec<_>) =
                pending.into_iter().partition(|(_, _, lowered)| {
                    lowered
                        .iter()
                        .all(|node| applied.get(node).is_some_and(|a| *a >= index))
                });
            if !ready.is_empty() {
                let plans = ready
                    .into_iter()
                    .map(|(key, plan, _)| (key, plan.t0_ms))
                    .collect();
                if let Err(error) = cluster.write(Command::ActivateRates { plans }).await {
                    tracing::debug!(%error, "could not activate rate plans");
                }
            }
            // A plan whose raise could no longer be used is dropped.
            let now = now_ms();
            pending = waiting
                .into_iter()
                .filter(|(_, plan, _)| now + GUARD_MS < plan.t1_ms)
                .collect();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    Ok(())
}

/// The applied index each node reports (this node's from its own state).
async fn applied_by_node(cluster: &ClusterNode, me: NodeId) -> BTreeMap<NodeId, u64> {
    let mut applied: BTreeMap<NodeId, u64> = peers(cluster, APPLIED_KEY).await;
    applied.insert(me, cluster.state().load().version);
    applied
}

/// This node's clock in ms since the epoch, which plans are read by.
pub(crate) use aigw_cluster::unix_now_ms as now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(t0: u64, shares: Vec<(NodeId, u64)>, active: bool) -> RatePlan {
        RatePlan {
            t0_ms: t0,
            t1_ms: t0 + INTERVAL_MS,
            shares: shares
                .into_iter()
                .map(|(n, s)| (n, Some(s), None))
                .collect(),
            active,
        }
    }

    #[test]
    fn a_lowered_share_applies_at_once_with_margins_a_raised_one_only_active_and_inside() {
        let phi = 200.0;
        let plans = [plan(10_000, vec![(1, 500), (2, 50), (3, 50)], false)];
        let at = |node, now| share_at(&plans, node, Rate::Rpm, phi, now);
        // Node 2 lowers from g before the start to g after the end.
        assert_eq!(at(2, 10_000 - GUARD_MS), 50.0);
        assert_eq!(at(2, 12_000 + GUARD_MS), 50.0);
        assert_eq!(at(2, 12_000 + GUARD_MS + 1), phi);
        // Node 1's raise waits for the activation.
        assert_eq!(at(1, 11_000), phi);
        let active = [plan(10_000, vec![(1, 500), (2, 50), (3, 50)], true)];
        let at = |node, now| share_at(&active, node, Rate::Rpm, phi, now);
        assert_eq!(at(1, 10_000 + GUARD_MS - 1), phi);
        assert_eq!(at(1, 11_000), 500.0);
        assert_eq!(at(1, 12_000 - GUARD_MS + 1), phi);
        // A node the plan does not name, or a rate it has no share of, keeps φ.
        assert_eq!(at(4, 11_000), phi);
        assert_eq!(share_at(&active, 1, Rate::Tpm, phi, 11_000), phi);
    }

    #[test]
    fn at_every_instant_the_shares_in_use_sum_to_at_most_the_limit() {
        // Consecutive plans moving the demand from node 1 to node 2, every node on its own
        // clock within g of the truth.
        let plans = [
            plan(10_000, vec![(1, 500), (2, 50), (3, 50)], true),
            plan(12_000, vec![(1, 50), (2, 500), (3, 50)], true),
            plan(14_000, vec![(1, 200), (2, 200), (3, 200)], true),
        ];
        for t in (9_000..17_000).step_by(10) {
            for skew in [-(GUARD_MS as i64), 0, GUARD_MS as i64] {
                let sum: f64 = (1..=3)
                    .map(|node| {
                        let local = (t as i64 + skew * (node as i64 - 2)) as u64;
                        share_at(&plans, node, Rate::Rpm, 200.0, local)
                    })
                    .sum();
                assert!(sum <= 600.0, "{sum} at {t} with skew {skew}");
            }
        }
    }

    #[test]
    fn shares_follow_demand_keep_phi_for_the_unreachable_and_sum_to_the_limit() {
        let voters = [1, 2, 3];
        let all: BTreeSet<NodeId> = voters.into_iter().collect();
        let demand: BTreeMap<NodeId, f64> = [(1, 900.0), (2, 10.0), (3, 0.0)].into();
        // Every node's demand fits its even share, or every node wants more: no plan.
        let calm: BTreeMap<NodeId, f64> = [(1, 150.0), (2, 150.0)].into();
        assert_eq!(allocate(600, &voters, &all, &calm), None);
        let busy: BTreeMap<NodeId, f64> = [(1, 900.0), (2, 300.0), (3, 250.0)].into();
        assert_eq!(allocate(600, &voters, &all, &busy), None);
        let shares = allocate(600, &voters, &all, &demand).unwrap();
        let sum: u64 = shares.iter().map(|(_, s)| s).sum();
        assert!(sum <= 600, "{shares:?}");
        assert!(shares[0].1 > 400, "the hot node gets most: {shares:?}");
        assert!(
            shares[2].1 >= 600 / 12,
            "an idle node keeps a floor: {shares:?}"
        );
        // Node 3 cannot be heard: it keeps φ, the rest is split.
        let two: BTreeSet<NodeId> = [1, 2].into();
        let shares = allocate(600, &voters, &two, &demand).unwrap();
        assert_eq!(shares[2], (3, 200));
        assert!(
            shares.iter().map(|(_, s)| s).sum::<u64>() <= 600,
            "{shares:?}"
        );
        // One voter: nothing to split.
        assert_eq!(allocate(600, &[1], &all, &demand), None);
    }
}
