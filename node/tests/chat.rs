//! `POST /v1/chat/completions` through a real node to the mock upstream.

mod common;

use std::time::Duration;

use aigw_jepsen::mock::MockBehavior;
use common::*;
use serde_json::{Value, json};

async fn last_upstream_request(mock: &aigw_jepsen::mock::MockServer) -> Value {
    client()
        .get(format!("http://{}/mock/last_request", mock.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Reads from `response` until at least `events` SSE events (`data:` lines) have arrived, or
/// the body ends; returns the events' data.
async fn read_events(
    response: &mut reqwest::Response,
    buffer: &mut String,
    events: usize,
) -> Vec<String> {
    loop {
        let done: Vec<String> = buffer
            .split("\n\n")
            .filter_map(|e| {
                e.lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .map(str::to_owned)
            })
            .collect();
        let complete = buffer.matches("\n\n").count();
        if complete >= events {
            return done.into_iter().take(complete).collect();
        }
        match tokio::time::timeout(Duration::from_secs(5), response.chunk()).await {
            Ok(Ok(Some(chunk))) => buffer.push_str(std::str::from_utf8(&chunk).unwrap()),
            Ok(Ok(None)) => return done,
            Ok(Err(e)) => panic!("stream broke: {e}"),
            Err(_) => panic!("no event within 5 s; have {buffer:?}"),
        }
    }
}

#[tokio::test]
async fn non_streaming_chat_maps_the_model_and_passes_every_other_field_untouched() {
    let mock = mock(MockBehavior::default()).await;
    let node = node(&mock).await;
    let response = chat(
        &node,
        KEY,
        json!({"model": "chat-default", "messages": user_message(), "temperature": 0.25,
               "x_vendor_extension": {"nested": [1, 2, {"model": "not-this-one"}]}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-aigw-upstream"], "mock-a");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["choices"][0]["message"]["content"].is_string());
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let seen = last_upstream_request(&mock).await;
    assert_eq!(seen["path"], "/v1/chat/completions");
    assert_eq!(seen["body"]["model"], "upstream-model-x");
    assert_eq!(seen["body"]["temperature"], 0.25);
    assert_eq!(
        seen["body"]["x_vendor_extension"],
        json!({"nested": [1, 2, {"model": "not-this-one"}]})
    );
    assert_eq!(
        seen["headers"]["authorization"],
        format!("Bearer {UPSTREAM_KEY}")
    );
}

#[tokio::test]
async fn streaming_chat_relays_every_event_through_done() {
    let mock = mock(MockBehavior {
        chunks: 5,
        ..MockBehavior::default()
    })
    .await;
    let node = node(&mock).await;
    let mut response = chat(
        &node,
        KEY,
        json!({"model": "chat-default", "messages": user_message(), "stream": true}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = read_events(&mut response, &mut String::new(), usize::MAX).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!text.is_empty());
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn chunk_n_reaches_the_client_before_the_upstream_sends_chunk_n_plus_1() {
    // Gated: the mock sends its next chunk only when told to, so every event the client sees
    // before a step was forwarded without waiting for the one after it.
    let mock = mock(MockBehavior {
        gated: true,
        chunks: 3,
        ..MockBehavior::default()
    })
    .await;
    let node = node(&mock).await;
    let mut response = chat(
        &node,
        KEY,
        json!({"model": "chat-default", "messages": user_message(), "stream": true}),
    )
    .await;
    let mut buffer = String::new();
    let first = read_events(&mut response, &mut buffer, 1).await;
    assert_eq!(
        first.len(),
        1,
        "only the first chunk may have been sent: {buffer:?}"
    );
    let step = || async {
        client()
            .post(format!("http://{}/mock/step", mock.addr()))
            .send()
            .await
            .unwrap();
    };
    step().await;
    let second = read_events(&mut response, &mut buffer, 2).await;
    assert_eq!(second.len(), 2, "{buffer:?}");
    let second: Value = serde_json::from_str(&second[1]).unwrap();
    assert!(second["choices"][0]["delta"]["content"].is_string());
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_stream() {
    let mock = mock(MockBehavior {
        chunks: 200,
        chunk_interval_ms: 20,
        ..MockBehavior::default()
    })
    .await;
    let node = node(&mock).await;
    let mut response = chat(
        &node,
        KEY,
        json!({"model": "chat-default", "messages": user_message(), "stream": true}),
    )
    .await;
    read_events(&mut response, &mut String::new(), 2).await;
    assert_eq!(mock.stats().streams_cancelled, 0);
    drop(response);
    // 200 chunks at 20 ms take 4 s; the cancellation must arrive long before the stream ends.
    let stats = wait_for_stats(&mock, |s| s.streams_cancelled == 1).await;
    assert_eq!(stats.streams_completed, 0);
}

#[tokio::test]
async fn upstream_errors_are_relayed_with_their_status_in_openai_shape() {
    let mock = mock(MockBehavior {
        error_rate: 1.0,
        error_status: 503,
        ..MockBehavior::default()
    })
    .await;
    let node = node(&mock).await;
    let response = chat(
        &node,
        KEY,
        json!({"model": "chat-default", "messages": user_message()}),
    )
    .await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn a_stream_that_stalls_past_the_idle_timeout_ends_with_an_error_event() {
    let mock = mock(MockBehavior {
        gated: true,
        ..MockBehavior::default()
    })
    .await;
    let text = config_text(&mock.addr().to_string(), "", r#"idle = "300ms""#);
    let node = node_with(&text).await;
    let mut response = chat(
        &node,
        KEY,
        json!({"model": "chat-default", "messages": user_message(), "stream": true}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut buffer = String::new();
    let events = read_events(&mut response, &mut buffer, usize::MAX).await;
    assert!(buffer.contains("event: error"), "{buffer:?}");
    let error: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "upstream_error");
    assert!(error["error"]["message"].as_str().unwrap().contains("idle"));
}

#[tokio::test]
async fn models_lists_only_what_the_key_may_use() {
    let mock = mock(MockBehavior::default()).await;
    let node = node(&mock).await;
    let list = |key: &'static str| {
        let url = url(&node, "/v1/models");
        async move {
            let body: Value = client()
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(body["object"], "list");
            body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(KEY).await, ["chat-default", "other-model"]);
    assert_eq!(list(LIMITED_KEY).await, ["other-model"]);
}

/// A model upstream gets a request the gateway builds: none of the client's forwarding
/// headers, and the gateway adds none (a provider sees the gateway as its client).
#[tokio::test]
async fn client_forwarding_headers_never_reach_a_model_upstream() {
    let mock = mock(MockBehavior::default()).await;
    let node = node(&mock).await;
    let response = client()
        .post(url(&node, "/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6;host=evil.example")
        .header("x-forwarded-host", "evil.example")
        .json(&json!({"model": "chat-default", "messages": user_message()}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = last_upstream_request(&mock).await;
    let headers = seen["headers"].as_object().unwrap();
    for name in [
        "x-forwarded-for",
        "x-real-ip",
        "forwarded",
        "x-forwarded-host",
    ] {
        assert!(
            !headers.contains_key(name),
            "{name} reached the upstream: {seen}"
        );
    }
    node.shutdown().await;
}
