//! Streaming completions: TTFB and inter-chunk gaps with the mock pacing its chunks, then the
//! delay added per chunk with the mock gated (one chunk per step).

use crate::bench::load::chunk_relay;
use crate::bench::load::latency::Latencies;
use crate::bench::load::streaming::{self, StreamRun};
use crate::bench::plan::Plan;
use crate::bench::progress;
use crate::bench::stack::{Env, Stack, Target};

pub(crate) async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Vec<(Target, StreamRun)>> {
    let flags = vec![
        "--chunks".to_owned(),
        plan.stream_chunks.to_string(),
        "--chunk-interval-ms".to_owned(),
        plan.stream_interval_ms.to_string(),
    ];
    let stack = Stack::start(env, "streaming", &flags).await?;
    let mut runs: Vec<StreamRun> = vec![StreamRun::default(); Target::ALL.len()];
    for _ in 0..plan.rounds {
        for (i, target) in Target::ALL.into_iter().enumerate() {
            let request = env.request(stack.addr(target), true)?;
            let run = streaming::run(
                stack.addr(target),
                &request,
                plan.stream_chunks,
                plan.stream_concurrency,
                plan.warmup,
                plan.per_round(plan.stream_measure),
            )
            .await?;
            runs[i].merge(&run);
        }
    }
    let rows: Vec<_> = Target::ALL.into_iter().zip(runs).collect();
    for (target, run) in &rows {
        progress::streams(target.label(), run);
    }
    Ok(rows)
}

/// Streams relayed one at a time through each target, per round.
const RELAY_STREAMS: u64 = 40;
/// Content chunks per relayed stream.
const RELAY_CHUNKS: usize = 16;

pub(crate) async fn relay(env: &Env, plan: &Plan) -> anyhow::Result<Vec<(Target, Latencies)>> {
    let flags = vec![
        "--gated".to_owned(),
        "--chunks".to_owned(),
        RELAY_CHUNKS.to_string(),
    ];
    let stack = Stack::start(env, "relay", &flags).await?;
    let mut runs: Vec<Latencies> = vec![Latencies::new(); Target::ALL.len()];
    let streams = RELAY_STREAMS * if plan.rounds > 1 { 3 } else { 1 };
    for _ in 0..plan.rounds {
        for (i, target) in Target::ALL.into_iter().enumerate() {
            let request = env.request(stack.addr(target), true)?;
            let delays = chunk_relay::run(
                stack.addr(target),
                stack.mock.addr,
                &request,
                RELAY_CHUNKS,
                streams,
            )
            .await?;
            runs[i].merge(&delays);
        }
    }
    let rows: Vec<_> = Target::ALL.into_iter().zip(runs).collect();
    for (target, delays) in &rows {
        progress::relay(target.label(), delays);
    }
    Ok(rows)
}
