//! Sinks: each ships the node's records to a message queue, reading the local log from its own
//! cursor (a file under `records/cursors/`), so an outage of any length within retention loses
//! nothing and blocks nothing: the sink retries with backoff and catches up when the broker is
//! back. At least once: a record shipped just before a crash or a lost acknowledgement is sent
//! again, with its id for the broker (or the consumer) to deduplicate.
//!
//! A sink reads only lines the log has fsynced: after a crash the log's numbering resumes from
//! its durable end, so a cursor past it would skip new records.
//!
//! Kinds: NATS JetStream (each record published with `Nats-Msg-Id` = its id, so JetStream's
//! duplicate window drops a resend); Kafka (produced keyed by the key's id, so one key's records
//! stay in order on one partition, the id in the `aigw-record-id` header for consumers to
//! deduplicate: Kafka has no broker-side deduplication without idempotent producers).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aigw_config::{NatsAuth, SinkKind, SinkSettings};
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::call::now_ms;
use super::log::read_from;

/// Records read and sent per batch; the cursor is saved after each batch.
const BATCH: usize = 512;
/// Retry delays after a failure: doubled from the first up to the last.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long one publish may wait for the broker's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// What `GET /admin/v1/records/sinks` shows of a sink.
#[derive(Debug, Clone, Serialize)]
pub struct SinkView {
    pub name: String,
    pub kind: &'static str,
    /// The sequence number of the next record to ship.
    pub cursor: u64,
    /// Records on disk not shipped yet.
    pub lag_records: u64,
    /// How long the sink has been behind (0 when caught up).
    pub lag_seconds: u64,
    /// Records shipped since the node started (resends included).
    pub shipped: u64,
    /// Records retention deleted before they were shipped.
    pub lost: u64,
    /// The last failure, while it lasts.
    pub error: Option<String>,
}

/// A running sink's state, shared with the admin API.
pub(crate) struct SinkState {
    name: String,
    kind: &'static str,
    cursor: AtomicU64,
    shipped: AtomicU64,
    lost: AtomicU64,
    /// Unix ms when the sink was last caught up.
    caught_up_ms: AtomicU64,
    error: Mutex<Option<String>>,
}

impl SinkState {
    pub fn view(&self, durable: u64) -> SinkView {
        let cursor = self.cursor.load(Ordering::Relaxed);
        let lag_records = durable.saturating_sub(cursor);
        let lag_seconds = if lag_records == 0 {
            0
        } else {
            now_ms().saturating_sub(self.caught_up_ms.load(Ordering::Relaxed)) / 1000
        };
        SinkView {
            name: self.name.clone(),
            kind: self.kind,
            cursor,
            lag_records,
            lag_seconds,
            shipped: self.shipped.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            error: self.error.lock().clone(),
        }
    }
}

/// A line of the log, ready to send.
struct Outgoing {
    seq: u64,
    id: String,
    key: Option<String>,
    line: Bytes,
}

#[derive(Deserialize)]
struct Ids {
    id: String,
    key: Option<KeyId>,
}

#[derive(Deserialize)]
struct KeyId {
    id: String,
}

/// Starts every sink of `settings` over the log in `dir`.
pub(crate) fn start(
    dir: &Path,
    settings: &[SinkSettings],
    durable: watch::Receiver<u64>,
) -> io::Result<Vec<(Arc<SinkState>, JoinHandle<()>)>> {
    let cursors = dir.join("cursors");
    std::fs::create_dir_all(&cursors)?;
    let mut started = Vec::new();
    for sink in settings {
        let cursor_file = cursors.join(&sink.name);
        let cursor = read_cursor(&cursor_file)?;
        let kind = match &sink.kind {
            SinkKind::Nats { .. } => "nats",
            SinkKind::Kafka { .. } => "kafka",
        };
        let state = Arc::new(SinkState {
            name: sink.name.clone(),
            kind,
            cursor: AtomicU64::new(cursor),
            shipped: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            caught_up_ms: AtomicU64::new(now_ms()),
            error: Mutex::new(None),
        });
        let task = tokio::spawn(run(
            dir.to_owned(),
            cursor_file,
            sink.kind.clone(),
            Arc::clone(&state),
            durable.clone(),
        ));
        started.push((state, task));
    }
    Ok(started)
}

