//! One line per measurement on stderr while a run goes, so a long run shows it is alive and a
//! broken target shows at once.

use super::load::latency::{Latencies, micros};
use super::load::load_run::LoadRun;
use super::load::streaming::StreamRun;

pub(crate) fn scenario(name: &str) {
    eprintln!("== {name}");
}

pub(crate) fn load(what: &str, run: &LoadRun) {
    let s = run.latencies.summary();
    eprintln!(
        "  {what}: {:.0} req/s, p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, {} errors",
        run.requests_per_second(),
        micros(s.p50),
        micros(s.p99),
        micros(s.p999),
        run.errors
    );
}

pub(crate) fn streams(what: &str, run: &StreamRun) {
    let ttfb = run.ttfb.summary();
    let gaps = run.gaps.summary();
    eprintln!(
        "  stream {what}: {} streams, TTFB p50 {:.1} µs p99 {:.1} µs, gap p50 {:.1} µs p99 {:.1} µs, {:.1} frames/stream, {} errors",
        run.streams,
        micros(ttfb.p50),
        micros(ttfb.p99),
        micros(gaps.p50),
        micros(gaps.p99),
        run.frames_per_stream(),
        run.errors
    );
}

pub(crate) fn relay(what: &str, delays: &Latencies) {
    let s = delays.summary();
    eprintln!(
        "  chunk relay {what}: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
        micros(s.p50),
        micros(s.p99),
        micros(s.p999)
    );
}
