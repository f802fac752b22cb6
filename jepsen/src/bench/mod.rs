//! `aigw-bench`: gateway overhead, streaming, memory and scale, with aigw side by side with a
//! bare pass-through proxy and with no proxy at all, in one run so the ratios hold on a noisy
//! machine.
//!
//! Owns: the load generator ([`load`]), the bare proxy that is the floor ([`bare_proxy`]), the
//! scenarios ([`scenario`]) and what a run writes: a Markdown report and an SVG chart.
//!
//! Never: builds anything (it runs the release binaries next to it as processes), fails on a
//! slow machine (these are measurements, not timed tests), or talks to anything but loopback.
//!
//! Called by: the `aigw-bench` binary.

mod bare_proxy;
mod chart;
mod gateway_config;
mod load;
mod machine;
mod memory;
mod plan;
mod procs;
mod progress;
mod report;
mod scenario;
mod stack;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use tokio::time::Instant;

pub use bare_proxy::serve as serve_bare_proxy;

use chart::Panel;
use load::latency::micros;
use scenario::Results;
use stack::{Env, Target};

/// The scenarios, in the order a run does them; `--only` picks some.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Startup,
    Closed,
    Rate,
    Streaming,
    OpenStreams,
    Keys,
    Quota,
}

impl Scenario {
    const ALL: [Scenario; 7] = [
        Scenario::Startup,
        Scenario::Closed,
        Scenario::Rate,
        Scenario::Streaming,
        Scenario::OpenStreams,
        Scenario::Keys,
        Scenario::Quota,
    ];
}

/// What to run and where to write.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub aigw: Option<PathBuf>,
    pub mock: Option<PathBuf>,
    /// The report and chart go here (`bench/` of the repository by default).
    pub out: PathBuf,
    pub only: Vec<Scenario>,
    /// Keys in the many-keys config, instead of the plan's.
    pub keys: Option<usize>,
    /// The command line, printed in the report.
    pub command: String,
}

/// Runs the scenarios, prints the report and writes it with the chart to `options.out`.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let load_before = machine::load_average();
    let nofile = memory::raise_nofile_limit()?;
    let bins = procs::Binaries::locate(options.aigw.clone(), options.mock.clone())?;
    if bins.is_debug_build() {
        eprintln!(
            "warning: {} is a debug build; its numbers mean nothing",
            bins.aigw.display()
        );
    }
    let work = std::env::temp_dir().join("aigw-bench");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let env = Env {
        bins,
        work,
        one_key: gateway_config::secrets(1),
    };
    let mut plan = if options.quick {
        plan::Plan::quick()
    } else {
        plan::Plan::full()
    };
    if let Some(keys) = options.keys {
        plan.many_keys = keys.max(2);
    }
    let selected = |s: Scenario| options.only.is_empty() || options.only.contains(&s);
    eprintln!(
        "aigw-bench {} run; logs and configs in {}; open-file limit {nofile}",
        plan.name,
        env.work.display()
    );

    let mut results = Results::default();
    for scenario in Scenario::ALL.into_iter().filter(|s| selected(*s)) {
        progress::scenario(&format!("{scenario:?}"));
        match scenario {
            Scenario::Startup => results.startup = scenario::startup::run(&env, &plan).await?,
            Scenario::Closed => {
                results.closed = scenario::nonstreaming::closed(&env, &plan).await?
            }
            Scenario::Rate => {
                results.rate = scenario::nonstreaming::fixed_rate(&env, &plan).await?
            }
            Scenario::Streaming => {
                results.streaming = scenario::streaming::run(&env, &plan).await?;
                results.relay = scenario::streaming::relay(&env, &plan).await?;
            }
            Scenario::OpenStreams => {
                results.open_streams = scenario::open_streams::run(&env, &plan, nofile).await?
            }
            Scenario::Keys => results.keys = scenario::many_keys::run(&env, &plan).await?,
            Scenario::Quota => results.quota = Some(scenario::quota::run(&env, &plan).await?),
        }
    }

    let info = report::RunInfo {
        machine: machine::Machine::read(),
        nofile,
        load_before,
        load_after: machine::load_average(),
        elapsed: started.elapsed(),
        date: date(),
        command: options.command.clone(),
        plan,
    };
    let markdown = report::markdown(&info, &results);
    println!("{markdown}");
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let report_path = options.out.join(format!("results-{}.md", info.plan.name));
    std::fs::write(&report_path, &markdown)
        .with_context(|| format!("writing {}", report_path.display()))?;
    let chart_path = options.out.join(format!("latency-{}.svg", info.plan.name));
    let title = format!(
        "aigw-bench ({} run): latency per target, {}",
        info.plan.name, info.machine
    );
    std::fs::write(
        &chart_path,
        chart::latency_svg(&title, &panels(&info.plan, &results)),
    )
    .with_context(|| format!("writing {}", chart_path.display()))?;
    eprintln!(
        "wrote {} and {}",
        report_path.display(),
        chart_path.display()
    );
    Ok(())
}