fn read_cursor(path: &Path) -> io::Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| io::Error::other(format!("{} is not a cursor", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Writes the cursor aside and renames it over the old one, so a crash leaves one or the other.
fn write_cursor(path: &Path, cursor: u64) -> io::Result<()> {
    let aside = path.with_extension("new");
    std::fs::write(&aside, cursor.to_string())?;
    std::fs::rename(&aside, path)
}

/// Up to `BATCH` lines from `cursor` on, below `durable`. Retention may have deleted lines:
/// the first line read is then past `cursor`.
fn read_batch(dir: &Path, cursor: u64, durable: u64) -> io::Result<Vec<Outgoing>> {
    let mut batch = Vec::new();
    for line in read_from(dir, cursor)? {
        let (seq, line) = line?;
        if seq >= durable || batch.len() >= BATCH {
            break;
        }
        let (id, key) = match serde_json::from_slice::<Ids>(&line) {
            Ok(ids) => (ids.id, ids.key.map(|k| k.id)),
            // Not a record (cannot happen with this writer): shipped under its position.
            Err(_) => (format!("seq-{seq}"), None),
        };
        batch.push(Outgoing {
            seq,
            id,
            key,
            line: Bytes::from(line),
        });
    }
    Ok(batch)
}

async fn run(
    dir: PathBuf,
    cursor_file: PathBuf,
    kind: SinkKind,
    state: Arc<SinkState>,
    mut durable: watch::Receiver<u64>,
) {
    let mut publisher: Option<Publisher> = None;
    let mut backoff = BACKOFF_MIN;
    loop {
        let cursor = state.cursor.load(Ordering::Relaxed);
        let on_disk = *durable.borrow_and_update();
        if cursor >= on_disk {
            state.caught_up_ms.store(now_ms(), Ordering::Relaxed);
            if durable.changed().await.is_err() {
                return; // the log is closed
            }
            continue;
        }
        let read = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || read_batch(&dir, cursor, on_disk)).await
        };
        let batch = match read.map_err(io::Error::other).and_then(|read| read) {
            Ok(batch) => batch,
            Err(error) => {
                let error = format!("reading the records log: {error}");
                fail(&state, error, &mut backoff).await;
                continue;
            }
        };
        let Some(last) = batch.last().map(|o| o.seq) else {
            // Nothing readable below the durable end: retention deleted it.
            lost(&state, cursor, on_disk);
            continue;
        };
        if let Some(first) = batch.first()
            && first.seq > cursor
        {
            lost(&state, cursor, first.seq);
        }
        if publisher.is_none() {
            let connected = tokio::time::timeout(ACK_TIMEOUT, Publisher::connect(&kind))
                .await
                .unwrap_or_else(|_| Err("no answer from the broker in time".into()));
            match connected {
                Ok(connected) => publisher = Some(connected),
                Err(error) => {
                    fail(&state, error, &mut backoff).await;
                    continue;
                }
            }
        }
        let Some(connected) = publisher.as_ref() else {
            continue;
        };
        let sent = tokio::time::timeout(ACK_TIMEOUT, connected.send(&batch))
            .await
            .unwrap_or_else(|_| Err("no acknowledgement from the broker in time".into()));
        if let Err(error) = sent {
            // A fresh connection next time; what was sent is sent again, by id.
            publisher = None;
            fail(&state, error, &mut backoff).await;
            continue;
        }
        backoff = BACKOFF_MIN;
        if let Some(error) = state.error.lock().take() {
            tracing::info!(
                sink = %state.name,
                %error,
                lag_records = on_disk.saturating_sub(last + 1),
                "a records sink ships again after a failure"
            );
        }
        state
            .shipped
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        state.cursor.store(last + 1, Ordering::Relaxed);
        let file = cursor_file.clone();
        let saved = tokio::task::spawn_blocking(move || write_cursor(&file, last + 1)).await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::warn!(sink = %state.name, "cannot save the sink's cursor; records will be sent again after a restart");
        }
    }
}

fn lost(state: &SinkState, from: u64, to: u64) {
    let count = to.saturating_sub(from);
    state.lost.fetch_add(count, Ordering::Relaxed);
    state.cursor.store(to, Ordering::Relaxed);
    tracing::error!(sink = %state.name, count, "retention deleted records before this sink shipped them");
}

async fn fail(state: &SinkState, error: String, backoff: &mut Duration) {
    let first = state.error.lock().replace(error.clone()).is_none();
    if first {
        tracing::warn!(sink = %state.name, %error, "a records sink cannot ship; retrying");
    } else {
        tracing::debug!(sink = %state.name, %error, "a records sink cannot ship yet");
    }
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
}

/// A connection to a sink's broker.
enum Publisher {
    Nats {
        jetstream: Box<async_nats::jetstream::Context>,
        subject: String,
    },
    Kafka {
        /// One client per partition of the topic, by partition number.
        partitions: Vec<rskafka::client::partition::PartitionClient>,
    },
}

