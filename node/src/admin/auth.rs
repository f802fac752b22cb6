//! The admin bearer token, compared in constant time.
//!
//! Both sides are hashed first, so the comparison takes the same time whatever the lengths,
//! and the token itself is not kept in memory after start-up.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AdminState;
use super::error::AdminError;

/// SHA-256 of the admin token; `None` disables the admin API.
#[derive(Clone)]
pub(crate) struct AdminToken(Option<[u8; 32]>);

impl AdminToken {
    pub fn new(token: Option<&str>) -> Self {
        Self(token.map(|t| Sha256::digest(t.as_bytes()).into()))
    }

    fn check(&self, presented: Option<&str>) -> Result<(), AdminError> {
        let expected = self.0.as_ref().ok_or(AdminError::Disabled)?;
        let presented = presented.ok_or(AdminError::Unauthorized)?;
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if bool::from(expected.ct_eq(&presented)) {
            Ok(())
        } else {
            Err(AdminError::Unauthorized)
        }
    }
}

pub(crate) async fn require_token(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Result<Response, AdminError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    state.token.check(presented)?;
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_token_passes() {
        let token = AdminToken::new(Some("admin-secret"));
        assert!(token.check(Some("admin-secret")).is_ok());
        assert!(matches!(
            token.check(Some("admin-secre")),
            Err(AdminError::Unauthorized)
        ));
        assert!(matches!(token.check(None), Err(AdminError::Unauthorized)));
        assert!(matches!(
            AdminToken::new(None).check(Some("x")),
            Err(AdminError::Disabled)
        ));
    }
}
