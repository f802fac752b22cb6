//! Request records: every call's lifecycle, kept in a durable local log on each node and
//! shipped from there to the sinks (docs/DESIGN.md, "Request records").
//!
//! Built so far: the local log (log.rs): segments, group commit, rolling, compression,
//! retention, a reader from a cursor; and the assembly of a streamed chat completion from its
//! events (assemble.rs). Not yet: the record itself, feeding it from the call's tap, the
//! capture policy, the sinks, the admin API and `aigw records export` (issue "Request
//! records").
//!
//! This is an engine: it never imports a handler (openai/, passthrough/, admin/) or state.rs.

pub mod assemble;
pub mod log;
