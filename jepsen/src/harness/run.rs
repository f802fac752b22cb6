//! One run, start to end: check the tools, lay out the directory, start the cluster, run the
//! workloads and the nemesis until the time limit, heal, final reads, stop, check, write the
//! summary. Returns whether every invariant held.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use http::Method;
use tokio::time::Instant;

use super::checker::keys::check_keys;
use super::checker::quota::{QuotaInputs, check_quota};
use super::context::{Ctx, RunContext};
use super::history::{History, write_jsonl};
use super::http::HttpClient;
use super::net::{self, Firewall};
use super::options::{Options, Resolved};
use super::procs::{ADMIN_TOKEN, Binaries, Layout, MOCKS, Processes};
use super::schedule::{self, NemesisKind, ScheduleShape};
use super::summary::{self, Inputs, Summary};
use super::workload::{WorkloadKind, failover, keys, quota};

/// How long the cluster may take to form, or to recover after the heal.
const SETTLE: Duration = Duration::from_secs(30);
/// The fault-free end of the load, so the last faults' effects settle before the final reads.
const TAIL: Duration = Duration::from_secs(8);

fn schedule_shape(r: &Resolved) -> ScheduleShape {
    ScheduleShape {
        seed: r.seed,
        nodes: r.nodes,
        mocks: MOCKS,
        nemeses: r.nemeses.clone(),
        time_limit: r.time_limit,
        tail: TAIL,
        fault_ms: (3_000, 10_000),
        gap_ms: (2_000, 6_000),
    }
}

