//! `aigw-mock`: the fake OpenAI upstream as a process, for jepsen runs and benchmarks.
//!
//! Prints `aigw-mock listening on http://ADDR` once bound (scripts and tests wait for that
//! line; with `--listen 127.0.0.1:0` it carries the real port), then serves until SIGINT or
//! SIGTERM. Flags set the starting behaviour; `/mock/control` changes it at run time.

use std::io::Write;
use std::net::SocketAddr;

use aigw_jepsen::mock::{MockBehavior, MockServer, UsagePlacement};
use anyhow::Context;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "A fast OpenAI-compatible fake upstream with switchable faults"
)]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Delay before each response head.
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Content chunks per streamed completion.
    #[arg(long)]
    chunks: Option<usize>,
    /// Gap between streamed chunks.
    #[arg(long)]
    chunk_interval_ms: Option<u64>,
    /// Probability (0.0..=1.0) of answering --error-status instead.
    #[arg(long)]
    error_rate: Option<f64>,
    #[arg(long)]
    error_status: Option<u16>,
    /// Accept requests and never answer.
    #[arg(long)]
    hang: bool,
    /// Abort streams after this many content chunks, without [DONE].
    #[arg(long)]
    drop_after_chunks: Option<usize>,
    /// /health answers 503 (API calls are still served).
    #[arg(long)]
    unhealthy: bool,
    /// Send each streamed chunk after the first only on POST /mock/step.
    #[arg(long)]
    gated: bool,
    /// Which streamed chunk carries the usage a client asked for: empty_choices (OpenAI's
    /// shape), empty_delta or finish_chunk.
    #[arg(long, value_parser = usage_placement)]
    usage_on: Option<UsagePlacement>,
}

fn usage_placement(text: &str) -> Result<UsagePlacement, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| "expected empty_choices, empty_delta or finish_chunk".to_owned())
}

impl Args {
    /// Flags left out keep the library's defaults, which live in one place.
    fn behavior(&self) -> MockBehavior {
        let default = MockBehavior::default();
        MockBehavior {
            latency_ms: self.latency_ms.unwrap_or(default.latency_ms),
            chunks: self.chunks.unwrap_or(default.chunks),
            chunk_interval_ms: self.chunk_interval_ms.unwrap_or(default.chunk_interval_ms),
            error_rate: self.error_rate.unwrap_or(default.error_rate),
            error_status: self.error_status.unwrap_or(default.error_status),
            hang: self.hang,
            drop_after_chunks: self.drop_after_chunks.or(default.drop_after_chunks),
            unhealthy: self.unhealthy,
            gated: self.gated,
            usage_on: self.usage_on.unwrap_or(default.usage_on),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let args = Args::parse();
    let behavior = args.behavior();
    behavior
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid flags: {e}"))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let server = MockServer::start(listener, behavior).await?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "aigw-mock listening on http://{}", server.addr())?;
    stdout.flush()?;
    drop(stdout);

    shutdown_signal().await?;
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate =
            signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT")?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
