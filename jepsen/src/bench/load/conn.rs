//! Client connections of the load generator: one HTTP/1.1 connection per worker (like an SDK
//! with keep-alive), or one HTTP/2 (h2c, prior knowledge) connection carrying many streams.
//!
//! Raw hyper connections rather than a pooled client: a worker owns its connection, so the
//! concurrency the report names is exactly the number of requests in flight.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// A connection that sends one request at a time.
pub(crate) struct Http1(http1::SendRequest<Full<Bytes>>);

impl Http1 {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        // The connection task ends when the sender is dropped or the peer closes.
        tokio::spawn(connection);
        Ok(Self(sender))
    }

    pub async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> anyhow::Result<Response<Incoming>> {
        self.0.ready().await?;
        Ok(self.0.send_request(request).await?)
    }
}

/// A multiplexed connection; clones share it.
#[derive(Clone)]
pub(crate) struct Http2(http2::SendRequest<Full<Bytes>>);

impl Http2 {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self(sender))
    }

    pub async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> anyhow::Result<Response<Incoming>> {
        self.0.ready().await?;
        Ok(self.0.send_request(request).await?)
    }
}
