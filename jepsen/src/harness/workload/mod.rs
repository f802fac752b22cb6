//! The workloads: clients that drive the cluster while the nemesis works, recording every
//! operation in the history.
//!
//! - [`keys`]: admin create / write / read / delete of keys through every node (checked for
//!   linearizability and lost writes).
//! - [`failover`]: chat completions through every node while upstreams fail.
//! - [`quota`]: chat completions with keys that have call and token budgets and RPM / TPM
//!   limits, through every node; a fault-free phase first spends one budget to the end.

pub mod failover;
pub mod keys;
pub mod quota;

use serde::Serialize;

use crate::harness::context::Ctx;
use crate::harness::history::{Op, OpKind, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Keys,
    Failover,
    Quota,
}

impl WorkloadKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Keys => "keys",
            Self::Failover => "failover",
            Self::Quota => "quota",
        }
    }

    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "keys" => Ok(Self::Keys),
            "failover" => Ok(Self::Failover),
            "quota" => Ok(Self::Quota),
            other => Err(format!(
                "unknown workload `{other}`; expected keys, failover or quota"
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
        usage: None,
    }
}
