//! Which headers cross the gateway to a pass-through backend: never hop-by-hop headers (the
//! proxy engine's one filter, `proxy::hop`, which the model endpoints use too), nor the
//! client's gateway credentials; the backend's configured credentials are injected instead,
//! and the forwarding headers name the client only as far as the peer is trusted
//! (`proxy::forwarded`).

use http::header::{self, HeaderMap};
use http::request::Parts;

use crate::proxy::backends::Backend;
use crate::proxy::forwarded::{ClientPeer, set_forwarding};
use crate::proxy::hop::strip_hop_by_hop;

/// The headers sent to `backend` for a client's request: the end-to-end ones, less the
/// client's `Authorization` (its gateway key) and `Host` (the backend's comes from its URL),
/// with the forwarding headers set from the connection's peer and the backend's configured
/// headers set over them.
pub(super) fn to_backend(client: &Parts, backend: &Backend) -> HeaderMap {
    let mut headers = client.headers.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::HOST);
    set_forwarding(&mut headers, client.extensions.get::<ClientPeer>().copied());
    for (name, value) in &backend.headers {
        headers.insert(name.clone(), value.clone());
    }
    headers
}

/// The headers of a backend's answer as the client gets them.
pub(super) fn to_client(mut headers: HeaderMap) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    headers
}
