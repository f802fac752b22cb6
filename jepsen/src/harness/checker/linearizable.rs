//! A linearizability checker in the style of Wing & Gong, with Lowe's memoisation: a depth-
//! first search for an order of the operations that respects real time (an operation that
//! completed before another was invoked comes first) and that a sequential model accepts.
//! Configurations already explored (which operations are linearized, and the model's state)
//! are cached, so each is explored once.
//!
//! Indeterminate operations (`ret: None`, an "info" outcome: a timeout, a 503 whose change may
//! still be applied) may take effect at any point after their invocation, or never: the search
//! succeeds once every completed operation is linearized. Their output is unknown, so the model
//! accepts any.
//!
//! Histories are checked per register (per key), which keeps the search small; `max_states`
//! bounds it anyway, and running out is reported as such, never as a pass.

use std::collections::HashSet;
use std::hash::Hash;

/// The sequential specification.
pub trait Model: Clone + Eq + Hash {
    type Input;
    type Output;
    /// The state after `input` with result `output` (`None`: unknown), or `None` when the
    /// model could not have produced that result from this state.
    fn step(&self, input: &Self::Input, output: Option<&Self::Output>) -> Option<Self>;
}

/// One operation: invoked at `call`, completed at `ret` (`None`: indeterminate).
#[derive(Debug, Clone)]
pub struct Entry<I, O> {
    pub call: u64,
    pub ret: Option<u64>,
    pub input: I,
    pub output: Option<O>,
    /// The operation's index in the whole history, for reports.
    pub id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order works. `stuck_after` is the longest sequence of operation ids the search could
    /// linearize; `blocked` the completed operations that could not come next.
    NotLinearizable {
        stuck_after: Vec<u64>,
        blocked: Vec<u64>,
    },
    /// The search gave up after `max_states` configurations.
    Unknown,
}

