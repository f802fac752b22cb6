//! The bytes the mock sends, pre-serialised where they do not depend on the request.
//!
//! A chat chunk event is `data: {` + a per-request head (id, model) + a tail that is one of
//! the static pieces below, so streaming a chunk is one small copy, never a JSON serialisation.

use std::io::Write;
use std::sync::LazyLock;

use bytes::{BufMut, Bytes, BytesMut};

/// Fixed so responses are reproducible byte for byte.
pub(crate) const CREATED: u64 = 1_700_000_000;

/// The content chunks cycle through these; concatenated they read as a sentence.
pub(crate) const WORDS: [&str; 12] = [
    "Hello",
    " from",
    " the",
    " aigw",
    " mock",
    " upstream",
    ",",
    " one",
    " word",
    " per",
    " chunk",
    ".",
];

pub(crate) static MODELS: Bytes = Bytes::from_static(
    br#"{"object":"list","data":[{"id":"mock-gpt","object":"model","created":1700000000,"owned_by":"aigw-mock"},{"id":"mock-gpt-mini","object":"model","created":1700000000,"owned_by":"aigw-mock"},{"id":"mock-embedding","object":"model","created":1700000000,"owned_by":"aigw-mock"}]}"#,
);
pub(crate) static HEALTH_OK: Bytes = Bytes::from_static(br#"{"status":"ok"}"#);
pub(crate) static HEALTH_UNHEALTHY: Bytes = Bytes::from_static(br#"{"status":"unhealthy"}"#);

pub(crate) static DONE: Bytes = Bytes::from_static(b"data: [DONE]\n\n");
static ROLE_TAIL: &[u8] = br#""choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}

"#;
static FINISH_STOP_TAIL: &[u8] =
    br#""choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}

"#;
static FINISH_TOOL_CALLS_TAIL: &[u8] =
    br#""choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}

"#;
static TOOL_ARGUMENTS_TAIL: &[u8] = br#""choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]},"logprobs":null,"finish_reason":null}]}

"#;

static CONTENT_TAILS: LazyLock<Vec<Bytes>> = LazyLock::new(|| {
    WORDS
        .iter()
        .map(|word| {
            let word = serde_json::to_string(word).expect("a str serialises");
            Bytes::from(format!(
                r#""choices":[{{"index":0,"delta":{{"content":{word}}},"logprobs":null,"finish_reason":null}}]}}"#
            ) + "\n\n")
        })
        .collect()
});

/// Token counts reported in `usage`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    pub(crate) prompt: u64,
    pub(crate) completion: u64,
}

impl Usage {
    fn write_json(self, out: &mut Vec<u8>) {
        let _ = write!(
            out,
            r#""usage":{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}}"#,
            self.prompt,
            self.completion,
            self.prompt + self.completion
        );
    }
}

/// What a completion answers: text, or a call to the named tool (`name` is raw JSON).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Answer<'a> {
    Text,
    ToolCall { name: &'a str },
}

/// The non-streamed answer text for `chunks` chunks, as a JSON string literal.
pub(crate) fn text_json(chunks: usize) -> Bytes {
    let text: String = WORDS.iter().cycle().take(chunks).copied().collect();
    Bytes::from(serde_json::to_string(&text).expect("a str serialises"))
}

/// `data: {"id":..,"object":"chat.completion.chunk","created":..,"model":..,` for one request.
pub(crate) fn chunk_head(n: u64, model: &str) -> Bytes {
    let mut out = Vec::with_capacity(112 + model.len());
    let _ = write!(
        out,
        r#"data: {{"id":"chatcmpl-mock-{n}","object":"chat.completion.chunk","created":{CREATED},"model":{model},"system_fingerprint":"fp_mock","#
    );
    Bytes::from(out)
}

/// One SSE event: the request's head spliced with a static tail.
pub(crate) fn event(head: &[u8], tail: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(head.len() + tail.len());
    out.put_slice(head);
    out.put_slice(tail);
    out.freeze()
}

pub(crate) fn role_tail() -> &'static [u8] {
    ROLE_TAIL
}

pub(crate) fn content_tail(index: usize) -> &'static [u8] {
    &CONTENT_TAILS[index % CONTENT_TAILS.len()]
}

pub(crate) fn finish_tail(tool_call: bool) -> &'static [u8] {
    if tool_call {
        FINISH_TOOL_CALLS_TAIL
    } else {
        FINISH_STOP_TAIL
    }
}

pub(crate) fn tool_arguments_tail() -> &'static [u8] {
    TOOL_ARGUMENTS_TAIL
}

