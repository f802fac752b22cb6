//! The records sinks against real brokers, as the issue's "done when" puts it: three nodes under
//! load, each shipping its log to a real NATS JetStream server (`nats-server -js`, started here)
//! and a real Kafka broker (KRaft, from Maven Central's jars through scripts/kafka-up.sh), both
//! brokers stopped for 20 s in the middle of 10,000 calls and started again on their data.
//! No call fails or waits on a broker; afterwards every record of every node's log is on the
//! JetStream stream (with `Nats-Msg-Id` = its id) and on the Kafka topic (keyed by its key's id,
//! one key on one partition, its id in the `aigw-record-id` header), duplicates allowed and
//! counted, and each record's response is exactly what its client received.
//!
//! The brokers: `$NATS_SERVER` (or /tmp/nats-bin/v2.15.3/nats-server, or `nats-server` on PATH)
//! and `AIGW_TEST_KAFKA_PORT`, a broker scripts/test.sh starts in the background at its
//! beginning (the JVM's start overlaps the build). Without them the test says so and passes,
//! except under CI (`CI` set), where it fails.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aigw::RunningNode;
use aigw::records::query::{Filter, scan};
use aigw_jepsen::mock::{MockBehavior, MockServer};
use common::*;
use parking_lot::Mutex;
use rskafka::client::ClientBuilder;
use rskafka::client::partition::UnknownTopicHandling;
use serde_json::{Value, json};
use tokio::time::Instant;

const ADMIN_TOKEN: &str = "records-brokers-admin-token";
const OTHER_KEY: &str = "sk-records-brokers-other";
/// Calls before the outage, during it (paced over [`OUTAGE`]) and after it.
const BEFORE: usize = 3_000;
const DURING: usize = 4_000;
const AFTER: usize = 3_000;
const CALLS: usize = BEFORE + DURING + AFTER;
const OUTAGE: Duration = Duration::from_secs(20);
const CONCURRENCY: usize = 32;
const PARTITIONS: i32 = 2;
/// Far below anything a call waiting on a broker would take (the outage lasts 20 s), far above
/// a debug build's latency on a loaded 2-core machine.
const NO_WAIT: Duration = Duration::from_secs(5);

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
        Self::start_with(binary, port, store, &[]).await
    }

    async fn start_with(binary: &Path, port: u16, store: &Path, args: &[&str]) -> Self {
        let server = Self(
            Command::new(binary)
                .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
                .arg(store)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server starts"),
        );
        wait_listening(port, Duration::from_secs(10)).await;
        server
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `scripts/kafka-up.sh ARGS` on the broker's kept data, off the async threads.
async fn kafka_up(args: &[&str]) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka-up.sh");
        let status = Command::new(script)
            .args(&args)
            .env("KAFKA_KEEP_DATA", "1")
            .stdout(Stdio::null())
            .status()
            .expect("scripts/kafka-up.sh runs");
        assert!(status.success(), "kafka-up.sh {args:?} failed");
    })
    .await
    .unwrap();
}

