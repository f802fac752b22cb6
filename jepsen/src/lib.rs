//! aigw's test and benchmark harness, and `aigw-mock`, the fake OpenAI-compatible upstream.
//!
//! Owns: [`mock`], an in-process fake upstream whose faults (latency, errors, hangs, aborted
//! and gated streams, failing health) are switched at run time, and the counters that let a
//! test prove what the gateway did to it (requests, cancelled streams, the last request seen).
//!
//! Must never: be the bottleneck of a benchmark (responses are spliced from pre-serialised
//! bytes), nor pull the harness' CLI dependencies into the library: `aigw` links this crate
//! with `default-features = false` to run the mock for `aigw demo`, so everything under
//! [`mock`] builds without the `harness` feature.
//!
//! Used by: `aigw demo` (in process), the gateway's integration tests (in process), and the
//! `aigw-mock` binary for jepsen runs and benchmarks (as a separate process).
#![forbid(unsafe_code)]

pub mod mock;

/// The benchmark suite behind `aigw-bench`; harness-only, never linked into `aigw`.
#[cfg(feature = "harness")]
pub mod bench;

/// The fault-injection harness behind `aigw-jepsen`; harness-only, never linked into `aigw`.
#[cfg(feature = "harness")]
pub mod harness;
