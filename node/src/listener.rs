//! Accepting client connections and keeping each one to a bounded life unless it makes
//! progress. Both listeners (the API and the admin API) serve through [`serve`].
//!
//! A client that opens connections and sends nothing, half a request head, or a body shorter
//! than its `Content-Length` must not hold a socket (and a file descriptor) for ever:
//! - the request head must arrive within `header_read_timeout` (hyper's HTTP/1 timer);
//! - a request body may pause at most `body_idle_timeout` between two frames ([`IdleBody`],
//!   wrapped around every request body before any handler sees it, so buffered, multipart
//!   and passed-through bodies all have it; the handler answers 408 `request_timeout`);
//! - a connection with no request in flight for `keep_alive_timeout` is closed, before its
//!   first request too (the HTTP/1-or-2 sniffing read has no timer of its own);
//! - at most `max_connections` are open per listener. Over it, the newest is answered 503 and
//!   closed at once; the connections already served go on. The admin listener has its own
//!   budget, so a flood on the API listener leaves the admin API answering.
//!
//! A connection's place is held by its I/O object, so an upgraded connection (a WebSocket)
//! keeps its place until its socket closes. Every request carries the peer's address as
//! axum's `ConnectInfo<SocketAddr>`, and as a [`ClientPeer`] that says whether the peer is one
//! of `server.trusted_proxies`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use aigw_config::CidrBlock;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

use crate::error::{BodyIdleTimeout, error_body};
use crate::proxy::forwarded::ClientPeer;

/// How long client connections may take, and how many may be open, on one listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `stop` turns true, then lets every connection finish
/// its requests (each shuts down gracefully) and returns. Aborting this task aborts the
/// connections too: they live in its `JoinSet`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    trusted_proxies: Arc<[CidrBlock]>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors (or another per-connection error): keep the loop,
                // give closing connections a moment instead of spinning on the error.
                tracing::warn!(%error, "accept error");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
            shed(stream, peer);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = ClientPeer {
            addr: peer.ip(),
            trusted_proxy: trusted_proxies
                .iter()
                .any(|block| block.contains(peer.ip())),
        };
        connections.spawn(serve_connection(
            builder.clone(),
            Placed {
                stream,
                _place: place,
            },
            peer,
            client,
            router.clone(),
            limits,
            stop.clone(),
        ));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Answers 503 and closes: a write into the socket's empty send buffer, never a wait. The
/// connection never reaches the router.
fn shed(stream: TcpStream, peer: SocketAddr) {
    tracing::warn!(%peer, "too many open connections; shed the newest");
    let body = error_body(
        "The gateway has too many open connections; retry shortly.",
        "server_error",
        None,
        "too_many_connections",
    );
    let mut answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    let _ = stream.try_write(&answer);
}

/// One connection: served until it ends, is idle for the keep-alive timeout, or the node
/// stops (then its requests in flight finish first).
async fn serve_connection(
    builder: auto::Builder<TokioExecutor>,
    stream: Placed,
    peer: SocketAddr,
    client: ClientPeer,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let (in_flight, mut idle) = watch::channel(0usize);
    let service = ConnectionService {
        router,
        peer,
        client,
        in_flight: Arc::new(in_flight),
        body_idle: limits.body_idle_timeout,
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "client connection ended with an error");
                }
                return;
            }
            () = idle_for(&mut idle, limits.keep_alive_timeout), if !closing => {
                tracing::debug!(%peer, "closing an idle client connection");
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = stop.wait_for(|stopped| *stopped), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Resolves once no request has been in flight for `limit`.
async fn idle_for(in_flight: &mut watch::Receiver<usize>, limit: Duration) {
    loop {
        if in_flight.wait_for(|n| *n == 0).await.is_err() {
            return;
        }
        if tokio::time::timeout(limit, in_flight.changed())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The service of one connection: the router, with the peer's address and the body idle
/// limit added to every request and the request counted in flight until its response body
/// is done. The router is the one built at start, shared by reference count: serving a
/// `Router` through `axum::serve` without `into_make_service` rebuilt its routes for every
/// connection, ~11 KB held for the connection's life (BENCHMARKS.md, RSS per open stream).
#[derive(Clone)]
struct ConnectionService {
    router: Router,
    peer: SocketAddr,
    client: ClientPeer,
    in_flight: Arc<watch::Sender<usize>>,
    body_idle: Duration,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<CountedBody>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let counted = InFlight::begin(&self.in_flight);
        let idle = self.body_idle;
        // An HTTP/1 request with a body: whether the handler read it to its end.
        let read_to_end = (request.version() <= http::Version::HTTP_11
            && !request.body().is_end_stream())
        .then(|| Arc::new(AtomicBool::new(false)));
        let ended = read_to_end.clone();
        let mut request = request.map(|body| Body::new(IdleBody::new(body, idle, ended)));
        request.extensions_mut().insert(ConnectInfo(self.peer));
        request.extensions_mut().insert(self.client);
        let router = self.router.clone();
        Box::pin(async move {
            let mut response = router.oneshot(request).await?;
            // Answered before the body was read (a refusal, a timeout): hyper closes the
            // connection after this answer, since the rest of the body is still on it. Say so,
            // or a client that reuses the connection loses its next request.
            if read_to_end.is_some_and(|ended| !ended.load(Ordering::Acquire)) {
                response
                    .headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response.map(|body| CountedBody {
                body,
                _in_flight: counted,
            }))
        })
    }
}

/// One request in flight on its connection, from the router's call until its response body
/// is done or dropped.
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn begin(count: &Arc<watch::Sender<usize>>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// A response body that keeps its request counted in flight.
struct CountedBody {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails with [`BodyIdleTimeout`] when no frame comes for `idle` while
/// it is being read.
pub(crate) struct IdleBody<B> {
    inner: B,
    idle: Duration,
    /// Armed while a read is pending; kept between pauses to reuse its allocation.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    /// Set once the body has been read to its end.
    ended: Option<Arc<AtomicBool>>,
}

impl<B> IdleBody<B> {
    pub(crate) fn new(inner: B, idle: Duration, ended: Option<Arc<AtomicBool>>) -> Self {
        Self {
            inner,
            idle,
            timer: None,
            armed: false,
            ended,
        }
    }
}

impl<B> HttpBody for IdleBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            if let Some(ended) = &this.ended
                && (frame.is_none() || this.inner.is_end_stream())
            {
                ended.store(true, Ordering::Release);
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if !this.armed {
            let deadline = Instant::now() + this.idle;
            match &mut this.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            this.armed = true;
        }
        let Some(timer) = &mut this.timer else {
            return Poll::Pending; // armed above
        };
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyIdleTimeout(this.idle))))),
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

/// A client's socket with its place under the listener's cap, given back when it closes.
struct Placed {
    stream: TcpStream,
    _place: OwnedSemaphorePermit,
}

impl AsyncRead for Placed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Placed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_pauses_longer_than_the_limit_fails_and_one_that_keeps_coming_does_not() {
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let mut body = IdleBody::new(
            http_body_util::StreamBody::new(rx),
            Duration::from_secs(2),
            None,
        );
        let feeder = tokio::spawn(async move {
            use futures::SinkExt as _;
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .unwrap();
            }
            // then silence, the sender kept open
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        for _ in 0..3 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "x");
        }
        let started = Instant::now();
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.is::<BodyIdleTimeout>(), "{error}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
            "{waited:?}"
        );
        feeder.abort();
    }
}
