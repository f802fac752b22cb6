//! Graceful shutdown of the real `aigw` binary on SIGTERM: in-flight streams finish, new
//! connections are refused, the process exits 0; past the grace period what is left is cut.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use aigw_jepsen::mock::MockBehavior;
use common::*;
use serde_json::json;

/// Starts `aigw serve` with `text` as its config; returns the child and its API address.
fn spawn_aigw(text: &str) -> (Child, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aigw.toml");
    std::fs::write(&path, text).unwrap();
    let (child, addr) = spawn_aigw_at(&path);
    (child, addr, dir)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..400 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    child.kill().unwrap();
    panic!("aigw did not exit after SIGTERM");
}

async fn open_stream(addr: &str) -> reqwest::Response {
    let response = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "chat-default", "messages": user_message(), "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_stream_finish_then_exits_0() {
    let mock = mock(MockBehavior {
        chunks: 15,
        chunk_interval_ms: 100,
        ..MockBehavior::default()
    })
    .await;
    let (mut child, addr, _dir) = spawn_aigw(&config_text(
        &mock.addr().to_string(),
        r#"shutdown_grace = "20s""#,
        "",
    ));
    let mut stream = open_stream(&addr).await;
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());

    sigterm(&child);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = client()
        .get(format!("http://{addr}/v1/models"))
        .bearer_auth(KEY)
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a draining node must not accept new connections"
    );

    let mut rest = Vec::new();
    while let Some(chunk) = stream.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    let rest = String::from_utf8(rest).unwrap();
    assert!(
        rest.trim_end().ends_with("data: [DONE]"),
        "stream cut short: {rest:?}"
    );
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));
    assert_eq!(mock.stats().streams_completed, 1);
}

#[tokio::test]
async fn past_the_grace_period_remaining_streams_are_cut_and_the_exit_is_still_0() {
    let mock = mock(MockBehavior {
        chunks: 400,
        chunk_interval_ms: 50,
        ..MockBehavior::default()
    })
    .await;
    let (mut child, addr, _dir) = spawn_aigw(&config_text(
        &mock.addr().to_string(),
        r#"shutdown_grace = "500ms""#,
        "",
    ));
    let mut stream = open_stream(&addr).await;
    stream.chunk().await.unwrap().unwrap();
    sigterm(&child);
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));
    // The 20 s stream ended long before its natural end: read what is left until it breaks.
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = stream.chunk().await {
        body.extend_from_slice(&chunk);
    }
    assert!(!String::from_utf8_lossy(&body).contains("[DONE]"));
}
