//! Smooth weighted round-robin (nginx's algorithm), precomputed.
//!
//! The schedule nginx's algorithm produces is periodic with period `sum(weights)` (after
//! dividing by their gcd), so it is computed once when the settings change and the request
//! path only bumps an atomic counter: no lock, no actor, and the same interleaving nginx gives
//! (weights 5,1,1 yield a a b a c a a, not a a a a a b c).
//!
//! When the scheduled target is unavailable (its breaker is open, it failed this request),
//! the pick falls back to a random choice among the usable targets in proportion to their
//! weights: the schedule stays shared and lock-free, and the survivors still split the
//! traffic by weight.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Longest schedule we precompute; weights whose reduced sum is larger are scaled down, which
/// keeps the ratios to within 1 / MAX_PERIOD.
const MAX_PERIOD: u64 = 4096;

/// A rotation over targets in proportion to their weights.
#[derive(Debug)]
pub struct WeightedRotation {
    weights: Vec<u32>,
    schedule: Vec<usize>,
    next: AtomicUsize,
}

impl WeightedRotation {
    /// `weights[i]` is target i's weight; zero weights are never picked. An empty or all-zero
    /// input gives a rotation whose `pick` is always `None`.
    pub fn new(weights: &[u32]) -> Self {
        Self {
            weights: weights.to_vec(),
            schedule: smooth_schedule(weights),
            next: AtomicUsize::new(0),
        }
    }

    /// The index of the next target.
    pub fn pick(&self) -> Option<usize> {
        if self.schedule.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.schedule[n % self.schedule.len()])
    }

    /// The next target among those `usable` accepts: the scheduled one when usable, otherwise
    /// one drawn with `random` among the usable ones in proportion to their weights.
    pub fn pick_usable(&self, usable: impl Fn(usize) -> bool, random: u64) -> Option<usize> {
        let scheduled = self.pick()?;
        if usable(scheduled) {
            return Some(scheduled);
        }
        weighted_choice(&self.weights, usable, random)
    }
}

/// An index drawn with `random` among those `usable` accepts, in proportion to `weights`.
pub fn weighted_choice(
    weights: &[u32],
    usable: impl Fn(usize) -> bool,
    random: u64,
) -> Option<usize> {
    let total: u64 = (0..weights.len())
        .filter(|&i| usable(i))
        .map(|i| u64::from(weights[i]))
        .sum();
    if total == 0 {
        return None;
    }
    let mut point = random % total;
    for (i, &weight) in weights.iter().enumerate() {
        if !usable(i) {
            continue;
        }
        let weight = u64::from(weight);
        if point < weight {
            return Some(i);
        }
        point -= weight;
    }
    None
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// One period of nginx's smooth weighted round-robin over `weights`.
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let mut weights: Vec<u64> = weights.iter().map(|&w| u64::from(w)).collect();
    let divisor = weights.iter().copied().fold(0, gcd);
    if divisor == 0 {
        return Vec::new();
    }
    weights.iter_mut().for_each(|w| *w /= divisor);
    let total: u64 = weights.iter().sum();
    if total > MAX_PERIOD {
        // Scale down, keeping every non-zero weight at least 1 so no target starves.
        weights
            .iter_mut()
            .filter(|w| **w > 0)
            .for_each(|w| *w = (*w * MAX_PERIOD / total).max(1));
    }
    let total: i64 = weights.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            for (c, &w) in current.iter_mut().zip(&weights) {
                *c += w as i64;
            }
            let best = (0..current.len())
                .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
                .expect("total > 0 implies at least one target");
            current[best] -= total;
            best
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_interleaves_like_nginx() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn picks_are_in_proportion_to_weights() {
        let rotation = WeightedRotation::new(&[3, 1, 0]);
        let mut counts = [0; 3];
        for _ in 0..400 {
            counts[rotation.pick().unwrap()] += 1;
        }
        assert_eq!(counts, [300, 100, 0]);
    }

    #[test]
    fn common_factors_shorten_the_schedule() {
        assert_eq!(smooth_schedule(&[200, 100]), vec![0, 1, 0]);
    }

    #[test]
    fn huge_weights_are_scaled_without_starving_anyone() {
        let schedule = smooth_schedule(&[1_000_000, 1]);
        assert!(schedule.len() as u64 <= MAX_PERIOD + 1);
        assert!(schedule.contains(&1));
    }

    #[test]
    fn an_unusable_scheduled_target_is_replaced_by_a_weighted_draw_among_the_rest() {
        let rotation = WeightedRotation::new(&[1, 1, 3]);
        let mut counts = [0; 3];
        for n in 0..5000u64 {
            let pick = rotation.pick_usable(|i| i != 0, n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            counts[pick.unwrap()] += 1;
        }
        assert_eq!(counts[0], 0);
        // b : c stays about 1 : 3.
        let share = f64::from(counts[2]) / f64::from(counts[1] + counts[2]);
        assert!((0.72..0.78).contains(&share), "{counts:?}");
        assert_eq!(rotation.pick_usable(|_| false, 7), None);
    }

    #[test]
    fn weighted_choice_walks_the_usable_weights() {
        let weights = [2, 5, 3];
        let picks: Vec<_> = (0..8)
            .map(|r| weighted_choice(&weights, |i| i != 1, r))
            .collect();
        assert_eq!(
            picks,
            [
                Some(0),
                Some(0),
                Some(2),
                Some(2),
                Some(2),
                Some(0),
                Some(0),
                Some(2)
            ]
        );
    }

    #[test]
    fn no_positive_weight_means_no_pick() {
        assert_eq!(WeightedRotation::new(&[]).pick(), None);
        assert_eq!(WeightedRotation::new(&[0, 0]).pick(), None);
    }
}