impl Publisher {
    async fn connect(kind: &SinkKind) -> Result<Self, String> {
        match kind {
            SinkKind::Nats {
                url,
                subject,
                stream,
                auth,
            } => {
                let options = match auth {
                    NatsAuth::None => async_nats::ConnectOptions::new(),
                    NatsAuth::Token(token) => {
                        async_nats::ConnectOptions::with_token(token.expose().to_owned())
                    }
                    NatsAuth::UserPassword { user, password } => {
                        async_nats::ConnectOptions::with_user_and_password(
                            user.clone(),
                            password.expose().to_owned(),
                        )
                    }
                };
                let options = options
                    .name("aigw-records")
                    .connection_timeout(Duration::from_secs(5));
                let client = options
                    .connect(url.as_str())
                    .await
                    .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))?;
                let jetstream = async_nats::jetstream::new(client);
                jetstream
                    .get_or_create_stream(async_nats::jetstream::stream::Config {
                        name: stream.clone(),
                        subjects: vec![subject.clone()],
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("cannot find or create the stream {stream}: {e}"))?;
                Ok(Self::Nats {
                    jetstream: Box::new(jetstream),
                    subject: subject.clone(),
                })
            }
            SinkKind::Kafka {
                brokers,
                topic,
                partitions,
            } => {
                use rskafka::client::partition::UnknownTopicHandling;
                let client = rskafka::client::ClientBuilder::new(brokers.clone())
                    .client_id("aigw-records")
                    // rskafka retries for ever by default: give up, report, and retry from
                    // this sink's own loop instead.
                    .backoff_config(rskafka::BackoffConfig {
                        deadline: Some(Duration::from_secs(5)),
                        max_backoff: BACKOFF_MAX,
                        ..Default::default()
                    })
                    .build()
                    .await
                    .map_err(|e| format!("cannot connect to Kafka at {brokers:?}: {e}"))?;
                let topics = client
                    .list_topics()
                    .await
                    .map_err(|e| format!("cannot list Kafka's topics: {e}"))?;
                let count = match topics.iter().find(|t| &t.name == topic) {
                    Some(found) => found.partitions.len() as i32,
                    None => {
                        let controller = client
                            .controller_client()
                            .map_err(|e| format!("no Kafka controller: {e}"))?;
                        controller
                            .create_topic(topic.clone(), *partitions, 1, 5_000)
                            .await
                            .map_err(|e| format!("cannot create the topic {topic}: {e}"))?;
                        *partitions
                    }
                };
                let mut clients = Vec::new();
                for partition in 0..count.max(1) {
                    clients.push(
                        client
                            .partition_client(topic.clone(), partition, UnknownTopicHandling::Retry)
                            .await
                            .map_err(|e| format!("cannot reach {topic}/{partition}: {e}"))?,
                    );
                }
                Ok(Self::Kafka {
                    partitions: clients,
                })
            }
        }
    }

    /// Sends a batch and waits for every acknowledgement (the caller bounds the wait).
    async fn send(&self, batch: &[Outgoing]) -> Result<(), String> {
        match self {
            Self::Nats { jetstream, subject } => {
                let mut acks = Vec::with_capacity(batch.len());
                for out in batch {
                    let mut publish = async_nats::jetstream::message::PublishMessage::build()
                        .payload(out.line.clone())
                        .message_id(&out.id);
                    if let Some(key) = &out.key {
                        publish = publish.header("Aigw-Key-Id", key.as_str());
                    }
                    let ack = jetstream
                        .send_publish(subject.clone(), publish)
                        .await
                        .map_err(|e| format!("publishing to NATS: {e}"))?;
                    acks.push(ack);
                }
                for ack in acks {
                    ack.await
                        .map_err(|e| format!("NATS did not take a record: {e}"))?;
                }
                Ok(())
            }
            Self::Kafka { partitions } => {
                // One key's records go to one partition, in order.
                let mut by_partition: Vec<Vec<rskafka::record::Record>> =
                    partitions.iter().map(|_| Vec::new()).collect();
                for out in batch {
                    let partition = out.key.as_deref().map_or(0, |key| {
                        (fnv1a(key.as_bytes()) % partitions.len() as u32) as usize
                    });
                    let mut headers = std::collections::BTreeMap::new();
                    headers.insert("aigw-record-id".to_owned(), out.id.clone().into_bytes());
                    by_partition[partition].push(rskafka::record::Record {
                        key: out.key.as_ref().map(|k| k.clone().into_bytes()),
                        value: Some(out.line.to_vec()),
                        headers,
                        timestamp: chrono::DateTime::from_timestamp_millis(now_ms() as i64)
                            .unwrap_or_default(),
                    });
                }
                for (client, records) in partitions.iter().zip(by_partition) {
                    if records.is_empty() {
                        continue;
                    }
                    client
                        .produce(
                            records,
                            rskafka::client::partition::Compression::NoCompression,
                        )
                        .await
                        .map_err(|e| format!("producing to Kafka: {e}"))?;
                }
                Ok(())
            }
        }
    }
}

/// A stable hash of a key id to pick its partition (FNV-1a: the same on every node and
/// every version, unlike the standard library's hasher).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}
