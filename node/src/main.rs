//! The `aigw` command line: `serve`, `check` and `demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "aigw",
    version,
    about = "An OpenAI-compatible AI gateway cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node with the given config file.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and print every error in it; exits non-zero when there is one.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run one node with an embedded config in front of an in-process mock upstream.
    Demo {
        /// Address of the demo's OpenAI API.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("AIGW_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    aigw::install_crypto_provider();
    match cli.command {
        Command::Check { config } => match aigw_config::load(&config) {
            Ok(cfg) => {
                println!(
                    "{}: OK ({} upstreams, {} models, {} keys)",
                    config.display(),
                    cfg.bootstrap.upstreams.len(),
                    cfg.bootstrap.models.len(),
                    cfg.bootstrap.keys.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => {
            let cfg = match aigw_config::load(&config) {
                Ok(cfg) => cfg,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            run(async move {
                let node = aigw::RunningNode::start(&cfg).await?;
                aigw::shutdown_signal().await;
                node.shutdown().await;
                Ok(())
            })
        }
        Command::Demo { listen } => run(aigw::demo::run(listen)),
    }
}

fn run(main: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("aigw: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("aigw: {err:#}");
            ExitCode::FAILURE
        }
    }
}
