//! Raft RPC and every other node-to-node call: bincode bodies POSTed over HTTP/1.1 to the
//! peer's cluster address, from a socket bound to this node's own cluster address (so a
//! partition made with iptables between 127.0.0.x addresses really cuts the link).

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Node, NodeId, TypeConfig, decode, encode};

/// The header that names the cluster on every node-to-node call; a peer of another cluster
/// is refused.
pub(crate) const CLUSTER_HEADER: &str = "x-aigw-cluster";

/// How a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Could not connect: the peer is down or cut off.
    #[error("peer {0} is unreachable: {1}")]
    Unreachable(String, String),
    /// Connected, but the exchange failed or timed out.
    #[error("call to peer {0} failed: {1}")]
    Failed(String, String),
}

/// A client for calls to peers. Cloning shares the connection pool.
#[derive(Clone)]
pub(crate) struct PeerClient {
    client: Client<HttpConnector, Full<Bytes>>,
    cluster_name: String,
}

impl PeerClient {
    pub fn new(local_ip: IpAddr, cluster_name: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_local_address(Some(local_ip));
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            client,
            cluster_name: cluster_name.to_owned(),
        }
    }

    /// POSTs `request` to `path` on `addr` and decodes the answer, within `timeout`.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let failed = |e: String| PeerError::Failed(addr.to_owned(), e);
        let body = encode(request).map_err(|e| failed(e.to_string()))?;
        let http_request = http::Request::post(format!("http://{addr}{path}"))
            .header(CLUSTER_HEADER, &self.cluster_name)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| failed(e.to_string()))?;
        let exchange = async {
            let response = self.client.request(http_request).await.map_err(|e| {
                if e.is_connect() {
                    PeerError::Unreachable(addr.to_owned(), e.to_string())
                } else {
                    failed(e.to_string())
                }
            })?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| failed(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(failed(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                )));
            }
            decode(&bytes).map_err(|e| failed(e.to_string()))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| failed(format!("no answer within {timeout:?}")))?
    }
}

/// openraft's factory of per-peer connections.
pub(crate) struct Network {
    peers: PeerClient,
}

impl Network {
    pub fn new(peers: PeerClient) -> Self {
        Self { peers }
    }
}

pub(crate) struct PeerConnection {
    peers: PeerClient,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        PeerConnection {
            peers: self.peers.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

impl PeerConnection {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Resp, RaftError<NodeId, E>> = self
            .peers
            .call(&self.addr, path, request, option.hard_ttl())
            .await
            .map_err(|e| match e {
                PeerError::Unreachable(..) => RPCError::Unreachable(Unreachable::new(&e)),
                PeerError::Failed(..) => RPCError::Network(NetworkError::new(&e)),
            })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.rpc("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.rpc("/raft/vote", &rpc, &option).await
    }
}
