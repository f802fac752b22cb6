//! One upstream as the proxy sees it: where it is, how to authenticate to it, its timeouts, its
//! own pooled HTTP client, and how a failure to reach it is classified for failover.
//!
//! Each upstream gets its own client because the connect timeout is a property of the
//! connector, and the connector is shared by a client's whole pool.

use std::error::Error as _;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use aigw_config::{UpstreamKind, UpstreamSettings, UpstreamTimeouts};
use axum::body::Body;
use futures::TryFutureExt as _;
use http::{HeaderName, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::attempt::{AttemptError, FailureKind};
use super::probe::HttpProbe;
use crate::error::ApiError;

/// The fixed paths requests are forwarded to, whose URIs each endpoint keeps parsed.
const ROUTED_PATHS: [&str; 6] = [
    "/chat/completions",
    "/messages",
    "/embeddings",
    "/images/generations",
    "/audio/transcriptions",
    "/videos",
];

pub(crate) type HttpsClient = Client<UpstreamConnector, Body>;

pub(crate) struct UpstreamEndpoint {
    pub id: Arc<str>,
    /// `id` as the value of `x-aigw-upstream`, made once (ids are header-safe by validation).
    pub id_header: HeaderValue,
    /// `base_url` without a trailing slash, e.g. `http://127.0.0.1:9001/v1`.
    base_url: String,
    /// The URIs of the model endpoints under `base_url`, parsed once: cloning one is a few
    /// refcounts, where formatting and parsing it per request cost ~2,000 instructions.
    routed_uris: Vec<(&'static str, Uri)>,
    /// `Host` for upstream requests: `base_url`'s authority as written (without userinfo), so
    /// it equals HTTP/2's `:authority`. Sent prebuilt, or hyper-util formats one per request
    /// (~2,300 instructions).
    host: Option<HeaderValue>,
    /// The API this upstream speaks.
    pub kind: UpstreamKind,
    /// The headers every request and probe carries to authenticate (and, for some kinds, to
    /// name the API version): `Authorization: Bearer <api_key>` for `openai`; `x-api-key` and
    /// `anthropic-version` for `anthropic`. Secrets are marked sensitive, so they never show
    /// in a debug dump of headers.
    credentials: Vec<(HeaderName, HeaderValue)>,
    pub timeouts: UpstreamTimeouts,
    client: HttpsClient,
}

impl fmt::Debug for UpstreamEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamEndpoint")
            .field("id", &self.id)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl UpstreamEndpoint {
    pub fn new(settings: &UpstreamSettings) -> Result<Self, String> {
        let secret = |text: String| {
            let mut value = HeaderValue::try_from(text).map_err(|_| {
                format!(
                    "upstream `{}`: api_key is not a valid header value",
                    settings.id
                )
            })?;
            value.set_sensitive(true);
            Ok::<_, String>(value)
        };
        let mut credentials = Vec::with_capacity(2);
        match settings.kind {
            UpstreamKind::OpenAi => {
                if let Some(key) = &settings.api_key {
                    let value = secret(format!("Bearer {}", key.expose()))?;
                    credentials.push((http::header::AUTHORIZATION, value));
                }
            }
            UpstreamKind::Anthropic => {
                if let Some(key) = &settings.api_key {
                    let value = secret(key.expose().to_owned())?;
                    credentials.push((HeaderName::from_static("x-api-key"), value));
                }
                credentials.push((
                    HeaderName::from_static("anthropic-version"),
                    HeaderValue::from_static(crate::providers::anthropic::API_VERSION),
                ));
            }
        }
        let id_header = HeaderValue::from_str(settings.id.as_str())
            .map_err(|_| format!("upstream `{}`: id is not a valid header value", settings.id))?;
        let base_url = settings.base_url.trim_end_matches('/').to_owned();
        let routed_uris = ROUTED_PATHS
            .iter()
            .filter_map(|&path| Some((path, format!("{base_url}{path}").parse().ok()?)))
            .collect();
        let host = base_url
            .parse::<Uri>()
            .ok()
            .and_then(|uri| uri.authority().cloned())
            .and_then(|authority| {
                let host = authority.as_str().rsplit('@').next().unwrap_or_default();
                HeaderValue::from_str(host).ok()
            });
        Ok(Self {
            id: settings.id.as_str().into(),
            id_header,
            base_url,
            routed_uris,
            host,
            kind: settings.kind,
            credentials,
            timeouts: settings.timeouts.clone(),
            client: build_client(settings.timeouts.connect),
        })
    }

    /// The URI of an API path such as `/chat/completions` on this upstream.
    pub fn uri(&self, path: &str) -> Result<Uri, ApiError> {
        if let Some((_, uri)) = self.routed_uris.iter().find(|(p, _)| *p == path) {
            return Ok(uri.clone());
        }
        format!("{}{}", self.base_url, path)
            .parse()
            .map_err(|_| ApiError::Internal)
    }

    /// The `Host` header upstream requests carry.
    pub fn host(&self) -> Option<&HeaderValue> {
        self.host.as_ref()
    }

    /// The headers that authenticate a request to this upstream.
    pub fn credentials(&self) -> &[(HeaderName, HeaderValue)] {
        &self.credentials
    }

    /// The active health probe of this upstream, sharing its connection pool. `path` starting
    /// with `/` is on the upstream's host; otherwise it is relative to `base_url`.
    pub fn probe(&self, path: &str) -> Result<HttpProbe, String> {
        let url = match path.strip_prefix('/') {
            Some(absolute) => {
                let base: Uri = self.base_url.parse().map_err(|_| self.bad_probe(path))?;
                let scheme = base.scheme_str().ok_or_else(|| self.bad_probe(path))?;
                let authority = base.authority().ok_or_else(|| self.bad_probe(path))?;
                format!("{scheme}://{authority}/{absolute}")
            }
            None => format!("{}/{path}", self.base_url),
        };
        let uri = url.parse().map_err(|_| self.bad_probe(path))?;
        Ok(HttpProbe::new(
            uri,
            self.credentials.clone(),
            self.client.clone(),
        ))
    }

    fn bad_probe(&self, path: &str) -> String {
        format!(
            "upstream `{}`: health.path {path:?} does not make a URL",
            self.id
        )
    }

    /// Sends `request` and waits for the response head, within the head timeout and what is
    /// left of the attempt's total deadline.
    pub async fn send(
        &self,
        request: Request<Body>,
        deadline: tokio::time::Instant,
    ) -> Result<Response<Incoming>, AttemptError> {
        let head_deadline = deadline.min(tokio::time::Instant::now() + self.timeouts.response_head);
        match tokio::time::timeout_at(head_deadline, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(self.classify(&err)),
            Err(_) if head_deadline == deadline => {
                Err(self.timeout(FailureKind::HeadTimeout, "total time limit reached"))
            }
            Err(_) => Err(self.timeout(
                FailureKind::HeadTimeout,
                "no response head within the response_head timeout",
            )),
        }
    }

    pub fn timeout(&self, kind: FailureKind, phase: &'static str) -> AttemptError {
        AttemptError::before_first_byte(
            kind,
            ApiError::UpstreamTimeout {
                upstream: self.id.to_string(),
                phase,
            },
        )
    }

    /// A connect that timed out is a timeout (504); any other failure to reach the upstream or
    /// to get its answer is a bad gateway (502). Either way nothing reached the client yet.
    fn classify(&self, err: &hyper_util::client::legacy::Error) -> AttemptError {
        let mut source = err.source();
        while let Some(cause) = source {
            // hyper's "user" errors here are the request body's own (UploadBody's refusals).
            if cause
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_user)
            {
                return AttemptError::before_first_byte(
                    FailureKind::RequestBody,
                    ApiError::BodyUnreadable("the request body failed on its way upstream".into()),
                );
            }
            if let Some(io) = cause.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::TimedOut
            {
                return self.timeout(FailureKind::Connect, "connect timed out");
            }
            source = cause.source();
        }
        let (kind, detail) = if err.is_connect() {
            (FailureKind::Connect, "connection failed")
        } else {
            (FailureKind::Closed, "connection closed before a response")
        };
        AttemptError::before_first_byte(
            kind,
            ApiError::UpstreamUnreachable {
                upstream: self.id.to_string(),
                detail: detail.to_owned(),
            },
        )
    }
}

/// An HTTP/1.1 + HTTP/2 client over TLS (ring, webpki roots) or plain TCP, pooling idle
/// connections for 90 s: upstreams and pass-through backends alike.
pub(crate) fn build_client(connect_timeout: std::time::Duration) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(UpstreamConnector(https))
}

