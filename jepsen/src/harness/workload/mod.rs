//! The workloads: clients that drive the cluster while the nemesis works, recording every
//! operation in the history.
//!
//! - [`keys`]: admin create / write / read / delete of keys through every node (checked for
//!   linearizability and lost writes).
//! - [`failover`]: chat completions through every node while upstreams fail.
//! - quota: NOT YET. It needs the quota issue (shared/QUOTAS.md: budgets, leases, rate
//!   shares), which is being built. It will go in `workload/quota.rs`: clients on every node
//!   spend keys with call and token budgets, and the checker proves admitted calls <= budget
//!   exactly and admitted tokens per window within the documented TPM bound. Until then
//!   `--workload quota` is refused with that message rather than run as a stand-in.

pub mod failover;
pub mod keys;

use serde::Serialize;

use crate::harness::context::Ctx;
use crate::harness::history::{Op, OpKind, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Keys,
    Failover,
}

impl WorkloadKind {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "keys" => Ok(Self::Keys),
            "failover" => Ok(Self::Failover),
            "quota" => Err(
                "the quota workload is not implemented yet: it waits for the quota \
                            issue (budgets and leases in the cluster); run keys,failover"
                    .into(),
            ),
            other => Err(format!(
                "unknown workload `{other}`; expected keys or failover"
            )),
        }
    }
}

/// A new operation of `f` by `process` on `node`, invoked now; its outcome is `Info` (unknown)
/// until the caller completes it.
pub(crate) fn invoked(ctx: &Ctx, process: u32, node: usize, f: OpKind) -> Op {
    Op {
        index: 0,
        process,
        node,
        f,
        key: None,
        name: None,
        value: None,
        found: None,
        invoke_us: ctx.history.now_us(),
        complete_us: 0,
        outcome: Outcome::Info,
        side: ctx.side(node),
        status: None,
        error: None,
        upstream: None,
        attempts: None,
    }
}
