//! Assembles a streamed chat completion from its SSE events into the completion the client
//! effectively received, in the shape of a non-streaming answer (`object: "chat.completion"`):
//! each choice's content, reasoning and refusal concatenated, tool calls rebuilt from their
//! deltas (by index: the id, type and name from the first delta, the arguments joined), the
//! finish reason, and the usage. A pure function over the events' data: the record writer
//! runs it off the request path, once per stream.
//!
//! Chunks that do not parse are counted, not fatal: a record of a stream is still written
//! when an upstream sent something odd, and says so.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// One choice as it builds up.
#[derive(Debug, Default)]
struct ChoiceSoFar {
    role: Option<String>,
    content: Option<String>,
    reasoning: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, ToolCallSoFar>,
    finish_reason: Option<String>,
}

#[derive(Debug, Default)]
struct ToolCallSoFar {
    id: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    arguments: String,
}

/// A stream's chunks, folded as they come.
#[derive(Debug, Default)]
pub struct StreamAssembler {
    id: Option<String>,
    model: Option<String>,
    created: Option<u64>,
    system_fingerprint: Option<String>,
    choices: BTreeMap<u64, ChoiceSoFar>,
    usage: Option<Value>,
    chunks: u64,
    unreadable: u64,
    done: bool,
}

#[derive(Deserialize)]
struct Chunk {
    id: Option<String>,
    model: Option<String>,
    created: Option<u64>,
    system_fingerprint: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    delta: Delta,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    role: Option<String>,
    content: Option<String>,
    /// vLLM, SGLang and DeepSeek name a reasoning model's thinking so.
    reasoning_content: Option<String>,
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCallDelta>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: u64,
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

fn append(to: &mut Option<String>, more: Option<String>) {
    if let Some(more) = more {
        to.get_or_insert_with(String::new).push_str(&more);
    }
}

impl StreamAssembler {
    /// Folds one SSE event's `data` (`[DONE]` ends the stream).
    pub fn event(&mut self, data: &[u8]) {
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        self.chunks += 1;
        let Ok(chunk) = serde_json::from_slice::<Chunk>(data) else {
            self.unreadable += 1;
            return;
        };
        self.id = self.id.take().or(chunk.id);
        self.model = self.model.take().or(chunk.model);
        self.created = self.created.or(chunk.created);
        self.system_fingerprint = self.system_fingerprint.take().or(chunk.system_fingerprint);
        if chunk.usage.as_ref().is_some_and(|u| !u.is_null()) {
            self.usage = chunk.usage;
        }
        for choice in chunk.choices {
            let so_far = self.choices.entry(choice.index).or_default();
            let delta = choice.delta;
            if so_far.role.is_none() {
                so_far.role = delta.role;
            }
            append(&mut so_far.content, delta.content);
            append(&mut so_far.reasoning, delta.reasoning_content);
            append(&mut so_far.refusal, delta.refusal);
            for call in delta.tool_calls {
                let built = so_far.tool_calls.entry(call.index).or_default();
                built.id = built.id.take().or(call.id);
                built.kind = built.kind.take().or(call.kind);
                if let Some(function) = call.function {
                    built.name = built.name.take().or(function.name);
                    if let Some(arguments) = function.arguments {
                        built.arguments.push_str(&arguments);
                    }
                }
            }
            if choice.finish_reason.is_some() {
                so_far.finish_reason = choice.finish_reason;
            }
        }
    }

    /// Chunks seen (the `[DONE]` marker not counted) and how many of them did not parse.
    pub fn counts(&self) -> (u64, u64) {
        (self.chunks, self.unreadable)
    }

    /// Whether the stream ended with `[DONE]`.
    pub fn done(&self) -> bool {
        self.done
    }

