//! Real clusters in one process: each node on its own loopback address with real TCP (Raft)
//! and UDP (gossip) sockets and its own redb data dir.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use aigw_cluster::{
    Advertised, AllowedModels, ClusterError, ClusterNode, ClusterOptions, ClusterTiming, Command,
    KeyId, KeyPatch, KeyRecord, KeySecretHash, NodeId, Outcome, StoreError,
};

fn loopback() -> IpAddr {
    // A random 127.x.y.z per node keeps parallel tests from ever sharing a socket.
    let [a, b, c]: [u8; 3] = rand::random();
    IpAddr::V4(Ipv4Addr::new(127, a.max(1), b, c.clamp(2, 254)))
}

fn timing() -> ClusterTiming {
    ClusterTiming {
        heartbeat: Duration::from_millis(50),
        election_min: Duration::from_millis(250),
        election_max: Duration::from_millis(500),
        snapshot_every: 10_000,
        write_timeout: Duration::from_secs(3),
        gossip_interval: Duration::from_millis(100),
    }
}

struct TestNode {
    options: ClusterOptions,
    node: Option<ClusterNode>,
}

impl TestNode {
    fn node(&self) -> &ClusterNode {
        self.node.as_ref().expect("node is running")
    }

    async fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }

    async fn restart(&mut self) {
        self.stop().await;
        // The store is released once Raft's tasks have dropped it; give them a moment.
        for _ in 0..100 {
            match ClusterNode::start(self.options.clone()).await {
                Ok(node) => {
                    self.node = Some(node);
                    return;
                }
                Err(ClusterError::Store(StoreError::Open { .. }))
                | Err(ClusterError::Bind { .. }) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("restart failed: {e}"),
            }
        }
        panic!("node did not restart");
    }
}

fn bootstrap() -> Command {
    Command::Bootstrap {
        keys: vec![key("key_boot", "sk-bootstrap-1")],
        settings_toml: String::new(),
    }
}

fn key(id: &str, secret: &str) -> KeyRecord {
    KeyRecord {
        id: KeyId::parse(id).unwrap(),
        name: id.into(),
        secret_hash: KeySecretHash::of_secret(secret),
        models: AllowedModels::All,
        enabled: true,
        expires_at: None,
        metadata: BTreeMap::new(),
        created_at: 0,
        revision: 0,
        limits: Default::default(),
        mcp_servers: None,
        records: None,
    }
}

async fn cluster(size: u64, timing: ClusterTiming, dirs: &tempfile::TempDir) -> Vec<TestNode> {
    let addrs: BTreeMap<NodeId, SocketAddr> = (1..=size)
        .map(|id| (id, SocketAddr::new(loopback(), 7001)))
        .collect();
    let mut nodes = Vec::new();
    for (&id, &addr) in &addrs {
        let options = ClusterOptions {
            node_id: id,
            cluster_name: "test".into(),
            listen: addr,
            data_dir: dirs.path().join(format!("node{id}")),
            initial_members: addrs.clone(),
            join: None,
            bootstrap: bootstrap(),
            advertised: Advertised {
                version: "test".into(),
                ..Advertised::default()
            },
            timing: timing.clone(),
            env: aigw_cluster::process_env(),
            peer_routes: axum::Router::new(),
        };
        let node = ClusterNode::start(options.clone()).await.unwrap();
        nodes.push(TestNode {
            options,
            node: Some(node),
        });
    }
    for node in &nodes {
        assert!(
            node.node().wait_for_leader(Duration::from_secs(10)).await,
            "no leader elected"
        );
    }
    nodes
}

/// Waits (bounded) until `check` holds on `node`'s published state.
async fn eventually(
    node: &ClusterNode,
    within: Duration,
    check: impl Fn(&aigw_cluster::StateSnapshot) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check(&node.state().load()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check(&node.state().load())
}

fn has_key(id: &str) -> impl Fn(&aigw_cluster::StateSnapshot) -> bool + '_ {
    move |s| s.keys.get(&KeyId::parse(id).unwrap()).is_some()
}

