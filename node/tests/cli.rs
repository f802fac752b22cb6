//! The `aigw` command line against a running node: `apply` (diff, dry run, commit),
//! `cluster status` and `check`.

mod common;

use std::process::Command;
use std::time::Duration;

use aigw_jepsen::mock::MockBehavior;
use common::*;

const TOKEN: &str = "cli-admin-token";

fn aigw(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_aigw"))
        .args(args)
        .env("AIGW_ADMIN_TOKEN", TOKEN)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_shows_the_diff_commits_it_and_the_node_routes_the_new_model() {
    let mock = mock(MockBehavior::default()).await;
    let text = format!(
        "[node]\nid = 1\napi_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n[admin]\ntoken = \"{TOKEN}\"\n\n\
         [[bootstrap.upstreams]]\nid = \"mock-a\"\nkind = \"openai\"\nbase_url = \"http://{}/v1\"\n\n\
         [[bootstrap.models]]\nname = \"chat-default\"\ntargets = [{{ upstream = \"mock-a\", model = \"x\" }}]\n\n\
         [[bootstrap.keys]]\nname = \"k\"\nsecret = \"{KEY}\"\n",
        mock.addr()
    );
    let node = node_with(&text).await;
    let admin = format!("http://{}", node.admin_addr().unwrap());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("settings.toml");
    std::fs::write(
        &file,
        format!(
            "[[upstreams]]\nid = \"mock-a\"\nkind = \"openai\"\nbase_url = \"http://{}/v1\"\napi_key = \"${{UPSTREAM_KEY}}\"\n\n[[models]]\nname = \"chat-default\"\ntargets = [{{ upstream = \"mock-a\", model = \"x\" }}]\n\n[[models]]\nname = \"added-by-apply\"\ntargets = [{{ upstream = \"mock-a\", model = \"y\" }}]\n",
            mock.addr()
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();

    let (ok, out, err) = aigw(&["apply", file, "--dry-run", "--admin", &admin]);
    assert!(ok, "{err}");
    assert!(out.contains("+name = \"added-by-apply\""), "{out}");
    assert!(out.contains("Dry run"), "{out}");
    let listed = |key| {
        let url = url(&node, "/v1/models");
        async move {
            client()
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    assert!(!listed(KEY).await.contains("added-by-apply"));

    let (ok, out, err) = aigw(&["apply", file, "--admin", &admin]);
    assert!(ok, "{err}");
    assert!(out.contains("Applied"), "{out}");
    let mut routed = false;
    for _ in 0..100 {
        if listed(KEY).await.contains("added-by-apply") {
            routed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(routed, "the applied model never appeared in /v1/models");

    let (ok, out, _) = aigw(&["apply", file, "--admin", &admin]);
    assert!(ok && out.contains("No changes"), "{out}");

    let (ok, out, err) = aigw(&["cluster", "status", "--admin", &admin]);
    assert!(ok, "{err}");
    assert!(out.contains("leader 1") && out.contains("voter"), "{out}");

    let (ok, _, err) = aigw(&["apply", file, "--admin", &admin, "--token", "wrong"]);
    assert!(!ok && err.contains("admin token"), "{err}");
    node.shutdown().await;
}

#[test]
fn check_exits_non_zero_and_names_the_line_of_each_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[node]\nid = 1\napi_listen = \"127.0.0.1:8080\"\ncolour = \"blue\"\n",
    )
    .unwrap();
    let (ok, _, err) = aigw(&["check", "--config", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("bad.toml:4:1: node.colour: unknown key"),
        "{err}"
    );
}