    /// The completion as a non-streaming answer would have carried it.
    pub fn completion(&self) -> Value {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .map(|(index, choice)| {
                let mut message = Map::new();
                message.insert(
                    "role".into(),
                    choice.role.as_deref().unwrap_or("assistant").into(),
                );
                message.insert(
                    "content".into(),
                    choice.content.clone().map_or(Value::Null, Value::String),
                );
                if let Some(reasoning) = &choice.reasoning {
                    message.insert("reasoning_content".into(), reasoning.clone().into());
                }
                if let Some(refusal) = &choice.refusal {
                    message.insert("refusal".into(), refusal.clone().into());
                }
                if !choice.tool_calls.is_empty() {
                    let calls: Vec<Value> = choice
                        .tool_calls
                        .values()
                        .map(|call| {
                            json!({
                                "id": call.id,
                                "type": call.kind.as_deref().unwrap_or("function"),
                                "function": {"name": call.name, "arguments": call.arguments},
                            })
                        })
                        .collect();
                    message.insert("tool_calls".into(), calls.into());
                }
                json!({
                    "index": index,
                    "message": message,
                    "finish_reason": choice.finish_reason,
                })
            })
            .collect();
        let mut completion = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": self.usage,
        });
        if let Some(fingerprint) = &self.system_fingerprint {
            completion["system_fingerprint"] = fingerprint.clone().into();
        }
        completion
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assemble(events: &[&str]) -> StreamAssembler {
        let mut assembler = StreamAssembler::default();
        for event in events {
            assembler.event(event.as_bytes());
        }
        assembler
    }

    #[test]
    fn content_deltas_become_one_message_with_its_finish_reason_and_usage() {
        let a = assemble(&[
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"content":"lo é"},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#,
            "[DONE]",
        ]);
        assert!(a.done());
        assert_eq!(a.counts(), (5, 0));
        assert_eq!(
            a.completion(),
            json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000,
                "model": "m", "system_fingerprint": "fp",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello é"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            })
        );
    }

    #[test]
    fn tool_calls_are_rebuilt_whole_from_their_deltas_by_index() {
        // Two parallel calls, their argument fragments interleaved, as OpenAI streams them.
        let a = assemble(&[
            r#"{"id":"c","model":"m","created":1,"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","model":"m","created":1,"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": \"Pa"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","model":"m","created":1,"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{\"tz\""}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","model":"m","created":1,"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ris\"}"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","model":"m","created":1,"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":": \"CET\"}"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","model":"m","created":1,"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ]);
        let completion = a.completion();
        let message = &completion["choices"][0]["message"];
        assert_eq!(message["content"], Value::Null);
        assert_eq!(
            message["tool_calls"],
            json!([
                {"id": "call_a", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
                {"id": "call_b", "type": "function",
                 "function": {"name": "get_time", "arguments": "{\"tz\": \"CET\"}"}},
            ])
        );
        assert_eq!(completion["choices"][0]["finish_reason"], "tool_calls");
        for call in message["tool_calls"].as_array().unwrap() {
            let arguments = call["function"]["arguments"].as_str().unwrap();
            assert!(
                serde_json::from_str::<Value>(arguments).is_ok(),
                "whole: {arguments}"
            );
        }
    }

    #[test]
    fn several_choices_reasoning_usage_on_a_choice_chunk_and_odd_chunks() {
        let a = assemble(&[
            r#"{"id":"c","choices":[{"index":1,"delta":{"role":"assistant","content":"B"}},{"index":0,"delta":{"role":"assistant","reasoning_content":"think","content":"A"}}]}"#,
            "not json",
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
            r#"{"id":"c","choices":[{"index":1,"delta":{},"finish_reason":"length"}],"usage":null}"#,
        ]);
        assert!(!a.done(), "cut before [DONE]");
        assert_eq!(a.counts(), (4, 1));
        let completion = a.completion();
        assert_eq!(completion["choices"][0]["message"]["content"], "A!");
        assert_eq!(
            completion["choices"][0]["message"]["reasoning_content"],
            "think"
        );
        assert_eq!(completion["choices"][1]["message"]["content"], "B");
        assert_eq!(completion["choices"][1]["finish_reason"], "length");
        assert_eq!(
            completion["usage"]["total_tokens"], 3,
            "a later null keeps it"
        );
    }
}
