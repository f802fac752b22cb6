//! Reading a request that may be multipart/form-data (the SDKs' uploads) or JSON into one
//! list of fields, so handlers for audio and videos take either.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use bytes::Bytes;
use http::{HeaderValue, Request};

use super::error::ApiError;

/// One form field: its text, or for a file its name and bytes.
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) filename: Option<String>,
    pub(crate) bytes: Bytes,
}

pub(crate) struct Form {
    pub(crate) fields: Vec<Field>,
}

impl Form {
    /// `body` parsed by its content type: multipart/form-data, or a JSON object whose values
    /// become text fields.
    /// `extensions` are the original request's (they carry the route's body limit).
    pub(crate) async fn parse(
        content_type: Option<&HeaderValue>,
        extensions: http::Extensions,
        body: Bytes,
    ) -> Result<Self, ApiError> {
        let is_multipart = content_type
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
        if !is_multipart {
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&body)
                .map_err(|e| ApiError::invalid_request(format!("invalid JSON body: {e}")))?;
            let fields = object
                .into_iter()
                .map(|(name, value)| Field {
                    name,
                    filename: None,
                    bytes: Bytes::from(match value {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    }),
                })
                .collect();
            return Ok(Self { fields });
        }
        let mut request = Request::new(Body::from(body));
        *request.extensions_mut() = extensions;
        if let Some(content_type) = content_type {
            request
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, content_type.clone());
        }
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|e| ApiError::invalid_request(format!("invalid multipart body: {e}")))?;
        let mut fields = Vec::new();
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| ApiError::invalid_request(format!("invalid multipart body: {e}")))?
        {
            let name = field.name().unwrap_or_default().to_owned();
            let filename = field.file_name().map(str::to_owned);
            let bytes = field
                .bytes()
                .await
                .map_err(|e| ApiError::invalid_request(format!("invalid multipart body: {e}")))?;
            fields.push(Field {
                name,
                filename,
                bytes,
            });
        }
        Ok(Self { fields })
    }

    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.name == name && f.filename.is_none())
            .and_then(|f| std::str::from_utf8(&f.bytes).ok())
    }

    pub(crate) fn file(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Admits a multipart API request (counting it, applying the behaviour's faults) and parses
/// its form; the admission is returned too, as it holds the request's number and in-flight slot.
pub(crate) async fn admit_form(
    state: &super::state::MockState,
    request: axum::extract::Request,
) -> Result<(super::admission::Admitted, Form), axum::response::Response> {
    use axum::response::IntoResponse;
    let content_type = request.headers().get(http::header::CONTENT_TYPE).cloned();
    let extensions = request.extensions().clone();
    let admitted = super::admission::admit(state, request).await?;
    let form = Form::parse(content_type.as_ref(), extensions, admitted.body.clone())
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((admitted, form))
}
