//! `/v1/mcp/{server}/...`: the MCP proxy, for both HTTP transports.
//!
//! - Streamable HTTP: `POST` carries JSON-RPC and is answered with JSON or an SSE stream,
//!   `GET` opens the server's SSE stream, `DELETE` ends the session; all relayed as they come.
//! - The older SSE transport: `GET .../sse` streams events, the first of which (`endpoint`)
//!   names where to POST messages; that URL is rewritten to point back through the gateway
//!   (sse_endpoint.rs), and the POSTs are relayed.
//!
//! Sessions live on the MCP server. The session id the client gets (the `Mcp-Session-Id`
//! header, or the `session_id` query parameter of the SSE transport) is signed_id.rs's: it
//! names the server and the server's own id, bound to the calling key. Any node can so relay
//! any follow-up, with the server's id restored, and no shared state; an id altered, forged,
//! made for another server or used with another key is a 404.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Uri};

use super::{
    Target, admit_call, authenticate, finish, forward, hop, query, recorded, sse_endpoint,
};
use crate::error::ApiError;
use crate::proxy::backends::{Backend, Kind};
use crate::signed_id::IdSigner;
use crate::state::AppState;

/// The prefix of the session ids handed to clients.
const SESSION_PREFIX: &str = "mcp";
static MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// The query parameters the SSE transport's servers name the session with.
const SESSION_PARAMS: [&str; 2] = ["session_id", "sessionId"];
/// How much of an unknown session id an error message repeats.
const MAX_ID_SHOWN: usize = 128;

pub(super) async fn handle(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let target = Target::of(Kind::Mcp, &parts.uri)?;
    let key = authenticate(&state, &mut parts, false).await?;
    let backends = state.proxy.backends.load_full();
    let backend = backends.get(Kind::Mcp, &target.name)?;
    if !key.may_use_mcp_server(&target.name) {
        return Err(ApiError::BackendNotAllowed {
            what: Kind::Mcp.what(),
            name: target.name.clone(),
        });
    }
    let sessions = Sessions {
        signer: state.ids.clone(),
        key_id: key.id.as_str().to_owned(),
        server: target.name.clone(),
    };
    let mut headers = hop::to_backend(&parts, &backend);
    if let Some(id) = parts.headers.get(&MCP_SESSION_ID) {
        let id = id.to_str().map_err(|_| sessions.unknown("(not text)"))?;
        headers.insert(MCP_SESSION_ID.clone(), sessions.open_header(id)?);
    }
    let query = target
        .query
        .as_deref()
        .map(|q| query::rewrite(q, &SESSION_PARAMS, |id| sessions.open(id)))
        .transpose()?;
    let admission = admit_call(&state, &key).await?;
    let uri = backend.uri(&target.rest, query.as_deref())?;
    let upstream_path = uri.path().to_owned();
    let opens_stream = parts.method == Method::GET;
    let body = recorded(&parts, body);
    let answer = forward::send(&backends.client, &backend, parts.method, uri, headers, body)
        .await
        .map(|response| present(response, sessions, backend, upstream_path, opens_stream));
    finish(&state, &key, Kind::Mcp, &target, admission, answer)
}

/// The server's answer with its session ids replaced by signed ones: the `Mcp-Session-Id`
/// header, and on a stream the first `endpoint` event of the SSE transport.
fn present(
    mut response: Response,
    sessions: Sessions,
    backend: Arc<Backend>,
    upstream_path: String,
    opens_stream: bool,
) -> Response {
    if let Some(id) = response.headers().get(&MCP_SESSION_ID) {
        match id.to_str().ok().filter(|id| is_session_id(id)) {
            Some(id) => {
                let signed = sessions.sign(id);
                let value = HeaderValue::try_from(signed).expect("signed ids are header-safe");
                response.headers_mut().insert(MCP_SESSION_ID.clone(), value);
            }
            None => {
                // Not a valid session id (MCP allows visible ASCII only): nothing to route by.
                response.headers_mut().remove(&MCP_SESSION_ID);
            }
        }
    }
    let event_stream = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if opens_stream && event_stream {
        // The rewritten stream has another length.
        response.headers_mut().remove(CONTENT_LENGTH);
        let body = std::mem::take(response.body_mut());
        *response.body_mut() = sse_endpoint::rewrite_first_endpoint(body, move |data| {
            gateway_endpoint(&backend, &upstream_path, data, |id| sessions.sign(id))
        });
    }
    response
}

/// Session ids for one key and one server.
struct Sessions {
    signer: IdSigner,
    key_id: String,
    server: String,
}

impl Sessions {
    fn sign(&self, upstream_id: &str) -> String {
        self.signer
            .sign(SESSION_PREFIX, &self.key_id, &self.server, upstream_id)
    }

    /// The server's own session id behind `id`, if the gateway handed `id` to this key for
    /// this server.
    fn open(&self, id: &str) -> Result<String, ApiError> {
        let named = self
            .signer
            .verify(SESSION_PREFIX, &self.key_id, id)
            .ok_or_else(|| self.unknown(id))?;
        if named.upstream != self.server || !is_session_id(&named.upstream_id) {
            return Err(self.unknown(id));
        }
        Ok(named.upstream_id)
    }