/// The chart's panels: each concurrency, the fixed rate, streaming TTFB.
fn panels(plan: &plan::Plan, results: &Results) -> Vec<Panel> {
    let percentiles = |s: load::latency::Summary| [micros(s.p50), micros(s.p99), micros(s.p999)];
    let mut panels = Vec::new();
    for &c in &plan.concurrencies {
        let groups: Vec<_> = results
            .closed
            .iter()
            .filter(|r| r.concurrency == c)
            .map(|r| {
                (
                    r.target.label().to_owned(),
                    percentiles(r.run.latencies.summary()),
                )
            })
            .collect();
        if !groups.is_empty() {
            panels.push(Panel {
                title: format!("concurrency {c}"),
                groups,
            });
        }
    }
    let groups = |rows: Vec<(Target, load::latency::Summary)>| -> Vec<(String, [f64; 3])> {
        rows.into_iter()
            .map(|(t, s)| (t.label().to_owned(), percentiles(s)))
            .collect()
    };
    if !results.rate.is_empty() {
        panels.push(Panel {
            title: format!("{} req/s", plan.rate),
            groups: groups(
                results
                    .rate
                    .iter()
                    .map(|(t, r)| (*t, r.latencies.summary()))
                    .collect(),
            ),
        });
    }
    if !results.streaming.is_empty() {
        panels.push(Panel {
            title: "stream TTFB".into(),
            groups: groups(
                results
                    .streaming
                    .iter()
                    .map(|(t, r)| (*t, r.ttfb.summary()))
                    .collect(),
            ),
        });
    }
    if !results.relay.is_empty() {
        panels.push(Panel {
            title: "per-chunk relay".into(),
            groups: groups(
                results
                    .relay
                    .iter()
                    .map(|(t, l)| (*t, l.summary()))
                    .collect(),
            ),
        });
    }
    panels
}

/// `date -u`, or nothing when the command is missing.
fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(String::new, |s| s.trim().to_owned())
}

/// `aigw-bench load`: exactly `requests` chat completions to `target` (streamed ones with
/// `stream`), then a summary line. For profiling a process under callgrind or perf, where the
/// cost per request is the figure.
pub async fn drive(
    target: SocketAddr,
    key: Option<String>,
    requests: u64,
    concurrency: u64,
    stream: bool,
) -> anyhow::Result<()> {
    let secrets = vec![key.unwrap_or_else(|| gateway_config::secrets(1).remove(0))];
    let request = load::request::ChatRequest::new(target, stream, &secrets)?;
    let run = load::closed_loop::run_count(target, &request, concurrency.max(1), requests).await?;
    progress::load(&format!("{requests} requests to {target}"), &run);
    Ok(())
}

/// `aigw-bench hold`: opens `warmup` streams and drops them, then opens `count` streamed
/// completions to `target` and holds them (each past its first content event) until stdin
/// closes or a line is read: for a heap profile of a process holding open streams.
pub async fn hold(
    target: SocketAddr,
    count: usize,
    warmup: usize,
    http2: bool,
) -> anyhow::Result<()> {
    use load::open_streams::{Protocol, open};
    let secrets = vec![gateway_config::secrets(1).remove(0)];
    let request = load::request::ChatRequest::new(target, true, &secrets)?;
    let protocol = if http2 {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    if warmup > 0 {
        drop(open(target, &request, warmup, protocol).await?);
        eprintln!("warmed up with {warmup} streams");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let held = open(target, &request, count, protocol).await?;
    eprintln!(
        "holding {} streams (opened in {:?}); press enter to drop",
        held.count, held.opening
    );
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)
    })
    .await;
    drop(held);
    Ok(())
}

/// `aigw-bench config`: the aigw config the benchmark runs, with `keys` keys, on stdout. The
/// profiling script starts aigw under callgrind with it.
pub fn print_config(
    listen: SocketAddr,
    admin: SocketAddr,
    mock: SocketAddr,
    keys: usize,
    data_dir: &std::path::Path,
) {
    print!(
        "{}",
        gateway_config::render(
            listen,
            admin,
            mock,
            data_dir,
            &gateway_config::secrets(keys.max(1)),
            gateway_config::KEY_LIMITS,
        )
    );
}
