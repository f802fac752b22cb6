//! `kind = "anthropic"`: chat completions through a real node to the mock's Messages API,
//! which refuses what Anthropic refuses, so a bad translation fails here.

mod common;

use aigw_jepsen::mock::{MockBehavior, MockServer};
use common::*;
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "admin-token-anthropic";

/// One node: `claude` served by an anthropic upstream on `anthropic`; `mixed` by an openai
/// upstream on `openai` first (priority 0), the anthropic one after (priority 1).
fn config(anthropic: &MockServer, openai: &MockServer) -> String {
    let text = config_text(&openai.addr().to_string(), "", "");
    let text = text.replace(
        "[[bootstrap.models]]\nname = \"chat-default\"",
        &format!(
            r#"[[bootstrap.upstreams]]
id = "claude-up"
kind = "anthropic"
base_url = "http://{}/v1"
api_key = "${{UPSTREAM_KEY}}"
health = {{ enabled = false }}

[[bootstrap.models]]
name = "claude"
default_max_tokens = 333
targets = [{{ upstream = "claude-up", model = "claude-sonnet-4-5" }}]

[[bootstrap.models]]
name = "mixed"
targets = [{{ upstream = "mock-a", model = "gpt-x", priority = 0 }}, {{ upstream = "claude-up", model = "claude-sonnet-4-5", priority = 1 }}]

[[bootstrap.models]]
name = "chat-default""#,
            anthropic.addr()
        ),
    );
    with_admin(&text, ADMIN_TOKEN)
}

