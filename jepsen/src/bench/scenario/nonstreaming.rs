//! Non-streaming chat completions: closed loop at each concurrency (throughput and latency
//! under load), then an open loop at a fixed rate (added latency when not saturated).

use super::ClosedRow;
use crate::bench::load::load_run::LoadRun;
use crate::bench::load::{closed_loop, open_loop};
use crate::bench::plan::Plan;
use crate::bench::progress;
use crate::bench::stack::{Env, Stack, Target};

pub(crate) async fn closed(env: &Env, plan: &Plan) -> anyhow::Result<Vec<ClosedRow>> {
    let stack = Stack::start(env, "closed", &[]).await?;
    let mut rows = Vec::new();
    for &concurrency in &plan.concurrencies {
        let mut runs: Vec<LoadRun> = vec![LoadRun::default(); Target::ALL.len()];
        for _ in 0..plan.rounds {
            for (i, target) in Target::ALL.into_iter().enumerate() {
                let request = env.request(stack.addr(target), false)?;
                let run = closed_loop::run(
                    stack.addr(target),
                    &request,
                    concurrency,
                    plan.warmup,
                    plan.per_round(plan.measure),
                )
                .await?;
                runs[i].merge_round(&run);
            }
        }
        for (target, run) in Target::ALL.into_iter().zip(runs) {
            progress::load(&format!("c={concurrency} {}", target.label()), &run);
            rows.push(ClosedRow {
                concurrency,
                target,
                run,
            });
        }
    }
    Ok(rows)
}

pub(crate) async fn fixed_rate(env: &Env, plan: &Plan) -> anyhow::Result<Vec<(Target, LoadRun)>> {
    let stack = Stack::start(env, "rate", &[]).await?;
    let mut runs: Vec<LoadRun> = vec![LoadRun::default(); Target::ALL.len()];
    for _ in 0..plan.rounds {
        for (i, target) in Target::ALL.into_iter().enumerate() {
            let request = env.request(stack.addr(target), false)?;
            let run = open_loop::run(
                stack.addr(target),
                &request,
                plan.rate,
                plan.rate_workers,
                plan.warmup,
                plan.per_round(plan.rate_measure),
            )
            .await?;
            runs[i].merge_round(&run);
        }
    }
    let rows: Vec<_> = Target::ALL.into_iter().zip(runs).collect();
    for (target, run) in &rows {
        progress::load(&format!("{} req/s {}", plan.rate, target.label()), run);
    }
    Ok(rows)
}
