//! `Authorization: Bearer <key>` -> the calling key, from the node's local snapshot of keys.
//! No network hop; the secret is hashed and never logged.

use axum::extract::FromRequestParts;
use http::header;
use http::request::Parts;

use aigw_cluster::{KeyRecord, unix_now};

use crate::error::ApiError;
use crate::records::CallFacts;
use crate::state::AppState;

/// The authenticated key behind a request.
pub(crate) struct Caller(pub KeyRecord);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::MissingKey)?;
        let secret = header
            .to_str()
            .ok()
            .and_then(bearer_token)
            .ok_or(ApiError::MissingKey)?;
        let snapshot = state.cluster.load();
        let key = snapshot
            .keys
            .authenticate(secret)
            .ok_or(ApiError::InvalidKey)?;
        if let Some(call) = CallFacts::of(&parts.extensions) {
            call.with(|f| {
                f.key = Some((key.id.to_string(), key.name.clone()));
                f.key_capture = key.records;
            });
        }
        if !key.enabled {
            return Err(ApiError::KeyDisabled);
        }
        if !key.is_usable(unix_now()) {
            return Err(ApiError::KeyExpired);
        }
        Ok(Caller(key.clone()))
    }
}

/// The token of a `Bearer` credential; the scheme is case-insensitive (RFC 7235).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_token_accepts_any_case_and_rejects_other_schemes() {
        assert_eq!(bearer_token("Bearer sk-1"), Some("sk-1"));
        assert_eq!(bearer_token("bearer  sk-1 "), Some("sk-1"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("sk-1"), None);
    }
}
