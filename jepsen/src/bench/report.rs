//! The Markdown report of a run: the machine, the targets with where aigw stands as ratios,
//! then one table per scenario. Pure formatting of [`Results`]; nothing here measures.

use std::fmt::Write as _;
use std::time::Duration;

use super::load::latency::{added_micros, micros};
use super::load::open_streams::Protocol;
use super::machine::Machine;
use super::plan::Plan;
use super::scenario::{Results, median};
use super::stack::Target;

/// What the report says about the run itself.
pub(crate) struct RunInfo {
    pub plan: Plan,
    pub machine: Machine,
    pub nofile: u64,
    pub load_before: f64,
    pub load_after: f64,
    pub elapsed: Duration,
    pub date: String,
    pub command: String,
}

/// A target row: the goal, the measured value, and whether it is met.
struct Goal {
    what: String,
    goal: String,
    measured: String,
    met: Option<bool>,
}

pub(crate) fn markdown(info: &RunInfo, results: &Results) -> String {
    let mut out = String::new();
    let plan = &info.plan;
    let _ = writeln!(out, "# aigw-bench results ({} run)\n", plan.name);
    let _ = writeln!(out, "- date: {}", info.date);
    let _ = writeln!(out, "- command: `{}`", info.command);
    let _ = writeln!(out, "- machine: {}", info.machine);
    let _ = writeln!(
        out,
        "- load average (1 min): {:.2} before, {:.2} after; run took {:.0} s",
        info.load_before,
        info.load_after,
        info.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "- `ulimit -n` of the bench, the mock, the bare proxy and aigw: {}",
        info.nofile
    );
    let _ = writeln!(
        out,
        "- every scenario runs direct (client -> aigw-mock), bare proxy (client -> bare -> mock) and \
         aigw (client -> aigw -> mock) in turn, {} round(s) each; latencies in µs, measured at the client\n",
        plan.rounds
    );

    goals(&mut out, info, results);
    closed(&mut out, plan, results);
    rate(&mut out, plan, results);
    streaming(&mut out, plan, results);
    relay(&mut out, results);
    open_streams(&mut out, results);
    startup(&mut out, plan, results);
    keys(&mut out, plan, results);
    quota(&mut out, plan, results);
    out
}

