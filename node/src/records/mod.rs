//! Request records: every call's lifecycle, kept in a durable local log on each node and
//! shipped from there to the sinks (docs/DESIGN.md, "Request records").
//!
//! Built so far: the local log (log.rs): segments, group commit, rolling, compression,
//! retention, a reader from a cursor; the assembly of a streamed chat completion from its
//! events (assemble.rs); the record's type, version 1 (record.rs, docs/RECORDS.md,
//! docs/record.schema.json). Not yet: filling records from calls, the capture policy, the
//! sinks, the admin API and `aigw records export` (issue "Request records").
//!
//! This is an engine: it never imports a handler (openai/, passthrough/, admin/) or state.rs.

pub mod assemble;
pub mod log;
pub mod record;
