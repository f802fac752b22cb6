//! A request record, version 1: one call's lifecycle as a line of the records log. Documented
//! field by field in docs/RECORDS.md; docs/record.schema.json is its JSON Schema, and a test
//! keeps the two in step with these types.
//!
//! Never holds a secret: no `Authorization` or credential header, no key secret, no upstream
//! key (the types have no place for one, and the record is built from what the gateway parsed,
//! not from raw headers).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// The format's version; a reader refuses a record with another.
pub const VERSION: u8 = 1;

/// Bodies are kept as the JSON text they were (`RawValue`): a record is written without
/// parsing them into a tree and serialising that again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Always [`VERSION`].
    pub v: u8,
    /// UUIDv7: sorts by time, unique across nodes; sinks deduplicate by it.
    pub id: String,
    /// The node that served the call.
    pub node: u64,
    /// What was called: `chat.completions`, `embeddings`, `images.generations`,
    /// `audio.transcriptions`, `videos.create` (`.retrieve`, `.content`, `.list`, `.delete`),
    /// `mcp`, `agent`, `sandbox`.
    pub endpoint: String,
    pub method: String,
    /// The path as called, without the query string.
    pub path: String,
    pub timestamps: Timestamps,
    /// The key that called; null when the call was refused before a key was known.
    pub key: Option<KeyRef>,
    pub client: Client,
    /// The public model name the client asked for (none for pass-through calls).
    pub model: Option<String>,
    /// Every upstream attempt, in order.
    pub attempts: Vec<Attempt>,
    /// The HTTP status the client got.
    pub status: u16,
    /// The error body the client got, if the call failed.
    pub error: Option<Value>,
    pub request: Request,
    pub response: Response,
    /// Uploaded files: metadata only, never their bytes.
    pub uploads: Vec<Upload>,
    pub usage: Usage,
    /// Content-safety verdicts (empty until content safety lands).
    pub safety: Vec<Value>,
    /// What was left out under overload (`"request_body"`, `"response_body"`), if anything.
    pub shed: Vec<String>,
    /// How the response ended: `complete`, `client_gone` (the client left before its end) or
    /// `upstream_error` (the upstream's body broke off).
    pub end: String,
}

/// Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timestamps {
    pub received_ms: u64,
    /// The upstream's response head arrived (the last attempt's).
    pub response_head_ms: Option<u64>,
    /// The first byte of the answer (the first token of a stream) went to the client.
    pub first_byte_ms: Option<u64>,
    /// The answer's last byte went out, or the client left.
    pub end_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Client {
    /// The peer's address (or the trusted proxy's forwarded one).
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub upstream: String,
    /// The model name sent to that upstream.
    pub upstream_model: Option<String>,
    /// The upstream's status, when it answered.
    pub status: Option<u16>,
    /// Why it failed without an answer: `connect`, `timeout`, `reset`, ….
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// What the client sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// `full`, `metadata` (no body kept) or `truncated` (cut at `records.max_body_bytes`).
    pub capture: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// The body as sent (JSON), when captured; for a multipart form, its text fields.
    pub body: Option<Box<RawValue>>,
    /// The model name the answering upstream got in place of the client's, when it differs.
    pub upstream_model: Option<String>,
    /// Members the gateway added to the body that went upstream (a stream's
    /// `stream_options.include_usage`), when it added any.
    pub upstream_added: Option<Box<RawValue>>,
    /// What was sent upstream, when it differs beyond `upstream_model` and `upstream_added`
    /// (content safety's masking, when it lands).
    pub upstream_body: Option<Box<RawValue>>,
}

