//! The backends requests pass through to, resolved once per settings revision: where each
//! lives, the credential headers injected into every request to it, and the pooled HTTP client
//! they share. Rebuilt by `state::apply_settings`; the request path only looks names up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aigw_config::{BackendSettings, Backends};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme, Uri};

use crate::error::ApiError;
use crate::usage::Capability;

/// Connecting to a backend (TCP and TLS) may take this long.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A backend's response head (or WebSocket handshake) may take this long; a body or a socket
/// then streams for as long as both sides keep it open.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(300);

pub(crate) type PassClient = super::HttpsClient;

/// What a client addresses in the path: `/v1/mcp/{name}`, `/v1/agent/{type}`,
/// `/v1/sandboxes/{name}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Mcp,
    Agent,
    Sandbox,
}

impl Kind {
    /// The gateway path the backend's names follow, with its trailing `/`.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Mcp => "/v1/mcp/",
            Self::Agent => "/v1/agent/",
            Self::Sandbox => "/v1/sandboxes/",
        }
    }

    /// As an error message names it.
    pub fn what(self) -> &'static str {
        match self {
            Self::Mcp => "MCP server",
            Self::Agent => "agent type",
            Self::Sandbox => "sandbox",
        }
    }

    pub fn capability(self) -> Capability {
        match self {
            Self::Mcp => Capability::Mcp,
            Self::Agent => Capability::Agent,
            Self::Sandbox => Capability::Sandbox,
        }
    }
}

/// One backend, ready to address.
pub(crate) struct Backend {
    pub name: Arc<str>,
    scheme: Scheme,
    authority: Authority,
    /// The URL's path without a trailing `/` (`""` for a bare host).
    pub base_path: String,
    /// Injected into every request, overriding a client's header of the same name; the values
    /// are marked sensitive.
    pub headers: HeaderMap,
}

impl Backend {
    fn new(settings: &BackendSettings, kind: Kind) -> Result<Self, String> {
        let what = kind.what();
        let name = &settings.name;
        let uri: Uri = settings
            .url
            .parse()
            .map_err(|_| format!("{what} `{name}`: url is not a URI"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(format!("{what} `{name}`: url has no scheme or host"));
        };
        let mut headers = HeaderMap::new();
        for (header, value) in &settings.headers {
            let header = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| format!("{what} `{name}`: invalid header name `{header}`"))?;
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|_| format!("{what} `{name}`: invalid value for header `{header}`"))?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        Ok(Self {
            name: Arc::from(name.as_str()),
            scheme: scheme.clone(),
            authority: authority.clone(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
            headers,
        })
    }

    /// The backend's URI for `rest` (the client's path after the name: empty or starting with
    /// `/`) and `query`.
    pub fn uri(&self, rest: &str, query: Option<&str>) -> Result<Uri, ApiError> {
        self.uri_with_scheme(self.scheme.clone(), rest, query)
    }

    /// The same address as a WebSocket URL (`ws://` for `http://`, `wss://` for `https://`).
    pub fn ws_uri(&self, rest: &str, query: Option<&str>) -> Result<Uri, ApiError> {
        let scheme = if self.scheme == Scheme::HTTPS {
            "wss"
        } else {
            "ws"
        };
        self.uri_with_scheme(scheme.parse().map_err(|_| ApiError::Internal)?, rest, query)
    }

    fn uri_with_scheme(
        &self,
        scheme: Scheme,
        rest: &str,
        query: Option<&str>,
    ) -> Result<Uri, ApiError> {
        let mut path = format!("{}{rest}", self.base_path);
        if path.is_empty() {
            path.push('/');
        }
        if let Some(query) = query {
            path.push('?');
            path.push_str(query);
        }
        Uri::builder()
            .scheme(scheme)
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|_| ApiError::InvalidParam {
                param: "path",
                message: "The request path cannot be forwarded: it is not a valid URI path."
                    .to_owned(),
            })
    }

    /// Whether `uri` (absolute) is on this backend's origin.
    pub fn same_origin(&self, uri: &Uri) -> bool {
        uri.scheme() == Some(&self.scheme) && uri.authority() == Some(&self.authority)
    }
}

/// Every backend of the settings in force, by kind and name, and the client they share.
pub(crate) struct BackendTable {
    mcp_servers: HashMap<String, Arc<Backend>>,
    agents: HashMap<String, Arc<Backend>>,
    sandboxes: HashMap<String, Arc<Backend>>,
    pub client: PassClient,
}

impl BackendTable {
    /// The table of `backends`, with a new client.
    pub fn build(backends: &Backends) -> Result<Self, String> {
        Self::with_client(backends, crate::proxy::build_client(CONNECT_TIMEOUT))
    }

    /// The table of `backends`, keeping `client`'s connection pool.
    pub fn with_client(backends: &Backends, client: PassClient) -> Result<Self, String> {
        let index = |list: &[BackendSettings], kind| -> Result<_, String> {
            list.iter()
                .map(|b| Ok((b.name.clone(), Arc::new(Backend::new(b, kind)?))))
                .collect()
        };
        Ok(Self {
            mcp_servers: index(&backends.mcp_servers, Kind::Mcp)?,
            agents: index(&backends.agents, Kind::Agent)?,
            sandboxes: index(&backends.sandboxes, Kind::Sandbox)?,
            client,
        })
    }

    /// The backend of `kind` called `name`; 404 in OpenAI's shape when there is none.
    pub fn get(&self, kind: Kind, name: &str) -> Result<Arc<Backend>, ApiError> {
        let found = match kind {
            Kind::Mcp => self.mcp_servers.get(name),
            Kind::Agent => self.agents.get(name),
            Kind::Sandbox => self.sandboxes.get(name),
        };
        found.cloned().ok_or_else(|| ApiError::UnknownBackend {
            what: kind.what(),
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use aigw_config::Secret;

    use super::*;

    fn backend(url: &str) -> Backend {
        let settings = BackendSettings {
            name: "fs".into(),
            url: url.into(),
            headers: vec![("X-Key".into(), Secret::new("k".into()))],
        };
        Backend::new(&settings, Kind::Mcp).unwrap()
    }

    #[test]
    fn the_rest_of_the_path_and_the_query_follow_the_base_url() {
        let b = backend("http://127.0.0.1:9000/mcp");
        assert_eq!(b.uri("", None).unwrap(), "http://127.0.0.1:9000/mcp");
        assert_eq!(
            b.uri("/messages/", Some("session_id=1")).unwrap(),
            "http://127.0.0.1:9000/mcp/messages/?session_id=1"
        );
        let bare = backend("https://mcp.example.com");
        assert_eq!(bare.uri("", None).unwrap(), "https://mcp.example.com/");
        assert_eq!(
            bare.ws_uri("/ws", None).unwrap(),
            "wss://mcp.example.com/ws"
        );
        assert_eq!(
            b.ws_uri("", Some("a=1")).unwrap(),
            "ws://127.0.0.1:9000/mcp?a=1"
        );
        assert!(b.headers["x-key"].is_sensitive());
    }

    #[test]
    fn a_path_that_is_no_uri_is_a_400() {
        let b = backend("http://127.0.0.1:9000");
        let err = b.uri("/a b", None).unwrap_err();
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    }
}
