//! `POST /v1/messages`: Anthropic's Messages API, for gateways that translate OpenAI's chat
//! completions to it. Written from Anthropic's API reference ("Messages", "Streaming
//! Messages", "Errors"), not from another project's code.
//!
//! The request is checked against the rules Anthropic documents and enforces, so a bad
//! translation fails loudly here (400 `invalid_request_error`, Anthropic's error shape):
//! `anthropic-version` header present; `model` and a positive integer `max_tokens`; no
//! unknown top-level field; `messages` non-empty, roles only `user` and `assistant` (a
//! `system` role is refused: system goes top-level), strictly alternating; no empty text
//! block; images with a base64 (jpeg, png, gif, webp) or url source; `tool_use` only in an
//! assistant turn, `tool_result` only in a user turn, first in it, naming a `tool_use` of
//! the assistant turn just before, and every `tool_use` answered in the next turn; tools with
//! a `name` and an object `input_schema`; a `tool_choice` of auto, any, none or tool+name;
//! `temperature` within 0..=1; `metadata` with `user_id` only.
//!
//! The answer: a call to the first tool (a short text block, then the `tool_use` block)
//! unless the last turn carries a tool result; otherwise `chunks` words of text, cut at
//! `max_tokens` words (stop reason `max_tokens`). Streamed as Anthropic streams: message_start,
//! ping, per block content_block_start/delta/stop (tool input in two `input_json_delta`
//! pieces), message_delta, message_stop.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{StatusCode, header};
use serde_json::{Value, json};

use super::admission::{Dialect, admit_as};
use super::error::json_response;
use super::state::MockState;
use super::wire::WORDS;

/// Top-level request members Anthropic's Messages API knows.
const KNOWN_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "metadata",
    "thinking",
    "service_tier",
];

/// The arguments of the mock's tool call, streamed in two pieces.
const TOOL_INPUT_PIECES: [&str; 2] = ["{\"location\": ", "\"Paris\"}"];

/// Anthropic's error body for `status`.
pub(crate) fn error_body(status: StatusCode, message: &str) -> Bytes {
    let kind = match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    Bytes::from(body.to_string())
}

fn invalid(message: impl Into<String>) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        error_body(StatusCode::BAD_REQUEST, &message.into()),
    )
}

