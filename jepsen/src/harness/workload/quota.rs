//! The quota workload: keys with limits, spent through `POST /v1/chat/completions` on every
//! node at once, checked by [`crate::harness::checker::quota`].
//!
//! Before the load (no fault yet) it creates its keys through the admin API, each with a
//! secret of its own choosing, allowed only the model `quota-model`, whose one upstream is
//! `mock-q`, a mock no nemesis touches:
//!
//! - `exact`: a calls budget of 1,000 (`total`), spent to the end right away, with no fault,
//!   by every client on every node: exactly 1,000 must be admitted.
//! - per generation (20 s of load each, one after the other): a calls budget, and a tokens
//!   budget with an output tokens budget, spent under the nemeses;
//! - for the whole load: an RPM limit and a TPM limit spent through every node, and an RPM
//!   limit (`skew`) spent through the first node only, so the leader's demand-weighted shares
//!   move most of it there while the nemeses run.
//!
//! Every request names its key in `user`, so `mock-q` counts what reached it per key. Each
//! request asks for `max_tokens` = the mock's answer length, so the reservation covers the
//! usage and there is no overage; the TPM check allows only the in-flight refunds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use tokio::time::Instant;

use crate::harness::checker::quota::{KeySpec, LedgerView, Role};
use crate::harness::context::Ctx;
use crate::harness::history::{History, Op, OpKind, Outcome, Side, Usage};
use crate::harness::http::{CallError, HttpClient};
use crate::harness::procs::{Layout, QUOTA_MOCK, QUOTA_MODEL};
use crate::mock::UserStats;

/// The exact key's calls budget.
pub const EXACT_CALLS: u64 = 1_000;
/// How long the fault-free exact phase may take.
const EXACT_TIMEOUT: Duration = Duration::from_secs(40);
/// A client of the exact phase stops after this many budget refusals in a row.
const EXACT_REFUSALS: u32 = 3;
/// Each generation's budgets are spent for this long.
const GENERATION: Duration = Duration::from_secs(20);
const CALLS_PER_GENERATION: u64 = 1_200;
const TOKENS_PER_GENERATION: u64 = 5_000;
const OUTPUT_TOKENS_PER_GENERATION: u64 = 4_000;
/// R·(1 + β) = 420 requests per 60 s window.
const RPM: u64 = 360;
/// R·(1 + β) = 4,200 tokens per 60 s window, plus the in-flight allowance.
const TPM: u64 = 3_600;
/// The prompt: the mock counts it as max(1, bytes / 4) = 1 token.
const CONTENT: &str = "quota";
/// The mock answers with 4 completion tokens (`--chunks 4`); asking for exactly that keeps the
/// reservation ≥ the usage.
const MAX_TOKENS: u64 = 4;
/// An upper bound of one request's token reservation: the gateway's input estimate (4 per
/// message plus at most one token per byte of content) plus `max_tokens`, with a margin.
pub const MAX_RESERVATION: u64 = CONTENT.len() as u64 + 8 + MAX_TOKENS;
/// Longer than the cluster's write_timeout (2 s), so a 503 comes back before we give up.
const TIMEOUT: Duration = Duration::from_secs(6);
const THINK: Duration = Duration::from_millis(5);
/// The rate key spent through the first node only.
const SKEW_SUFFIX: &str = "-skew";
/// Process numbers of the exact phase's clients.
const EXACT_PROCESS_BASE: u32 = 50_000;

/// One key of the workload.
#[derive(Debug, Clone)]
pub struct QuotaKey {
    pub spec: KeySpec,
    pub secret: String,
    pub id: String,
    /// Budget keys: the generation in which they are spent.
    pub generation: Option<u32>,
}

/// The workload's keys, and when the load started (generations count from there).
pub struct QuotaState {
    pub keys: Vec<QuotaKey>,
    generations: u32,
    load_start: std::sync::OnceLock<Instant>,
}

impl QuotaState {
    pub fn specs(&self) -> Vec<KeySpec> {
        self.keys.iter().map(|k| k.spec.clone()).collect()
    }

