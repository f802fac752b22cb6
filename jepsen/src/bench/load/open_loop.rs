//! Fixed rate, open loop: request `i` is due at `start + i / rate`, whatever happened to the
//! requests before it, the way independent clients arrive. Measures added latency when the
//! gateway is not saturated (the 1,000 requests/s target).
//!
//! `workers` connections take turns (worker `k` sends requests `k`, `k + workers`, ...), so a
//! slow answer delays only that worker's next request; a request sent more than 1 ms late is
//! counted in `late` (tokio's timer has 1 ms granularity, so 1 ms is the resolution of the
//! schedule). Latency is measured from the actual send.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::closed_loop::exchange;
use super::conn::Http1;
use super::load_run::LoadRun;
use super::request::ChatRequest;

pub(crate) async fn run(
    addr: SocketAddr,
    request: &ChatRequest,
    rate: u64,
    workers: u64,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<LoadRun> {
    anyhow::ensure!(rate > 0 && workers > 0, "rate and workers must be positive");
    // Connect every worker before the schedule starts.
    let mut connections = Vec::with_capacity(workers as usize);
    for _ in 0..workers {
        connections.push(Http1::connect(addr).await?);
    }
    let start = Instant::now() + Duration::from_millis(20);
    let total = rate * (warmup + measure).as_secs_f64() as u64;
    let warmup_requests = rate * warmup.as_secs_f64() as u64;
    let schedule = Schedule {
        start,
        period: Duration::from_secs_f64(1.0 / rate as f64),
        total,
        warmup_requests,
        workers,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (id, conn) in connections.into_iter().enumerate() {
        tasks.spawn(worker(addr, conn, request.clone(), id as u64, schedule));
    }
    let mut total = LoadRun {
        window: measure,
        ..LoadRun::default()
    };
    while let Some(worker) = tasks.join_next().await {
        total.absorb(&worker?);
    }
    Ok(total)
}

#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    period: Duration,
    total: u64,
    warmup_requests: u64,
    workers: u64,
}

impl Schedule {
    fn due(&self, i: u64) -> Instant {
        self.start + self.period.mul_f64(i as f64)
    }
}

async fn worker(
    addr: SocketAddr,
    mut conn: Http1,
    request: ChatRequest,
    id: u64,
    schedule: Schedule,
) -> LoadRun {
    let mut run = LoadRun::default();
    let mut i = id;
    while i < schedule.total {
        let due = schedule.due(i);
        tokio::time::sleep_until(due).await;
        let sent = Instant::now();
        let outcome = exchange(&mut conn, request.build(i, false)).await;
        let done = Instant::now();
        let measured = i >= schedule.warmup_requests;
        if measured && sent - due > Duration::from_millis(1) {
            run.late += 1;
        }
        match outcome {
            Ok(()) if measured => {
                run.latencies.record(done - sent);
                run.completed += 1;
            }
            Ok(()) => {}
            Err(_) => {
                run.errors += 1;
                match Http1::connect(addr).await {
                    Ok(fresh) => conn = fresh,
                    Err(_) => break,
                }
            }
        }
        i += schedule.workers;
    }
    run
}
