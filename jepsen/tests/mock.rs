//! The mock's HTTP surface, exercised over loopback with a real HTTP client, as a gateway
//! would use it.

use std::sync::Once;
use std::time::Duration;

use aigw_jepsen::mock::{MockBehavior, MockServer, MockStats};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::{Instant, sleep, timeout};

fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

struct Harness {
    server: MockServer,
    client: reqwest::Client,
    base: String,
}

impl Harness {
    async fn start(behavior: MockBehavior) -> Self {
        Self::start_with(behavior, reqwest::Client::builder()).await
    }

    async fn start_with(behavior: MockBehavior, client: reqwest::ClientBuilder) -> Self {
        install_crypto();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = MockServer::start(listener, behavior).await.unwrap();
        let base = format!("http://{}", server.addr());
        let client = client.no_proxy().build().unwrap();
        Self {
            server,
            client,
            base,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn chat(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn stats(&self) -> MockStats {
        self.client
            .get(self.url("/mock/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls the stats until `check` holds, for at most two seconds.
    async fn wait_for_stats(&self, check: impl Fn(&MockStats) -> bool) -> MockStats {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let stats = self.stats().await;
            if check(&stats) {
                return stats;
            }
            assert!(Instant::now() < deadline, "stats never matched: {stats:?}");
            sleep(Duration::from_millis(10)).await;
        }
    }

    async fn step(&self) {
        let response = self
            .client
            .post(self.url("/mock/step"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}

fn user(text: &str) -> Value {
    json!({"model": "gpt-test", "messages": [{"role": "user", "content": text}]})
}

fn streaming(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

/// Reads SSE `data:` payloads one at a time from a streamed response.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "a stream must be served as SSE"
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event's payload; `Ok(None)` at a clean end of body, `Err` when the body
    /// breaks off.
    async fn next(&mut self) -> Result<Option<String>, reqwest::Error> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let payload = event.trim_end().strip_prefix("data: ").unwrap().to_owned();
                return Ok(Some(payload));
            }
            match self.response.chunk().await? {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => {
                    assert!(self.buffer.is_empty(), "partial event: {:?}", self.buffer);
                    return Ok(None);
                }
            }
        }
    }

    async fn next_json(&mut self) -> Value {
        let payload = self.next().await.unwrap().expect("another event");
        serde_json::from_str(&payload).unwrap()
    }

    async fn all(mut self) -> Vec<String> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await.unwrap() {
            events.push(event);
        }
        events
    }
}

fn content(event: &Value) -> &str {
    event["choices"][0]["delta"]["content"].as_str().unwrap()
}

#[tokio::test]
async fn non_streamed_completion_echoes_the_model_and_reports_usage() {
    let mock = Harness::start(MockBehavior {
        chunks: 3,
        ..MockBehavior::default()
    })
    .await;
    let response = mock.chat(user(&"x".repeat(40))).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-test");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-mock-"));
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Hello from the");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13})
    );
}

#[tokio::test]
async fn stream_ends_with_done_and_has_a_usage_chunk_only_when_asked() {
    let mock = Harness::start(MockBehavior {
        chunks: 4,
        ..MockBehavior::default()
    })
    .await;

    let events = Events::new(mock.chat(streaming(user("hi"))).await)
        .all()
        .await;
    assert_eq!(events.len(), 1 + 4 + 1 + 1, "{events:#?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let parsed: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(
        parsed[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let text: String = parsed[1..5].iter().map(content).collect();
    assert_eq!(text, "Hello from the aigw");
    assert_eq!(parsed[5]["choices"][0]["finish_reason"], "stop");
    for chunk in &parsed {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-test");
        assert_eq!(chunk["id"], parsed[0]["id"]);
        assert!(chunk.get("usage").is_none());
    }

    let mut body = streaming(user("hi"));
    body["stream_options"] = json!({"include_usage": true});
    let events = Events::new(mock.chat(body).await).all().await;
    assert_eq!(events.len(), 1 + 4 + 1 + 1 + 1);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    assert_eq!(usage["usage"]["total_tokens"], 5);

    let stats = mock.stats().await;
    assert_eq!((stats.streams_started, stats.streams_completed), (2, 2));
    assert_eq!((stats.streams_cancelled, stats.in_flight), (0, 0));
}

fn with_tools(mut body: Value) -> Value {
    body["tools"] = json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "other"}}
    ]);
    body
}

