//! The [`LeaseLedger`] this node's key actors lease through: grants and closes are Raft writes,
//! what a budget has left is read from the node's applied snapshot, and marks go to the marks
//! file (fsynced, off the async threads). The key actor itself (aigw-actors' key.rs) decides
//! when to renew; this is only its I/O.

use std::sync::Arc;

use aigw_actors::LeaseLedger;
use aigw_cluster::{BudgetKey, ClusterNode, Command, NodeId, Outcome};

use super::marks::Marks;

pub(crate) struct RaftLedger {
    pub cluster: ClusterNode,
    pub node: NodeId,
    pub marks: Arc<Marks>,
}

impl LeaseLedger for RaftLedger {
    type Budget = BudgetKey;

    fn available(&self, budget: &BudgetKey) -> u64 {
        self.cluster
            .state()
            .load()
            .budgets
            .get(budget)
            .map_or(0, |b| b.available)
    }

    async fn grant(&self, budget: &BudgetKey, lease: u64, want: u64) -> Result<u64, String> {
        let command = Command::GrantLease {
            budget: budget.clone(),
            node: self.node,
            lease,
            want,
            release: None,
        };
        match self.cluster.write(command).await {
            Ok(Outcome::LeaseGranted { granted }) => Ok(granted),
            Ok(_) => Ok(0),
            Err(error) => Err(error.to_string()),
        }
    }

    async fn close(&self, budget: &BudgetKey, lease: u64, used: u64) {
        let command = Command::CloseLease {
            budget: budget.clone(),
            lease,
            used,
        };
        let _ = self.cluster.write(command).await;
    }

    async fn persist_mark(&self, lease: u64, mark: u64) -> Result<(), String> {
        let marks = Arc::clone(&self.marks);
        tokio::task::spawn_blocking(move || marks.set(lease, mark))
            .await
            .map_err(|e| e.to_string())?
    }
}
