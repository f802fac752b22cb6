//! What the keys workload claims, checked over its history:
//! - each key, as a register (absent, or present with `metadata.v`), is linearizable
//!   under create / write (PATCH) / read (linearizable GET) / delete;
//! - no acknowledged create or write is lost: the final read on every node shows its value,
//!   or the value of an operation that may have come after it;
//! - no create the cluster refused (a 4xx) exists at the end.
//!
//! A failing key's counterexample is shrunk to the shortest failing prefix of its history,
//! and then reads that are not needed for the failure are dropped.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::linearizable::{Entry, Model, Verdict, check};
use crate::harness::history::{Op, OpKind, Outcome};

/// The state of one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyRegister {
    Absent,
    Present(u64),
}

#[derive(Debug, Clone)]
pub enum KeyInput {
    Create(u64),
    Write(u64),
    Read,
    Delete,
}

#[derive(Debug, Clone)]
pub enum KeyOutput {
    /// Write and delete: whether the key existed (false: 404).
    Found(bool),
    /// Read: the value, `None` on a 404.
    Value(Option<u64>),
}

impl Model for KeyRegister {
    type Input = KeyInput;
    type Output = KeyOutput;

    fn step(&self, input: &KeyInput, output: Option<&KeyOutput>) -> Option<Self> {
        use KeyRegister::{Absent, Present};
        match (input, self, output) {
            (KeyInput::Create(v), Absent, _) => Some(Present(*v)),
            (KeyInput::Create(_), Present(_), _) => None,
            (KeyInput::Write(v), Present(_), None | Some(KeyOutput::Found(true))) => {
                Some(Present(*v))
            }
            (KeyInput::Write(_), Absent, None | Some(KeyOutput::Found(false))) => Some(Absent),
            (KeyInput::Delete, Present(_), None | Some(KeyOutput::Found(true))) => Some(Absent),
            (KeyInput::Delete, Absent, None | Some(KeyOutput::Found(false))) => Some(Absent),
            (KeyInput::Read, state, None) => Some(state.clone()),
            (KeyInput::Read, Present(x), Some(KeyOutput::Value(Some(v)))) if x == v => {
                Some(self.clone())
            }
            (KeyInput::Read, Absent, Some(KeyOutput::Value(None))) => Some(Absent),
            _ => None,
        }
    }
}

