//! Test helpers: a mock upstream and a node on ephemeral loopback ports, and assertions on
//! OpenAI's error shape.
#![allow(dead_code)] // each test binary uses its own subset

use std::time::Duration;

use aigw::RunningNode;
use aigw_jepsen::mock::{MockBehavior, MockServer, MockStats};
use serde_json::Value;
use tokio::net::TcpListener;

pub const KEY: &str = "sk-test-all-models";
pub const LIMITED_KEY: &str = "sk-test-only-other";
pub const UPSTREAM_KEY: &str = "upstream-secret-123";

pub async fn mock(behavior: MockBehavior) -> MockServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    MockServer::start(listener, behavior).await.unwrap()
}

/// A config for one node on an ephemeral port in front of `upstream` (host:port), with a key
/// for every model and a key for `other-model` only. `extra` is appended to `[server]`,
/// `timeouts` is the upstream's inline timeouts table.
pub fn config_text(upstream: &str, server_extra: &str, timeouts: &str) -> String {
    let data_dir = fresh_data_dir().display().to_string();
    format!(
        r#"
[node]
id = 1
api_listen = "127.0.0.1:0"
data_dir = "{data_dir}"

[server]
{server_extra}

[[bootstrap.upstreams]]
id = "mock-a"
kind = "openai"
base_url = "http://{upstream}/v1"
api_key = "${{UPSTREAM_KEY}}"
timeouts = {{ {timeouts} }}

[[bootstrap.models]]
name = "chat-default"
targets = [{{ upstream = "mock-a", model = "upstream-model-x", weight = 1 }}]

[[bootstrap.models]]
name = "other-model"
targets = [{{ upstream = "mock-a", model = "upstream-model-y" }}]

[[bootstrap.keys]]
name = "all"
secret = "{KEY}"
models = ["*"]

[[bootstrap.keys]]
name = "limited"
secret = "{LIMITED_KEY}"
models = ["other-model"]
"#
    )
}

fn test_env(name: &str) -> Option<String> {
    (name == "UPSTREAM_KEY").then(|| UPSTREAM_KEY.to_owned())
}

/// A fresh directory for a node's Raft store (left in the temp dir; a few KB each).
pub fn fresh_data_dir() -> std::path::PathBuf {
    tempfile::Builder::new()
        .prefix("aigw-test-")
        .tempdir()
        .unwrap()
        .keep()
}

pub async fn node_with(text: &str) -> RunningNode {
    node_in(text, &fresh_data_dir()).await
}

/// A node of `text` on `data_dir`, which a node of this process may have used before (a
/// restart): its files are retried until the stopped node's last tasks let go of them.
pub async fn node_in(text: &str, data_dir: &std::path::Path) -> RunningNode {
    aigw::install_crypto_provider();
    let mut config = aigw_config::parse_with_env(text, "test.toml", &test_env)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    config.node.data_dir = data_dir.to_owned();
    for _ in 0..100 {
        match RunningNode::start_with_env(&config, std::sync::Arc::new(test_env)).await {
            Ok(node) => return node,
            Err(e) if e.to_string().contains("already open") => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("node did not start: {e}"),
        }
    }
    panic!("the data dir stayed locked")
}

pub async fn node(mock: &MockServer) -> RunningNode {
    node_with(&config_text(&mock.addr().to_string(), "", "")).await
}

