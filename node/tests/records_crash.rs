//! The records log under `kill -9`: the real `aigw` binary serving calls is killed with
//! SIGKILL, started again on its data dir and stopped gracefully. Every call answered more than
//! the loss bound before the kill (one fsync interval, plus the writer's 10 ms drain, plus a
//! margin for a loaded machine) has its record, and no call has two.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use aigw::records::query::{Filter, scan};
use aigw_jepsen::mock::MockBehavior;
use common::*;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::time::Instant;

const FSYNC: Duration = Duration::from_millis(20);
/// fsync interval + the writer's drain (10 ms) + room for a loaded machine (a slow fsync).
const BOUND: Duration = Duration::from_millis(20 + 10 + 1000);
const CLIENTS: usize = 8;

async fn wait_exit(child: &mut Child) {
    for _ in 0..400 {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("aigw did not exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_loses_at_most_the_last_fsync_interval_and_no_record_is_written_twice() {
    let mock = mock(MockBehavior::default()).await;
    let data_dir = fresh_data_dir();
    let text = config_text(&mock.addr().to_string(), "", "")
        .lines()
        .map(|line| {
            if line.starts_with("data_dir") {
                format!("data_dir = \"{}\"", data_dir.display())
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + &format!(
            "\n[records]\nfsync_interval = \"{}ms\"\n",
            FSYNC.as_millis()
        );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("aigw.toml");
    std::fs::write(&config, &text).unwrap();

    let (mut child, addr) = spawn_aigw_at(&config);
    // Each client's calls, by their `user`, with when the answer was read whole.
    let acked: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (addr, acked, stop) = (addr.clone(), Arc::clone(&acked), Arc::clone(&stop));
            tokio::spawn(async move {
                let http = client();
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let user = format!("c{c}-{n}");
                    let body =
                        json!({"model": "chat-default", "messages": user_message(), "user": user});
                    let sent = http
                        .post(format!("http://{addr}/v1/chat/completions"))
                        .bearer_auth(KEY)
                        .json(&body)
                        .send()
                        .await;
                    let Ok(response) = sent else { return };
                    if response.status() != 200 || response.bytes().await.is_err() {
                        return;
                    }
                    acked.lock().insert(user, Instant::now());
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    child.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    let _ = child.wait();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    let acked = acked.lock().clone();
    assert!(
        acked.len() > 50,
        "only {} calls before the kill",
        acked.len()
    );

    // Started again on the same data dir (a torn last line is cut), then stopped gracefully.
    let (mut again, _addr) = spawn_aigw_at(&config);
    let status = Command::new("kill")
        .args(["-TERM", &again.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_exit(&mut again).await;

    let mut users: BTreeMap<String, u32> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    scan(
        &data_dir.join("records"),
        &Filter::default(),
        usize::MAX,
        |line| {
            let record: Value =
                serde_json::from_slice(&line).expect("every line is a whole record");
            assert!(
                ids.insert(record["id"].as_str().unwrap().to_owned()),
                "an id twice"
            );
            if let Some(user) = record["request"]["body"]["user"].as_str() {
                *users.entry(user.to_owned()).or_default() += 1;
            }
            true
        },
    )
    .unwrap();
    assert!(users.values().all(|n| *n == 1), "a call recorded twice");
    let must_have: Vec<&String> = acked
        .iter()
        .filter(|(_, at)| killed.duration_since(**at) > BOUND)
        .map(|(user, _)| user)
        .collect();
    assert!(!must_have.is_empty());
    let missing: Vec<&&String> = must_have
        .iter()
        .filter(|user| !users.contains_key(**user))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} calls answered more than {BOUND:?} before the kill have no record: {missing:?}",
        missing.len(),
        must_have.len()
    );
    eprintln!(
        "{} calls answered, {} recorded, {} answered more than {BOUND:?} before the kill: all recorded",
        acked.len(),
        users.len(),
        must_have.len()
    );
}