/// The verdict on the keys workload.
#[derive(Debug, Clone, Serialize, Default)]
pub struct KeysReport {
    pub keys_checked: usize,
    pub operations: usize,
    pub linearizable: bool,
    /// Keys whose search ran out of budget (not a pass).
    pub unknown_keys: Vec<String>,
    pub non_linearizable_keys: Vec<String>,
    /// The shortest counterexample among the failing keys, as history lines.
    pub counterexample: Option<Counterexample>,
    pub acknowledged_writes_lost: usize,
    pub lost_writes: Vec<LostWrite>,
    /// Creates answered with a 4xx (so, certainly not applied) whose key exists at the end.
    pub refused_creates_applied: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Counterexample {
    pub key: String,
    /// The operations, in invocation order (history indexes and lines).
    pub ops: Vec<Op>,
    /// History indexes of completed operations that no order could place next.
    pub blocked: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LostWrite {
    pub key: String,
    pub op_index: u64,
    pub value: u64,
    pub node: usize,
    /// What that node's final read showed (`None`: absent).
    pub final_value: Option<u64>,
}

/// Search budget per key: far above what the workload's short-lived keys need.
const MAX_STATES: usize = 2_000_000;

/// Checks the keys workload's history. `final_process` marks the final reads.
pub fn check_keys(
    ops: &[Op],
    final_process: u32,
    refused_names_present: Vec<String>,
) -> KeysReport {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        if let (Some(key), true) = (
            op.key.as_deref(),
            !matches!(op.f, OpKind::Chat | OpKind::Spend),
        ) {
            by_key.entry(key).or_default().push(op);
        }
    }
    let mut report = KeysReport {
        keys_checked: by_key.len(),
        operations: by_key.values().map(Vec::len).sum(),
        linearizable: true,
        refused_creates_applied: refused_names_present,
        ..Default::default()
    };
    for (key, key_ops) in &by_key {
        let entries = entries(key_ops);
        match check(&KeyRegister::Absent, &entries, MAX_STATES) {
            Verdict::Linearizable => {}
            Verdict::Unknown => report.unknown_keys.push((*key).to_owned()),
            Verdict::NotLinearizable { blocked, .. } => {
                report.non_linearizable_keys.push((*key).to_owned());
                let example = shrink(key, key_ops, blocked);
                let shorter = report
                    .counterexample
                    .as_ref()
                    .is_none_or(|c| example.ops.len() < c.ops.len());
                if shorter {
                    report.counterexample = Some(example);
                }
            }
        }
        report
            .lost_writes
            .extend(lost_writes(key, key_ops, final_process));
    }
    report.linearizable = report.non_linearizable_keys.is_empty() && report.unknown_keys.is_empty();
    report.acknowledged_writes_lost = report.lost_writes.len();
    report
}

/// The checker's entries for one key: failed operations and indeterminate reads dropped
/// (neither changed anything), and indeterminate writes whose value nobody read dropped too
/// (leaving such a write out never changes whether a linearization exists, since no
/// observation depends on it, and it keeps the search small).
fn entries(ops: &[&Op]) -> Vec<Entry<KeyInput, KeyOutput>> {
    let observed: HashSet<u64> = ops
        .iter()
        .filter(|o| o.f == OpKind::Read && o.outcome == Outcome::Ok)
        .filter_map(|o| o.value)
        .collect();
    ops.iter()
        .filter_map(|o| {
            let input = match o.f {
                OpKind::Create => KeyInput::Create(o.value?),
                OpKind::Write => KeyInput::Write(o.value?),
                OpKind::Read => KeyInput::Read,
                OpKind::Delete => KeyInput::Delete,
                OpKind::Chat | OpKind::Spend => return None,
            };
            let (ret, output) = match o.outcome {
                Outcome::Fail => return None,
                Outcome::Info => {
                    let unobserved_write =
                        o.f == OpKind::Write && o.value.is_some_and(|v| !observed.contains(&v));
                    if o.f == OpKind::Read || unobserved_write {
                        return None;
                    }
                    (None, None)
                }
                Outcome::Ok => {
                    let output = match o.f {
                        OpKind::Read => KeyOutput::Value(if o.found == Some(false) {
                            None
                        } else {
                            o.value
                        }),
                        _ => KeyOutput::Found(o.found.unwrap_or(true)),
                    };
                    (Some(o.complete_us), Some(output))
                }
            };
            Some(Entry {
                call: o.invoke_us,
                ret,
                input,
                output,
                id: o.index,
            })
        })
        .collect()
}

/// The shortest failing prefix (the first operations by invocation; those still running when
/// the last of them completed become indeterminate), then without the reads the failure does not need.
fn shrink(key: &str, ops: &[&Op], blocked: Vec<u64>) -> Counterexample {
    let fails = |subset: &[Op]| {
        let refs: Vec<&Op> = subset.iter().collect();
        matches!(
            check(&KeyRegister::Absent, &entries(&refs), MAX_STATES),
            Verdict::NotLinearizable { .. }
        )
    };
    let mut sorted: Vec<Op> = ops.iter().map(|o| (*o).clone()).collect();
    sorted.sort_by_key(|o| (o.invoke_us, o.index));
    let prefix = |len: usize| -> Vec<Op> {
        // Those still running when the prefix's last operation completed become indeterminate.
        let cut = sorted[len - 1].complete_us;
        sorted[..len]
            .iter()
            .map(|o| {
                let mut o = o.clone();
                if o.complete_us > cut && o.outcome == Outcome::Ok && len < sorted.len() {
                    o.outcome = Outcome::Info;
                }
                o
            })
            .collect()
    };
    // Failing is monotone in the prefix length: binary search the shortest failing one.
    let (mut lo, mut hi) = (1, sorted.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(&prefix(mid)) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let mut example = prefix(hi);
    // Drop reads one at a time, latest first but never the last op, while it still fails
    // (bounded by the prefix's length).
    let mut i = example.len().saturating_sub(1);
    while i > 0 {
        i -= 1;
        if example[i].f == OpKind::Read {
            let mut without = example.clone();
            without.remove(i);
            if fails(&without) {
                example = without;
            }
        }
    }
    let kept: HashSet<u64> = example.iter().map(|o| o.index).collect();
    Counterexample {
        key: key.to_owned(),
        blocked: blocked.into_iter().filter(|i| kept.contains(i)).collect(),
        ops: example,
    }
}

/// Acknowledged creates and writes whose value a node's final read does not show, when no
/// operation that could have come after them explains what it shows instead.
fn lost_writes(key: &str, ops: &[&Op], final_process: u32) -> Vec<LostWrite> {
    let finals: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|o| o.process == final_process && o.f == OpKind::Read && o.outcome == Outcome::Ok)
        .collect();
    let mutations: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|o| matches!(o.f, OpKind::Create | OpKind::Write | OpKind::Delete))
        .filter(|o| o.outcome != Outcome::Fail && o.found != Some(false))
        .collect();
    let mut lost = Vec::new();
    for w in mutations
        .iter()
        .filter(|o| o.outcome == Outcome::Ok && matches!(o.f, OpKind::Create | OpKind::Write))
    {
        let Some(value) = w.value else { continue };
        // What the key may hold at the end if `w` really happened: its value, or what any
        // mutation not completed before `w` was invoked left.
        let later = mutations
            .iter()
            .filter(|o| o.index != w.index)
            .filter(|o| o.outcome == Outcome::Info || o.complete_us > w.invoke_us);
        let mut allowed: HashSet<Option<u64>> = HashSet::from([Some(value)]);
        for o in later {
            allowed.insert(if o.f == OpKind::Delete { None } else { o.value });
        }
        for f in &finals {
            let shown = if f.found == Some(false) {
                None
            } else {
                f.value
            };
            if !allowed.contains(&shown) {
                lost.push(LostWrite {
                    key: key.to_owned(),
                    op_index: w.index,
                    value,
                    node: f.node,
                    final_value: shown,
                });
            }
        }
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::history::Side;

    const FINAL: u32 = u32::MAX;

    fn op(
        index: u64,
        process: u32,
        f: OpKind,
        value: Option<u64>,
        found: Option<bool>,
        t: (u64, u64),
        outcome: Outcome,
    ) -> Op {
        Op {
            index,
            process,
            node: 0,
            f,
            key: Some("key_a".into()),
            name: None,
            value,
            found,
            invoke_us: t.0,
            complete_us: t.1,
            outcome,
            side: Side::None,
            status: None,
            error: None,
            upstream: None,
            attempts: None,
            usage: None,
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let h = vec![
            op(0, 1, OpKind::Create, Some(1), None, (0, 10), Outcome::Ok),
            op(
                1,
                1,
                OpKind::Write,
                Some(2),
                Some(true),
                (11, 20),
                Outcome::Ok,
            ),
            op(
                2,
                2,
                OpKind::Read,
                Some(1),
                Some(true),
                (12, 15),
                Outcome::Ok,
            ),
            op(
                3,
                2,
                OpKind::Read,
                Some(2),
                Some(true),
                (21, 25),
                Outcome::Ok,
            ),
            op(
                4,
                1,
                OpKind::Delete,
                None,
                Some(true),
                (30, 40),
                Outcome::Ok,
            ),
            op(
                5,
                2,
                OpKind::Write,
                Some(3),
                Some(false),
                (41, 45),
                Outcome::Ok,
            ),
            op(
                6,
                FINAL,
                OpKind::Read,
                None,
                Some(false),
                (50, 51),
                Outcome::Ok,
            ),
        ];
        let r = check_keys(&h, FINAL, vec![]);
        assert!(r.linearizable, "{r:?}");
        assert_eq!(r.acknowledged_writes_lost, 0);
    }

    #[test]
    fn a_lost_acknowledged_write_is_counted_and_not_linearizable() {
        let h = vec![
            op(0, 1, OpKind::Create, Some(1), None, (0, 10), Outcome::Ok),
            op(
                1,
                1,
                OpKind::Write,
                Some(2),
                Some(true),
                (11, 20),
                Outcome::Ok,
            ),
            op(
                2,
                FINAL,
                OpKind::Read,
                Some(1),
                Some(true),
                (50, 51),
                Outcome::Ok,
            ),
        ];
        let r = check_keys(&h, FINAL, vec![]);
        assert!(!r.linearizable);
        assert_eq!(r.acknowledged_writes_lost, 1);
        assert_eq!(r.lost_writes[0].op_index, 1);
        let c = r.counterexample.unwrap();
        assert_eq!(c.ops.len(), 3);
        assert_eq!(c.blocked, vec![2]);
    }

    #[test]
    fn an_indeterminate_write_may_show_up_later() {
        let h = vec![
            op(0, 1, OpKind::Create, Some(1), None, (0, 10), Outcome::Ok),
            op(
                1,
                1,
                OpKind::Write,
                Some(2),
                None,
                (11, 2_000),
                Outcome::Info,
            ),
            op(
                2,
                2,
                OpKind::Read,
                Some(1),
                Some(true),
                (2_100, 2_200),
                Outcome::Ok,
            ),
            op(
                3,
                FINAL,
                OpKind::Read,
                Some(2),
                Some(true),
                (5_000, 5_001),
                Outcome::Ok,
            ),
        ];
        let r = check_keys(&h, FINAL, vec![]);
        assert!(r.linearizable, "{r:?}");
        assert_eq!(r.acknowledged_writes_lost, 0);
    }

    #[test]
    fn a_deleted_key_coming_back_is_caught_and_shrunk() {
        let h = vec![
            op(0, 1, OpKind::Create, Some(1), None, (0, 10), Outcome::Ok),
            op(
                1,
                2,
                OpKind::Read,
                Some(1),
                Some(true),
                (11, 12),
                Outcome::Ok,
            ),
            op(
                2,
                2,
                OpKind::Read,
                Some(1),
                Some(true),
                (13, 14),
                Outcome::Ok,
            ),
            op(
                3,
                1,
                OpKind::Delete,
                None,
                Some(true),
                (20, 30),
                Outcome::Ok,
            ),
            op(4, 2, OpKind::Read, None, Some(false), (31, 32), Outcome::Ok),
            op(
                5,
                2,
                OpKind::Read,
                Some(1),
                Some(true),
                (33, 34),
                Outcome::Ok,
            ),
            op(6, 2, OpKind::Read, None, Some(false), (35, 36), Outcome::Ok),
        ];
        let r = check_keys(&h, FINAL, vec![]);
        assert_eq!(r.non_linearizable_keys, vec!["key_a".to_owned()]);
        let c = r.counterexample.unwrap();
        let kept: Vec<u64> = c.ops.iter().map(|o| o.index).collect();
        // Create, delete, and the read that sees the key again: the other reads go.
        assert_eq!(kept, vec![0, 3, 5]);
    }

    #[test]
    fn a_refused_create_that_applied_fails_the_check() {
        let r = check_keys(&[], FINAL, vec!["jepsen-7-12".into()]);
        assert_eq!(r.refused_creates_applied.len(), 1);
    }
}