fn goals(out: &mut String, info: &RunInfo, results: &Results) {
    let mut goals = Vec::new();
    let top = info.plan.concurrencies.iter().copied().max().unwrap_or(0);
    let closed_at = |target| {
        results
            .closed
            .iter()
            .find(|r| r.concurrency == top && r.target == target)
    };
    if let (Some(aigw), Some(bare)) = (closed_at(Target::Aigw), closed_at(Target::Bare)) {
        let ratio = aigw.run.requests_per_second() / bare.run.requests_per_second();
        goals.push(Goal {
            what: format!("throughput at concurrency {top}, aigw / bare proxy"),
            goal: ">= 0.80x".into(),
            measured: format!("{ratio:.2}x"),
            met: Some(ratio >= 0.8),
        });
    }
    let rate_of = |target| {
        results
            .rate
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, r)| r.latencies.summary())
    };
    if let (Some(aigw), Some(direct)) = (rate_of(Target::Aigw), rate_of(Target::Direct)) {
        let p50 = added_micros(aigw.p50, direct.p50);
        let p99 = added_micros(aigw.p99, direct.p99);
        goals.push(Goal {
            what: format!(
                "added latency p50 at {} req/s (aigw - direct)",
                info.plan.rate
            ),
            goal: "<= 50 µs".into(),
            measured: format!("{p50:.1} µs"),
            met: Some(p50 <= 50.0),
        });
        goals.push(Goal {
            what: format!(
                "added latency p99 at {} req/s (aigw - direct)",
                info.plan.rate
            ),
            goal: "<= 500 µs".into(),
            measured: format!("{p99:.1} µs"),
            met: Some(p99 <= 500.0),
        });
    }
    let stream_of = |target| {
        results
            .streaming
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, r)| r.ttfb.summary())
    };
    if let (Some(aigw), Some(direct)) = (stream_of(Target::Aigw), stream_of(Target::Direct)) {
        let added = added_micros(aigw.p50, direct.p50);
        goals.push(Goal {
            what: "streaming added TTFB p50 (aigw - direct)".into(),
            goal: "<= 200 µs".into(),
            measured: format!("{added:.1} µs"),
            met: Some(added <= 200.0),
        });
    }
    for row in results
        .open_streams
        .iter()
        .filter(|r| r.target == Target::Aigw)
    {
        let kib = row.bytes_per_stream() / 1024.0;
        goals.push(Goal {
            what: format!(
                "aigw RSS per open stream, {} streams over {}",
                row.streams,
                row.protocol.label()
            ),
            goal: "<= 16 KiB".into(),
            measured: format!("{kib:.1} KiB"),
            met: Some(kib <= 16.0),
        });
    }
    if let Some(row) = results.startup.iter().find(|r| r.target == Target::Aigw) {
        let mib = median(&row.idle_rss) as f64 / MIB;
        goals.push(Goal {
            what: "aigw idle RSS (1 key with limits, after 101 requests, quiet)".into(),
            goal: "<= 30 MiB".into(),
            measured: format!("{mib:.1} MiB"),
            met: Some(mib <= 30.0),
        });
    }
    if let Some(row) = &results.quota {
        let (measured, met) = match row.admitted_per_entry() {
            Some(ratio) => (format!("{ratio:.0}"), ratio >= 1000.0),
            None => (format!("{} admitted, no entry", row.run.completed), true),
        };
        goals.push(Goal {
            what: "quota on: admitted requests per Raft entry, hot key".into(),
            goal: ">= 1000".into(),
            measured,
            met: Some(met),
        });
    }
    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "| target | goal | measured | met |\n|---|---|---|---|");
    for g in goals {
        let met = match g.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        let _ = writeln!(out, "| {} | {} | {} | {met} |", g.what, g.goal, g.measured);
    }
    out.push('\n');
}

const MIB: f64 = 1024.0 * 1024.0;

fn closed(out: &mut String, plan: &Plan, results: &Results) {
    if results.closed.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Non-streaming chat, closed loop\n\n{} s measured per target and concurrency (after {} s warm-up per round); \
         each worker has one keep-alive HTTP/1.1 connection.\n",
        plan.measure.as_secs_f64(),
        plan.warmup.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| concurrency | target | req/s | vs bare | p50 | p99 | p99.9 | errors |\n|---:|---|---:|---:|---:|---:|---:|---:|"
    );
    for row in &results.closed {
        let bare = results
            .closed
            .iter()
            .find(|r| r.concurrency == row.concurrency && r.target == Target::Bare)
            .map_or(f64::NAN, |r| r.run.requests_per_second());
        let s = row.run.latencies.summary();
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.2}x | {:.1} | {:.1} | {:.1} | {} |",
            row.concurrency,
            row.target.label(),
            row.run.requests_per_second(),
            row.run.requests_per_second() / bare,
            micros(s.p50),
            micros(s.p99),
            micros(s.p999),
            row.run.errors
        );
    }
    out.push('\n');
}

fn rate(out: &mut String, plan: &Plan, results: &Results) {
    if results.rate.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Non-streaming chat at a fixed {} req/s (open loop)\n\n{} s measured per target over {} connections; \
         added = this target's percentile minus direct's.\n",
        plan.rate,
        plan.rate_measure.as_secs_f64(),
        plan.rate_workers
    );
    let _ = writeln!(
        out,
        "| target | req/s | p50 | p99 | p99.9 | added p50 | added p99 | sent > 1 ms late | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let direct = results
        .rate
        .iter()
        .find(|(t, _)| *t == Target::Direct)
        .map(|(_, r)| r.latencies.summary())
        .unwrap_or_default();
    for (target, run) in &results.rate {
        let s = run.latencies.summary();
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
            target.label(),
            run.requests_per_second(),
            micros(s.p50),
            micros(s.p99),
            micros(s.p999),
            added_micros(s.p50, direct.p50),
            added_micros(s.p99, direct.p99),
            run.late,
            run.errors
        );
    }
    out.push('\n');
}

