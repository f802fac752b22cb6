//! The scenarios, each run against the three targets in turn within one run, and the results
//! they hand to the report and the chart.

pub(crate) mod many_keys;
pub(crate) mod nonstreaming;
pub(crate) mod open_streams;
pub(crate) mod quota;
pub(crate) mod startup;
pub(crate) mod streaming;

use std::time::Duration;

use super::load::latency::Latencies;
use super::load::load_run::LoadRun;
use super::load::open_streams::Protocol;
use super::load::streaming::StreamRun;
use super::stack::Target;

/// Everything a run measured.
#[derive(Default)]
pub(crate) struct Results {
    pub startup: Vec<StartupRow>,
    pub closed: Vec<ClosedRow>,
    pub rate: Vec<(Target, LoadRun)>,
    pub streaming: Vec<(Target, StreamRun)>,
    /// Step sent -> chunk received, gated mock, one stream at a time.
    pub relay: Vec<(Target, Latencies)>,
    pub open_streams: Vec<OpenStreamsRow>,
    pub keys: Vec<KeysRow>,
    pub quota: Option<QuotaRow>,
}

pub(crate) struct StartupRow {
    pub target: Target,
    /// Spawn -> first successful chat completion, one per start.
    pub times: Vec<Duration>,
    /// RSS right after that first answer, one per start.
    pub idle_rss: Vec<u64>,
}

pub(crate) struct ClosedRow {
    pub concurrency: u64,
    pub target: Target,
    pub run: LoadRun,
}

pub(crate) struct OpenStreamsRow {
    pub protocol: Protocol,
    pub target: Target,
    pub streams: usize,
    /// RSS of the process serving the target's clients (the mock itself for direct).
    pub rss_before: u64,
    pub rss_open: u64,
    pub opening: Duration,
}

impl OpenStreamsRow {
    pub fn bytes_per_stream(&self) -> f64 {
        (self.rss_open as f64 - self.rss_before as f64) / self.streams.max(1) as f64
    }
}

pub(crate) struct KeysRow {
    pub label: String,
    pub keys: Option<usize>,
    /// Only for aigw rows: start-up and idle RSS with this many keys.
    pub startup: Option<Duration>,
    pub idle_rss: Option<u64>,
    pub c1: LoadRun,
    pub c32: LoadRun,
}

/// A hot key with limits at steady load, and the Raft entries its admissions took.
pub(crate) struct QuotaRow {
    pub concurrency: u64,
    /// The Raft log's last index, settled, before the first request and after the last.
    pub index_before: u64,
    pub index_after: u64,
    /// Admitted requests are `completed` (2xx inside the window; the few still in flight when
    /// it closed are admitted but not counted); refusals and failures are `errors`.
    pub run: LoadRun,
}

impl QuotaRow {
    pub fn entries(&self) -> u64 {
        self.index_after.saturating_sub(self.index_before)
    }

    /// Admitted requests per Raft entry; `None` when no entry was written.
    pub fn admitted_per_entry(&self) -> Option<f64> {
        let entries = self.entries();
        (entries > 0).then(|| self.run.completed as f64 / entries as f64)
    }
}

/// The median of some durations or sizes; zero for none.
pub(crate) fn median<T: Copy + Ord + Default>(values: &[T]) -> T {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}
