//! Client connections that hold the node's sockets without making progress: one that sends
//! nothing, half a request head, a body shorter than its `Content-Length`, an idle keep-alive
//! connection, and more connections than `server.max_connections`. Each is closed in bounded
//! time, and a flood of the API listener leaves the admin API answering.
//!
//! Raw TCP on loopback, with short configured timeouts; every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use aigw::RunningNode;
use aigw_jepsen::mock::{MockBehavior, MockServer};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN_TOKEN: &str = "admin-token-for-connection-tests";

/// A node with `server` as its `[server]` section and an admin listener, in front of a mock
/// (returned to keep it serving).
async fn node_with_server(server: &str) -> (RunningNode, MockServer) {
    let mock = mock(MockBehavior::default()).await;
    let text = with_admin(
        &config_text(&mock.addr().to_string(), server, ""),
        ADMIN_TOKEN,
    );
    (node_with(&text).await, mock)
}

fn short_timeouts(extra: &str) -> String {
    format!(
        "header_read_timeout = \"300ms\"\nbody_idle_timeout = \"300ms\"\nkeep_alive_timeout = \"300ms\"\n{extra}"
    )
}

/// Everything the server sends until it closes the connection; `None` if it is still open
/// after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&received).into_owned())
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed() {
    let (node, _mock) = node_with_server(&short_timeouts("")).await;
    let mut silent = connect(node.api_addr()).await;
    let said = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert_eq!(
        said.as_deref(),
        Some(""),
        "the silent connection stayed open"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_request_head_is_closed() {
    let (node, _mock) = node_with_server(&short_timeouts("")).await;
    let mut slow = connect(node.api_addr()).await;
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Ty")
        .await
        .unwrap();
    let said = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(said.is_some(), "the half-sent head stayed open");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_its_content_length_is_answered_408_and_closed() {
    let (node, _mock) = node_with_server(&short_timeouts("")).await;
    let mut slow = connect(node.api_addr()).await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\": \"chat"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let said = read_until_closed(&mut slow, Duration::from_secs(5))
        .await
        .expect("the short body stayed open");
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(said.contains("\"code\":\"request_timeout\""), "{said}");
    node.shutdown().await;
}

/// Regression (the MCP SDK test once got "Server disconnected without sending a response"): a
/// request refused before its body was read had its connection closed by hyper after the
/// answer, without saying so, so a client that reused it lost its next request. The answer
/// now says `Connection: close`, so the client opens a new connection instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_given_before_the_body_was_read_says_the_connection_closes() {
    let (node, _mock) = node_with_server("").await;
    let mut client = connect(node.api_addr()).await;
    // No key: refused at once; the body has not even been sent.
    let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n\
                Content-Type: application/json\r\nContent-Length: 20\r\n\r\n";
    client.write_all(head.as_bytes()).await.unwrap();
    let mut said = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&said).contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        said.extend_from_slice(&buf[..n]);
    }
    let said = String::from_utf8_lossy(&said).to_ascii_lowercase();
    assert!(said.starts_with("http/1.1 401"), "{said}");
    assert!(said.contains("\r\nconnection: close\r\n"), "{said}");
    let _ = client.write_all(b"{\"model\": \"chat\"}  ").await;
    assert!(
        read_until_closed(&mut client, Duration::from_secs(5))
            .await
            .is_some(),
        "the connection is closed after the answer"
    );

    // A request whose body was read keeps its connection.
    let mut client = connect(node.api_addr()).await;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let said = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(said.starts_with("http/1.1 400"), "{said}");
    assert!(!said.contains("connection: close"), "{said}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_its_timeout() {
    let (node, _mock) = node_with_server(
        "header_read_timeout = \"30s\"\nbody_idle_timeout = \"30s\"\nkeep_alive_timeout = \"300ms\"\n",
    )
    .await;
    let mut kept = connect(node.api_addr()).await;
    let request =
        format!("GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\n\r\n");
    kept.write_all(request.as_bytes()).await.unwrap();
    let said = read_until_closed(&mut kept, Duration::from_secs(5))
        .await
        .expect("the idle keep-alive connection stayed open");
    assert!(said.starts_with("HTTP/1.1 200"), "{said}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_shed_and_the_admin_api_still_answers() {
    let (node, _mock) =
        node_with_server("keep_alive_timeout = \"30s\"\nmax_connections = 4\n").await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(node.api_addr()).await);
    }
    // The accept loop takes the four in order; the fifth is the newest and is shed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut newest = connect(node.api_addr()).await;
    let said = read_until_closed(&mut newest, Duration::from_secs(5))
        .await
        .expect("the connection over the cap stayed open");
    assert!(said.starts_with("HTTP/1.1 503"), "{said}");

    let admin = admin_request(&node, ADMIN_TOKEN, reqwest::Method::GET, "/cluster")
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status().as_u16(), 200);

    // A closed connection gives its place back.
    drop(held.pop());
    let mut answered = false;
    for _ in 0..50 {
        let response = client()
            .get(url(&node, "/v1/models"))
            .bearer_auth(KEY)
            .send()
            .await;
        if response.is_ok_and(|r| r.status().as_u16() == 200) {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered, "no place came free after a connection closed");
    drop(held);
    node.shutdown().await;
}
