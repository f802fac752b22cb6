//! The records sink to a real NATS JetStream server (`nats-server -js`, started here): every
//! record of the node's log arrives with `Nats-Msg-Id` = its id, across a broker that is
//! stopped in the middle of the load and started again; no request fails or waits meanwhile,
//! and the sink's lag shows in `GET /admin/v1/records/sinks` until it has caught up.
//!
//! The server binary: `$NATS_SERVER`, the one scripts/brokers-install.sh builds
//! (/tmp/nats-bin/v2.15.3/nats-server), or `nats-server` on PATH. scripts/test.sh installs it
//! and sets `NATS_SERVER`; without one the test says so and passes, except under CI (`CI` set),
//! where it fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aigw::RunningNode;
use aigw::records::query::{Filter, scan};
use aigw_jepsen::mock::MockBehavior;
use common::*;
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "records-nats-admin-token";
const CALLS: usize = 300;

fn nats_server() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("NATS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let built = PathBuf::from("/tmp/nats-bin/v2.15.3/nats-server");
    if built.exists() {
        return Some(built);
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v nats-server"])
        .output()
        .ok()?;
    let path = String::from_utf8(on_path.stdout).ok()?;
    (!path.trim().is_empty()).then(|| PathBuf::from(path.trim()))
}

/// A JetStream server on `port` keeping its store in `store`; killed when dropped.
struct Nats(Child);

impl Nats {
    async fn start(binary: &Path, port: u16, store: &Path) -> Self {
        let server = Self(
            Command::new(binary)
                .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
                .arg(store)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server starts"),
        );
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server did not listen on {port}");
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn calls(node: &RunningNode, count: usize) {
    let body = json!({"model": "chat-default", "messages": user_message()});
    let batch = (0..count).map(|_| chat(node, KEY, body.clone()));
    for response in futures::future::join_all(batch).await {
        assert_eq!(
            response.status(),
            200,
            "no call fails while the broker is down"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_reaches_jetstream_across_a_broker_restart() {
    let Some(binary) = nats_server() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no nats-server: scripts/test.sh installs one and sets NATS_SERVER"
        );
        eprintln!(
            "skipped: no nats-server (set NATS_SERVER, or run scripts/brokers-install.sh nats)"
        );
        return;
    };
    let port = free_port();
    let store = tempfile::tempdir().unwrap();
    let mut nats = Some(Nats::start(&binary, port, store.path()).await);

    let mock = mock(MockBehavior::default()).await;
    let text = with_admin(&config_text(&mock.addr().to_string(), "", ""), ADMIN_TOKEN)
        + &format!(
            "\n[records]\nfsync_interval = \"5ms\"\n\n\
         [[records.sinks]]\nname = \"js\"\nkind = \"nats\"\nurl = \"nats://127.0.0.1:{port}\"\n\
         subject = \"test.records\"\nstream = \"TEST_RECORDS\"\n"
        );
    let dir = fresh_data_dir();
    let node = node_in(&text, &dir).await;

    for _ in 0..(CALLS / 3 / 25) {
        calls(&node, 25).await;
    }
    // The broker goes away in the middle of the load; calls go on, the sink falls behind.
    drop(nats.take());
    let started = tokio::time::Instant::now();
    for _ in 0..(CALLS / 3 / 25) {
        calls(&node, 25).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "calls did not wait for the broker"
    );
    let behind = sink_until(&node, ADMIN_TOKEN, Duration::from_secs(5), |sink| {
        sink["lag_records"].as_u64().unwrap_or(0) > 0 && sink["error"].is_string()
    })
    .await;
    assert!(behind["lag_records"].as_u64().unwrap() > 0, "{behind}");
    assert!(behind["error"].is_string(), "{behind}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Back, on the same store: the sink catches up from its cursor.
    let _nats = Nats::start(&binary, port, store.path()).await;
    for _ in 0..(CALLS / 3 / 25) {
        calls(&node, 25).await;
    }
    let view = sink_until(&node, ADMIN_TOKEN, Duration::from_secs(30), |sink| {
        sink["lag_records"] == 0 && sink["cursor"].as_u64() == Some(CALLS as u64)
    })
    .await;
    assert_eq!(view["lag_records"], 0, "{view}");
    assert_eq!(view["cursor"], CALLS as u64, "{view}");
    assert_eq!(view["error"], Value::Null, "{view}");
    assert_eq!(view["lost"], 0, "{view}");

    // What JetStream holds: every record of the log, by id.
    let mut local = BTreeSet::new();
    scan(
        &dir.join("records"),
        &Filter::default(),
        usize::MAX,
        |line| {
            let record: Value = serde_json::from_slice(&line).unwrap();
            local.insert(record["id"].as_str().unwrap().to_owned());
            true
        },
    )
    .unwrap();
    assert_eq!(local.len(), CALLS);

    let client = async_nats::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream("TEST_RECORDS").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut arrived: BTreeMap<String, u32> = BTreeMap::new();
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.unwrap();
        let record: Value = serde_json::from_slice(&message.payload).unwrap();
        let id = record["id"].as_str().unwrap().to_owned();
        let msg_id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned());
        assert_eq!(
            msg_id.as_deref(),
            Some(id.as_str()),
            "Nats-Msg-Id is the record's id"
        );
        *arrived.entry(id).or_default() += 1;
    }
    let ids: BTreeSet<String> = arrived.keys().cloned().collect();
    assert_eq!(ids, local, "every record arrived");
    let duplicates: u32 = arrived.values().map(|n| n - 1).sum();
    eprintln!(
        "{} records, {duplicates} duplicates in the stream",
        ids.len()
    );

    node.shutdown().await;
}
