//! The arithmetic of one lease of a key's budget that this node holds: what an admission may
//! spend from it, when its persisted mark must rise, when the next slice should be asked for,
//! how a settled request corrects it, and when the next slice takes its place. Pure functions
//! over a lease's state, tested without a runtime; the node's quota ledger and the key actor
//! (key.rs) do the locking and the I/O around them.
//!
//! A lease names its budget with the node's own type `B` (the cluster's budget key): this crate
//! only carries it, and reads the period from the lease itself.
//!
//! The rules (docs/QUOTAS.md, "Node side"):
//! - an admission spends `units` only if `used + units <= slice` and the lease is of the
//!   admission's period; a lease of a past period serves nothing;
//! - it spends only below the persisted mark (`used + units <= mark`), so a crash never counts
//!   less than was admitted; the mark is raised a step (`slice / 8`) ahead, in the background
//!   once fewer than half a step is left, and waited for when an admission caught up with it;
//! - at three quarters used, the next slice is asked for, so that a busy key rarely waits for
//!   Raft;
//! - a settled request corrects `used` by `actual - reserved` (a debt when positive, paid
//!   before the next admission; a refund otherwise), on the lease it was reserved from only.

/// The persisted mark runs this far ahead of what a lease admitted: one fsync per step, and
/// after a crash at most one step per lease is counted as used without having been.
pub fn mark_step(slice: u64) -> u64 {
    (slice / 8).max(1)
}

/// The slice to ask for: a quarter of the limit per voter, big enough that a busy key writes to
/// Raft rarely, small enough that the other nodes still find some left; never less than the
/// request at hand.
pub fn slice_wanted(units: u64, limit: u64, voters: usize) -> u64 {
    units.max(limit / (4 * voters.max(1) as u64)).max(1)
}

/// The mark to persist for a lease just granted with `used` already spent: a step ahead.
pub fn first_mark(used: u64, slice: u64) -> u64 {
    used.saturating_add(mark_step(slice)).min(slice)
}

/// A slice of a budget this node holds and admits from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease<B> {
    pub id: u64,
    pub budget: B,
    /// The budget period the lease belongs to; it serves no other.
    pub period: u64,
    pub slice: u64,
    pub used: u64,
    /// Persisted: `used` never passes it.
    pub mark: u64,
    /// A background raise of `mark` is under way.
    pub raising: bool,
}

/// What spending from a lease decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// Spent. `raise`: raise the mark to this in the background; `renew`: the slice is three
    /// quarters used, the next one should be leased.
    Spent { raise: Option<u64>, renew: bool },
    /// The slice has room but the persisted mark does not: raise it first.
    NeedsMark,
    /// Of a past period, or without room for `units`.
    Exhausted,
}

impl<B> HeldLease<B> {
    /// A lease as granted: `used` already spent, its mark not yet persisted (the mark is the
    /// whole slice: a lease whose mark was never written counts as fully used after a crash,
    /// which is safe). Set [`HeldLease::mark`] once [`first_mark`] is persisted.
    pub fn new(id: u64, budget: B, period: u64, slice: u64, used: u64) -> Self {
        Self {
            id,
            budget,
            period,
            slice,
            used,
            mark: slice,
            raising: false,
        }
    }

    /// Spends `units` of this lease for an admission in `period`.
    pub fn spend(&mut self, units: u64, period: u64) -> Spend {
        let after = self.used.saturating_add(units);
        if self.period != period || after > self.slice {
            return Spend::Exhausted;
        }
        if after > self.mark {
            return Spend::NeedsMark;
        }
        self.used = after;
        // Raise the mark before admissions reach it, so they rarely wait for disk.
        let step = mark_step(self.slice);
        let low = self.mark < self.slice && self.mark - self.used <= step / 2;
        let raise = (low && !self.raising).then(|| {
            self.raising = true;
            (self.mark + step).min(self.slice)
        });
        let renew = self.used.saturating_mul(4) >= self.slice.saturating_mul(3);
        Spend::Spent { raise, renew }
    }

    /// The mark an admission of `units` that found [`Spend::NeedsMark`] waits for.
    pub fn mark_for(&self, units: u64) -> u64 {
        self.used
            .saturating_add(units)
            .saturating_add(mark_step(self.slice))
            .min(self.slice)
    }

    /// A raise of the mark to `mark` is persisted (raises may finish out of order).
    pub fn marked(&mut self, mark: u64) {
        self.mark = self.mark.max(mark);
    }

    /// A request that reserved `reserved` units used `actual`: a debt above the reservation,
    /// a refund below it.
    pub fn settle(&mut self, reserved: u64, actual: u64) {
        self.used = self.used.saturating_add(actual).saturating_sub(reserved);
    }
}

/// What became of a slot whose current lease cannot serve an admission.
#[derive(Debug, PartialEq, Eq)]
pub enum Advance<B> {
    /// The next slice took the current one's place; the old one (if any) is to be closed.
    Swapped { closed: Option<HeldLease<B>> },
    /// Nothing to spend from: there is no next slice, or it came too late (of a past period)
    /// and is to be closed.
    Empty { closed: Option<HeldLease<B>> },
}

