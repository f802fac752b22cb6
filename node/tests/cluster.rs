//! Three real nodes in one process, each on its own loopback address with its own Raft store:
//! keys and settings written through any node's admin API serve on every node's API; video
//! jobs are listed, on any node, only to the key that created them.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use aigw::RunningNode;
use aigw_jepsen::mock::{MockBehavior, MockServer};
use common::*;
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "admin-token-for-tests";
/// A second key, for what one key must not see of another's.
const OTHER_KEY: &str = "sk-cluster-other-0002";
/// A key that never creates anything.
const IDLE_KEY: &str = "sk-cluster-idle-0003";

fn node_config(id: u64, ips: &[IpAddr], mock: &MockServer) -> String {
    format!(
        r#"
{sections}
[admin]
token = "{ADMIN_TOKEN}"

[[bootstrap.upstreams]]
id = "mock-a"
kind = "openai"
base_url = "http://{mock}/v1"

[[bootstrap.models]]
name = "chat-default"
targets = [{{ upstream = "mock-a", model = "upstream-model-x" }}]

[[bootstrap.models]]
name = "video"
targets = [{{ upstream = "mock-a", model = "video-gen-x" }}]

[[bootstrap.keys]]
name = "boot"
secret = "{KEY}"

[[bootstrap.keys]]
name = "other"
secret = "{OTHER_KEY}"

[[bootstrap.keys]]
name = "idle"
secret = "{IDLE_KEY}"
"#,
        sections = cluster_node_sections(id, ips, "test"),
        mock = mock.addr(),
    )
}

async fn three_nodes(mock: &MockServer) -> Vec<RunningNode> {
    let ips: Vec<IpAddr> = (0..3).map(|_| loopback()).collect();
    let texts: Vec<String> = (1..=3).map(|id| node_config(id, &ips, mock)).collect();
    let dirs: Vec<_> = (0..3).map(|_| fresh_data_dir()).collect();
    start_three(&texts, &dirs).await
}

fn admin(node: &RunningNode, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    admin_request(node, ADMIN_TOKEN, method, path)
}

