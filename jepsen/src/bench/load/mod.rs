//! The load generator: hyper client connections of our own, fixed concurrency (closed loop),
//! fixed rate (open loop), streaming timelines and held-open streams, with latencies in HDR
//! histograms. It knows nothing about which target it drives.

pub(crate) mod chunk_relay;
pub(crate) mod closed_loop;
pub(crate) mod conn;
pub(crate) mod latency;
pub(crate) mod load_run;
pub(crate) mod open_loop;
pub(crate) mod open_streams;
pub(crate) mod request;
pub(crate) mod streaming;
