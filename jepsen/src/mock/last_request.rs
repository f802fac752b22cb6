//! The most recent API request, kept so a gateway's tests can check what actually went
//! upstream (the model rewrite, pass-through fields, the upstream Authorization header).
//!
//! Recording is on the hot path, so it only moves what the request already owns (headers,
//! the body's `Bytes`) into one allocation; the JSON view is built when someone asks.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderMap, Method, Uri};
use serde_json::{Map, Value, json};

#[derive(Debug)]
struct LastRequest {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Debug, Default)]
pub(crate) struct LastRequestSlot(ArcSwapOption<LastRequest>);

impl LastRequestSlot {
    pub(crate) fn record(&self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) {
        self.0.store(Some(Arc::new(LastRequest {
            method,
            uri,
            headers,
            body,
        })));
    }

    /// `{"method","path","headers":{name:value},"body":<JSON or null>}`; repeated headers
    /// are joined with ", " as HTTP allows.
    pub(crate) fn to_json(&self) -> Option<Value> {
        let last = self.0.load_full()?;
        let mut headers = Map::new();
        for name in last.headers.keys() {
            let values: Vec<String> = last
                .headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            headers.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
        }
        let body = serde_json::from_slice::<Value>(&last.body).unwrap_or(Value::Null);
        Some(json!({
            "method": last.method.as_str(),
            "path": last.uri.path(),
            "headers": headers,
            "body": body,
        }))
    }
}