fn streaming(out: &mut String, plan: &Plan, results: &Results) {
    if results.streaming.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Streaming chat\n\nThe mock streams {} content chunks {} ms apart; {} streams at a time, {} s measured per target. \
         TTFB: request sent -> first body byte. Gap: between frames carrying paced chunks. Added = minus direct.\n",
        plan.stream_chunks,
        plan.stream_interval_ms,
        plan.stream_concurrency,
        plan.stream_measure.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| target | streams | TTFB p50 | TTFB p99 | TTFB p99.9 | added TTFB p50 | added TTFB p99 | gap p50 | gap p99 | added gap p50 | added gap p99 | frames/stream | errors |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let direct = results
        .streaming
        .iter()
        .find(|(t, _)| *t == Target::Direct)
        .map(|(_, r)| (r.ttfb.summary(), r.gaps.summary()));
    let (dt, dg) = direct.unwrap_or_default();
    for (target, run) in &results.streaming {
        let t = run.ttfb.summary();
        let g = run.gaps.summary();
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            target.label(),
            run.streams,
            micros(t.p50),
            micros(t.p99),
            micros(t.p999),
            added_micros(t.p50, dt.p50),
            added_micros(t.p99, dt.p99),
            micros(g.p50),
            micros(g.p99),
            added_micros(g.p50, dg.p50),
            added_micros(g.p99, dg.p99),
            run.frames_per_stream(),
            run.errors
        );
    }
    out.push('\n');
}

fn relay(out: &mut String, results: &Results) {
    if results.relay.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### Delay added per chunk\n\nThe mock gated: each content chunk leaves only on `POST /mock/step`. One stream at a \
         time; time from sending the step (straight to the mock) to the chunk reaching the client. Added = minus direct.\n"
    );
    let _ = writeln!(
        out,
        "| target | chunks | p50 | p99 | p99.9 | added p50 | added p99 |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let direct = results
        .relay
        .iter()
        .find(|(t, _)| *t == Target::Direct)
        .map(|(_, l)| l.summary())
        .unwrap_or_default();
    for (target, delays) in &results.relay {
        let s = delays.summary();
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            target.label(),
            delays.len(),
            micros(s.p50),
            micros(s.p99),
            micros(s.p999),
            added_micros(s.p50, direct.p50),
            added_micros(s.p99, direct.p99)
        );
    }
    out.push('\n');
}

fn open_streams(out: &mut String, results: &Results) {
    if results.open_streams.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Concurrent open streams\n\nRSS of the process the client talks to (the mock itself for direct), warm, before and \
         while the streams are open; each stream has received its first content chunk and is held idle.\n"
    );
    let _ = writeln!(
        out,
        "| client protocol | target | open streams | RSS before (MiB) | RSS open (MiB) | per stream (KiB) | time to open (s) |\n|---|---|---:|---:|---:|---:|---:|"
    );
    for row in &results.open_streams {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} |",
            row.protocol.label(),
            row.target.label(),
            row.streams,
            row.rss_before as f64 / MIB,
            row.rss_open as f64 / MIB,
            row.bytes_per_stream() / 1024.0,
            row.opening.as_secs_f64()
        );
    }
    if results
        .open_streams
        .iter()
        .any(|r| r.protocol == Protocol::Http1)
    {
        let _ = writeln!(
            out,
            "\nOver HTTP/1.1 a proxy holds two sockets per stream, so the open-file limit caps the count; HTTP/2 \
             streams share client connections.\n"
        );
    }
}

