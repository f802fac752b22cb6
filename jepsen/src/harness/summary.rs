//! The run's verdict: counts, the checkers' reports, availability by partition side,
//! latencies, isolation times, and the invariants that decide the exit code. Written as
//! `summary.json` and as readable `summary.txt`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::checker::keys::KeysReport;
use super::checker::quota::QuotaReport;
use super::context::{NemesisEvent, UpstreamDeath};
use super::history::{Op, OpKind, Outcome, Side};
use super::schedule::ScheduledFault;

#[derive(Debug, Clone, Serialize, Default)]
pub struct Counts {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

impl Counts {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Fail => self.fail += 1,
            Outcome::Info => self.info += 1,
        }
    }
    fn total(&self) -> u64 {
        self.ok + self.fail + self.info
    }
    /// Share of operations that succeeded.
    fn availability(&self) -> Option<f64> {
        (self.total() > 0).then(|| self.ok as f64 / self.total() as f64)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    pub requests: u64,
    pub ok: u64,
    pub error_rate: f64,
    /// The error rate without `refused` (the node called was down: the client's cue to try
    /// another node, not a failover failure).
    pub error_rate_node_up: f64,
    /// `refused` / `timeout` / `broken` / `http-STATUS:CODE` -> count.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Successful requests that took more than one attempt (failed over).
    pub failed_over: u64,
    pub upstream_deaths: Vec<UpstreamDeath>,
    pub max_isolation_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Invariant {
    pub name: String,
    pub holds: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub nodes: usize,
    pub workloads: Vec<String>,
    pub nemeses: Vec<String>,
    pub time_limit_s: u64,
    pub replay: String,
    pub schedule: Vec<ScheduledFault>,
    pub operations: BTreeMap<String, Counts>,
    pub keys: Option<KeysReport>,
    pub failover: Option<FailoverReport>,
    pub quota: Option<QuotaReport>,
    /// When the load (and the schedule's clock) started on the history's clock: after the
    /// quota workload's fault-free phase, else at once.
    pub load_start_ms: u64,
    /// "admin" / "chat" / "quota" -> "majority" / "minority" / "none" -> ok share of what was invoked
    /// on a node of that side while a partition was on.
    pub availability: BTreeMap<String, BTreeMap<String, (Counts, Option<f64>)>>,
    pub latency_ok: BTreeMap<String, Latency>,
    pub nemesis_events: usize,
    pub notes: Vec<String>,
    pub invariants: Vec<Invariant>,
    pub passed: bool,
}

fn kind_name(f: OpKind) -> &'static str {
    match f {
        OpKind::Create => "create",
        OpKind::Write => "write",
        OpKind::Read => "read",
        OpKind::Delete => "delete",
        OpKind::Chat => "chat",
        OpKind::Spend => "spend",
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::None => "no-partition",
        Side::Majority => "majority",
        Side::Minority => "minority",
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

pub struct Inputs<'a> {
    pub ops: &'a [Op],
    pub final_process: u32,
    pub keys: Option<KeysReport>,
    pub quota: Option<QuotaReport>,
    pub failover_on: bool,
    pub deaths: Vec<UpstreamDeath>,
    pub events: &'a [NemesisEvent],
    pub crashed: Vec<String>,
    pub recovery_error: Option<String>,
}

pub fn build(head: Summary, inputs: Inputs<'_>) -> Summary {
    let mut s = head;
    let ops: Vec<&Op> = inputs
        .ops
        .iter()
        .filter(|o| o.process != inputs.final_process)
        .collect();
    for op in &ops {
        s.operations
            .entry(kind_name(op.f).into())
            .or_default()
            .add(op.outcome);
        let group = match op.f {
            OpKind::Chat => "chat",
            OpKind::Spend => "quota",
            _ => "admin",
        };
        s.availability
            .entry(group.into())
            .or_default()
            .entry(side_name(op.side).into())
            .or_default()
            .0
            .add(op.outcome);
    }
    for sides in s.availability.values_mut() {
        for (counts, share) in sides.values_mut() {
            *share = counts.availability();
        }
    }
    let mut latencies: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        latencies
            .entry(kind_name(op.f))
            .or_default()
            .push(op.latency_us());
    }
    for (f, mut v) in latencies {
        v.sort_unstable();
        s.latency_ok.insert(
            f.into(),
            Latency {
                count: v.len(),
                p50_ms: percentile(&v, 0.5),
                p99_ms: percentile(&v, 0.99),
                max_ms: percentile(&v, 1.0),
            },
        );
    }
    if inputs.failover_on {
        let chats: Vec<&&Op> = ops.iter().filter(|o| o.f == OpKind::Chat).collect();
        let ok = chats.iter().filter(|o| o.outcome == Outcome::Ok).count() as u64;
        let mut errors_by_kind = BTreeMap::new();
        for op in chats.iter().filter(|o| o.outcome != Outcome::Ok) {
            *errors_by_kind
                .entry(op.error.clone().unwrap_or_default())
                .or_insert(0) += 1;
        }
        let max_isolation_ms = inputs
            .deaths
            .iter()
            .flat_map(|d| d.isolated_after_ms.iter().flatten().copied())
            .max();
        s.failover = Some(FailoverReport {
            requests: chats.len() as u64,
            ok,
            error_rate: if chats.is_empty() {
                0.0
            } else {
                1.0 - ok as f64 / chats.len() as f64
            },
            errors_by_kind,
            error_rate_node_up: {
                let up: Vec<_> = chats
                    .iter()
                    .filter(|o| o.error.as_deref() != Some("refused"))
                    .collect();
                let up_ok = up.iter().filter(|o| o.outcome == Outcome::Ok).count();
                if up.is_empty() {
                    0.0
                } else {
                    1.0 - up_ok as f64 / up.len() as f64
                }
            },
            failed_over: chats
                .iter()
                .filter(|o| o.outcome == Outcome::Ok && o.attempts.unwrap_or(1) > 1)
                .count() as u64,
            upstream_deaths: inputs.deaths,
            max_isolation_ms,
        });
    }
    s.nemesis_events = inputs.events.len();
    let nemesis_errors: Vec<String> = inputs
        .events
        .iter()
        .filter(|e| e.event == "error")
        .map(|e| e.detail.to_string())
        .collect();
    let mut inv = |name: &str, holds: bool, detail: String| {
        s.invariants.push(Invariant {
            name: name.into(),
            holds,
            detail,
        })
    };
    if let Some(k) = &inputs.keys {
        inv(
            "keys: acknowledged writes lost = 0",
            k.acknowledged_writes_lost == 0,
            format!("{} lost", k.acknowledged_writes_lost),
        );
        inv(
            "keys: every key's history is linearizable",
            k.linearizable,
            format!(
                "{} keys checked, not linearizable: {:?}, search ran out: {:?}",
                k.keys_checked, k.non_linearizable_keys, k.unknown_keys
            ),
        );
        inv(
            "keys: no refused create exists",
            k.refused_creates_applied.is_empty(),
            format!("{:?}", k.refused_creates_applied),
        );
    }
    if let Some(q) = &inputs.quota {
        let violations = |pred: &dyn Fn(&str) -> bool| -> String {
            let v: Vec<&String> = q.violations.iter().filter(|v| pred(v)).collect();
            format!("{v:?}")
        };
        inv(
            "quota: admitted ≤ budget for every calls / tokens / output tokens budget",
            q.budgets_hold,
            violations(&|v| v.contains(" > limit ")),
        );
        inv(
            "quota: the key spent without faults admitted exactly its calls budget",
            q.exact_holds,
            violations(&|v| v.contains("not exactly")),
        );
        inv(
            "quota: admitted per 60 s window ≤ R·(1 + β) (+ in-flight refunds for TPM)",
            q.rates_hold,
            violations(&|v| v.contains(" > bound ")),
        );
        inv(
            "quota: ledger used + leased + remaining = limit, used + leased ≥ admitted",
            q.ledger_consistent,
            violations(&|v| v.contains(" ledger ")),
        );
    }
    inv(
        "cluster: no node exited by itself",
        inputs.crashed.is_empty(),
        format!("{:?}", inputs.crashed),
    );
    inv(
        "cluster: recovers after the heal (a leader, every node answering)",
        inputs.recovery_error.is_none(),
        inputs.recovery_error.unwrap_or_default(),
    );
    inv(
        "harness: every scheduled fault was applied and undone",
        nemesis_errors.is_empty(),
        format!("{nemesis_errors:?}"),
    );
    s.keys = inputs.keys;
    s.quota = inputs.quota;
    s.passed = s.invariants.iter().all(|i| i.holds);
    s
}

