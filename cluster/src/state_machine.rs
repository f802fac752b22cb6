//! The replicated state as a plain struct with an `apply` that a test can call directly.
//!
//! Invariants kept here:
//! - `by_hash` and `keys` describe the same set of keys (a secret hash maps to exactly one id).
//! - `apply` is deterministic: same commands in the same order give the same state on every
//!   node. Nothing in it reads a clock, the environment or a random source; those values travel
//!   inside the command.

use imbl::{HashMap, OrdMap};
use openraft::{LogId, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::command::{BudgetKey, Command, Outcome, Proposal, RatePlan, Rejection};
use crate::model::{KeyId, KeyRecord, KeySecretHash, SettingsDoc};
use crate::raft::{Node, NodeId};
use crate::videos::VideoOwners;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct StateMachineData {
    pub last_applied: Option<LogId<NodeId>>,
    pub last_membership: StoredMembership<NodeId, Node>,
    pub bootstrapped: bool,
    pub keys: OrdMap<KeyId, KeyRecord>,
    pub by_hash: HashMap<KeySecretHash, KeyId>,
    pub settings: SettingsDoc,
    pub budgets: OrdMap<BudgetKey, BudgetState>,
    /// The outcomes of the last [`RECENT_PROPOSALS`] proposals, by id, and their ids oldest
    /// first: a proposal sent again after its first copy committed gets the first outcome.
    pub recent: HashMap<u128, Outcome>,
    pub recent_order: imbl::Vector<u128>,
    /// The latest rate plans of each key, oldest first (at most [`PLANS_KEPT`]).
    pub rate_plans: OrdMap<KeyId, imbl::Vector<RatePlan>>,
    /// The key that created each video job still listed (videos.rs).
    pub videos: VideoOwners,
}

/// Rate plans kept per key: the one in force, the next ones, and one before.
const PLANS_KEPT: usize = 4;

/// How many proposals are remembered for retries: far more than a node writes within one
/// write timeout.
const RECENT_PROPOSALS: usize = 4096;

/// The replicated ledger of one period budget.
///
/// Invariant: `available + Σ open slices + closed_used == limit` while the limit is unchanged,
/// so units admitted (≤ Σ closed used + Σ open slices) never exceed the limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetState {
    pub limit: u64,
    /// Not leased to any node.
    pub available: u64,
    /// Reported by closed leases (each report at least the truth).
    pub closed_used: u64,
    pub leases: OrdMap<u64, Lease>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub node: NodeId,
    pub slice: u64,
}

impl BudgetState {
    pub fn leased(&self) -> u64 {
        self.leases.values().map(|l| l.slice).sum()
    }
}

impl StateMachineData {
    /// Applies the proposal of log entry `index`, once: a copy of a proposal applied before
    /// answers the first outcome and changes nothing.
    pub fn apply_proposal(&mut self, index: u64, proposal: Proposal) -> Outcome {
        if let Some(outcome) = self.recent.get(&proposal.id) {
            return outcome.clone();
        }
        let outcome = self.apply(index, proposal.command);
        self.recent.insert(proposal.id, outcome.clone());
        self.recent_order.push_back(proposal.id);
        while self.recent_order.len() > RECENT_PROPOSALS {
            if let Some(oldest) = self.recent_order.pop_front() {
                self.recent.remove(&oldest);
            }
        }
        outcome
    }

