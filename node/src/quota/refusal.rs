//! What the quota engine answers when it does not admit a request, and its one conversion to
//! the client-visible error.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::error::ApiError;

/// A request the key's limits do not admit now. The headers explain it to the client
/// (`retry-after`, `x-ratelimit-*`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    /// A rate limit (RPM, TPM) or the concurrency limit: 429 `rate_limit_exceeded`.
    #[error("{message}")]
    Rate { message: String, headers: HeaderMap },
    /// A period budget is used up: 429 `insufficient_quota`.
    #[error("{message}")]
    Budget { message: String, headers: HeaderMap },
    /// The request needs more than the limit ever admits at once (this node's TPM bucket
    /// when full, a whole token budget): waiting cannot help, so no `retry-after`. 400
    /// `request_too_large_for_rate` / `request_too_large_for_budget`.
    #[error("{message}")]
    TooLarge {
        limit: TooLargeFor,
        message: String,
        headers: HeaderMap,
    },
    /// The budget needs a new lease and the cluster cannot grant one now (no quorum), or this
    /// node cannot persist what it admits: 503 `quota_unavailable`.
    #[error("{0}")]
    Unavailable(String),
}

/// Which kind of limit a request can never fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TooLargeFor {
    Rate,
    Budget,
}

/// Read by the official OpenAI SDKs before their own rules: `false` means do not retry.
const X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

impl Refusal {
    /// This refusal with the key's `x-ratelimit-*` headers added (a budget refusal carries
    /// them like an admission; the others have them already or have none).
    pub(super) fn with_rate_headers(mut self, rate: HeaderMap) -> Self {
        if let Self::Budget { headers, .. } | Self::TooLarge { headers, .. } = &mut self {
            headers.extend(rate);
        }
        self
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let (inner, headers) = match refusal {
            Refusal::Rate { message, headers } => (ApiError::RateLimited(message), headers),
            Refusal::Budget { message, headers } => (ApiError::QuotaExceeded(message), headers),
            Refusal::TooLarge {
                limit,
                message,
                mut headers,
            } => {
                headers.insert(X_SHOULD_RETRY, HeaderValue::from_static("false"));
                let code = match limit {
                    TooLargeFor::Rate => "request_too_large_for_rate",
                    TooLargeFor::Budget => "request_too_large_for_budget",
                };
                (ApiError::TooLargeForLimit { message, code }, headers)
            }
            Refusal::Unavailable(detail) => return ApiError::QuotaUnavailable(detail),
        };
        ApiError::Refused {
            inner: Box::new(inner),
            headers: Box::new(headers),
        }
    }
}
