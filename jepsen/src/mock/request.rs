//! The few facts the mock needs from a request body, read without building a JSON tree.
//!
//! Views borrow from the body: the model and tool name stay raw JSON and are spliced back
//! into the answer as they came; messages and inputs are folded into summaries while being
//! parsed, so a long conversation costs no allocation. Every other field is skipped.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::error::ApiError;

#[derive(Debug, Deserialize)]
pub(crate) struct ChatRequestView<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    pub(crate) stream: Option<bool>,
    #[serde(default)]
    pub(crate) stream_options: Option<StreamOptionsView>,
    #[serde(borrow, default)]
    pub(crate) tools: Option<FirstTool<'a>>,
    #[serde(default)]
    pub(crate) messages: MessagesSummary,
    /// The end user, when a string: jepsen's quota workload tags each request with its key's
    /// name, so the mock can count what reached it per key.
    #[serde(borrow, default)]
    pub(crate) user: Option<Cow<'a, str>>,
}

impl<'a> ChatRequestView<'a> {
    pub(crate) fn parse(body: &'a [u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::invalid_request(format!("invalid JSON body: {e}")))
    }

    /// The model as a JSON string literal, ready to splice.
    pub(crate) fn model_json(&self) -> Result<&'a str, ApiError> {
        string_literal(self.model)
            .ok_or_else(|| ApiError::invalid_request("you must provide a model parameter"))
    }

    pub(crate) fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The tool to call, as a JSON string literal: the first tool's function name, unless
    /// the conversation already ends with a tool result (then the model answers in text).
    pub(crate) fn tool_to_call(&self) -> Option<&'a str> {
        if self.messages.last_is_tool_result {
            return None;
        }
        string_literal(self.tools.as_ref()?.name)
    }

    /// A cheap prompt token estimate: content bytes / 4, at least 1.
    pub(crate) fn prompt_tokens(&self) -> u64 {
        (self.messages.content_bytes as u64 / 4).max(1)
    }
}

fn string_literal(raw: Option<&RawValue>) -> Option<&str> {
    raw.map(RawValue::get).filter(|s| s.starts_with('"'))
}

#[derive(Debug, Deserialize)]
pub(crate) struct StreamOptionsView {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// The first tool's function name; the rest of the array is skipped.
#[derive(Debug, Default)]
pub(crate) struct FirstTool<'a> {
    name: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
struct ToolView<'a> {
    #[serde(borrow, default)]
    function: Option<FunctionView<'a>>,
}

#[derive(Debug, Deserialize)]
struct FunctionView<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for FirstTool<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(SeqFold::<FirstTool<'a>>(PhantomData))
    }
}

/// Messages folded as they are parsed: their content size and whether the last one is a
/// tool result.
#[derive(Debug, Default)]
pub(crate) struct MessagesSummary {
    content_bytes: usize,
    last_is_tool_result: bool,
}

#[derive(Debug, Deserialize)]
struct MessageView<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for MessagesSummary {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(SeqFold::<MessagesSummary>(PhantomData))
    }
}

/// A sequence folded element by element into `T`, without collecting it.
struct SeqFold<T>(PhantomData<T>);

impl<'de: 'a, 'a> Visitor<'de> for SeqFold<FirstTool<'a>> {
    type Value = FirstTool<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of tools")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let first = seq.next_element::<ToolView<'a>>()?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(FirstTool {
            name: first.and_then(|t| t.function).and_then(|f| f.name),
        })
    }
}

impl<'de> Visitor<'de> for SeqFold<MessagesSummary> {
    type Value = MessagesSummary;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut summary = MessagesSummary::default();
        while let Some(message) = seq.next_element::<MessageView<'de>>()? {
            summary.last_is_tool_result = message.role.as_deref() == Some("tool");
            if let Some(content) = message.content {
                let raw = content.get();
                // A string's quotes are not content; for parts arrays the raw size will do.
                summary.content_bytes += if raw.starts_with('"') {
                    raw.len().saturating_sub(2)
                } else {
                    raw.len()
                };
            }
        }
        Ok(summary)
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct EmbeddingsRequestView<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    pub(crate) input: Option<Inputs>,
    #[serde(default)]
    pub(crate) dimensions: Option<u64>,
    #[serde(borrow, default)]
    pub(crate) encoding_format: Option<Cow<'a, str>>,
}

impl<'a> EmbeddingsRequestView<'a> {
    pub(crate) fn parse(body: &'a [u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::invalid_request(format!("invalid JSON body: {e}")))
    }

    pub(crate) fn model_json(&self) -> Result<&'a str, ApiError> {
        string_literal(self.model)
            .ok_or_else(|| ApiError::invalid_request("you must provide a model parameter"))
    }
}

/// One seed per input (a hash of its text or tokens, so equal inputs embed equally) and
/// the inputs' total size for the usage estimate.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Inputs {
    pub(crate) seeds: Vec<u64>,
    pub(crate) token_estimate: u64,
}

/// One element of an `input` array: a string, a token, or an array of tokens.
enum InputItem {
    Text(u64, usize),
    Token(u64),
    Tokens(u64, usize),
}

