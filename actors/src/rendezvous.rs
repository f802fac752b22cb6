//! Weighted rendezvous (highest random weight) hashing: the default binding of a sticky session.
//!
//! Every target gets a score from a stable hash of (session, target id); the highest score
//! wins. Every node computes the same scores without talking, so a session's first request
//! lands on the same upstream whichever node it reaches. When the winner is unavailable, the
//! runner-up takes over, and only the sessions of the missing target move. Weights scale the
//! scores (`weight / -ln(u)`, the logarithmic method), so a target of weight 2 wins about twice
//! as many sessions as one of weight 1.

use crate::hash::{mix, stable_hash};

/// A session of one model, as a stable 64-bit hash of (model, session id): small to store
/// and compare, and it never holds the caller's session text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(u64);

impl SessionKey {
    pub fn new(model: &str, session: &str) -> Self {
        Self(stable_hash(&[model.as_bytes(), session.as_bytes()]))
    }
}

/// The score of target `id` (weight `weight`) for `session`; the highest score wins.
pub fn rendezvous_score(session: SessionKey, id: &str, weight: u32) -> f64 {
    let hash = mix(session.0 ^ stable_hash(&[id.as_bytes()]));
    // 53 random bits as a uniform number strictly inside (0, 1), so ln is finite and negative.
    let unit = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -unit.ln()
}

/// The index of the winning candidate among `(index, id, weight)`; ties go to the lower index.
pub fn rendezvous_pick<'a>(
    session: SessionKey,
    candidates: impl IntoIterator<Item = (usize, &'a str, u32)>,
) -> Option<usize> {
    let mut best: Option<(f64, usize)> = None;
    for (index, id, weight) in candidates {
        let score = rendezvous_score(session, id, weight);
        if best.is_none_or(|(top, _)| score > top) {
            best = Some((score, index));
        }
    }
    best.map(|(_, index)| index)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: [&str; 4] = ["vllm-a", "vllm-b", "vllm-c", "vllm-d"];

    fn pick(session: SessionKey, available: &[usize], weights: &[u32]) -> usize {
        rendezvous_pick(session, available.iter().map(|&i| (i, IDS[i], weights[i]))).unwrap()
    }

    #[test]
    fn the_same_session_always_gets_the_same_target() {
        let session = SessionKey::new("chat", "user-42");
        let first = pick(session, &[0, 1, 2, 3], &[1; 4]);
        for _ in 0..10 {
            assert_eq!(pick(session, &[0, 1, 2, 3], &[1; 4]), first);
        }
        // Candidate order does not matter.
        assert_eq!(pick(session, &[3, 2, 1, 0], &[1; 4]), first);
    }

    #[test]
    fn losing_a_target_moves_only_its_sessions() {
        let all = [0, 1, 2, 3];
        let without_b = [0, 2, 3];
        let mut moved = 0;
        for n in 0..2000 {
            let session = SessionKey::new("chat", &format!("s{n}"));
            let before = pick(session, &all, &[1; 4]);
            let after = pick(session, &without_b, &[1; 4]);
            if before == 1 {
                moved += 1;
                assert_ne!(after, 1);
            } else {
                assert_eq!(before, after, "a session of a surviving target moved");
            }
        }
        // About a quarter of the sessions were on b.
        assert!((400..600).contains(&moved), "{moved}");
    }

    #[test]
    fn sessions_spread_in_proportion_to_weights() {
        let weights = [1, 3, 0, 0];
        let mut counts = [0; 2];
        for n in 0..8000 {
            let session = SessionKey::new("chat", &format!("s{n}"));
            counts[pick(session, &[0, 1], &weights)] += 1;
        }
        let share = f64::from(counts[1]) / 8000.0;
        assert!((0.72..0.78).contains(&share), "{counts:?}");
    }

    #[test]
    fn different_models_spread_the_same_session_independently() {
        let differs = (0..64).any(|n| {
            let id = format!("s{n}");
            pick(SessionKey::new("m1", &id), &[0, 1, 2, 3], &[1; 4])
                != pick(SessionKey::new("m2", &id), &[0, 1, 2, 3], &[1; 4])
        });
        assert!(differs);
    }

    #[test]
    fn no_candidate_no_pick() {
        assert_eq!(rendezvous_pick(SessionKey::new("m", "s"), []), None);
    }
}
