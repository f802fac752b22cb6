//! Start-up time (spawn to the first successful chat completion) and idle RSS, for the mock,
//! the bare proxy and aigw, each started `plan.startups` times. Idle RSS is read after 100
//! more requests, once the process has gone quiet (under 20 ms of CPU in 500 ms): whatever
//! the first requests set off in the background has then finished.

use std::time::Duration;

use tokio::time::Instant;

use super::StartupRow;
use crate::bench::load::closed_loop::exchange;
use crate::bench::load::conn::Http1;
use crate::bench::memory::wait_idle;
use crate::bench::plan::Plan;
use crate::bench::stack::{Env, READY_TIMEOUT, Target, wait_ready};

pub(crate) async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Vec<StartupRow>> {
    let mut upstream = env.spawn_mock(&[], "startup-upstream")?;
    let request = env.request(upstream.addr, false)?;
    wait_ready(&mut upstream, &request, Instant::now(), READY_TIMEOUT).await?;
    let mut rows: Vec<StartupRow> = Target::ALL
        .iter()
        .map(|&target| StartupRow {
            target,
            times: Vec::new(),
            idle_rss: Vec::new(),
        })
        .collect();
    for i in 0..plan.startups {
        for row in &mut rows {
            let name = format!("startup-{}-{i}", row.target.label().replace(' ', "-"));
            let started;
            let mut process = match row.target {
                Target::Direct => {
                    started = Instant::now();
                    env.spawn_mock(&[], &name)?
                }
                Target::Bare => {
                    started = Instant::now();
                    env.spawn_bare(upstream.addr, &name)?
                }
                Target::Aigw => {
                    let (addr, config) = env.aigw_config(upstream.addr, &env.one_key, &name)?;
                    started = Instant::now();
                    env.spawn_aigw(addr, &config, &name)?
                }
            };
            let request = env.request(process.addr, false)?;
            row.times
                .push(wait_ready(&mut process, &request, started, READY_TIMEOUT).await?);
            let mut conn = Http1::connect(process.addr).await?;
            for i in 1..=100 {
                exchange(&mut conn, request.build(i, false)).await?;
            }
            drop(conn);
            if !wait_idle(process.pid(), Duration::from_secs(10)).await? {
                eprintln!(
                    "  {} did not go quiet within 10 s; RSS read anyway",
                    process.name
                );
            }
            row.idle_rss.push(process.rss()?);
        }
    }
    Ok(rows)
}
