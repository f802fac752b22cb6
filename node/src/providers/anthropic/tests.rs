//! Golden tests of the Anthropic adapter. The Anthropic side of every fixture follows
//! Anthropic's API reference (the Messages, Streaming Messages and Errors pages); the OpenAI
//! side, OpenAI's chat completions reference.

use http::StatusCode;
use serde_json::{Value, json};

use super::*;
use crate::providers::StreamTranslator;

const CREATED: u64 = 1_700_000_000;

fn translate(request: Value) -> (Value, Vec<String>) {
    let translated = translate_request(request.to_string().as_bytes(), 4096).unwrap();
    let body = translated.body_for("\"claude-sonnet-4-5\"");
    (serde_json::from_slice(&body).unwrap(), translated.dropped)
}

#[test]
fn a_conversation_with_system_images_tools_and_tool_results_becomes_a_messages_request() {
    let (body, dropped) = translate(json!({
        "model": "public-name",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": "Hi."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}}
            ]},
            {"role": "assistant", "content": "A cat. Checking the weather.", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "get_time", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": "Thanks."}
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather now",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                           "required": ["location"]}}},
            {"type": "function", "function": {"name": "get_time"}}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "max_completion_tokens": 300,
        "stop": "END",
        "temperature": 0.5,
        "top_p": 0.9,
        "user": "user-42",
        "seed": 7,
        "frequency_penalty": 0.1,
        "n": 1,
        "x_vendor": true
    }));
    assert_eq!(
        body,
        json!({
            "model": "claude-sonnet-4-5",
            "system": [{"type": "text", "text": "You are terse."},
                       {"type": "text", "text": "Use metric units."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Hi."},
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "A cat. Checking the weather."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": [{"type": "text", "text": "18C"}]},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
                    {"type": "text", "text": "Thanks."}
                ]}
            ],
            "tools": [
                {"name": "get_weather", "description": "Weather now",
                 "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                                  "required": ["location"]}},
                {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
            ],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "max_tokens": 300,
            "stop_sequences": ["END"],
            "temperature": 0.5,
            "top_p": 0.9,
            "metadata": {"user_id": "user-42"}
        })
    );
    assert_eq!(dropped, ["frequency_penalty", "seed", "x_vendor"]);
}

#[test]
fn max_tokens_comes_from_the_request_or_the_default() {
    let messages = json!([{"role": "user", "content": "Hi"}]);
    let (body, _) = translate(json!({"model": "m", "messages": messages, "max_tokens": 12}));
    assert_eq!(body["max_tokens"], 12);
    let translated = translate_request(
        json!({"model": "m", "messages": messages})
            .to_string()
            .as_bytes(),
        777,
    )
    .unwrap();
    let body: Value = serde_json::from_slice(&translated.body_for("\"m\"")).unwrap();
    assert_eq!(body["max_tokens"], 777);
}

#[test]
fn tool_choice_maps_auto_none_and_a_named_function() {
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    for (choice, expected) in [
        (json!("auto"), json!({"type": "auto"})),
        (json!("none"), json!({"type": "none"})),
        (json!("required"), json!({"type": "any"})),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            json!({"type": "tool", "name": "f"}),
        ),
    ] {
        let (body, _) = translate(json!({"model": "m", "tools": tools, "tool_choice": choice,
            "messages": [{"role": "user", "content": "Hi"}]}));
        assert_eq!(body["tool_choice"], expected);
    }
}

#[test]
fn stream_and_include_usage_are_read_and_stream_options_does_not_go_upstream() {
    let translated = translate_request(
        json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "Hi"}]})
        .to_string()
        .as_bytes(),
        10,
    )
    .unwrap();
    assert!(translated.stream && translated.include_usage);
    let body: Value = serde_json::from_slice(&translated.body_for("\"m\"")).unwrap();
    assert_eq!(body["stream"], true);
    assert!(body.get("stream_options").is_none());
    assert!(translated.dropped.is_empty());
}

#[test]
fn parameters_that_change_the_answers_shape_are_refused() {
    let messages = json!([{"role": "user", "content": "Hi"}]);
    for (param, value) in [
        ("n", json!(2)),
        ("logprobs", json!(true)),
        ("top_logprobs", json!(3)),
        ("response_format", json!({"type": "json_object"})),
        (
            "response_format",
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
        ),
        ("modalities", json!(["text", "audio"])),
        ("functions", json!([{"name": "f"}])),
    ] {
        let mut request = json!({"model": "m", "messages": messages});
        request[param] = value;
        let error = translate_request(request.to_string().as_bytes(), 10).unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{param}");
        assert!(
            matches!(error, crate::error::ApiError::InvalidParam { param: p, .. } if p == param)
        );
    }
    // Their defaults are fine.
    let (_, dropped) = translate(json!({"model": "m", "messages": messages, "n": 1,
        "logprobs": false, "response_format": {"type": "text"}, "modalities": ["text"]}));
    assert!(dropped.is_empty());
}

