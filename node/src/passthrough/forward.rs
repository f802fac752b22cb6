//! One HTTP exchange with a backend: the request (body streamed as it arrives) out, the
//! response head back within [`HEAD_TIMEOUT`], the body streamed back frame by frame. No
//! retries: a pass-through request may have effects, and its body is read once.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, Method, Request, Uri};

use super::hop;
use crate::error::ApiError;
use crate::proxy::backends::{Backend, HEAD_TIMEOUT, PassClient};

pub(super) async fn send(
    client: &PassClient,
    backend: &Backend,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .body(body)
        .map_err(|_| ApiError::Internal)?;
    *request.headers_mut() = headers;
    let response = match tokio::time::timeout(HEAD_TIMEOUT, client.request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            let detail = if error.is_connect() {
                "connection failed"
            } else {
                "connection closed before a response"
            };
            return Err(ApiError::UpstreamUnreachable {
                upstream: backend.name.to_string(),
                detail: detail.to_owned(),
            });
        }
        Err(_) => {
            return Err(ApiError::UpstreamTimeout {
                upstream: backend.name.to_string(),
                phase: "no response head within 300s",
            });
        }
    };
    let (mut parts, body) = response.into_parts();
    parts.headers = hop::to_client(parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}
