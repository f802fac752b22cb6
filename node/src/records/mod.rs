//! Request records: every call's lifecycle, kept in a durable local log on each node and
//! shipped from there to the sinks (docs/DESIGN.md, "Request records").
//!
//! - call.rs: the records layer around the API router, gathering each call's facts and the
//!   frames of its response, handing a draft over when the response ends;
//! - writer.rs: the recorder, which builds each record off the request path and appends it;
//! - log.rs: the local log: segments, group commit, rolling, compression, retention, a reader
//!   from a cursor;
//! - assemble.rs: a streamed chat completion rebuilt from its events;
//! - record.rs: the record's type, version 1 (docs/RECORDS.md, docs/record.schema.json);
//! - query.rs, export.rs: reading records back (the admin API, one node or the whole cluster
//!   merged by time; `aigw records export`);
//! - sink.rs: shipping the log to NATS JetStream and Kafka, each sink from its own cursor.
//!
//! Not yet: capture per key (issue "Request records").
//!
//! This is an engine: it never imports a handler (openai/, passthrough/, admin/, peer.rs) or
//! state.rs.

pub mod assemble;
pub(crate) mod call;
pub mod export;
pub mod log;
pub mod query;
pub mod record;
pub mod sink;
pub mod writer;

pub(crate) use call::{CallFacts, FORM_TEXT_LIMIT, FormSeen, record_call};
pub use writer::Recorder;