/// Checks `entries` against `init`. Entries need not be sorted.
pub fn check<M: Model>(
    init: &M,
    entries: &[Entry<M::Input, M::Output>],
    max_states: usize,
) -> Verdict {
    let mut ops: Vec<&Entry<M::Input, M::Output>> = entries.iter().collect();
    ops.sort_by_key(|e| (e.call, e.ret.unwrap_or(u64::MAX)));
    let n = ops.len();
    let required = ops.iter().filter(|e| e.ret.is_some()).count();

    let mut done = Bits::new(n);
    let mut done_required = 0usize;
    let mut state = init.clone();
    // Each frame: the op linearized at this depth, the state before it, and where to resume
    // the scan of candidates when backtracking.
    let mut stack: Vec<(usize, M)> = Vec::new();
    let mut seen: HashSet<(Bits, M)> = HashSet::new();
    let mut best: Vec<usize> = Vec::new();
    let mut best_blocked: Vec<usize> = Vec::new();
    let mut blocked_depth: Option<usize> = None;
    let mut resume = 0usize;
    let mut explored = 0usize;

    loop {
        if done_required == required {
            return Verdict::Linearizable;
        }
        explored += 1;
        if explored > max_states {
            return Verdict::Unknown;
        }
        // Every pending op must be invoked before the earliest completion among the pending
        // completed ops, or that one would have to come first.
        let horizon = (0..n)
            .filter(|&i| !done.get(i))
            .filter_map(|i| ops[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        let mut advanced = false;
        let mut i = resume;
        while i < n && ops[i].call < horizon {
            if !done.get(i)
                && let Some(next) = state.step(&ops[i].input, ops[i].output.as_ref())
            {
                let mut key = done.clone();
                key.set(i, true);
                if seen.insert((key, next.clone())) {
                    stack.push((i, std::mem::replace(&mut state, next)));
                    done.set(i, true);
                    if ops[i].ret.is_some() {
                        done_required += 1;
                    }
                    advanced = true;
                    break;
                }
            }
            i += 1;
        }
        if advanced {
            resume = 0;
            if stack.len() > best.len() {
                best = stack.iter().map(|(i, _)| *i).collect();
            }
            continue;
        }
        if stack.len() == best.len() && blocked_depth != Some(best.len()) {
            blocked_depth = Some(best.len());
            best_blocked = (0..n)
                .filter(|&i| !done.get(i) && ops[i].ret.is_some() && ops[i].call < horizon)
                .collect();
        }
        // Backtrack: undo the last choice and try the candidates after it.
        let Some((last, before)) = stack.pop() else {
            return Verdict::NotLinearizable {
                stuck_after: best.iter().map(|&i| ops[i].id).collect(),
                blocked: best_blocked.iter().map(|&i| ops[i].id).collect(),
            };
        };
        done.set(last, false);
        if ops[last].ret.is_some() {
            done_required -= 1;
        }
        state = before;
        resume = last + 1;
    }
}

/// A fixed-size bit set, hashable, for the memo of linearized operations.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Self(vec![0; n.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] >> (i % 64) & 1 == 1
    }
    fn set(&mut self, i: usize, on: bool) {
        if on {
            self.0[i / 64] |= 1 << (i % 64);
        } else {
            self.0[i / 64] &= !(1 << (i % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain register of integers, starting at 0.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    struct Reg(u64);

    enum Op {
        W(u64),
        R,
    }

    impl Model for Reg {
        type Input = Op;
        type Output = u64;
        fn step(&self, input: &Op, output: Option<&u64>) -> Option<Self> {
            match input {
                Op::W(v) => Some(Reg(*v)),
                Op::R => match output {
                    Some(v) if *v != self.0 => None,
                    _ => Some(self.clone()),
                },
            }
        }
    }

    fn e(id: u64, call: u64, ret: Option<u64>, input: Op, output: Option<u64>) -> Entry<Op, u64> {
        Entry {
            call,
            ret,
            input,
            output,
            id,
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![
            e(0, 0, Some(1), Op::W(1), None),
            e(1, 2, Some(3), Op::R, Some(1)),
            e(2, 4, Some(5), Op::W(2), None),
            e(3, 6, Some(7), Op::R, Some(2)),
        ];
        assert_eq!(check(&Reg(0), &h, 10_000), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_reads_may_see_either_value() {
        // The write overlaps both reads: one sees the old value, the later one the new.
        let h = vec![
            e(0, 0, Some(10), Op::W(1), None),
            e(1, 1, Some(3), Op::R, Some(0)),
            e(2, 4, Some(6), Op::R, Some(1)),
        ];
        assert_eq!(check(&Reg(0), &h, 10_000), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_after_a_completed_write_is_caught() {
        let h = vec![
            e(0, 0, Some(1), Op::W(1), None),
            e(1, 2, Some(3), Op::R, Some(0)),
        ];
        let Verdict::NotLinearizable {
            stuck_after,
            blocked,
        } = check(&Reg(0), &h, 10_000)
        else {
            panic!("stale read accepted");
        };
        assert_eq!(stuck_after, vec![0]);
        assert_eq!(blocked, vec![1]);
    }

    #[test]
    fn values_cannot_flip_back() {
        // Two reads, one after the other, both overlapping the write: new then old is wrong.
        let h = vec![
            e(0, 0, Some(10), Op::W(1), None),
            e(1, 1, Some(2), Op::R, Some(1)),
            e(2, 3, Some(4), Op::R, Some(0)),
        ];
        assert!(matches!(
            check(&Reg(0), &h, 10_000),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn an_indeterminate_write_may_apply_late_or_never() {
        let late = vec![
            e(0, 0, None, Op::W(1), None),
            e(1, 5, Some(6), Op::R, Some(0)),
            e(2, 7, Some(8), Op::R, Some(1)),
        ];
        assert_eq!(check(&Reg(0), &late, 10_000), Verdict::Linearizable);
        let never = vec![
            e(0, 0, None, Op::W(1), None),
            e(1, 5, Some(6), Op::R, Some(0)),
        ];
        assert_eq!(check(&Reg(0), &never, 10_000), Verdict::Linearizable);
        // But not before it was invoked.
        let early = vec![
            e(0, 1, Some(2), Op::R, Some(1)),
            e(1, 5, None, Op::W(1), None),
        ];
        assert!(matches!(
            check(&Reg(0), &early, 10_000),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn a_write_applied_twice_is_caught() {
        // W1 acked; W2 acked later; a read after both sees 1 again: W1 re-applied (as a
        // retried forward would do) is not linearizable.
        let h = vec![
            e(0, 0, Some(1), Op::W(1), None),
            e(1, 2, Some(3), Op::W(2), None),
            e(2, 4, Some(5), Op::R, Some(2)),
            e(3, 6, Some(7), Op::R, Some(1)),
        ];
        assert!(matches!(
            check(&Reg(0), &h, 10_000),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn many_concurrent_writers_stay_tractable() {
        // 14 overlapping writes then a read of one of them: memoisation keeps it small.
        let mut h: Vec<_> = (0..14)
            .map(|i| e(i, i, Some(100 + i), Op::W(i + 1), None))
            .collect();
        h.push(e(99, 200, Some(201), Op::R, Some(7)));
        assert_eq!(check(&Reg(0), &h, 200_000), Verdict::Linearizable);
        h.push(e(100, 202, Some(203), Op::R, Some(3)));
        assert!(matches!(
            check(&Reg(0), &h, 2_000_000),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn running_out_of_budget_is_unknown_not_a_pass() {
        let h: Vec<_> = (0..10)
            .map(|i| e(i, i, Some(100 + i), Op::W(i + 1), None))
            .collect();
        let mut h = h;
        h.push(e(99, 200, Some(201), Op::R, Some(50)));
        assert_eq!(check(&Reg(0), &h, 5), Verdict::Unknown);
    }
}