    /// Applies the command of log entry `index`.
    pub fn apply(&mut self, index: u64, command: Command) -> Outcome {
        match command {
            Command::Bootstrap {
                keys,
                settings_toml,
            } => {
                if self.bootstrapped {
                    return Outcome::Bootstrapped { applied: false };
                }
                self.bootstrapped = true;
                self.settings = SettingsDoc {
                    toml: settings_toml,
                    revision: index,
                };
                for key in keys {
                    // Config validation already refuses duplicate secrets; a duplicate here is
                    // skipped rather than allowed to break the one-hash-one-key invariant.
                    let _ = self.insert_key(index, key);
                }
                Outcome::Bootstrapped { applied: true }
            }
            Command::CreateKey { key } => match self.insert_key(index, key) {
                Ok(key) => Outcome::Key(Box::new(key)),
                Err(rejection) => Outcome::Rejected(rejection),
            },
            Command::UpdateKey { id, patch } => {
                let Some(key) = self.keys.get_mut(&id) else {
                    return Outcome::Rejected(Rejection::NoSuchKey(id));
                };
                if let Some(name) = patch.name {
                    key.name = name;
                }
                if let Some(models) = patch.models {
                    key.models = models;
                }
                if let Some(enabled) = patch.enabled {
                    key.enabled = enabled;
                }
                if let Some(expires_at) = patch.expires_at {
                    key.expires_at = expires_at;
                }
                if let Some(metadata) = patch.metadata {
                    key.metadata = metadata;
                }
                if let Some(limits) = patch.limits {
                    key.limits = limits;
                }
                if let Some(mcp_servers) = patch.mcp_servers {
                    key.mcp_servers = mcp_servers;
                }
                if let Some(records) = patch.records {
                    key.records = records;
                }
                key.revision = index;
                Outcome::Key(Box::new(key.clone()))
            }
            Command::DeleteKey { id } => match self.keys.remove(&id) {
                Some(key) => {
                    self.by_hash.remove(&key.secret_hash);
                    self.forget_budgets_of(&id);
                    self.rate_plans.remove(&id);
                    self.videos.forget_key(&id);
                    Outcome::KeyDeleted(id)
                }
                None => Outcome::Rejected(Rejection::NoSuchKey(id)),
            },
            Command::PutSettings {
                toml,
                expected_revision,
            } => {
                let current = self.settings.revision;
                if let Some(expected) = expected_revision
                    && expected != current
                {
                    return Outcome::Rejected(Rejection::StaleSettings { expected, current });
                }
                self.settings = SettingsDoc {
                    toml,
                    revision: index,
                };
                Outcome::SettingsWritten { revision: index }
            }
            Command::GrantLease {
                budget,
                node,
                lease,
                want,
                release,
            } => {
                if let Some((old_budget, old_lease, used)) = release {
                    self.close_lease(&old_budget, old_lease, used);
                }
                let limit = self
                    .keys
                    .get(&budget.key)
                    .and_then(|k| k.limits.budget(budget.dimension))
                    .map(|b| b.limit);
                let Some(limit) = limit else {
                    return Outcome::Rejected(Rejection::NoSuchBudget(budget.key));
                };
                // A new period starts afresh; older periods with nothing leased are forgotten.
                let older = BudgetKey {
                    period: 0,
                    ..budget.clone()
                }..budget.clone();
                let spent: Vec<BudgetKey> = self
                    .budgets
                    .range(older)
                    .filter(|(_, state)| state.leases.is_empty())
                    .map(|(b, _)| b.clone())
                    .collect();
                for b in spent {
                    self.budgets.remove(&b);
                }
                let state = self.budgets.entry(budget).or_insert_with(|| BudgetState {
                    limit,
                    available: limit,
                    closed_used: 0,
                    leases: OrdMap::new(),
                });
                if state.limit != limit {
                    // A changed limit moves what is available by the difference, never below 0.
                    state.available = if limit > state.limit {
                        state.available + (limit - state.limit)
                    } else {
                        state.available.saturating_sub(state.limit - limit)
                    };
                    state.limit = limit;
                }
                let granted = want.min(state.available);
                if granted > 0 {
                    state.available -= granted;
                    state.leases.insert(
                        lease,
                        Lease {
                            node,
                            slice: granted,
                        },
                    );
                }
                Outcome::LeaseGranted { granted }
            }
            Command::CloseLease {
                budget,
                lease,
                used,
            } => Outcome::LeasesClosed {
                count: u64::from(self.close_lease(&budget, lease, used)),
            },
            Command::PlanRates { plans } => {
                for (key, plan) in plans {
                    if !self.keys.contains_key(&key) {
                        continue;
                    }
                    let kept = self.rate_plans.entry(key).or_default();
                    // Plans only move forward: one that starts before the last one ends is late.
                    if kept.last().is_some_and(|last| plan.t0_ms < last.t1_ms) {
                        continue;
                    }
                    kept.push_back(plan);
                    while kept.len() > PLANS_KEPT {
                        kept.pop_front();
                    }
                }
                Outcome::RatesPlanned { index }
            }
            Command::ActivateRates { plans } => {
                for (key, t0_ms) in plans {
                    if let Some(kept) = self.rate_plans.get_mut(&key) {
                        for plan in kept.iter_mut().filter(|p| p.t0_ms == t0_ms) {
                            plan.active = true;
                        }
                    }
                }
                Outcome::Nothing
            }
            Command::CloseLeasesOf { node } => self.settle_leases_of(node, &[]),
            Command::SettleLeasesOf { node, marks } => self.settle_leases_of(node, &marks),
            Command::RecordVideo { key, job, at } => {
                if self.keys.contains_key(&key) {
                    self.videos.record(key, job, at);
                }
                Outcome::Nothing
            }
            Command::ForgetVideo { key, job } => {
                self.videos.forget(&key, &job);
                Outcome::Nothing
            }
        }
    }

