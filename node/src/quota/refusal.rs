//! What the quota engine answers when it does not admit a request, and its one conversion to
//! the client-visible error.

use http::HeaderMap;

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
    /// The budget needs a new lease and the cluster cannot grant one now (no quorum), or this
    /// node cannot persist what it admits: 503 `quota_unavailable`.
    #[error("{0}")]
    Unavailable(String),
}

impl Refusal {
    /// This refusal with the key's `x-ratelimit-*` headers added (a budget refusal carries
    /// them like an admission; the others have them already or have none).
    pub(super) fn with_rate_headers(mut self, rate: HeaderMap) -> Self {
        if let Self::Budget { headers, .. } = &mut self {
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
            Refusal::Unavailable(detail) => return ApiError::QuotaUnavailable(detail),
        };
        ApiError::Refused {
            inner: Box::new(inner),
            headers: Box::new(headers),
        }
    }
}
