//! `aigw demo`: one node with an embedded example config in front of an in-process mock
//! upstream, so a newcomer has a working gateway with one command and no set-up.

use std::net::SocketAddr;

use aigw_jepsen::mock::{MockBehavior, MockServer};
use tokio::net::TcpListener;

use crate::{RunningNode, shutdown_signal};

/// The demo's settings; `{mock}` and `{key}` are filled in at start.
const DEMO_CONFIG: &str = r#"
[node]
id = 1
api_listen = "{listen}"
data_dir = "{data_dir}"

[[bootstrap.upstreams]]
id = "mock"
kind = "openai"
base_url = "http://{mock}/v1"

[[bootstrap.models]]
name = "chat-default"
strategy = "weighted"
targets = [{ upstream = "mock", model = "mock-model", weight = 1 }]

[[bootstrap.keys]]
name = "demo"
secret = "{key}"
models = ["*"]
"#;

/// Runs the demo until SIGINT or SIGTERM.
pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let mock_listener = TcpListener::bind("127.0.0.1:0").await?;
    let behavior = MockBehavior {
        chunk_interval_ms: 40,
        ..MockBehavior::default()
    };
    let mock = MockServer::start(mock_listener, behavior).await?;
    let key = format!("sk-aigw-demo-{:032x}", rand::random::<u128>());
    // A new cluster every run: `[bootstrap]` (with this run's key) applies only to a new one.
    let data_dir = std::env::temp_dir().join(format!("aigw-demo-{}", std::process::id()));
    let text = DEMO_CONFIG
        .replace("{data_dir}", &data_dir.display().to_string())
        .replace("{listen}", &listen.to_string())
        .replace("{mock}", &mock.addr().to_string())
        .replace("{key}", &key);
    let config = aigw_config::parse_with_env(&text, "<demo>", &|_| None)
        .map_err(|e| anyhow::anyhow!("the embedded demo config is invalid:\n{e}"))?;
    let node = RunningNode::start(&config).await?;
    let url = format!("http://{}", node.api_addr());
    println!(
        r#"
aigw demo is running: an OpenAI-compatible gateway at {url}/v1
in front of a mock upstream at http://{mock}/v1 (model "chat-default").

Demo key: {key}

Try it with curl:
  curl -s {url}/v1/chat/completions -H "Authorization: Bearer {key}" -H "Content-Type: application/json" -d '{{"model":"chat-default","messages":[{{"role":"user","content":"Hello"}}]}}'

Streaming:
  curl -sN {url}/v1/chat/completions -H "Authorization: Bearer {key}" -H "Content-Type: application/json" -d '{{"model":"chat-default","stream":true,"messages":[{{"role":"user","content":"Hello"}}]}}'

Or with the OpenAI Python SDK (pip install openai):
  python3 -c 'from openai import OpenAI; c = OpenAI(base_url="{url}/v1", api_key="{key}"); print(c.chat.completions.create(model="chat-default", messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)'

Press Ctrl-C to stop.
"#,
        mock = mock.addr(),
    );
    shutdown_signal().await;
    node.shutdown().await;
    mock.shutdown().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}