    /// Closes every open lease of `node`, each as having used its mark (capped at the slice),
    /// or its whole slice when it has none.
    fn settle_leases_of(&mut self, node: NodeId, marks: &[(u64, u64)]) -> Outcome {
        let mine: Vec<(BudgetKey, u64, u64)> = self
            .budgets
            .iter()
            .flat_map(|(budget, state)| {
                state
                    .leases
                    .iter()
                    .filter(|(_, lease)| lease.node == node)
                    .map(|(id, lease)| (budget.clone(), *id, lease.slice))
            })
            .collect();
        let marks: std::collections::HashMap<u64, u64> = marks.iter().copied().collect();
        let mut count = 0;
        for (budget, id, slice) in mine {
            let used = marks.get(&id).copied().unwrap_or(slice);
            count += u64::from(self.close_lease(&budget, id, used));
        }
        Outcome::LeasesClosed { count }
    }

    /// Gives a lease back: what it did not use becomes available again. A report above the
    /// slice counts as the slice; an unknown lease (closed already) changes nothing.
    fn close_lease(&mut self, budget: &BudgetKey, lease: u64, used: u64) -> bool {
        let Some(state) = self.budgets.get_mut(budget) else {
            return false;
        };
        match state.leases.remove(&lease) {
            Some(lease) => {
                let used = used.min(lease.slice);
                state.available += lease.slice - used;
                state.closed_used += used;
                true
            }
            None => false,
        }
    }

    /// Removes every budget of `key` (imbl's maps have no `retain`).
    fn forget_budgets_of(&mut self, key: &KeyId) {
        let doomed: Vec<BudgetKey> = self
            .budgets
            .iter()
            .filter(|(budget, _)| budget.key == *key)
            .map(|(budget, _)| budget.clone())
            .collect();
        for budget in doomed {
            self.budgets.remove(&budget);
        }
    }

    fn insert_key(&mut self, index: u64, mut key: KeyRecord) -> Result<KeyRecord, Rejection> {
        if self.keys.contains_key(&key.id) {
            return Err(Rejection::DuplicateKeyId(key.id));
        }
        if self.by_hash.contains_key(&key.secret_hash) {
            return Err(Rejection::DuplicateSecret);
        }
        key.revision = index;
        self.by_hash.insert(key.secret_hash, key.id.clone());
        self.keys.insert(key.id.clone(), key.clone());
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AllowedModels, KeyPatch};

    fn key(id: &str, secret: &str) -> KeyRecord {
        KeyRecord {
            id: KeyId::parse(id).unwrap(),
            name: id.to_owned(),
            secret_hash: KeySecretHash::of_secret(secret),
            models: AllowedModels::All,
            enabled: true,
            expires_at: None,
            metadata: Default::default(),
            created_at: 1,
            revision: 0,
            limits: Default::default(),
            mcp_servers: None,
            records: None,
        }
    }

    #[test]
    fn bootstrap_applies_once() {
        let mut sm = StateMachineData::default();
        let first = Command::Bootstrap {
            keys: vec![key("key_a", "secret-a")],
            settings_toml: "x".into(),
        };
        let second = Command::Bootstrap {
            keys: vec![key("key_b", "secret-b")],
            settings_toml: "y".into(),
        };
        assert_eq!(sm.apply(1, first), Outcome::Bootstrapped { applied: true });
        assert_eq!(
            sm.apply(2, second),
            Outcome::Bootstrapped { applied: false }
        );
        assert_eq!(sm.keys.len(), 1);
        assert_eq!(
            sm.settings,
            SettingsDoc {
                toml: "x".into(),
                revision: 1
            }
        );
    }

