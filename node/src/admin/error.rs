//! Errors of the admin API, in the same OpenAI error shape as the API's.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use aigw_cluster::{ClusterError, Rejection};

use crate::error::error_body;

#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    #[error("Missing or wrong admin token: send `Authorization: Bearer <admin token>`.")]
    Unauthorized,
    #[error("The admin API is disabled on this node: set [admin] token in its config.")]
    Disabled,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    /// No leader or no quorum: the change may or may not be applied later.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Disabled => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "invalid_admin_token",
            Self::Disabled => "admin_disabled",
            Self::BadRequest(_) => "invalid_request",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::Unavailable(_) => "cluster_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }
}

impl From<ClusterError> for AdminError {
    fn from(error: ClusterError) -> Self {
        match error {
            ClusterError::Unavailable(message) => Self::Unavailable(message),
            ClusterError::Rejected(rejection @ Rejection::NoSuchKey(_)) => {
                Self::NotFound(rejection.to_string())
            }
            ClusterError::Rejected(rejection) => Self::Conflict(rejection.to_string()),
            ClusterError::NotMember(_) => Self::NotFound(error.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let kind = if self.status().is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let body = error_body(&self.to_string(), kind, None, self.code());
        let mut response = (self.status(), body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}