    pub fn set_load_start(&self, at: Instant) {
        let _ = self.load_start.set(at);
    }

    /// The keys spent now through `node`: this generation's budgets and the rate keys (the
    /// skewed one only through the first node).
    fn active(&self, now: Instant, node: usize) -> Vec<&QuotaKey> {
        let elapsed = self
            .load_start
            .get()
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(*s));
        let generation = ((elapsed.as_millis() / GENERATION.as_millis()) as u32)
            .min(self.generations.saturating_sub(1));
        self.keys
            .iter()
            .filter(|k| match k.spec.role {
                Role::Exact => false,
                Role::Rate => node == 0 || !k.spec.name.ends_with(SKEW_SUFFIX),
                Role::Budget => k.generation == Some(generation),
            })
            .collect()
    }
}

/// The keys for a load of `time_limit`, with the limits sent to the admin API.
pub fn plan(seed: u64, time_limit: Duration) -> Vec<(KeySpec, Option<u32>)> {
    let generations = (time_limit.as_millis() / GENERATION.as_millis()).max(1) as u32;
    let spec = |name: String, role| KeySpec {
        name,
        role,
        calls: None,
        tokens: None,
        output_tokens: None,
        rpm: None,
        tpm: None,
    };
    let mut keys = vec![(
        KeySpec {
            calls: Some(EXACT_CALLS),
            ..spec(format!("quota-{seed}-exact"), Role::Exact)
        },
        None,
    )];
    for g in 0..generations {
        keys.push((
            KeySpec {
                calls: Some(CALLS_PER_GENERATION),
                ..spec(format!("quota-{seed}-calls-{g}"), Role::Budget)
            },
            Some(g),
        ));
        keys.push((
            KeySpec {
                tokens: Some(TOKENS_PER_GENERATION),
                output_tokens: Some(OUTPUT_TOKENS_PER_GENERATION),
                ..spec(format!("quota-{seed}-tokens-{g}"), Role::Budget)
            },
            Some(g),
        ));
    }
    keys.push((
        KeySpec {
            rpm: Some(RPM),
            ..spec(format!("quota-{seed}-rpm"), Role::Rate)
        },
        None,
    ));
    keys.push((
        KeySpec {
            tpm: Some(TPM),
            ..spec(format!("quota-{seed}-tpm"), Role::Rate)
        },
        None,
    ));
    keys.push((
        KeySpec {
            rpm: Some(RPM),
            ..spec(format!("quota-{seed}{SKEW_SUFFIX}"), Role::Rate)
        },
        None,
    ));
    keys
}

fn limits_json(spec: &KeySpec) -> serde_json::Value {
    let mut limits = serde_json::Map::new();
    let total = |limit: u64| json!({"limit": limit, "period": "total"});
    if let Some(c) = spec.calls {
        limits.insert("calls".into(), total(c));
    }
    if let Some(t) = spec.tokens {
        limits.insert("tokens".into(), total(t));
    }
    if let Some(t) = spec.output_tokens {
        limits.insert("output_tokens".into(), total(t));
    }
    if let Some(r) = spec.rpm {
        limits.insert("rpm".into(), json!(r));
    }
    if let Some(t) = spec.tpm {
        limits.insert("tpm".into(), json!(t));
    }
    serde_json::Value::Object(limits)
}

