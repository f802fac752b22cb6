//! aigw, the node: the OpenAI-compatible API server, the proxy engine that calls upstreams, and
//! the command line.
//!
//! Owns: everything HTTP. One folder per concern, in layers that point one way
//! (docs/ARCHITECTURE.md, "Layers inside node/"; `tests/layers.rs` guards them):
//! - `server.rs` composes the routers and starts and stops the node; `listener.rs` accepts
//!   client connections and bounds their life (timeouts, a cap per listener);
//! - handlers: `openai/` (the OpenAI API, one file per endpoint), `passthrough/` (MCP, agents,
//!   sandboxes), `admin/` (the admin API);
//! - `state.rs`, the composition root only handlers and the server read;
//! - engines: `proxy/` (routes, upstream clients, failover, relaying bodies), `quota/` (key
//!   limits and leases), `usage/` (metering);
//! - the bottom: `error.rs` (the client-visible error), `tokens.rs`, `signed_id.rs`, `sse.rs`.
//!
//! Engines never import a handler or the state: they take the narrow context they need.
//!
//! Never: waits on a peer, Raft or an actor on the request path; it reads snapshots
//! (`ArcSwap`) that the cluster and the actors publish. Never logs a secret.
//!
//! Called by: `main.rs` (the `aigw` binary) and the integration tests, through `RunningNode`.
#![forbid(unsafe_code)]

mod admin;
pub mod admin_client;
pub mod demo;
mod error;
mod listener;
mod openai;
mod passthrough;
mod peer;
mod providers;
mod proxy;
mod quota;
pub mod records;
mod server;
mod signed_id;
mod sse;
mod state;
mod tokens;
mod usage;

pub use server::{RunningNode, StartError, shutdown_signal};

/// Installs rustls' ring crypto provider as the process default. Call once before any TLS use:
/// with more than one provider compiled in, rustls would otherwise fail at run time.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
