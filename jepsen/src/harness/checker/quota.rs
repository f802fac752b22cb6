//! What the quota workload claims (docs/QUOTAS.md), checked on its history, on what the quota
//! mock saw per key, and on the cluster's own ledger:
//!
//! - **Budgets** (calls, tokens, output tokens): admitted ≤ limit, where admitted is at least
//!   the larger of what the clients saw admitted (2xx, with the `usage` of each response) and
//!   what reached the mock for that key (`by_user`: every forwarded admission, whether or not
//!   its response reached the client). Both are lower bounds of the truth, so an excess is a
//!   real over-admission, never a measurement artefact.
//! - **Exact**: the key spent without faults ends with exactly its limit admitted.
//! - **Rates** (RPM, TPM, limit R per minute): for every 60 s window W, the requests the
//!   clients saw admitted whose whole invoke→complete interval lies in W (so they were
//!   certainly admitted in W) number at most R·(1 + β), β = 1/6; their tokens (`usage`) at most
//!   R·(1 + β) + the in-flight refund allowance (the reservations of the requests that may be
//!   in flight when W opens, whose refunds W's admissions can reuse; 0 for RPM). Windows are
//!   slid over every start: the largest window count is attained at some admitted request's
//!   invocation, so those starts cover every window.
//! - **Ledger**: for every budget, used + leased + remaining = limit, and used + leased ≥ the
//!   admitted lower bound (a close never reports less than the truth).
//!
//! Reported, not judged: stranding (limit − admitted), the ambiguous requests, and quota
//! availability (a definite answer, admitted or refused by a limit) by partition side.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::harness::history::{Op, OpKind, Outcome, Side};
use crate::mock::UserStats;

/// β: a node's bucket holds a sixth of its share (a 10 s burst).
pub const BETA: f64 = 1.0 / 6.0;
/// The rate window.
pub const WINDOW_US: u64 = 60_000_000;

/// What a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Spent to the end before any fault: admitted must equal the calls limit.
    Exact,
    /// Call and token budgets, spent under faults.
    Budget,
    /// An RPM or TPM limit, spent under faults.
    Rate,
}

/// A key of the workload, with the limits the checker holds it to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySpec {
    pub name: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
}

/// One budget as `GET /admin/v1/keys/{id}` shows it after the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerView {
    pub limit: u64,
    pub used: u64,
    pub leased_to_nodes: u64,
    pub remaining: u64,
}

