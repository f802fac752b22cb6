//! The active health probe of one upstream: `GET` its health path with its credentials, on its
//! own connection pool. A 2xx answer passes; any other status, or no answer, fails. The
//! upstream actor runs it on its schedule and enforces the timeout (aigw-actors' health.rs).

use aigw_actors::{HealthProbe, ProbeFuture};
use axum::body::Body;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Limited};

use super::upstream::HttpsClient;

/// Enough to read a health or model list answer to its end, so its connection is reused.
const MAX_PROBE_BODY: usize = 256 * 1024;

pub(crate) struct HttpProbe {
    uri: Uri,
    credentials: Vec<(HeaderName, HeaderValue)>,
    client: HttpsClient,
}

impl HttpProbe {
    pub fn new(uri: Uri, credentials: Vec<(HeaderName, HeaderValue)>, client: HttpsClient) -> Self {
        Self {
            uri,
            credentials,
            client,
        }
    }

    #[cfg(test)]
    pub fn uri(&self) -> &Uri {
        &self.uri
    }
}

impl HealthProbe for HttpProbe {
    /// The URL probed: a settings change that keeps it (and the health and breaker settings)
    /// keeps the upstream's actor and state. Credentials are not part of it.
    fn target(&self) -> Option<String> {
        Some(self.uri.to_string())
    }

    fn probe(&self) -> ProbeFuture {
        let mut request = Request::get(self.uri.clone());
        for (name, value) in &self.credentials {
            request = request.header(name, value.clone());
        }
        let request = request.body(Body::empty());
        let client = self.client.clone();
        Box::pin(async move {
            let request = request.map_err(|_| "the probe request is invalid".to_owned())?;
            let response = client.request(request).await.map_err(|err| {
                if err.is_connect() {
                    "connection failed".to_owned()
                } else {
                    "connection closed before a response".to_owned()
                }
            })?;
            let status = response.status();
            let _ = Limited::new(response.into_body(), MAX_PROBE_BODY)
                .collect()
                .await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("answered {status}"))
            }
        })
    }
}
