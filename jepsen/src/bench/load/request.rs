//! The chat completion every scenario sends, built once and cloned per request.
//!
//! The body is a realistic small chat request (system + user message, a few sampling fields);
//! every target gets the same bytes and the same `Authorization`, so the only difference
//! between targets is what sits between the client and the mock.

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::Full;

/// The public model name aigw's bench config routes; the mock answers any name.
pub(crate) const MODEL: &str = "bench-model";

const PATH: &str = "/v1/chat/completions";

/// A request template for one target address.
#[derive(Clone)]
pub(crate) struct ChatRequest {
    host: HeaderValue,
    /// Absolute URI for HTTP/2 (`:scheme` and `:authority`), a path for HTTP/1.
    absolute: Uri,
    body: Bytes,
    /// Bearer values; request `n` uses `keys[n % len]`, so a many-key run spreads lookups.
    keys: std::sync::Arc<[HeaderValue]>,
}

impl ChatRequest {
    pub fn new(
        addr: std::net::SocketAddr,
        stream: bool,
        secrets: &[String],
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !secrets.is_empty(),
            "a request template needs at least one key"
        );
        let keys = secrets
            .iter()
            .map(|s| HeaderValue::try_from(format!("Bearer {s}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            host: HeaderValue::try_from(addr.to_string())?,
            absolute: format!("http://{addr}{PATH}").parse()?,
            body: body(stream),
            keys: keys.into(),
        })
    }

    /// Request `n` as HTTP/1.1 (origin-form target) or HTTP/2 (absolute URI).
    pub fn build(&self, n: u64, http2: bool) -> Request<Full<Bytes>> {
        let uri = if http2 {
            self.absolute.clone()
        } else {
            Uri::from_static(PATH)
        };
        let key = &self.keys[(n % self.keys.len() as u64) as usize];
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        if !http2 {
            headers.insert(HOST, self.host.clone());
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(AUTHORIZATION, key.clone());
        request
    }
}

fn body(stream: bool) -> Bytes {
    Bytes::from(format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"system","content":"You are a concise assistant that answers in one sentence."}},{{"role":"user","content":"What does an AI gateway do, and why would a team run one?"}}],"max_tokens":64,"temperature":0.2,"stream":{stream}}}"#
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_json_with_the_bench_model() {
        for stream in [false, true] {
            let v: serde_json::Value = serde_json::from_slice(&body(stream)).unwrap();
            assert_eq!(v["model"], MODEL);
            assert_eq!(v["stream"], stream);
        }
    }

    #[test]
    fn keys_rotate_by_request_number() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let t =
            ChatRequest::new(addr, false, &["sk-aaaaaaaa".into(), "sk-bbbbbbbb".into()]).unwrap();
        assert_eq!(
            t.build(0, false).headers()[AUTHORIZATION],
            "Bearer sk-aaaaaaaa"
        );
        assert_eq!(
            t.build(3, false).headers()[AUTHORIZATION],
            "Bearer sk-bbbbbbbb"
        );
        assert_eq!(
            t.build(3, true).uri().to_string(),
            "http://127.0.0.1:1/v1/chat/completions"
        );
    }
}