#[tokio::test]
async fn tools_get_a_tool_call_until_a_tool_result_arrives() {
    let mock = Harness::start(MockBehavior::default()).await;

    let body: Value = mock
        .chat(with_tools(user("weather?")))
        .await
        .json()
        .await
        .unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_mock_"));
    assert_eq!(call["type"], "function");
    assert_eq!(
        call["function"],
        json!({"name": "get_weather", "arguments": "{}"})
    );

    let mut events = Events::new(mock.chat(streaming(with_tools(user("weather?")))).await);
    let role = events.next_json().await;
    assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
    let head = events.next_json().await;
    let head = &head["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(head["index"], 0);
    assert!(head["id"].as_str().unwrap().starts_with("call_mock_"));
    assert_eq!(head["type"], "function");
    assert_eq!(
        head["function"],
        json!({"name": "get_weather", "arguments": ""})
    );
    let arguments = events.next_json().await;
    assert_eq!(
        arguments["choices"][0]["delta"]["tool_calls"][0],
        json!({"index": 0, "function": {"arguments": "{}"}})
    );
    let finish = events.next_json().await;
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(events.next().await.unwrap().unwrap(), "[DONE]");

    let mut after_tool = with_tools(user("weather?"));
    after_tool["messages"] = json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_mock_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_mock_1", "content": "sunny"}
    ]);
    let body: Value = mock.chat(after_tool).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["choices"][0]["message"]["content"].is_string());
}

