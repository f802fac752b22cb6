//! An OpenAI chat completion request -> an Anthropic Messages request.
//!
//! What is translated: system and developer messages -> `system`; user, assistant and tool
//! messages -> alternating `user`/`assistant` turns (consecutive turns of one role merged,
//! tool results first in their user turn, as Anthropic requires); text and image parts
//! (`data:` URLs -> base64 sources, http(s) URLs -> url sources); assistant `tool_calls` ->
//! `tool_use` blocks; `tool` messages -> `tool_result` blocks; `tools`, `tool_choice`,
//! `parallel_tool_calls: false`; `max_completion_tokens`/`max_tokens` (else the default the
//! caller passes); `stop`; `temperature`; `top_p`; `user` -> `metadata.user_id`; `stream`.
//!
//! What is refused (400, OpenAI's shape): what would change the answer's shape the client
//! relies on and cannot be honoured — see [`REFUSED`]. What is dropped, named in the
//! `x-aigw-dropped-params` answer header: [`DROPPED`] and any field this module does not know.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// Parameters that make the request fail with 400 when set to anything but their default.
pub(crate) const REFUSED: &[&str] = &[
    "n",               // more than 1: Anthropic answers one choice
    "logprobs",        // true: no log probabilities
    "top_logprobs",    // no log probabilities
    "response_format", // json_object / json_schema: no structured output mode
    "audio",           // no audio output
    "modalities",      // anything but ["text"]
    "functions",       // the legacy function API: use `tools`
    "function_call",   // the legacy function API: use `tool_choice`
];

/// Parameters dropped (with the `x-aigw-dropped-params` header) because Anthropic has no
/// counterpart; the answer is still a valid answer to the request.
pub(crate) const DROPPED: &[&str] = &[
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "logit_bias",
    "service_tier",
    "store",
    "metadata",
    "prediction",
    "reasoning_effort",
    "web_search_options",
];

/// A translated request, without its model (spliced per target by [`Self::body_for`]).
#[derive(Debug)]
pub(crate) struct MessagesRequest {
    /// Every member but `model`.
    body: Map<String, Value>,
    /// Parameters of the client's request that did not go upstream, in the request's order.
    pub dropped: Vec<String>,
    /// The client asked for a stream.
    pub stream: bool,
    /// The client asked for the usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
}

impl MessagesRequest {
    /// The request body for an upstream whose model name is `model_json` (a JSON string).
    pub fn body_for(&self, model_json: &str) -> Bytes {
        let rest = serde_json::to_vec(&self.body).expect("a JSON map always serialises");
        let mut out = Vec::with_capacity(rest.len() + model_json.len() + 10);
        out.extend_from_slice(b"{\"model\":");
        out.extend_from_slice(model_json.as_bytes());
        if rest.len() > 2 {
            out.push(b',');
        }
        out.extend_from_slice(&rest[1..]);
        out.into()
    }
}

