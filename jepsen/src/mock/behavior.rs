//! What the mock does to the next request: the knobs a test or a jepsen run turns.
//!
//! It is plain data, serialised as-is by `/mock/control`; unknown fields are rejected so a
//! misspelt knob fails loudly instead of silently doing nothing.

use serde::{Deserialize, Serialize};

/// Above this the pre-built non-streamed answer (one word per chunk) stops being small.
const MAX_CHUNKS: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockBehavior {
    /// Delay before the response head.
    pub latency_ms: u64,
    /// Content chunks per streamed completion; also the words of a non-streamed one.
    pub chunks: usize,
    /// Gap between consecutive content chunks.
    pub chunk_interval_ms: u64,
    /// Probability (0.0..=1.0) of answering `error_status` instead.
    pub error_rate: f64,
    pub error_status: u16,
    /// Accept the request and never answer.
    pub hang: bool,
    /// Streaming: abort the connection after this many content chunks, without `[DONE]`.
    pub drop_after_chunks: Option<usize>,
    /// `/health` answers 503; API calls are still served.
    pub unhealthy: bool,
    /// Streaming: the first content chunk is sent at once, each further one only after a
    /// `POST /mock/step`.
    pub gated: bool,
    /// Streaming with `stream_options.include_usage`: which chunk carries `usage`.
    pub usage_on: UsagePlacement,
}

/// Where a stream puts the `usage` the client asked for: OpenAI-compatible servers differ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsagePlacement {
    /// A last chunk with `"choices":[]` (OpenAI, vLLM).
    #[default]
    EmptyChoices,
    /// A last chunk of its own with one choice whose delta is empty and no finish reason.
    EmptyDelta,
    /// On the chunk that carries `finish_reason`.
    FinishChunk,
}

impl Default for MockBehavior {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            chunks: 8,
            chunk_interval_ms: 0,
            error_rate: 0.0,
            error_status: 500,
            hang: false,
            drop_after_chunks: None,
            unhealthy: false,
            gated: false,
            usage_on: UsagePlacement::EmptyChoices,
        }
    }
}

impl MockBehavior {
    /// Checks what the type cannot: a probability, a status hyper can send as an answer, and
    /// a chunk count the mock can pre-build. `set_behavior` does not call it (invalid values
    /// are clamped when used); the control endpoint and the binary do.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!(
                "error_rate must be within 0.0..=1.0, got {}",
                self.error_rate
            ));
        }
        if !(200..=599).contains(&self.error_status) {
            return Err(format!(
                "error_status must be within 200..=599, got {}",
                self.error_status
            ));
        }
        if self.chunks > MAX_CHUNKS {
            return Err(format!(
                "chunks must be at most {MAX_CHUNKS}, got {}",
                self.chunks
            ));
        }
        Ok(())
    }

    /// `self` with the fields present in `patch` (a JSON object) replaced, as PATCH does.
    pub(crate) fn merged(&self, patch: serde_json::Value) -> Result<Self, String> {
        let serde_json::Value::Object(patch) = patch else {
            return Err("the body must be a JSON object of MockBehavior fields".into());
        };
        let Ok(serde_json::Value::Object(mut current)) = serde_json::to_value(self) else {
            unreachable!("MockBehavior serialises to a JSON object");
        };
        current.extend(patch);
        serde_json::from_value(serde_json::Value::Object(current)).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_fields_take_defaults() {
        let b: MockBehavior = serde_json::from_value(json!({"hang": true})).unwrap();
        assert_eq!(
            b,
            MockBehavior {
                hang: true,
                ..MockBehavior::default()
            }
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(serde_json::from_value::<MockBehavior>(json!({"latency": 3})).is_err());
    }

    #[test]
    fn merge_replaces_only_the_given_fields() {
        let base = MockBehavior {
            chunks: 3,
            drop_after_chunks: Some(2),
            ..MockBehavior::default()
        };
        let merged = base
            .merged(json!({"latency_ms": 7, "drop_after_chunks": null}))
            .unwrap();
        assert_eq!(merged.latency_ms, 7);
        assert_eq!(merged.chunks, 3);
        assert_eq!(merged.drop_after_chunks, None);
        assert!(base.merged(json!({"nope": 1})).is_err());
        assert!(base.merged(json!([1])).is_err());
    }

    #[test]
    fn validate_rejects_out_of_range_values() {
        let ok = MockBehavior::default();
        assert!(ok.validate().is_ok());
        for bad in [
            MockBehavior {
                error_rate: 1.5,
                ..ok.clone()
            },
            MockBehavior {
                error_rate: f64::NAN,
                ..ok.clone()
            },
            MockBehavior {
                error_status: 99,
                ..ok.clone()
            },
            MockBehavior {
                chunks: MAX_CHUNKS + 1,
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
