//! Every error a client can provoke gets OpenAI's error shape and the right status, and the
//! node keeps serving afterwards.

mod common;

use aigw_jepsen::mock::MockBehavior;
use common::*;
use serde_json::json;

#[tokio::test]
async fn missing_or_wrong_key_is_401() {
    let mock = mock(MockBehavior::default()).await;
    let node = node(&mock).await;
    let body = json!({"model": "chat-default", "messages": user_message()});
    let no_key = client()
        .post(url(&node, "/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_openai_error(no_key, 401, "missing_api_key").await;
    let wrong = chat(&node, "sk-not-a-key", body.clone()).await;
    assert_openai_error(wrong, 401, "invalid_api_key").await;
    let models = client().get(url(&node, "/v1/models")).send().await.unwrap();
    assert_openai_error(models, 401, "missing_api_key").await;
    assert_eq!(
        mock.stats().requests,
        0,
        "nothing unauthenticated reaches the upstream"
    );
}

#[tokio::test]
async fn invalid_json_and_missing_model_are_400() {
    let mock = mock(MockBehavior::default()).await;
    let node = node(&mock).await;
    let send = |body: &'static str| {
        client()
            .post(url(&node, "/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for bad in [
        "{",
        "",
        "[]",
        "\"just a string\"",
        "{\"model\": \"chat-default\", \"stream\": \"yes\"}",
        "\u{0}\u{ff}",
    ] {
        assert_openai_error(send(bad).await.unwrap(), 400, "invalid_json").await;
    }
    let missing = assert_openai_error(
        send("{\"messages\": []}").await.unwrap(),
        400,
        "invalid_value",
    )
    .await;
    assert_eq!(missing["error"]["param"], "model");
    assert_openai_error(send("{\"model\": 42}").await.unwrap(), 400, "invalid_value").await;
    assert_eq!(mock.stats().requests, 0);
}

#[tokio::test]
async fn unknown_model_and_a_model_the_key_may_not_use_are_404() {
    let mock = mock(MockBehavior::default()).await;
    let node = node(&mock).await;
    let unknown = chat(
        &node,
        KEY,
        json!({"model": "gpt-9", "messages": user_message()}),
    )
    .await;
    let body = assert_openai_error(unknown, 404, "model_not_found").await;
    assert_eq!(body["error"]["param"], "model");
    let forbidden = chat(
        &node,
        LIMITED_KEY,
        json!({"model": "chat-default", "messages": user_message()}),
    )
    .await;
    assert_openai_error(forbidden, 404, "model_not_found").await;
    assert_eq!(mock.stats().requests, 0);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_with_or_without_content_length() {
    let mock = mock(MockBehavior::default()).await;
    let node = node_with(&config_text(
        &mock.addr().to_string(),
        "max_body_bytes = 1024",
        "",
    ))
    .await;
    let big = json!({"model": "chat-default", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    assert_openai_error(
        chat(&node, KEY, big.clone()).await,
        413,
        "request_too_large",
    )
    .await;

    // Chunked, so the limit is found while reading rather than from the header.
    let bytes = serde_json::to_vec(&big).unwrap();
    let stream = futures::stream::iter(
        bytes
            .chunks(512)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let chunked = client()
        .post(url(&node, "/v1/chat/completions"))
        .bearer_auth(KEY)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_openai_error(chunked, 413, "request_too_large").await;

    let small = chat(
        &node,
        KEY,
        json!({"model": "chat-default", "messages": user_message()}),
    )
    .await;
    assert_eq!(small.status(), 200);
}

#[tokio::test]
async fn wrong_method_is_405_and_unknown_path_is_404() {
    let mock = mock(MockBehavior::default()).await;
    let node = node(&mock).await;
    let get = client()
        .get(url(&node, "/v1/chat/completions"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_openai_error(get, 405, "method_not_allowed").await;
    let put = client()
        .put(url(&node, "/v1/models"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_openai_error(put, 405, "method_not_allowed").await;
    let unknown = client()
        .post(url(&node, "/v1/nothing/here"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_openai_error(unknown, 404, "unknown_url").await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_502() {
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let node = node_with(&config_text(&closed.to_string(), "", "")).await;
    let response = chat(
        &node,
        KEY,
        json!({"model": "chat-default", "messages": user_message()}),
    )
    .await;
    assert_openai_error(response, 502, "upstream_unreachable").await;
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_504_after_the_head_timeout() {
    let mock = mock(MockBehavior {
        hang: true,
        ..MockBehavior::default()
    })
    .await;
    let text = config_text(&mock.addr().to_string(), "", r#"response_head = "300ms""#);
    let node = node_with(&text).await;
    let response = chat(
        &node,
        KEY,
        json!({"model": "chat-default", "messages": user_message()}),
    )
    .await;
    let body = assert_openai_error(response, 504, "upstream_timeout").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("response_head")
    );
}

#[tokio::test]
async fn the_total_timeout_bounds_a_slow_upstream() {
    let mock = mock(MockBehavior {
        latency_ms: 5_000,
        ..MockBehavior::default()
    })
    .await;
    let text = config_text(&mock.addr().to_string(), "", r#"total = "300ms""#);
    let node = node_with(&text).await;
    let response = chat(
        &node,
        KEY,
        json!({"model": "chat-default", "messages": user_message()}),
    )
    .await;
    let body = assert_openai_error(response, 504, "upstream_timeout").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("total"));
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_over_http2_too() {
    let mock = mock(MockBehavior::default()).await;
    let node = node_with(&config_text(
        &mock.addr().to_string(),
        "max_body_bytes = 1024",
        "",
    ))
    .await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap();
    // Within the server's HTTP/2 flow-control windows, and far beyond them.
    for size in [8 * 1024, 256 * 1024, 4 << 20] {
        let big = json!({"model": "chat-default", "messages": [{"role": "user", "content": "x".repeat(size)}]});
        let bytes = serde_json::to_vec(&big).unwrap();
        let declared = h2
            .post(url(&node, "/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(bytes.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{size} bytes declared: {e:?}"));
        assert_eq!(declared.version(), reqwest::Version::HTTP_2);
        assert_openai_error(declared, 413, "request_too_large").await;
        // No content-length: the limit is found while reading the stream.
        let stream = futures::stream::iter(
            bytes
                .chunks(16 * 1024)
                .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                .collect::<Vec<_>>(),
        );
        let streamed = h2
            .post(url(&node, "/v1/chat/completions"))
            .bearer_auth(KEY)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{size} bytes streamed: {e:?}"));
        assert_openai_error(streamed, 413, "request_too_large").await;
    }
    let small = h2
        .post(url(&node, "/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "chat-default", "messages": user_message()}))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
}

#[tokio::test]
async fn client_input_echoed_in_an_error_is_truncated() {
    let mock = mock(MockBehavior::default()).await;
    let node = node(&mock).await;
    let huge = "m".repeat(1 << 20);
    let unknown = chat(
        &node,
        KEY,
        json!({"model": huge, "messages": user_message()}),
    )
    .await;
    let body = assert_openai_error(unknown, 404, "model_not_found").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.len() < 1024, "{} bytes", message.len());
    assert!(message.contains("mmm…`"), "{message}");
    let long_path = format!("/v1/{}", "p".repeat(8 * 1024));
    let unknown = client()
        .post(url(&node, &long_path))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let body = assert_openai_error(unknown, 404, "unknown_url").await;
    assert!(body["error"]["message"].as_str().unwrap().len() < 1024);
}
