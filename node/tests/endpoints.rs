//! The capability endpoints through a real node and aigw-mock on loopback: embeddings,
//! images, audio transcriptions (multipart streamed through) and videos (signed job ids that
//! any node routes), each metered in `GET /admin/v1/usage`.

mod common;

use aigw::RunningNode;
use aigw_jepsen::mock::MockBehavior;
use common::{
    FORM_BOUNDARY, assert_openai_error, client, mock, multipart_form, node_with, post_form, url,
    wav_of,
};
use serde_json::{Value, json};

const KEY: &str = "sk-endpoints-all-0001";
const OTHER_KEY: &str = "sk-endpoints-other-0002";
/// Four calls in all, and 40 input tokens.
const LIMITED_KEY: &str = "sk-endpoints-limited-0003";
const ADMIN_TOKEN: &str = "admin-token-for-endpoint-tests";
const BOUNDARY: &str = FORM_BOUNDARY;

/// A node in front of `upstreams` (host:port each, tried in priority order) with one model
/// per capability. `server` is appended to `[server]`.
fn config(upstreams: &[String], server: &str) -> String {
    let data_dir = common::fresh_data_dir().display().to_string();
    let mut text = format!(
        r#"
[node]
id = 1
api_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
data_dir = "{data_dir}"

[server]
id_secret = "one-secret-for-the-whole-cluster"
{server}

[admin]
token = "{ADMIN_TOKEN}"
"#
    );
    for (i, upstream) in upstreams.iter().enumerate() {
        text += &format!(
            "\n[[bootstrap.upstreams]]\nid = \"up-{i}\"\nkind = \"openai\"\nbase_url = \"http://{upstream}/v1\"\nhealth = {{ enabled = false }}\n"
        );
    }
    for (name, upstream_model) in [
        ("chat", "gpt-4o"),
        ("embed", "text-embedding-x"),
        ("image", "image-gen-x"),
        ("whisper", "whisper-x"),
        ("video", "video-gen-x"),
    ] {
        let targets: Vec<String> = (0..upstreams.len())
            .map(|i| {
                format!("{{ upstream = \"up-{i}\", model = \"{upstream_model}\", priority = {i} }}")
            })
            .collect();
        text += &format!(
            "\n[[bootstrap.models]]\nname = \"{name}\"\ntargets = [{}]\n",
            targets.join(", ")
        );
    }
    text += &format!(
        "\n[[bootstrap.keys]]\nname = \"all\"\nsecret = \"{KEY}\"\n\n[[bootstrap.keys]]\nname = \"other\"\nsecret = \"{OTHER_KEY}\"\n\n\
         [[bootstrap.keys]]\nname = \"limited\"\nsecret = \"{LIMITED_KEY}\"\n\
         limits = {{ calls = {{ limit = 4, period = \"total\" }}, input_tokens = {{ limit = 40, period = \"total\" }} }}\n"
    );
    text
}

async fn post_json(node: &RunningNode, path: &str, body: Value) -> reqwest::Response {
    post_json_as(node, KEY, path, body).await
}

