//! How an API request enters the mock: counted, recorded, then put through the current
//! behaviour's faults (hang, latency, injected error) before its handler sees it.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::error::{ApiError, json_response};
use super::state::{MockState, Prepared};
use super::stats::InFlight;

/// Large enough for any realistic prompt a benchmark sends.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// A request that passed the faults, with what its handler needs.
pub(crate) struct Admitted {
    /// The request's number, from 1; names its ids.
    pub(crate) n: u64,
    pub(crate) in_flight: InFlight,
    pub(crate) body: Bytes,
    /// The behaviour as it was when the request arrived.
    pub(crate) prepared: Arc<Prepared>,
}

/// The API whose error shape an injected error takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    Anthropic,
}

pub(crate) async fn admit(state: &MockState, request: Request) -> Result<Admitted, Response> {
    admit_as(state, request, Dialect::OpenAi).await
}

pub(crate) async fn admit_as(
    state: &MockState,
    request: Request,
    dialect: Dialect,
) -> Result<Admitted, Response> {
    let (n, in_flight) = state.counters.admit();
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            ApiError::invalid_request(format!("could not read the request body: {e}"))
                .into_response()
        })?;
    state
        .last_request
        .record(parts.method, parts.uri, parts.headers, body.clone());
    let prepared = state.prepared();
    if prepared.behavior.hang {
        // Held until the client goes away or the server stops; `in_flight` shows it meanwhile.
        std::future::pending::<()>().await;
    }
    if !prepared.latency.is_zero() {
        tokio::time::sleep(prepared.latency).await;
    }
    if prepared.error_rate > 0.0 && rand::random::<f64>() < prepared.error_rate {
        let body = match dialect {
            Dialect::OpenAi => prepared.error_body.clone(),
            Dialect::Anthropic => {
                super::anthropic::error_body(prepared.error_status, "injected by aigw-mock")
            }
        };
        return Err(json_response(prepared.error_status, body));
    }
    Ok(Admitted {
        n,
        in_flight,
        body,
        prepared,
    })
}
