//! The failover workload: clients on every node send chat completions (non-streaming) while
//! the nemesis kills upstreams, makes them fail or slow, and disturbs the nodes. Each request
//! is recorded with its status, the upstream of its last attempt and the attempts it took;
//! a monitor polls every node's `GET /admin/v1/upstreams` to time how long a killed
//! upstream takes to stop being routed to (isolation).

use std::time::Duration;

use http::Method;
use serde_json::json;
use tokio::time::Instant;

use crate::harness::context::Ctx;
use crate::harness::history::{OpKind, Outcome};
use crate::harness::http::CallError;
use crate::harness::procs::CHAT_SECRET;

const TIMEOUT: Duration = Duration::from_secs(6);
const THINK: Duration = Duration::from_millis(20);
const POLL: Duration = Duration::from_millis(100);

pub async fn client(ctx: Ctx, process: u32, node: usize) {
    let url = format!("{}/v1/chat/completions", ctx.layout.api_url(node));
    let body =
        json!({"model": "chat-default", "messages": [{"role": "user", "content": "jepsen"}]});
    // Bounded by the deadline; each request by TIMEOUT.
    while Instant::now() < ctx.load_deadline {
        let mut op = super::invoked(&ctx, process, node, OpKind::Chat);
        let result = ctx
            .http
            .call(Method::POST, &url, CHAT_SECRET, Some(body.clone()), TIMEOUT)
            .await;
        op.complete_us = ctx.history.now_us();
        match result {
            Ok(reply) => {
                op.status = Some(reply.status.as_u16());
                op.upstream = reply.header("x-aigw-upstream").map(str::to_owned);
                op.attempts = reply.header("x-aigw-attempts").and_then(|a| a.parse().ok());
                if reply.status.is_success() {
                    op.outcome = Outcome::Ok;
                } else {
                    op.outcome = Outcome::Fail;
                    op.error = Some(format!(
                        "http-{}:{}",
                        reply.status.as_u16(),
                        reply.error_code().unwrap_or_default()
                    ));
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
        // A dead node refuses at once: back off rather than fill the history with refusals.
        let refused = op.error.as_deref() == Some("refused");
        ctx.history.record(op);
        tokio::time::sleep(if refused { THINK * 10 } else { THINK }).await;
    }
}

/// Until the deadline: for every killed upstream not yet back, asks each node whether it still
/// routes to it, and notes when it first stops.
pub async fn isolation_monitor(ctx: Ctx) {
    while Instant::now() < ctx.load_deadline {
        let pending: Vec<(usize, String, Vec<usize>)> = ctx
            .deaths
            .lock()
            .expect("deaths lock")
            .iter()
            .enumerate()
            .filter(|(_, d)| d.restarted_at_ms.is_none())
            .map(|(i, d)| {
                let nodes = (0..ctx.layout.nodes)
                    .filter(|&n| d.isolated_after_ms[n].is_none())
                    .collect();
                (i, d.upstream.clone(), nodes)
            })
            .collect();
        for (death, upstream, nodes) in pending {
            for n in nodes {
                let url = format!("{}/admin/v1/upstreams", ctx.layout.admin_url(n));
                let Ok(reply) = ctx
                    .http
                    .admin(Method::GET, &url, None, Duration::from_millis(300))
                    .await
                else {
                    continue;
                };
                let routing = reply.json().and_then(|j| {
                    j["upstreams"]
                        .as_array()?
                        .iter()
                        .find(|u| u["id"] == upstream.as_str())
                        .and_then(|u| u["routing"].as_str().map(str::to_owned))
                });
                if routing.is_some_and(|r| r != "open") {
                    let now_ms = ctx.history.now_us() / 1000;
                    let mut deaths = ctx.deaths.lock().expect("deaths lock");
                    let d = &mut deaths[death];
                    if d.restarted_at_ms.is_none() {
                        d.isolated_after_ms[n] = Some(now_ms.saturating_sub(d.killed_at_ms));
                    }
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}