    #[test]
    fn keys_are_created_updated_and_deleted_with_their_hash_index() {
        let mut sm = StateMachineData::default();
        let created = sm.apply(
            3,
            Command::CreateKey {
                key: key("key_a", "secret-a"),
            },
        );
        assert!(matches!(created, Outcome::Key(ref k) if k.revision == 3));
        let dup = sm.apply(
            4,
            Command::CreateKey {
                key: key("key_b", "secret-a"),
            },
        );
        assert_eq!(dup, Outcome::Rejected(Rejection::DuplicateSecret));

        let patch = KeyPatch {
            enabled: Some(false),
            ..KeyPatch::default()
        };
        let id = KeyId::parse("key_a").unwrap();
        let updated = sm.apply(
            5,
            Command::UpdateKey {
                id: id.clone(),
                patch,
            },
        );
        assert!(matches!(updated, Outcome::Key(ref k) if !k.enabled && k.revision == 5));

        assert_eq!(
            sm.apply(6, Command::DeleteKey { id: id.clone() }),
            Outcome::KeyDeleted(id.clone())
        );
        assert!(sm.by_hash.is_empty() && sm.keys.is_empty());
        assert_eq!(
            sm.apply(7, Command::DeleteKey { id: id.clone() }),
            Outcome::Rejected(Rejection::NoSuchKey(id))
        );
    }

    #[test]
    fn settings_writes_check_the_expected_revision() {
        let mut sm = StateMachineData::default();
        let put = |toml: &str, expected| Command::PutSettings {
            toml: toml.into(),
            expected_revision: expected,
        };
        assert_eq!(
            sm.apply(2, put("a", Some(0))),
            Outcome::SettingsWritten { revision: 2 }
        );
        assert_eq!(
            sm.apply(3, put("b", Some(0))),
            Outcome::Rejected(Rejection::StaleSettings {
                expected: 0,
                current: 2
            })
        );
        assert_eq!(
            sm.apply(4, put("c", None)),
            Outcome::SettingsWritten { revision: 4 }
        );
        assert_eq!(sm.settings.toml, "c");
    }

    fn budgeted(id: &str, secret: &str, limit: u64) -> KeyRecord {
        let mut key = key(id, secret);
        key.limits.calls = Some(crate::model::Budget {
            limit,
            period: crate::model::Period::Day,
        });
        key
    }

    fn calls(id: &str, period: u64) -> BudgetKey {
        BudgetKey {
            key: KeyId::parse(id).unwrap(),
            dimension: crate::model::Dimension::Calls,
            period,
        }
    }

