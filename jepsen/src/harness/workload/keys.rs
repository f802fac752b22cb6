//! The keys workload: clients on every node create keys, write their `metadata.v` (a register
//! value, unique per write), read them (linearizable GET) and delete them, through the admin
//! API of the node they are bound to. Keys are short-lived (a bounded number of operations
//! each) so each key's history stays small enough for an exhaustive linearizability check.
//!
//! After the faults are healed, [`final_reads`] reads every key the run knows on every node,
//! and lists all keys to find those whose create was indeterminate (by name).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use tokio::time::Instant;

use crate::harness::context::Ctx;
use crate::harness::history::{Op, OpKind, Outcome};
use crate::harness::http::{CallError, Reply};
use crate::harness::rng::SeededRng;

/// The final reads' process number in the history.
pub const FINAL_PROCESS: u32 = u32::MAX;
/// Operations on one key before it is retired.
const OPS_PER_KEY: u32 = 40;
/// Keys in play at once.
const ACTIVE_KEYS: usize = 6;
/// Longer than the cluster's write_timeout (2 s), so a 503 comes back before we give up.
const OP_TIMEOUT: Duration = Duration::from_secs(4);
const THINK: Duration = Duration::from_millis(10);

struct ActiveKey {
    id: String,
    ops_left: u32,
}

#[derive(Default)]
pub struct KeysState {
    active: Mutex<Vec<ActiveKey>>,
    /// Every key id a create returned.
    known: Mutex<Vec<String>>,
    next_value: AtomicU64,
    next_name: AtomicU64,
}

/// One client bound to `node`, until the load deadline.
pub async fn client(ctx: Ctx, state: std::sync::Arc<KeysState>, process: u32, node: usize) {
    let mut rng = SeededRng::derive(ctx.seed, 1000 + u64::from(process));
    // Bounded by the deadline; each operation by OP_TIMEOUT.
    while Instant::now() < ctx.load_deadline {
        let pick = {
            let mut active = state.active.lock().expect("keys lock");
            if active.len() < ACTIVE_KEYS || rng.chance(0.02) {
                None
            } else {
                let i = rng.below(active.len() as u64) as usize;
                let key = &mut active[i];
                key.ops_left -= 1;
                let id = key.id.clone();
                if key.ops_left == 0 {
                    active.swap_remove(i);
                }
                Some(id)
            }
        };
        let op = match pick {
            None => create(&ctx, &state, process, node).await,
            Some(id) => {
                let roll = rng.below(100);
                let f = if roll < 45 {
                    OpKind::Write
                } else if roll < 95 {
                    OpKind::Read
                } else {
                    OpKind::Delete
                };
                let op = key_op(&ctx, &state, process, node, f, &id).await;
                if f == OpKind::Delete && op.outcome == Outcome::Ok {
                    state
                        .active
                        .lock()
                        .expect("keys lock")
                        .retain(|k| k.id != id);
                }
                op
            }
        };
        // A dead node refuses at once: back off rather than fill the history with refusals.
        let refused = op.error.as_deref() == Some("refused");
        ctx.history.record(op);
        tokio::time::sleep(if refused { THINK * 10 } else { THINK }).await;
    }
}

/// The outcome of an answer that is not a success: 404 is handled by the caller; other 4xx
/// mean it was refused (fail); 5xx, timeouts and broken connections may have applied (info);
/// a refused connection sent nothing (fail).
fn settle(op: &mut Op, ctx: &Ctx, result: &Result<Reply, CallError>) {
    op.complete_us = ctx.history.now_us();
    match result {
        Ok(reply) => {
            op.status = Some(reply.status.as_u16());
            op.error = Some(format!(
                "http-{}:{}",
                reply.status.as_u16(),
                reply.error_code().unwrap_or_default()
            ));
            op.outcome = if reply.status.is_client_error() {
                Outcome::Fail
            } else {
                Outcome::Info
            };
        }
        Err(CallError::Refused) => {
            op.error = Some("refused".into());
            op.outcome = Outcome::Fail;
        }
        Err(e) => {
            op.error = Some(e.label());
            op.outcome = Outcome::Info;
        }
    }
}

fn value_of(reply: &Reply) -> Option<u64> {
    reply.json()?.pointer("/metadata/v")?.as_str()?.parse().ok()
}

async fn create(ctx: &Ctx, state: &KeysState, process: u32, node: usize) -> Op {
    let mut op = super::invoked(ctx, process, node, OpKind::Create);
    let value = state.next_value.fetch_add(1, Ordering::Relaxed) + 1;
    let name = format!(
        "jepsen-{}-{}",
        ctx.seed,
        state.next_name.fetch_add(1, Ordering::Relaxed)
    );
    op.value = Some(value);
    op.name = Some(name.clone());
    let url = format!("{}/admin/v1/keys", ctx.layout.admin_url(node));
    let body = json!({"name": name, "metadata": {"v": value.to_string()}});
    let result = ctx
        .http
        .admin(Method::POST, &url, Some(body), OP_TIMEOUT)
        .await;
    match &result {
        Ok(reply) if reply.status == StatusCode::CREATED => {
            op.complete_us = ctx.history.now_us();
            op.status = Some(201);
            let id = reply
                .json()
                .and_then(|j| j.get("id")?.as_str().map(str::to_owned));
            match id {
                Some(id) => {
                    op.outcome = Outcome::Ok;
                    op.key = Some(id.clone());
                    state.known.lock().expect("keys lock").push(id.clone());
                    state.active.lock().expect("keys lock").push(ActiveKey {
                        id,
                        ops_left: OPS_PER_KEY,
                    });
                }
                None => {
                    op.outcome = Outcome::Info;
                    op.error = Some("201 without an id".into());
                }
            }
        }
        _ => settle(&mut op, ctx, &result),
    }
    op
}

