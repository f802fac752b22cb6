//! `aigw-jepsen`: the fault-injection harness (docs/JEPSEN.md). Runs the release `aigw` and
//! `aigw-mock` binaries as a cluster on 127.0.0.11.., injects faults on a seeded schedule,
//! checks the history, and exits 0 only when every invariant held (1: an invariant failed;
//! 2: the run itself could not be done; 130: interrupted).

use std::process::ExitCode;

use aigw_jepsen::harness::{self, Options, net};
use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AIGW_JEPSEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let options = Options::parse();
    // A panic anywhere must not leave partitions behind (the processes die with their handles
    // as the panic unwinds; iptables rules would outlive us).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        net::remove_chain();
        default_hook(info);
    }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("aigw-jepsen: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        tokio::select! {
            result = harness::run(options) => match result {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("aigw-jepsen: {e:#}");
                    ExitCode::from(2)
                }
            },
            _ = tokio::signal::ctrl_c() => {
                // Dropping the run's future kills its processes and removes the chain.
                eprintln!("aigw-jepsen: interrupted; cleaning up");
                ExitCode::from(130)
            }
        }
    })
}
