//! `GET /admin/v1/upstreams`: every upstream as this node sees it, and as its live peers
//! report it. It reads only the board the upstream actors publish, so it never waits on an
//! actor either.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aigw_actors::{Admission, BreakerState, Upstreams};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::AdminState;

/// Every upstream with its health (active probes), breaker state and since when, outlier
/// counts, requests in flight, latency average, actor restarts, whether this node routes to
/// it now, and each node's view (this node's and the live peers' as gossip reported them).
///
/// ```json
/// {"node_id": 1, "upstreams": [{
///   "id": "vllm-a", "routing": "open", "view": "up",
///   "views": {"1": "up", "2": "down"},
///   "health": {"checks": true, "state": "up", "since_unix_ms": 1767225600000, "for_ms": 5000, "last_failure": null},
///   "breaker": {"state": "closed", "since_unix_ms": 1767225600000, "for_ms": 5000, "open_until_unix_ms": null, "reopenings": 0},
///   "outliers": {"consecutive_failures": 0, "window_requests": 12, "window_failures": 1},
///   "in_flight": 2, "latency_ewma_ms": 840.5, "actor_restarts": 0}]}
/// ```
pub(super) async fn list(
    axum::extract::State(state): axum::extract::State<AdminState>,
) -> axum::Json<Value> {
    axum::Json(upstreams_status(&state.app.proxy.upstreams.load()))
}

fn upstreams_status(board: &Upstreams) -> Value {
    let now = Instant::now();
    let wall = SystemTime::now();
    let peers = board.peer_views();
    let upstreams: Vec<Value> = board
        .iter()
        .map(|handle| {
            let status = handle.status();
            let policy = handle.policy();
            let view = status.view(now, policy);
            let mut views = serde_json::Map::new();
            views.insert(board.node_id().to_string(), view.as_str().into());
            for (node, peer_view) in peers.of(handle.id()) {
                views.insert(node.to_string(), peer_view.as_str().into());
            }
            let open_until = match status.breaker.state {
                BreakerState::Open { until } => Some(unix_ms(until, now, wall)),
                _ => None,
            };
            let (window_requests, window_failures) = status.outliers.recent(now);
            let routing = match handle.admission() {
                Admission::Open => "open",
                Admission::ProbeOnly => "probes-only",
                Admission::Avoided => "avoided",
            };
            json!({
                "id": &**handle.id(),
                "routing": routing,
                "view": view.as_str(),
                "views": views,
                "health": {
                    "checks": policy.health.enabled,
                    "state": status.probes.health.as_str(),
                    "since_unix_ms": unix_ms(status.probes.since, now, wall),
                    "for_ms": millis(now.saturating_duration_since(status.probes.since)),
                    "last_failure": status.probes.last_failure.as_deref(),
                },
                "breaker": {
                    "state": status.breaker.state.as_str(),
                    "since_unix_ms": unix_ms(status.breaker.since, now, wall),
                    "for_ms": millis(now.saturating_duration_since(status.breaker.since)),
                    "open_until_unix_ms": open_until,
                    "reopenings": status.breaker.reopenings,
                },
                "outliers": {
                    "consecutive_failures": status.outliers.consecutive_failures,
                    "window_requests": window_requests,
                    "window_failures": window_failures,
                },
                "in_flight": handle.in_flight(),
                "latency_ewma_ms": status
                    .latency
                    .has_samples()
                    .then(|| (status.latency.millis() * 10.0).round() / 10.0),
                "actor_restarts": handle.restarts(),
            })
        })
        .collect();
    json!({"node_id": board.node_id(), "upstreams": upstreams})
}

/// The wall-clock time of `at` (tokio's clock) in Unix milliseconds, `now` and `wall` being
/// the same moment on both clocks.
fn unix_ms(at: Instant, now: Instant, wall: SystemTime) -> u64 {
    let wall = if at <= now {
        wall.checked_sub(now - at)
    } else {
        wall.checked_add(at - now)
    };
    wall.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, millis)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use aigw_actors::UpstreamView;

    use super::*;

    const CONFIG: &str = r#"
[node]
id = 4
api_listen = "127.0.0.1:0"

[[bootstrap.upstreams]]
id = "a"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
health = { enabled = false }

[[bootstrap.upstreams]]
id = "b"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
health = { enabled = false }
"#;

    #[tokio::test]
    async fn every_upstream_is_listed_with_its_state_and_each_nodes_view() {
        crate::install_crypto_provider();
        let config = aigw_config::parse_with_env(CONFIG, "test.toml", &|_| None).unwrap();
        let cluster = aigw_cluster::ClusterState::new(aigw_cluster::StateSnapshot::from_bootstrap(
            &config.bootstrap,
        ));
        let (state, actors) = crate::state::build(&config, "status-test", cluster)
            .await
            .unwrap();
        let board = state.proxy.upstreams.load_full();
        board.set_peer_views(BTreeMap::from([(
            7,
            BTreeMap::from([("a".to_owned(), UpstreamView::Down)]),
        )]));

        let status = upstreams_status(&board);
        assert_eq!(status["node_id"], 4);
        let upstreams = status["upstreams"].as_array().unwrap();
        assert_eq!(upstreams.len(), 2);
        let a = &upstreams[0];
        assert_eq!(a["id"], "a");
        assert_eq!(
            a["routing"], "open",
            "one peer is below the default quorum of 2"
        );
        assert_eq!(a["view"], "unknown");
        assert_eq!(a["views"], json!({"4": "unknown", "7": "down"}));
        assert_eq!(a["health"]["checks"], false);
        assert_eq!(a["health"]["state"], "unknown");
        assert_eq!(a["breaker"]["state"], "closed");
        assert!(a["breaker"]["since_unix_ms"].as_u64().unwrap() > 1_700_000_000_000);
        assert_eq!(a["breaker"]["open_until_unix_ms"], Value::Null);
        assert_eq!(a["in_flight"], 0);
        assert_eq!(a["latency_ewma_ms"], Value::Null);
        assert_eq!(a["actor_restarts"], 0);
        assert_eq!(upstreams[1]["views"], json!({"4": "unknown"}));
        actors.stop().await;
    }

    #[test]
    fn instants_map_to_wall_clock_milliseconds_both_ways() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(unix_ms(now, now, wall), 1_000_000);
        assert_eq!(unix_ms(now - Duration::from_secs(2), now, wall), 998_000);
        assert_eq!(
            unix_ms(now + Duration::from_millis(1_500), now, wall),
            1_001_500
        );
    }
}
