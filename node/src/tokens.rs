//! Token estimates for admission: the input counted with tiktoken in the model's encoding (the
//! model's `tokenizer` setting, else the one tiktoken knows for its first target's name, else
//! cl100k_base; counts for non-OpenAI models are estimates), the output reserved from
//! `max_completion_tokens` / `max_tokens`, else the model's `default_max_tokens`, else 1024.

use std::sync::atomic::{AtomicBool, Ordering};

use aigw_config::{ModelSettings, TokenEncoding};
use serde::Deserialize;
use serde_json::value::RawValue;
use tiktoken_rs::CoreBPE;

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
}

impl Estimate {
    /// For a key whose limits count no tokens.
    pub fn calls_only() -> Self {
        Self {
            input: 0,
            output: 0,
        }
    }
}

/// How one model's tokens are estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenCounting {
    pub encoding: TokenEncoding,
    /// Output reserved when the request names no maximum.
    pub default_output: u64,
    /// Count with tiktoken; otherwise bound from above by bytes (a BPE token is at least one
    /// byte), which costs nothing and is reconciled with the upstream's usage all the same.
    pub exact: bool,
}

impl Default for TokenCounting {
    fn default() -> Self {
        Self {
            encoding: TokenEncoding::Cl100kBase,
            default_output: DEFAULT_OUTPUT_RESERVATION,
            exact: true,
        }
    }
}

impl TokenCounting {
    /// The model's settings, else the encoding tiktoken knows for its first target's upstream
    /// model name (`gpt-4o` → o200k_base), else cl100k_base.
    pub fn for_model(model: &ModelSettings) -> Self {
        let encoding = model.tokenizer.unwrap_or_else(|| {
            model
                .targets
                .first()
                .and_then(|t| tiktoken_rs::tokenizer::get_tokenizer(&t.model))
                .map(|t| {
                    use tiktoken_rs::tokenizer::Tokenizer as T;
                    match t {
                        T::O200kBase => TokenEncoding::O200kBase,
                        T::O200kHarmony => TokenEncoding::O200kHarmony,
                        T::Cl100kBase => TokenEncoding::Cl100kBase,
                        T::P50kBase | T::P50kEdit => TokenEncoding::P50kBase,
                        T::R50kBase | T::Gpt2 => TokenEncoding::R50kBase,
                    }
                })
                .unwrap_or(TokenEncoding::Cl100kBase)
        });
        Self {
            encoding,
            default_output: model
                .default_max_tokens
                .unwrap_or(DEFAULT_OUTPUT_RESERVATION),
            exact: true,
        }
    }

    /// The same, bounding tokens from above by bytes instead of counting them.
    pub fn upper_bound(self) -> Self {
        Self {
            exact: false,
            ..self
        }
    }

    /// Tokens of `text` in this encoding (or its length in bytes, when bounding).
    pub fn count(&self, text: &str) -> u64 {
        if !self.exact {
            return text.len() as u64;
        }
        bpe(self.encoding).encode_with_special_tokens(text).len() as u64
    }

    /// Tokens guessed from a raw JSON length: a quarter when counting, all of it when bounding.
    fn raw(&self, len: usize) -> u64 {
        if self.exact {
            len as u64 / 4
        } else {
            len as u64
        }
    }
}

fn bpe(encoding: TokenEncoding) -> &'static CoreBPE {
    let bpe = match encoding {
        TokenEncoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
        TokenEncoding::O200kHarmony => tiktoken_rs::o200k_harmony_singleton(),
        TokenEncoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        TokenEncoding::P50kBase => tiktoken_rs::p50k_base_singleton(),
        TokenEncoding::R50kBase => tiktoken_rs::r50k_base_singleton(),
    };
    loaded(encoding).store(true, Ordering::Release);
    bpe
}

/// Estimates a chat body's tokens. A body the router accepted always parses here; anything
/// odd in `messages` counts as its raw length / 4 rather than failing the request.
pub(crate) fn estimate_chat(body: &[u8], counting: &TokenCounting) -> Estimate {
    let Ok(fields) = serde_json::from_slice::<TokenFields<'_>>(body) else {
        return Estimate {
            input: counting.raw(body.len()),
            output: counting.default_output,
        };
    };
    let mut input = 0;
    for message in &fields.messages {
        input += PER_MESSAGE;
        if let Some(content) = message.content {
            input += content_tokens(content, counting);
        }
    }
    Estimate {
        input,
        output: fields
            .max_completion_tokens
            .or(fields.max_tokens)
            .unwrap_or(counting.default_output),
    }
}

/// Estimates an embeddings body's input: `input` as a string, strings, token ids or arrays of
/// token ids (counted as they are). No output.
pub(crate) fn estimate_embeddings(body: &[u8], counting: &TokenCounting) -> Estimate {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Input {
        Text(String),
        Texts(Vec<String>),
        Ids(Vec<u64>),
        IdLists(Vec<Vec<u64>>),
    }
    #[derive(Deserialize)]
    struct Fields {
        input: Input,
    }
    let input = match serde_json::from_slice::<Fields>(body) {
        Ok(Fields {
            input: Input::Text(text),
        }) => counting.count(&text),
        Ok(Fields {
            input: Input::Texts(texts),
        }) => texts.iter().map(|t| counting.count(t)).sum(),
        Ok(Fields {
            input: Input::Ids(ids),
        }) => ids.len() as u64,
        Ok(Fields {
            input: Input::IdLists(lists),
        }) => lists.iter().map(|l| l.len() as u64).sum(),
        Err(_) => counting.raw(body.len()),
    };
    Estimate { input, output: 0 }
}