#[tokio::test]
async fn embeddings_have_the_requested_dimensions_and_are_deterministic() {
    let mock = Harness::start(MockBehavior::default()).await;
    let embed = |body: Value| {
        let request = mock.client.post(mock.url("/v1/embeddings")).json(&body);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };

    let one = embed(json!({"model": "emb", "input": "hello"})).await;
    assert_eq!(one["object"], "list");
    assert_eq!(one["model"], "emb");
    assert_eq!(one["data"][0]["object"], "embedding");
    assert_eq!(one["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert!(one["usage"]["prompt_tokens"].as_u64().unwrap() >= 1);

    let many = embed(json!({"model": "emb", "input": ["hello", "world"], "dimensions": 3})).await;
    let data = many["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["index"], i);
        assert_eq!(item["embedding"].as_array().unwrap().len(), 3);
    }
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    let again = embed(json!({"model": "emb", "input": ["hello"], "dimensions": 3})).await;
    assert_eq!(again["data"][0]["embedding"], data[0]["embedding"]);

    let tokens = embed(json!({"model": "emb", "input": [[1, 2, 3], [4]], "dimensions": 2})).await;
    assert_eq!(tokens["data"].as_array().unwrap().len(), 2);
    let b64 = embed(json!({"model": "emb", "input": "x", "encoding_format": "base64"})).await;
    assert_eq!(b64["data"][0]["embedding"].as_str().unwrap().len(), 44);
}

#[tokio::test]
async fn injected_errors_use_the_error_status_and_openai_shape() {
    let mock = Harness::start(MockBehavior {
        error_rate: 1.0,
        error_status: 429,
        ..MockBehavior::default()
    })
    .await;
    for body in [user("hi"), streaming(user("hi"))] {
        let response = mock.chat(body).await;
        assert_eq!(response.status(), 429);
        let error: Value = response.json().await.unwrap();
        let error = &error["error"];
        assert!(error["message"].is_string());
        assert!(error["type"].is_string());
        assert!(error["param"].is_null());
        assert!(error.get("code").is_some());
    }
    let stats = mock.stats().await;
    assert_eq!(
        (stats.requests, stats.streams_started, stats.in_flight),
        (2, 0, 0)
    );
}

#[tokio::test]
async fn malformed_json_and_unknown_routes_get_openai_errors() {
    let mock = Harness::start(MockBehavior::default()).await;
    let response = mock
        .client
        .post(mock.url("/v1/chat/completions"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let response = mock.client.get(mock.url("/v1/nope")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string());
}

#[tokio::test]
async fn latency_delays_the_response_head() {
    let mock = Harness::start(MockBehavior {
        latency_ms: 150,
        ..MockBehavior::default()
    })
    .await;
    let started = Instant::now();
    let response = mock.chat(user("hi")).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 200);
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[tokio::test]
async fn hang_never_answers_and_is_released_when_the_client_gives_up() {
    let mock = Harness::start(MockBehavior {
        hang: true,
        ..MockBehavior::default()
    })
    .await;
    let request = mock
        .client
        .post(mock.url("/v1/chat/completions"))
        .json(&user("hi"))
        .timeout(Duration::from_millis(200))
        .send();
    let (result, stats) = tokio::join!(request, async {
        mock.wait_for_stats(|s| s.in_flight == 1).await
    });
    assert!(result.unwrap_err().is_timeout());
    assert_eq!(stats.requests, 1);
    mock.wait_for_stats(|s| s.in_flight == 0).await;
}

#[tokio::test]
async fn gated_stream_sends_the_second_chunk_only_after_a_step() {
    let mock = Harness::start(MockBehavior {
        chunks: 3,
        gated: true,
        ..MockBehavior::default()
    })
    .await;
    let mut events = Events::new(mock.chat(streaming(user("hi"))).await);
    events.next_json().await;
    assert_eq!(content(&events.next_json().await), "Hello");
    assert!(
        timeout(Duration::from_millis(150), events.next())
            .await
            .is_err(),
        "chunk 2 must wait for a step"
    );

    mock.step().await;
    assert_eq!(content(&events.next_json().await), " from");
    // A step issued before the stream waits for it is not lost.
    mock.step().await;
    sleep(Duration::from_millis(20)).await;
    assert_eq!(content(&events.next_json().await), " the");
    assert_eq!(
        events.next_json().await["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(events.next().await.unwrap().unwrap(), "[DONE]");
    assert_eq!(events.next().await.unwrap(), None);
    mock.wait_for_stats(|s| s.streams_completed == 1 && s.in_flight == 0)
        .await;
}

#[tokio::test]
async fn one_step_releases_every_waiting_gated_stream() {
    let mock = Harness::start(MockBehavior {
        chunks: 2,
        gated: true,
        ..MockBehavior::default()
    })
    .await;
    let mut a = Events::new(mock.chat(streaming(user("a"))).await);
    let mut b = Events::new(mock.chat(streaming(user("b"))).await);
    for events in [&mut a, &mut b] {
        events.next_json().await;
        events.next_json().await;
    }
    mock.step().await;
    for events in [a, b] {
        assert_eq!(events.all().await.last().unwrap(), "[DONE]");
    }
}

#[tokio::test]
async fn drop_after_chunks_aborts_the_body_without_done() {
    let mock = Harness::start(MockBehavior {
        chunks: 5,
        drop_after_chunks: Some(2),
        ..MockBehavior::default()
    })
    .await;
    let mut events = Events::new(mock.chat(streaming(user("hi"))).await);
    let mut received = Vec::new();
    let error = loop {
        match events.next().await {
            Ok(Some(event)) => received.push(event),
            Ok(None) => panic!("the body ended cleanly after {received:?}"),
            Err(error) => break error,
        }
    };
    assert!(error.is_body() || error.is_decode(), "{error:?}");
    assert_eq!(received.len(), 1 + 2, "{received:?}");
    assert!(!received.iter().any(|e| e == "[DONE]"));
    let stats = mock.wait_for_stats(|s| s.in_flight == 0).await;
    assert_eq!((stats.streams_completed, stats.streams_cancelled), (0, 0));
}

async fn client_dropping_a_stream_counts_as_cancelled(client: reqwest::ClientBuilder) {
    let mock = Harness::start_with(
        MockBehavior {
            chunks: 4,
            gated: true,
            ..MockBehavior::default()
        },
        client,
    )
    .await;
    let mut events = Events::new(mock.chat(streaming(user("hi"))).await);
    events.next_json().await;
    events.next_json().await;
    assert_eq!(mock.stats().await.streams_cancelled, 0);
    drop(events);
    let stats = mock
        .wait_for_stats(|s| s.streams_cancelled == 1 && s.in_flight == 0)
        .await;
    assert_eq!((stats.streams_started, stats.streams_completed), (1, 0));
}

#[tokio::test]
async fn client_dropping_an_http1_stream_counts_as_cancelled() {
    client_dropping_a_stream_counts_as_cancelled(reqwest::Client::builder().http1_only()).await;
}

#[tokio::test]
async fn client_dropping_an_http2_stream_counts_as_cancelled() {
    client_dropping_a_stream_counts_as_cancelled(
        reqwest::Client::builder().http2_prior_knowledge(),
    )
    .await;
}

#[tokio::test]
async fn control_put_patch_and_get_change_the_behaviour() {
    let mock = Harness::start(MockBehavior::default()).await;
    let control = mock.url("/mock/control");

    let current: MockBehavior = mock
        .client
        .get(&control)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current, MockBehavior::default());

    let put = mock
        .client
        .put(&control)
        .json(&json!({"chunks": 2, "unhealthy": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let expected = MockBehavior {
        chunks: 2,
        unhealthy: true,
        ..MockBehavior::default()
    };
    assert_eq!(put.json::<MockBehavior>().await.unwrap(), expected);

    let patch = mock
        .client
        .patch(&control)
        .json(&json!({"latency_ms": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 200);
    let current: MockBehavior = mock
        .client
        .get(&control)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        current,
        MockBehavior {
            latency_ms: 5,
            ..expected
        }
    );

    // New requests see the change at once.
    let body: Value = mock.chat(user("hi")).await.json().await.unwrap();
    assert_eq!(body["usage"]["completion_tokens"], 2);

    for (method, body) in [
        (reqwest::Method::PATCH, json!({"latncy_ms": 5})),
        (reqwest::Method::PUT, json!({"error_rate": 2.0})),
        (reqwest::Method::PATCH, json!({"error_status": 42})),
    ] {
        let response = mock
            .client
            .request(method, &control)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"]["message"].is_string());
    }

    mock.server.set_behavior(MockBehavior::default());
    let current: MockBehavior = mock
        .client
        .get(&control)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current, MockBehavior::default());
}

#[tokio::test]
async fn last_request_records_the_body_and_headers() {
    let mock = Harness::start(MockBehavior::default()).await;
    let response = mock
        .client
        .get(mock.url("/mock/last_request"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let mut body = user("hi");
    body["x_passthrough"] = json!({"kept": [1, 2]});
    mock.client
        .post(mock.url("/v1/chat/completions"))
        .bearer_auth("sk-upstream")
        .header("x-custom", "yes")
        .json(&body)
        .send()
        .await
        .unwrap();
    let last: Value = mock
        .client
        .get(mock.url("/mock/last_request"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(last["method"], "POST");
    assert_eq!(last["path"], "/v1/chat/completions");
    assert_eq!(last["headers"]["authorization"], "Bearer sk-upstream");
    assert_eq!(last["headers"]["x-custom"], "yes");
    assert_eq!(last["body"], body);
}

#[tokio::test]
async fn health_follows_the_unhealthy_flag_while_api_calls_are_served() {
    let mock = Harness::start(MockBehavior::default()).await;
    let health = mock.client.get(mock.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );

    mock.server.set_behavior(MockBehavior {
        unhealthy: true,
        ..MockBehavior::default()
    });
    let health = mock.client.get(mock.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    assert_eq!(mock.chat(user("hi")).await.status(), 200);

    let models: Value = mock
        .client
        .get(mock.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert!(models["data"].as_array().unwrap().len() >= 2);
    assert_eq!(models["data"][0]["object"], "model");
}

#[tokio::test]
async fn shutdown_ends_hung_requests_and_stops_listening() {
    let mock = Harness::start(MockBehavior {
        hang: true,
        ..MockBehavior::default()
    })
    .await;
    let request = mock
        .client
        .post(mock.url("/v1/chat/completions"))
        .json(&user("hi"))
        .send();
    let hung = tokio::spawn(request);
    mock.wait_for_stats(|s| s.in_flight == 1).await;
    let addr = mock.server.addr();
    timeout(Duration::from_secs(2), mock.server.shutdown())
        .await
        .expect("shutdown must not wait for hung requests");
    let result = timeout(Duration::from_secs(2), hung)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_err(), "the hung request must fail, not answer");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn dropping_the_server_stops_it() {
    let mock = Harness::start(MockBehavior::default()).await;
    let addr = mock.server.addr();
    drop(mock);
    let deadline = Instant::now() + Duration::from_secs(2);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still listening after drop");
        sleep(Duration::from_millis(10)).await;
    }
}
