//! Network partitions with iptables, in a chain of our own (`AIGW_JEPSEN`) jumped to from
//! INPUT: every packet between two 127.0.0.x addresses passes INPUT on `lo`, so DROP rules on
//! (source, destination, cluster port) pairs cut Raft RPC (TCP) and gossip (UDP) between two
//! nodes, in both directions, and nothing else (clients reach the API from 127.0.0.1).
//!
//! The chain is flushed on heal, and removed at the end of a run, on Ctrl-C, and on a panic
//! (the panic hook calls [`remove_chain`]). A chain left by a killed harness is removed when
//! the next run starts.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

pub const CHAIN: &str = "AIGW_JEPSEN";

fn iptables(args: &[&str]) -> anyhow::Result<()> {
    // `-w`: wait for the xtables lock rather than fail when something else holds it.
    let output = Command::new("iptables")
        .arg("-w")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running iptables")?;
    if !output.status.success() {
        bail!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Fails with what to install when iptables is missing or unusable (not root, no netfilter).
pub fn check_available() -> anyhow::Result<()> {
    match Command::new("iptables").arg("-V").output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "the partition nemesis needs iptables, which is not installed: \
             apt-get install -y iptables (or run without --nemesis partition)"
        ),
        Err(e) => bail!("cannot run iptables: {e}"),
        Ok(_) => {}
    }
    iptables(&["-L", "INPUT", "-n"]).context(
        "iptables is installed but unusable (the harness must run as root, in a kernel with \
         netfilter)",
    )
}

/// Removes the chain and its jump, whatever state they are in. Never fails: it also runs
/// from the panic hook.
pub fn remove_chain() {
    // Bounded: one jump per earlier run at most, and never more than a few.
    for _ in 0..16 {
        if iptables(&["-D", "INPUT", "-j", CHAIN]).is_err() {
            break;
        }
    }
    let _ = iptables(&["-F", CHAIN]);
    let _ = iptables(&["-X", CHAIN]);
}

/// The partition control of one run: owns the chain until dropped.
pub struct Firewall {
    port: u16,
}

impl Firewall {
    pub fn install(port: u16) -> anyhow::Result<Self> {
        remove_chain();
        iptables(&["-N", CHAIN])?;
        iptables(&["-I", "INPUT", "1", "-j", CHAIN])?;
        Ok(Self { port })
    }

    /// Cuts every pair in `pairs` (both directions), on top of what is already cut.
    pub fn cut(&self, pairs: &[(Ipv4Addr, Ipv4Addr)]) -> anyhow::Result<()> {
        let port = self.port.to_string();
        for &(a, b) in pairs {
            for (src, dst) in [(a, b), (b, a)] {
                let (src, dst) = (src.to_string(), dst.to_string());
                for proto in ["tcp", "udp"] {
                    for side in ["--dport", "--sport"] {
                        iptables(&[
                            "-A", CHAIN, "-s", &src, "-d", &dst, "-p", proto, side, &port, "-j",
                            "DROP",
                        ])?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&self) -> anyhow::Result<()> {
        iptables(&["-F", CHAIN])
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        remove_chain();
    }
}
