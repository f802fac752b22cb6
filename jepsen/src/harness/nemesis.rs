//! Carries out the schedule: each fault starts at its time, lasts its duration, and is undone.
//! Symbolic targets ("the leader") are resolved when the fault starts, and what was resolved
//! is logged, so `nemesis.jsonl` says exactly what happened.

use std::time::Duration;

use serde_json::json;
use tokio::time::{Instant, sleep_until};

use super::context::{Ctx, UpstreamDeath};
use super::procs::Layout;
use super::schedule::{Fault, NodeTarget, ScheduledFault};

/// Runs every fault of `schedule` from `start`; returns when the last one is undone.
pub async fn run(ctx: Ctx, start: Instant, schedule: Vec<ScheduledFault>) {
    let mut tasks = Vec::new();
    for planned in schedule {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            sleep_until(start + Duration::from_millis(planned.start_ms)).await;
            let duration = Duration::from_millis(planned.duration_ms);
            if let Err(e) = apply(&ctx, &planned.fault, duration).await {
                ctx.log_event(
                    "error",
                    json!({"fault": planned.fault, "error": format!("{e:#}")}),
                );
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

async fn resolve(ctx: &Ctx, target: NodeTarget) -> usize {
    match target {
        NodeTarget::Node(n) => n,
        NodeTarget::Leader => ctx.leader().await.unwrap_or(0),
    }
}

async fn apply(ctx: &Ctx, fault: &Fault, duration: Duration) -> anyhow::Result<()> {
    let layout = &ctx.layout;
    match fault {
        Fault::Partition { shape } => {
            let Some(firewall) = &ctx.firewall else {
                anyhow::bail!("no firewall (iptables) for a partition");
            };
            let leader = ctx.leader().await;
            let pairs = shape.cut_pairs(layout.nodes, leader);
            let ips: Vec<_> = pairs
                .iter()
                .map(|&(a, b)| (layout.ip(a), layout.ip(b)))
                .collect();
            firewall.cut(&ips)?;
            *ctx.cut.lock().expect("cut lock") = pairs.clone();
            let named: Vec<(usize, usize)> = pairs.iter().map(|&(a, b)| (a + 1, b + 1)).collect();
            ctx.log_event(
                "partition-start",
                json!({"shape": shape, "leader": leader.map(|l| l + 1), "cut_node_ids": named}),
            );
            tokio::time::sleep(duration).await;
            ctx.cut.lock().expect("cut lock").clear();
            firewall.heal()?;
            ctx.log_event("partition-heal", json!({}));
        }
        Fault::Kill { target } => {
            let n = resolve(ctx, *target).await;
            ctx.procs.lock().await.kill_node(n);
            ctx.log_event("kill", json!({"node": n + 1, "target": target}));
            tokio::time::sleep(duration).await;
            ctx.procs
                .lock()
                .await
                .start_node(n, "restart after kill -9")?;
            ctx.log_event("restart", json!({"node": n + 1}));
        }
        Fault::Pause { target } => {
            let n = resolve(ctx, *target).await;
            ctx.procs.lock().await.pause_node(n)?;
            ctx.log_event("pause", json!({"node": n + 1, "target": target}));
            tokio::time::sleep(duration).await;
            ctx.procs.lock().await.resume_node(n)?;
            ctx.log_event("resume", json!({"node": n + 1}));
        }
        Fault::UpstreamKill { mock } => {
            ctx.procs.lock().await.kill_mock(*mock);
            let killed_at_ms = ctx.history.now_us() / 1000;
            let index = {
                let mut deaths = ctx.deaths.lock().expect("deaths lock");
                deaths.push(UpstreamDeath {
                    mock: *mock,
                    upstream: Layout::mock_name(*mock),
                    killed_at_ms,
                    restarted_at_ms: None,
                    isolated_after_ms: vec![None; layout.nodes],
                });
                deaths.len() - 1
            };
            ctx.log_event(
                "upstream-kill",
                json!({"upstream": Layout::mock_name(*mock)}),
            );
            tokio::time::sleep(duration).await;
            ctx.procs
                .lock()
                .await
                .start_mock(*mock, "restart after kill -9")?;
            ctx.deaths.lock().expect("deaths lock")[index].restarted_at_ms =
                Some(ctx.history.now_us() / 1000);
            ctx.log_event(
                "upstream-restart",
                json!({"upstream": Layout::mock_name(*mock)}),
            );
        }
        Fault::UpstreamErrors { mock, rate, status } => {
            control(
                ctx,
                *mock,
                json!({"error_rate": rate, "error_status": status}),
            )
            .await?;
            ctx.log_event(
                "upstream-errors",
                json!({"upstream": Layout::mock_name(*mock), "rate": rate, "status": status}),
            );
            tokio::time::sleep(duration).await;
            control(ctx, *mock, json!({"error_rate": 0.0})).await?;
            ctx.log_event(
                "upstream-errors-end",
                json!({"upstream": Layout::mock_name(*mock)}),
            );
        }
        Fault::UpstreamLatency { mock, latency_ms } => {
            control(ctx, *mock, json!({"latency_ms": latency_ms})).await?;
            ctx.log_event(
                "upstream-latency",
                json!({"upstream": Layout::mock_name(*mock), "latency_ms": latency_ms}),
            );
            tokio::time::sleep(duration).await;
            control(ctx, *mock, json!({"latency_ms": 0})).await?;
            ctx.log_event(
                "upstream-latency-end",
                json!({"upstream": Layout::mock_name(*mock)}),
            );
        }
    }
    Ok(())
}

/// `PATCH /mock/control` on mock `m`, retried briefly (it may be restarting).
pub async fn control(ctx: &Ctx, m: usize, patch: serde_json::Value) -> anyhow::Result<()> {
    let url = format!("http://{}/mock/control", ctx.layout.mock_addr(m));
    let mut last = String::new();
    for _ in 0..10 {
        match ctx
            .http
            .call(
                http::Method::PATCH,
                &url,
                "",
                Some(patch.clone()),
                Duration::from_secs(1),
            )
            .await
        {
            Ok(reply) if reply.status.is_success() => return Ok(()),
            Ok(reply) => {
                last = format!("{} {}", reply.status, String::from_utf8_lossy(&reply.body))
            }
            Err(e) => last = e.label(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("PATCH {url}: {last}")
}