pub struct QuotaInputs<'a> {
    pub ops: &'a [Op],
    pub keys: &'a [KeySpec],
    /// The quota mock's `by_user` counts; `None` when it could not be read.
    pub mock: Option<&'a BTreeMap<String, UserStats>>,
    /// Key name -> dimension (`calls`, `tokens`, ...) -> the ledger; absent when not read.
    pub ledger: &'a BTreeMap<String, BTreeMap<String, LedgerView>>,
    /// The largest token reservation of one request times the requests that can be in flight
    /// at once on a key (the clients): the TPM check's in-flight refund allowance.
    pub tpm_in_flight_allowance: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Requests {
    pub total: u64,
    /// 2xx: admitted.
    pub admitted: u64,
    /// 429 `insufficient_quota`.
    pub refused_budget: u64,
    /// 429 `rate_limit_exceeded`.
    pub refused_rate: u64,
    /// Another definite non-admission (503 `quota_unavailable`, another 4xx, connection refused).
    pub failed: u64,
    /// A timeout, a broken connection, another 5xx: it may have been admitted.
    pub ambiguous: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BudgetCheck {
    pub dimension: String,
    pub limit: u64,
    /// Σ over the 2xx the clients saw.
    pub admitted_seen_by_clients: u64,
    /// Σ over what reached the quota mock for this key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admitted_seen_by_mock: Option<u64>,
    /// The larger of the two: certainly admitted.
    pub admitted_at_least: u64,
    /// limit − admitted_at_least: what was not spent (stranded, or never asked for).
    pub not_admitted_at_most: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerView>,
    pub holds: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RateCheck {
    /// `rpm` or `tpm`.
    pub dimension: String,
    pub limit_per_minute: u64,
    /// R·(1 + β) (+ the in-flight allowance for TPM).
    pub bound: f64,
    /// The largest admitted count (RPM) or token sum (TPM) in one 60 s window.
    pub max_window: u64,
    /// Where that window starts (µs on the history clock).
    pub max_window_start_us: u64,
    pub windows_checked: usize,
    pub holds: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    pub name: String,
    pub role: Role,
    pub requests: Requests,
    pub budgets: Vec<BudgetCheck>,
    pub rates: Vec<RateCheck>,
    /// Exact keys: whether exactly the calls limit was admitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<bool>,
    /// Ledger: used + leased + remaining = limit and used + leased ≥ admitted, per dimension.
    pub ledger_consistent: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SideAvailability {
    pub requests: u64,
    /// Admitted or refused by a limit: the quota gave an answer.
    pub answered: u64,
    pub admitted: u64,
    pub share: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QuotaReport {
    pub keys: Vec<KeyReport>,
    pub budgets_hold: bool,
    pub rates_hold: bool,
    pub exact_holds: bool,
    pub ledger_consistent: bool,
    /// Whether the mock's counts were read (else budgets rest on the clients' view only).
    pub mock_counts_read: bool,
    /// `no-partition` / `majority` / `minority` -> quota answers (spends under faults).
    pub availability: BTreeMap<String, SideAvailability>,
    pub tpm_in_flight_allowance: u64,
    /// One line per broken claim.
    pub violations: Vec<String>,
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::None => "no-partition",
        Side::Majority => "majority",
        Side::Minority => "minority",
    }
}

fn classify(op: &Op, r: &mut Requests) {
    r.total += 1;
    match op.outcome {
        Outcome::Ok => r.admitted += 1,
        Outcome::Info => r.ambiguous += 1,
        Outcome::Fail => match op.error.as_deref() {
            Some(e) if e.starts_with("http-429:insufficient_quota") => r.refused_budget += 1,
            Some(e) if e.starts_with("http-429:") => r.refused_rate += 1,
            _ => r.failed += 1,
        },
    }
}

/// The largest weight of ops whose `[invoke, complete]` lies inside one window of `window_us`,
/// and where that window starts; with the number of window starts tried.
pub fn max_window(ops: &[(u64, u64, u64)], window_us: u64) -> (u64, u64, usize) {
    // (invoke, complete, weight). For each start s = invoke_i (descending), the ops with
    // invoke ≥ s are inserted into a Fenwick tree over the ranks of their complete times;
    // the window's weight is the prefix up to s + window.
    let mut by_invoke: Vec<&(u64, u64, u64)> = ops.iter().collect();
    by_invoke.sort_by_key(|o| (o.0, o.1));
    let mut completes: Vec<u64> = ops.iter().map(|o| o.1).collect();
    completes.sort_unstable();
    completes.dedup();
    let mut tree = vec![0u64; completes.len() + 1];
    let (mut best, mut best_start) = (0u64, 0u64);
    for op in by_invoke.iter().rev() {
        let rank = completes.partition_point(|&c| c < op.1) + 1;
        let mut i = rank;
        while i < tree.len() {
            tree[i] += op.2;
            i += i & i.wrapping_neg();
        }
        let end = op.0.saturating_add(window_us);
        let mut i = completes.partition_point(|&c| c <= end);
        let mut sum = 0;
        while i > 0 {
            sum += tree[i];
            i -= i & i.wrapping_neg();
        }
        if sum > best || (sum == best && op.0 < best_start) {
            best = sum;
            best_start = op.0;
        }
    }
    (best, best_start, ops.len())
}

pub fn check_quota(inputs: QuotaInputs<'_>) -> QuotaReport {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    let mut availability: BTreeMap<String, SideAvailability> = BTreeMap::new();
    for op in inputs.ops.iter().filter(|o| o.f == OpKind::Spend) {
        if let Some(name) = op.name.as_deref() {
            by_key.entry(name).or_default().push(op);
        }
    }
    let mut violations = Vec::new();
    let mut keys = Vec::new();
    for spec in inputs.keys {
        let ops = by_key.get(spec.name.as_str()).cloned().unwrap_or_default();
        let mut requests = Requests::default();
        for op in &ops {
            classify(op, &mut requests);
            if spec.role != Role::Exact {
                let a = availability
                    .entry(side_name(op.side).to_owned())
                    .or_default();
                a.requests += 1;
                let refused = op.outcome == Outcome::Fail
                    && op
                        .error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("http-429:"));
                if op.outcome == Outcome::Ok || refused {
                    a.answered += 1;
                }
                if op.outcome == Outcome::Ok {
                    a.admitted += 1;
                }
            }
        }
        let admitted: Vec<&&Op> = ops.iter().filter(|o| o.outcome == Outcome::Ok).collect();
        let mock = inputs
            .mock
            .map(|m| m.get(&spec.name).copied().unwrap_or_default());
        let ledger = inputs.ledger.get(&spec.name);
        let mut budgets = Vec::new();
        let dims: [(&str, Option<u64>); 3] = [
            ("calls", spec.calls),
            ("tokens", spec.tokens),
            ("output_tokens", spec.output_tokens),
        ];
        for (dimension, limit) in dims {
            let Some(limit) = limit else { continue };
            let seen = |o: &&&Op| -> u64 {
                match dimension {
                    "calls" => 1,
                    "tokens" => o.usage.map_or(0, |u| u.total()),
                    _ => o.usage.map_or(0, |u| u.completion),
                }
            };
            let by_clients: u64 = admitted.iter().map(seen).sum();
            let by_mock = mock.map(|m| match dimension {
                "calls" => m.requests,
                "tokens" => m.prompt_tokens + m.completion_tokens,
                _ => m.completion_tokens,
            });
            let at_least = by_clients.max(by_mock.unwrap_or(0));
            let holds = at_least <= limit;
            if !holds {
                violations.push(format!(
                    "{}: {dimension} admitted at least {at_least} > limit {limit} (clients saw \
                     {by_clients}, the mock {by_mock:?})",
                    spec.name
                ));
            }
            budgets.push(BudgetCheck {
                dimension: dimension.to_owned(),
                limit,
                admitted_seen_by_clients: by_clients,
                admitted_seen_by_mock: by_mock,
                admitted_at_least: at_least,
                not_admitted_at_most: limit.saturating_sub(at_least),
                ledger: ledger.and_then(|l| l.get(dimension).copied()),
                holds,
            });
        }
        let mut ledger_consistent = true;
        for b in &budgets {
            if let Some(l) = b.ledger {
                let sums = l.used + l.leased_to_nodes + l.remaining == l.limit;
                let covers = l.used + l.leased_to_nodes >= b.admitted_at_least;
                if !(sums && covers && l.limit == b.limit) {
                    ledger_consistent = false;
                    violations.push(format!(
                        "{}: {} ledger {l:?} against limit {} and admitted at least {}",
                        spec.name, b.dimension, b.limit, b.admitted_at_least
                    ));
                }
            }
        }
        let exact = (spec.role == Role::Exact).then(|| {
            let calls = budgets.iter().find(|b| b.dimension == "calls");
            let holds = calls.is_some_and(|b| b.admitted_at_least == b.limit);
            if !holds {
                violations.push(format!(
                    "{}: without faults, admitted at least {:?} of {:?} calls, not exactly the \
                     limit ({} ambiguous)",
                    spec.name,
                    calls.map(|b| b.admitted_at_least),
                    spec.calls,
                    requests.ambiguous
                ));
            }
            holds
        });
        let mut rates = Vec::new();
        let rate_dims: [(&str, Option<u64>, u64); 2] = [
            ("rpm", spec.rpm, 0),
            ("tpm", spec.tpm, inputs.tpm_in_flight_allowance),
        ];
        for (dimension, limit, allowance) in rate_dims {
            let Some(limit) = limit else { continue };
            let weighted: Vec<(u64, u64, u64)> = admitted
                .iter()
                .map(|o| {
                    let w = if dimension == "rpm" {
                        1
                    } else {
                        o.usage.map_or(0, |u| u.total())
                    };
                    (o.invoke_us, o.complete_us, w)
                })
                .collect();
            let (max, start, windows) = max_window(&weighted, WINDOW_US);
            let bound = limit as f64 * (1.0 + BETA) + allowance as f64;
            // A hair of slack for the float sum of the nodes' bucket capacities.
            let holds = max as f64 <= bound + 1e-6;
            if !holds {
                violations.push(format!(
                    "{}: {dimension} {max} admitted in the 60 s window from {} ms > bound {bound:.1}",
                    spec.name,
                    start / 1000
                ));
            }
            rates.push(RateCheck {
                dimension: dimension.to_owned(),
                limit_per_minute: limit,
                bound,
                max_window: max,
                max_window_start_us: start,
                windows_checked: windows,
                holds,
            });
        }
        keys.push(KeyReport {
            name: spec.name.clone(),
            role: spec.role,
            requests,
            budgets,
            rates,
            exact,
            ledger_consistent,
        });
    }
    for a in availability.values_mut() {
        a.share = (a.requests > 0).then(|| a.answered as f64 / a.requests as f64);
    }
    QuotaReport {
        budgets_hold: keys.iter().all(|k| k.budgets.iter().all(|b| b.holds)),
        rates_hold: keys.iter().all(|k| k.rates.iter().all(|r| r.holds)),
        exact_holds: keys.iter().all(|k| k.exact != Some(false)),
        ledger_consistent: keys.iter().all(|k| k.ledger_consistent),
        mock_counts_read: inputs.mock.is_some(),
        availability,
        tpm_in_flight_allowance: inputs.tpm_in_flight_allowance,
        keys,
        violations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::history::Usage;

    fn spend(name: &str, t: (u64, u64), outcome: Outcome, error: Option<&str>) -> Op {
        Op {
            index: 0,
            process: 0,
            node: 0,
            f: OpKind::Spend,
            key: None,
            name: Some(name.into()),
            value: None,
            found: None,
            invoke_us: t.0,
            complete_us: t.1,
            outcome,
            side: Side::None,
            status: None,
            error: error.map(str::to_owned),
            upstream: None,
            attempts: None,
            usage: (outcome == Outcome::Ok).then_some(Usage {
                prompt: 1,
                completion: 4,
            }),
        }
    }

    fn budget_key(name: &str, calls: u64) -> KeySpec {
        KeySpec {
            name: name.into(),
            role: Role::Budget,
            calls: Some(calls),
            tokens: Some(calls * 5),
            output_tokens: Some(calls * 4),
            rpm: None,
            tpm: None,
        }
    }

    fn check(
        ops: &[Op],
        keys: &[KeySpec],
        mock: Option<&BTreeMap<String, UserStats>>,
    ) -> QuotaReport {
        check_quota(QuotaInputs {
            ops,
            keys,
            mock,
            ledger: &BTreeMap::new(),
            tpm_in_flight_allowance: 0,
        })
    }

    /// `n` admitted then `refused` refusals, 1 ms apart.
    fn spends(name: &str, n: u64, refused: u64) -> Vec<Op> {
        (0..n + refused)
            .map(|i| {
                let t = (i * 1000, i * 1000 + 500);
                if i < n {
                    spend(name, t, Outcome::Ok, None)
                } else {
                    spend(name, t, Outcome::Fail, Some("http-429:insufficient_quota"))
                }
            })
            .collect()
    }

    fn mock_of(name: &str, requests: u64) -> BTreeMap<String, UserStats> {
        BTreeMap::from([(
            name.to_owned(),
            UserStats {
                requests,
                prompt_tokens: requests,
                completion_tokens: 4 * requests,
            },
        )])
    }

    #[test]
    fn a_budget_spent_to_its_limit_holds_and_reports_no_stranding() {
        let ops = spends("k", 10, 5);
        let mock = mock_of("k", 10);
        let r = check(&ops, &[budget_key("k", 10)], Some(&mock));
        assert!(
            r.budgets_hold && r.violations.is_empty(),
            "{:?}",
            r.violations
        );
        let calls = &r.keys[0].budgets[0];
        assert_eq!(
            (calls.admitted_at_least, calls.not_admitted_at_most),
            (10, 0)
        );
        assert_eq!(r.keys[0].requests.refused_budget, 5);
        assert_eq!(r.keys[0].budgets[1].admitted_at_least, 50);
    }

    #[test]
    fn one_call_over_the_budget_is_caught_from_the_clients_view() {
        let ops = spends("k", 11, 0);
        let r = check(&ops, &[budget_key("k", 10)], None);
        assert!(!r.budgets_hold);
        // calls, tokens and output tokens are all one call over.
        assert_eq!(r.violations.len(), 3, "{:?}", r.violations);
    }

    #[test]
    fn admissions_the_clients_never_saw_are_caught_from_the_mocks_count() {
        // 9 acknowledged, 3 lost in flight (timeouts), but the mock got 12.
        let mut ops = spends("k", 9, 0);
        ops.extend(
            (0..3).map(|i| spend("k", (20_000 + i, 30_000), Outcome::Info, Some("timeout"))),
        );
        let r = check(&ops, &[budget_key("k", 10)], Some(&mock_of("k", 12)));
        assert!(!r.budgets_hold);
        assert_eq!(r.keys[0].budgets[0].admitted_at_least, 12);
        assert_eq!(r.keys[0].requests.ambiguous, 3);
        // The same history with the mock at 10: within the limit.
        let r = check(&ops, &[budget_key("k", 10)], Some(&mock_of("k", 10)));
        assert!(r.budgets_hold, "{:?}", r.violations);
    }

    #[test]
    fn the_exact_key_must_end_at_its_limit() {
        let spec = KeySpec {
            role: Role::Exact,
            ..budget_key("x", 10)
        };
        let r = check(
            &spends("x", 10, 3),
            std::slice::from_ref(&spec),
            Some(&mock_of("x", 10)),
        );
        assert!(r.exact_holds, "{:?}", r.violations);
        let r = check(
            &spends("x", 9, 3),
            std::slice::from_ref(&spec),
            Some(&mock_of("x", 9)),
        );
        assert!(!r.exact_holds && r.budgets_hold);
    }

    fn rate_key(rpm: u64) -> KeySpec {
        KeySpec {
            name: "r".into(),
            role: Role::Rate,
            calls: None,
            tokens: None,
            output_tokens: None,
            rpm: Some(rpm),
            tpm: Some(rpm * 5),
        }
    }

    /// `per_s` admitted requests a second for `secs` seconds, each taking 1 ms.
    fn steady(per_s: u64, secs: u64, from_us: u64) -> Vec<Op> {
        (0..per_s * secs)
            .map(|i| {
                let t = from_us + i * 1_000_000 / per_s;
                spend("r", (t, t + 1000), Outcome::Ok, None)
            })
            .collect()
    }

    #[test]
    fn a_rate_at_the_limit_plus_the_burst_holds() {
        // 360 rpm: bound 420 per window. 6/s for 120 s plus a burst of 60 at the start.
        let mut ops = steady(6, 120, 0);
        ops.extend((0..60).map(|i| spend("r", (i, i + 1), Outcome::Ok, None)));
        let r = check(&ops, &[rate_key(360)], None);
        assert!(r.rates_hold, "{:?}", r.violations);
        assert_eq!(r.keys[0].rates[0].max_window, 420);
        assert_eq!(r.keys[0].rates[1].max_window, 2100);
        assert!((r.keys[0].rates[1].bound - 2100.0).abs() < 1e-6);
    }

    #[test]
    fn a_rate_over_the_bound_in_one_sliding_window_is_caught() {
        // 6/s for 120 s, and 61 more packed 30 s in: no fixed minute-aligned reading needed.
        let mut ops = steady(6, 120, 0);
        ops.extend(
            (0..61).map(|i| spend("r", (30_000_000 + i, 30_000_100 + i), Outcome::Ok, None)),
        );
        let r = check(&ops, &[rate_key(360)], None);
        assert!(!r.rates_hold);
        let rpm = &r.keys[0].rates[0];
        assert_eq!(rpm.max_window, 421);
        // Refused and ambiguous requests do not count, nor ones straddling the window's edge.
        let mut ops = steady(6, 120, 0);
        ops.extend((0..61).map(|i| spend("r", (30_000_000 + i, 40_000_000), Outcome::Info, None)));
        ops.extend((0..61).map(|i| {
            spend(
                "r",
                (30_000_000 + i, 30_000_100),
                Outcome::Fail,
                Some("http-429:rate_limit_exceeded"),
            )
        }));
        let r = check(&ops, &[rate_key(360)], None);
        assert!(r.rates_hold, "{:?}", r.violations);
        assert_eq!(r.keys[0].requests.refused_rate, 61);
    }

    #[test]
    fn the_sliding_window_counts_only_what_lies_wholly_inside() {
        let ops = [(0, 10, 1), (5, 50, 1), (60, 65, 1), (61, 200, 1)];
        assert_eq!(max_window(&ops, 60), (2, 0, 4));
        assert_eq!(max_window(&ops, 10), (1, 0, 4));
        assert_eq!(max_window(&ops, 200), (4, 0, 4));
        assert_eq!(max_window(&[], 60), (0, 0, 0));
    }

    #[test]
    fn a_ledger_that_counts_less_than_was_admitted_is_caught() {
        let ops = spends("k", 10, 0);
        let good = LedgerView {
            limit: 10,
            used: 8,
            leased_to_nodes: 2,
            remaining: 0,
        };
        let short = LedgerView {
            used: 7,
            remaining: 1,
            ..good
        };
        for (view, ok) in [(good, true), (short, false)] {
            let ledger =
                BTreeMap::from([("k".to_owned(), BTreeMap::from([("calls".to_owned(), view)]))]);
            let r = check_quota(QuotaInputs {
                ops: &ops,
                keys: &[budget_key("k", 10)],
                mock: None,
                ledger: &ledger,
                tpm_in_flight_allowance: 0,
            });
            assert_eq!(r.ledger_consistent, ok, "{:?}", r.violations);
        }
    }
}
