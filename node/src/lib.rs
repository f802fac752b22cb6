//! aigw, the node: the OpenAI-compatible API server, the proxy engine that calls upstreams, and
//! the command line.
//!
//! Owns: everything HTTP. One folder per concern: `openai/` (handlers, auth, errors), `proxy/`
//! (routes, upstream clients, relaying bodies). Handlers call into those folders, never the
//! other way round.
//!
//! Never: waits on a peer, Raft or an actor on the request path; it reads snapshots
//! (`ArcSwap`) that the cluster and the actors publish. Never logs a secret.
//!
//! Called by: `main.rs` (the `aigw` binary) and the integration tests, through `RunningNode`.
#![forbid(unsafe_code)]

mod admin;
pub mod admin_client;
pub mod demo;
mod openai;
mod passthrough;
mod proxy;
mod quota;
mod server;
mod sse;
mod state;
mod usage;

pub use server::{RunningNode, StartError, shutdown_signal};

/// Installs rustls' ring crypto provider as the process default. Call once before any TLS use:
/// with more than one provider compiled in, rustls would otherwise fail at run time.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