async fn leader_index(nodes: &[TestNode]) -> usize {
    for _ in 0..200 {
        for (i, n) in nodes.iter().enumerate() {
            if let Some(node) = &n.node
                && node.status().await.state == "leader"
            {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_any_node_reaches_every_node_and_bootstrap_applies_once() {
    let dirs = tempfile::tempdir().unwrap();
    let nodes = cluster(3, timing(), &dirs).await;
    for n in &nodes {
        assert!(eventually(n.node(), Duration::from_secs(5), has_key("key_boot")).await);
    }
    // Written through a follower or the leader alike.
    for (i, n) in nodes.iter().enumerate() {
        let id = format!("key_w{i}");
        let outcome = n
            .node()
            .write(Command::CreateKey {
                key: key(&id, &format!("sk-written-{i}")),
            })
            .await
            .unwrap();
        assert!(matches!(outcome, Outcome::Key(_)));
    }
    for n in &nodes {
        for i in 0..3 {
            assert!(
                eventually(
                    n.node(),
                    Duration::from_secs(1),
                    has_key(&format!("key_w{i}"))
                )
                .await
            );
        }
        assert_eq!(
            n.node().state().load().keys.len(),
            4,
            "bootstrap applied exactly once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_through_node_1_is_gone_on_node_3_within_a_second() {
    let dirs = tempfile::tempdir().unwrap();
    let nodes = cluster(3, timing(), &dirs).await;
    nodes[0]
        .node()
        .write(Command::CreateKey {
            key: key("key_r", "sk-revoke-me"),
        })
        .await
        .unwrap();
    assert!(eventually(nodes[2].node(), Duration::from_secs(1), has_key("key_r")).await);
    let patch = KeyPatch {
        enabled: Some(false),
        ..KeyPatch::default()
    };
    nodes[0]
        .node()
        .write(Command::UpdateKey {
            id: KeyId::parse("key_r").unwrap(),
            patch,
        })
        .await
        .unwrap();
    let revoked = eventually(nodes[2].node(), Duration::from_secs(1), |s| {
        s.keys
            .authenticate("sk-revoke-me")
            .is_some_and(|k| !k.enabled)
    })
    .await;
    assert!(revoked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_dies_a_new_one_is_elected_and_no_acknowledged_write_is_lost() {
    let dirs = tempfile::tempdir().unwrap();
    let mut nodes = cluster(3, timing(), &dirs).await;
    for i in 0..5 {
        nodes[0]
            .node()
            .write(Command::CreateKey {
                key: key(&format!("key_b{i}"), &format!("sk-before-{i}")),
            })
            .await
            .unwrap();
    }
    let old = leader_index(&nodes).await;
    nodes[old].stop().await;
    let survivor = (old + 1) % 3;
    let started = tokio::time::Instant::now();
    for i in 0..5 {
        nodes[survivor]
            .node()
            .write(Command::CreateKey {
                key: key(&format!("key_a{i}"), &format!("sk-after-{i}")),
            })
            .await
            .unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "writes resumed only after {:?}",
        started.elapsed()
    );
    let new = leader_index(&nodes).await;
    assert_ne!(new, old);
    for n in nodes.iter().filter(|n| n.node.is_some()) {
        assert!(eventually(n.node(), Duration::from_secs(2), |s| s.keys.len() == 11).await);
    }
    // The old leader comes back and catches up from the log.
    nodes[old].restart().await;
    assert!(
        eventually(nodes[old].node(), Duration::from_secs(5), |s| s.keys.len()
            == 11)
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_is_brought_back_by_a_snapshot() {
    let dirs = tempfile::tempdir().unwrap();
    let mut nodes = cluster(
        3,
        ClusterTiming {
            snapshot_every: 20,
            ..timing()
        },
        &dirs,
    )
    .await;
    let lagging = (leader_index(&nodes).await + 1) % 3;
    nodes[lagging].stop().await;
    let writer = (lagging + 1) % 3;
    for i in 0..80 {
        nodes[writer]
            .node()
            .write(Command::CreateKey {
                key: key(&format!("key_s{i}"), &format!("sk-snap-{i}")),
            })
            .await
            .unwrap();
    }
    // Wait until the leader has purged the entries the lagging node lacks.
    let leader = leader_index(&nodes).await;
    let mut purged = false;
    for _ in 0..200 {
        if nodes[leader]
            .node()
            .status()
            .await
            .snapshot_index
            .is_some_and(|i| i > 40)
        {
            purged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(purged, "the leader never built a snapshot");
    nodes[lagging].restart().await;
    assert!(
        eventually(nodes[lagging].node(), Duration::from_secs(10), |s| s
            .keys
            .len()
            == 81)
        .await
    );
    let status = nodes[lagging].node().status().await;
    assert!(
        status.snapshot_index.is_some(),
        "caught up without installing a snapshot: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_without_quorum_is_unavailable_within_the_write_timeout() {
    let dirs = tempfile::tempdir().unwrap();
    let mut nodes = cluster(3, timing(), &dirs).await;
    nodes[0].stop().await;
    nodes[1].stop().await;
    let started = tokio::time::Instant::now();
    let result = nodes[2]
        .node()
        .write(Command::CreateKey {
            key: key("key_m", "sk-minority"),
        })
        .await;
    assert!(
        matches!(result, Err(ClusterError::Unavailable(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    let read = nodes[2].node().linearizable_read().await;
    assert!(
        matches!(read, Err(ClusterError::Unavailable(_))),
        "{read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_as_a_voter_and_is_removed() {
    let dirs = tempfile::tempdir().unwrap();
    let first_addr = SocketAddr::new(loopback(), 7001);
    let options = |id: NodeId, addr: SocketAddr, join: Option<SocketAddr>| ClusterOptions {
        node_id: id,
        cluster_name: "test".into(),
        listen: addr,
        data_dir: dirs.path().join(format!("node{id}")),
        initial_members: BTreeMap::new(),
        join,
        bootstrap: bootstrap(),
        advertised: Advertised::default(),
        timing: timing(),
        env: aigw_cluster::process_env(),
        peer_routes: axum::Router::new(),
    };
    let first = ClusterNode::start(options(1, first_addr, None))
        .await
        .unwrap();
    assert!(first.wait_for_leader(Duration::from_secs(5)).await);
    first
        .write(Command::CreateKey {
            key: key("key_j", "sk-join-1"),
        })
        .await
        .unwrap();
    let second = ClusterNode::start(options(
        2,
        SocketAddr::new(loopback(), 7001),
        Some(first_addr),
    ))
    .await
    .unwrap();
    assert!(eventually(&second, Duration::from_secs(10), has_key("key_j")).await);
    let mut voter = false;
    for _ in 0..200 {
        let status = first.status().await;
        if status
            .members
            .iter()
            .any(|m| m.id == 2 && m.raft_role == "voter")
        {
            voter = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(voter, "node 2 never became a voter");
    first.remove_member(2).await.unwrap();
    let status = first.status().await;
    assert!(status.members.iter().all(|m| m.id != 2), "{status:?}");
    // One voter left: it still commits alone.
    first
        .write(Command::CreateKey {
            key: key("key_k", "sk-join-2"),
        })
        .await
        .unwrap();
    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_restarts_with_its_state_and_never_bootstraps_again() {
    let dirs = tempfile::tempdir().unwrap();
    let mut nodes = cluster(1, timing(), &dirs).await;
    let node = nodes[0].node();
    assert!(eventually(node, Duration::from_secs(5), has_key("key_boot")).await);
    node.write(Command::DeleteKey {
        id: KeyId::parse("key_boot").unwrap(),
    })
    .await
    .unwrap();
    node.write(Command::CreateKey {
        key: key("key_x", "sk-restart-1"),
    })
    .await
    .unwrap();
    nodes[0].restart().await;
    let node = nodes[0].node();
    assert!(node.wait_for_leader(Duration::from_secs(5)).await);
    assert!(eventually(node, Duration::from_secs(5), has_key("key_x")).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !has_key("key_boot")(&node.state().load()),
        "bootstrap was applied again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_another_cluster_stops_the_node_with_a_clear_error() {
    let dirs = tempfile::tempdir().unwrap();
    let mut nodes = cluster(1, timing(), &dirs).await;
    nodes[0].stop().await;
    let mut options = nodes[0].options.clone();
    options.cluster_name = "other".into();
    let mut error = None;
    for _ in 0..100 {
        match ClusterNode::start(options.clone()).await {
            Err(ClusterError::Store(StoreError::Open { .. })) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => {
                error = Some(e);
                break;
            }
            Ok(_) => panic!("started on another cluster's data dir"),
        }
    }
    let error = error.expect("never got past the open").to_string();
    assert!(error.contains("belongs to cluster `test`"), "{error}");
    let _: PathBuf = options.data_dir;
}