pub fn client() -> reqwest::Client {
    aigw::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub fn url(node: &RunningNode, path: &str) -> String {
    format!("http://{}{}", node.api_addr(), path)
}

pub async fn chat(node: &RunningNode, key: &str, body: Value) -> reqwest::Response {
    client()
        .post(url(node, "/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Asserts `response` has `status` and an OpenAI error body with `code`; returns the body.
pub async fn assert_openai_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    assert!(error.get("param").is_some(), "{body}");
    assert_eq!(error["code"], code, "{body}");
    body
}

/// Waits (bounded) until the mock's stats satisfy `cond`.
pub async fn wait_for_stats(mock: &MockServer, cond: impl Fn(&MockStats) -> bool) -> MockStats {
    for _ in 0..200 {
        let stats = mock.stats();
        if cond(&stats) {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("mock stats never reached the condition: {:?}", mock.stats());
}

pub fn user_message() -> Value {
    serde_json::json!([{"role": "user", "content": "Hello there"}])
}

/// A random 127.x.y.z per node, so parallel tests never share a socket.
pub fn loopback() -> std::net::IpAddr {
    let [a, b, c]: [u8; 3] = rand::random();
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, a.max(1), b, c.clamp(2, 254)))
}

/// A request to `node`'s admin API with `token`.
pub fn admin_request(
    node: &RunningNode,
    token: &str,
    method: reqwest::Method,
    path: &str,
) -> reqwest::RequestBuilder {
    client()
        .request(
            method,
            format!("http://{}/admin/v1{path}", node.admin_addr().unwrap()),
        )
        .bearer_auth(token)
}

/// `text` (a [`config_text`]) on a fresh loopback address, with an admin listener and `token`.
pub fn with_admin(text: &str, token: &str) -> String {
    let ip = loopback();
    text.replace(
        "api_listen = \"127.0.0.1:0\"",
        &format!("api_listen = \"{ip}:0\"\nadmin_listen = \"{ip}:0\""),
    ) + &format!("\n[admin]\ntoken = \"{token}\"\n")
}

/// The node's first records sink as `GET /admin/v1/records/sinks` shows it, polled every
/// 100 ms until `ready` holds or `within` has passed; the last view either way.
pub async fn sink_until(
    node: &RunningNode,
    token: &str,
    within: Duration,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let view: Value = admin_request(node, token, reqwest::Method::GET, "/records/sinks")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let sink = view["sinks"][0].clone();
        if ready(&sink) || tokio::time::Instant::now() >= deadline {
            return sink;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts the real binary, `aigw serve --config CONFIG`; the child and its API address, read
/// from its log.
pub fn spawn_aigw_at(config: &std::path::Path) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_aigw"))
        .args(["serve", "--config"])
        .arg(config)
        .env("UPSTREAM_KEY", UPSTREAM_KEY)
        .env("AIGW_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(addr) = line.split("api_addr=").nth(1) {
                let _ = tx.send(addr.split_whitespace().next().unwrap().to_owned());
                sent = true;
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("aigw did not report its address");
    (child, addr)
}

/// The `[node]` and `[cluster]` sections of node `id` (from 1) of a cluster on the loopback
/// addresses `ips` (one a node, each with an admin listener), with Raft and gossip timings
/// short enough for tests.
pub fn cluster_node_sections(id: u64, ips: &[std::net::IpAddr], name: &str) -> String {
    let members: Vec<String> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| format!("\"{}@{ip}:7001\"", i + 1))
        .collect();
    let ip = ips[id as usize - 1];
    format!(
        r#"
[node]
id = {id}
api_listen = "{ip}:0"
admin_listen = "{ip}:0"
cluster_listen = "{ip}:7001"

[cluster]
name = "{name}"
initial_members = [{members}]
heartbeat = "50ms"
election_timeout_min = "250ms"
election_timeout_max = "500ms"
write_timeout = "2s"
gossip_interval = "100ms"
"#,
        members = members.join(", "),
    )
}

/// The three nodes of `texts` on `dirs`, started together: a new cluster needs a quorum
/// before it can apply its bootstrap.
pub async fn start_three(texts: &[String], dirs: &[std::path::PathBuf]) -> Vec<RunningNode> {
    let (a, b, c) = tokio::join!(
        node_in(&texts[0], &dirs[0]),
        node_in(&texts[1], &dirs[1]),
        node_in(&texts[2], &dirs[2])
    );
    vec![a, b, c]
}

/// The boundary of the multipart bodies [`multipart_form`] writes.
pub const FORM_BOUNDARY: &str = "aigwTestBoundary7";

/// A multipart/form-data body: text fields, then files (field, file name, content type,
/// bytes).
pub fn multipart_form(fields: &[(&str, &str)], files: &[(&str, &str, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(
            format!(
                "--{FORM_BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    for (name, file_name, content_type, bytes) in files {
        out.extend_from_slice(
            format!("--{FORM_BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\nContent-Type: {content_type}\r\n\r\n")
                .as_bytes(),
        );
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{FORM_BOUNDARY}--\r\n").as_bytes());
    out
}

/// `body` (a [`multipart_form`]) POSTed to `path` with `key`.
pub async fn post_form(
    node: &RunningNode,
    key: &str,
    path: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    client()
        .post(url(node, path))
        .bearer_auth(key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={FORM_BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A mono 16-bit PCM WAV of `seconds` at 16 kHz, its samples `fill` repeated.
pub fn wav_of(seconds: u32, fill: &[u8]) -> Vec<u8> {
    let rate: u32 = 16_000;
    let data_len = seconds * rate * 2;
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    for (value, bytes) in [
        (16u32, 4),
        (1, 2),
        (1, 2),
        (rate, 4),
        (rate * 2, 4),
        (2, 2),
        (16, 2),
    ] {
        out.extend_from_slice(&value.to_le_bytes()[..bytes]);
    }
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.extend(fill.iter().copied().cycle().take(data_len as usize));
    out
}
