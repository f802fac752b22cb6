//! The history of a run: every client operation with its invoke and complete times and its
//! outcome, written as JSON lines (`history.jsonl`) and kept in memory for the checkers.
//!
//! Outcomes follow Jepsen: `ok` (it happened, with this result), `fail` (it certainly did not
//! happen: refused before being sent, or a 4xx that rules it out), `info` (indeterminate: a
//! timeout, a 503, a broken connection; it may take effect now, later, or never).

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Fail,
    Info,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpKind {
    /// `POST /admin/v1/keys` with `metadata.v` = value.
    Create,
    /// `PATCH /admin/v1/keys/{id}` with `metadata.v` = value.
    Write,
    /// `GET /admin/v1/keys/{id}` (linearizable).
    Read,
    /// `DELETE /admin/v1/keys/{id}`.
    Delete,
    /// `POST /v1/chat/completions` (failover workload).
    Chat,
    /// `POST /v1/chat/completions` with a key that has limits (quota workload); `name` is the
    /// key's name, `usage` what the response reported.
    Spend,
}

/// Which side of a partition the node an operation went to was on when it was invoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// No partition at the time.
    None,
    Majority,
    Minority,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Op {
    pub index: u64,
    /// The client; the final reads use process `u32::MAX`.
    pub process: u32,
    /// Index of the node called (node id - 1).
    pub node: usize,
    pub f: OpKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The key's name (creates), to find keys whose create was indeterminate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Written (create, write) or read (read, when found) register value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    /// Whether the key existed (read, write, delete with outcome ok): false on a 404.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<bool>,
    /// Microseconds since the run started.
    pub invoke_us: u64,
    pub complete_us: u64,
    pub outcome: Outcome,
    pub side: Side,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed or is indeterminate: `timeout`, `refused`, `http-503:cluster_unavailable`…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Chat: the upstream of the last attempt and the attempts it took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Spend: the `usage` of an admitted (2xx) response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// Token counts from a response's `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }
}

impl Op {
    pub fn latency_us(&self) -> u64 {
        self.complete_us.saturating_sub(self.invoke_us)
    }
}

/// The run's clock and its recorded operations, shared by every client task.
#[derive(Clone)]
pub struct History {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl History {
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            ops: Arc::default(),
        }
    }

    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Records a completed operation and gives it the next index.
    pub fn record(&self, mut op: Op) {
        let mut ops = self.ops.lock().expect("history lock");
        op.index = ops.len() as u64;
        ops.push(op);
    }

    pub fn snapshot(&self) -> Vec<Op> {
        self.ops.lock().expect("history lock").clone()
    }

    /// Replaces the history (after the final reads named the keys of indeterminate creates).
    pub fn replace(&self, ops: Vec<Op>) {
        *self.ops.lock().expect("history lock") = ops;
    }
}

/// Writes `ops` as JSON lines, in invocation order.
pub fn write_jsonl(path: &std::path::Path, ops: &[Op]) -> std::io::Result<()> {
    let mut sorted: Vec<&Op> = ops.iter().collect();
    sorted.sort_by_key(|o| (o.invoke_us, o.index));
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for op in sorted {
        serde_json::to_writer(&mut out, op)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
