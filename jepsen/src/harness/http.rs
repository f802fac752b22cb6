//! The harness' HTTP client: plain HTTP/1.1 to loopback, every call bounded by a timeout, and
//! errors sorted by what they mean for the history: refused before sending (the operation
//! certainly did not happen) or anything later (it may have).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    admin_token: String,
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// `error.code` of an error in OpenAI's shape.
    pub fn error_code(&self) -> Option<String> {
        self.json()?
            .pointer("/error/code")?
            .as_str()
            .map(str::to_owned)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Could not connect: nothing was sent.
    Refused,
    /// No complete answer within the timeout.
    Timeout,
    /// The connection broke after (maybe) sending.
    Broken(String),
}

impl CallError {
    pub fn label(&self) -> String {
        match self {
            CallError::Refused => "refused".into(),
            CallError::Timeout => "timeout".into(),
            CallError::Broken(_) => "broken".into(),
        }
    }
}

impl HttpClient {
    pub fn new(admin_token: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(5))
            // A pooled connection to a killed node must not be reused: hyper cannot tell an
            // old broken connection from a request lost in flight.
            .pool_max_idle_per_host(4)
            .build(connector);
        Self {
            client,
            admin_token: admin_token.to_owned(),
        }
    }

    /// One call; `bearer` is sent as `Authorization: Bearer`.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        bearer: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header("authorization", format!("Bearer {bearer}"));
        let body = match body {
            Some(json) => {
                request = request.header("content-type", "application/json");
                Full::new(Bytes::from(json.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request
            .body(body)
            .map_err(|e| CallError::Broken(e.to_string()))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    CallError::Refused
                } else {
                    CallError::Broken(e.to_string())
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| CallError::Broken(e.to_string()))?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout))
    }

    /// An admin API call with the run's admin token.
    pub async fn admin(
        &self,
        method: Method,
        url: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let token = self.admin_token.clone();
        self.call(method, url, &token, body, timeout).await
    }
}
