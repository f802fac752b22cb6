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
        /// Join an existing cluster through this member's cluster address (HOST:PORT); the
        /// node's data dir must be new.
        #[arg(long)]
        join: Option<std::net::SocketAddr>,
    },
    /// Show the diff between a settings file (`[[upstreams]]`, `[[models]]`) and the cluster's
    /// live settings, then commit it.
    Apply {
        /// The settings document (TOML).
        file: PathBuf,
        /// Only print the diff.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Cluster membership.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
        #[command(flatten)]
        admin: AdminArgs,
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

#[derive(Subcommand)]
enum ClusterCommand {
    /// Members, roles, indexes, lag and liveness.
    Status,
    /// Remove a member by node id.
    Remove { id: u64 },
}

/// Which node's admin API to talk to: a node's config file, or an address and a token.
#[derive(clap::Args)]
struct AdminArgs {
    /// A node's config file: its admin_listen and [admin] token are used.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// The admin API's base URL, e.g. http://127.0.0.1:8081.
    #[arg(long, global = true, conflicts_with = "config")]
    admin: Option<String>,
    /// The admin token.
    #[arg(long, env = "AIGW_ADMIN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

impl AdminArgs {
    fn target(self) -> anyhow::Result<aigw::admin_client::AdminTarget> {
        match (self.config, self.admin) {
            (Some(config), _) => aigw::admin_client::AdminTarget::from_config(&config),
            (None, Some(base_url)) => Ok(aigw::admin_client::AdminTarget {
                base_url,
                token: self.token.ok_or_else(|| {
                    anyhow::anyhow!("--token or AIGW_ADMIN_TOKEN is required with --admin")
                })?,
            }),
            (None, None) => {
                anyhow::bail!("say which node: --config NODE.toml, or --admin URL with --token")
            }
        }
    }
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
        Command::Serve { config, join } => {
            let cfg = match aigw_config::load(&config) {
                Ok(mut cfg) => {
                    if join.is_some() {
                        cfg.cluster.join = join;
                    }
                    cfg
                }
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
        Command::Apply {
            file,
            dry_run,
            admin,
        } => run(async move { aigw::admin_client::apply(&admin.target()?, &file, dry_run).await }),
        Command::Cluster { command, admin } => run(async move {
            let target = admin.target()?;
            match command {
                ClusterCommand::Status => aigw::admin_client::cluster_status(&target).await,
                ClusterCommand::Remove { id } => {
                    aigw::admin_client::cluster_remove(&target, id).await
                }
            }
        }),
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
