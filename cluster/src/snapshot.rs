//! The published, immutable view of the replicated state that the request path reads, and
//! the publisher the state machine calls after every applied batch.

use std::sync::Arc;

use aigw_config::{Bootstrap, ModelSettings, UpstreamSettings};
use arc_swap::ArcSwap;

use crate::command::{BudgetKey, Command};
use crate::keys::KeyTable;
use crate::model::{AllowedModels, Budget, KeyId, KeyLimits, KeyRecord, KeySecretHash, Period};
use crate::settings::{EnvLookup, parse_settings};
use crate::state_machine::BudgetState;
use crate::state_machine::StateMachineData;

/// One consistent version of the cluster state.
#[derive(Debug, Clone, Default)]
pub struct StateSnapshot {
    /// The Raft log index this state includes; grows with every applied change.
    pub version: u64,
    pub keys: KeyTable,
    pub upstreams: Vec<UpstreamSettings>,
    pub models: Vec<ModelSettings>,
    /// MCP servers, agent backends and sandboxes.
    pub backends: Arc<aigw_config::Backends>,
    /// Revision of the settings document the typed settings above come from.
    pub settings_revision: u64,
    /// The settings document as stored (with `${ENV}` references).
    pub settings_toml: Arc<str>,
    /// Why this node could not use the current settings document (it keeps the last good
    /// one), e.g. an `${ENV}` it lacks.
    pub settings_error: Option<String>,
    /// Whether the cluster has applied a `[bootstrap]` yet.
    pub bootstrapped: bool,
    /// The period budgets' ledger (shared structure with the state machine: cheap to copy).
    pub budgets: imbl::OrdMap<BudgetKey, BudgetState>,
    /// Voting members: rate limits are split among them.
    pub voters: usize,
    pub voter_ids: Vec<crate::NodeId>,
    /// Each key's latest rate plans (docs/QUOTAS.md, "Rates").
    pub rate_plans: imbl::OrdMap<crate::KeyId, imbl::Vector<crate::RatePlan>>,
    /// The key that created each listed video job (shared structure: cheap to copy).
    pub videos: crate::VideoOwners,
}

impl StateSnapshot {
    /// The state a config's `[bootstrap]` gives, without a cluster: for tools and tests.
    pub fn from_bootstrap(bootstrap: &Bootstrap) -> Self {
        let mut data = StateMachineData::default();
        data.apply(1, bootstrap_command(bootstrap, String::new(), 0));
        Self {
            version: 1,
            keys: KeyTable::new(data.keys, data.by_hash),
            upstreams: bootstrap.upstreams.clone(),
            models: bootstrap.models.clone(),
            backends: Arc::new(bootstrap.backends.clone()),
            settings_revision: 1,
            settings_toml: Arc::from(""),
            settings_error: None,
            bootstrapped: true,
            budgets: Default::default(),
            voters: 1,
            voter_ids: Vec::new(),
            rate_plans: Default::default(),
            videos: Default::default(),
        }
    }
}

/// The `Bootstrap` command for a config's `[bootstrap]`: keys hashed, the settings document
/// as written in the file.
pub fn bootstrap_command(bootstrap: &Bootstrap, settings_toml: String, now: u64) -> Command {
    let keys = bootstrap
        .keys
        .iter()
        .map(|k| {
            let secret_hash = KeySecretHash::of_secret(k.secret.expose());
            KeyRecord {
                id: KeyId::for_bootstrap(&secret_hash),
                name: k.name.clone(),
                secret_hash,
                models: AllowedModels::from(&k.models),
                enabled: true,
                expires_at: None,
                metadata: Default::default(),
                created_at: now,
                revision: 0,
                limits: key_limits(&k.limits),
                mcp_servers: k.mcp_servers.clone(),
                records: k.records,
            }
        })
        .collect();
    Command::Bootstrap {
        keys,
        settings_toml,
    }
}

/// A bootstrap key's limits as the cluster stores them.
fn key_limits(limits: &aigw_config::KeyLimitSettings) -> KeyLimits {
    let budget = |b: &Option<aigw_config::BudgetSettings>| {
        b.map(|b| Budget {
            limit: b.limit,
            period: match b.period {
                aigw_config::LimitPeriod::Minute => Period::Minute,
                aigw_config::LimitPeriod::Hour => Period::Hour,
                aigw_config::LimitPeriod::Day => Period::Day,
                aigw_config::LimitPeriod::Month => Period::Month,
                aigw_config::LimitPeriod::Total => Period::Total,
            },
        })
    };
    KeyLimits {
        rpm: limits.rpm,
        tpm: limits.tpm,
        max_concurrent: limits.max_concurrent,
        calls: budget(&limits.calls),
        tokens: budget(&limits.tokens),
        input_tokens: budget(&limits.input_tokens),
        output_tokens: budget(&limits.output_tokens),
        rpm_burst: limits.rpm_burst,
        tpm_burst: limits.tpm_burst,
    }
}

/// The handle through which state is published and read. Cloning shares it.
#[derive(Debug, Clone)]
pub struct ClusterState {
    current: Arc<ArcSwap<StateSnapshot>>,
    /// The version of the last published snapshot, for those who react to changes (route
    /// rebuilds); the request path never waits on it.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl ClusterState {
    pub fn new(initial: StateSnapshot) -> Self {
        let (changes, _) = tokio::sync::watch::channel(initial.version);
        Self {
            current: Arc::new(ArcSwap::from_pointee(initial)),
            changes: Arc::new(changes),
        }
    }

    /// The current snapshot; lock-free, never waits.
    pub fn load(&self) -> Arc<StateSnapshot> {
        self.current.load_full()
    }

    /// Notified after every publish.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn store(&self, next: StateSnapshot) {
        let version = next.version;
        self.current.store(Arc::new(next));
        self.changes.send_replace(version);
    }
}

/// Turns applied state into snapshots. Settings are parsed only when their revision changes.
pub(crate) struct Publisher {
    state: ClusterState,
    env: EnvLookup,
}

impl Publisher {
    pub fn new(state: ClusterState, env: EnvLookup) -> Self {
        Self { state, env }
    }

    pub fn publish(&self, data: &StateMachineData) {
        let previous = self.state.load();
        let mut next = StateSnapshot {
            version: data.last_applied.map_or(0, |id| id.index),
            keys: KeyTable::new(data.keys.clone(), data.by_hash.clone()),
            upstreams: previous.upstreams.clone(),
            models: previous.models.clone(),
            backends: previous.backends.clone(),
            settings_revision: previous.settings_revision,
            settings_toml: previous.settings_toml.clone(),
            settings_error: previous.settings_error.clone(),
            bootstrapped: data.bootstrapped,
            budgets: data.budgets.clone(),
            voters: data.last_membership.membership().voter_ids().count().max(1),
            voter_ids: data.last_membership.membership().voter_ids().collect(),
            rate_plans: data.rate_plans.clone(),
            videos: data.videos.clone(),
        };
        if data.settings.revision != previous.settings_revision || previous.version == 0 {
            next.settings_revision = data.settings.revision;
            next.settings_toml = Arc::from(data.settings.toml.as_str());
            match parse_settings(&data.settings.toml, &*self.env) {
                Ok(settings) => {
                    next.upstreams = settings.upstreams;
                    next.models = settings.models;
                    next.backends = Arc::new(settings.backends);
                    next.settings_error = None;
                }
                Err(error) => {
                    tracing::error!(revision = data.settings.revision, %error,
                        "cannot use the cluster settings on this node; keeping the previous ones");
                    next.settings_error = Some(error);
                }
            }
        }
        self.state.store(next);
    }
}
