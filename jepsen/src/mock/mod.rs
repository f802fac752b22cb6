//! A fast OpenAI-compatible fake upstream with faults that can be switched at run time.
//!
//! Surface (gateways use base_url `http://host:port/v1`):
//! - `POST /v1/chat/completions`, `POST /v1/embeddings`, `GET /v1/models`, `GET /health`;
//! - `POST /v1/messages`: Anthropic's Messages API, streaming and not, refusing what
//!   Anthropic refuses (anthropic.rs), for gateways that translate to it;
//! - `POST /v1/images/generations`, `POST /v1/audio/transcriptions` (multipart; json, text,
//!   srt, verbose_json and vtt answers with a duration), `/v1/videos` (create, retrieve,
//!   content, list, delete; jobs in memory, one status step per retrieve);
//! - `/mock/control` (GET, PUT, PATCH the [`MockBehavior`]), `GET /mock/stats`,
//!   `POST /mock/step` (release one chunk of every gated stream), `GET /mock/last_request`.
//!
//! Invariants:
//! - Faults (latency, hang, injected errors) apply to the model endpoints (chat, embeddings,
//!   images, audio, video create) only, so
//!   `/v1/models` and `/health` stay usable as probes; `/health` has its own `unhealthy` flag.
//! - A behaviour is snapshotted when a request arrives: a change applies to new requests at
//!   once and never alters a response already under way.
//! - `streams_cancelled` counts exactly the streamed bodies dropped before their final
//!   `[DONE]` event was handed to the connection; deliberate `drop_after_chunks` aborts are
//!   not counted. Gateways prove "client disconnect cancels the upstream call" with it.
//! - The mock owns its accept loop and connection tasks, so stopping the server also ends
//!   hung requests and gated streams instead of waiting for them.

mod admission;
mod anthropic;
mod audio;
mod behavior;
mod chat;
mod control;
mod embeddings;
mod error;
mod form;
mod images;
mod last_request;
mod request;
mod router;
mod state;
mod stats;
mod videos;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

pub use behavior::{MockBehavior, UsagePlacement};
pub use stats::{MockStats, UserStats};

use state::MockState;

/// A running mock upstream. Dropping it stops the server (in the background); call
/// [`MockServer::shutdown`] to wait until every connection is closed.
pub struct MockServer {
    addr: SocketAddr,
    state: Arc<MockState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Serves on `listener` from a spawned task until shut down or dropped.
    pub async fn start(listener: TcpListener, behavior: MockBehavior) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(MockState::new(behavior));
        let router = router::build(Arc::clone(&state));
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, router, stop_rx));
        Ok(Self {
            addr,
            state,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// The address actually bound (useful after binding port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the behaviour for requests that arrive from now on.
    pub fn set_behavior(&self, behavior: MockBehavior) {
        self.state.set_behavior(behavior);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MockStats {
        self.state.counters.snapshot()
    }

    /// Stops accepting, ends every open connection (hung and gated requests included) and
    /// returns once they are all gone.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        // Dropping the sender wakes the accept loop, which aborts its connections itself;
        // a Drop cannot wait for that.
        self.stop.take();
    }
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Accepts until `stop` fires (or its sender is dropped). Connections live in a JoinSet so
/// that stopping aborts them: a graceful drain would wait forever on `hang` and gated streams.
async fn accept_loop(listener: TcpListener, router: axum::Router, mut stop: oneshot::Receiver<()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper caps h2 at 200 concurrent streams; a gateway multiplexing a benchmark over one
    // connection must hit its own limits, not the mock's.
    builder.http2().max_concurrent_streams(None);
    let builder = Arc::new(builder);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            // Reap finished connections so the set does not grow with every client.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Streamed chunks must leave at once, not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    let builder = Arc::clone(&builder);
                    let service = TowerToHyperService::new(router.clone());
                    connections.spawn(async move {
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "aigw-mock: connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "aigw-mock: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    connections.shutdown().await;
}