pub(crate) async fn messages(
    State(state): State<Arc<MockState>>,
    request: Request,
) -> Result<Response, Response> {
    let version_given = request.headers().contains_key("anthropic-version");
    let admitted = admit_as(&state, request, Dialect::Anthropic).await?;
    if !version_given {
        return Err(invalid("anthropic-version: header is required"));
    }
    let body: Value = serde_json::from_slice(&admitted.body)
        .map_err(|e| invalid(format!("invalid JSON body: {e}")))?;
    let checked = check(&body).map_err(invalid)?;
    let behavior = &admitted.prepared.behavior;
    let id = format!("msg_mock_{}", admitted.n);
    let model = body["model"].clone();
    let input_tokens = (admitted.body.len() as u64 / 4).max(1);
    let stream = body["stream"].as_bool().unwrap_or(false);

    let (blocks, stop_reason) = match (&checked.tool_to_call, checked.last_is_tool_result) {
        (Some(name), false) => (
            vec![
                Block::Text(vec!["Let me check.".to_owned()]),
                Block::ToolUse {
                    id: format!("toolu_mock_{}", admitted.n),
                    name: name.clone(),
                },
            ],
            "tool_use",
        ),
        _ => {
            let words = behavior.chunks.min(checked.max_tokens as usize);
            let text: Vec<String> = WORDS
                .iter()
                .cycle()
                .take(words)
                .map(|w| (*w).to_owned())
                .collect();
            let reason = if words < behavior.chunks {
                "max_tokens"
            } else {
                "end_turn"
            };
            (vec![Block::Text(text)], reason)
        }
    };
    let output_tokens = blocks.iter().map(Block::tokens).sum::<u64>();
    let usage = json!({
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    });

    if !stream {
        let message = json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": blocks.iter().map(Block::whole).collect::<Vec<_>>(),
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": usage,
        });
        return Ok(json_response(
            StatusCode::OK,
            Bytes::from(message.to_string()),
        ));
    }

    let mut events = vec![event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "content": [], "model": model,
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }}),
    )];
    events.push(event("ping", &json!({"type": "ping"})));
    for (index, block) in blocks.iter().enumerate() {
        block.stream(index, &mut events);
    }
    events.push(event(
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                "usage": {"output_tokens": output_tokens}}),
    ));
    events.push(event("message_stop", &json!({"type": "message_stop"})));

    let interval = admitted.prepared.chunk_interval;
    let guard = admitted.in_flight.into_stream();
    let stream = futures::stream::unfold(
        (events.into_iter(), guard, true),
        move |(mut events, mut guard, first)| async move {
            let next = events.next();
            match next {
                Some(bytes) => {
                    if !first && !interval.is_zero() {
                        tokio::time::sleep(interval).await;
                    }
                    Some((Ok::<_, io::Error>(bytes), (events, guard, false)))
                }
                None => {
                    guard.completed();
                    None
                }
            }
        },
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// One content block of the mock's answer.
enum Block {
    /// Its text, in the pieces it streams as.
    Text(Vec<String>),
    ToolUse {
        id: String,
        name: String,
    },
}

impl Block {
    fn tokens(&self) -> u64 {
        match self {
            Self::Text(pieces) => pieces.len() as u64,
            Self::ToolUse { .. } => TOOL_INPUT_PIECES.len() as u64,
        }
    }

    fn whole(&self) -> Value {
        match self {
            Self::Text(pieces) => json!({"type": "text", "text": pieces.concat()}),
            Self::ToolUse { id, name } => json!({
                "type": "tool_use", "id": id, "name": name,
                "input": serde_json::from_str::<Value>(&TOOL_INPUT_PIECES.concat())
                    .expect("the tool input is JSON"),
            }),
        }
    }

    fn stream(&self, index: usize, events: &mut Vec<Bytes>) {
        let (start, deltas): (Value, Vec<Value>) = match self {
            Self::Text(pieces) => (
                json!({"type": "text", "text": ""}),
                pieces
                    .iter()
                    .map(|p| json!({"type": "text_delta", "text": p}))
                    .collect(),
            ),
            Self::ToolUse { id, name } => (
                json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                TOOL_INPUT_PIECES
                    .iter()
                    .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                    .collect(),
            ),
        };
        events.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        for delta in deltas {
            events.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        events.push(event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
    }
}

/// What the answer depends on, from a request that passed the checks.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Checked {
    pub(crate) max_tokens: u64,
    /// The first tool's name.
    pub(crate) tool_to_call: Option<String>,
    pub(crate) last_is_tool_result: bool,
}

/// Checks a Messages request against Anthropic's documented rules; `Err` says which broke.
pub(crate) fn check(body: &Value) -> Result<Checked, String> {
    let request = body.as_object().ok_or("the body must be a JSON object")?;
    if let Some(unknown) = request.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        return Err(format!("{unknown}: Extra inputs are not permitted"));
    }
    if !body["model"].is_string() {
        return Err("model: Field required".into());
    }
    let max_tokens = match &body["max_tokens"] {
        Value::Null => return Err("max_tokens: Field required".into()),
        value => value
            .as_u64()
            .filter(|n| *n >= 1)
            .ok_or("max_tokens: Input should be a positive integer")?,
    };
    match &body["system"] {
        Value::Null | Value::String(_) => {}
        Value::Array(blocks) => {
            for block in blocks {
                check_text(block, "system")?;
            }
        }
        _ => return Err("system: Input should be a string or a list of text blocks".into()),
    }
    if let Some(t) = body.get("temperature")
        && !t.as_f64().is_some_and(|t| (0.0..=1.0).contains(&t))
    {
        return Err("temperature: Input should be between 0 and 1".into());
    }
    if let Some(stop) = body.get("stop_sequences")
        && !stop
            .as_array()
            .is_some_and(|s| s.iter().all(Value::is_string))
    {
        return Err("stop_sequences: Input should be a list of strings".into());
    }
    if let Some(metadata) = body.get("metadata") {
        let ok = metadata
            .as_object()
            .is_some_and(|m| m.keys().all(|k| k == "user_id"));
        if !ok {
            return Err("metadata: only user_id is permitted".into());
        }
    }
    let mut tool_names = Vec::new();
    if let Some(tools) = body.get("tools") {
        for (i, tool) in tools
            .as_array()
            .ok_or("tools: Input should be a list")?
            .iter()
            .enumerate()
        {
            let name = tool["name"]
                .as_str()
                .ok_or(format!("tools.{i}.name: Field required"))?;
            if tool["input_schema"]["type"] != "object" {
                return Err(format!(
                    "tools.{i}.input_schema: Input should be an object schema"
                ));
            }
            tool_names.push(name.to_owned());
        }
    }
    if let Some(choice) = body.get("tool_choice") {
        match choice["type"].as_str() {
            Some("auto" | "any" | "none") => {}
            Some("tool") if choice["name"].is_string() => {}
            _ => {
                return Err("tool_choice: Input tag does not match auto, any, tool or none".into());
            }
        }
        if tool_names.is_empty() {
            return Err("tool_choice may only be specified while providing tools".into());
        }
    }

    let messages = body["messages"]
        .as_array()
        .ok_or("messages: Field required")?;
    if messages.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    let mut previous_role: Option<&str> = None;
    // The tool_use ids of the previous assistant turn, not yet answered.
    let mut open_tool_uses: HashSet<String> = HashSet::new();
    let mut last_is_tool_result = false;
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"]
            .as_str()
            .ok_or(format!("messages.{i}.role: Field required"))?;
        match role {
            "user" | "assistant" => {}
            "system" => {
                return Err(format!(
                    "messages.{i}: Unexpected role \"system\". The Messages API accepts a top-level `system` parameter, not \"system\" as an input message role."
                ));
            }
            other => return Err(format!("messages.{i}.role: unexpected role {other:?}")),
        }
        if previous_role == Some(role) {
            return Err(format!(
                "messages.{i}: roles must alternate between \"user\" and \"assistant\", but found multiple \"{role}\" roles in a row"
            ));
        }
        previous_role = Some(role);
        let blocks: Vec<Value> = match &message["content"] {
            Value::String(text) if !text.is_empty() => vec![json!({"type": "text", "text": text})],
            Value::String(_) => {
                return Err(format!(
                    "messages.{i}: text content blocks must be non-empty"
                ));
            }
            Value::Array(blocks) if !blocks.is_empty() => blocks.clone(),
            _ => {
                return Err(format!(
                    "messages.{i}.content: Input should be a non-empty string or list"
                ));
            }
        };
        let mut answered = HashSet::new();
        let mut seen_other = false;
        last_is_tool_result = false;
        let mut new_tool_uses = HashSet::new();
        for (j, block) in blocks.iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            match block["type"].as_str() {
                Some("text") => {
                    check_text(block, &at)?;
                    seen_other = true;
                }
                Some("image") if role == "user" => {
                    check_image(&block["source"], &at)?;
                    seen_other = true;
                }
                Some("tool_use") if role == "assistant" => {
                    let id = block["id"]
                        .as_str()
                        .ok_or(format!("{at}.id: Field required"))?;
                    if !block["name"].is_string() || !block["input"].is_object() {
                        return Err(format!("{at}: tool_use needs a name and an object input"));
                    }
                    new_tool_uses.insert(id.to_owned());
                }
                Some("tool_result") if role == "user" => {
                    if seen_other {
                        return Err(format!(
                            "{at}: tool_result blocks must come first in the user message content"
                        ));
                    }
                    let id = block["tool_use_id"]
                        .as_str()
                        .ok_or(format!("{at}.tool_use_id: Field required"))?;
                    if !open_tool_uses.contains(id) {
                        return Err(format!(
                            "{at}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                        ));
                    }
                    answered.insert(id.to_owned());
                    last_is_tool_result = true;
                }
                Some(other) => {
                    return Err(format!(
                        "{at}: block type {other:?} is not allowed in a {role} message"
                    ));
                }
                None => return Err(format!("{at}.type: Field required")),
            }
        }
        if role == "user" {
            if let Some(missing) = open_tool_uses.iter().find(|id| !answered.contains(*id)) {
                return Err(format!(
                    "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {missing}"
                ));
            }
            open_tool_uses.clear();
        } else {
            open_tool_uses = new_tool_uses;
        }
    }
    if previous_role == Some("assistant") && !open_tool_uses.is_empty() {
        return Err("the last assistant turn's tool_use blocks need tool_result blocks".into());
    }
    Ok(Checked {
        max_tokens,
        tool_to_call: tool_names.into_iter().next(),
        last_is_tool_result,
    })
}

fn check_text(block: &Value, at: &str) -> Result<(), String> {
    if block["type"] != "text" {
        return Err(format!("{at}: expected a text block"));
    }
    match block["text"].as_str() {
        Some(text) if !text.is_empty() => Ok(()),
        _ => Err(format!("{at}: text content blocks must be non-empty")),
    }
}

fn check_image(source: &Value, at: &str) -> Result<(), String> {
    match source["type"].as_str() {
        Some("base64") => {
            let media = source["media_type"].as_str().unwrap_or_default();
            if !["image/jpeg", "image/png", "image/gif", "image/webp"].contains(&media) {
                return Err(format!("{at}.source.media_type: unsupported {media:?}"));
            }
            if source["data"].as_str().is_none_or(str::is_empty) {
                return Err(format!("{at}.source.data: Field required"));
            }
            Ok(())
        }
        Some("url")
            if source["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http")) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{at}.source: expected a base64 or url image source"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({"model": "claude-x", "max_tokens": 64,
               "messages": [{"role": "user", "content": "Hi"}]})
    }

    #[test]
    fn a_well_formed_request_passes() {
        assert_eq!(
            check(&base()).unwrap(),
            Checked {
                max_tokens: 64,
                tool_to_call: None,
                last_is_tool_result: false
            }
        );
    }

    #[test]
    fn what_anthropic_refuses_is_refused() {
        let cases: Vec<(&str, Value)> = vec![
            (
                "max_tokens",
                json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}]}),
            ),
            (
                "multiple \"user\" roles",
                json!({"model": "m", "max_tokens": 5, "messages": [
                {"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}),
            ),
            (
                "Unexpected role \"system\"",
                json!({"model": "m", "max_tokens": 5, "messages": [
                {"role": "system", "content": "be nice"}, {"role": "user", "content": "b"}]}),
            ),
            (
                "corresponding `tool_use`",
                json!({"model": "m", "max_tokens": 5, "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}]}]}),
            ),
            (
                "without `tool_result`",
                json!({"model": "m", "max_tokens": 5, "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                {"role": "user", "content": "b"}]}),
            ),
            (
                "must come first",
                json!({"model": "m", "max_tokens": 5, "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "text", "text": "b"},
                    {"type": "tool_result", "tool_use_id": "t1"}]}]}),
            ),
            (
                "Extra inputs",
                json!({"model": "m", "max_tokens": 5, "n": 1,
                "messages": [{"role": "user", "content": "a"}]}),
            ),
            (
                "non-empty",
                json!({"model": "m", "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}),
            ),
        ];
        for (expected, body) in cases {
            let error = check(&body).unwrap_err();
            assert!(error.contains(expected), "{expected}: got {error}");
        }
    }

    #[test]
    fn a_tool_round_trip_passes_and_is_answered_in_text() {
        let body = json!({"model": "m", "max_tokens": 5,
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]}]});
        let checked = check(&body).unwrap();
        assert!(checked.last_is_tool_result);
        assert_eq!(checked.tool_to_call.as_deref(), Some("get_weather"));
    }
}