/// Polls `check` every 20 ms for at most `within`; true once it holds.
async fn within<F, Fut>(within: Duration, check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn chat_status(node: &RunningNode, key: &str, model: &str) -> u16 {
    chat(
        node,
        key,
        json!({"model": model, "messages": user_message()}),
    )
    .await
    .status()
    .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_written_through_one_node_work_and_are_revoked_on_every_node_within_a_second() {
    let mock = mock(MockBehavior::default()).await;
    let nodes = three_nodes(&mock).await;
    for node in &nodes {
        assert_eq!(
            chat_status(node, KEY, "chat-default").await,
            200,
            "bootstrap key"
        );
    }

    let created: Value = admin(&nodes[2], reqwest::Method::POST, "/keys")
        .json(&json!({"name": "team-a", "models": ["chat-default"], "metadata": {"team": "a"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["secret"]
        .as_str()
        .expect("the secret is returned once")
        .to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(
        within(Duration::from_secs(1), || async {
            chat_status(&nodes[0], &secret, "chat-default").await == 200
        })
        .await,
        "a key created through node 3 did not work on node 1 within 1 s"
    );

    let listed: Value = admin(&nodes[1], reqwest::Method::GET, "/keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&id.as_str()));
    assert!(
        listed.to_string().find(&secret).is_none(),
        "a listing never shows a secret"
    );

    let patched = admin(&nodes[0], reqwest::Method::PATCH, &format!("/keys/{id}"))
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    assert!(
        within(Duration::from_secs(1), || async {
            chat_status(&nodes[2], &secret, "chat-default").await == 401
        })
        .await,
        "a key revoked through node 1 still worked on node 3 after 1 s"
    );
    let refused = chat(
        &nodes[2],
        &secret,
        json!({"model": "chat-default", "messages": user_message()}),
    )
    .await;
    assert_openai_error(refused, 401, "api_key_disabled").await;

    let deleted = admin(&nodes[1], reqwest::Method::DELETE, &format!("/keys/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let gone = admin(&nodes[2], reqwest::Method::GET, &format!("/keys/{id}"))
        .send()
        .await
        .unwrap();
    assert_openai_error(gone, 404, "not_found").await;

    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_written_through_any_node_change_routing_on_every_node() {
    let mock = mock(MockBehavior::default()).await;
    let nodes = three_nodes(&mock).await;
    let current: Value = admin(&nodes[1], reqwest::Method::GET, "/settings")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let revision = current["revision"].as_u64().unwrap();
    assert_eq!(current["settings"]["models"][0]["name"], "chat-default");

    let document = format!(
        "[[upstreams]]\nid = \"mock-a\"\nkind = \"openai\"\nbase_url = \"http://{}/v1\"\n\n[[models]]\nname = \"chat-default\"\ntargets = [{{ upstream = \"mock-a\", model = \"x\" }}]\n\n[[models]]\nname = \"second-model\"\ntargets = [{{ upstream = \"mock-a\", model = \"y\" }}]\n",
        mock.addr()
    );
    let stale = admin(&nodes[0], reqwest::Method::PUT, "/settings")
        .json(&json!({"toml": document, "expected_revision": revision + 100}))
        .send()
        .await
        .unwrap();
    assert_openai_error(stale, 409, "conflict").await;
    let invalid = admin(&nodes[0], reqwest::Method::PUT, "/settings")
        .body("[[models]]\nname = \"m\"\ntargets = [{ upstream = \"nope\", model = \"x\" }]\n")
        .send()
        .await
        .unwrap();
    let body = assert_openai_error(invalid, 400, "invalid_request").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("models[0].targets[0].upstream"),
        "{body}"
    );

    let written = admin(&nodes[0], reqwest::Method::PUT, "/settings")
        .json(&json!({"toml": document, "expected_revision": revision}))
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 200);
    for node in &nodes {
        assert!(
            within(Duration::from_secs(3), || async {
                chat_status(node, KEY, "second-model").await == 200
            })
            .await,
            "node at {} did not pick up the new model",
            node.api_addr()
        );
    }
    let upstreams: Value = admin(&nodes[2], reqwest::Method::GET, "/upstreams")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(upstreams.to_string().contains("mock-a"), "{upstreams}");

    let status: Value = admin(&nodes[1], reqwest::Method::GET, "/cluster")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["members"].as_array().unwrap().len(), 3, "{status}");
    assert!(status["leader"].is_u64(), "{status}");
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_wants_its_token_and_a_minority_write_is_503_within_the_write_timeout() {
    let mock = mock(MockBehavior::default()).await;
    let mut nodes = three_nodes(&mock).await;
    let anonymous = client()
        .get(format!(
            "http://{}/admin/v1/keys",
            nodes[0].admin_addr().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_openai_error(anonymous, 401, "invalid_admin_token").await;
    let wrong = client()
        .get(format!(
            "http://{}/admin/v1/keys",
            nodes[0].admin_addr().unwrap()
        ))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_openai_error(wrong, 401, "invalid_admin_token").await;
    let malformed = admin(&nodes[0], reqwest::Method::POST, "/keys")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_openai_error(malformed, 400, "invalid_request").await;

    let survivor = nodes.remove(2);
    for node in nodes {
        node.shutdown().await;
    }
    let started = tokio::time::Instant::now();
    let refused = admin(&survivor, reqwest::Method::POST, "/keys")
        .json(&json!({"name": "minority"}))
        .send()
        .await
        .unwrap();
    assert_openai_error(refused, 503, "cluster_unavailable").await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    // The data plane keeps serving from its snapshot.
    assert_eq!(chat_status(&survivor, KEY, "chat-default").await, 200);
    survivor.shutdown().await;
}

/// The data dir holds the settings document, literal credentials included: nobody but the
/// node's user may read it, whatever the process's umask.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_nodes_data_dir_is_0700_and_its_stores_0600() {
    use std::os::unix::fs::PermissionsExt;

    let mock = mock(MockBehavior::default()).await;
    let data_dir = fresh_data_dir().join("not-yet-created");
    let node = node_in(&config_text(&mock.addr().to_string(), "", ""), &data_dir).await;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data_dir), 0o700, "data dir");
    assert_eq!(mode(&data_dir.join("raft.redb")), 0o600, "raft.redb");
    assert_eq!(
        mode(&data_dir.join("quota-marks.redb")),
        0o600,
        "quota-marks.redb"
    );
    node.shutdown().await;
}

async fn create_video(node: &RunningNode, key: &str, prompt: &str) -> String {
    let response = client()
        .post(url(node, "/v1/videos"))
        .bearer_auth(key)
        .json(&json!({"model": "video", "prompt": prompt}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let job: Value = response.json().await.unwrap();
    job["id"].as_str().unwrap().to_owned()
}

async fn list_videos(node: &RunningNode, key: &str) -> Value {
    let response = client()
        .get(url(node, "/v1/videos"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn listed_ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_lists_only_the_video_jobs_it_created_on_every_node() {
    let mock = mock(MockBehavior::default()).await;
    let nodes = three_nodes(&mock).await;
    // Each key creates on its own node, and lists right away on the other's.
    let mine = create_video(&nodes[0], KEY, "mine").await;
    let theirs = create_video(&nodes[1], OTHER_KEY, "theirs").await;
    assert_eq!(
        listed_ids(&list_videos(&nodes[1], KEY).await),
        [mine.as_str()]
    );
    assert_eq!(
        listed_ids(&list_videos(&nodes[0], OTHER_KEY).await),
        [theirs.as_str()]
    );
    for node in &nodes {
        for (key, own) in [(KEY, &mine), (OTHER_KEY, &theirs)] {
            let list = list_videos(node, key).await;
            assert_eq!(listed_ids(&list), [own.as_str()], "{list}");
            assert_eq!(list["first_id"], own.as_str());
            assert_eq!(list["last_id"], own.as_str());
        }
    }

    // A key that created nothing gets an empty list in OpenAI's shape.
    let empty = list_videos(&nodes[2], IDLE_KEY).await;
    assert_eq!(
        empty,
        json!({"object": "list", "data": [], "first_id": null, "last_id": null, "has_more": false})
    );

    // Another key's id stays unknown for reading, downloading and deleting.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = client()
            .request(method, url(&nodes[2], &format!("/v1/videos/{mine}")))
            .bearer_auth(OTHER_KEY)
            .send()
            .await
            .unwrap();
        assert_openai_error(response, 404, "not_found").await;
    }
    let response = client()
        .get(url(&nodes[2], &format!("/v1/videos/{mine}/content")))
        .bearer_auth(OTHER_KEY)
        .send()
        .await
        .unwrap();
    assert_openai_error(response, 404, "not_found").await;

    // The owner deletes through a third node: its list is empty everywhere, the other key's
    // job is untouched.
    let deleted = client()
        .delete(url(&nodes[2], &format!("/v1/videos/{mine}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    for node in &nodes {
        assert!(listed_ids(&list_videos(node, KEY).await).is_empty());
        assert_eq!(
            listed_ids(&list_videos(node, OTHER_KEY).await),
            [theirs.as_str()]
        );
    }
    let job: Value = client()
        .get(url(&nodes[0], &format!("/v1/videos/{theirs}")))
        .bearer_auth(OTHER_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["id"], theirs.as_str());

    for node in nodes {
        node.shutdown().await;
    }
}