    fn open_header(&self, id: &str) -> Result<HeaderValue, ApiError> {
        let upstream_id = self.open(id)?;
        HeaderValue::try_from(upstream_id).map_err(|_| self.unknown(id))
    }

    fn unknown(&self, id: &str) -> ApiError {
        let shown: String = id.chars().take(MAX_ID_SHOWN).collect();
        ApiError::UnknownId {
            what: "MCP session",
            id: shown,
        }
    }
}

/// MCP session ids are visible ASCII (0x21 to 0x7E).
fn is_session_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The gateway URL for the message endpoint `data` the SSE transport announced (relative to
/// `upstream_path` on `backend`, or absolute on its origin), with its session ids signed.
/// `None` for an endpoint outside the backend's URL, which the gateway could not route.
fn gateway_endpoint(
    backend: &Backend,
    upstream_path: &str,
    data: &str,
    sign: impl Fn(&str) -> String,
) -> Option<String> {
    let path_and_query = if data.starts_with("http://") || data.starts_with("https://") {
        let uri: Uri = data.parse().ok()?;
        if !backend.same_origin(&uri) {
            return None;
        }
        uri.path_and_query()?.as_str().to_owned()
    } else if data.starts_with('/') {
        data.to_owned()
    } else {
        let dir = &upstream_path[..=upstream_path.rfind('/')?];
        format!("{dir}{data}")
    };
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query.as_str(), None),
    };
    if path
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
    {
        return None;
    }
    let rest = path.strip_prefix(backend.base_path.as_str())?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let mut url = format!("{}{}{rest}", Kind::Mcp.prefix(), backend.name);
    if let Some(query) = query {
        let signed = query::rewrite(query, &SESSION_PARAMS, |id| Ok::<_, ()>(sign(id))).ok()?;
        url.push('?');
        url.push_str(&signed);
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use aigw_config::{BackendSettings, Backends};

    use super::*;
    use crate::proxy::BackendTable;

    fn backend(url: &str) -> Arc<Backend> {
        crate::install_crypto_provider();
        let backends = Backends {
            mcp_servers: vec![BackendSettings {
                name: "fs".into(),
                url: url.into(),
                headers: vec![],
            }],
            ..Backends::default()
        };
        let table = BackendTable::build(&backends).unwrap();
        table.get(Kind::Mcp, "fs").unwrap().clone()
    }

    fn sign(id: &str) -> String {
        format!("S({id})")
    }

    #[test]
    fn the_announced_endpoint_leads_back_through_the_gateway_with_its_session_signed() {
        let root = backend("http://127.0.0.1:9000");
        let ok = |data| gateway_endpoint(&root, "/sse", data, sign);
        assert_eq!(
            ok("/messages/?session_id=abc").as_deref(),
            Some("/v1/mcp/fs/messages/?session_id=S(abc)")
        );
        assert_eq!(
            ok("messages?sessionId=abc&x=1").as_deref(),
            Some("/v1/mcp/fs/messages?sessionId=S(abc)&x=1")
        );
        assert_eq!(
            ok("http://127.0.0.1:9000/m?session_id=a").as_deref(),
            Some("/v1/mcp/fs/m?session_id=S(a)")
        );
        assert_eq!(ok("http://evil.example/m?session_id=a"), None);
        assert_eq!(ok("/a/../../etc"), None);

        let under = backend("http://127.0.0.1:9000/tools");
        let at = |data| gateway_endpoint(&under, "/tools/sse", data, sign);
        assert_eq!(
            at("/tools/messages/?session_id=1").as_deref(),
            Some("/v1/mcp/fs/messages/?session_id=S(1)")
        );
        assert_eq!(at("messages").as_deref(), Some("/v1/mcp/fs/messages"));
        assert_eq!(at("/other/messages"), None);
        assert_eq!(at("/toolsbox/messages"), None);
    }

    #[test]
    fn a_session_id_opens_only_for_its_key_and_server() {
        let signer = IdSigner::new(b"secret for the tests");
        let sessions = |key: &str, server: &str| Sessions {
            signer: signer.clone(),
            key_id: key.into(),
            server: server.into(),
        };
        let id = sessions("key_a", "fs").sign("upstream-session-1");
        assert!(id.starts_with("mcp_"));
        assert_eq!(
            sessions("key_a", "fs").open(&id).unwrap(),
            "upstream-session-1"
        );
        let refused = |s: Sessions, id: &str| s.open(id).unwrap_err().status().as_u16();
        assert_eq!(refused(sessions("key_b", "fs"), &id), 404);
        assert_eq!(refused(sessions("key_a", "git"), &id), 404);
        let mut tampered = id.clone();
        tampered.pop();
        tampered.push(if id.ends_with('0') { '1' } else { '0' });
        assert_eq!(refused(sessions("key_a", "fs"), &tampered), 404);
        assert_eq!(refused(sessions("key_a", "fs"), "garbage"), 404);
    }
}
