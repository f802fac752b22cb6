//! The nemesis schedule: which fault starts when, for how long, against what. A pure function
//! of the seed and the run's shape, so the same seed replays the same schedule (targets such
//! as "the leader" are symbolic and resolved when the fault starts).
//!
//! Two independent tracks: cluster faults (partition, kill, pause) one at a time, and upstream
//! faults (kill a mock, error rate, latency) one at a time, overlapping the cluster track. Each
//! fault is followed by a quiet gap, and the last `tail` of the run is fault-free so the
//! checker's final reads see a healed cluster.

use std::time::Duration;

use serde::Serialize;

use super::rng::SeededRng;

/// A family of faults, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NemesisKind {
    Partition,
    Kill,
    Pause,
    Upstream,
}

impl NemesisKind {
    pub const ALL: [NemesisKind; 4] = [Self::Partition, Self::Kill, Self::Pause, Self::Upstream];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "partition" => Some(Self::Partition),
            "kill" => Some(Self::Kill),
            "pause" => Some(Self::Pause),
            "upstream" => Some(Self::Upstream),
            _ => None,
        }
    }
}

/// Which node a process fault hits: a fixed one (index into the nodes), or whoever leads when
/// the fault starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeTarget {
    Node(usize),
    Leader,
}

/// How the nodes are cut apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionShape {
    /// The nodes shuffled and split in two; the first group is the smaller (the minority).
    Halves {
        minority: Vec<usize>,
        majority: Vec<usize>,
    },
    /// The leader (when the fault starts) alone against the rest.
    IsolateLeader,
    /// Every node sees a majority, but no two nodes the same one (for three nodes: a bridge,
    /// `ring[0]` and `ring[2]` cut, `ring[1]` seeing both).
    MajorityRing { ring: Vec<usize> },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Fault {
    Partition {
        shape: PartitionShape,
    },
    Kill {
        target: NodeTarget,
    },
    Pause {
        target: NodeTarget,
    },
    /// The mock process killed (SIGKILL), restarted on the same port when the fault ends.
    UpstreamKill {
        mock: usize,
    },
    /// `error_rate` and `error_status` set through `/mock/control`, reset at the end.
    UpstreamErrors {
        mock: usize,
        rate: f64,
        status: u16,
    },
    /// `latency_ms` set through `/mock/control`, reset at the end.
    UpstreamLatency {
        mock: usize,
        latency_ms: u64,
    },
}

impl Fault {
    pub fn kind(&self) -> NemesisKind {
        match self {
            Fault::Partition { .. } => NemesisKind::Partition,
            Fault::Kill { .. } => NemesisKind::Kill,
            Fault::Pause { .. } => NemesisKind::Pause,
            Fault::UpstreamKill { .. }
            | Fault::UpstreamErrors { .. }
            | Fault::UpstreamLatency { .. } => NemesisKind::Upstream,
        }
    }
}

/// One fault from `start` for `duration` after the run's start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduledFault {
    pub start_ms: u64,
    pub duration_ms: u64,
    pub fault: Fault,
}

/// What the schedule is drawn for.
#[derive(Debug, Clone)]
pub struct ScheduleShape {
    pub seed: u64,
    pub nodes: usize,
    pub mocks: usize,
    pub nemeses: Vec<NemesisKind>,
    pub time_limit: Duration,
    /// The fault-free end of the run.
    pub tail: Duration,
    /// Bounds of one fault's length and of the quiet gap after it.
    pub fault_ms: (u64, u64),
    pub gap_ms: (u64, u64),
}

