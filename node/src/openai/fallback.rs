//! Answers for requests no route takes, in OpenAI's error shape rather than axum's plain text.

use axum::extract::Request;

use crate::error::ApiError;

pub(crate) async fn unknown_url(request: Request) -> ApiError {
    ApiError::UnknownUrl {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}

pub(crate) async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}
