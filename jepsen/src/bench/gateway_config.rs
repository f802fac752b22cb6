//! The aigw config a benchmark runs: every feature that exists today turned on, as a user
//! would run it: key auth (with a per-key model list), limits on every key (a requests-per-minute
//! rate, a calls budget and a tokens budget per day, so every request is admitted against
//! cluster-wide quotas and reserves tokens counted by the tokenizer), a weighted route over two
//! upstream model names, the default timeouts, the admin API on its own listener, and the
//! default log level (one line per request).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::load::request::MODEL;

/// The admin API's bearer token in every bench config.
pub(crate) const ADMIN_TOKEN: &str = "aigw-bench-admin-token";

/// Every key's limits: large enough that no scenario is ever refused (the closed loop reaches
/// ~30,000 requests/s; a full run sends about a million requests to one aigw), real enough that
/// every request goes through admission: the rate bucket, a lease of each budget, the token
/// reservation and its reconciliation with the mock's `usage`. A budget's lease is a quarter of
/// its limit per voter: one Raft entry per 2.5 M calls, and per 25 M tokens (a bench request
/// reserves ~95 and, reconciled, uses fewer).
/// The many-keys scenario's limits: a rate only. With budgets, each key's first request waits
/// for a Raft entry per budget (its first lease), which a run rotating over 10,000 cold keys
/// would measure instead of the key lookup; the quota scenario measures leases.
pub(crate) const RATE_ONLY_LIMITS: &str = "{ rpm = 100000000 }";

pub(crate) const KEY_LIMITS: &str = r#"{ rpm = 100000000, calls = { limit = 10000000, period = "day" }, tokens = { limit = 100000000, period = "day" } }"#;

/// `n` distinct key secrets, the same on every run so results compare across runs.
pub(crate) fn secrets(n: usize) -> Vec<String> {
    (0..n as u64)
        .map(|i| format!("sk-bench-{i:06}-{:016x}", splitmix64(i)))
        .collect()
}

/// A well-mixed 64-bit value from `i`, so secrets do not share long prefixes.
fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The config text for an aigw on `listen` (admin API on `admin`) in front of the mock at
/// `mock`.
pub(crate) fn render(
    listen: SocketAddr,
    admin: SocketAddr,
    mock: SocketAddr,
    data_dir: &Path,
    secrets: &[String],
    limits: &str,
) -> String {
    let mut text = format!(
        r#"# Written by aigw-bench.
[node]
id = 1
api_listen = "{listen}"
admin_listen = "{admin}"
data_dir = "{data_dir}"

[server]
shutdown_grace = "1s"

[admin]
token = "{ADMIN_TOKEN}"

[[bootstrap.upstreams]]
id = "mock"
kind = "openai"
base_url = "http://{mock}/v1"
# The open-streams scenario holds streams idle while it measures memory.
timeouts = {{ idle = "300s" }}

[[bootstrap.models]]
name = "{MODEL}"
strategy = "weighted"
targets = [
  {{ upstream = "mock", model = "mock-gpt", weight = 3 }},
  {{ upstream = "mock", model = "mock-gpt-mini", weight = 1 }},
]
"#,
        data_dir = data_dir.display()
    );
    // Records are on in aigw by default (capture "full", no sink); `AIGW_BENCH_RECORDS=off` or
    // `=metadata` measures without them or without bodies (BENCHMARKS.md, "Request records").
    match std::env::var("AIGW_BENCH_RECORDS").as_deref() {
        Ok("off") => text.push_str("\n[records]\nenabled = false\n"),
        Ok("metadata") => text.push_str("\n[records]\ncapture = \"metadata\"\n"),
        _ => {}
    }
    text.reserve(secrets.len() * (96 + limits.len()));
    for (i, secret) in secrets.iter().enumerate() {
        let _ = write!(
            text,
            "\n[[bootstrap.keys]]\nname = \"bench-{i:06}\"\nsecret = \"{secret}\"\nmodels = [\"{MODEL}\"]\nlimits = {limits}\n"
        );
    }
    text
}

/// Writes the config to `dir/name` and returns its path.
pub(crate) fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_distinct_and_long_enough() {
        let s = secrets(1000);
        let unique: std::collections::HashSet<_> = s.iter().collect();
        assert_eq!(unique.len(), 1000);
        assert!(s.iter().all(|s| s.len() >= 8));
    }

    #[test]
    fn rendered_config_is_toml_with_every_key() {
        let text = render(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:3".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            Path::new("/tmp/x"),
            &secrets(3),
            KEY_LIMITS,
        );
        let config = aigw_config::parse(&text, "bench.toml").unwrap();
        assert_eq!(config.bootstrap.keys.len(), 3);
        assert_eq!(config.bootstrap.models[0].targets.len(), 2);
        assert_eq!(
            config.node.admin_listen,
            Some("127.0.0.1:3".parse().unwrap())
        );
        let limits = &config.bootstrap.keys[2].limits;
        assert_eq!(limits.rpm, Some(100_000_000));
        assert_eq!(limits.calls.map(|b| b.limit), Some(10_000_000));
        assert_eq!(limits.tokens.map(|b| b.limit), Some(100_000_000));
    }
}