/// hyper-rustls' connector, its connections as [`UpstreamStream`].
#[derive(Clone)]
pub(crate) struct UpstreamConnector(HttpsConnector<HttpConnector>);

type TcpIo = TokioIo<tokio::net::TcpStream>;
type ConnectError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for UpstreamConnector {
    type Response = UpstreamStream;
    type Error = ConnectError;
    type Future = futures::future::MapOk<
        <HttpsConnector<HttpConnector> as tower::Service<Uri>>::Future,
        fn(MaybeHttpsStream<TcpIo>) -> UpstreamStream,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        self.0.call(uri).map_ok(UpstreamStream::from as fn(_) -> _)
    }
}

/// An upstream connection: plain TCP inline, TLS boxed. hyper-rustls' `MaybeHttpsStream` holds
/// a rustls connection inline (~1 KB) even for plain HTTP, and every pooled connection's task
/// carries it: ~1 KB per open upstream connection (BENCHMARKS.md, RSS per open stream).
pub(crate) enum UpstreamStream {
    Plain(TcpIo),
    Tls(Box<MaybeHttpsStream<TcpIo>>),
}

impl From<MaybeHttpsStream<TcpIo>> for UpstreamStream {
    fn from(stream: MaybeHttpsStream<TcpIo>) -> Self {
        match stream {
            MaybeHttpsStream::Http(tcp) => Self::Plain(tcp),
            tls => Self::Tls(Box::new(tls)),
        }
    }
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(s) => s.connected(),
            Self::Tls(s) => s.connected(),
        }
    }
}

