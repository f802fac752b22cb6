//! Anthropic's Messages stream -> OpenAI's chat completion chunks.
//!
//! Events (Anthropic's "Streaming Messages"): `message_start` (id, model, input usage) ->
//! per content block `content_block_start`, `content_block_delta` (`text_delta`,
//! `input_json_delta`, thinking deltas), `content_block_stop` -> `message_delta` (stop
//! reason, output usage) -> `message_stop`; `ping` anywhere; `error` ends a stream.
//!
//! Out: every chunk carries the Message's id and model; the first says the role; a text
//! delta becomes `content`; a `tool_use` block becomes a tool call numbered from 0 in the
//! order the blocks come (OpenAI's `index`), its start carrying id and name and each
//! `input_json_delta` a piece of `arguments`; `message_delta` becomes the finish chunk;
//! `message_stop` becomes a usage chunk (`"choices":[]`, always: the usage tap meters it and
//! strips it when the client did not ask) and `data: [DONE]`; `error` becomes an SSE
//! `event: error` with OpenAI's error object, the gateway's own way of ending a broken stream.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::error::stream_error;
use super::{Usage, finish_reason, usage_json};
use crate::providers::StreamTranslator;
use crate::sse;

/// Translates one stream; feed it the upstream's bytes as they come.
#[derive(Debug)]
pub(crate) struct ChunkStream {
    /// Bytes of an event not yet complete.
    pending: Vec<u8>,
    created: u64,
    id: Value,
    model: Value,
    /// Anthropic content block index -> OpenAI tool call index.
    tool_calls: HashMap<u64, usize>,
    usage: Usage,
    done: bool,
}

impl ChunkStream {
    /// `created` is the Unix time every chunk carries.
    pub fn new(created: u64) -> Self {
        Self {
            pending: Vec::new(),
            created,
            id: Value::Null,
            model: Value::Null,
            tool_calls: HashMap::new(),
            usage: Usage::default(),
            done: false,
        }
    }

    fn event(&mut self, event: &[u8], out: &mut Vec<u8>) {
        let mut name: Option<&[u8]> = None;
        let mut data = Vec::new();
        for line in sse::lines(event) {
            if let Some(value) = line.strip_prefix(b"event:") {
                name = Some(value.trim_ascii());
            } else if let Some(value) = line.strip_prefix(b"data:") {
                if !data.is_empty() {
                    data.push(b'\n');
                }
                data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
            }
        }
        if data.is_empty() {
            return;
        }
        let Ok(data) = serde_json::from_slice::<Value>(&data) else {
            return;
        };
        let kind = match name {
            Some(name) => name,
            None => data["type"].as_str().unwrap_or_default().as_bytes(),
        };
        match kind {
            b"message_start" => {
                let message = &data["message"];
                self.id = message["id"].clone();
                self.model = message["model"].clone();
                self.usage.update(&message["usage"]);
                self.chunk(out, json!({"role": "assistant", "content": ""}), None);
            }
            b"content_block_start" => {
                let block = &data["content_block"];
                match block["type"].as_str() {
                    Some("text") => {
                        let text = block["text"].as_str().unwrap_or_default();
                        if !text.is_empty() {
                            self.chunk(out, json!({"content": text}), None);
                        }
                    }
                    Some("tool_use") => {
                        let index = self.tool_calls.len();
                        self.tool_calls
                            .insert(data["index"].as_u64().unwrap_or(u64::MAX), index);
                        let call = json!({
                            "index": index,
                            "id": block["id"],
                            "type": "function",
                            "function": {"name": block["name"], "arguments": ""},
                        });
                        self.chunk(out, json!({"tool_calls": [call]}), None);
                    }
                    _ => {}
                }
            }
            b"content_block_delta" => {
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        let text = delta["text"].as_str().unwrap_or_default();
                        self.chunk(out, json!({"content": text}), None);
                    }
                    Some("input_json_delta") => {
                        let block = data["index"].as_u64().unwrap_or(u64::MAX);
                        if let Some(&index) = self.tool_calls.get(&block) {
                            let piece = delta["partial_json"].as_str().unwrap_or_default();
                            let call = json!({"index": index, "function": {"arguments": piece}});
                            self.chunk(out, json!({"tool_calls": [call]}), None);
                        }
                    }
                    _ => {}
                }
            }
            b"message_delta" => {
                self.usage.update(&data["usage"]);
                let reason = data["delta"]["stop_reason"].as_str().map(finish_reason);
                self.chunk(out, json!({}), reason);
            }
            b"message_stop" => {
                let chunk = json!({
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": usage_json(&self.usage),
                });
                write_data(out, &chunk);
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
            b"error" => {
                let error = json!({"error": stream_error(&data)});
                out.extend_from_slice(b"event: error\n");
                write_data(out, &error);
                self.done = true;
            }
            // ping, content_block_stop and event types added later carry nothing to relay.
            _ => {}
        }
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: Value, finish_reason: Option<&str>) {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        });
        write_data(out, &chunk);
    }
}

fn write_data(out: &mut Vec<u8>, value: &Value) {
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *out, value).expect("a JSON value always serialises");
    out.extend_from_slice(b"\n\n");
}

impl StreamTranslator for ChunkStream {
    fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        // Taken out while its events are read, so each is handed over without a copy.
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Ok(end) = sse::event_end(&pending[start..]) {
            self.event(&pending[start..start + end], &mut out);
            start += end;
            if self.done {
                break;
            }
        }
        pending.drain(..start);
        self.pending = pending;
        out
    }

    fn finish(&mut self) -> Vec<u8> {
        // A last event without its blank line still counts.
        let mut out = Vec::new();
        if !self.done && !self.pending.is_empty() {
            let event = std::mem::take(&mut self.pending);
            self.event(&event, &mut out);
        }
        out
    }
}
