//! The aigw config a benchmark runs: every feature that exists today turned on, as a user
//! would run it: key auth (with a per-key model list), a weighted route over two upstream
//! model names, the default timeouts, and the default log level (one line per request).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::load::request::MODEL;

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

/// The config text for an aigw on `listen` in front of the mock at `mock`.
pub(crate) fn render(
    listen: SocketAddr,
    mock: SocketAddr,
    data_dir: &Path,
    secrets: &[String],
) -> String {
    let mut text = format!(
        r#"# Written by aigw-bench.
[node]
id = 1
api_listen = "{listen}"
data_dir = "{data_dir}"

[server]
shutdown_grace = "1s"

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
    text.reserve(secrets.len() * 96);
    for (i, secret) in secrets.iter().enumerate() {
        let _ = write!(
            text,
            "\n[[bootstrap.keys]]\nname = \"bench-{i:06}\"\nsecret = \"{secret}\"\nmodels = [\"{MODEL}\"]\n"
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
            "127.0.0.1:2".parse().unwrap(),
            Path::new("/tmp/x"),
            &secrets(3),
        );
        let config = aigw_config::parse(&text, "bench.toml").unwrap();
        assert_eq!(config.bootstrap.keys.len(), 3);
        assert_eq!(config.bootstrap.models[0].targets.len(), 2);
    }
}
