//! A response body passed through untouched while its first and last few kilobytes are kept,
//! so that a field the upstream puts near either end (`usage` of an embedding, `duration` of
//! a verbose transcription) can be read when the body ends, without holding the whole body.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};

use super::body::BoxError;

/// How much of each end of a body is kept.
pub(crate) const TAP_WINDOW: usize = 16 * 1024;

/// The ends of a body that has ended. When the body was at most `2 * TAP_WINDOW` long, `head`
/// followed by `tail` is all of it.
pub(crate) struct BodyEnds {
    pub head: Bytes,
    pub tail: Bytes,
}

type OnEnd = Box<dyn FnOnce(BodyEnds) + Send>;

pub(crate) struct TapBody {
    inner: Body,
    head: BytesMut,
    /// A rolling window: the last `TAP_WINDOW` bytes after the head filled up.
    tail: BytesMut,
    on_end: Option<OnEnd>,
}

impl TapBody {
    /// `on_end` runs once, when the body ends without an error; a body that breaks or that
    /// the client abandons reports nothing.
    pub fn wrap(inner: Body, on_end: impl FnOnce(BodyEnds) + Send + 'static) -> Body {
        Body::new(Self {
            inner,
            head: BytesMut::new(),
            tail: BytesMut::new(),
            on_end: Some(Box::new(on_end)),
        })
    }

    fn keep(&mut self, data: &[u8]) {
        let room = TAP_WINDOW.saturating_sub(self.head.len());
        let (to_head, rest) = data.split_at(room.min(data.len()));
        self.head.extend_from_slice(to_head);
        if rest.is_empty() {
            return;
        }
        self.tail.extend_from_slice(rest);
        if self.tail.len() > TAP_WINDOW {
            let excess = self.tail.len() - TAP_WINDOW;
            let _ = self.tail.split_to(excess);
        }
    }

    fn end(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(BodyEnds {
                head: std::mem::take(&mut self.head).freeze(),
                tail: std::mem::take(&mut self.tail).freeze(),
            });
        }
    }
}

impl http_body::Body for TapBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.keep(data);
                }
                if this.inner.is_end_stream() {
                    this.end();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.on_end = None;
                Poll::Ready(Some(Err(err.into())))
            }
            Poll::Ready(None) => {
                this.end();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The number after `"name":` in `text` (the first occurrence), e.g. `prompt_tokens` in an
/// embedding's `usage`, or `duration` in a verbose transcription.
pub(crate) fn number_field(text: &[u8], name: &str) -> Option<f64> {
    let needle = format!("\"{name}\"");
    let at = memchr::memmem::find(text, needle.as_bytes())?;
    let rest = &text[at + needle.len()..];
    let rest = rest
        .trim_ascii_start()
        .strip_prefix(b":")?
        .trim_ascii_start();
    let end = rest
        .iter()
        .position(|b| !(b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E')))
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn a_long_body_passes_whole_and_its_ends_are_kept() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = (0..10u8)
            .map(|i| Ok(Bytes::from(vec![b'a' + i; 8 * 1024])))
            .collect();
        let seen = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&seen);
        let body = TapBody::wrap(Body::from_stream(futures::stream::iter(chunks)), move |e| {
            *sink.lock().unwrap() = Some((e.head, e.tail));
        });
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), 80 * 1024);
        let (head, tail) = seen.lock().unwrap().take().unwrap();
        assert_eq!(&head[..], &all[..TAP_WINDOW]);
        assert_eq!(&tail[..], &all[all.len() - TAP_WINDOW..]);
    }

    #[test]
    fn numbers_are_found_after_their_field_name() {
        let text = br#"{"data":[],"usage":{"prompt_tokens" : 12,"total_tokens":12}}"#;
        assert_eq!(number_field(text, "prompt_tokens"), Some(12.0));
        assert_eq!(
            number_field(br#"{"duration":3.25}"#, "duration"),
            Some(3.25)
        );
        assert_eq!(number_field(br#"{"duration":"x"}"#, "duration"), None);
        assert_eq!(number_field(b"{}", "duration"), None);
    }
}
