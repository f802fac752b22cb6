//! What every task of a run shares: the layout, the HTTP client, the history, the processes,
//! the firewall, the current partition, and the nemesis' log of what it did.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::time::Instant;

use super::history::{History, Side};
use super::http::HttpClient;
use super::net::Firewall;
use super::procs::{Layout, Processes};
use super::schedule::majority_side;

pub struct RunContext {
    pub layout: Layout,
    pub seed: u64,
    pub http: HttpClient,
    pub history: History,
    pub procs: tokio::sync::Mutex<Processes>,
    pub firewall: Option<Firewall>,
    /// The node pairs cut right now.
    pub cut: Mutex<Vec<(usize, usize)>>,
    /// When the clients stop.
    pub load_deadline: Instant,
    pub events: Mutex<Vec<NemesisEvent>>,
    /// Upstreams killed by the nemesis, for the failover workload's isolation times.
    pub deaths: Mutex<Vec<UpstreamDeath>>,
}

pub type Ctx = Arc<RunContext>;

/// One line of `nemesis.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct NemesisEvent {
    pub at_ms: u64,
    pub event: String,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpstreamDeath {
    pub mock: usize,
    pub upstream: String,
    pub killed_at_ms: u64,
    pub restarted_at_ms: Option<u64>,
    /// Per node: milliseconds from the kill until that node stopped routing to it (`None`:
    /// not seen before the upstream came back, or the node was unreachable meanwhile).
    pub isolated_after_ms: Vec<Option<u64>>,
}

impl RunContext {
    /// The side of the current partition node `n` is on.
    pub fn side(&self, n: usize) -> Side {
        let cut = self.cut.lock().expect("cut lock");
        if cut.is_empty() {
            Side::None
        } else if majority_side(self.layout.nodes, &cut).contains(&n) {
            Side::Majority
        } else {
            Side::Minority
        }
    }

    pub fn log_event(&self, event: &str, detail: serde_json::Value) {
        let at_ms = self.history.now_us() / 1000;
        tracing::info!(at_ms, event, %detail, "nemesis");
        self.events.lock().expect("events lock").push(NemesisEvent {
            at_ms,
            event: event.to_owned(),
            detail,
        });
    }

    /// Whose leader the reachable nodes name, by majority of answers; node index.
    pub async fn leader(&self) -> Option<usize> {
        let mut votes = vec![0usize; self.layout.nodes];
        for n in 0..self.layout.nodes {
            let url = format!("{}/admin/v1/cluster", self.layout.admin_url(n));
            let Ok(reply) = self
                .http
                .admin(
                    http::Method::GET,
                    &url,
                    None,
                    std::time::Duration::from_millis(500),
                )
                .await
            else {
                continue;
            };
            if let Some(id) = reply.json().and_then(|j| j.get("leader")?.as_u64())
                && (1..=self.layout.nodes as u64).contains(&id)
            {
                votes[id as usize - 1] += 1;
            }
        }
        let (best, count) = votes.iter().enumerate().max_by_key(|(_, c)| **c)?;
        (*count > 0).then_some(best)
    }
}
