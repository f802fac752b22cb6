//! Many concurrent open streams, held still while the proxy's memory is read.
//!
//! The mock runs gated: each stream gets its role and first content event at once, then
//! nothing until `/mock/step`, so every stream stays open for as long as the client keeps it.
//! A stream counts as open once its first content event has reached the client, i.e. it went
//! all the way through the proxy and back.
//!
//! Over HTTP/1.1 each stream is its own client connection, and the proxy holds two sockets per
//! stream (client and upstream); over HTTP/2 (h2c) streams share client connections and the
//! proxy holds one upstream socket per stream. The process' open-file limit decides which
//! counts fit.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::conn::{Http1, Http2};
use super::request::ChatRequest;

/// Streams opened at the same time; a burst larger than the listen backlog would stall on
/// SYN retries.
const OPENING_PARALLELISM: usize = 128;
/// HTTP/2 streams per connection, under hyper's default limit of 200.
const STREAMS_PER_H2_CONNECTION: usize = 100;

/// How the client connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Self::Http1 => "HTTP/1.1",
            Self::Http2 => "HTTP/2 (h2c)",
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            Self::Http1 => "h1",
            Self::Http2 => "h2",
        }
    }

    /// File descriptors the proxy holds per open stream.
    pub fn proxy_fds_per_stream(self) -> u64 {
        match self {
            Self::Http1 => 2,
            Self::Http2 => 1,
        }
    }
}

/// Open streams; dropping this closes them (the proxy then cancels its upstream calls).
pub(crate) struct HeldStreams {
    _http1: Vec<(Http1, Incoming)>,
    _http2: Vec<Incoming>,
    _h2_connections: Vec<Http2>,
    pub count: usize,
    pub opening: Duration,
}

pub(crate) async fn open(
    addr: SocketAddr,
    request: &ChatRequest,
    count: usize,
    protocol: Protocol,
) -> anyhow::Result<HeldStreams> {
    let started = Instant::now();
    let mut held = HeldStreams {
        _http1: Vec::new(),
        _http2: Vec::new(),
        _h2_connections: Vec::new(),
        count,
        opening: Duration::ZERO,
    };
    match protocol {
        Protocol::Http1 => {
            held._http1 = futures::stream::iter(0..count as u64)
                .map(|n| open_http1(addr, request, n))
                .buffer_unordered(OPENING_PARALLELISM)
                .try_collect()
                .await?;
        }
        Protocol::Http2 => {
            let mut connections = Vec::new();
            for _ in 0..count.div_ceil(STREAMS_PER_H2_CONNECTION) {
                connections.push(Http2::connect(addr).await?);
            }
            let connections_ref = &connections;
            held._http2 = futures::stream::iter(0..count)
                .map(|n| {
                    let conn = connections_ref[n / STREAMS_PER_H2_CONNECTION].clone();
                    open_http2(conn, request, n as u64)
                })
                .buffer_unordered(OPENING_PARALLELISM)
                .try_collect()
                .await?;
            held._h2_connections = connections;
        }
    }
    held.opening = started.elapsed();
    Ok(held)
}

async fn open_http1(
    addr: SocketAddr,
    request: &ChatRequest,
    n: u64,
) -> anyhow::Result<(Http1, Incoming)> {
    let mut conn = Http1::connect(addr).await?;
    let response = conn.send(request.build(n, false)).await?;
    anyhow::ensure!(
        response.status().is_success(),
        "answered {}",
        response.status()
    );
    let body = first_content(response.into_body()).await?;
    Ok((conn, body))
}

async fn open_http2(mut conn: Http2, request: &ChatRequest, n: u64) -> anyhow::Result<Incoming> {
    let response = conn.send(request.build(n, true)).await?;
    anyhow::ensure!(
        response.status().is_success(),
        "answered {}",
        response.status()
    );
    first_content(response.into_body()).await
}

/// Reads until the role and the first content event have arrived; returns the rest unread.
async fn first_content(mut body: Incoming) -> anyhow::Result<Incoming> {
    let mut events = 0;
    while events < 2 {
        let frame = body
            .frame()
            .await
            .ok_or_else(|| anyhow::anyhow!("the stream ended before its first content event"))??;
        if let Ok(data) = frame.into_data() {
            events += data.windows(2).filter(|w| w == b"\n\n").count();
        }
    }
    Ok(body)
}