/// Translates an OpenAI chat request body. `default_max_tokens` is used when the request
/// names neither `max_completion_tokens` nor `max_tokens`.
pub(crate) fn translate_request(
    body: &[u8],
    default_max_tokens: u64,
) -> Result<MessagesRequest, ApiError> {
    let request: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let mut out = Map::new();
    let mut dropped = Vec::new();
    let mut stream = false;
    let mut include_usage = false;
    let mut max_tokens = None;
    let mut max_completion_tokens = None;
    let mut tool_choice = None;
    let mut parallel_tool_calls = true;
    for (name, value) in &request {
        if value.is_null() {
            continue;
        }
        match name.as_str() {
            "model" => {}
            "messages" => {
                let (system, messages) = translate_messages(value)?;
                if !system.is_empty() {
                    out.insert("system".into(), Value::Array(system));
                }
                out.insert("messages".into(), Value::Array(messages));
            }
            "max_tokens" => max_tokens = Some(positive(value, "max_tokens")?),
            "max_completion_tokens" => {
                max_completion_tokens = Some(positive(value, "max_completion_tokens")?)
            }
            "stop" => {
                let sequences = match value {
                    Value::String(s) => vec![Value::String(s.clone())],
                    Value::Array(items) if items.iter().all(Value::is_string) => items.clone(),
                    _ => {
                        return Err(invalid(
                            "stop",
                            "`stop` must be a string or an array of strings",
                        ));
                    }
                };
                if !sequences.is_empty() {
                    out.insert("stop_sequences".into(), Value::Array(sequences));
                }
            }
            "temperature" | "top_p" => {
                out.insert(name.clone(), value.clone());
            }
            "user" => {
                out.insert("metadata".into(), json!({ "user_id": value }));
            }
            "stream" => {
                stream = value.as_bool().unwrap_or(false);
                if stream {
                    out.insert("stream".into(), Value::Bool(true));
                }
            }
            "stream_options" => {
                include_usage = value
                    .get("include_usage")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
            }
            "tools" => {
                let tools = translate_tools(value)?;
                if !tools.is_empty() {
                    out.insert("tools".into(), Value::Array(tools));
                }
            }
            "tool_choice" => tool_choice = Some(translate_tool_choice(value)?),
            "parallel_tool_calls" => parallel_tool_calls = value.as_bool().unwrap_or(true),
            "n" if value.as_u64() == Some(1) => {}
            "logprobs" if value == &Value::Bool(false) => {}
            "response_format" if value.get("type").and_then(Value::as_str) == Some("text") => {}
            "modalities" if value == &json!(["text"]) => {}
            known if DROPPED.contains(&known) => dropped.push(known.to_owned()),
            other => match REFUSED.iter().find(|refused| **refused == other) {
                Some(param) => {
                    return Err(ApiError::InvalidParam {
                        param,
                        message: format!(
                            "`{param}` is not supported by this model's upstream (Anthropic)"
                        ),
                    });
                }
                None => dropped.push(other.to_owned()),
            },
        }
    }
    let max_tokens = max_completion_tokens
        .or(max_tokens)
        .unwrap_or(default_max_tokens);
    out.insert("max_tokens".into(), Value::from(max_tokens));
    if !out.contains_key("messages") {
        return Err(invalid("messages", "`messages` is required"));
    }
    let has_tools = out.contains_key("tools");
    match (tool_choice, has_tools) {
        (Some(mut choice), true) => {
            if !parallel_tool_calls && choice["type"] != "none" {
                choice["disable_parallel_tool_use"] = Value::Bool(true);
            }
            out.insert("tool_choice".into(), choice);
        }
        (None, true) if !parallel_tool_calls => {
            out.insert(
                "tool_choice".into(),
                json!({"type": "auto", "disable_parallel_tool_use": true}),
            );
        }
        // A tool choice without tools means nothing to Anthropic (and it refuses it).
        _ => {}
    }
    Ok(MessagesRequest {
        body: out,
        dropped,
        stream,
        include_usage,
    })
}

fn invalid(param: &'static str, message: &str) -> ApiError {
    ApiError::InvalidParam {
        param,
        message: message.to_owned(),
    }
}

fn positive(value: &Value, param: &'static str) -> Result<u64, ApiError> {
    value
        .as_u64()
        .filter(|n| *n > 0)
        .ok_or_else(|| invalid(param, &format!("`{param}` must be a positive integer")))
}

/// The `system` blocks and the alternating turns.
fn translate_messages(messages: &Value) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let messages = messages
        .as_array()
        .ok_or_else(|| invalid("messages", "`messages` must be an array"))?;
    let mut system = Vec::new();
    // (role, blocks) in order, merged as they come.
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in messages {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("messages", "every message needs a `role`"))?;
        let content = message.get("content").unwrap_or(&Value::Null);
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.extend(text_blocks(content)?);
                continue;
            }
            "user" => ("user", user_blocks(content)?),
            "assistant" => ("assistant", assistant_blocks(message, content)?),
            "tool" => {
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("messages", "a `tool` message needs `tool_call_id`"))?;
                let mut result = json!({"type": "tool_result", "tool_use_id": id});
                let text = text_blocks(content)?;
                if !text.is_empty() {
                    result["content"] = Value::Array(text);
                }
                ("user", vec![result])
            }
            other => {
                return Err(invalid(
                    "messages",
                    &format!(
                        "messages with role `{other}` are not supported by this model's upstream (Anthropic)"
                    ),
                ));
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, merged)) if *last == role => merged.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let turns = turns
        .into_iter()
        .map(|(role, mut blocks)| {
            // Anthropic wants a user turn's tool results before anything else in it.
            blocks.sort_by_key(|b| b["type"] != "tool_result");
            json!({"role": role, "content": blocks})
        })
        .collect();
    Ok((system, turns))
}

