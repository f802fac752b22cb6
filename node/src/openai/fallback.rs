//! Answers for requests no route takes, in OpenAI's error shape rather than axum's plain text.

use axum::extract::Request;

use super::ApiError;

pub(super) async fn unknown_url(request: Request) -> ApiError {
    ApiError::UnknownUrl {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}

pub(super) async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}
