//! An Anthropic Message -> an OpenAI `chat.completion`.
//!
//! Text blocks are joined into `content`; `tool_use` blocks become `tool_calls` with their
//! `input` as a JSON string in `arguments`; thinking blocks are left out.

use serde_json::{Value, json};

use super::{Usage, finish_reason, usage_json};

/// The completion for a Message body, `created` the Unix time it carries. `Err` with why,
/// when the body is not a Message.
pub(crate) fn translate_response(body: &[u8], created: u64) -> Result<Vec<u8>, String> {
    let message: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if message.get("type").and_then(Value::as_str) != Some("message") {
        return Err("not a Message".to_owned());
    }
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in message["content"].as_array().into_iter().flatten() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => tool_calls.push(json!({
                "id": block["id"],
                "type": "function",
                "function": {
                    "name": block["name"],
                    "arguments": block["input"].to_string(),
                },
            })),
            _ => {}
        }
    }
    let mut usage = Usage::default();
    usage.update(&message["usage"]);
    let mut reply = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(text) },
        "refusal": null,
    });
    if !tool_calls.is_empty() {
        reply["tool_calls"] = Value::Array(tool_calls);
    }
    let completion = json!({
        "id": message["id"],
        "object": "chat.completion",
        "created": created,
        "model": message["model"],
        "choices": [{
            "index": 0,
            "message": reply,
            "logprobs": null,
            "finish_reason": message["stop_reason"].as_str().map(finish_reason),
        }],
        "usage": usage_json(&usage),
    });
    Ok(serde_json::to_vec(&completion).expect("a JSON value always serialises"))
}