/// The current lease `held` cannot serve in `period`: the `next` slice, leased ahead by the key
/// actor, takes its place without a Raft write if it is of this period.
pub fn advance<B>(
    held: &mut Option<HeldLease<B>>,
    next: Option<HeldLease<B>>,
    period: u64,
) -> Advance<B> {
    match next {
        Some(next) if next.period == period => Advance::Swapped {
            closed: held.replace(next),
        },
        stale => Advance::Empty { closed: stale },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(slice: u64, period: u64) -> HeldLease<&'static str> {
        let mut lease = HeldLease::new(1, "key_k/calls", period, slice, 0);
        lease.mark = first_mark(0, slice);
        lease
    }

    /// Spends one unit at a time, persisting every raise at once, until the lease refuses.
    fn spend_all(lease: &mut HeldLease<&'static str>) -> u64 {
        let mut admitted = 0;
        loop {
            match lease.spend(1, 0) {
                Spend::Spent { raise, .. } => {
                    admitted += 1;
                    if let Some(mark) = raise {
                        lease.raising = false;
                        lease.marked(mark);
                    }
                }
                Spend::NeedsMark => {
                    let mark = lease.mark_for(1);
                    lease.marked(mark);
                }
                Spend::Exhausted => return admitted,
            }
        }
    }

    #[test]
    fn a_slice_is_spent_exactly_and_never_past_it() {
        for slice in [1, 7, 8, 100, 1001] {
            let mut l = lease(slice, 0);
            assert_eq!(spend_all(&mut l), slice, "slice {slice}");
            assert_eq!(l.used, slice);
            assert!(l.used <= l.mark, "the mark covers what was admitted");
            assert_eq!(l.spend(1, 0), Spend::Exhausted);
        }
        let mut l = lease(10, 0);
        assert!(matches!(l.spend(10, 0), Spend::NeedsMark));
        l.marked(l.mark_for(10));
        assert!(matches!(l.spend(10, 0), Spend::Spent { .. }));
        assert_eq!(
            l.spend(1, 0),
            Spend::Exhausted,
            "spent exactly to the slice"
        );
    }

    #[test]
    fn the_next_slice_is_asked_for_from_three_quarters_used() {
        let mut l = lease(100, 0);
        l.mark = 100;
        for used in 1..=100 {
            let Spend::Spent { renew, .. } = l.spend(1, 0) else {
                panic!("the slice has room at {used}");
            };
            assert_eq!(renew, used >= 75, "at {used} of 100");
        }
    }

    #[test]
    fn a_lease_of_a_past_period_serves_nothing() {
        let mut l = lease(100, 5);
        assert!(matches!(l.spend(1, 5), Spend::Spent { .. }));
        assert_eq!(l.spend(1, 6), Spend::Exhausted, "the period rolled over");
        assert_eq!(l.used, 1, "a refused admission spends nothing");
    }

    #[test]
    fn the_mark_is_raised_ahead_in_the_background_and_waited_for_when_behind() {
        let mut l = lease(80, 0);
        assert_eq!(l.mark, 10, "a step (slice / 8) ahead of nothing used");
        // Until half a step is left below the mark, nothing is raised.
        for _ in 0..4 {
            assert_eq!(
                l.spend(1, 0),
                Spend::Spent {
                    raise: None,
                    renew: false
                }
            );
        }
        // Then once, a step ahead, while that raise is under way.
        assert_eq!(
            l.spend(1, 0),
            Spend::Spent {
                raise: Some(20),
                renew: false
            }
        );
        assert!(l.raising);
        for _ in 0..5 {
            assert!(matches!(l.spend(1, 0), Spend::Spent { raise: None, .. }));
        }
        // The raise has not landed: the admission that catches up with the mark must wait.
        assert_eq!(l.used, 10);
        assert_eq!(l.spend(1, 0), Spend::NeedsMark);
        assert_eq!(l.used, 10, "not spent while the mark is behind");
        assert_eq!(l.mark_for(1), 21, "what it waits for: itself and a step");
        // Raises finishing out of order never lower the mark.
        l.marked(21);
        l.marked(20);
        assert_eq!(l.mark, 21);
        assert!(matches!(l.spend(1, 0), Spend::Spent { .. }));
        // The mark never passes the slice.
        assert_eq!(lease(80, 0).mark_for(79), 80);
    }

    #[test]
    fn a_settled_request_pays_its_debt_or_gets_its_refund() {
        let mut l = lease(1000, 0);
        l.mark = 1000;
        assert!(matches!(l.spend(300, 0), Spend::Spent { .. }));
        l.settle(300, 120);
        assert_eq!(l.used, 120, "refunded what it reserved and did not use");
        assert!(matches!(l.spend(300, 0), Spend::Spent { .. }));
        l.settle(300, 500);
        assert_eq!(l.used, 620, "a debt above the reservation");
        assert!(
            matches!(l.spend(400, 0), Spend::Exhausted),
            "paid before more is admitted"
        );
        assert!(matches!(l.spend(380, 0), Spend::Spent { .. }));
    }

    #[test]
    fn a_renewal_takes_the_place_of_a_spent_slice_unless_it_came_after_the_period() {
        let mut held = Some(lease(10, 3));
        let next = lease(20, 3);
        assert_eq!(
            advance(&mut held, Some(next.clone()), 3),
            Advance::Swapped {
                closed: Some(lease(10, 3))
            }
        );
        assert_eq!(held, Some(next));

        // A renewal that arrives after the period rolled over is given back, not used.
        let mut held = Some(lease(10, 3));
        assert_eq!(
            advance(&mut held, Some(lease(20, 3)), 4),
            Advance::Empty {
                closed: Some(lease(20, 3))
            }
        );
        assert_eq!(
            held,
            Some(lease(10, 3)),
            "the current lease stays for its close"
        );

        // No renewal yet.
        let mut held: Option<HeldLease<&str>> = None;
        assert_eq!(advance(&mut held, None, 3), Advance::Empty { closed: None });
    }

    #[test]
    fn the_slice_asked_for_is_a_quarter_of_the_limit_per_voter_and_never_below_the_request() {
        assert_eq!(slice_wanted(1, 1200, 3), 100);
        assert_eq!(slice_wanted(500, 1200, 3), 500);
        assert_eq!(slice_wanted(0, 2, 3), 1);
    }
}
