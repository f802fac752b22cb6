//! 100,000 keys: aigw's start-up, idle RSS and request latency with a 100,000-key config
//! against the 1-key config, beside direct and the bare proxy. Requests to the many-key aigw
//! rotate over all its keys, so lookups do not stay in one cache line.

use tokio::time::Instant;

use super::KeysRow;
use crate::bench::gateway_config::{RATE_ONLY_LIMITS, secrets};
use crate::bench::load::closed_loop;
use crate::bench::load::load_run::LoadRun;
use crate::bench::load::request::ChatRequest;
use crate::bench::plan::Plan;
use crate::bench::procs::Process;
use crate::bench::progress;
use crate::bench::stack::{Env, READY_TIMEOUT, Target, wait_ready};

/// aigw validates and replicates every key at start; generous for 100,000 keys on a busy machine.
const MANY_KEYS_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1200);

pub(crate) async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Vec<KeysRow>> {
    let mut mock = env.spawn_mock(&[], "keys-mock")?;
    let request = env.request(mock.addr, false)?;
    wait_ready(&mut mock, &request, Instant::now(), READY_TIMEOUT).await?;
    let mut bare = env.spawn_bare(mock.addr, "keys-bare")?;
    let request = env.request(bare.addr, false)?;
    wait_ready(&mut bare, &request, Instant::now(), READY_TIMEOUT).await?;
    let many = secrets(plan.many_keys);
    // Both with a rate limit only (see RATE_ONLY_LIMITS), so the rows differ only in keys.
    let (one_addr, _, one_config) =
        env.aigw_config_with_admin(mock.addr, &env.one_key, "keys-aigw-1", RATE_ONLY_LIMITS)?;
    let (many_addr, _, many_config) =
        env.aigw_config_with_admin(mock.addr, &many, "keys-aigw-many", RATE_ONLY_LIMITS)?;

    let (mut aigw_one, one_startup) =
        start(env, one_addr, &one_config, "keys-aigw-1", &env.one_key).await?;
    let (mut aigw_many, many_startup) =
        start(env, many_addr, &many_config, "keys-aigw-many", &many).await?;
    let one_rss = aigw_one.rss()?;
    let many_rss = aigw_many.rss()?;

    struct Row {
        label: String,
        keys: Option<usize>,
        request: ChatRequest,
        c1: LoadRun,
        c32: LoadRun,
    }
    let mut rows = vec![
        Row {
            label: Target::Direct.label().into(),
            keys: None,
            request: env.request(mock.addr, false)?,
            c1: LoadRun::default(),
            c32: LoadRun::default(),
        },
        Row {
            label: Target::Bare.label().into(),
            keys: None,
            request: env.request(bare.addr, false)?,
            c1: LoadRun::default(),
            c32: LoadRun::default(),
        },
        Row {
            label: "aigw, 1 key".into(),
            keys: Some(1),
            request: env.request(aigw_one.addr, false)?,
            c1: LoadRun::default(),
            c32: LoadRun::default(),
        },
        Row {
            label: format!("aigw, {} keys", plan.many_keys),
            keys: Some(plan.many_keys),
            request: ChatRequest::new(aigw_many.addr, false, &many)?,
            c1: LoadRun::default(),
            c32: LoadRun::default(),
        },
    ];
    let addrs = [mock.addr, bare.addr, aigw_one.addr, aigw_many.addr];
    let measure = plan.per_round(plan.keys_measure);
    for _ in 0..plan.rounds {
        for (row, &addr) in rows.iter_mut().zip(&addrs) {
            let c1 = closed_loop::run(addr, &row.request, 1, plan.warmup, measure).await?;
            row.c1.merge_round(&c1);
            let c32 = closed_loop::run(addr, &row.request, 32, plan.warmup, measure).await?;
            row.c32.merge_round(&c32);
        }
    }
    for process in [&mut mock, &mut bare, &mut aigw_one, &mut aigw_many] {
        process.ensure_running()?;
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            progress::load(&format!("keys c=1 {}", row.label), &row.c1);
            progress::load(&format!("keys c=32 {}", row.label), &row.c32);
            let (startup, idle_rss) = match row.keys {
                Some(1) => (Some(one_startup), Some(one_rss)),
                Some(_) => (Some(many_startup), Some(many_rss)),
                None => (None, None),
            };
            KeysRow {
                label: row.label,
                keys: row.keys,
                startup,
                idle_rss,
                c1: row.c1,
                c32: row.c32,
            }
        })
        .collect())
}

async fn start(
    env: &Env,
    addr: std::net::SocketAddr,
    config: &std::path::Path,
    name: &str,
    secrets: &[String],
) -> anyhow::Result<(Process, std::time::Duration)> {
    let request = ChatRequest::new(addr, false, &secrets[..1])?;
    let started = Instant::now();
    let mut process = env.spawn_aigw(addr, config, name)?;
    let took = wait_ready(&mut process, &request, started, MANY_KEYS_READY_TIMEOUT).await?;
    eprintln!(
        "  {name}: {} keys, first answer after {took:.1?}",
        secrets.len()
    );
    Ok((process, took))
}
