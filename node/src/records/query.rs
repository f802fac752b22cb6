//! Reading records back from a node's log: by time, key, model and status, for
//! `GET /admin/v1/records` and `aigw records export`; and, for `?cluster=true`, a node's
//! earliest records by `received` (`earliest`) and the merge of every node's (`merge_by_time`).
//! Blocking (it reads files): run it off the async threads.

use std::collections::BinaryHeap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::log::read_from;

/// Records answered when a query gives no `limit`, and at most.
pub const DEFAULT_LIMIT: usize = 1_000;
pub const MAX_LIMIT: usize = 100_000;

/// Which records to read. Also sent from node to node for `?cluster=true`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Received at or after (unix ms).
    pub since_ms: Option<u64>,
    /// Received before (unix ms).
    pub until_ms: Option<u64>,
    /// The key's id or name.
    pub key: Option<String>,
    /// The public model asked for.
    pub model: Option<String>,
    pub status: Option<u16>,
}

/// The fields a filter reads, without parsing the rest of the record.
#[derive(Deserialize)]
struct Head {
    /// Only orders a cluster answer; a filter does not need it.
    #[serde(default)]
    id: String,
    timestamps: HeadTimes,
    key: Option<HeadKey>,
    model: Option<String>,
    status: u16,
}

#[derive(Deserialize)]
struct HeadTimes {
    received_ms: u64,
}

#[derive(Deserialize)]
struct HeadKey {
    id: String,
    name: String,
}

impl Filter {
    /// Whether the record `line` passes; a line that is not a record never does.
    pub fn matches(&self, line: &[u8]) -> bool {
        self.passes(line).is_some()
    }

    /// The record's head when `line` passes.
    fn passes(&self, line: &[u8]) -> Option<Head> {
        let head = serde_json::from_slice::<Head>(line).ok()?;
        self.admits(&head).then_some(head)
    }

    fn admits(&self, head: &Head) -> bool {
        let at = head.timestamps.received_ms;
        self.since_ms.is_none_or(|since| at >= since)
            && self.until_ms.is_none_or(|until| at < until)
            && self.status.is_none_or(|s| s == head.status)
            && self
                .model
                .as_deref()
                .is_none_or(|m| head.model.as_deref() == Some(m))
            && self.key.as_deref().is_none_or(|k| {
                head.key
                    .as_ref()
                    .is_some_and(|key| key.id == k || key.name == k)
            })
    }
}

/// Calls `each` with every record of the log in `dir` that passes `filter`, oldest first, until
/// `limit` were given or `each` returns false. Lines the writer has not finished are not read.
pub fn scan(
    dir: &Path,
    filter: &Filter,
    limit: usize,
    mut each: impl FnMut(Vec<u8>) -> bool,
) -> io::Result<usize> {
    if !dir.exists() {
        return Ok(0);
    }
    let mut given = 0;
    for line in read_from(dir, 0)? {
        if given >= limit {
            break;
        }
        let (_, line) = line?;
        if filter.matches(&line) {
            given += 1;
            if !each(line) {
                break;
            }
        }
    }
    Ok(given)
}

/// A cluster query, as the node asked sends it to each peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterQuery {
    pub filter: Filter,
    pub limit: usize,
}

/// One record with what records from several nodes are merged by: the time it was received,
/// then its id (UUIDv7, unique across nodes, so the order is total).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimedRecord {
    pub received_ms: u64,
    pub id: String,
    /// The record as stored, one JSON document without its line break.
    pub line: String,
}

/// This node's first `limit` records passing `filter` in the order of (`received`, id). The
/// log is in the order calls ended, not the order they arrived (a long stream is written after
/// shorter calls that came later), so the whole log is read; at most `limit` records are held.
pub fn earliest(dir: &Path, filter: &Filter, limit: usize) -> io::Result<Vec<TimedRecord>> {
    if limit == 0 || !dir.exists() {
        return Ok(Vec::new());
    }
    // A max-heap: its top is the latest kept record, dropped when an earlier one comes.
    let mut kept = BinaryHeap::with_capacity(limit.min(4_096) + 1);
    for line in read_from(dir, 0)? {
        let (_, line) = line?;
        let Some(head) = filter.passes(&line) else {
            continue;
        };
        let at = (head.timestamps.received_ms, head.id);
        if kept.len() == limit
            && kept.peek().is_some_and(|latest: &TimedRecord| {
                (latest.received_ms, &latest.id) <= (at.0, &at.1)
            })
        {
            continue;
        }
        let Ok(line) = String::from_utf8(line) else {
            continue;
        };
        kept.push(TimedRecord {
            received_ms: at.0,
            id: at.1,
            line,
        });
        if kept.len() > limit {
            kept.pop();
        }
    }
    Ok(kept.into_sorted_vec())
}

