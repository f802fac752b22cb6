//! `POST /v1/embeddings`: one deterministic unit vector per input, seeded by the input's
//! text or tokens, so equal inputs embed equally (a semantic cache in front can be tested).
//!
//! `encoding_format: "base64"` is honoured because the official Python SDK asks for it by
//! default and decodes little-endian f32s.

use std::io::Write;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;

use super::admission::admit;
use super::error::{ApiError, json_response};
use super::request::EmbeddingsRequestView;
use super::state::MockState;

const DEFAULT_DIMENSIONS: usize = 8;
const MAX_DIMENSIONS: u64 = 65_536;

pub(crate) async fn create(
    State(state): State<Arc<MockState>>,
    request: Request,
) -> Result<Response, Response> {
    let admitted = admit(&state, request).await?;
    let view = EmbeddingsRequestView::parse(&admitted.body).map_err(IntoResponse::into_response)?;
    respond(&view).map_err(IntoResponse::into_response)
}

fn respond(view: &EmbeddingsRequestView<'_>) -> Result<Response, ApiError> {
    let model = view.model_json()?;
    let inputs = view
        .input
        .as_ref()
        .filter(|inputs| !inputs.seeds.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_request(
                "input must be a non-empty string, array of strings or token arrays",
            )
        })?;
    let dimensions = match view.dimensions {
        None => DEFAULT_DIMENSIONS,
        Some(d @ 1..=MAX_DIMENSIONS) => d as usize,
        Some(d) => {
            return Err(ApiError::invalid_request(format!(
                "dimensions must be within 1..={MAX_DIMENSIONS}, got {d}"
            )));
        }
    };
    let base64 = match view.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_request(format!(
                "encoding_format must be \"float\" or \"base64\", got {other:?}"
            )));
        }
    };

    let mut out =
        Vec::with_capacity(96 + model.len() + inputs.seeds.len() * (64 + dimensions * 12));
    out.extend_from_slice(br#"{"object":"list","data":["#);
    let mut vector = Vec::with_capacity(dimensions);
    for (index, &seed) in inputs.seeds.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        let _ = write!(
            out,
            r#"{{"object":"embedding","index":{index},"embedding":"#
        );
        unit_vector(seed, dimensions, &mut vector);
        if base64 {
            out.push(b'"');
            encode_base64(vector.iter().flat_map(|v| v.to_le_bytes()), &mut out);
            out.push(b'"');
        } else {
            out.push(b'[');
            for (i, v) in vector.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = write!(out, "{v}");
            }
            out.push(b']');
        }
        out.push(b'}');
    }
    let tokens = inputs.token_estimate;
    let _ = write!(
        out,
        r#"],"model":{model},"usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}}}"#
    );
    Ok(json_response(StatusCode::OK, Bytes::from(out)))
}

/// A unit-length vector drawn from splitmix64 seeded by `seed` (any seed, 0 included, gives
/// its own sequence).
fn unit_vector(seed: u64, dimensions: usize, out: &mut Vec<f32>) {
    out.clear();
    let mut state = seed;
    for _ in 0..dimensions {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // The top 24 bits as a float in [-1, 1).
        out.push((z >> 40) as f32 / (1u64 << 23) as f32 - 1.0);
    }
    let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        out.iter_mut().for_each(|v| *v /= norm);
    }
}

/// Standard base64 with padding, the encoding OpenAI uses for `encoding_format: "base64"`.
fn encode_base64(bytes: impl Iterator<Item = u8>, out: &mut Vec<u8>) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = bytes.peekable();
    while bytes.peek().is_some() {
        let group: [Option<u8>; 3] = [bytes.next(), bytes.next(), bytes.next()];
        let n = group
            .iter()
            .fold(0u32, |n, b| (n << 8) | u32::from(b.unwrap_or(0)));
        let present = group.iter().filter(|b| b.is_some()).count();
        for i in 0..4 {
            if i <= present {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(input: &[u8]) -> String {
        let mut out = Vec::new();
        encode_base64(input.iter().copied(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn vectors_are_deterministic_unit_length_and_seed_dependent() {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        unit_vector(42, 16, &mut a);
        unit_vector(42, 16, &mut b);
        unit_vector(43, 16, &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let norm: f32 = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        assert!(a.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
}
