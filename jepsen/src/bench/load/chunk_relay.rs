//! The delay a proxy adds to each streamed chunk, measured without timer noise.
//!
//! The mock runs gated: after the first content chunk, it sends the next one only when
//! `POST /mock/step` arrives. The client holds one stream open through the target, posts a
//! step straight to the mock, and times step sent -> chunk received. The step's own round
//! trip is the same for every target, so the difference to direct is what the proxy adds per
//! chunk. (A fixed chunk interval would measure the mock's 1 ms timer instead: a constant
//! per-chunk delay cancels out of the gaps between chunks.)

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use super::conn::Http1;
use super::latency::Latencies;
use super::request::ChatRequest;

/// Delays of `streams` streams of `chunks` content chunks each, one stream at a time.
pub(crate) async fn run(
    target: SocketAddr,
    mock: SocketAddr,
    request: &ChatRequest,
    chunks: usize,
    streams: u64,
) -> anyhow::Result<Latencies> {
    let mut delays = Latencies::new();
    let mut stepper = Http1::connect(mock).await?;
    let host = HeaderValue::try_from(mock.to_string())?;
    let mut conn = Http1::connect(target).await?;
    for n in 0..streams {
        let response = conn.send(request.build(n, false)).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "answered {}",
            response.status()
        );
        let mut body = response.into_body();
        // The role event and the first content event come at once.
        let mut events = 0;
        while events < 2 {
            events += next_events(&mut body).await?;
        }
        for _ in 1..chunks {
            let step = Request::builder()
                .method(Method::POST)
                .uri("/mock/step")
                .header(HOST, host.clone())
                .body(Full::new(Bytes::new()))?;
            let sent = Instant::now();
            let (stepped, arrived) = tokio::join!(
                async {
                    let response = stepper.send(step).await?;
                    response.into_body().collect().await?;
                    anyhow::Ok(())
                },
                async {
                    next_events(&mut body).await?;
                    anyhow::Ok(Instant::now())
                }
            );
            stepped?;
            delays.record(arrived? - sent);
        }
        // Finish and [DONE] follow the last chunk without a step.
        while body.frame().await.transpose()?.is_some() {}
    }
    Ok(delays)
}

/// Waits for the next data frame; returns how many SSE events it completes.
async fn next_events(body: &mut hyper::body::Incoming) -> anyhow::Result<usize> {
    loop {
        let frame = body
            .frame()
            .await
            .ok_or_else(|| anyhow::anyhow!("the stream ended early"))??;
        if let Ok(data) = frame.into_data() {
            return Ok(data.windows(2).filter(|w| w == b"\n\n").count());
        }
    }
}
