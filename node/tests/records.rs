//! Request records through a real node: a record per call with what the client sent and
//! received (a stream assembled), the key, the model, the attempts and the usage; read back
//! through `GET /admin/v1/records`; never a secret; every record on disk after a graceful
//! shutdown; `capture = "metadata"` keeps no body; uploads as metadata (size, SHA-256, audio
//! seconds) and never their bytes; pass-through calls (MCP, agent) with the body the client
//! sent and the answer; the model name the upstream got.

mod common;

use std::path::Path;
use std::time::Duration;

use aigw::RunningNode;
use aigw::records::query::{Filter, scan};
use aigw_jepsen::mock::MockBehavior;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use common::*;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

const ADMIN_TOKEN: &str = "records-admin-token";

fn records_config(upstream: &str, records: &str) -> String {
    with_admin(&config_text(upstream, "", ""), ADMIN_TOKEN)
        + &format!("\n[records]\nfsync_interval = \"5ms\"\n{records}\n")
}

/// The records `GET /admin/v1/records{query}` answers, waiting (bounded) for `count`.
async fn records(node: &RunningNode, query: &str, count: usize) -> Vec<Value> {
    let mut got = Vec::new();
    for _ in 0..100 {
        let response = admin_request(
            node,
            ADMIN_TOKEN,
            reqwest::Method::GET,
            &format!("/records{query}"),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        got = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if got.len() >= count {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} records of {count}: {got:?}", got.len());
}

fn everything_in(dir: &Path) -> String {
    let mut all = String::new();
    scan(
        &dir.join("records"),
        &Filter::default(),
        usize::MAX,
        |line| {
            all.push_str(&String::from_utf8_lossy(&line));
            all.push('\n');
            true
        },
    )
    .unwrap();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_recorded_as_the_client_saw_it_and_without_a_secret() {
    let mock = mock(MockBehavior {
        chunks: 5,
        ..MockBehavior::default()
    })
    .await;
    let dir = fresh_data_dir();
    let node = node_in(&records_config(&mock.addr().to_string(), ""), &dir).await;

    // A plain completion.
    let plain = chat(
        &node,
        KEY,
        json!({"model": "chat-default", "messages": user_message()}),
    )
    .await;
    assert_eq!(plain.status(), 200);
    let plain: Value = plain.json().await.unwrap();

    // A stream: the content the client reads, chunk by chunk.
    let stream = chat(
        &node,
        KEY,
        json!({"model": "chat-default", "messages": user_message(), "stream": true}),
    )
    .await;
    assert_eq!(stream.status(), 200);
    let text = stream.text().await.unwrap();
    let mut streamed = String::new();
    for line in text.lines() {
        if let Some(data) = line.strip_prefix("data: ")
            && data != "[DONE]"
        {
            let chunk: Value = serde_json::from_str(data).unwrap();
            if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
                streamed.push_str(piece);
            }
        }
    }
    assert!(!streamed.is_empty());

    // Refused before a key is known.
    let refused = client()
        .post(url(&node, "/v1/chat/completions"))
        .json(&json!({"model": "chat-default"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let all = records(&node, "", 3).await;
    assert_eq!(all.len(), 3, "{all:?}");
    for record in &all {
        assert_eq!(record["v"], 1);
        assert_eq!(record["node"], 1);
        assert_eq!(record["endpoint"], "chat.completions");
        assert_eq!(record["id"].as_str().unwrap().len(), 36, "a UUID");
        assert_eq!(&record["id"].as_str().unwrap()[14..15], "7", "version 7");
    }

    let first = &all[0];
    assert_eq!(first["status"], 200);
    assert_eq!(first["request"]["upstream_model"], "upstream-model-x");
    assert_eq!(first["request"]["upstream_added"], Value::Null);
    assert_eq!(first["end"], "complete");
    assert_eq!(first["key"]["name"], "all");
    assert!(first["key"]["id"].as_str().unwrap().starts_with("key_"));
    assert_eq!(first["model"], "chat-default");
    assert_eq!(first["attempts"][0]["upstream"], "mock-a");
    assert_eq!(first["attempts"][0]["upstream_model"], "upstream-model-x");
    assert_eq!(first["attempts"][0]["status"], 200);
    assert_eq!(first["request"]["capture"], "full");
    assert_eq!(first["request"]["body"]["messages"], user_message());
    assert_eq!(first["response"]["body"], plain, "the body the client got");
    assert!(first["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let times = &first["timestamps"];
    assert!(times["received_ms"].as_u64() <= times["end_ms"].as_u64());

    let second = &all[1];
    assert_eq!(second["request"]["body"]["stream"], true);
    assert_eq!(
        second["request"]["body"]["stream_options"],
        Value::Null,
        "the body as the client sent it"
    );
    assert_eq!(
        second["request"]["upstream_added"],
        json!({"stream_options": {"include_usage": true}}),
        "what the gateway added to meter the stream"
    );
    assert_eq!(second["request"]["upstream_model"], "upstream-model-x");
    let assembled = &second["response"]["body"];
    assert_eq!(assembled["object"], "chat.completion");
    assert_eq!(
        assembled["choices"][0]["message"]["content"], streamed,
        "the assembled content is what the client read"
    );
    let timing = &second["response"]["stream"];
    assert!(timing["chunks"].as_u64().unwrap() >= 5, "{timing}");
    assert_eq!(timing["done"], true);
    assert!(second["usage"]["output_tokens"].as_u64().unwrap() > 0);

    let third = &all[2];
    assert_eq!(third["status"], 401);
    assert_eq!(third["key"], Value::Null);
    assert_eq!(third["error"]["code"], "missing_api_key");

    // Filters.
    assert_eq!(records(&node, "?status=401", 1).await.len(), 1);
    assert_eq!(records(&node, "?key=all&limit=1", 1).await.len(), 1);
    assert_eq!(records(&node, "?model=chat-default", 2).await.len(), 2);
    let bad = admin_request(
        &node,
        ADMIN_TOKEN,
        reqwest::Method::GET,
        "/records?since=soon",
    )
    .send()
    .await
    .unwrap();
    assert_openai_error(bad, 400, "invalid_request").await;

    // A graceful shutdown writes every record; none holds a secret.
    node.shutdown().await;
    let on_disk = everything_in(&dir);
    assert_eq!(on_disk.lines().count(), 3);
    for secret in [KEY, UPSTREAM_KEY, ADMIN_TOKEN] {
        assert!(!on_disk.contains(secret), "{secret} is in the records log");
    }

    // Offline: the fine-tuning export of the data dir.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_aigw"))
        .args(["records", "export", "--format", "openai-chat", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let examples: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!examples.is_empty());
    for example in &examples {
        let messages = example["messages"].as_array().unwrap();
        assert_eq!(messages[0], user_message()[0]);
        assert_eq!(messages.last().unwrap()["role"], "assistant");
    }
    let summary = String::from_utf8_lossy(&output.stderr);
    assert!(summary.contains("3 records read"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_capture_keeps_no_body_and_embeddings_are_recorded_with_their_usage() {
    let mock = mock(MockBehavior::default()).await;
    let dir = fresh_data_dir();
    let node = node_in(
        &records_config(&mock.addr().to_string(), "capture = \"metadata\""),
        &dir,
    )
    .await;
    let response = client()
        .post(url(&node, "/v1/embeddings"))
        .bearer_auth(KEY)
        .json(&json!({"model": "chat-default", "input": "a secret plan"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    let all = records(&node, "", 1).await;
    let record = &all[0];
    assert_eq!(record["endpoint"], "embeddings");
    assert_eq!(record["request"]["capture"], "metadata");
    assert_eq!(record["request"]["body"], Value::Null);
    assert!(record["request"]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(record["response"]["capture"], "metadata");
    assert_eq!(record["response"]["body"], Value::Null);
    assert!(record["response"]["bytes"].as_u64().unwrap() > 0);
    assert!(
        record["usage"]["input_tokens"].as_u64().is_some(),
        "{record}"
    );

    // An error's body is the call's outcome: kept whatever the capture.
    let missing = client()
        .post(url(&node, "/v1/embeddings"))
        .bearer_auth(KEY)
        .json(&json!({"model": "no-such-model", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let all = records(&node, "?status=404", 1).await;
    assert_eq!(all[0]["error"]["code"], "model_not_found", "{}", all[0]);
    assert_eq!(all[0]["response"]["body"], Value::Null);

    node.shutdown().await;
    assert!(!everything_in(&dir).contains("a secret plan"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_can_keep_its_records_to_metadata() {
    let mock = mock(MockBehavior::default()).await;
    let text = records_config(&mock.addr().to_string(), "").replace(
        "name = \"other-model\"",
        "name = \"other-model\"\nrecords = \"metadata\"",
    );
    let node = node_in(&text, &fresh_data_dir()).await;
    for model in ["chat-default", "other-model"] {
        let response = chat(
            &node,
            KEY,
            json!({"model": model, "messages": user_message()}),
        )
        .await;
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    let all = records(&node, "", 2).await;
    assert_eq!(all[0]["model"], "chat-default");
    assert_eq!(all[0]["request"]["capture"], "full");
    assert_eq!(all[1]["model"], "other-model");
    assert_eq!(all[1]["request"]["capture"], "metadata");
    assert_eq!(all[1]["request"]["body"], Value::Null);
    assert_eq!(all[1]["response"]["capture"], "metadata");
    assert_eq!(all[1]["response"]["body"], Value::Null);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_can_ask_for_bodies_and_the_stricter_of_key_and_model_wins() {
    let mock = mock(MockBehavior::default()).await;
    let text = records_config(&mock.addr().to_string(), "capture = \"metadata\"").replace(
        "name = \"other-model\"",
        "name = \"other-model\"\nrecords = \"metadata\"",
    );
    let node = node_in(&text, &fresh_data_dir()).await;
    let admin = |method, path: &str| admin_request(&node, ADMIN_TOKEN, method, path);

    let refused = admin(reqwest::Method::POST, "/keys")
        .json(&json!({"name": "all", "records": "everything"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let error: Value = refused.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("records"),
        "{error}"
    );

    let created: Value = admin(reqwest::Method::POST, "/keys")
        .json(&json!({"name": "audited", "records": "full"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["records"], "full", "{created}");
    let (id, secret) = (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    );
    let call = |model: &'static str| {
        let (node, secret) = (&node, &secret);
        async move {
            let response = chat(
                node,
                secret,
                json!({"model": model, "messages": user_message()}),
            )
            .await;
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
        }
    };
    // The key's "full" over the node's "metadata"; the model's "metadata" over the key's.
    call("chat-default").await;
    call("other-model").await;
    let patched: Value = admin(reqwest::Method::PATCH, &format!("/keys/{id}"))
        .json(&json!({"records": null}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["records"], Value::Null, "{patched}");
    // Back to the node's policy.
    call("chat-default").await;

    let all = records(&node, "", 3).await;
    let captures: Vec<(&str, &str)> = all
        .iter()
        .map(|r| {
            (
                r["model"].as_str().unwrap(),
                r["request"]["capture"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        captures,
        [
            ("chat-default", "full"),
            ("other-model", "metadata"),
            ("chat-default", "metadata")
        ]
    );
    assert!(all[0]["request"]["body"]["messages"].is_array());
    assert_eq!(all[0]["response"]["capture"], "full");
    assert_eq!(all[2]["request"]["body"], Value::Null);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_capture_keeps_a_streams_chunks_as_the_client_received_them() {
    let mock = mock(MockBehavior::default()).await;
    let node = node_in(
        &records_config(&mock.addr().to_string(), ""),
        &fresh_data_dir(),
    )
    .await;
    let created: Value = admin_request(&node, ADMIN_TOKEN, reqwest::Method::POST, "/keys")
        .json(&json!({"name": "raw", "records": "raw"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["records"], "raw", "{created}");
    let body = json!({"model": "chat-default", "messages": user_message(), "stream": true});
    let mut received = Vec::new();
    for key in [created["secret"].as_str().unwrap(), KEY] {
        let response = chat(&node, key, body.clone()).await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let data: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.to_owned())))
            .collect();
        received.push(data);
    }
    assert!(received[0].len() > 2, "{:?}", received[0]);
    assert_eq!(received[0].last(), Some(&json!("[DONE]")));

    let all = records(&node, "", 2).await;
    let raw = all[0]["response"]["raw_chunks"]
        .as_array()
        .expect("raw chunks");
    assert_eq!(raw, &received[0], "the chunks as the client received them");
    assert_eq!(
        all[0]["response"]["stream"]["chunks"].as_u64(),
        Some(received[0].len() as u64 - 1),
        "and the timings, [DONE] aside"
    );
    assert!(all[0]["response"]["body"]["choices"].is_array());
    // The node's "full": the assembled completion, no chunks.
    assert_eq!(all[1]["response"]["raw_chunks"], Value::Null);
    assert!(all[1]["response"]["body"]["choices"].is_array());
    node.shutdown().await;
}

/// In the uploaded file's bytes, and so never in a record.
const FILE_MARKER: &[u8] = b"UPLOADED-BYTES-NEVER-RECORDED";

/// The bytes of an audio upload: silence-free samples made of [`FILE_MARKER`].
fn wav(seconds: u32) -> Vec<u8> {
    wav_of(seconds, FILE_MARKER)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_recorded_as_metadata_with_their_hash_and_never_their_bytes() {
    let mock = mock(MockBehavior::default()).await;
    let dir = fresh_data_dir();
    let text = records_config(&mock.addr().to_string(), "").replace(
        "[server]\n",
        "[server]\nid_secret = \"one-secret-for-the-records-tests\"\n",
    );
    let node = node_in(&text, &dir).await;

    // An audio transcription answered as `json`: its seconds come from the file's header.
    let audio = wav(3);
    let body = multipart_form(
        &[
            ("model", "chat-default"),
            ("response_format", "json"),
            ("language", "en"),
        ],
        &[("file", "speech.wav", "audio/wav", &audio)],
    );
    let form_bytes = body.len();
    let response = post_form(&node, KEY, "/v1/audio/transcriptions", body).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.contains(&format!("{} bytes", audio.len())), "{text}");

    // A video job with an input reference image.
    let image: Vec<u8> = [b"\x89PNG\r\n".as_slice(), FILE_MARKER].concat();
    let body = multipart_form(
        &[("model", "other-model"), ("prompt", "a calm sea")],
        &[("input_reference", "ref.png", "image/png", &image)],
    );
    let response = post_form(&node, KEY, "/v1/videos", body).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    let all = records(&node, "", 2).await;
    let transcription = &all[0];
    assert_eq!(transcription["endpoint"], "audio.transcriptions");
    let uploads = transcription["uploads"].as_array().unwrap();
    assert_eq!(uploads.len(), 1, "{transcription}");
    let upload = &uploads[0];
    assert_eq!(upload["field"], "file");
    assert_eq!(upload["file_name"], "speech.wav");
    assert_eq!(upload["content_type"], "audio/wav");
    assert_eq!(upload["bytes"], audio.len() as u64);
    assert_eq!(upload["sha256"], hex::encode(Sha256::digest(&audio)));
    assert_eq!(upload["audio_seconds"], 3.0, "the seconds the node metered");
    assert_eq!(transcription["usage"]["audio_seconds"], 3.0);
    let request = &transcription["request"];
    assert_eq!(request["capture"], "full");
    assert_eq!(request["bytes"], form_bytes as u64);
    assert_eq!(
        request["body"],
        json!({"model": "chat-default", "response_format": "json", "language": "en"}),
        "the form's text fields as the client sent them"
    );
    assert_eq!(request["upstream_model"], "upstream-model-x");

    let video = &all[1];
    assert_eq!(video["endpoint"], "videos.create");
    assert_eq!(video["request"]["body"]["prompt"], "a calm sea");
    assert_eq!(video["request"]["upstream_model"], "upstream-model-y");
    let upload = &video["uploads"][0];
    assert_eq!(upload["field"], "input_reference");
    assert_eq!(upload["content_type"], "image/png");
    assert_eq!(upload["bytes"], image.len() as u64);
    assert_eq!(upload["sha256"], hex::encode(Sha256::digest(&image)));
    assert_eq!(upload["audio_seconds"], Value::Null);

    node.shutdown().await;
    let on_disk = everything_in(&dir);
    assert_eq!(on_disk.lines().count(), 2);
    assert!(
        !on_disk.contains(std::str::from_utf8(FILE_MARKER).unwrap()),
        "an upload's bytes are in the records log"
    );
    for secret in [KEY, UPSTREAM_KEY, ADMIN_TOKEN] {
        assert!(!on_disk.contains(secret), "{secret} is in the records log");
    }
}

/// An MCP server and an agent on one listener: `POST /mcp` answers a JSON-RPC request with
/// its result (as an SSE stream of a progress notification and the result when the client
/// accepts only `text/event-stream`); `/agent/...` echoes the body it got.
async fn pass_through_backend() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|request: Request| async move {
        let stream = request
            .headers()
            .get("accept")
            .is_some_and(|v| v == "text/event-stream");
        let path = request.uri().path().to_owned();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        if path.starts_with("/agent") {
            return axum::Json(json!({"agent_got": String::from_utf8_lossy(&body)}))
                .into_response();
        }
        let call: Value = serde_json::from_slice(&body).unwrap();
        let result = json!({"jsonrpc": "2.0", "id": call["id"], "result": {"echo": call["params"]}});
        if !stream {
            return axum::Json(result).into_response();
        }
        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}});
        let events = format!("event: message\ndata: {progress}\n\nevent: message\ndata: {result}\n\n");
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from(events))
            .unwrap()
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_records_hold_the_request_as_sent_and_the_answer() {
    let mock = mock(MockBehavior::default()).await;
    let backend = pass_through_backend().await;
    let dir = fresh_data_dir();
    let token = r#"headers = { "X-Upstream-Token" = "${UPSTREAM_KEY}" }"#;
    let text = records_config(&mock.addr().to_string(), "")
        + &format!(
            "\n[[bootstrap.mcp_servers]]\nname = \"tools\"\nurl = \"http://{backend}/mcp\"\n{token}\n\
             \n[[bootstrap.agents]]\ntype = \"coder\"\nurl = \"http://{backend}/agent\"\n{token}\n"
        );
    let node = node_in(&text, &dir).await;

    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "search", "arguments": {"q": "weather in Oslo"}}});
    let answer: Value = client()
        .post(url(&node, "/v1/mcp/tools"))
        .bearer_auth(KEY)
        .header("accept", "application/json")
        .json(&call)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["result"]["echo"]["name"], "search");

    let streamed_call = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
        "params": {"name": "slow", "arguments": {}}});
    let streamed = client()
        .post(url(&node, "/v1/mcp/tools"))
        .bearer_auth(KEY)
        .header("accept", "text/event-stream")
        .json(&streamed_call)
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    let streamed = streamed.text().await.unwrap();
    assert!(streamed.contains("notifications/progress"), "{streamed}");

    let run = json!({"task": "fix the build", "repository": "aigw"});
    let response = client()
        .post(url(&node, "/v1/agent/coder/runs"))
        .bearer_auth(KEY)
        .json(&run)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();

    let all = records(&node, "", 3).await;
    let mcp = &all[0];
    assert_eq!(mcp["endpoint"], "mcp");
    assert_eq!(mcp["key"]["name"], "all");
    assert_eq!(mcp["request"]["capture"], "full");
    assert_eq!(mcp["request"]["body"], call, "the JSON-RPC request as sent");
    assert_eq!(mcp["request"]["bytes"], call.to_string().len() as u64);
    assert_eq!(mcp["response"]["body"], answer);

    let stream = &all[1];
    assert_eq!(stream["request"]["body"], streamed_call);
    let events = stream["response"]["body"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{stream}");
    assert_eq!(events[0]["event"], "message");
    assert_eq!(events[0]["data"]["method"], "notifications/progress");
    assert_eq!(events[1]["data"]["id"], 8);
    assert_eq!(events[1]["data"]["result"]["echo"]["name"], "slow");
    assert_eq!(stream["response"]["stream"]["done"], true);

    let agent = &all[2];
    assert_eq!(agent["endpoint"], "agent");
    assert_eq!(agent["request"]["body"], run);
    assert_eq!(agent["response"]["body"]["agent_got"], run.to_string());

    node.shutdown().await;
    let on_disk = everything_in(&dir);
    for secret in [KEY, UPSTREAM_KEY, ADMIN_TOKEN] {
        assert!(!on_disk.contains(secret), "{secret} is in the records log");
    }
}