async fn wait_listening(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing listens on port {port}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn node_config(
    id: u64,
    ips: &[IpAddr],
    mock: &MockServer,
    nats: u16,
    kafka: u16,
    topic: &str,
) -> String {
    format!(
        r#"
{sections}
[admin]
token = "{ADMIN_TOKEN}"

[records]
fsync_interval = "5ms"

[[records.sinks]]
name = "js"
kind = "nats"
url = "nats://127.0.0.1:{nats}"
subject = "test.records"
stream = "TEST_RECORDS"

[[records.sinks]]
name = "kafka"
kind = "kafka"
brokers = ["127.0.0.1:{kafka}"]
topic = "{topic}"
partitions = {PARTITIONS}

[[bootstrap.upstreams]]
id = "mock-a"
kind = "openai"
base_url = "http://{mock}/v1"

[[bootstrap.models]]
name = "chat-default"
targets = [{{ upstream = "mock-a", model = "upstream-model-x" }}]

[[bootstrap.keys]]
name = "boot"
secret = "{KEY}"

[[bootstrap.keys]]
name = "other"
secret = "{OTHER_KEY}"
"#,
        sections = cluster_node_sections(id, ips, "records-brokers"),
        mock = mock.addr(),
    )
}

/// What the clients received, by completion id; and the slowest call.
#[derive(Default)]
struct Received {
    bodies: HashMap<String, Value>,
    slowest: Duration,
}

/// `count` calls spread over the nodes and both keys, `CONCURRENCY` at a time; with `over`,
/// started at an even pace across that time.
async fn load(
    nodes: &[RunningNode],
    count: usize,
    over: Option<Duration>,
    received: &Arc<Mutex<Received>>,
) {
    let client = client();
    let gate = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..count {
        if let Some(over) = over {
            tokio::time::sleep_until(started + over.mul_f64(i as f64 / count as f64)).await;
        }
        let permit = gate.clone().acquire_owned().await.unwrap();
        let url = url(&nodes[i % nodes.len()], "/v1/chat/completions");
        let key = if i % 2 == 0 { KEY } else { OTHER_KEY };
        let (client, received) = (client.clone(), received.clone());
        calls.spawn(async move {
            let sent = Instant::now();
            let response = client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"model": "chat-default", "messages": user_message()}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                200,
                "no call fails while a broker is down"
            );
            let body: Value = response.json().await.unwrap();
            let took = sent.elapsed();
            drop(permit);
            let mut received = received.lock();
            received.slowest = received.slowest.max(took);
            let id = body["id"].as_str().unwrap().to_owned();
            received.bodies.insert(id, body);
        });
    }
    while let Some(call) = calls.join_next().await {
        call.unwrap();
    }
}