/// The whole schedule, sorted by start time.
pub fn generate(shape: &ScheduleShape) -> Vec<ScheduledFault> {
    let end = shape.time_limit.saturating_sub(shape.tail).as_millis() as u64;
    let cluster: Vec<NemesisKind> = shape
        .nemeses
        .iter()
        .copied()
        .filter(|k| *k != NemesisKind::Upstream)
        .collect();
    let mut faults = Vec::new();
    if !cluster.is_empty() {
        let mut rng = SeededRng::derive(shape.seed, 1);
        track(shape, end, &mut rng, &mut faults, |rng| {
            cluster_fault(*rng.pick(&cluster), shape.nodes, rng)
        });
    }
    if shape.nemeses.contains(&NemesisKind::Upstream) && shape.mocks > 0 {
        let mut rng = SeededRng::derive(shape.seed, 2);
        track(shape, end, &mut rng, &mut faults, |rng| {
            upstream_fault(shape.mocks, rng)
        });
    }
    faults.sort_by_key(|f| f.start_ms);
    faults
}

/// Faults one after another, each followed by a gap, all ending by `end`. Bounded: each
/// iteration moves `at` forward by at least a millisecond and the loop stops at `end`.
fn track(
    shape: &ScheduleShape,
    end: u64,
    rng: &mut SeededRng,
    out: &mut Vec<ScheduledFault>,
    mut draw: impl FnMut(&mut SeededRng) -> Fault,
) {
    let mut at = rng.range(shape.gap_ms.0, shape.gap_ms.1);
    loop {
        let duration_ms = rng.range(shape.fault_ms.0, shape.fault_ms.1).max(1);
        if at + duration_ms > end {
            return;
        }
        out.push(ScheduledFault {
            start_ms: at,
            duration_ms,
            fault: draw(rng),
        });
        at += duration_ms + rng.range(shape.gap_ms.0, shape.gap_ms.1).max(1);
    }
}

fn node_target(nodes: usize, rng: &mut SeededRng) -> NodeTarget {
    if rng.chance(0.5) {
        NodeTarget::Leader
    } else {
        NodeTarget::Node(rng.below(nodes as u64) as usize)
    }
}

fn cluster_fault(kind: NemesisKind, nodes: usize, rng: &mut SeededRng) -> Fault {
    match kind {
        NemesisKind::Kill => Fault::Kill {
            target: node_target(nodes, rng),
        },
        NemesisKind::Pause => Fault::Pause {
            target: node_target(nodes, rng),
        },
        _ => {
            let mut order: Vec<usize> = (0..nodes).collect();
            rng.shuffle(&mut order);
            let shape = match rng.below(3) {
                0 => {
                    let majority = order.split_off(nodes / 2);
                    PartitionShape::Halves {
                        minority: order,
                        majority,
                    }
                }
                1 => PartitionShape::IsolateLeader,
                _ => PartitionShape::MajorityRing { ring: order },
            };
            Fault::Partition { shape }
        }
    }
}

fn upstream_fault(mocks: usize, rng: &mut SeededRng) -> Fault {
    let mock = rng.below(mocks as u64) as usize;
    match rng.below(3) {
        0 => Fault::UpstreamKill { mock },
        1 => Fault::UpstreamErrors {
            mock,
            rate: [0.5, 0.9, 1.0][rng.below(3) as usize],
            status: *rng.pick(&[500, 502, 503, 429]),
        },
        _ => Fault::UpstreamLatency {
            mock,
            latency_ms: rng.range(200, 1500),
        },
    }
}

