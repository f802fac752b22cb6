//! `kind = "anthropic"`: OpenAI chat completions over Anthropic's Messages API
//! (`POST {base_url}/messages`, API version `2023-06-01`).
//!
//! - request.rs: an OpenAI chat request -> a Messages request (or a 400 for what cannot be
//!   translated), with the list of parameters dropped on the way.
//! - response.rs: a Message -> a `chat.completion`.
//! - stream.rs: Messages stream events -> `chat.completion.chunk` events, one id throughout,
//!   a usage chunk at the end (the usage tap strips it when the client did not ask), `[DONE]`.
//! - error.rs: Anthropic's error JSON -> OpenAI's error shape and the status the client sees.
//!
//! Every fixture in `fixtures/` is written from Anthropic's API reference
//! (docs.anthropic.com: "Messages", "Streaming Messages", "Errors") and OpenAI's chat
//! completions reference.

mod error;
mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

pub(crate) use error::translate_error;
pub(crate) use request::{MessagesRequest, translate_request};
pub(crate) use response::translate_response;
pub(crate) use stream::ChunkStream;

/// The path under `base_url` a chat completion goes to.
pub(crate) const MESSAGES_PATH: &str = "/messages";
/// The API version every request names (`anthropic-version`).
pub(crate) const API_VERSION: &str = "2023-06-01";
/// `max_tokens` when neither the request nor the model's `default_max_tokens` gives one
/// (Anthropic requires it).
pub(crate) const DEFAULT_MAX_TOKENS: u64 = 4096;

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`.
fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and any reason added later.
        _ => "stop",
    }
}

/// OpenAI's `usage` for Anthropic's: OpenAI's prompt tokens include the cached ones, while
/// Anthropic's `input_tokens` counts only what was neither read from nor written to the cache.
fn usage_json(usage: &Usage) -> serde_json::Value {
    let prompt = usage.input + usage.cache_creation + usage.cache_read;
    serde_json::json!({
        "prompt_tokens": prompt,
        "completion_tokens": usage.output,
        "total_tokens": prompt + usage.output,
        "prompt_tokens_details": { "cached_tokens": usage.cache_read },
    })
}

/// Anthropic's usage counters (absent ones are zero).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Usage {
    input: u64,
    output: u64,
    cache_creation: u64,
    cache_read: u64,
}

impl Usage {
    /// Takes every counter `usage` names; the others keep their value (a stream's
    /// `message_delta` repeats only some).
    fn update(&mut self, usage: &serde_json::Value) {
        let field = |name: &str| usage.get(name).and_then(serde_json::Value::as_u64);
        if let Some(n) = field("input_tokens") {
            self.input = n;
        }
        if let Some(n) = field("output_tokens") {
            self.output = n;
        }
        if let Some(n) = field("cache_creation_input_tokens") {
            self.cache_creation = n;
        }
        if let Some(n) = field("cache_read_input_tokens") {
            self.cache_read = n;
        }
    }
}
