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