/// Text blocks of a string or an array of text parts (empty text left out: Anthropic
/// refuses empty text blocks).
fn text_blocks(content: &Value) -> Result<Vec<Value>, ApiError> {
    let mut blocks = Vec::new();
    match content {
        Value::Null => {}
        Value::String(text) => push_text(&mut blocks, text),
        Value::Array(parts) => {
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => push_text(&mut blocks, str_of(part, "text")),
                    Some("refusal") => push_text(&mut blocks, str_of(part, "refusal")),
                    _ => {
                        return Err(invalid(
                            "messages",
                            "only text parts are supported here by this model's upstream (Anthropic)",
                        ));
                    }
                }
            }
        }
        _ => {
            return Err(invalid(
                "messages",
                "`content` must be a string or an array of parts",
            ));
        }
    }
    Ok(blocks)
}

fn str_of<'v>(value: &'v Value, name: &str) -> &'v str {
    value.get(name).and_then(Value::as_str).unwrap_or_default()
}

fn push_text(blocks: &mut Vec<Value>, text: &str) {
    if !text.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    }
}

fn user_blocks(content: &Value) -> Result<Vec<Value>, ApiError> {
    let Value::Array(parts) = content else {
        return text_blocks(content);
    };
    let mut blocks = Vec::new();
    for part in parts {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => push_text(&mut blocks, str_of(part, "text")),
            Some("image_url") => {
                let url = part
                    .get("image_url")
                    .and_then(|i| i.get("url"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        invalid("messages", "an `image_url` part needs `image_url.url`")
                    })?;
                blocks.push(json!({"type": "image", "source": image_source(url)?}));
            }
            other => {
                return Err(invalid(
                    "messages",
                    &format!(
                        "content parts of type `{}` are not supported by this model's upstream (Anthropic)",
                        other.unwrap_or("?")
                    ),
                ));
            }
        }
    }
    Ok(blocks)
}

/// `data:<media type>;base64,<data>` -> a base64 source; `http(s)://` -> a url source.
fn image_source(url: &str) -> Result<Value, ApiError> {
    if let Some(data_url) = url.strip_prefix("data:") {
        let (media_type, data) = data_url.split_once(";base64,").ok_or_else(|| {
            invalid(
                "messages",
                "an image data URL must be base64 (`data:<type>;base64,...`)",
            )
        })?;
        return Ok(json!({"type": "base64", "media_type": media_type, "data": data}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "url", "url": url}));
    }
    Err(invalid(
        "messages",
        "an image URL must be a data: URL or an http(s) URL",
    ))
}

fn assistant_blocks(message: &Value, content: &Value) -> Result<Vec<Value>, ApiError> {
    let mut blocks = text_blocks(content)?;
    let calls = match message.get("tool_calls") {
        None | Some(Value::Null) => return Ok(blocks),
        Some(Value::Array(calls)) => calls,
        Some(_) => return Err(invalid("messages", "`tool_calls` must be an array")),
    };
    for call in calls {
        let function = call.get("function").unwrap_or(&Value::Null);
        let arguments = str_of(function, "arguments");
        let input: Value = if arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(arguments).map_err(|_| {
                invalid(
                    "messages",
                    "a tool call's `arguments` must be a JSON object",
                )
            })?
        };
        blocks.push(json!({
            "type": "tool_use",
            "id": str_of(call, "id"),
            "name": str_of(function, "name"),
            "input": input,
        }));
    }
    Ok(blocks)
}

fn translate_tools(tools: &Value) -> Result<Vec<Value>, ApiError> {
    let tools = tools
        .as_array()
        .ok_or_else(|| invalid("tools", "`tools` must be an array"))?;
    tools
        .iter()
        .map(|tool| {
            if tool.get("type").and_then(Value::as_str) != Some("function") {
                return Err(invalid(
                    "tools",
                    "only `function` tools are supported by this model's upstream (Anthropic)",
                ));
            }
            let function = tool.get("function").unwrap_or(&Value::Null);
            let mut out = json!({
                "name": str_of(function, "name"),
                "input_schema": function
                    .get("parameters")
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
            if let Some(description) = function.get("description").filter(|d| d.is_string()) {
                out["description"] = description.clone();
            }
            Ok(out)
        })
        .collect()
}

fn translate_tool_choice(choice: &Value) -> Result<Value, ApiError> {
    match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "none" => Ok(json!({"type": "none"})),
            "required" => Ok(json!({"type": "any"})),
            _ => Err(invalid(
                "tool_choice",
                "`tool_choice` must be auto, none, required or a function",
            )),
        },
        Value::Object(_) => {
            let name = choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    invalid("tool_choice", "a named `tool_choice` needs `function.name`")
                })?;
            Ok(json!({"type": "tool", "name": name}))
        }
        _ => Err(invalid(
            "tool_choice",
            "`tool_choice` must be a string or an object",
        )),
    }
}
