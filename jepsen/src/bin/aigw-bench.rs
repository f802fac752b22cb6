//! `aigw-bench`: runs aigw-mock, a bare proxy and aigw as processes and measures them side by
//! side (see BENCHMARKS.md). Build the binaries first:
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo run --release -p aigw-jepsen --bin aigw-bench -- --quick
//! ```
//!
//! Subcommands serve the benchmark itself: `bare-proxy` is the floor it compares against,
//! `load` and `config` drive a profiled aigw (bench/profile.sh).

use std::net::SocketAddr;
use std::path::PathBuf;

use aigw_jepsen::bench::{self, Options, Scenario};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Benchmarks aigw beside a bare proxy and the upstream alone"
)]
struct Args {
    /// The short run (under two minutes); without it, the full run.
    #[arg(long)]
    quick: bool,
    /// The aigw binary; default: next to this executable.
    #[arg(long)]
    aigw: Option<PathBuf>,
    /// The aigw-mock binary; default: next to this executable.
    #[arg(long)]
    mock: Option<PathBuf>,
    /// Where the report (results-MODE.md) and the chart (latency-MODE.svg) go.
    #[arg(long, default_value = "bench")]
    out: PathBuf,
    /// Run only these scenarios (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Keys in the many-keys scenario (default: 10,000 quick, 100,000 full).
    #[arg(long)]
    keys: Option<usize>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The bare pass-through proxy (the floor); the benchmark starts it itself.
    BareProxy {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        upstream: SocketAddr,
    },
    /// Send exactly N chat completions and print the latency summary.
    Load {
        #[arg(long)]
        target: SocketAddr,
        /// Bearer secret; default: the bench config's first key.
        #[arg(long)]
        key: Option<String>,
        #[arg(long, default_value_t = 1000)]
        requests: u64,
        #[arg(long, default_value_t = 1)]
        concurrency: u64,
        /// Streamed completions (`"stream": true`), read to the end.
        #[arg(long)]
        stream: bool,
    },
    /// Open COUNT streamed completions and hold them until a line on stdin (heap profiling).
    Hold {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long, default_value_t = 64)]
        warmup: usize,
        #[arg(long)]
        http2: bool,
    },
    /// Print the aigw config the benchmark uses.
    Config {
        #[arg(long)]
        listen: SocketAddr,
        /// The admin API's address; default: port 0 (any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        admin: SocketAddr,
        #[arg(long)]
        mock: SocketAddr,
        #[arg(long, default_value_t = 1)]
        keys: usize,
        /// aigw's data dir; it must not hold another cluster's state.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Command::BareProxy { listen, upstream }) => {
            bench::serve_bare_proxy(listen, upstream).await
        }
        Some(Command::Load {
            target,
            key,
            requests,
            concurrency,
            stream,
        }) => bench::drive(target, key, requests, concurrency, stream).await,
        Some(Command::Hold {
            target,
            count,
            warmup,
            http2,
        }) => bench::hold(target, count, warmup, http2).await,
        Some(Command::Config {
            listen,
            admin,
            mock,
            keys,
            data_dir,
        }) => {
            bench::print_config(listen, admin, mock, keys, &data_dir);
            Ok(())
        }
        None => {
            let command = std::iter::once("aigw-bench".to_owned())
                .chain(std::env::args().skip(1))
                .collect::<Vec<_>>()
                .join(" ");
            bench::run(Options {
                quick: args.quick,
                aigw: args.aigw,
                mock: args.mock,
                out: args.out,
                only: args.only,
                keys: args.keys,
                command,
            })
            .await
        }
    }
}