/// What the client received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// As for the request.
    pub capture: String,
    pub bytes: u64,
    /// Non-streaming: the body; streaming: the assembled completion (records/assemble.rs).
    pub body: Option<Box<RawValue>>,
    /// For a stream: its chunks and their timing.
    pub stream: Option<StreamTiming>,
    /// With `capture = "raw"`, a stream's chunks as they came: each event's data, as JSON when
    /// it is (`"[DONE]"` as a string); null otherwise.
    #[serde(default)]
    pub raw_chunks: Option<Vec<Box<RawValue>>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamTiming {
    pub chunks: u64,
    /// Each chunk's time after the first, in milliseconds.
    pub offsets_ms: Vec<u64>,
    /// Chunks whose JSON did not parse.
    pub unreadable: u64,
    /// Whether the stream ended with `[DONE]`.
    pub done: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upload {
    /// The form field it came in.
    pub field: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub bytes: u64,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    pub audio_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub images: Option<u64>,
    /// An image's size, as asked (`1024x1024`).
    pub image_size: Option<String>,
    pub audio_seconds: Option<f64>,
    pub video_seconds: Option<f64>,
}

impl Usage {
    /// Token counts of a chat or embedding call.
    pub fn tokens(input: u64, output: u64, cached: u64) -> Self {
        Self {
            input_tokens: Some(input),
            output_tokens: Some(output),
            cached_tokens: Some(cached),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;

    fn raw(value: Value) -> Box<RawValue> {
        RawValue::from_string(value.to_string()).unwrap()
    }

    fn sample() -> Record {
        Record {
            v: VERSION,
            id: "0193a8d2-7c4e-7000-8000-000000000001".into(),
            node: 1,
            endpoint: "chat.completions".into(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            timestamps: Timestamps {
                received_ms: 1_767_225_600_000,
                response_head_ms: Some(1_767_225_600_120),
                first_byte_ms: Some(1_767_225_600_130),
                end_ms: 1_767_225_600_900,
            },
            key: Some(KeyRef {
                id: "key_0123456789abcdef".into(),
                name: "team-a".into(),
            }),
            client: Client {
                address: "10.0.0.7:51234".into(),
            },
            model: Some("chat-default".into()),
            attempts: vec![Attempt {
                upstream: "vllm-a".into(),
                upstream_model: Some("llama".into()),
                status: Some(200),
                error: None,
                duration_ms: 880,
            }],
            status: 200,
            error: None,
            request: Request {
                capture: "full".into(),
                bytes: 80,
                body: Some(raw(
                    json!({"model": "chat-default", "messages": [], "stream": true}),
                )),
                upstream_model: Some("llama".into()),
                upstream_added: Some(raw(json!({"stream_options": {"include_usage": true}}))),
                upstream_body: None,
            },
            response: Response {
                capture: "full".into(),
                bytes: 400,
                body: Some(raw(json!({"object": "chat.completion"}))),
                stream: Some(StreamTiming {
                    chunks: 3,
                    offsets_ms: vec![0, 20, 41],
                    unreadable: 0,
                    done: true,
                }),
                raw_chunks: Some(vec![raw(json!({"object": "chat.completion.chunk"}))]),
            },
            uploads: vec![Upload {
                field: "file".into(),
                file_name: Some("a.wav".into()),
                content_type: Some("audio/wav".into()),
                bytes: 1024,
                sha256: "00".repeat(32),
                audio_seconds: Some(1.5),
            }],
            usage: Usage {
                input_tokens: Some(5),
                output_tokens: Some(3),
                ..Usage::default()
            },
            safety: vec![],
            shed: vec![],
            end: "complete".into(),
        }
    }

    fn schema() -> Value {
        let text = include_str!("../../../docs/record.schema.json");
        serde_json::from_str(text).expect("docs/record.schema.json is JSON")
    }

    /// The schema of `path` (`/` for the record, `timestamps`, `attempts` for its items, …).
    fn object_at<'a>(schema: &'a Value, path: &[&str]) -> &'a Value {
        let mut at = schema;
        for step in path {
            at = &at["properties"][step];
            if at["type"] == "array" || at["type"] == json!(["array", "null"]) {
                at = &at["items"];
            }
            if let Some(first) = at["oneOf"].get(0) {
                at = first;
            }
            if let Some(reference) = at["$ref"].as_str() {
                let name = reference.trim_start_matches("#/$defs/");
                at = &schema["$defs"][name];
            }
        }
        at
    }

    fn keys(value: &Value) -> BTreeSet<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn the_schema_names_exactly_the_fields_a_record_has_and_requires_them_all() {
        let schema = schema();
        let record = serde_json::to_value(sample()).unwrap();
        for path in [
            &[][..],
            &["timestamps"],
            &["key"],
            &["client"],
            &["attempts"],
            &["request"],
            &["response"],
            &["response", "stream"],
            &["uploads"],
            &["usage"],
        ] {
            let mut value = &record;
            for step in path {
                value = &value[step];
                if let Some(first) = value.as_array().and_then(|a| a.first()) {
                    value = first;
                }
            }
            let object = object_at(&schema, path);
            let properties = keys(&object["properties"]);
            assert_eq!(properties, keys(value), "properties of {path:?}");
            let required: BTreeSet<String> = object["required"]
                .as_array()
                .unwrap_or_else(|| panic!("required of {path:?}"))
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(
                required, properties,
                "every field of {path:?} is required (null when unknown)"
            );
        }
        assert_eq!(schema["properties"]["v"]["const"], VERSION);
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let line = serde_json::to_string(&sample()).unwrap();
        assert!(!line.contains('\n'), "one record, one line");
        let read: Record = serde_json::from_str(&line).unwrap();
        assert_eq!(serde_json::to_string(&read).unwrap(), line);
        assert_eq!(
            read.request.body.unwrap().get(),
            r#"{"messages":[],"model":"chat-default","stream":true}"#
        );
    }
}
