//! The command line of `aigw-jepsen`, and the two named profiles.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use super::schedule::NemesisKind;
use super::workload::WorkloadKind;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Profile {
    /// 3 nodes, keys+failover+quota, partition+kill+pause+upstream, 60 s (about 100 s in all).
    Ci,
    /// 3 nodes, keys+failover+quota, every nemesis, 600 s.
    Long,
}

#[derive(Debug, Clone, Parser)]
#[command(
    version,
    about = "Runs an aigw cluster as processes under partitions, crashes, pauses and upstream \
             faults, and checks its claims"
)]
pub struct Options {
    /// Named defaults; any flag given overrides them.
    #[arg(long, value_enum)]
    pub profile: Option<Profile>,
    /// Nodes, on 127.0.0.11, .12, ... (1..=9).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Comma-separated: keys, failover, quota.
    #[arg(long)]
    pub workload: Option<String>,
    /// Comma-separated: partition, kill, pause, upstream; or `all`, or `none`.
    #[arg(long)]
    pub nemesis: Option<String>,
    /// Seconds of load (the heal, final reads and checks come after).
    #[arg(long)]
    pub time_limit: Option<u64>,
    /// Seeds the nemesis schedule and the clients' choices; same seed, same schedule.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where this run's directory goes (default: target/jepsen/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The `aigw` binary (default: next to this executable).
    #[arg(long)]
    pub aigw: Option<PathBuf>,
    /// The `aigw-mock` binary (default: next to this executable).
    #[arg(long)]
    pub aigw_mock: Option<PathBuf>,
    /// Where `aigw` and `aigw-mock` are when not given one by one (default: this executable's
    /// directory). Copy the binaries to a private directory for a long run, so a rebuild
    /// meanwhile does not change what a restarted node runs.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Ports: API base+80, admin base+81, cluster base+1 on each node; mocks base+101.. on
    /// 127.0.0.1.
    #[arg(long, default_value_t = 17000)]
    pub port_base: u16,
    /// Clients per node and workload.
    #[arg(long, default_value_t = 2)]
    pub clients_per_node: u32,
    /// Run the nodes with `routing.panic_mode = false` (to measure what panic mode changes).
    #[arg(long)]
    pub no_panic_mode: bool,
    /// Start the chat mocks (not the quota workload's) failing this share of their calls
    /// with 500 for the whole run, e.g. 0.5: both upstreams of the model half broken.
    #[arg(long)]
    pub mock_error_rate: Option<f64>,
    /// Print the schedule for these options and exit (runs nothing).
    #[arg(long)]
    pub print_schedule: bool,
}

/// The options with the profile's defaults filled in and everything parsed.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub nodes: usize,
    pub workloads: Vec<WorkloadKind>,
    pub nemeses: Vec<NemesisKind>,
    pub time_limit: Duration,
    pub seed: u64,
}

impl Options {
    pub fn resolve(&self) -> Result<Resolved, String> {
        let (nodes, workload, nemesis, time) = match self.profile {
            Some(Profile::Long) => (3, "keys,failover,quota", "all", 600),
            _ => (
                3,
                "keys,failover,quota",
                "partition,kill,pause,upstream",
                60,
            ),
        };
        let nodes = self.nodes.unwrap_or(nodes);
        if !(1..=9).contains(&nodes) {
            return Err(format!("--nodes must be 1..=9, got {nodes}"));
        }
        let workloads = self
            .workload
            .as_deref()
            .unwrap_or(workload)
            .split(',')
            .filter(|w| !w.is_empty())
            .map(WorkloadKind::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if workloads.is_empty() {
            return Err("--workload names no workload".into());
        }
        let nemesis = self.nemesis.as_deref().unwrap_or(nemesis);
        let nemeses = match nemesis {
            "all" => NemesisKind::ALL.to_vec(),
            "none" | "" => Vec::new(),
            list => list
                .split(',')
                .map(|n| {
                    NemesisKind::parse(n).ok_or_else(|| {
                        format!("unknown nemesis `{n}`; expected partition, kill, pause, upstream")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let time_limit = self.time_limit.unwrap_or(time);
        if !(10..=86_400).contains(&time_limit) {
            return Err(format!(
                "--time-limit must be 10..=86400 seconds, got {time_limit}"
            ));
        }
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
        Ok(Resolved {
            nodes,
            workloads,
            nemeses,
            time_limit: Duration::from_secs(time_limit),
            seed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_profiles_run_every_workload_and_a_list_may_name_quota() {
        for profile in ["ci", "long"] {
            let o = Options::parse_from(["aigw-jepsen", "--profile", profile, "--seed", "7"]);
            let r = o.resolve().unwrap();
            assert_eq!(
                r.workloads,
                [
                    WorkloadKind::Keys,
                    WorkloadKind::Failover,
                    WorkloadKind::Quota
                ]
            );
        }
        let o = Options::parse_from(["aigw-jepsen", "--workload", "quota", "--bin-dir", "/x"]);
        assert_eq!(o.resolve().unwrap().workloads, [WorkloadKind::Quota]);
        assert_eq!(o.bin_dir.as_deref(), Some(std::path::Path::new("/x")));
        let o = Options::parse_from(["aigw-jepsen", "--workload", "quotas"]);
        assert!(o.resolve().unwrap_err().contains("unknown workload"));
    }
}
