//! Quota on: a hot key with limits (the bench config's rate, calls budget and tokens budget)
//! driven at a steady closed-loop load, and how many requests aigw admits per Raft entry.
//!
//! Budgets are spent from leases (docs/QUOTAS.md): the node asks Raft for a slice of a budget
//! and admits locally while the slice lasts, so a hot key should write rarely. The Raft log's
//! last index is read from the admin API (`GET /admin/v1/cluster`) on a fresh node before its
//! first request, once it has settled, and again after the load: every entry written in
//! between is counted, the first grants of each budget included.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use super::QuotaRow;
use crate::bench::gateway_config::{ADMIN_TOKEN, KEY_LIMITS};
use crate::bench::load::closed_loop;
use crate::bench::load::conn::Http1;
use crate::bench::plan::Plan;
use crate::bench::procs::Process;
use crate::bench::progress;
use crate::bench::stack::{Env, READY_TIMEOUT, wait_ready};

/// The index must stay put this long before it counts as settled (start-up writes its own
/// entries in the background).
const SETTLED_FOR: Duration = Duration::from_millis(500);

pub(crate) async fn run(env: &Env, plan: &Plan) -> anyhow::Result<QuotaRow> {
    let mut mock = env.spawn_mock(&[], "quota-mock")?;
    let request = env.request(mock.addr, false)?;
    wait_ready(&mut mock, &request, Instant::now(), READY_TIMEOUT).await?;
    let (addr, admin, config) =
        env.aigw_config_with_admin(mock.addr, &env.one_key, "quota-aigw", KEY_LIMITS)?;
    let mut aigw = env.spawn_aigw(addr, &config, "quota-aigw")?;
    let before = settled_index(&mut aigw, admin).await?;

    let request = env.request(addr, false)?;
    let run = closed_loop::run(
        addr,
        &request,
        plan.quota_concurrency,
        Duration::ZERO,
        plan.quota_measure,
    )
    .await?;
    progress::load(
        &format!("quota on, c={}, aigw", plan.quota_concurrency),
        &run,
    );
    let after = settled_index(&mut aigw, admin).await?;
    aigw.ensure_running()?;
    Ok(QuotaRow {
        concurrency: plan.quota_concurrency,
        index_before: before,
        index_after: after,
        run,
    })
}

/// The Raft log's last index once this single node leads, has applied everything, and has
/// written nothing for [`SETTLED_FOR`].
async fn settled_index(process: &mut Process, admin: SocketAddr) -> anyhow::Result<u64> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut seen: Option<(u64, Instant)> = None;
    loop {
        process.ensure_running()?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "{}'s Raft log did not settle within {READY_TIMEOUT:?}",
            process.name
        );
        if let Ok(status) = cluster_status(admin).await
            && status["state"] == "leader"
            && status["applied_index"] == status["last_log_index"]
            && let Some(index) = status["last_log_index"].as_u64()
        {
            match seen {
                Some((same, since)) if same == index => {
                    if since.elapsed() >= SETTLED_FOR {
                        return Ok(index);
                    }
                }
                _ => seen = Some((index, Instant::now())),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /admin/v1/cluster` as JSON.
async fn cluster_status(admin: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let mut conn = Http1::connect(admin).await?;
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.method_mut() = Method::GET;
    *request.uri_mut() = http::Uri::from_static("/admin/v1/cluster");
    let headers = request.headers_mut();
    headers.insert(HOST, HeaderValue::try_from(admin.to_string())?);
    headers.insert(
        AUTHORIZATION,
        HeaderValue::try_from(format!("Bearer {ADMIN_TOKEN}"))?,
    );
    let response = conn.send(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status.is_success(),
        "GET /admin/v1/cluster answered {status}"
    );
    serde_json::from_slice(&body).context("GET /admin/v1/cluster: not JSON")
}
