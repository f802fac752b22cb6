//! The `aigw-mock` process: it announces its real address, serves, and exits cleanly on
//! SIGTERM, which is all scripts and the jepsen harness rely on.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn binary_announces_its_address_serves_flags_and_exits_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aigw-mock"))
        .args(["--listen", "127.0.0.1:0", "--chunks", "2", "--unhealthy"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim_end()
        .strip_prefix("aigw-mock listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(!base.ends_with(":0"), "{base}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let health = client.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(health.status(), 503);
        let control: serde_json::Value = client
            .get(format!("{base}/mock/control"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(control["chunks"], 2);
    });

    let status = Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(exit) = child.try_wait().unwrap() {
                    return exit;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("aigw-mock must exit on SIGTERM")
    });
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn binary_rejects_invalid_flags() {
    let output = Command::new(env!("CARGO_BIN_EXE_aigw-mock"))
        .args(["--listen", "127.0.0.1:0", "--error-rate", "3"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("error_rate"));
}