fn replay_command(r: &Resolved) -> String {
    let workloads: Vec<&str> = r.workloads.iter().map(|w| w.name()).collect();
    let nemeses: Vec<String> = r
        .nemeses
        .iter()
        .map(|n| {
            serde_json::to_value(n)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect();
    format!(
        "cargo run --release -p aigw-jepsen --bin aigw-jepsen -- --nodes {} --workload {} \
         --nemesis {} --time-limit {} --seed {}",
        r.nodes,
        workloads.join(","),
        if nemeses.is_empty() {
            "none".to_owned()
        } else {
            nemeses.join(",")
        },
        r.time_limit.as_secs(),
        r.seed
    )
}

/// Runs; `Ok(true)` when every invariant held.
pub async fn run(options: Options) -> anyhow::Result<bool> {
    let resolved = options.resolve().map_err(anyhow::Error::msg)?;
    let plan = schedule::generate(&schedule_shape(&resolved));
    if options.print_schedule {
        for fault in &plan {
            println!("{}", serde_json::to_string(fault)?);
        }
        return Ok(true);
    }
    if resolved.nemeses.contains(&NemesisKind::Partition) {
        net::check_available()?;
    }
    let bins = Binaries::locate(
        options.aigw.clone(),
        options.aigw_mock.clone(),
        options.bin_dir.clone(),
    )?;
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/jepsen"))
        .join(format!(
            "seed-{}-{}",
            resolved.seed,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        ));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    println!("aigw-jepsen: run directory {}", out.display());
    println!("aigw-jepsen: replay with: {}", replay_command(&resolved));
    std::fs::write(
        out.join("schedule.jsonl"),
        plan.iter()
            .map(|f| serde_json::to_string(f).unwrap_or_default() + "\n")
            .collect::<String>(),
    )?;

    let layout = Layout {
        nodes: resolved.nodes,
        port_base: options.port_base,
        panic_mode: !options.no_panic_mode,
        mock_error_rate: options.mock_error_rate,
    };
    let mut procs = Processes::prepare(layout.clone(), &bins, &out)?;
    let firewall = if resolved.nemeses.contains(&NemesisKind::Partition) {
        Some(Firewall::install(layout.cluster_port())?)
    } else {
        None
    };
    procs.start_all()?;
    let http = HttpClient::new(ADMIN_TOKEN);
    wait_ready(&http, &layout)
        .await
        .context("the cluster did not form")?;

    // The history's clock starts here; the load (and the schedule's clock) after the quota
    // workload's fault-free phase, if any.
    let history = History::new(Instant::now());
    let quota_on = resolved.workloads.contains(&WorkloadKind::Quota);
    let quota_state = if quota_on {
        let state = quota::setup(&http, &layout, resolved.seed, resolved.time_limit)
            .await
            .context("creating the quota workload's keys")?;
        println!(
            "aigw-jepsen: {} quota keys; spending `{}` to the end without faults",
            state.keys.len(),
            state
                .keys
                .iter()
                .find(|k| k.spec.role == super::checker::quota::Role::Exact)
                .map(|k| k.spec.name.as_str())
                .unwrap_or_default()
        );
        let took =
            quota::exact_phase(&http, &layout, &history, &state, options.clients_per_node).await;
        println!(
            "aigw-jepsen: fault-free quota phase took {} ms",
            took.as_millis()
        );
        Some(Arc::new(state))
    } else {
        None
    };
    let start = Instant::now();
    let load_start_ms = history.now_us() / 1000;
    if let Some(state) = &quota_state {
        state.set_load_start(start);
    }
    let ctx: Ctx = Arc::new(RunContext {
        layout: layout.clone(),
        seed: resolved.seed,
        http: http.clone(),
        history,
        procs: tokio::sync::Mutex::new(procs),
        firewall,
        cut: Mutex::default(),
        load_deadline: start + resolved.time_limit,
        events: Mutex::default(),
        deaths: Mutex::default(),
    });

    let keys_on = resolved.workloads.contains(&WorkloadKind::Keys);
    let failover_on = resolved.workloads.contains(&WorkloadKind::Failover);
    let keys_state = Arc::new(keys::KeysState::default());
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(super::nemesis::run(
        ctx.clone(),
        start,
        plan.clone(),
    )));
    let mut process = 0u32;
    for node in 0..layout.nodes {
        for _ in 0..options.clients_per_node {
            if keys_on {
                tasks.push(tokio::spawn(keys::client(
                    ctx.clone(),
                    keys_state.clone(),
                    process,
                    node,
                )));
                process += 1;
            }
            if failover_on {
                tasks.push(tokio::spawn(failover::client(ctx.clone(), process, node)));
                process += 1;
            }
            if let Some(state) = &quota_state {
                tasks.push(tokio::spawn(quota::client(
                    ctx.clone(),
                    state.clone(),
                    process,
                    node,
                )));
                process += 1;
            }
        }
    }
    if failover_on {
        tasks.push(tokio::spawn(failover::isolation_monitor(ctx.clone())));
    }
    // Every task ends by itself: clients at the deadline (plus one operation's timeout), the
    // nemesis at its last fault, which the schedule ends before the deadline.
    for task in tasks {
        if let Err(e) = task.await {
            ctx.log_event("error", serde_json::json!({"task": e.to_string()}));
        }
    }
    println!(
        "aigw-jepsen: load done ({} operations); healing",
        ctx.history.snapshot().len()
    );

    // Heal everything, whatever the nemesis left.
    if let Some(firewall) = &ctx.firewall {
        firewall.heal()?;
    }
    ctx.cut.lock().expect("cut lock").clear();
    let crashed: Vec<String> = ctx
        .procs
        .lock()
        .await
        .crashed_nodes()
        .into_iter()
        .map(|(n, status)| format!("node{} exited by itself: {status}", n + 1))
        .collect();
    ctx.procs.lock().await.restore_all()?;
    for m in 0..MOCKS {
        let reset = serde_json::json!({"error_rate": 0.0, "latency_ms": 0});
        super::nemesis::control(&ctx, m, reset).await?;
    }
    let recovery_error = wait_ready(&http, &layout)
        .await
        .err()
        .map(|e| format!("{e:#}"));

    let mut refused_applied = Vec::new();
    if keys_on && recovery_error.is_none() {
        refused_applied = keys::final_reads(&ctx, &keys_state).await?;
    }
    let quota_seen = match &quota_state {
        Some(state) => Some(quota::collect(&ctx, state).await),
        None => None,
    };
    ctx.procs
        .lock()
        .await
        .stop_all(Duration::from_secs(5))
        .await;

    let ops = ctx.history.snapshot();
    write_jsonl(&out.join("history.jsonl"), &ops)?;
    let events = ctx.events.lock().expect("events lock").clone();
    std::fs::write(
        out.join("nemesis.jsonl"),
        events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default() + "\n")
            .collect::<String>(),
    )?;
    println!("aigw-jepsen: checking {} operations", ops.len());
    let keys_report = keys_on.then(|| check_keys(&ops, keys::FINAL_PROCESS, refused_applied));
    let quota_report = match (&quota_state, &quota_seen) {
        (Some(state), Some((mock, ledger))) => Some(check_quota(QuotaInputs {
            ops: &ops,
            keys: &state.specs(),
            mock: mock.as_ref(),
            ledger,
            tpm_in_flight_allowance: quota::MAX_RESERVATION
                * layout.nodes as u64
                * u64::from(options.clients_per_node),
        })),
        _ => None,
    };
    let head = Summary {
        seed: resolved.seed,
        nodes: resolved.nodes,
        workloads: resolved
            .workloads
            .iter()
            .map(|w| format!("{w:?}").to_lowercase())
            .collect(),
        nemeses: resolved
            .nemeses
            .iter()
            .map(|n| format!("{n:?}").to_lowercase())
            .collect(),
        time_limit_s: resolved.time_limit.as_secs(),
        replay: replay_command(&resolved),
        schedule: plan,
        operations: Default::default(),
        keys: None,
        failover: None,
        quota: None,
        load_start_ms,
        availability: Default::default(),
        latency_ok: Default::default(),
        nemesis_events: 0,
        notes: Vec::new(),
        invariants: Vec::new(),
        passed: false,
    };
    let deaths = ctx.deaths.lock().expect("deaths lock").clone();
    let summary = summary::build(
        head,
        Inputs {
            ops: &ops,
            final_process: keys::FINAL_PROCESS,
            keys: keys_report,
            quota: quota_report,
            failover_on,
            deaths,
            events: &events,
            crashed,
            recovery_error,
        },
    );
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    let text = summary::render_text(&summary);
    std::fs::write(out.join("summary.txt"), &text)?;
    println!("{text}");
    println!("aigw-jepsen: results in {}", out.display());
    Ok(summary.passed)
}

