//! The pass-through capabilities through a real node: `/v1/agent/{type}`, `/v1/sandboxes/{name}`
//! (HTTP, SSE and WebSocket) and `/v1/mcp/{server}` (session ids signed, the SSE transport's
//! endpoint rewritten), against real backends on loopback: an axum server that echoes what it
//! received and a tokio-tungstenite echo server.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aigw::RunningNode;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use common::{UPSTREAM_KEY, admin_request, assert_openai_error, client, node_with, url};
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

const KEY: &str = "sk-pass-all-00000001";
const LEGACY_ONLY_KEY: &str = "sk-pass-legacy-only-02";
const TWO_CALLS_KEY: &str = "sk-pass-two-calls-003";
const ADMIN_TOKEN: &str = "admin-token-for-passthrough-tests";
/// What the upstream MCP server names its session.
const UPSTREAM_SESSION: &str = "upstream-session-1";

/// The HTTP backend: echoes every request as JSON, except `/mcp` (answers with a session
/// id), `/sse` (the SSE transport's endpoint event) and `.../events` (two SSE events, the
/// second only once the test releases it).
struct HttpBackend {
    addr: SocketAddr,
    release: Arc<Notify>,
}

async fn http_backend() -> HttpBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    let app = axum::Router::new().fallback(move |request: Request| {
        let gate = Arc::clone(&gate);
        async move { backend_answer(request, gate).await }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    HttpBackend { addr, release }
}

async fn backend_answer(request: Request, release: Arc<Notify>) -> Response {
    let path = request.uri().path().to_owned();
    if path.ends_with("/events") {
        let first = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(
            b"data: one\n\n",
        ))]);
        let second = futures::stream::once(async move {
            release.notified().await;
            Ok(Bytes::from_static(b"data: two\n\n"))
        });
        return (
            [("content-type", "text/event-stream")],
            Body::from_stream(first.chain(second)),
        )
            .into_response();
    }
    if path == "/sse" {
        return (
            [("content-type", "text/event-stream")],
            "event: endpoint\ndata: /messages/?session_id=legacy-1\n\n",
        )
            .into_response();
    }
    let echo = echo_of(request).await;
    if path == "/mcp" {
        return ([("mcp-session-id", UPSTREAM_SESSION)], axum::Json(echo)).into_response();
    }
    axum::Json(echo).into_response()
}

async fn echo_of(request: Request) -> Value {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    })
}

/// What the WebSocket backend saw in each handshake: the request's path and query, and its
/// headers.
type Handshakes = Arc<Mutex<Vec<(String, BTreeMap<String, String>)>>>;

/// A WebSocket echo server (tokio-tungstenite) that picks the `chat.v1` subprotocol when
/// asked for it.
#[allow(clippy::result_large_err)] // tungstenite's handshake callback returns its Response as Err
async fn ws_backend() -> (SocketAddr, Handshakes) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Handshakes = Arc::default();
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let callback = |request: &WsRequest, mut response: WsResponse| {
                    let headers = request
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    record
                        .lock()
                        .unwrap()
                        .push((request.uri().to_string(), headers));
                    let asked = request
                        .headers()
                        .get("sec-websocket-protocol")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.split(',').any(|p| p.trim() == "chat.v1"));
                    if asked {
                        response.headers_mut().insert(
                            "sec-websocket-protocol",
                            http::HeaderValue::from_static("chat.v1"),
                        );
                    }
                    Ok(response)
                };
                let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await
                else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    let data = message.is_text() || message.is_binary();
                    if data && socket.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn config(http: SocketAddr, ws: SocketAddr) -> String {
    let data_dir = common::fresh_data_dir().display().to_string();
    let token = r#"headers = { "X-Upstream-Token" = "${UPSTREAM_KEY}" }"#;
    format!(
        r#"
[node]
id = 1
api_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
data_dir = "{data_dir}"

[server]
id_secret = "one-secret-for-the-whole-cluster"

[admin]
token = "{ADMIN_TOKEN}"

[[bootstrap.mcp_servers]]
name = "tools"
url = "http://{http}/mcp"
{token}

[[bootstrap.mcp_servers]]
name = "legacy"
url = "http://{http}"
{token}

[[bootstrap.agents]]
type = "coder"
url = "http://{http}/agent"
{token}

[[bootstrap.sandboxes]]
name = "box"
url = "http://{ws}/base"
{token}

[[bootstrap.sandboxes]]
name = "files"
url = "http://{http}/sandbox"
{token}

[[bootstrap.keys]]
name = "all"
secret = "{KEY}"

[[bootstrap.keys]]
name = "legacy-only"
secret = "{LEGACY_ONLY_KEY}"
mcp_servers = ["legacy"]

[[bootstrap.keys]]
name = "two-calls"
secret = "{TWO_CALLS_KEY}"
limits = {{ calls = {{ limit = 2, period = "day" }} }}
"#
    )
}