pub fn render_text(s: &Summary) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "aigw-jepsen: {}",
        if s.passed { "PASSED" } else { "FAILED" }
    );
    let _ = writeln!(t, "replay: {}", s.replay);
    let _ = writeln!(
        t,
        "nodes {}, workloads {}, nemeses {}, {} s, {} scheduled faults, {} nemesis events",
        s.nodes,
        s.workloads.join(","),
        s.nemeses.join(","),
        s.time_limit_s,
        s.schedule.len(),
        s.nemesis_events
    );
    let _ = writeln!(t, "\noperations (ok / fail / info):");
    for (f, c) in &s.operations {
        let _ = writeln!(t, "  {f:<7} {:>7} / {:>5} / {:>5}", c.ok, c.fail, c.info);
    }
    if let Some(k) = &s.keys {
        let _ = writeln!(t, "\nkeys:");
        let _ = writeln!(t, "  keys checked            {}", k.keys_checked);
        let _ = writeln!(t, "  operations checked      {}", k.operations);
        let _ = writeln!(
            t,
            "  linearizable            {}",
            if k.linearizable { "yes" } else { "NO" }
        );
        let _ = writeln!(
            t,
            "  acknowledged writes lost {}",
            k.acknowledged_writes_lost
        );
        for lost in &k.lost_writes {
            let _ = writeln!(t, "    {lost:?}");
        }
        if let Some(c) = &k.counterexample {
            let _ = writeln!(
                t,
                "  shortest counterexample (key {}, blocked {:?}):",
                c.key, c.blocked
            );
            for op in &c.ops {
                let _ = writeln!(t, "    {}", serde_json::to_string(op).unwrap_or_default());
            }
        }
    }
    if let Some(f) = &s.failover {
        let _ = writeln!(t, "\nfailover:");
        let _ = writeln!(
            t,
            "  chat requests {}, ok {}, error rate {:.4} ({:.4} without refusals by a down node), failed over (ok after >1 attempt) {}",
            f.requests, f.ok, f.error_rate, f.error_rate_node_up, f.failed_over
        );
        for (kind, n) in &f.errors_by_kind {
            let _ = writeln!(t, "    {kind:<40} {n}");
        }
        for d in &f.upstream_deaths {
            let _ = writeln!(
                t,
                "  {} killed at {} ms, back at {:?} ms, isolated after (ms, per node) {:?}",
                d.upstream, d.killed_at_ms, d.restarted_at_ms, d.isolated_after_ms
            );
        }
    }
    if let Some(q) = &s.quota {
        render_quota(&mut t, q);
    }
    let _ = writeln!(
        t,
        "\navailability (ok share, by the side of the node called):"
    );
    for (group, sides) in &s.availability {
        for (side, (c, share)) in sides {
            let _ = writeln!(
                t,
                "  {group:<5} {side:<12} {:>8.4}  ({} of {})",
                share.unwrap_or(0.0),
                c.ok,
                c.total()
            );
        }
    }
    let _ = writeln!(t, "\nlatency of ok operations (ms): p50 / p99 / max");
    for (f, l) in &s.latency_ok {
        let _ = writeln!(
            t,
            "  {f:<7} {:>8.1} / {:>8.1} / {:>8.1}  (n={})",
            l.p50_ms, l.p99_ms, l.max_ms, l.count
        );
    }
    for note in &s.notes {
        let _ = writeln!(t, "note: {note}");
    }
    let _ = writeln!(t, "\ninvariants:");
    for i in &s.invariants {
        let _ = writeln!(
            t,
            "  [{}] {} {}",
            if i.holds { "ok" } else { "FAIL" },
            i.name,
            if i.holds {
                String::new()
            } else {
                format!("— {}", i.detail)
            }
        );
    }
    t
}