impl hyper::rt::Read for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }
}

#[cfg(test)]
mod tests {
    use aigw_config::{BreakerSettings, HealthCheckSettings, UpstreamId, UpstreamKind};

    use super::*;

    fn endpoint(base_url: &str) -> UpstreamEndpoint {
        crate::install_crypto_provider();
        UpstreamEndpoint::new(&UpstreamSettings {
            id: UpstreamId::new("a".into()).unwrap(),
            kind: UpstreamKind::OpenAi,
            base_url: base_url.into(),
            api_key: None,
            timeouts: UpstreamTimeouts::default(),
            health: HealthCheckSettings::default(),
            breaker: BreakerSettings::default(),
        })
        .unwrap()
    }

    #[test]
    fn routed_uris_are_the_same_as_formatted_ones_and_host_is_the_authority() {
        let upstream = endpoint("https://user:pw@api.example.com:8443/openai/v1/");
        for path in ROUTED_PATHS.iter().copied().chain(["/videos/v1?x=1"]) {
            assert_eq!(
                upstream.uri(path).unwrap().to_string(),
                format!("https://user:pw@api.example.com:8443/openai/v1{path}")
            );
        }
        assert_eq!(upstream.host().unwrap(), "api.example.com:8443");
        assert_eq!(endpoint("http://127.0.0.1/v1").host().unwrap(), "127.0.0.1");
    }

    #[test]
    fn a_probe_path_with_a_slash_is_on_the_host_and_one_without_is_under_base_url() {
        let upstream = endpoint("https://api.example.com:8443/openai/v1");
        assert_eq!(
            upstream.probe("/health").unwrap().uri().to_string(),
            "https://api.example.com:8443/health"
        );
        assert_eq!(
            upstream.probe("models").unwrap().uri().to_string(),
            "https://api.example.com:8443/openai/v1/models"
        );
    }
}