async fn post_json_as(node: &RunningNode, key: &str, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(url(node, path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A multipart/form-data body: text fields, then one file.
fn form(fields: &[(&str, &str)], file: Option<(&str, &str, &[u8])>) -> Vec<u8> {
    let files: Vec<_> = file
        .into_iter()
        .map(|(name, filename, bytes)| (name, filename, "application/octet-stream", bytes))
        .collect();
    multipart_form(fields, &files)
}

/// A mono 16-bit PCM WAV of `seconds` at 16 kHz, silent.
fn wav(seconds: u32) -> Vec<u8> {
    wav_of(seconds, &[0])
}

/// This node's usage row for (key, capability), waiting (bounded) until `ready` holds.
async fn usage(node: &RunningNode, capability: &str, ready: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        let all: Value = client()
            .get(format!(
                "http://{}/admin/v1/usage",
                node.admin_addr().unwrap()
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let row = all["usage"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["capability"] == capability)
            .cloned();
        if let Some(row) = row.filter(|r| ready(r)) {
            return row;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no usage row for {capability} reached the condition");
}

#[tokio::test]
async fn chat_tokens_are_metered_per_key_streamed_or_not() {
    let upstream = mock(MockBehavior::default()).await;
    let node = node_with(&config(&[upstream.addr().to_string()], "")).await;
    let body = json!({"model": "chat", "messages": [{"role": "user", "content": "Hello there"}]});
    let response = post_json(&node, "/v1/chat/completions", body.clone()).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let (input, output) = (
        answer["usage"]["prompt_tokens"].as_u64().unwrap(),
        answer["usage"]["completion_tokens"].as_u64().unwrap(),
    );
    let row = usage(&node, "chat", |r| r["requests"] == 1).await;
    assert_eq!(
        (row["input_tokens"].as_u64(), row["output_tokens"].as_u64()),
        (Some(input), Some(output))
    );

    // A stream: the gateway asks for the usage chunk, meters it and strips it.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let response = post_json(&node, "/v1/chat/completions", streamed).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains("\"usage\""), "{text}");
    let row = usage(&node, "chat", |r| r["requests"] == 2).await;
    assert_eq!(row["input_tokens"].as_u64(), Some(2 * input), "{row}");
    assert!(row["output_tokens"].as_u64().unwrap() > output, "{row}");
    assert_eq!(row["unmetered"], 0);
    node.shutdown().await;
}

#[tokio::test]
async fn every_endpoint_spends_the_calls_budget_and_embeddings_the_input_token_budget() {
    let upstream = mock(MockBehavior::default()).await;
    let node = node_with(&config(&[upstream.addr().to_string()], "")).await;
    let long_input = "many words ".repeat(30);
    let refused = post_json_as(
        &node,
        LIMITED_KEY,
        "/v1/embeddings",
        json!({"model": "embed", "input": long_input}),
    )
    .await;
    // About 60 tokens against a whole budget of 40: it can never fit, so 400, not a 429 that
    // invites a retry.
    let error = assert_openai_error(refused, 400, "request_too_large_for_budget").await;
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("input_tokens budget of 40"),
        "{error}"
    );
    // Four calls over four endpoints; the refusal above took none of them. This input's bytes
    // (90) are over the 40-token budget, its tokens (about 15) are not: the cheap bound
    // refuses it, so it is counted with tiktoken and admitted.
    let embedded = post_json_as(
        &node,
        LIMITED_KEY,
        "/v1/embeddings",
        json!({"model": "embed", "input": "hello ".repeat(15)}),
    )
    .await;
    assert_eq!(embedded.status(), 200);
    let image = json!({"model": "image", "prompt": "a cat"});
    let imaged = post_json_as(&node, LIMITED_KEY, "/v1/images/generations", image.clone()).await;
    assert_eq!(imaged.status(), 200);
    let listed = client()
        .get(url(&node, "/v1/videos"))
        .bearer_auth(LIMITED_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let transcribed = post_form(
        &node,
        LIMITED_KEY,
        "/v1/audio/transcriptions",
        form(&[("model", "whisper")], Some(("file", "a.wav", &wav(1)))),
    )
    .await;
    assert_eq!(transcribed.status(), 200);
    let _ = transcribed.bytes().await.unwrap();
    let refused = post_json_as(&node, LIMITED_KEY, "/v1/images/generations", image).await;
    let error = assert_openai_error(refused, 429, "insufficient_quota").await;
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("calls budget of 4"),
        "{error}"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn embeddings_fail_over_carry_the_upstream_model_and_meter_input_tokens() {
    let upstream = mock(MockBehavior::default()).await;
    // The first priority refuses connections; the request fails over to the mock.
    let node = node_with(&config(
        &["127.0.0.1:1".to_owned(), upstream.addr().to_string()],
        "",
    ))
    .await;
    let response = post_json(
        &node,
        "/v1/embeddings",
        json!({"model": "embed", "input": ["hello world", "again"]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-aigw-upstream"], "up-1");
    assert_eq!(response.headers()["x-aigw-attempts"], "2");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["model"], "text-embedding-x");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    let tokens = body["usage"]["prompt_tokens"].as_u64().unwrap();
    let row = usage(&node, "embeddings", |r| r["requests"] == 1).await;
    assert_eq!(row["input_tokens"], tokens);
    assert_eq!(row["unmetered"], 0);
    node.shutdown().await;
}

#[tokio::test]
async fn images_are_generated_and_metered_by_count_and_size() {
    let upstream = mock(MockBehavior::default()).await;
    let node = node_with(&config(&[upstream.addr().to_string()], "")).await;
    let response = post_json(
        &node,
        "/v1/images/generations",
        json!({"model": "image", "prompt": "a cat", "n": 2, "size": "256x256"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    let row = usage(&node, "images", |r| r["requests"] == 1).await;
    assert_eq!(row["images"], 2);
    assert_eq!(row["images_by_size"]["256x256"], 2);
    let missing = post_json(&node, "/v1/images/generations", json!({"prompt": "x"})).await;
    assert_openai_error(missing, 400, "invalid_value").await;
    node.shutdown().await;
}

#[tokio::test]
async fn transcriptions_stream_through_in_every_format_and_meter_audio_seconds() {
    let upstream = mock(MockBehavior::default()).await;
    let node = node_with(&config(&[upstream.addr().to_string()], "")).await;
    let audio = wav(3);
    let expected = [
        ("json", "application/json"),
        ("verbose_json", "application/json"),
        ("text", "text/plain"),
        ("srt", "text/plain"),
        ("vtt", "text/plain"),
    ];
    for (format, content_type) in expected {
        let body = form(
            &[("model", "whisper"), ("response_format", format)],
            Some(("file", "speech.wav", &audio)),
        );
        let response = post_form(&node, KEY, "/v1/audio/transcriptions", body).await;
        assert_eq!(response.status(), 200, "{format}");
        let got = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(got.starts_with(content_type), "{format}: {got}");
        let text = response.text().await.unwrap();
        // The upstream got the whole file and its own model name.
        assert!(
            text.contains(&format!("{} bytes by whisper-x", audio.len())),
            "{format}: {text}"
        );
        match format {
            "verbose_json" => {
                let v: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["duration"], 3.0);
            }
            "srt" => assert!(text.contains("00:00:03,000"), "{text}"),
            "vtt" => assert!(text.starts_with("WEBVTT"), "{text}"),
            _ => {}
        }
    }
    // verbose_json meters from the answer's duration, the others from the WAV header.
    let row = usage(&node, "audio_transcriptions", |r| r["requests"] == 5).await;
    assert_eq!(row["audio_seconds"], 15.0);
    assert_eq!(row["unmetered"], 0);
    node.shutdown().await;
}

#[tokio::test]
async fn oversized_and_malformed_uploads_get_clear_4xx() {
    let upstream = mock(MockBehavior::default()).await;
    let node = node_with(&config(
        &[upstream.addr().to_string()],
        "max_upload_bytes = 65536",
    ))
    .await;
    // Declared too large: refused before reading.
    let big = form(&[("model", "whisper")], Some(("file", "a.wav", &wav(3))));
    let response = post_form(&node, KEY, "/v1/audio/transcriptions", big.clone()).await;
    assert_openai_error(response, 413, "request_too_large").await;
    // Too large without a Content-Length: cut while streaming, still 413.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    let response = client()
        .post(url(&node, "/v1/audio/transcriptions"))
        .bearer_auth(KEY)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_openai_error(response, 413, "request_too_large").await;

    let json = client()
        .post(url(&node, "/v1/audio/transcriptions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "whisper"}))
        .send()
        .await
        .unwrap();
    assert_openai_error(json, 400, "invalid_multipart").await;
    let garbage = post_form(
        &node,
        KEY,
        "/v1/audio/transcriptions",
        b"--nope\r\n\x00\x01".repeat(10),
    )
    .await;
    assert_openai_error(garbage, 400, "invalid_multipart").await;
    let no_model = form(&[("language", "en")], Some(("file", "a.wav", b"RIFF")));
    let response = post_form(&node, KEY, "/v1/audio/transcriptions", no_model).await;
    let body = assert_openai_error(response, 400, "invalid_value").await;
    assert_eq!(body["error"]["param"], "model");
    let file_first = {
        let mut body = form(&[], Some(("file", "a.wav", &vec![0u8; 70_000])));
        body.truncate(body.len() - format!("--{BOUNDARY}--\r\n").len());
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n--{BOUNDARY}--\r\n").as_bytes(),
        );
        body
    };
    let response = client()
        .post(url(&node, "/v1/audio/transcriptions"))
        .bearer_auth(KEY)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(file_first)
        .send()
        .await
        .unwrap();
    // Over the upload limit too; the declared size decides first.
    assert_eq!(response.status(), 413);
    let unknown = form(&[("model", "nope")], Some(("file", "a.wav", b"RIFF")));
    let response = post_form(&node, KEY, "/v1/audio/transcriptions", unknown).await;
    assert_openai_error(response, 404, "model_not_found").await;
    // Only the chunked upload reached the upstream (streamed until it went over the limit).
    assert_eq!(upstream.stats().requests, 1);
    node.shutdown().await;
}

#[tokio::test]
async fn a_video_job_is_followed_up_through_any_node_and_only_by_its_key() {
    let upstream = mock(MockBehavior::default()).await;
    let upstreams = [upstream.addr().to_string()];
    // Two separate nodes with the same settings and id secret: no shared state at all.
    let a = node_with(&config(&upstreams, "")).await;
    let b = node_with(&config(&upstreams, "")).await;
    let body = form(
        &[("prompt", "a wave"), ("model", "video"), ("seconds", "8")],
        Some(("input_reference", "ref.png", b"\x89PNG....")),
    );
    let response = post_form(&a, KEY, "/v1/videos", body).await;
    assert_eq!(response.status(), 200);
    let job: Value = response.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("video_") && id != "video_1", "{id}");
    assert_eq!(job["status"], "queued");

    let get = |node: &RunningNode, key: &str, path: String| {
        client().get(url(node, &path)).bearer_auth(key).send()
    };
    let mut status = String::new();
    for _ in 0..3 {
        let job: Value = get(&b, KEY, format!("/v1/videos/{id}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(job["id"], id.as_str());
        status = job["status"].as_str().unwrap().to_owned();
    }
    assert_eq!(status, "completed");
    let content = get(&b, KEY, format!("/v1/videos/{id}/content"))
        .await
        .unwrap();
    assert_eq!(content.status(), 200);
    assert_eq!(content.headers()["content-type"], "video/mp4");
    assert_eq!(content.text().await.unwrap(), "MOCK-MP4 video_1");

    let list: Value = get(&a, KEY, "/v1/videos".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id.as_str()),
        "{list}"
    );

    let other = get(&a, OTHER_KEY, format!("/v1/videos/{id}"))
        .await
        .unwrap();
    assert_openai_error(other, 404, "not_found").await;
    let mut tampered = id.clone();
    tampered.pop();
    tampered.push(if id.ends_with('0') { '1' } else { '0' });
    let response = get(&a, KEY, format!("/v1/videos/{tampered}"))
        .await
        .unwrap();
    assert_openai_error(response, 404, "not_found").await;

    let deleted: Value = client()
        .delete(url(&a, &format!("/v1/videos/{id}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deleted["deleted"], true);
    assert_eq!(deleted["id"], id.as_str());
    let row = usage(&a, "videos", |r| r["requests"] == 1).await;
    assert_eq!(row["video_seconds"], 8.0);
    a.shutdown().await;
    b.shutdown().await;
}

/// The upstream's record of the last API request it read whole, if any.
async fn upstream_last_request(upstream: &aigw_jepsen::mock::MockServer) -> Option<Value> {
    let response = client()
        .get(format!("http://{}/mock/last_request", upstream.addr()))
        .send()
        .await
        .unwrap();
    response.status().is_success().then_some(())?;
    Some(response.json().await.unwrap())
}

async fn post_multipart(
    node: &RunningNode,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    client()
        .post(url(node, path))
        .bearer_auth(KEY)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_second_model_part_or_an_ambiguous_header_is_refused_before_the_upstream_reads_it() {
    let upstream = mock(MockBehavior::default()).await;
    let node = node_with(&config(&[upstream.addr().to_string()], "")).await;
    let multipart = format!("multipart/form-data; boundary={BOUNDARY}");
    let part = |disposition: &str, value: &str| {
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n{value}\r\n")
    };
    let with_parts = |before: &str, after: &str| {
        let mut body = before.as_bytes().to_vec();
        let file = form(&[], Some(("file", "a.wav", &wav(4))));
        body.extend_from_slice(&file[..file.len() - format!("--{BOUNDARY}--\r\n").len()]);
        body.extend_from_slice(after.as_bytes());
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        body
    };
    let model = |m: &str| part("name=\"model\"", m);

    // Ambiguities within the start of the form: refused before routing.
    for (path, body) in [
        (
            "/v1/audio/transcriptions",
            with_parts(&(model("whisper") + &model("video")), ""),
        ),
        (
            "/v1/audio/transcriptions",
            with_parts(&part("name=\"model\"; name*=UTF-8''video", "whisper"), ""),
        ),
        (
            "/v1/audio/transcriptions",
            with_parts(
                &(model("whisper") + &part("name=\"x\"; name=\"model\"", "video")),
                "",
            ),
        ),
        (
            "/v1/videos",
            with_parts(
                &(part("name=\"prompt\"", "a wave") + &model("video") + &model("whisper")),
                "",
            ),
        ),
    ] {
        let response = post_multipart(&node, path, &multipart, body).await;
        assert_openai_error(response, 400, "invalid_multipart").await;
    }
    let two_boundaries = format!("multipart/form-data; boundary={BOUNDARY}; boundary=other");
    let body = with_parts(&model("whisper"), "");
    let response = post_multipart(&node, "/v1/audio/transcriptions", &two_boundaries, body).await;
    assert_openai_error(response, 400, "invalid_multipart").await;
    assert_eq!(upstream.stats().requests, 0, "nothing was forwarded");

    // A second model after the file (well past the part read before routing): the upload was
    // streaming already, and is cut before the upstream has the whole form. Three rounds:
    // more refusals in a row than open a breaker, which they must not.
    for (path, first) in [
        ("/v1/audio/transcriptions", model("whisper")),
        (
            "/v1/videos",
            part("name=\"prompt\"", "a wave") + &model("video"),
        ),
    ]
    .into_iter()
    .cycle()
    .take(6)
    {
        let body = with_parts(&first, &model("whisper"));
        let response = post_multipart(&node, path, &multipart, body).await;
        assert_openai_error(response, 400, "invalid_multipart").await;
        let body = with_parts(&first, &part("name=\"model\"; name*=UTF-8''whisper", "x"));
        let response = post_multipart(&node, path, &multipart, body).await;
        assert_openai_error(response, 400, "invalid_multipart").await;
    }
    assert!(upstream.stats().requests > 0, "the uploads had begun");
    assert_eq!(upstream_last_request(&upstream).await, None);

    // One model, one name per part, one boundary: forwarded as before.
    let body = with_parts(&(model("whisper") + &part("name=\"language\"", "en")), "");
    let response = post_multipart(&node, "/v1/audio/transcriptions", &multipart, body).await;
    assert_eq!(response.status(), 200);
    assert!(upstream_last_request(&upstream).await.is_some());
    let _ = response.bytes().await.unwrap();
    // Metered once: the refused uploads count nothing.
    let row = usage(&node, "audio_transcriptions", |r| {
        r["requests"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(row["requests"], 1);
    node.shutdown().await;
}