fn render_quota(t: &mut String, q: &QuotaReport) {
    let _ = writeln!(
        t,
        "\nquota (admitted = at least max(2xx seen by clients, requests that reached mock-q); \
         mock counts {}):",
        if q.mock_counts_read {
            "read"
        } else {
            "NOT read"
        }
    );
    let _ = writeln!(
        t,
        "  {:<24} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "key", "reqs", "2xx", "429b", "429r", "fail", "ambig"
    );
    for k in &q.keys {
        let r = &k.requests;
        let _ = writeln!(
            t,
            "  {:<24} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
            k.name, r.total, r.admitted, r.refused_budget, r.refused_rate, r.failed, r.ambiguous
        );
        for b in &k.budgets {
            let ledger = b
                .ledger
                .map(|l| {
                    format!(
                        "; ledger used {} leased {} remaining {}",
                        l.used, l.leased_to_nodes, l.remaining
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(
                t,
                "    {:<14} admitted {:>6} of {:>6} (clients {}, mock {}), not admitted ≤ {}{ledger}{}",
                b.dimension,
                b.admitted_at_least,
                b.limit,
                b.admitted_seen_by_clients,
                b.admitted_seen_by_mock
                    .map_or_else(|| "-".to_owned(), |m| m.to_string()),
                b.not_admitted_at_most,
                if b.holds { "" } else { "  OVER BUDGET" }
            );
        }
        if let Some(exact) = k.exact {
            let _ = writeln!(
                t,
                "    exactly the budget without faults: {}",
                if exact { "yes" } else { "NO" }
            );
        }
        for r in &k.rates {
            let _ = writeln!(
                t,
                "    {:<14} max in a 60 s window {:>6} (from {} ms) ≤ bound {:.1} (R {}): {}",
                r.dimension,
                r.max_window,
                r.max_window_start_us / 1000,
                r.bound,
                r.limit_per_minute,
                if r.holds { "yes" } else { "NO" }
            );
        }
    }
    let _ = writeln!(
        t,
        "  TPM in-flight refund allowance {} tokens",
        q.tpm_in_flight_allowance
    );
    let _ = writeln!(
        t,
        "  quota availability (2xx or 429: the limit answered), by side:"
    );
    for (side, a) in &q.availability {
        let _ = writeln!(
            t,
            "    {side:<12} {:>8.4}  ({} of {}, {} admitted)",
            a.share.unwrap_or(0.0),
            a.answered,
            a.requests,
            a.admitted
        );
    }
    for v in &q.violations {
        let _ = writeln!(t, "  VIOLATION: {v}");
    }
}