/// What a node answers a cluster query: its earliest records, or why it has none to give
/// (records off, the log unreadable).
pub type ClusterAnswer = Result<Vec<TimedRecord>, String>;

/// `earliest` on a blocking thread, for the node asked and for each peer it asks. `dir` is
/// `None` when records are off on this node.
pub async fn answer(node: u64, dir: Option<PathBuf>, query: ClusterQuery) -> ClusterAnswer {
    let Some(dir) = dir else {
        return Err(format!("records are off on node {node}"));
    };
    tokio::task::spawn_blocking(move || earliest(&dir, &query.filter, query.limit))
        .await
        .map_err(|e| format!("reading the records log on node {node} failed: {e}"))?
        .map_err(|e| format!("reading the records log on node {node} failed: {e}"))
}

/// Every node's answer (each from `earliest`) merged by (`received`, id), the first `limit`.
pub fn merge_by_time(answers: Vec<Vec<TimedRecord>>, limit: usize) -> Vec<TimedRecord> {
    let mut all: Vec<TimedRecord> = answers.into_iter().flatten().collect();
    all.sort_unstable();
    all.truncate(limit);
    all
}

/// A point in time for a filter: unix milliseconds, an RFC 3339 time
/// (`2026-12-01T00:00:00Z`), or a duration before now (`7d`, `90m`).
pub fn parse_time(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        return Ok(at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64));
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(aigw_cluster::unix_now_ms().saturating_sub(ago.as_millis() as u64));
    }
    Err(format!(
        "invalid time {text:?}: expected unix milliseconds, an RFC 3339 time such as \"2026-12-01T00:00:00Z\", or a duration before now such as \"7d\""
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_in_three_forms() {
        assert_eq!(parse_time("1767225600000"), Ok(1_767_225_600_000));
        assert_eq!(parse_time("2026-01-01T00:00:00Z"), Ok(1_767_225_600_000));
        let ago = parse_time("1h").unwrap();
        let now = aigw_cluster::unix_now_ms();
        assert!(now - ago >= 3_600_000 && now - ago < 3_700_000);
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn a_filter_reads_only_the_fields_it_needs() {
        let line = br#"{"timestamps":{"received_ms":10},"key":{"id":"key_1","name":"team"},"model":"m","status":200,"request":{}}"#;
        let pass = |f: Filter| f.matches(line);
        assert!(pass(Filter::default()));
        assert!(pass(Filter {
            key: Some("team".into()),
            ..Filter::default()
        }));
        assert!(pass(Filter {
            key: Some("key_1".into()),
            since_ms: Some(10),
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            since_ms: Some(11),
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            until_ms: Some(10),
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            model: Some("other".into()),
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            status: Some(429),
            ..Filter::default()
        }));
        assert!(!Filter::default().matches(b"not json"));
    }

    fn timed(received_ms: u64, id: &str) -> TimedRecord {
        TimedRecord {
            received_ms,
            id: id.into(),
            line: format!("{{\"id\":\"{id}\"}}"),
        }
    }

    #[test]
    fn nodes_answers_merge_by_received_then_id_up_to_the_limit() {
        let node1 = vec![timed(10, "b"), timed(30, "c")];
        let node2 = vec![timed(10, "a"), timed(20, "d"), timed(40, "e")];
        let merged = merge_by_time(vec![node1.clone(), node2.clone()], 4);
        let ids: Vec<&str> = merged.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "d", "c"]);
        assert!(merge_by_time(vec![node1, node2, Vec::new()], 0).is_empty());
    }

    #[test]
    fn earliest_keeps_the_first_records_by_received_time_not_by_log_order() {
        let dir = tempfile::tempdir().unwrap();
        let records = dir.path().join("records");
        std::fs::create_dir_all(&records).unwrap();
        // Written in the order the calls ended: the long call received at 5 comes last.
        let line = |id: &str, at: u64, model: &str| {
            format!(
                r#"{{"id":"{id}","timestamps":{{"received_ms":{at}}},"key":null,"model":"{model}","status":200}}"#
            )
        };
        let text = [
            line("r20", 20, "m"),
            line("r10", 10, "other"),
            line("r30", 30, "m"),
            line("r05", 5, "m"),
        ]
        .join("\n")
            + "\n";
        std::fs::write(records.join("00000000000000000000.jsonl"), text).unwrap();
        let filter = Filter {
            model: Some("m".into()),
            ..Filter::default()
        };
        let got = earliest(&records, &filter, 2).unwrap();
        let ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["r05", "r20"]);
        assert!(got[0].line.contains(r#""received_ms":5"#));
        assert_eq!(earliest(&records, &filter, 10).unwrap().len(), 3);
        assert!(
            earliest(&dir.path().join("none"), &filter, 10)
                .unwrap()
                .is_empty()
        );
    }
}