async fn key_op(
    ctx: &Ctx,
    state: &KeysState,
    process: u32,
    node: usize,
    f: OpKind,
    id: &str,
) -> Op {
    let mut op = super::invoked(ctx, process, node, f);
    op.key = Some(id.to_owned());
    let url = format!("{}/admin/v1/keys/{id}", ctx.layout.admin_url(node));
    let (method, body) = match f {
        OpKind::Write => {
            let value = state.next_value.fetch_add(1, Ordering::Relaxed) + 1;
            op.value = Some(value);
            (
                Method::PATCH,
                Some(json!({"metadata": {"v": value.to_string()}})),
            )
        }
        OpKind::Read => (Method::GET, None),
        _ => (Method::DELETE, None),
    };
    let result = ctx.http.admin(method, &url, body, OP_TIMEOUT).await;
    match &result {
        Ok(reply) if reply.status == StatusCode::OK || reply.status == StatusCode::NOT_FOUND => {
            op.complete_us = ctx.history.now_us();
            op.status = Some(reply.status.as_u16());
            op.outcome = Outcome::Ok;
            let found = reply.status == StatusCode::OK;
            op.found = Some(found);
            if f == OpKind::Read && found {
                op.value = value_of(reply);
                if op.value.is_none() {
                    op.outcome = Outcome::Info;
                    op.error = Some("200 without metadata.v".into());
                }
            }
        }
        _ => settle(&mut op, ctx, &result),
    }
    op
}

/// After the heal: lists every key (to find indeterminate creates by name, and refused creates
/// that exist anyway), then reads every key on every node. Returns the names of creates that
/// were refused yet exist.
pub async fn final_reads(ctx: &Ctx, state: &KeysState) -> anyhow::Result<Vec<String>> {
    let listed = list_all(ctx).await?;
    let mut ops = ctx.history.snapshot();
    let mut refused_applied = Vec::new();
    let mut ids: Vec<String> = state.known.lock().expect("keys lock").clone();
    for op in ops
        .iter_mut()
        .filter(|o| o.f == OpKind::Create && o.key.is_none())
    {
        let Some(id) = op.name.as_ref().and_then(|n| listed.get(n)) else {
            continue;
        };
        match op.outcome {
            Outcome::Info => {
                op.key = Some(id.clone());
                ids.push(id.clone());
            }
            Outcome::Fail => {
                refused_applied.push(format!(
                    "{} (history #{}, {}) exists as {id}",
                    op.name.as_deref().unwrap_or_default(),
                    op.index,
                    op.error.as_deref().unwrap_or_default()
                ));
                op.key = Some(id.clone());
                ids.push(id.clone());
            }
            Outcome::Ok => {}
        }
    }
    ctx.history.replace(ops);
    for id in &ids {
        for node in 0..ctx.layout.nodes {
            let mut last = None;
            // Bounded retries: the cluster was healed, a 503 now is a leader settling.
            for _ in 0..20 {
                let mut op = key_op(ctx, state, FINAL_PROCESS, node, OpKind::Read, id).await;
                op.side = crate::harness::history::Side::None;
                if op.outcome == Outcome::Ok {
                    last = Some(op);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            match last {
                Some(op) => ctx.history.record(op),
                None => anyhow::bail!("node {} never answered the final read of {id}", node + 1),
            }
        }
    }
    Ok(refused_applied)
}

/// Every key's name -> id, paging through `GET /admin/v1/keys` on whichever node answers.
async fn list_all(ctx: &Ctx) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let mut names = std::collections::HashMap::new();
    let mut after: Option<String> = None;
    // Bounded: at most 1000 pages of 1000 keys.
    for _ in 0..1000 {
        let query = after
            .as_ref()
            .map(|a| format!("&after={a}"))
            .unwrap_or_default();
        let mut page = None;
        'nodes: for _ in 0..10 {
            for node in 0..ctx.layout.nodes {
                let url = format!(
                    "{}/admin/v1/keys?limit=1000{query}",
                    ctx.layout.admin_url(node)
                );
                if let Ok(reply) = ctx.http.admin(Method::GET, &url, None, OP_TIMEOUT).await
                    && reply.status == StatusCode::OK
                    && let Some(json) = reply.json()
                {
                    page = Some(json);
                    break 'nodes;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let Some(page) = page else {
            anyhow::bail!("no node answered GET /admin/v1/keys after the heal");
        };
        for key in page["data"].as_array().into_iter().flatten() {
            if let (Some(name), Some(id)) = (key["name"].as_str(), key["id"].as_str()) {
                names.insert(name.to_owned(), id.to_owned());
            }
        }
        if page["has_more"].as_bool() != Some(true) {
            return Ok(names);
        }
        after = page["last_id"].as_str().map(str::to_owned);
    }
    anyhow::bail!("more than a million keys listed")
}