struct Fixture {
    node: RunningNode,
    http: HttpBackend,
    ws_seen: Handshakes,
}

async fn fixture() -> Fixture {
    let http = http_backend().await;
    let (ws, ws_seen) = ws_backend().await;
    let node = node_with(&config(http.addr, ws)).await;
    Fixture {
        node,
        http,
        ws_seen,
    }
}

async fn json_of(response: reqwest::Response) -> Value {
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

#[tokio::test]
async fn http_passes_through_with_credentials_injected_and_hop_by_hop_headers_dropped() {
    let f = fixture().await;
    let response = client()
        .post(url(&f.node, "/v1/agent/coder/runs/7?stream=false&x=%2F"))
        .bearer_auth(KEY)
        .header("connection", "keep-alive, x-private-hop")
        .header("x-private-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic abc")
        .header("x-upstream-token", "the client cannot choose this")
        .header("x-end-to-end", "kept")
        .body("a request body")
        .send()
        .await
        .unwrap();
    let echo = json_of(response).await;
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/agent/runs/7");
    assert_eq!(echo["query"], "stream=false&x=%2F");
    assert_eq!(echo["body"], "a request body");
    let headers = echo["headers"].as_object().unwrap();
    assert_eq!(headers["x-upstream-token"], UPSTREAM_KEY);
    assert_eq!(headers["x-end-to-end"], "kept");
    for dropped in [
        "authorization",
        "x-private-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
    ] {
        assert!(
            !headers.contains_key(dropped),
            "{dropped} reached the backend"
        );
    }
    // The gateway's key appears nowhere in what the backend got.
    assert!(!echo.to_string().contains(KEY));

    // Nor does it when a client also puts it in the query, whatever the encoding.
    let response = client()
        .get(url(
            &f.node,
            "/v1/agent/coder/runs?api%5Fkey=leak&a=1&api_key=leak",
        ))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(response).await["query"], "a=1");
    // A path that would climb out of the backend's base path is refused.
    let response = client()
        .get(url(&f.node, "/v1/agent/coder/..%2f..%2fadmin"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_openai_error(response, 400, "invalid_value").await;

    // Every method passes, and the bare name is the backend's URL itself.
    let response = client()
        .delete(url(&f.node, "/v1/sandboxes/files"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let echo = json_of(response).await;
    assert_eq!(
        (echo["method"].as_str(), echo["path"].as_str()),
        (Some("DELETE"), Some("/sandbox"))
    );
}

#[tokio::test]
async fn sse_passes_through_event_by_event() {
    let f = fixture().await;
    let response = client()
        .get(url(&f.node, "/v1/agent/coder/events"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();
    // The first event arrives while the backend still holds the second back: no buffering.
    let first = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("the first event was held back")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: one\n\n");
    f.http.release.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(rest, b"data: two\n\n");
}

#[tokio::test]
async fn a_websocket_echoes_through_the_sandbox_proxy_with_the_key_in_the_query() {
    let f = fixture().await;
    let address = format!(
        "ws://{}/v1/sandboxes/box/ws?api_key={KEY}&room=1",
        f.node.api_addr()
    );
    let mut request = address.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        http::HeaderValue::from_static("chat.v1"),
    );
    request
        .headers_mut()
        .insert("x-end-to-end", http::HeaderValue::from_static("kept"));
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v1");

    socket.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_data(&mut socket).await, Message::text("hello"));
    socket
        .send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        next_data(&mut socket).await,
        Message::binary(vec![0u8, 1, 2, 255])
    );
    socket
        .send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    let pong = loop {
        match next_message(&mut socket).await {
            Some(Message::Pong(data)) => break data,
            Some(_) => continue,
            None => panic!("closed before a pong"),
        }
    };
    assert_eq!(&pong[..], b"are you there");
    socket
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })))
        .await
        .unwrap();
    let closed = loop {
        match next_message(&mut socket).await {
            Some(Message::Close(frame)) => break frame,
            Some(_) => continue,
            None => break None,
        }
    };
    assert_eq!(closed.map(|f| f.code), Some(CloseCode::Normal));

    let seen = f.ws_seen.lock().unwrap().clone();
    let (uri, headers) = &seen[0];
    assert_eq!(uri, "/base/ws?room=1", "the key left the query");
    assert_eq!(headers["x-upstream-token"], UPSTREAM_KEY);
    assert_eq!(headers["x-end-to-end"], "kept");
    assert!(!headers.contains_key("authorization"));
}