/// The sink `name` of `node` as `GET /admin/v1/records/sinks` shows it, polled until `ready`
/// holds or `within` has passed; the last view either way.
async fn sink_of(
    node: &RunningNode,
    name: &str,
    within: Duration,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let view: Value = admin_request(node, ADMIN_TOKEN, reqwest::Method::GET, "/records/sinks")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let sink = view["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or(Value::Null);
        if ready(&sink) || Instant::now() >= deadline {
            return sink;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every record of a node's log: id -> the record.
fn local_records(dir: &Path, into: &mut BTreeMap<String, Value>) -> u64 {
    let mut count = 0;
    scan(
        &dir.join("records"),
        &Filter::default(),
        usize::MAX,
        |line| {
            let record: Value = serde_json::from_slice(&line).unwrap();
            let id = record["id"].as_str().unwrap().to_owned();
            assert!(
                into.insert(id, record).is_none(),
                "no record twice in the logs"
            );
            count += 1;
            true
        },
    )
    .unwrap();
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_put_every_record_on_jetstream_and_kafka_across_a_broker_restart() {
    let Some(nats_binary) = nats_server() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no nats-server: scripts/test.sh installs one and sets NATS_SERVER"
        );
        eprintln!(
            "skipped: no nats-server (set NATS_SERVER, or run scripts/brokers-install.sh nats)"
        );
        return;
    };
    let Some(kafka_port) = std::env::var("AIGW_TEST_KAFKA_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no Kafka broker: scripts/test.sh starts one and sets AIGW_TEST_KAFKA_PORT"
        );
        eprintln!("skipped: set AIGW_TEST_KAFKA_PORT to a broker scripts/kafka-up.sh started");
        return;
    };
    // scripts/test.sh starts it in the background; its first start fetches the jars.
    wait_listening(kafka_port, Duration::from_secs(300)).await;
    let nats_port = free_port();
    let nats_store = tempfile::tempdir().unwrap();
    let mut nats = Some(Nats::start(&nats_binary, nats_port, nats_store.path()).await);
    let topic = format!("test-records-{:08x}", rand::random::<u32>());

    let mock = mock(MockBehavior::default()).await;
    let ips: Vec<IpAddr> = (0..3).map(|_| loopback()).collect();
    let dirs: Vec<PathBuf> = (0..3).map(|_| fresh_data_dir()).collect();
    let texts: Vec<String> = (1..=3)
        .map(|id| node_config(id, &ips, &mock, nats_port, kafka_port, &topic))
        .collect();
    let nodes = start_three(&texts, &dirs).await;
    let received = Arc::new(Mutex::new(Received::default()));

    load(&nodes, BEFORE, None, &received).await;

    // Both brokers go away in the middle of the load; calls go on at their pace.
    drop(nats.take());
    let kafka_stopped =
        tokio::spawn(async move { kafka_up(&["stop", &kafka_port.to_string()]).await });
    let before_outage = received.lock().slowest;
    received.lock().slowest = Duration::ZERO;
    let outage = Instant::now();
    load(&nodes, DURING, Some(OUTAGE), &received).await;
    kafka_stopped.await.unwrap();
    let slowest_in_outage = received.lock().slowest;
    assert!(
        slowest_in_outage < NO_WAIT,
        "a call took {slowest_in_outage:?} while the brokers were down"
    );
    for node in &nodes {
        for name in ["js", "kafka"] {
            let behind = sink_of(node, name, Duration::from_secs(10), |s| {
                s["lag_records"].as_u64().unwrap_or(0) > 0 && s["error"].is_string()
            })
            .await;
            assert!(
                behind["lag_records"].as_u64().unwrap_or(0) > 0,
                "{name}: {behind}"
            );
            assert!(behind["error"].is_string(), "{name}: {behind}");
        }
    }
    tokio::time::sleep_until(outage + OUTAGE).await;

    // Back on their data: the sinks catch up from their cursors while the load goes on.
    let _nats = Nats::start(&nats_binary, nats_port, nats_store.path()).await;
    let kafka_started =
        tokio::spawn(async move { kafka_up(&["start", &kafka_port.to_string()]).await });
    load(&nodes, AFTER, None, &received).await;
    kafka_started.await.unwrap();
    let received = std::mem::take(&mut *received.lock());
    assert_eq!(
        received.bodies.len(),
        CALLS,
        "every call answered, each with its own id"
    );
    eprintln!(
        "slowest call: {before_outage:?} before the outage, {slowest_in_outage:?} during it, {:?} after",
        received.slowest
    );

    // The last calls' records: drained by the writer every 10 ms, fsynced every 5 ms.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut local = BTreeMap::new();
    for (node, dir) in nodes.iter().zip(&dirs) {
        let count = local.len();
        // Every call is in the log once the writer has drained: the sinks' cursors reach it.
        for name in ["js", "kafka"] {
            let view = sink_of(node, name, Duration::from_secs(120), |s| {
                s["lag_records"] == 0 && s["error"].is_null() && s["cursor"].as_u64() > Some(0)
            })
            .await;
            assert_eq!(view["lag_records"], 0, "{name}: {view}");
            assert_eq!(view["lost"], 0, "{name}: {view}");
        }
        let logged = local_records(dir, &mut local);
        for name in ["js", "kafka"] {
            let view = sink_of(node, name, Duration::ZERO, |_| true).await;
            assert_eq!(view["cursor"].as_u64(), Some(logged), "{name}: {view}");
        }
        assert!(local.len() > count, "every node served calls");
    }
    assert_eq!(local.len(), CALLS, "a record per call");
    // Each record's response is what its client received.
    for record in local.values() {
        let body = &record["response"]["body"];
        let id = body["id"].as_str().expect("a response body");
        assert_eq!(Some(body), received.bodies.get(id), "{record}");
    }

    // JetStream: every record, by id, as the log holds it.
    let client = async_nats::connect(format!("127.0.0.1:{nats_port}"))
        .await
        .unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream("TEST_RECORDS").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut on_nats: BTreeMap<String, u32> = BTreeMap::new();
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
        assert_eq!(
            Some(&record),
            local.get(&id),
            "the record as the log holds it"
        );
        *on_nats.entry(id).or_default() += 1;
    }
    let expected: BTreeSet<&String> = local.keys().collect();
    assert_eq!(
        on_nats.keys().collect::<BTreeSet<_>>(),
        expected,
        "every record on JetStream"
    );

    // Kafka: every record, keyed by its key, one key on one partition.
    let kafka = ClientBuilder::new(vec![format!("127.0.0.1:{kafka_port}")])
        .build()
        .await
        .unwrap();
    let mut on_kafka: BTreeMap<String, u32> = BTreeMap::new();
    let mut partitions_of_key: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let reader = kafka
            .partition_client(topic.clone(), partition, UnknownTopicHandling::Error)
            .await
            .unwrap();
        let mut offset = 0;
        loop {
            let (records, high_watermark) = reader
                .fetch_records(offset, 1..10_000_000, 1_000)
                .await
                .unwrap();
            for r in &records {
                let value: Value =
                    serde_json::from_slice(r.record.value.as_ref().unwrap()).unwrap();
                let id = value["id"].as_str().unwrap().to_owned();
                let header = String::from_utf8(r.record.headers["aigw-record-id"].clone()).unwrap();
                assert_eq!(header, id, "the header carries the record's id");
                let key = String::from_utf8(r.record.key.clone().unwrap()).unwrap();
                let logged = local.get(&id).expect("a record of a log");
                assert_eq!(key, logged["key"]["id"], "keyed by the key's id");
                assert_eq!(&value, logged, "the record as the log holds it");
                partitions_of_key.entry(key).or_default().insert(partition);
                *on_kafka.entry(id).or_default() += 1;
                offset = r.offset + 1;
            }
            if offset >= high_watermark {
                break;
            }
        }
    }
    assert_eq!(
        on_kafka.keys().collect::<BTreeSet<_>>(),
        expected,
        "every record on Kafka"
    );
    assert_eq!(partitions_of_key.len(), 2, "both keys' records");
    assert!(
        partitions_of_key.values().all(|p| p.len() == 1),
        "one key, one partition: {partitions_of_key:?}"
    );
    let duplicates = |arrived: &BTreeMap<String, u32>| arrived.values().map(|n| n - 1).sum::<u32>();
    eprintln!(
        "{CALLS} records; duplicates: {} on JetStream, {} on Kafka",
        duplicates(&on_nats),
        duplicates(&on_kafka)
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_sink_signs_in_with_a_user_and_password_and_says_when_they_are_wrong() {
    let Some(nats_binary) = nats_server() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no nats-server: scripts/test.sh installs one and sets NATS_SERVER"
        );
        eprintln!("skipped: no nats-server");
        return;
    };
    const PASSWORD: &str = "nats-password-8d1f";
    let port = free_port();
    let store = tempfile::tempdir().unwrap();
    let _nats = Nats::start_with(
        &nats_binary,
        port,
        store.path(),
        &["--user", "aigw", "--pass", PASSWORD],
    )
    .await;
    let mock = mock(MockBehavior::default()).await;
    let sink = |name: &str, password: &str, subject: &str| {
        format!(
            "\n[[records.sinks]]\nname = \"{name}\"\nkind = \"nats\"\nurl = \"nats://127.0.0.1:{port}\"\n\
             user = \"aigw\"\npassword = \"{password}\"\nsubject = \"{subject}\"\nstream = \"{}\"\n",
            subject.replace('.', "_").to_uppercase()
        )
    };
    let text = with_admin(&config_text(&mock.addr().to_string(), "", ""), ADMIN_TOKEN)
        + "\n[records]\nfsync_interval = \"5ms\"\n"
        + &sink("good", PASSWORD, "good.records")
        + &sink("bad", "not-the-password", "bad.records");
    let dir = fresh_data_dir();
    let node = node_in(&text, &dir).await;
    for _ in 0..5 {
        let response = chat(
            &node,
            KEY,
            json!({"model": "chat-default", "messages": user_message()}),
        )
        .await;
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    let good = sink_of(&node, "good", Duration::from_secs(10), |s| s["cursor"] == 5).await;
    assert_eq!(good["cursor"], 5, "{good}");
    assert_eq!(good["error"], Value::Null, "{good}");
    let bad = sink_of(&node, "bad", Duration::from_secs(10), |s| {
        s["error"].is_string()
    })
    .await;
    let error = bad["error"].as_str().unwrap_or_default();
    assert!(error.to_lowercase().contains("authorization"), "{bad}");
    assert!(!error.contains("not-the-password"), "{bad}");
    assert_eq!(bad["cursor"], 0, "{bad}");

    let client = async_nats::ConnectOptions::with_user_and_password("aigw".into(), PASSWORD.into())
        .connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream("GOOD_RECORDS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 5);
    node.shutdown().await;
}