/// Until every node answers `GET /admin/v1/cluster` naming the same leader, within SETTLE.
async fn wait_ready(http: &HttpClient, layout: &Layout) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        let mut leaders = Vec::new();
        for n in 0..layout.nodes {
            let url = format!("{}/admin/v1/cluster", layout.admin_url(n));
            match http
                .admin(Method::GET, &url, None, Duration::from_millis(500))
                .await
            {
                Ok(reply) if reply.status.is_success() => {
                    leaders.push(reply.json().and_then(|j| j.get("leader")?.as_u64()));
                }
                Ok(reply) => last = format!("node{}: {}", n + 1, reply.status),
                Err(e) => last = format!("node{}: {}", n + 1, e.label()),
            }
        }
        if leaders.len() == layout.nodes
            && leaders[0].is_some()
            && leaders.iter().all(|l| *l == leaders[0])
        {
            // A leader that can commit: a linearizable read through every node.
            let mut all = true;
            for n in 0..layout.nodes {
                let url = format!("{}/admin/v1/keys?limit=1", layout.admin_url(n));
                let ok = matches!(
                    http.admin(Method::GET, &url, None, Duration::from_secs(3)).await,
                    Ok(r) if r.status.is_success()
                );
                all &= ok;
            }
            if all {
                return Ok(());
            }
            last = "a leader, but not every node serves a linearizable read".into();
        } else if leaders.len() == layout.nodes {
            last = format!("leaders named: {leaders:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("not ready after {} s: {last}", SETTLE.as_secs())
}