#[test]
fn audio_and_file_parts_are_refused() {
    let request = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}]}]});
    assert!(translate_request(request.to_string().as_bytes(), 10).is_err());
}

#[test]
fn a_message_becomes_a_chat_completion() {
    // Anthropic's reference example of a Message, with a tool use added.
    let message = json!({
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "text", "text": "Hi! My name is Claude."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
             "input": {"location": "San Francisco, CA"}}
        ],
        "stop_reason": "tool_use",
        "stop_sequence": null,
        "usage": {"input_tokens": 2095, "output_tokens": 503,
                  "cache_creation_input_tokens": 5, "cache_read_input_tokens": 1000}
    });
    let out = translate_response(message.to_string().as_bytes(), CREATED).unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        out,
        json!({
            "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
            "object": "chat.completion",
            "created": CREATED,
            "model": "claude-sonnet-4-5",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hi! My name is Claude.",
                    "refusal": null,
                    "tool_calls": [{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
                        "function": {"name": "get_weather",
                                     "arguments": "{\"location\":\"San Francisco, CA\"}"}}]
                },
                "logprobs": null,
                "finish_reason": "tool_calls"
            }],
            "usage": {"prompt_tokens": 3100, "completion_tokens": 503, "total_tokens": 3603,
                      "prompt_tokens_details": {"cached_tokens": 1000}}
        })
    );
}

#[test]
fn stop_reasons_map_to_finish_reasons() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
    ] {
        let message = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": "x"}], "stop_reason": stop,
            "usage": {"input_tokens": 1, "output_tokens": 1}});
        let out: Value =
            serde_json::from_slice(&translate_response(message.to_string().as_bytes(), 0).unwrap())
                .unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], finish, "{stop}");
    }
}

const STREAM: &str = include_str!("fixtures/stream_tool_use.sse");
const STREAM_EXPECTED: &str = include_str!("fixtures/stream_tool_use.expected.sse");

#[test]
fn a_streamed_tool_use_becomes_chunks_with_one_id_a_usage_chunk_and_done() {
    let mut stream = ChunkStream::new(CREATED);
    let mut out = stream.push(STREAM.as_bytes());
    out.extend(stream.finish());
    assert_eq!(String::from_utf8(out).unwrap(), STREAM_EXPECTED);
}

#[test]
fn the_stream_translates_the_same_whatever_its_split_points() {
    let bytes = STREAM.as_bytes();
    for cut in 1..bytes.len() {
        let mut stream = ChunkStream::new(CREATED);
        let mut out = stream.push(&bytes[..cut]);
        out.extend(stream.push(&bytes[cut..]));
        out.extend(stream.finish());
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            STREAM_EXPECTED,
            "cut at {cut}"
        );
    }
    // And byte by byte, with CRLF line endings.
    let crlf = STREAM.replace('\n', "\r\n");
    let mut stream = ChunkStream::new(CREATED);
    let mut out = Vec::new();
    for byte in crlf.as_bytes() {
        out.extend(stream.push(std::slice::from_ref(byte)));
    }
    out.extend(stream.finish());
    assert_eq!(String::from_utf8(out).unwrap(), STREAM_EXPECTED);
}

#[test]
fn a_stream_error_event_becomes_an_openai_error_event() {
    let mut stream = ChunkStream::new(CREATED);
    let out = stream.push(
        b"event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "event: error\ndata: {\"error\":{\"code\":\"overloaded\",\"message\":\"Overloaded\",\"param\":null,\"type\":\"server_error\"}}\n\n"
    );
}

#[test]
fn errors_keep_their_message_and_get_openai_statuses() {
    let overloaded =
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let (status, body) = translate_error(StatusCode::from_u16(529).unwrap(), overloaded, "claude");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["message"], "Overloaded");
    assert_eq!(body["error"]["type"], "server_error");

    let invalid = br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"},"request_id":"req_1"}"#;
    let (status, body) = translate_error(StatusCode::BAD_REQUEST, invalid, "claude");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body,
        json!({"error": {"message": "max_tokens: Field required", "type": "invalid_request_error",
                         "param": null, "code": "invalid_request"}})
    );

    let (status, body) = translate_error(
        StatusCode::BAD_GATEWAY,
        b"<html>bad gateway</html>",
        "claude",
    );
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bad gateway")
    );
}