impl<'de> Deserialize<'de> for Inputs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InputsVisitor;
        impl<'de> Visitor<'de> for InputsVisitor {
            type Value = Inputs;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, an array of strings, or token arrays")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Inputs, E> {
                Ok(Inputs {
                    seeds: vec![fnv1a(Fnv::START, text.as_bytes())],
                    token_estimate: (text.len() as u64 / 4).max(1),
                })
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Inputs, A::Error> {
                let mut inputs = Inputs::default();
                // A bare array of integers is one tokenised input, not many.
                let mut tokens: Option<(u64, u64)> = None;
                while let Some(item) = seq.next_element::<InputItem>()? {
                    match item {
                        InputItem::Text(seed, len) => {
                            inputs.seeds.push(seed);
                            inputs.token_estimate += (len as u64 / 4).max(1);
                        }
                        InputItem::Tokens(seed, count) => {
                            inputs.seeds.push(seed);
                            inputs.token_estimate += count as u64;
                        }
                        InputItem::Token(token) => {
                            let (seed, count) = tokens.get_or_insert((Fnv::START, 0));
                            *seed = fnv1a(*seed, &token.to_le_bytes());
                            *count += 1;
                        }
                    }
                }
                if let Some((seed, count)) = tokens {
                    inputs.seeds.push(seed);
                    inputs.token_estimate += count;
                }
                Ok(inputs)
            }
        }
        deserializer.deserialize_any(InputsVisitor)
    }
}

impl<'de> Deserialize<'de> for InputItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = InputItem;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a token or an array of tokens")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<InputItem, E> {
                Ok(InputItem::Text(
                    fnv1a(Fnv::START, text.as_bytes()),
                    text.len(),
                ))
            }

            fn visit_u64<E: de::Error>(self, token: u64) -> Result<InputItem, E> {
                Ok(InputItem::Token(token))
            }

            fn visit_i64<E: de::Error>(self, token: i64) -> Result<InputItem, E> {
                Ok(InputItem::Token(token as u64))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InputItem, A::Error> {
                let (mut seed, mut count) = (Fnv::START, 0);
                while let Some(token) = seq.next_element::<u64>()? {
                    seed = fnv1a(seed, &token.to_le_bytes());
                    count += 1;
                }
                Ok(InputItem::Tokens(seed, count))
            }
        }
        deserializer.deserialize_any(ItemVisitor)
    }
}

struct Fnv;

impl Fnv {
    const START: u64 = 0xcbf2_9ce4_8422_2325;
}

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_view_reads_only_what_the_mock_needs() {
        let body = br#"{"model":"gpt-\u0041","stream":true,"stream_options":{"include_usage":true},
            "unknown":{"deep":[1,2,3]},
            "messages":[{"role":"system","content":"12345678"},{"role":"user","content":[{"type":"text","text":"hi"}]}],
            "tools":[{"type":"function","function":{"name":"get_weather","parameters":{}}},{"type":"function","function":{"name":"other"}}]}"#;
        let view = ChatRequestView::parse(body).unwrap();
        assert_eq!(view.model_json().unwrap(), r#""gpt-\u0041""#);
        assert_eq!(view.stream, Some(true));
        assert!(view.include_usage());
        assert_eq!(view.tool_to_call(), Some(r#""get_weather""#));
        assert!(view.prompt_tokens() >= 2);
    }

    #[test]
    fn a_tool_result_turns_tool_calls_back_into_text() {
        let body = br#"{"model":"m","tools":[{"type":"function","function":{"name":"f"}}],
            "messages":[{"role":"user","content":"q"},{"role":"assistant","content":null,"tool_calls":[]},{"role":"tool","tool_call_id":"x","content":"42"}]}"#;
        assert_eq!(ChatRequestView::parse(body).unwrap().tool_to_call(), None);
        let no_tools = br#"{"model":"m","tools":[],"messages":[],"stream_options":null}"#;
        let view = ChatRequestView::parse(no_tools).unwrap();
        assert_eq!(view.tool_to_call(), None);
        assert!(!view.include_usage());
        assert_eq!(view.prompt_tokens(), 1);
    }

    #[test]
    fn model_must_be_a_string() {
        assert!(
            ChatRequestView::parse(br#"{"model":3}"#)
                .unwrap()
                .model_json()
                .is_err()
        );
        assert!(
            ChatRequestView::parse(br#"{}"#)
                .unwrap()
                .model_json()
                .is_err()
        );
        assert!(ChatRequestView::parse(b"{not json").is_err());
    }

    fn inputs(json: &str) -> Inputs {
        EmbeddingsRequestView::parse(json.as_bytes())
            .unwrap()
            .input
            .unwrap()
    }

    #[test]
    fn embedding_inputs_of_every_form_are_counted() {
        assert_eq!(inputs(r#"{"input":"abcdefgh"}"#).seeds.len(), 1);
        assert_eq!(inputs(r#"{"input":["a","b","c"]}"#).seeds.len(), 3);
        assert_eq!(inputs(r#"{"input":[1,2,3]}"#).seeds.len(), 1);
        assert_eq!(inputs(r#"{"input":[[1,2],[3]]}"#).seeds.len(), 2);
        assert_eq!(
            inputs(r#"{"input":["same","same"]}"#).seeds[0],
            inputs(r#"{"input":"same"}"#).seeds[0]
        );
    }
}
