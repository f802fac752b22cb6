//! The older MCP SSE transport announces, as the first event of its stream, the URL the
//! client must POST its messages to (`event: endpoint`). That URL points at the backend; the
//! client must reach it through the gateway instead, with the backend's session id swapped for
//! a signed one. [`rewrite_first_endpoint`] wraps the stream: it holds back bytes only until
//! the first event that carries data has arrived, rewrites it if it is `endpoint`, and from
//! then on passes every frame through untouched.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::error::error_body;

/// Longest stretch held back while looking for the first event; past it the stream passes
/// through as it is.
const MAX_HELD: usize = 64 * 1024;

/// `body` (an SSE stream) with the data of its first `endpoint` event replaced by
/// `rewrite(data)`. When `rewrite` refuses (`None`), the client gets an `error` event in
/// OpenAI's shape and the stream ends.
pub(super) fn rewrite_first_endpoint(
    body: Body,
    rewrite: impl Fn(&str) -> Option<String> + Send + 'static,
) -> Body {
    let stream = body.into_data_stream();
    let state = Scan {
        stream,
        held: BytesMut::new(),
        scanning: true,
        ended: false,
        rewrite,
    };
    Body::from_stream(futures::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    }))
}

struct Scan<S, F> {
    stream: S,
    held: BytesMut,
    scanning: bool,
    ended: bool,
    rewrite: F,
}

impl<S, F> Scan<S, F>
where
    S: futures::Stream<Item = Result<Bytes, axum::Error>> + Unpin,
    F: Fn(&str) -> Option<String>,
{
    async fn next(&mut self) -> Option<Result<Bytes, axum::Error>> {
        if self.ended {
            return None;
        }
        loop {
            let chunk = match self.stream.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(error)) => return Some(Err(error)),
                None => {
                    self.ended = true;
                    return (!self.held.is_empty()).then(|| Ok(self.held.split().freeze()));
                }
            };
            if !self.scanning {
                return Some(Ok(chunk));
            }
            self.held.extend_from_slice(&chunk);
            let mut out = BytesMut::new();
            while self.scanning {
                let Ok(end) = crate::sse::event_end(&self.held) else {
                    break;
                };
                let event = self.held.split_to(end);
                match endpoint_data(&event) {
                    Scanned::Endpoint(data) => {
                        self.scanning = false;
                        match (self.rewrite)(&data) {
                            Some(url) => {
                                out.extend_from_slice(b"event: endpoint\r\ndata: ");
                                out.extend_from_slice(url.as_bytes());
                                out.extend_from_slice(b"\r\n\r\n");
                            }
                            None => {
                                self.ended = true;
                                out.extend_from_slice(&refusal());
                                return Some(Ok(out.freeze()));
                            }
                        }
                    }
                    Scanned::OtherData => {
                        self.scanning = false;
                        out.extend_from_slice(&event);
                    }
                    Scanned::NoData => out.extend_from_slice(&event),
                }
            }
            if self.held.len() > MAX_HELD {
                self.scanning = false;
            }
            if !self.scanning {
                out.extend_from_slice(&self.held.split());
            }
            if !out.is_empty() {
                return Some(Ok(out.freeze()));
            }
        }
    }
}

enum Scanned {
    /// An `endpoint` event, with its data.
    Endpoint(String),
    /// Another event with data: the stream is not the SSE transport's.
    OtherData,
    /// Comments or fields without data.
    NoData,
}

fn endpoint_data(event: &[u8]) -> Scanned {
    let text = String::from_utf8_lossy(event);
    let mut name = "message";
    let mut data: Option<String> = None;
    for line in text.split(['\n', '\r']) {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = value,
            "data" => {
                let data = data.get_or_insert_with(String::new);
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            _ => {}
        }
    }
    match (name, data) {
        ("endpoint", Some(data)) => Scanned::Endpoint(data.trim().to_owned()),
        (_, Some(_)) => Scanned::OtherData,
        (_, None) => Scanned::NoData,
    }
}

fn refusal() -> Bytes {
    let body = error_body(
        "The MCP server announced a message endpoint outside its configured URL; the gateway cannot route it.",
        "server_error",
        None,
        "upstream_error",
    );
    let mut out = BytesMut::from(&b"event: error\r\ndata: "[..]);
    out.extend_from_slice(&body);
    out.extend_from_slice(b"\r\n\r\n");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn through(chunks: Vec<&'static str>, rewrite: fn(&str) -> Option<String>) -> String {
        let stream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c.as_bytes()))),
        );
        let body = rewrite_first_endpoint(Body::from_stream(stream), rewrite);
        let bytes = body.collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn upper(data: &str) -> Option<String> {
        Some(data.to_uppercase())
    }

    #[tokio::test]
    async fn the_endpoint_event_is_rewritten_even_when_split_across_chunks() {
        let out = through(
            vec![
                ": ping\r\n\r\nevent: endp",
                "oint\r\ndata: /messages/?session_id=ab\r",
                "\n\r\nevent: message\r\ndata: {\"x\":1}\r\n\r\n",
            ],
            upper,
        )
        .await;
        assert_eq!(
            out,
            ": ping\r\n\r\nevent: endpoint\r\ndata: /MESSAGES/?SESSION_ID=AB\r\n\r\nevent: message\r\ndata: {\"x\":1}\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_stream_whose_first_data_is_no_endpoint_passes_untouched() {
        let input = "event: message\ndata: {\"endpoint\":1}\n\nevent: endpoint\ndata: /x\n\n";
        assert_eq!(through(vec![input], upper).await, input);
    }

    #[tokio::test]
    async fn an_endpoint_that_cannot_be_routed_ends_the_stream_with_an_error_event() {
        let out = through(vec!["event: endpoint\ndata: http://evil/x\n\nmore"], |_| {
            None
        })
        .await;
        assert!(out.starts_with("event: error\r\ndata: {\"error\""), "{out}");
        assert!(!out.contains("more"), "{out}");
    }
}