#[tokio::test]
async fn a_websocket_takes_the_key_from_the_authorization_header_and_refuses_none() {
    let f = fixture().await;
    let address = format!("ws://{}/v1/sandboxes/box", f.node.api_addr());
    let mut request = address.clone().into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        http::HeaderValue::from_str(&format!("Bearer {KEY}")).unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_data(&mut socket).await, Message::text("hi"));
    assert!(!f.ws_seen.lock().unwrap()[0].1.contains_key("authorization"));

    for address in [
        address.clone(),
        format!("{address}?api_key=sk-wrong-key-123"),
    ] {
        match tokio_tungstenite::connect_async(address).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401);
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
                assert!(body["error"]["code"].is_string(), "{body}");
            }
            other => panic!("expected a 401, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn requests_without_a_valid_key_or_to_unknown_backends_are_refused_in_openai_shape() {
    let f = fixture().await;
    let http = client();
    let response = http
        .get(url(&f.node, "/v1/agent/coder/x"))
        .send()
        .await
        .unwrap();
    assert_openai_error(response, 401, "missing_api_key").await;
    let response = http
        .get(url(&f.node, "/v1/sandboxes/files/x"))
        .bearer_auth("sk-not-a-key-0000")
        .send()
        .await
        .unwrap();
    assert_openai_error(response, 401, "invalid_api_key").await;
    // The query key is for WebSocket upgrades only.
    let response = http
        .get(url(
            &f.node,
            &format!("/v1/sandboxes/files/x?api_key={KEY}"),
        ))
        .send()
        .await
        .unwrap();
    assert_openai_error(response, 401, "missing_api_key").await;
    for path in ["/v1/agent/nope/x", "/v1/sandboxes/nope", "/v1/mcp/nope"] {
        let response = http
            .post(url(&f.node, path))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        let body = assert_openai_error(response, 404, "not_found").await;
        assert!(body["error"]["message"].as_str().unwrap().contains("nope"));
    }
}

