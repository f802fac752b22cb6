//! Starting a node's API listener and stopping it gracefully.
//!
//! Shutdown: stop accepting, let in-flight requests and streams finish until the grace period
//! runs out, then cut what is left. Either way the node returns normally, so the process exits 0.

use std::net::SocketAddr;
use std::time::Duration;

use aigw_actors::NodeActors;
use aigw_config::Config;
use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;

use crate::openai::{self, ApiError};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid settings: {0}")]
    Settings(String),
}

/// A node serving the API until `shutdown` is called.
pub struct RunningNode {
    api_addr: SocketAddr,
    grace: Duration,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
    /// The supervision tree (upstream and session actors); stopped after the server.
    actors: NodeActors,
}

impl RunningNode {
    /// Binds the API listener, starts the node's actors and serves in the background.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let addr = config.node.api_listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let api_addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        // Actor names are process-wide; the bound address keeps two nodes in one process
        // (tests) apart even when they share a node id.
        let name_prefix = format!("node-{}@{api_addr}", config.node.id);
        let (state, actors) = crate::state::build(config, &name_prefix)
            .await
            .map_err(StartError::Settings)?;
        let app = openai::router(state).layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                tracing::error!("a request handler panicked");
                ApiError::Internal.into_response()
            },
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%api_addr, "serving the OpenAI API");
        Ok(Self {
            api_addr,
            grace: config.server.shutdown_grace,
            stop,
            server,
            actors,
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// Stops accepting and waits for in-flight requests, at most the configured grace period.
    /// Returns true when everything in flight finished in time.
    pub async fn shutdown(self) -> bool {
        let _ = self.stop.send(());
        let mut server = self.server;
        let drained = match tokio::time::timeout(self.grace, &mut server).await {
            Ok(_) => {
                tracing::info!("all in-flight requests finished; stopped");
                true
            }
            Err(_) => {
                server.abort();
                tracing::warn!(grace = ?self.grace, "grace period over; cut the remaining requests");
                false
            }
        };
        self.actors.stop().await;
        drained
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler cannot fail on unix");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown signal received; draining");
}
