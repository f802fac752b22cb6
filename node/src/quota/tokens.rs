//! Token estimates for admission: the input counted with tiktoken (cl100k_base, the fallback
//! for models tiktoken does not know; counts for non-OpenAI models are estimates), the output
//! reserved from `max_completion_tokens` / `max_tokens` or a default.

use serde::Deserialize;
use serde_json::value::RawValue;

/// Reserved for the output when the request names no maximum.
pub(crate) const DEFAULT_OUTPUT_RESERVATION: u64 = 1024;
/// Per-message overhead in OpenAI's chat format (role, separators).
const PER_MESSAGE: u64 = 4;

#[derive(Deserialize)]
struct TokenFields<'a> {
    #[serde(borrow, default)]
    messages: Vec<Message<'a>>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(borrow, default)]
    stream_options: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

/// What a chat request is expected to cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Estimate {
    pub input: u64,
    pub output: u64,
    /// The client set `stream_options` itself.
    pub has_stream_options: bool,
}

impl Estimate {
    /// For a key whose limits count no tokens.
    pub fn calls_only() -> Self {
        Self {
            input: 0,
            output: 0,
            has_stream_options: false,
        }
    }
}

pub(crate) fn count(text: &str) -> u64 {
    tiktoken_rs::cl100k_base_singleton()
        .encode_with_special_tokens(text)
        .len() as u64
}

/// Estimates a chat body's tokens. A body the router accepted always parses here; anything
/// odd in `messages` counts as its raw length / 4 rather than failing the request.
pub(crate) fn estimate_chat(body: &[u8]) -> Estimate {
    let Ok(fields) = serde_json::from_slice::<TokenFields<'_>>(body) else {
        return Estimate {
            input: body.len() as u64 / 4,
            output: DEFAULT_OUTPUT_RESERVATION,
            has_stream_options: false,
        };
    };
    let mut input = 0;
    for message in &fields.messages {
        input += PER_MESSAGE;
        if let Some(content) = message.content {
            input += content_tokens(content);
        }
    }
    Estimate {
        input,
        output: fields
            .max_completion_tokens
            .or(fields.max_tokens)
            .unwrap_or(DEFAULT_OUTPUT_RESERVATION),
        has_stream_options: fields.stream_options.is_some(),
    }
}

/// Tokens of a message's content: a string, or parts whose `text` is counted.
fn content_tokens(content: &RawValue) -> u64 {
    #[derive(Deserialize)]
    struct Part {
        #[serde(default)]
        text: Option<String>,
    }
    if let Ok(text) = serde_json::from_str::<String>(content.get()) {
        return count(&text);
    }
    if let Ok(parts) = serde_json::from_str::<Vec<Part>>(content.get()) {
        return parts
            .iter()
            .filter_map(|p| p.text.as_deref())
            .map(count)
            .sum();
    }
    content.get().len() as u64 / 4
}

/// Loads the encoding once, off the request path (the first load parses the vocabulary).
pub(crate) fn warm_up() {
    tokio::task::spawn_blocking(|| {
        count("warm up");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_counted_from_strings_and_text_parts_and_output_from_the_maximum() {
        let body = br#"{"model":"m","max_tokens":50,"messages":[
            {"role":"system","content":"You are terse."},
            {"role":"user","content":[{"type":"text","text":"Hello world"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#;
        let estimate = estimate_chat(body);
        assert_eq!(estimate.output, 50);
        assert_eq!(
            estimate.input,
            2 * PER_MESSAGE + count("You are terse.") + count("Hello world")
        );
        assert!(!estimate.has_stream_options);
    }

    #[test]
    fn max_completion_tokens_wins_and_the_default_applies_without_either() {
        let with = estimate_chat(
            br#"{"max_tokens":5,"max_completion_tokens":9,"messages":[],"stream_options":{}}"#,
        );
        assert_eq!(with.output, 9);
        assert!(with.has_stream_options);
        assert_eq!(
            estimate_chat(br#"{"messages":[]}"#).output,
            DEFAULT_OUTPUT_RESERVATION
        );
    }
}
