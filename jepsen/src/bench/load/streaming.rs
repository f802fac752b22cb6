//! Streaming: time to first byte and the gaps between chunks, seen by the client.
//!
//! The mock streams a role event, `chunks` content events `interval` apart (the first at
//! once), a finish event and `[DONE]`. The client timestamps every body frame as it arrives.
//! TTFB is send -> first body frame. A gap is recorded for each frame that starts with a
//! paced content event (content 1..chunks-1), from the previous frame: the unpaced events
//! (role, content 0, finish, done) follow their predecessor within microseconds and would
//! only blur the distribution. A proxy that buffers shows up as fewer frames per stream and
//! merged gaps; one that delays shows up in TTFB and in gap jitter.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::time::Instant;

use super::conn::Http1;
use super::latency::Latencies;
use super::request::ChatRequest;

#[derive(Clone, Default)]
pub(crate) struct StreamRun {
    pub ttfb: Latencies,
    pub gaps: Latencies,
    /// Streams completed in the window, with every event.
    pub streams: u64,
    /// Body frames of those streams, to tell coalescing apart.
    pub frames: u64,
    pub errors: u64,
}

impl StreamRun {
    pub fn merge(&mut self, other: &StreamRun) {
        self.ttfb.merge(&other.ttfb);
        self.gaps.merge(&other.gaps);
        self.streams += other.streams;
        self.frames += other.frames;
        self.errors += other.errors;
    }

    pub fn frames_per_stream(&self) -> f64 {
        if self.streams == 0 {
            return 0.0;
        }
        self.frames as f64 / self.streams as f64
    }
}

/// `concurrency` workers stream back to back for `warmup` then `measure`.
pub(crate) async fn run(
    addr: SocketAddr,
    request: &ChatRequest,
    chunks: usize,
    concurrency: u64,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<StreamRun> {
    let window_start = Instant::now() + warmup;
    let window_end = window_start + measure;
    let mut workers = tokio::task::JoinSet::new();
    for id in 0..concurrency {
        let request = request.clone();
        workers.spawn(async move {
            let mut run = StreamRun::default();
            let mut connection: Option<Http1> = None;
            let mut n = id;
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
                let started = Instant::now();
                let outcome = one_stream(conn, request.build(n, false), chunks).await;
                n += 1;
                match outcome {
                    Ok(stream) if started >= window_start && Instant::now() <= window_end => {
                        run.ttfb.record(stream.ttfb);
                        for gap in &stream.gaps {
                            run.gaps.record(*gap);
                        }
                        run.streams += 1;
                        run.frames += stream.frames;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        run.errors += 1;
                        connection = None;
                    }
                }
            }
            run
        });
    }
    let mut total = StreamRun::default();
    while let Some(worker) = workers.join_next().await {
        total.merge(&worker?);
    }
    Ok(total)
}

struct OneStream {
    ttfb: Duration,
    gaps: Vec<Duration>,
    frames: u64,
}

async fn one_stream(
    conn: &mut Http1,
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
    chunks: usize,
) -> anyhow::Result<OneStream> {
    let sent = Instant::now();
    let response = conn.send(request).await?;
    anyhow::ensure!(
        response.status().is_success(),
        "answered {}",
        response.status()
    );
    let mut body = response.into_body();
    let mut timeline = Timeline::new(chunks);
    while let Some(frame) = body.frame().await {
        let now = Instant::now();
        if let Ok(data) = frame?.into_data() {
            timeline.frame(now - sent, &data);
        }
    }
    timeline.finish()
}

/// Frame arrival times of one stream, turned into TTFB and paced gaps.
struct Timeline {
    chunks: usize,
    events: usize,
    frames: u64,
    ttfb: Option<Duration>,
    last: Duration,
    gaps: Vec<Duration>,
}

impl Timeline {
    fn new(chunks: usize) -> Self {
        Self {
            chunks,
            events: 0,
            frames: 0,
            ttfb: None,
            last: Duration::ZERO,
            gaps: Vec::with_capacity(chunks),
        }
    }

    /// A data frame `at` after the request was sent.
    fn frame(&mut self, at: Duration, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.frames += 1;
        if self.ttfb.is_none() {
            self.ttfb = Some(at);
        } else if (2..=self.chunks).contains(&self.events) {
            // Event 0 is the role, 1 the first content (unpaced); 2..=chunks are paced.
            self.gaps.push(at - self.last);
        }
        self.last = at;
        self.events += data.windows(2).filter(|w| w == b"\n\n").count();
    }

    fn finish(self) -> anyhow::Result<OneStream> {
        // role + contents + finish + [DONE]
        let expected = self.chunks + 3;
        anyhow::ensure!(
            self.events == expected,
            "stream had {} events, expected {expected}",
            self.events
        );
        Ok(OneStream {
            ttfb: self.ttfb.unwrap_or_default(),
            gaps: self.gaps,
            frames: self.frames,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paced_content_frames_make_gaps() {
        let ms = Duration::from_millis;
        let mut t = Timeline::new(3);
        t.frame(ms(1), b"data: role\n\ndata: c0\n\n");
        t.frame(ms(6), b"data: c1\n\n");
        t.frame(ms(11), b"data: c2\n\n");
        t.frame(ms(11), b"data: finish\n\n");
        t.frame(ms(11), b"data: [DONE]\n\n");
        let s = t.finish().unwrap();
        assert_eq!(s.ttfb, ms(1));
        assert_eq!(s.gaps, vec![ms(5), ms(5)]);
        assert_eq!(s.frames, 5);
    }

    #[test]
    fn a_short_stream_is_an_error() {
        let mut t = Timeline::new(3);
        t.frame(Duration::from_millis(1), b"data: role\n\n");
        assert!(t.finish().is_err());
    }
}