/// Creates the workload's keys (before any fault), round robin over the nodes, each retried.
pub async fn setup(
    http: &HttpClient,
    layout: &Layout,
    seed: u64,
    time_limit: Duration,
) -> anyhow::Result<QuotaState> {
    let planned = plan(seed, time_limit);
    let generations = planned.iter().filter_map(|(_, g)| *g).max().unwrap_or(0) + 1;
    let mut keys = Vec::new();
    for (i, (spec, generation)) in planned.into_iter().enumerate() {
        let secret = format!("sk-{}", spec.name);
        let body = json!({
            "name": spec.name,
            "secret": secret,
            "models": [QUOTA_MODEL],
            "limits": limits_json(&spec),
        });
        let mut last = String::new();
        let mut id = None;
        // Bounded: 20 attempts. The cluster has just formed; a 503 is a leader settling.
        for attempt in 0..20 {
            let node = (i + attempt) % layout.nodes;
            let url = format!("{}/admin/v1/keys", layout.admin_url(node));
            match http
                .admin(Method::POST, &url, Some(body.clone()), TIMEOUT)
                .await
            {
                Ok(reply) if reply.status == StatusCode::CREATED => {
                    id = reply
                        .json()
                        .and_then(|j| j.get("id")?.as_str().map(str::to_owned));
                    break;
                }
                Ok(reply) => {
                    last = format!("{} {}", reply.status, String::from_utf8_lossy(&reply.body));
                    if reply.status.is_client_error() {
                        break;
                    }
                }
                Err(e) => last = e.label(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let Some(id) = id else {
            anyhow::bail!("creating quota key {}: {last}", spec.name);
        };
        keys.push(QuotaKey {
            spec,
            secret,
            id,
            generation,
        });
    }
    Ok(QuotaState {
        keys,
        generations,
        load_start: std::sync::OnceLock::new(),
    })
}

/// One spend of `key` through `node`'s API, recorded as a [`OpKind::Spend`] operation.
async fn spend(
    http: &HttpClient,
    layout: &Layout,
    history: &History,
    process: u32,
    node: usize,
    side: Side,
    key: &QuotaKey,
) -> Op {
    let url = format!("{}/v1/chat/completions", layout.api_url(node));
    let body = json!({
        "model": QUOTA_MODEL,
        "messages": [{"role": "user", "content": CONTENT}],
        "max_tokens": MAX_TOKENS,
        "user": key.spec.name,
    });
    let mut op = Op {
        index: 0,
        process,
        node,
        f: OpKind::Spend,
        key: None,
        name: Some(key.spec.name.clone()),
        value: None,
        found: None,
        invoke_us: history.now_us(),
        complete_us: 0,
        outcome: Outcome::Info,
        side,
        status: None,
        error: None,
        upstream: None,
        attempts: None,
        usage: None,
    };
    let result = http
        .call(Method::POST, &url, &key.secret, Some(body), TIMEOUT)
        .await;
    op.complete_us = history.now_us();
    match result {
        Ok(reply) => {
            let status = reply.status;
            op.status = Some(status.as_u16());
            op.upstream = reply.header("x-aigw-upstream").map(str::to_owned);
            op.attempts = reply.header("x-aigw-attempts").and_then(|a| a.parse().ok());
            if status.is_success() {
                op.outcome = Outcome::Ok;
                op.usage = reply.json().and_then(|j| {
                    Some(Usage {
                        prompt: j.pointer("/usage/prompt_tokens")?.as_u64()?,
                        completion: j.pointer("/usage/completion_tokens")?.as_u64()?,
                    })
                });
                if op.usage.is_none() {
                    // Admitted all the same: the checker counts it as a call with 0 tokens,
                    // and the mock's count has its tokens.
                    op.error = Some("2xx without usage".into());
                }
            } else {
                let code = reply.error_code().unwrap_or_default();
                op.error = Some(format!("http-{}:{code}", status.as_u16()));
                // A 4xx, or 503 quota_unavailable (asked for a lease and got none), is a
                // refusal before admission. Another 5xx may come after admission (an
                // upstream error keeps the call counted): it may have been admitted.
                op.outcome = if status.is_client_error()
                    || (status == StatusCode::SERVICE_UNAVAILABLE && code == "quota_unavailable")
                {
                    Outcome::Fail
                } else {
                    Outcome::Info
                };
            }
        }
        Err(e) => {
            op.outcome = if e == CallError::Refused {
                Outcome::Fail
            } else {
                Outcome::Info
            };
            op.error = Some(e.label());
        }
    }
    op
}

/// The fault-free phase: `clients_per_node` clients on every node spend the exact key until
/// their node refuses it for its budget (`EXACT_REFUSALS` times in a row), or the phase times
/// out. Returns how long it took.
pub async fn exact_phase(
    http: &HttpClient,
    layout: &Layout,
    history: &History,
    state: &QuotaState,
    clients_per_node: u32,
) -> Duration {
    let started = Instant::now();
    let Some(key) = state.keys.iter().find(|k| k.spec.role == Role::Exact) else {
        return Duration::ZERO;
    };
    let deadline = started + EXACT_TIMEOUT;
    let mut clients = Vec::new();
    for node in 0..layout.nodes {
        for c in 0..clients_per_node {
            let process = EXACT_PROCESS_BASE + (node as u32) * clients_per_node + c;
            let (http, layout, history, key) =
                (http.clone(), layout.clone(), history.clone(), key.clone());
            clients.push(tokio::spawn(async move {
                let mut refusals = 0;
                // Bounded by the deadline and the refusals; each request by TIMEOUT.
                while Instant::now() < deadline && refusals < EXACT_REFUSALS {
                    let op = spend(&http, &layout, &history, process, node, Side::None, &key).await;
                    if op.error.as_deref() == Some("http-429:insufficient_quota") {
                        refusals += 1;
                    } else {
                        refusals = 0;
                    }
                    history.record(op);
                }
            }));
        }
    }
    for client in clients {
        let _ = client.await;
    }
    started.elapsed()
}

/// One client bound to `node`, until the load deadline: round robin over the active keys.
pub async fn client(ctx: Ctx, state: Arc<QuotaState>, process: u32, node: usize) {
    let mut turn = process as usize;
    while Instant::now() < ctx.load_deadline {
        let active = state.active(Instant::now(), node);
        if active.is_empty() {
            return;
        }
        let key = active[turn % active.len()];
        turn += 1;
        let side = ctx.side(node);
        let op = spend(
            &ctx.http,
            &ctx.layout,
            &ctx.history,
            process,
            node,
            side,
            key,
        )
        .await;
        let refused = op.error.as_deref() == Some("refused");
        ctx.history.record(op);
        tokio::time::sleep(if refused { THINK * 20 } else { THINK }).await;
    }
}

/// After the heal: what `mock-q` saw per key, and each key's ledger as the cluster shows it.
pub async fn collect(
    ctx: &Ctx,
    state: &QuotaState,
) -> (
    Option<BTreeMap<String, UserStats>>,
    BTreeMap<String, BTreeMap<String, LedgerView>>,
) {
    let mut mock = None;
    let url = format!("http://{}/mock/stats", ctx.layout.mock_addr(QUOTA_MOCK));
    for _ in 0..10 {
        if let Ok(reply) = ctx
            .http
            .call(Method::GET, &url, "", None, Duration::from_secs(2))
            .await
            && reply.status.is_success()
            && let Some(stats) = reply
                .json()
                .and_then(|j| serde_json::from_value::<crate::mock::MockStats>(j).ok())
        {
            mock = Some(stats.by_user);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut ledger = BTreeMap::new();
    for key in state.keys.iter().filter(|k| k.spec.role != Role::Rate) {
        // Bounded: 10 rounds over the nodes.
        'rounds: for _ in 0..10 {
            for node in 0..ctx.layout.nodes {
                let url = format!("{}/admin/v1/keys/{}", ctx.layout.admin_url(node), key.id);
                let Ok(reply) = ctx.http.admin(Method::GET, &url, None, TIMEOUT).await else {
                    continue;
                };
                let Some(usage) = reply
                    .json()
                    .filter(|_| reply.status.is_success())
                    .and_then(|j| j.get("usage")?.as_object().cloned())
                else {
                    continue;
                };
                let views: BTreeMap<String, LedgerView> = usage
                    .into_iter()
                    .filter_map(|(dimension, v)| {
                        Some((dimension, serde_json::from_value::<LedgerView>(v).ok()?))
                    })
                    .collect();
                ledger.insert(key.spec.name.clone(), views);
                break 'rounds;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    (mock, ledger)
}