impl PartitionShape {
    /// The pairs of node indexes that cannot talk, given the leader's index when the fault
    /// starts (`None`: no leader known; isolating "the leader" then isolates node 0).
    pub fn cut_pairs(&self, nodes: usize, leader: Option<usize>) -> Vec<(usize, usize)> {
        let mut pairs = Vec::new();
        match self {
            PartitionShape::Halves { minority, majority } => {
                for &a in minority {
                    for &b in majority {
                        pairs.push((a.min(b), a.max(b)));
                    }
                }
            }
            PartitionShape::IsolateLeader => {
                let alone = leader.unwrap_or(0);
                for other in (0..nodes).filter(|&n| n != alone) {
                    pairs.push((alone.min(other), alone.max(other)));
                }
            }
            PartitionShape::MajorityRing { ring } => {
                let n = ring.len();
                if n == 3 {
                    pairs.push((ring[0].min(ring[2]), ring[0].max(ring[2])));
                } else {
                    // Each node keeps its `reach` nearest neighbours on each side: itself plus
                    // 2*reach >= a majority.
                    let reach = (n / 2).div_ceil(2);
                    for i in 0..n {
                        for j in i + 1..n {
                            let distance = (j - i).min(n - (j - i));
                            if distance > reach {
                                pairs.push((ring[i].min(ring[j]), ring[i].max(ring[j])));
                            }
                        }
                    }
                }
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        pairs
    }
}

/// The nodes in the largest connected group given the cut pairs, i.e. the side that should
/// keep a quorum (every other node is on a minority side).
pub fn majority_side(nodes: usize, cut: &[(usize, usize)]) -> Vec<usize> {
    // Direct links only: a node is on the majority side when it reaches a majority of nodes
    // (itself included) without going through anyone, which is what Raft needs from a leader.
    (0..nodes)
        .filter(|&n| {
            let reached = (0..nodes)
                .filter(|&m| m == n || !cut.contains(&(n.min(m), n.max(m))))
                .count();
            reached > nodes / 2
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(seed: u64) -> ScheduleShape {
        ScheduleShape {
            seed,
            nodes: 3,
            mocks: 2,
            nemeses: NemesisKind::ALL.to_vec(),
            time_limit: Duration::from_secs(120),
            tail: Duration::from_secs(10),
            fault_ms: (3_000, 8_000),
            gap_ms: (2_000, 5_000),
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        assert_eq!(generate(&shape(7)), generate(&shape(7)));
        assert_ne!(generate(&shape(7)), generate(&shape(8)));
    }

    #[test]
    fn faults_end_before_the_quiet_tail_and_do_not_overlap_on_a_track() {
        for seed in 0..50 {
            let faults = generate(&shape(seed));
            assert!(!faults.is_empty());
            let mut last_end = [0u64; 2];
            for f in &faults {
                assert!(f.start_ms + f.duration_ms <= 110_000, "{f:?}");
                let track = usize::from(f.fault.kind() == NemesisKind::Upstream);
                assert!(f.start_ms > last_end[track], "overlap on a track: {f:?}");
                last_end[track] = f.start_ms + f.duration_ms;
            }
        }
    }

    #[test]
    fn only_the_chosen_nemeses_appear() {
        let mut s = shape(3);
        s.nemeses = vec![NemesisKind::Pause];
        let faults = generate(&s);
        assert!(!faults.is_empty());
        assert!(faults.iter().all(|f| f.fault.kind() == NemesisKind::Pause));
    }

    #[test]
    fn partitions_cut_what_they_say() {
        let halves = PartitionShape::Halves {
            minority: vec![2],
            majority: vec![0, 1],
        };
        assert_eq!(halves.cut_pairs(3, None), vec![(0, 2), (1, 2)]);
        assert_eq!(majority_side(3, &halves.cut_pairs(3, None)), vec![0, 1]);
        let leader = PartitionShape::IsolateLeader;
        assert_eq!(leader.cut_pairs(3, Some(1)), vec![(0, 1), (1, 2)]);
        let bridge = PartitionShape::MajorityRing {
            ring: vec![2, 0, 1],
        };
        assert_eq!(bridge.cut_pairs(3, None), vec![(1, 2)]);
        assert_eq!(majority_side(3, &bridge.cut_pairs(3, None)), vec![0, 1, 2]);
        let ring5 = PartitionShape::MajorityRing {
            ring: vec![0, 1, 2, 3, 4],
        };
        let cut = ring5.cut_pairs(5, None);
        assert_eq!(cut, vec![(0, 2), (0, 3), (1, 3), (1, 4), (2, 4)]);
        assert_eq!(majority_side(5, &cut), vec![0, 1, 2, 3, 4]);
    }
}
