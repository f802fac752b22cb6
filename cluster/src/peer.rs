//! Node-to-node calls that the rest of the node adds to the cluster listener, beside Raft's:
//! the routes (`ClusterOptions::peer_routes`) run behind the same cluster-name check as Raft's
//! own calls, and `ClusterNode::call_peer` is the client. Bodies are bincode, as on every
//! node-to-node call; `PeerBody` decodes a request and `PeerReply` encodes an answer, so
//! callers never see the wire format.
//!
//! Used for admin queries that gather from every node (request records' `?cluster=true`);
//! never on the request path.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::raft::{decode, encode};

/// A peer's request decoded from its bincode body; an undecodable body is a 400.
pub struct PeerBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for PeerBody<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        decode(&bytes).map(PeerBody).map_err(|e| {
            (StatusCode::BAD_REQUEST, format!("undecodable request: {e}")).into_response()
        })
    }
}

/// An answer to a peer, encoded as bincode.
pub struct PeerReply<T>(pub T);

impl<T: Serialize> IntoResponse for PeerReply<T> {
    fn into_response(self) -> Response {
        match encode(&self.0) {
            Ok(bytes) => bytes.into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }
}