#[tokio::test]
async fn a_key_may_use_only_its_mcp_servers() {
    let f = fixture().await;
    let response = client()
        .post(url(&f.node, "/v1/mcp/tools"))
        .bearer_auth(LEGACY_ONLY_KEY)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    let body = assert_openai_error(response, 403, "permission_denied").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("tools"));
    let response = client()
        .get(url(&f.node, "/v1/mcp/legacy/sse"))
        .bearer_auth(LEGACY_ONLY_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_keys_mcp_servers_are_set_and_changed_through_the_admin_api() {
    let f = fixture().await;
    let admin = |method, path: &str| admin_request(&f.node, ADMIN_TOKEN, method, path);
    let created = json_of(
        admin(reqwest::Method::POST, "/keys")
            .json(&json!({"name": "mcp-admin", "mcp_servers": ["legacy"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(created["mcp_servers"], json!(["legacy"]));
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let tools = || {
        client()
            .post(url(&f.node, "/v1/mcp/tools"))
            .bearer_auth(&secret)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
            .send()
    };
    assert_openai_error(tools().await.unwrap(), 403, "permission_denied").await;

    let patched = json_of(
        admin(reqwest::Method::PATCH, &format!("/keys/{id}"))
            .json(&json!({"mcp_servers": null}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(patched["mcp_servers"], json!(["*"]));
    let mut status = 0;
    for _ in 0..100 {
        status = tools().await.unwrap().status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);

    let response = admin(reqwest::Method::PATCH, &format!("/keys/{id}"))
        .json(&json!({"mcp_servers": ["*", "tools"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn the_mcp_session_id_is_signed_for_the_client_and_restored_for_the_server() {
    let f = fixture().await;
    let post = |session: Option<&str>| {
        let mut request = client()
            .post(url(&f.node, "/v1/mcp/tools"))
            .bearer_auth(KEY)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize"}));
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request.send()
    };
    let response = post(None).await.unwrap();
    let signed = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        signed.starts_with("mcp_") && !signed.contains(UPSTREAM_SESSION),
        "{signed}"
    );
    let echo = json_of(response).await;
    assert_eq!(echo["path"], "/mcp");
    assert_eq!(echo["headers"]["x-upstream-token"], UPSTREAM_KEY);

    let echo = json_of(post(Some(&signed)).await.unwrap()).await;
    assert_eq!(echo["headers"]["mcp-session-id"], UPSTREAM_SESSION);

    // One character changed, the upstream's raw id, or another key's use: a 404.
    let mut tampered = signed.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    for bad in [tampered.as_str(), UPSTREAM_SESSION] {
        let response = post(Some(bad)).await.unwrap();
        assert_openai_error(response, 404, "not_found").await;
    }
    let response = client()
        .delete(url(&f.node, "/v1/mcp/legacy"))
        .bearer_auth(LEGACY_ONLY_KEY)
        .header("mcp-session-id", &signed)
        .send()
        .await
        .unwrap();
    assert_openai_error(response, 404, "not_found").await;
}

#[tokio::test]
async fn the_sse_transports_endpoint_leads_back_through_the_gateway() {
    let f = fixture().await;
    let stream = client()
        .get(url(&f.node, "/v1/mcp/legacy/sse"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let endpoint = stream
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no endpoint in {stream:?}"));
    assert!(stream.starts_with("event: endpoint"), "{stream}");
    let signed = endpoint
        .strip_prefix("/v1/mcp/legacy/messages/?session_id=")
        .unwrap_or_else(|| panic!("endpoint not rewritten: {endpoint}"));
    assert!(signed.starts_with("mcp_"), "{signed}");

    let response = client()
        .post(url(&f.node, endpoint))
        .bearer_auth(KEY)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    let echo = json_of(response).await;
    assert_eq!(echo["path"], "/messages/");
    assert_eq!(echo["query"], "session_id=legacy-1");

    let forged = endpoint.replace(signed, "mcp_00_00");
    let response = client()
        .post(url(&f.node, &forged))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_openai_error(response, 404, "not_found").await;
}

#[tokio::test]
async fn pass_through_calls_count_against_the_call_quota_and_in_usage() {
    let f = fixture().await;
    for _ in 0..2 {
        let response = client()
            .get(url(&f.node, "/v1/agent/coder/x"))
            .bearer_auth(TWO_CALLS_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let response = client()
        .get(url(&f.node, "/v1/sandboxes/files/x"))
        .bearer_auth(TWO_CALLS_KEY)
        .send()
        .await
        .unwrap();
    assert_openai_error(response, 429, "insufficient_quota").await;

    let response = admin_request(&f.node, ADMIN_TOKEN, reqwest::Method::GET, "/usage")
        .send()
        .await
        .unwrap();
    let usage = json_of(response).await;
    let agent_calls: u64 = usage["usage"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["capability"] == "agent")
        .map(|row| row["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(agent_calls, 2, "{usage}");
}

#[tokio::test]
async fn backends_follow_live_settings_changes() {
    let f = fixture().await;
    let late = || {
        client()
            .get(url(&f.node, "/v1/sandboxes/late/x"))
            .bearer_auth(KEY)
            .send()
    };
    assert_eq!(late().await.unwrap().status(), 404);
    let doc = format!(
        "[[sandboxes]]\nname = \"late\"\nurl = \"http://{}/late\"\nheaders = {{ \"X-Upstream-Token\" = \"${{UPSTREAM_KEY}}\" }}\n",
        f.http.addr
    );
    let response = admin_request(&f.node, ADMIN_TOKEN, reqwest::Method::PUT, "/settings")
        .header("content-type", "application/toml")
        .body(doc)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
    let mut status = 0;
    for _ in 0..100 {
        status = late().await.unwrap().status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "the new sandbox never became reachable");
    let echo = json_of(late().await.unwrap()).await;
    assert_eq!(echo["path"], "/late/x");
    // The settings document shown to the admin keeps the reference, not the credential.
    let shown = admin_request(&f.node, ADMIN_TOKEN, reqwest::Method::GET, "/settings")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!shown.contains(UPSTREAM_KEY), "{shown}");
    // The old backends went with the old settings.
    let response = client()
        .post(url(&f.node, "/v1/mcp/tools"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_openai_error(response, 404, "not_found").await;
}

type ClientSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_message(socket: &mut ClientSocket) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("no message within 10s")
        .map(|m| m.unwrap())
}

/// The next text or binary message, skipping control frames.
async fn next_data(socket: &mut ClientSocket) -> Message {
    loop {
        match next_message(socket).await {
            Some(message) if message.is_text() || message.is_binary() => return message,
            Some(_) => continue,
            None => panic!("closed before a data message"),
        }
    }
}

/// What a backend gets for a request with forwarding headers of its own.
async fn forwarded_echo(node: &RunningNode) -> serde_json::Map<String, Value> {
    let response = client()
        .get(url(node, "/v1/agent/coder/whoami"))
        .bearer_auth(KEY)
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-real-ip", "203.0.113.9")
        .header("forwarded", "for=203.0.113.9;host=evil.example")
        .header("x-forwarded-host", "evil.example")
        .send()
        .await
        .unwrap();
    json_of(response).await["headers"]
        .as_object()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn an_untrusted_clients_forwarding_headers_are_replaced_by_its_address() {
    let f = fixture().await;
    let headers = forwarded_echo(&f.node).await;
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["forwarded"], "for=127.0.0.1");
    assert!(!headers.contains_key("x-real-ip"), "{headers:?}");
    assert!(!headers.contains_key("x-forwarded-host"), "{headers:?}");
}

#[tokio::test]
async fn a_trusted_proxys_forwarding_headers_pass_with_the_proxy_appended() {
    let http = http_backend().await;
    let (ws, _) = ws_backend().await;
    let text = config(http.addr, ws).replace(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.0/8\"]\n",
    );
    let node = node_with(&text).await;
    let headers = forwarded_echo(&node).await;
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(
        headers["forwarded"],
        "for=203.0.113.9;host=evil.example, for=127.0.0.1"
    );
    assert_eq!(headers["x-real-ip"], "203.0.113.9");
    assert_eq!(headers["x-forwarded-host"], "evil.example");
}
