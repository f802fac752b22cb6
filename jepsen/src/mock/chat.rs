//! `POST /v1/chat/completions`: a text answer of `chunks` words, or a call to the first tool
//! while the conversation does not end with a tool result; streamed as OpenAI streams it
//! when `stream` is true.
//!
//! A stream is: a role chunk, the content chunks (paced by `chunk_interval_ms` and, when
//! gated, by `POST /mock/step`), a finish chunk, the usage chunk if
//! `stream_options.include_usage`, then `[DONE]`. Where usage goes is `usage_on`: a chunk
//! with no choices (OpenAI's shape), a chunk with one empty-delta choice, or the finish chunk. A tool call is two content chunks: the
//! call's index, id, type and name, then its arguments. `drop_after_chunks` aborts the
//! connection after that many content chunks instead of finishing.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{StatusCode, header};
use tokio::sync::watch;

use super::admission::admit;
use super::behavior::UsagePlacement;
use super::error::json_response;
use super::request::ChatRequestView;
use super::state::MockState;
use super::stats::StreamGuard;
use super::wire::{self, Answer, Usage};

/// How long an aborting stream waits so the chunks before the abort reach the socket: hyper
/// flushes when the body pends, and h2 discards a reset stream's queued frames.
const FLUSH_BEFORE_ABORT: Duration = Duration::from_millis(10);

/// Content chunks of a tool-call answer: the call's head, then its arguments.
const TOOL_CALL_CHUNKS: usize = 2;

pub(crate) async fn completions(
    State(state): State<Arc<MockState>>,
    request: Request,
) -> Result<Response, Response> {
    let admitted = admit(&state, request).await?;
    let view = ChatRequestView::parse(&admitted.body).map_err(IntoResponse::into_response)?;
    let model = view.model_json().map_err(IntoResponse::into_response)?;
    let answer = match view.tool_to_call() {
        Some(name) => Answer::ToolCall { name },
        None => Answer::Text,
    };
    let behavior = &admitted.prepared.behavior;
    let chunks = match answer {
        Answer::Text => behavior.chunks,
        Answer::ToolCall { .. } => TOOL_CALL_CHUNKS,
    };
    let usage = Usage {
        prompt: view.prompt_tokens(),
        completion: chunks as u64,
    };
    let n = admitted.n;
    if let Some(user) = &view.user {
        state
            .counters
            .count_user(user, usage.prompt, usage.completion);
    }

    if view.stream != Some(true) {
        let body = wire::completion(n, model, answer, &admitted.prepared.text_json, usage);
        return Ok(json_response(StatusCode::OK, body));
    }

    let stream = ChatStream {
        head: wire::chunk_head(n, model),
        tool_call_head: match answer {
            Answer::ToolCall { name } => Some(wire::tool_call_head_tail(n, name)),
            Answer::Text => None,
        },
        usage: view.include_usage().then_some((behavior.usage_on, usage)),
        phase: Phase::Role,
        sent: 0,
        total: chunks,
        interval: admitted.prepared.chunk_interval,
        gate: behavior.gated.then(|| state.gate()),
        drop_after: behavior.drop_after_chunks,
        guard: admitted.in_flight.into_stream(),
    };
    let body = Body::from_stream(futures::stream::unfold(stream, ChatStream::next));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Role,
    Content,
    Finish,
    Usage,
    Done,
    End,
}

/// One streamed completion's state; `next` yields its events one at a time.
struct ChatStream {
    /// `data: {"id":..,"model":..,` for this request.
    head: Bytes,
    /// Set for a tool-call answer: the tail of its first content chunk.
    tool_call_head: Option<Bytes>,
    /// Set when the client asked for `include_usage`: where it goes, and the counts.
    usage: Option<(UsagePlacement, Usage)>,
    phase: Phase,
    /// Content chunks yielded so far.
    sent: usize,
    total: usize,
    interval: Duration,
    /// The step receiver and the step count when the stream began.
    gate: Option<(watch::Receiver<u64>, u64)>,
    drop_after: Option<usize>,
    /// Counts the stream as completed, aborted or (when dropped early) cancelled.
    guard: StreamGuard,
}

impl ChatStream {
    async fn next(mut self) -> Option<(io::Result<Bytes>, Self)> {
        loop {
            let event = match self.phase {
                Phase::Role => {
                    self.phase = Phase::Content;
                    wire::event(&self.head, wire::role_tail())
                }
                Phase::Content => {
                    if let Some(limit) = self.drop_after
                        && self.sent >= limit.min(self.total)
                    {
                        tokio::time::sleep(FLUSH_BEFORE_ABORT).await;
                        self.guard.aborted();
                        self.phase = Phase::End;
                        let abort = io::Error::other("aigw-mock: drop_after_chunks");
                        return Some((Err(abort), self));
                    }
                    if self.sent == self.total {
                        self.phase = Phase::Finish;
                        continue;
                    }
                    if self.sent > 0 {
                        self.pace().await;
                    }
                    let event = match (&self.tool_call_head, self.sent) {
                        (Some(tool_call_head), 0) => wire::event(&self.head, tool_call_head),
                        (Some(_), _) => wire::event(&self.head, wire::tool_arguments_tail()),
                        (None, index) => wire::event(&self.head, wire::content_tail(index)),
                    };
                    self.sent += 1;
                    event
                }
                Phase::Finish => {
                    self.phase = Phase::Usage;
                    let tool_call = self.tool_call_head.is_some();
                    match self.usage {
                        Some((UsagePlacement::FinishChunk, usage)) => {
                            wire::event(&self.head, &wire::finish_with_usage_tail(tool_call, usage))
                        }
                        _ => wire::event(&self.head, wire::finish_tail(tool_call)),
                    }
                }
                Phase::Usage => {
                    self.phase = Phase::Done;
                    match self.usage {
                        Some((UsagePlacement::EmptyChoices, usage)) => {
                            wire::event(&self.head, &wire::usage_tail(usage))
                        }
                        Some((UsagePlacement::EmptyDelta, usage)) => {
                            wire::event(&self.head, &wire::usage_empty_delta_tail(usage))
                        }
                        Some((UsagePlacement::FinishChunk, _)) | None => continue,
                    }
                }
                Phase::Done => {
                    self.phase = Phase::End;
                    self.guard.completed();
                    wire::DONE.clone()
                }
                Phase::End => return None,
            };
            return Some((Ok(event), self));
        }
    }

    /// Waits before every content chunk but the first: the interval, then the gate.
    async fn pace(&mut self) {
        if !self.interval.is_zero() {
            tokio::time::sleep(self.interval).await;
        }
        if let Some((steps, base)) = &mut self.gate {
            let target = *base + self.sent as u64;
            // The sender lives as long as the server; if it is gone, so is this connection.
            let _ = steps.wait_for(|step| *step >= target).await;
        }
    }
}
