//! Many concurrent open streams: RSS per open stream of the process the client talks to.
//!
//! A fresh stack per protocol, so the "before" figure is a warm process that has never held
//! many streams (an allocator keeps freed memory, which would flatter a second measurement).

use std::time::Duration;

use super::OpenStreamsRow;
use crate::bench::load::open_streams::{self, Protocol};
use crate::bench::plan::Plan;
use crate::bench::stack::{Env, Stack, Target};

/// Streams opened and closed before the "before" RSS, so buffers every stream path touches
/// once are in the baseline.
const WARMUP_STREAMS: usize = 64;
/// Descriptors kept free for listeners, logs and the pool's spare connections.
const FD_MARGIN: u64 = 256;
/// Time for freed buffers and closed sockets to settle before RSS is read.
const SETTLE: Duration = Duration::from_millis(300);

/// The stream count each protocol gets under an open-file limit of `nofile`.
pub(crate) fn counts(plan: &Plan, nofile: u64) -> Vec<(Protocol, usize)> {
    [Protocol::Http1, Protocol::Http2]
        .into_iter()
        .map(|protocol| {
            let fit = nofile.saturating_sub(FD_MARGIN) / protocol.proxy_fds_per_stream();
            (protocol, plan.open_streams.min(fit as usize))
        })
        .collect()
}

pub(crate) async fn run(
    env: &Env,
    plan: &Plan,
    nofile: u64,
) -> anyhow::Result<Vec<OpenStreamsRow>> {
    let flags = vec!["--gated".to_owned(), "--chunks".to_owned(), "4".to_owned()];
    let mut rows = Vec::new();
    for (protocol, count) in counts(plan, nofile) {
        let mut stack = Stack::start(env, &format!("open-{}", protocol.slug()), &flags).await?;
        for target in Target::ALL {
            let request = env.request(stack.addr(target), true)?;
            drop(open_streams::open(stack.addr(target), &request, WARMUP_STREAMS, protocol).await?);
            tokio::time::sleep(SETTLE).await;
            let rss_before = stack.process_mut(target).rss()?;
            let held = open_streams::open(stack.addr(target), &request, count, protocol).await?;
            tokio::time::sleep(SETTLE).await;
            let rss_open = stack.process_mut(target).rss()?;
            let row = OpenStreamsRow {
                protocol,
                target,
                streams: held.count,
                rss_before,
                rss_open,
                opening: held.opening,
            };
            eprintln!(
                "  open streams {} {}: {} streams in {:.1?}, {:.1} KiB per stream",
                protocol.label(),
                target.label(),
                row.streams,
                row.opening,
                row.bytes_per_stream() / 1024.0
            );
            rows.push(row);
            drop(held);
            // Let the proxy and the mock close what the client just dropped.
            tokio::time::sleep(SETTLE).await;
        }
    }
    Ok(rows)
}