fn startup(out: &mut String, plan: &Plan, results: &Results) {
    if results.startup.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Start-up and idle memory\n\nSpawn -> first successful chat completion (polled every 1 ms), {} starts per target; \
         idle RSS after 100 more requests, once the process used under 20 ms of CPU in 500 ms.\n",
        plan.startups
    );
    let _ = writeln!(
        out,
        "| target | start-up median (ms) | min - max (ms) | idle RSS median (MiB) |\n|---|---:|---:|---:|"
    );
    for row in &results.startup {
        let min = row.times.iter().min().copied().unwrap_or_default();
        let max = row.times.iter().max().copied().unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} - {:.1} | {:.1} |",
            row.target.label(),
            median(&row.times).as_secs_f64() * 1000.0,
            min.as_secs_f64() * 1000.0,
            max.as_secs_f64() * 1000.0,
            median(&row.idle_rss) as f64 / MIB
        );
    }
    out.push('\n');
}

fn keys(out: &mut String, plan: &Plan, results: &Results) {
    if results.keys.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## {} keys\n\naigw with a {}-key config beside the 1-key config, every key with `limits = {}` (a rate, no \
         budget: a budget's first lease per key is a Raft entry, measured in the quota scenario); requests to the \
         many-key aigw rotate over all its keys. {} s measured per row and concurrency.\n",
        plan.many_keys,
        plan.many_keys,
        super::gateway_config::RATE_ONLY_LIMITS,
        plan.keys_measure.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| target | start-up (ms) | idle RSS (MiB) | c=1 p50 | c=1 p99 | c=32 req/s | c=32 p50 | c=32 p99 |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for row in &results.keys {
        let c1 = row.c1.latencies.summary();
        let c32 = row.c32.latencies.summary();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} |",
            row.label,
            row.startup
                .map_or("-".into(), |d| format!("{:.0}", d.as_secs_f64() * 1000.0)),
            row.idle_rss
                .map_or("-".into(), |b| format!("{:.1}", b as f64 / MIB)),
            micros(c1.p50),
            micros(c1.p99),
            row.c32.requests_per_second(),
            micros(c32.p50),
            micros(c32.p99)
        );
    }
    let one = results.keys.iter().find(|r| r.keys == Some(1));
    let many = results.keys.iter().find(|r| r.keys.is_some_and(|k| k > 1));
    if let (Some(one), Some(many)) = (one, many) {
        let n = many.keys.unwrap_or(1).saturating_sub(1).max(1) as f64;
        let per_key = (many.idle_rss.unwrap_or(0) as f64 - one.idle_rss.unwrap_or(0) as f64) / n;
        let c1 = added_micros(
            many.c1.latencies.summary().p50,
            one.c1.latencies.summary().p50,
        );
        let tput = many.c32.requests_per_second() / one.c32.requests_per_second();
        let _ = writeln!(
            out,
            "\nMemory per key: {per_key:.0} bytes of RSS. Lookup cost: c=1 p50 {c1:+.1} µs, c=32 throughput {tput:.2}x, \
             many keys against one.\n"
        );
    }
}

fn quota(out: &mut String, plan: &Plan, results: &Results) {
    let Some(row) = &results.quota else {
        return;
    };
    let _ = writeln!(out, "## Quota on: a hot key\n");
    let _ = writeln!(
        out,
        "One key with `limits = {}`, driven by {} closed-loop connections for {:.0} s against a \
         fresh aigw. Raft entries: the log's last index (`GET /admin/v1/cluster`, settled) \
         before the first request and after the last; admitted: 2xx answers in the window.\n",
        super::gateway_config::KEY_LIMITS,
        row.concurrency,
        plan.quota_measure.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| admitted | refused or failed | req/s | p50 | p99 | Raft entries | admitted per entry |\n\
         |---:|---:|---:|---:|---:|---:|---:|"
    );
    let s = row.run.latencies.summary();
    let per_entry = row
        .admitted_per_entry()
        .map_or_else(|| "no entry".to_owned(), |r| format!("{r:.0}"));
    let _ = writeln!(
        out,
        "| {} | {} | {:.0} | {:.1} | {:.1} | {} ({} -> {}) | {per_entry} |\n",
        row.run.completed,
        row.run.errors,
        row.run.requests_per_second(),
        micros(s.p50),
        micros(s.p99),
        row.entries(),
        row.index_before,
        row.index_after
    );
}
