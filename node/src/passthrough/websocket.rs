//! WebSocket pass-through: the backend's socket is opened first (so a backend that refuses
//! is answered as an HTTP error, before the client's upgrade), then the client's upgrade is
//! accepted with the subprotocol the backend chose, and every message is relayed both ways as
//! it comes: text, binary, ping, pong and close frames alike.
//!
//! When one side ends (a close frame, or its connection drops), the other direction gets
//! [`CLOSE_GRACE`] to deliver the closing handshake, then both sockets are dropped. A relay
//! with no frame either way for [`IDLE_TIMEOUT`] is closed too, so a peer that vanishes
//! without a FIN (a dropped NAT entry, a dead laptop) never leaves it hanging. Messages are
//! at most [`MAX_MESSAGE`] each way.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self as ts, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::hop;
use crate::error::ApiError;
use crate::proxy::backends::{Backend, HEAD_TIMEOUT};
use crate::state::AppState;

/// How long the second direction may take to finish once the first has ended.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// A relay with no frame in either direction for this long is closed (clients that idle
/// longer keep it open with pings, which count).
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest message relayed, either way.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

type BackendSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Whether the request asks to upgrade to a WebSocket.
pub(super) fn is_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

/// Opens `uri` on `backend` and answers the client's upgrade with a relay to it.
pub(super) async fn relay(
    state: &AppState,
    mut parts: Parts,
    backend: &Backend,
    uri: http::Uri,
) -> Result<Response, ApiError> {
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, state)
        .await
        .map_err(|rejection| ApiError::InvalidParam {
            param: "upgrade",
            message: format!("Invalid WebSocket upgrade: {}", rejection.body_text()),
        })?;
    let mut request = uri.into_client_request().map_err(|_| ApiError::Internal)?;
    request
        .headers_mut()
        .extend(handshake_headers(&parts, backend));
    let config = ts::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let connected = tokio::time::timeout(
        HEAD_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(request, Some(config), false),
    )
    .await;
    let (socket, response) = match connected {
        Ok(Ok(connected)) => connected,
        Ok(Err(error)) => {
            let detail = match error {
                ts::Error::Http(response) => format!(
                    "it refused the WebSocket handshake with status {}",
                    response.status().as_u16()
                ),
                _ => "the WebSocket connection failed".to_owned(),
            };
            return Err(ApiError::UpstreamUnreachable {
                upstream: backend.name.to_string(),
                detail,
            });
        }
        Err(_) => {
            return Err(ApiError::UpstreamTimeout {
                upstream: backend.name.to_string(),
                phase: "no WebSocket handshake within 300s",
            });
        }
    };
    let mut upgrade = upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE);
    if let Some(protocol) = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
    {
        upgrade = upgrade.protocols([protocol.to_owned()]);
    }
    let name = backend.name.clone();
    Ok(upgrade
        .on_failed_upgrade(move |error| {
            tracing::debug!(backend = %name, %error, "client WebSocket upgrade failed");
        })
        .on_upgrade(move |client| relay_messages(client, socket))
        .into_response())
}

/// The client's handshake headers that go to the backend: end-to-end ones and the requested
/// subprotocols; not its key, version or extensions (the backend's socket negotiates its own
/// handshake), nor its gateway credentials. The backend's headers are set over them.
fn handshake_headers(client: &Parts, backend: &Backend) -> HeaderMap {
    let mut headers = hop::to_backend(client, backend);
    for name in [
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_EXTENSIONS,
        header::CONTENT_LENGTH,
    ] {
        headers.remove(name);
    }
    headers
}

async fn relay_messages(client: WebSocket, backend: BackendSocket) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut backend_tx, mut backend_rx) = backend.split();
    let last_frame = parking_lot::Mutex::new(tokio::time::Instant::now());
    let touch = || *last_frame.lock() = tokio::time::Instant::now();
    let upstream = async {
        while let Some(Ok(message)) = client_rx.next().await {
            touch();
            let Some(message) = to_backend(message) else {
                continue;
            };
            let closing = message.is_close();
            if backend_tx.send(message).await.is_err() || closing {
                break;
            }
        }
        let _ = backend_tx.close().await;
    };
    let downstream = async {
        while let Some(Ok(message)) = backend_rx.next().await {
            touch();
            let Some(message) = to_client(message) else {
                continue;
            };
            let closing = matches!(message, ws::Message::Close(_));
            if client_tx.send(message).await.is_err() || closing {
                break;
            }
        }
        let _ = client_tx.close().await;
    };
    let idle = async {
        loop {
            let deadline = *last_frame.lock() + IDLE_TIMEOUT;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::pin!(upstream, downstream);
    tokio::select! {
        () = &mut upstream => {
            let _ = tokio::time::timeout(CLOSE_GRACE, downstream).await;
        }
        () = &mut downstream => {
            let _ = tokio::time::timeout(CLOSE_GRACE, upstream).await;
        }
        () = idle => tracing::debug!("closed an idle WebSocket relay"),
    }
}

fn to_backend(message: ws::Message) -> Option<ts::Message> {
    Some(match message {
        ws::Message::Text(text) => ts::Message::Text(Utf8Bytes::try_from(Bytes::from(text)).ok()?),
        ws::Message::Binary(data) => ts::Message::Binary(data),
        ws::Message::Ping(data) => ts::Message::Ping(data),
        ws::Message::Pong(data) => ts::Message::Pong(data),
        ws::Message::Close(frame) => ts::Message::Close(frame.map(|f| CloseFrame {
            code: f.code.into(),
            reason: Utf8Bytes::try_from(Bytes::from(f.reason)).unwrap_or_default(),
        })),
    })
}

fn to_client(message: ts::Message) -> Option<ws::Message> {
    Some(match message {
        ts::Message::Text(text) => {
            ws::Message::Text(ws::Utf8Bytes::try_from(Bytes::from(text)).ok()?)
        }
        ts::Message::Binary(data) => ws::Message::Binary(data),
        ts::Message::Ping(data) => ws::Message::Ping(data),
        ts::Message::Pong(data) => ws::Message::Pong(data),
        ts::Message::Close(frame) => ws::Message::Close(frame.map(|f| ws::CloseFrame {
            code: f.code.into(),
            reason: ws::Utf8Bytes::try_from(Bytes::from(f.reason)).unwrap_or_default(),
        })),
        // Raw frames only appear when writing; a read never yields one.
        ts::Message::Frame(_) => return None,
    })
}

/// `value` as a header value, for the `Authorization` a WebSocket client passed in its query.
pub(super) fn bearer(secret: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {secret}")).ok()
}
