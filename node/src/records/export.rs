//! `aigw records export`: a node's records, offline from its data dir, as JSON lines or as
//! OpenAI's chat fine-tuning format (`{"messages": [...], "tools": [...]}`, the assistant's
//! answer last).
//!
//! The fine-tuning export keeps only calls that make an example: a chat completion answered
//! 2xx, complete, with both bodies captured whole (not `metadata`, not `truncated`), not
//! blocked by content safety. Exact duplicates (the same example twice) are written once.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::Path;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::query::{Filter, scan};

/// What the export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Every matching record, as stored.
    Jsonl,
    /// OpenAI's chat fine-tuning format.
    OpenAiChat,
}

/// What an export did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    /// Records that passed the filter.
    pub read: usize,
    pub written: usize,
    /// Records that made no example (fine-tuning only).
    pub skipped: usize,
    pub duplicates: usize,
}

/// Exports the records of the log in `dir` (a node's `data_dir/records`) that pass `filter`.
pub fn export(
    dir: &Path,
    filter: &Filter,
    format: Format,
    out: &mut dyn Write,
) -> io::Result<Exported> {
    let mut done = Exported::default();
    let mut seen = HashSet::new();
    let mut failed = None;
    scan(dir, filter, usize::MAX, |line| {
        done.read += 1;
        let written = match format {
            Format::Jsonl => Some(line),
            Format::OpenAiChat => match serde_json::from_slice::<Value>(&line)
                .ok()
                .and_then(|record| example(&record))
            {
                Some(example) => {
                    let line = example.to_string().into_bytes();
                    if seen.insert(Sha256::digest(&line)) {
                        Some(line)
                    } else {
                        done.duplicates += 1;
                        None
                    }
                }
                None => {
                    done.skipped += 1;
                    None
                }
            },
        };
        if let Some(line) = written {
            if let Err(error) = out.write_all(&line).and_then(|()| out.write_all(b"\n")) {
                failed = Some(error);
                return false;
            }
            done.written += 1;
        }
        true
    })?;
    if let Some(error) = failed {
        return Err(error);
    }
    out.flush()?;
    Ok(done)
}

/// The fine-tuning example of one record, if it makes one.
fn example(record: &Value) -> Option<Value> {
    let whole = |part: &Value| part["capture"] == "full";
    let status = record["status"].as_u64()?;
    let blocked = record["safety"]
        .as_array()
        .is_some_and(|verdicts| verdicts.iter().any(|v| v["action"] == "block"));
    if record["endpoint"] != "chat.completions"
        || !(200..300).contains(&status)
        || record["end"] != "complete"
        || blocked
        || !whole(&record["request"])
        || !whole(&record["response"])
    {
        return None;
    }
    let request = &record["request"]["body"];
    let mut messages = request["messages"].as_array()?.clone();
    let message = &record["response"]["body"]["choices"][0]["message"];
    let mut answer = Map::new();
    answer.insert("role".into(), json!("assistant"));
    let content = message.get("content").filter(|c| !c.is_null());
    let tool_calls = message
        .get("tool_calls")
        .filter(|t| t.as_array().is_some_and(|t| !t.is_empty()));
    if content.is_none() && tool_calls.is_none() {
        return None;
    }
    if let Some(content) = content {
        answer.insert("content".into(), content.clone());
    }
    if let Some(tool_calls) = tool_calls {
        answer.insert("tool_calls".into(), tool_calls.clone());
    }
    messages.push(Value::Object(answer));
    let mut example = Map::new();
    example.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = request.get("tools").filter(|t| !t.is_null()) {
        example.insert("tools".into(), tools.clone());
    }
    Some(Value::Object(example))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::records::log::{LogSettings, RecordLog, segments};

    fn record(status: u16, user: &str, answer: Value, end: &str) -> Value {
        json!({
            "v": 1, "endpoint": "chat.completions", "status": status, "end": end,
            "timestamps": {"received_ms": 1}, "key": {"id": "key_1", "name": "k"},
            "model": "m", "safety": [],
            "request": {"capture": "full", "body": {
                "model": "m", "messages": [{"role": "user", "content": user}],
                "tools": [{"type": "function", "function": {"name": "f"}}]}},
            "response": {"capture": "full", "body": {"object": "chat.completion",
                "choices": [{"index": 0, "message": answer, "finish_reason": "stop"}]}},
        })
    }

    /// Records written through the log with segments so small that they roll and compress.
    async fn log_of(records: &[Value]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(LogSettings {
            fsync_interval: Duration::from_millis(1),
            segment_bytes: 200,
            ..LogSettings::new(dir.path().to_owned())
        })
        .await
        .unwrap();
        for r in records {
            assert!(log.append(Bytes::from(r.to_string())));
        }
        log.close().await.unwrap();
        dir
    }

    #[tokio::test]
    async fn the_fine_tuning_export_keeps_whole_successful_chats_once_from_compressed_segments() {
        let hello = json!({"role": "assistant", "content": "Hello!"});
        let tool = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]});
        let records = [
            record(200, "hi", hello.clone(), "complete"),
            record(200, "hi", hello.clone(), "complete"), // an exact duplicate
            record(200, "call f", tool, "complete"),
            record(500, "fails", hello.clone(), "complete"),
            record(200, "left", hello.clone(), "client_gone"),
            json!({"v": 1, "endpoint": "embeddings", "status": 200, "end": "complete",
                   "timestamps": {"received_ms": 1}, "key": null, "model": "m"}),
        ];
        let dir = log_of(&records).await;
        assert!(
            segments(dir.path()).unwrap().iter().any(|s| s.compressed),
            "a rolled, compressed segment is read too"
        );
        let mut out = Vec::new();
        let done = export(dir.path(), &Filter::default(), Format::OpenAiChat, &mut out).unwrap();
        assert_eq!(
            done,
            Exported {
                read: 6,
                written: 2,
                skipped: 3,
                duplicates: 1
            }
        );
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            json!({"messages": [{"role": "user", "content": "hi"},
                                {"role": "assistant", "content": "Hello!"}],
                   "tools": [{"type": "function", "function": {"name": "f"}}]})
        );
        let last = &lines[1]["messages"][1];
        assert_eq!(last["tool_calls"][0]["function"]["name"], "f");
        assert!(last.get("content").is_none(), "no null content: {last}");

        let mut all = Vec::new();
        let done = export(dir.path(), &Filter::default(), Format::Jsonl, &mut all).unwrap();
        assert_eq!((done.read, done.written), (6, 6));
        let only_500 = Filter {
            status: Some(500),
            ..Filter::default()
        };
        let mut some = Vec::new();
        let done = export(dir.path(), &only_500, Format::Jsonl, &mut some).unwrap();
        assert_eq!(done.written, 1);
    }
}
