//! Fixed concurrency, closed loop: `concurrency` workers, each with its own keep-alive
//! HTTP/1.1 connection, send the next request as soon as the previous answer is read in full.
//! Throughput and latency at saturation (c=256) or with no queueing at all (c=1).

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::time::Instant;

use super::conn::Http1;
use super::load_run::LoadRun;
use super::request::ChatRequest;

/// Runs `warmup` then `measure`; only requests that start and end inside `measure` count.
pub(crate) async fn run(
    addr: SocketAddr,
    request: &ChatRequest,
    concurrency: u64,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<LoadRun> {
    let window_start = Instant::now() + warmup;
    let window_end = window_start + measure;
    let mut workers = tokio::task::JoinSet::new();
    for id in 0..concurrency {
        let request = request.clone();
        workers.spawn(worker(addr, request, id, window_start, window_end));
    }
    let mut total = LoadRun {
        window: measure,
        ..LoadRun::default()
    };
    while let Some(worker) = workers.join_next().await {
        total.absorb(&worker?);
    }
    Ok(total)
}

async fn worker(
    addr: SocketAddr,
    request: ChatRequest,
    id: u64,
    window_start: Instant,
    window_end: Instant,
) -> LoadRun {
    let mut run = LoadRun::default();
    let mut connection: Option<Http1> = None;
    // Spread workers over the key list when there are many keys.
    let mut n = id.wrapping_mul(7919);
    while Instant::now() < window_end {
        let conn = match connection.as_mut() {
            Some(conn) => conn,
            None => match Http1::connect(addr).await {
                Ok(conn) => connection.insert(conn),
                Err(_) => {
                    run.errors += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let outcome = exchange(conn, request.build(n, false)).await;
        let done = Instant::now();
        n = n.wrapping_add(1);
        match outcome {
            Ok(()) if sent >= window_start && done <= window_end => {
                run.latencies.record(done - sent);
                run.completed += 1;
            }
            Ok(()) => {}
            Err(_) => {
                run.errors += 1;
                connection = None;
            }
        }
    }
    run
}

/// One request: a 2xx head and the whole body, or an error.
pub(crate) async fn exchange(
    conn: &mut Http1,
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> anyhow::Result<()> {
    let response = conn.send(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    anyhow::ensure!(status.is_success(), "answered {status}");
    Ok(())
}

/// Exactly `total` requests over `concurrency` connections, all measured: for profiling,
/// where cost per request is what counts.
pub(crate) async fn run_count(
    addr: SocketAddr,
    request: &ChatRequest,
    concurrency: u64,
    total: u64,
) -> anyhow::Result<LoadRun> {
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for id in 0..concurrency {
        let request = request.clone();
        let share = total / concurrency + u64::from(id < total % concurrency);
        workers.spawn(async move {
            let mut run = LoadRun::default();
            let mut conn = Http1::connect(addr).await?;
            for i in 0..share {
                let sent = Instant::now();
                exchange(&mut conn, request.build(id + i * concurrency, false)).await?;
                run.latencies.record(sent.elapsed());
                run.completed += 1;
            }
            anyhow::Ok(run)
        });
    }
    let mut total = LoadRun::default();
    while let Some(worker) = workers.join_next().await {
        total.absorb(&worker??);
    }
    total.window = started.elapsed();
    Ok(total)
}
