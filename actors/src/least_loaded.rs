//! `least-loaded`: power of two choices on requests in flight times latency.
//!
//! Picking the least loaded of all targets makes every node herd onto the same one between
//! two load updates; picking the better of two random ones (Mitzenmacher's "power of two
//! choices", what linkerd and Finagle balance with) keeps the load nearly as even with no
//! herding. The load of a target is `(in_flight + 1) * latency / weight`: the queue it has,
//! scaled by how slowly it drains, so a slow upstream with few requests is not mistaken for
//! an idle one.

/// Latency below this is treated as this, so a target with no sample yet (0 ms) still has a
/// cost that grows with its queue.
const MIN_LATENCY_MS: f64 = 1.0;

/// The load of one target; lower is better.
pub fn load_cost(in_flight: u32, latency_ms: f64, weight: u32) -> f64 {
    (f64::from(in_flight) + 1.0) * latency_ms.max(MIN_LATENCY_MS) / f64::from(weight.max(1))
}

/// Of two candidates, the one with the lower cost; the first on a tie.
pub fn better_of_two(a: usize, b: usize, cost: impl Fn(usize) -> f64) -> usize {
    if cost(b) < cost(a) { b } else { a }
}

/// Two distinct positions in `0..n` from two random numbers (`n >= 2`), without bias beyond
/// that of the modulo on 64-bit numbers.
pub fn two_distinct(n: usize, r1: u64, r2: u64) -> (usize, usize) {
    debug_assert!(n >= 2);
    let first = (r1 % n as u64) as usize;
    // Choose among the n - 1 others, then skip over `first`.
    let mut second = (r2 % (n as u64 - 1)) as usize;
    if second >= first {
        second += 1;
    }
    (first, second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_longer_queue_or_a_slower_upstream_costs_more() {
        assert!(load_cost(3, 100.0, 1) > load_cost(1, 100.0, 1));
        assert!(load_cost(1, 400.0, 1) > load_cost(2, 100.0, 1));
        assert!(load_cost(2, 100.0, 2) < load_cost(2, 100.0, 1));
        // No latency sample yet: the queue still counts.
        assert!(load_cost(5, 0.0, 1) > load_cost(0, 0.0, 1));
    }

    #[test]
    fn the_cheaper_of_two_wins_and_the_first_wins_ties() {
        let costs = [5.0, 2.0, 2.0];
        assert_eq!(better_of_two(0, 1, |i| costs[i]), 1);
        assert_eq!(better_of_two(1, 2, |i| costs[i]), 1);
        assert_eq!(better_of_two(2, 1, |i| costs[i]), 2);
    }

    #[test]
    fn two_distinct_never_repeats_and_covers_every_pair() {
        let mut seen = std::collections::HashSet::new();
        for r1 in 0..4 {
            for r2 in 0..3 {
                let (a, b) = two_distinct(4, r1, r2);
                assert_ne!(a, b);
                assert!(a < 4 && b < 4);
                seen.insert((a, b));
            }
        }
        assert_eq!(seen.len(), 12, "every ordered pair of 4 is reachable");
    }
}