async fn last_upstream_request(mock: &MockServer) -> Value {
    client()
        .get(format!("http://{}/mock/last_request", mock.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The `data:` payloads of an SSE body, and the names of any `event:` lines.
fn events(text: &str) -> (Vec<String>, Vec<String>) {
    let mut data = Vec::new();
    let mut names = Vec::new();
    for event in text.split("\n\n") {
        for line in event.lines() {
            if let Some(d) = line.strip_prefix("data: ") {
                data.push(d.to_owned());
            }
            if let Some(n) = line.strip_prefix("event: ") {
                names.push(n.to_owned());
            }
        }
    }
    (data, names)
}

/// This node's chat usage row once `ready` holds.
async fn chat_usage(node: &aigw::RunningNode, ready: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        let all: Value = admin_request(node, ADMIN_TOKEN, reqwest::Method::GET, "/usage")
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
            .find(|r| r["capability"] == "chat")
            .cloned();
        if let Some(row) = row.filter(|r| ready(r)) {
            return row;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the chat usage row never reached the condition");
}

async fn setup() -> (MockServer, MockServer, aigw::RunningNode) {
    let anthropic = mock(MockBehavior::default()).await;
    let openai = mock(MockBehavior::default()).await;
    let node = node_with(&config(&anthropic, &openai)).await;
    (anthropic, openai, node)
}

#[tokio::test]
async fn a_non_streaming_chat_goes_to_messages_and_comes_back_as_a_chat_completion() {
    let (anthropic, _openai, node) = setup().await;
    let response = chat(
        &node,
        KEY,
        json!({"model": "claude", "temperature": 0.3, "seed": 1, "user": "u-1",
               "messages": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "Hello"},
                            {"role": "user", "content": "there"}]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-aigw-upstream"], "claude-up");
    assert_eq!(response.headers()["x-aigw-dropped-params"], "seed");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("msg_mock_"));
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from the aigw mock upstream, one"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    assert_eq!(usage["completion_tokens"], 8);
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);

    let seen = last_upstream_request(&anthropic).await;
    assert_eq!(seen["path"], "/v1/messages");
    assert_eq!(seen["headers"]["x-api-key"], UPSTREAM_KEY);
    assert_eq!(seen["headers"]["anthropic-version"], "2023-06-01");
    assert!(seen["headers"].get("authorization").is_none());
    assert_eq!(seen["body"]["model"], "claude-sonnet-4-5");
    assert_eq!(
        seen["body"]["max_tokens"], 333,
        "the model's default_max_tokens"
    );
    assert_eq!(
        seen["body"]["system"],
        json!([{"type": "text", "text": "Be brief."}])
    );
    assert_eq!(seen["body"]["metadata"], json!({"user_id": "u-1"}));
    assert_eq!(
        seen["body"]["messages"].as_array().unwrap().len(),
        1,
        "merged user turns"
    );

    let row = chat_usage(&node, |r| r["requests"] == 1).await;
    assert_eq!(row["output_tokens"], 8);
    assert_eq!(row["input_tokens"], usage["prompt_tokens"]);
    node.shutdown().await;
}

#[tokio::test]
async fn a_stream_becomes_chunks_with_one_id_metered_and_usage_only_when_asked() {
    let (_anthropic, _openai, node) = setup().await;
    let request = json!({"model": "claude", "stream": true, "max_tokens": 5,
                         "messages": [{"role": "user", "content": "Hi"}]});
    let response = chat(&node, KEY, request.clone()).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = response.text().await.unwrap();
    let (data, names) = events(&text);
    assert!(names.is_empty(), "{text}");
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(
        !text.contains("\"usage\""),
        "stripped when not asked: {text}"
    );
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let id = &chunks[0]["id"];
    assert!(
        chunks
            .iter()
            .all(|c| &c["id"] == id && c["object"] == "chat.completion.chunk")
    );
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello from the aigw mock");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );
    let row = chat_usage(&node, |r| r["requests"] == 1).await;
    assert_eq!(row["output_tokens"], 5);
    assert_eq!(row["unmetered"], 0);

    let mut asked = request;
    asked["stream_options"] = json!({"include_usage": true});
    let text = chat(&node, KEY, asked).await.text().await.unwrap();
    let (data, _) = events(&text);
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    let row = chat_usage(&node, |r| r["requests"] == 2).await;
    assert_eq!(row["output_tokens"], 10);
    node.shutdown().await;
}

#[tokio::test]
async fn a_streamed_tool_call_is_reassembled_and_its_result_goes_back_as_a_tool_result() {
    let (anthropic, _openai, node) = setup().await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]);
    let question = json!({"role": "user", "content": "Weather in Paris?"});
    let text = chat(
        &node,
        KEY,
        json!({"model": "claude", "stream": true, "tools": tools,
        "tool_choice": "auto", "messages": [question]}),
    )
    .await
    .text()
    .await
    .unwrap();
    let (data, _) = events(&text);
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let (mut id, mut name, mut arguments) = (String::new(), String::new(), String::new());
    for call in chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
    {
        assert_eq!(call["index"], 0);
        if let Some(i) = call["id"].as_str() {
            id = i.to_owned();
        }
        if let Some(n) = call["function"]["name"].as_str() {
            name = n.to_owned();
        }
        arguments.push_str(call["function"]["arguments"].as_str().unwrap_or_default());
    }
    assert_eq!(name, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"location": "Paris"})
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // The round trip: the assistant's call and the tool's result, then a plain answer.
    let response = chat(
        &node,
        KEY,
        json!({"model": "claude", "tools": tools, "messages": [
            question,
            {"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function",
                "function": {"name": "get_weather", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": id, "content": "18C and sunny"}
        ]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let seen = last_upstream_request(&anthropic).await;
    let messages = seen["body"]["messages"].as_array().unwrap();
    assert_eq!(messages[1]["content"][0]["type"], "tool_use");
    assert_eq!(
        messages[2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": id,
        "content": [{"type": "text", "text": "18C and sunny"}]})
    );
    node.shutdown().await;
}

#[tokio::test]
async fn image_inputs_go_as_base64_and_url_sources() {
    let (anthropic, _openai, node) = setup().await;
    let response = chat(
        &node,
        KEY,
        json!({"model": "claude", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Compare these"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}}]}]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let seen = last_upstream_request(&anthropic).await;
    let content = &seen["body"]["messages"][0]["content"];
    assert_eq!(
        content[1]["source"],
        json!({"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQSkZJRg=="})
    );
    assert_eq!(
        content[2]["source"],
        json!({"type": "url", "url": "https://example.com/b.png"})
    );
    node.shutdown().await;
}

#[tokio::test]
async fn unsupported_parameters_are_refused_in_openais_shape_before_anything_goes_upstream() {
    let (anthropic, _openai, node) = setup().await;
    let response = chat(
        &node,
        KEY,
        json!({"model": "claude", "n": 2,
        "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    let body = assert_openai_error(response, 400, "invalid_value").await;
    assert_eq!(body["error"]["param"], "n");
    assert_eq!(anthropic.stats().requests, 0);
    node.shutdown().await;
}

#[tokio::test]
async fn anthropic_errors_are_relayed_in_openais_shape_and_529_fails_over_as_503() {
    let (anthropic, _openai, node) = setup().await;
    anthropic.set_behavior(MockBehavior {
        error_rate: 1.0,
        error_status: 400,
        ..MockBehavior::default()
    });
    let response = chat(
        &node,
        KEY,
        json!({"model": "claude", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    let body = assert_openai_error(response, 400, "invalid_request").await;
    assert_eq!(body["error"]["message"], "injected by aigw-mock");

    anthropic.set_behavior(MockBehavior {
        error_rate: 1.0,
        error_status: 529,
        ..MockBehavior::default()
    });
    let response = chat(
        &node,
        KEY,
        json!({"model": "claude", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_openai_error(response, 503, "overloaded").await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_failing_openai_target_fails_over_to_anthropic_and_the_client_sees_openais_shape() {
    let (anthropic, openai, node) = setup().await;
    openai.set_behavior(MockBehavior {
        error_rate: 1.0,
        error_status: 503,
        ..MockBehavior::default()
    });
    for stream in [false, true] {
        let response = chat(
            &node,
            KEY,
            json!({"model": "mixed", "stream": stream,
            "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
        assert_eq!(response.status(), 200, "stream {stream}");
        assert_eq!(response.headers()["x-aigw-upstream"], "claude-up");
        assert_eq!(response.headers()["x-aigw-attempts"], "2");
        let text = response.text().await.unwrap();
        if stream {
            let (data, _) = events(&text);
            assert_eq!(data.last().unwrap(), "[DONE]");
            let first: Value = serde_json::from_str(&data[0]).unwrap();
            assert_eq!(first["object"], "chat.completion.chunk");
        } else {
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["object"], "chat.completion");
            assert_eq!(body["model"], "claude-sonnet-4-5");
        }
    }
    assert_eq!(anthropic.stats().requests, 2);
    assert!(openai.stats().requests >= 2);
    node.shutdown().await;
}
