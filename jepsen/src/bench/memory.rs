//! Memory and file-descriptor facts from the kernel: a process' RSS, the open-file limit.

use anyhow::Context;

/// `VmRSS` of a process, in bytes.
pub(crate) fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS line in {path}"))
}

/// Waits until `pid` has used under 20 ms of CPU in 500 ms (at most `limit`): work started by
/// the first requests (a vocabulary loading on a blocking thread, Raft's first entries) must be
/// over before memory is called idle. False when it never went quiet.
pub(crate) async fn wait_idle(pid: u32, limit: std::time::Duration) -> anyhow::Result<bool> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut before = cpu_ticks(pid)?;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let after = cpu_ticks(pid)?;
        if after.saturating_sub(before) < 2 {
            return Ok(true);
        }
        before = after;
    }
    Ok(false)
}

/// User plus system CPU time of a process, in clock ticks (`getconf CLK_TCK`: 100 on Linux
/// x86-64, so 10 ms; `wait_idle`'s threshold assumes it).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the command (which may hold spaces) start at the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(user), Some(system)) => Ok(user + system),
        _ => anyhow::bail!("no CPU times in {path}"),
    }
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Raises this process' soft open-file limit to its hard limit and returns it. Children
/// inherit it, so aigw, the mock and the bare proxy run with the same `ulimit -n`.
pub(crate) fn raise_nofile_limit() -> anyhow::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\taigw\nVmPeak:\t  9999 kB\nVmRSS:\t    1234 kB\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn own_rss_is_positive() {
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }
}
