//! Relaying an answer whose body is in another API than the client's: the I/O around a
//! provider adapter's pure translations (providers/). A stream is translated frame by frame
//! as it arrives, never buffered whole; a whole answer is read to its end (within the
//! upstream's timeouts, which the body enforces) and translated once.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Limited};

use super::BoxError;
use crate::providers::StreamTranslator;

/// Most bytes of a whole (not streamed) answer read to translate it.
const MAX_TRANSLATED_BODY: usize = 32 * 1024 * 1024;

/// `body` (an event stream) with every frame put through `translator`.
pub(crate) fn translated_stream(body: Body, translator: impl StreamTranslator) -> Body {
    Body::new(TranslatedStream {
        inner: body,
        translator: Box::new(translator),
        ended: false,
    })
}

/// The whole of `body`, for a translation of the complete answer.
pub(crate) async fn read_whole(body: Body) -> Result<Bytes, BoxError> {
    Ok(Limited::new(body, MAX_TRANSLATED_BODY)
        .collect()
        .await?
        .to_bytes())
}

struct TranslatedStream {
    inner: Body,
    translator: Box<dyn StreamTranslator>,
    ended: bool,
}

impl http_body::Body for TranslatedStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            let out = match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.translator.push(&data),
                    Err(_) => continue, // trailers: nothing the client's API has
                },
                Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
                None => {
                    this.ended = true;
                    this.translator.finish()
                }
            };
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