/// Tokens of a message's content: a string, or parts whose `text` is counted.
fn content_tokens(content: &RawValue, counting: &TokenCounting) -> u64 {
    #[derive(Deserialize)]
    struct Part {
        #[serde(default)]
        text: Option<String>,
    }
    let raw = content.get();
    if !counting.exact && raw.len() >= 2 && raw.starts_with('"') {
        // A JSON string (RawValue checked it) decodes to at most its bytes between the quotes:
        // an escape is never shorter than what it stands for. No copy, no second parse.
        return raw.len() as u64 - 2;
    }
    if let Ok(text) = serde_json::from_str::<String>(raw) {
        return counting.count(&text);
    }
    if let Ok(parts) = serde_json::from_str::<Vec<Part>>(content.get()) {
        return parts
            .iter()
            .filter_map(|p| p.text.as_deref())
            .map(|t| counting.count(t))
            .sum();
    }
    counting.raw(content.get().len())
}

/// Loads the vocabularies of `encodings` (and cl100k_base, the fallback) on a blocking thread
/// and waits for them. The first load of one parses it: ~100 ms and ~20 MiB for cl100k. Called
/// before an exact count at admission, the only count on an async thread, so a node whose byte
/// bounds are never refused and whose upstreams report usage never loads one.
pub(crate) async fn load(encodings: Vec<TokenEncoding>) {
    let missing: Vec<TokenEncoding> = encodings
        .into_iter()
        .chain([TokenEncoding::Cl100kBase])
        .filter(|e| !loaded(*e).load(Ordering::Acquire))
        .collect();
    if missing.is_empty() {
        return;
    }
    let _ = tokio::task::spawn_blocking(move || {
        for encoding in missing {
            bpe(encoding);
        }
    })
    .await;
}

/// Which encodings [`bpe`] has loaded, in the order of `TokenEncoding::ALL`.
static LOADED: [AtomicBool; TokenEncoding::ALL.len()] =
    [const { AtomicBool::new(false) }; TokenEncoding::ALL.len()];

fn loaded(encoding: TokenEncoding) -> &'static AtomicBool {
    let slot = TokenEncoding::ALL.iter().position(|e| *e == encoding);
    &LOADED[slot.expect("ALL lists every encoding")]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(text: &str) -> u64 {
        TokenCounting::default().count(text)
    }

    fn estimate_chat(body: &[u8]) -> Estimate {
        super::estimate_chat(body, &TokenCounting::default())
    }

    #[test]
    fn the_encoding_comes_from_the_settings_else_the_upstream_model_name() {
        let model = |tokenizer, upstream_model: &str| {
            let toml = format!(
                r#"
                [node]
                id = 1
                api_listen = "127.0.0.1:0"
                data_dir = "/tmp/x"
                [[bootstrap.upstreams]]
                id = "u"
                kind = "openai"
                base_url = "http://127.0.0.1:1"
                [[bootstrap.models]]
                name = "m"
                {tokenizer}
                default_max_tokens = 77
                targets = [{{ upstream = "u", model = "{upstream_model}" }}]
                "#
            );
            let config = aigw_config::parse(&toml, "t.toml").expect("valid");
            TokenCounting::for_model(&config.bootstrap.models[0])
        };
        assert_eq!(model("", "gpt-4o").encoding, TokenEncoding::O200kBase);
        assert_eq!(model("", "llama-3-8b").encoding, TokenEncoding::Cl100kBase);
        let configured = model(r#"tokenizer = "p50k_base""#, "gpt-4o");
        assert_eq!(configured.encoding, TokenEncoding::P50kBase);
        assert_eq!(configured.default_output, 77);
        // The encodings differ, so the choice matters.
        let text = "こんにちは世界、トークナイザーのテストです";
        assert_ne!(configured.count(text), model("", "gpt-4o").count(text));
    }

    #[test]
    fn an_upper_bound_is_never_below_the_count() {
        let body = r#"{"model":"m","max_tokens":50,"messages":[
            {"role":"system","content":"You are terse. こんにちは <|endoftext|>"},
            {"role":"user","content":[{"type":"text","text":"Hello world"}]},
            {"role":"user","content":{"odd":"shape of content"}},
            {"role":"user","content":"\u00e9t\u00e9 \"quoted\" \ud83d\ude00\n"}]}"#
            .as_bytes();
        let exact = TokenCounting::default();
        let bound = exact.upper_bound();
        let (e, b) = (
            super::estimate_chat(body, &exact),
            super::estimate_chat(body, &bound),
        );
        assert!(b.input >= e.input, "{b:?} < {e:?}");
        assert_eq!(b.output, e.output);
        let embed = br#"{"input":["Hello world","ok"]}"#;
        assert!(
            estimate_embeddings(embed, &bound).input >= estimate_embeddings(embed, &exact).input
        );
    }

    #[test]
    fn embedding_input_is_counted_in_every_shape() {
        let c = TokenCounting::default();
        let e = |body: &str| estimate_embeddings(body.as_bytes(), &c);
        assert_eq!(e(r#"{"input":"Hello world"}"#).input, count("Hello world"));
        assert_eq!(
            e(r#"{"input":["Hello","world"]}"#).input,
            count("Hello") + count("world")
        );
        assert_eq!(e(r#"{"input":[1,2,3]}"#).input, 3);
        assert_eq!(e(r#"{"input":[[1,2],[3]]}"#).input, 3);
        assert_eq!(e(r#"{"input":"x"}"#).output, 0);
    }

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
    }

    #[test]
    fn max_completion_tokens_wins_and_the_default_applies_without_either() {
        let with = estimate_chat(
            br#"{"max_tokens":5,"max_completion_tokens":9,"messages":[],"stream_options":{}}"#,
        );
        assert_eq!(with.output, 9);
        assert_eq!(
            estimate_chat(br#"{"messages":[]}"#).output,
            DEFAULT_OUTPUT_RESERVATION
        );
    }
}