/// The first tool-call delta: index, id, type and name, with empty arguments, as OpenAI
/// streams it.
pub(crate) fn tool_call_head_tail(n: u64, name: &str) -> Bytes {
    let mut out = Vec::with_capacity(160 + name.len());
    let _ = write!(
        out,
        r#""choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"id":"call_mock_{n}","type":"function","function":{{"name":{name},"arguments":""}}}}]}},"logprobs":null,"finish_reason":null}}]}}"#
    );
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The final `include_usage` chunk: no choices, only usage.
pub(crate) fn usage_tail(usage: Usage) -> Bytes {
    let mut out = Vec::with_capacity(112);
    out.extend_from_slice(br#""choices":[],"#);
    usage.write_json(&mut out);
    out.extend_from_slice(b"}\n\n");
    Bytes::from(out)
}

/// A last chunk of its own for usage, with one choice whose delta is empty (the shape some
/// OpenAI-compatible servers and gateways send).
pub(crate) fn usage_empty_delta_tail(usage: Usage) -> Bytes {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(
        br#""choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":null}],"#,
    );
    usage.write_json(&mut out);
    out.extend_from_slice(b"}\n\n");
    Bytes::from(out)
}

/// The finish chunk carrying usage too (the shape TGI and some gateways send).
pub(crate) fn finish_with_usage_tail(tool_call: bool, usage: Usage) -> Bytes {
    let finish = finish_tail(tool_call);
    let without_end = finish
        .strip_suffix(b"}\n\n")
        .expect("a finish tail ends its object and its event");
    let mut out = Vec::with_capacity(finish.len() + 80);
    out.extend_from_slice(without_end);
    out.push(b',');
    usage.write_json(&mut out);
    out.extend_from_slice(b"}\n\n");
    Bytes::from(out)
}

/// A whole non-streamed `chat.completion`. `model` is raw JSON; `text` is [`text_json`]'s.
pub(crate) fn completion(
    n: u64,
    model: &str,
    answer: Answer<'_>,
    text: &[u8],
    usage: Usage,
) -> Bytes {
    let mut out = Vec::with_capacity(400 + model.len() + text.len());
    let _ = write!(
        out,
        r#"{{"id":"chatcmpl-mock-{n}","object":"chat.completion","created":{CREATED},"model":{model},"system_fingerprint":"fp_mock","choices":[{{"index":0,"message":{{"role":"assistant","#
    );
    match answer {
        Answer::Text => {
            out.extend_from_slice(br#""content":"#);
            out.extend_from_slice(text);
            out.extend_from_slice(br#","refusal":null},"logprobs":null,"finish_reason":"stop"}],"#);
        }
        Answer::ToolCall { name } => {
            let _ = write!(
                out,
                r#""content":null,"refusal":null,"tool_calls":[{{"id":"call_mock_{n}","type":"function","function":{{"name":{name},"arguments":"{{}}"}}}}]}},"logprobs":null,"finish_reason":"tool_calls"}}],"#
            );
        }
    }
    usage.write_json(&mut out);
    out.push(b'}');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn event_json(head: &[u8], tail: &[u8]) -> Value {
        let ev = event(head, tail);
        let text = std::str::from_utf8(&ev).unwrap();
        let json = text
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn every_chunk_event_is_one_valid_json_object() {
        let head = chunk_head(7, r#""gpt-x""#);
        let name = tool_call_head_tail(7, r#""lookup""#);
        let usage = usage_tail(Usage {
            prompt: 3,
            completion: 2,
        });
        let tails: Vec<&[u8]> = vec![
            role_tail(),
            content_tail(0),
            content_tail(100),
            finish_tail(false),
            finish_tail(true),
            tool_arguments_tail(),
            &name,
            &usage,
        ];
        for tail in tails {
            let v = event_json(&head, tail);
            assert_eq!(v["id"], "chatcmpl-mock-7");
            assert_eq!(v["model"], "gpt-x");
            assert_eq!(v["object"], "chat.completion.chunk");
        }
        assert_eq!(event_json(&head, &usage)["usage"]["total_tokens"], 5);
        assert_eq!(
            event_json(&head, &name)["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "lookup"
        );
    }

    #[test]
    fn completions_are_valid_json() {
        let usage = Usage {
            prompt: 1,
            completion: 3,
        };
        let text = text_json(3);
        let v: Value =
            serde_json::from_slice(&completion(1, r#""m""#, Answer::Text, &text, usage)).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hello from the");
        assert_eq!(v["usage"]["total_tokens"], 4);
        let v: Value = serde_json::from_slice(&completion(
            2,
            r#""m""#,
            Answer::ToolCall { name: r#""f""# },
            &text,
            usage,
        ))
        .unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{}"
        );
        let _: Value = serde_json::from_slice(&MODELS).unwrap();
    }
}