    fn granted(outcome: Outcome) -> u64 {
        match outcome {
            Outcome::LeaseGranted { granted } => granted,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn leases_never_grant_more_than_the_limit_and_closing_returns_only_the_unused_part() {
        let mut sm = StateMachineData::default();
        sm.apply(
            1,
            Command::CreateKey {
                key: budgeted("key_q", "sk-quota-1", 100),
            },
        );
        let grant = |sm: &mut StateMachineData, node, lease, want| {
            granted(sm.apply(
                2,
                Command::GrantLease {
                    budget: calls("key_q", 7),
                    node,
                    lease,
                    want,
                    release: None,
                },
            ))
        };
        assert_eq!(grant(&mut sm, 1, 1, 60), 60);
        assert_eq!(grant(&mut sm, 2, 2, 60), 40);
        assert_eq!(grant(&mut sm, 3, 3, 60), 0, "nothing left");
        // Node 1 used 10 of its 60: 50 come back.
        sm.apply(
            3,
            Command::CloseLease {
                budget: calls("key_q", 7),
                lease: 1,
                used: 10,
            },
        );
        assert_eq!(grant(&mut sm, 3, 4, 60), 50);
        // Node 2 restarts: its 40 count as used, whatever it really used.
        sm.apply(4, Command::CloseLeasesOf { node: 2 });
        let state = &sm.budgets[&calls("key_q", 7)];
        assert_eq!(
            (state.available, state.closed_used, state.leased()),
            (0, 50, 50)
        );
        assert_eq!(state.available + state.closed_used + state.leased(), 100);
        // Closing twice, or a report above the slice, gives nothing more back.
        sm.apply(
            5,
            Command::CloseLease {
                budget: calls("key_q", 7),
                lease: 1,
                used: 0,
            },
        );
        sm.apply(
            6,
            Command::CloseLease {
                budget: calls("key_q", 7),
                lease: 4,
                used: 999,
            },
        );
        let state = &sm.budgets[&calls("key_q", 7)];
        assert_eq!((state.available, state.closed_used), (0, 100));
    }

    #[test]
    fn rate_plans_move_forward_are_kept_few_and_are_activated_by_their_start() {
        let mut sm = StateMachineData::default();
        sm.apply(
            1,
            Command::CreateKey {
                key: budgeted("key_p", "sk-plans-1", 100),
            },
        );
        let key = KeyId::parse("key_p").unwrap();
        let plan = |t0: u64| RatePlan {
            t0_ms: t0,
            t1_ms: t0 + 2000,
            shares: vec![(1, Some(500), None), (2, Some(100), None)],
            active: false,
        };
        for (i, t0) in [0u64, 2000, 4000, 6000, 8000].into_iter().enumerate() {
            let outcome = sm.apply(
                2 + i as u64,
                Command::PlanRates {
                    plans: vec![(key.clone(), plan(t0))],
                },
            );
            assert_eq!(
                outcome,
                Outcome::RatesPlanned {
                    index: 2 + i as u64
                }
            );
        }
        // A late plan overlapping the last one is dropped; only the last four are kept.
        sm.apply(
            9,
            Command::PlanRates {
                plans: vec![(key.clone(), plan(9000))],
            },
        );
        let kept: Vec<u64> = sm.rate_plans[&key].iter().map(|p| p.t0_ms).collect();
        assert_eq!(kept, vec![2000, 4000, 6000, 8000]);
        sm.apply(
            10,
            Command::ActivateRates {
                plans: vec![(key.clone(), 6000)],
            },
        );
        let active: Vec<bool> = sm.rate_plans[&key].iter().map(|p| p.active).collect();
        assert_eq!(active, vec![false, false, true, false]);
        sm.apply(11, Command::DeleteKey { id: key.clone() });
        assert!(sm.rate_plans.is_empty());
    }

    #[test]
    fn a_proposal_sent_again_is_answered_with_its_first_outcome_and_applied_once() {
        let mut sm = StateMachineData::default();
        let create = Proposal::new(Command::CreateKey {
            key: budgeted("key_r", "sk-retried-1", 100),
        });
        let first = sm.apply_proposal(1, create.clone());
        assert!(matches!(first, Outcome::Key(_)), "{first:?}");
        // The writer heard nothing and sent it again: same answer, no 409.
        assert_eq!(sm.apply_proposal(2, create), first);
        // Another write of the same secret is a different proposal, and a conflict.
        let other = sm.apply_proposal(
            3,
            Proposal::new(Command::CreateKey {
                key: budgeted("key_s", "sk-retried-1", 100),
            }),
        );
        assert!(matches!(other, Outcome::Rejected(_)), "{other:?}");
        // Old ids are forgotten after enough newer proposals.
        for i in 0..RECENT_PROPOSALS as u64 + 1 {
            sm.apply_proposal(
                10 + i,
                Proposal::new(Command::DeleteKey {
                    id: KeyId::parse("key_none").unwrap(),
                }),
            );
        }
        assert_eq!(sm.recent.len(), RECENT_PROPOSALS);
        assert_eq!(sm.recent_order.len(), RECENT_PROPOSALS);
    }

    #[test]
    fn a_restarted_node_settles_its_leases_at_their_persisted_marks() {
        let mut sm = StateMachineData::default();
        sm.apply(
            1,
            Command::CreateKey {
                key: budgeted("key_q", "sk-quota-1", 100),
            },
        );
        for (index, lease) in [(2, 1), (3, 2)] {
            sm.apply(
                index,
                Command::GrantLease {
                    budget: calls("key_q", 7),
                    node: 2,
                    lease,
                    want: 30,
                    release: None,
                },
            );
        }
        // Lease 1 persisted a mark of 12 (it admitted at most that), lease 2 none, and a mark
        // above the slice counts as the slice.
        let outcome = sm.apply(
            4,
            Command::SettleLeasesOf {
                node: 2,
                marks: vec![(1, 12), (9, 5)],
            },
        );
        assert_eq!(outcome, Outcome::LeasesClosed { count: 2 });
        let state = &sm.budgets[&calls("key_q", 7)];
        assert_eq!(
            (state.available, state.closed_used, state.leased()),
            (58, 42, 0)
        );
    }

    #[test]
    fn a_refill_gives_the_old_lease_back_in_the_same_entry() {
        let mut sm = StateMachineData::default();
        sm.apply(
            1,
            Command::CreateKey {
                key: budgeted("key_q", "sk-quota-1", 10),
            },
        );
        let grant = |sm: &mut StateMachineData, lease, want, release| {
            granted(sm.apply(
                2,
                Command::GrantLease {
                    budget: calls("key_q", 7),
                    node: 1,
                    lease,
                    want,
                    release,
                },
            ))
        };
        assert_eq!(grant(&mut sm, 1, 10, None), 10);
        // Lease 1 used 3; its 7 unused units are returned before the new grant is cut.
        assert_eq!(grant(&mut sm, 2, 10, Some((calls("key_q", 7), 1, 3))), 7);
        let state = &sm.budgets[&calls("key_q", 7)];
        assert_eq!(
            (state.closed_used, state.leased(), state.available),
            (3, 7, 0)
        );
    }

    #[test]
    fn a_new_period_starts_afresh_and_a_raised_limit_adds_the_difference() {
        let mut sm = StateMachineData::default();
        sm.apply(
            1,
            Command::CreateKey {
                key: budgeted("key_q", "sk-quota-1", 10),
            },
        );
        let grant = |sm: &mut StateMachineData, period, lease| {
            granted(sm.apply(
                2,
                Command::GrantLease {
                    budget: calls("key_q", period),
                    node: 1,
                    lease,
                    want: 10,
                    release: None,
                },
            ))
        };
        assert_eq!(grant(&mut sm, 7, 1), 10);
        sm.apply(
            3,
            Command::CloseLease {
                budget: calls("key_q", 7),
                lease: 1,
                used: 10,
            },
        );
        assert_eq!(grant(&mut sm, 8, 2), 10);
        assert!(
            !sm.budgets.contains_key(&calls("key_q", 7)),
            "the spent old period is forgotten"
        );
        let id = KeyId::parse("key_q").unwrap();
        let mut limits = sm.keys[&id].limits.clone();
        limits.calls = Some(crate::model::Budget {
            limit: 15,
            period: crate::model::Period::Day,
        });
        sm.apply(
            5,
            Command::UpdateKey {
                id,
                patch: KeyPatch {
                    limits: Some(limits),
                    ..KeyPatch::default()
                },
            },
        );
        assert_eq!(grant(&mut sm, 8, 3), 5);
    }

    fn video(job: &str) -> crate::videos::VideoJob {
        crate::videos::VideoJob {
            upstream: "up".into(),
            job: job.into(),
        }
    }

    #[test]
    fn video_owners_are_recorded_for_existing_keys_and_go_with_the_job_or_the_key() {
        let mut sm = StateMachineData::default();
        sm.apply(
            1,
            Command::CreateKey {
                key: key("key_a", "secret-a"),
            },
        );
        let a = KeyId::parse("key_a").unwrap();
        let gone = KeyId::parse("key_gone").unwrap();
        let record = |key: &KeyId, job: &str| Command::RecordVideo {
            key: key.clone(),
            job: video(job),
            at: 100,
        };
        assert_eq!(sm.apply(2, record(&a, "v1")), Outcome::Nothing);
        sm.apply(3, record(&a, "v2"));
        sm.apply(4, record(&gone, "v3"));
        assert!(sm.videos.owns(&a, "up", "v1"));
        assert!(!sm.videos.owns(&gone, "up", "v3"), "no such key");

        sm.apply(
            5,
            Command::ForgetVideo {
                key: a.clone(),
                job: video("v1"),
            },
        );
        assert!(!sm.videos.owns(&a, "up", "v1"));
        assert!(sm.videos.owns(&a, "up", "v2"));
        sm.apply(6, Command::DeleteKey { id: a.clone() });
        assert!(sm.videos.is_empty());
    }

    #[test]
    fn state_round_trips_through_bincode() {
        let mut sm = StateMachineData::default();
        sm.apply(
            1,
            Command::CreateKey {
                key: key("key_a", "secret-a"),
            },
        );
        sm.apply(
            2,
            Command::RecordVideo {
                key: KeyId::parse("key_a").unwrap(),
                job: video("v1"),
                at: 100,
            },
        );
        let bytes = bincode::serde::encode_to_vec(&sm, bincode::config::standard()).unwrap();
        let (back, _): (StateMachineData, _) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, sm);
    }
}
