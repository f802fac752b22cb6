//! The command line's client of the admin API: `aigw apply`, `aigw cluster status` and
//! `aigw cluster remove`. It talks to any node's admin listener; the cluster forwards writes.

use std::path::Path;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Where the admin API is and the token for it.
pub struct AdminTarget {
    /// e.g. `http://127.0.0.1:8081`
    pub base_url: String,
    pub token: String,
}

impl AdminTarget {
    /// From a node's config file: its `admin_listen` and `[admin] token`.
    pub fn from_config(path: &Path) -> anyhow::Result<Self> {
        let config = aigw_config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let addr = config
            .node
            .admin_listen
            .with_context(|| format!("{}: node.admin_listen is not set", path.display()))?;
        let token = config
            .admin
            .with_context(|| format!("{}: [admin] token is not set", path.display()))?
            .token;
        Ok(Self {
            base_url: format!("http://{addr}"),
            token: token.expose().to_owned(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let url = format!("{}/admin/v1{path}", self.base_url.trim_end_matches('/'));
        let mut request = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        let body = match body {
            Some(value) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(value.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            client.request(request.body(body)?),
        )
        .await
        .with_context(|| format!("{url}: no answer within 30 s"))?
        .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }
}

fn error_message(status: StatusCode, body: &Value) -> String {
    let message = body["error"]["message"].as_str().unwrap_or("(no message)");
    format!("{status}: {message}")
}

/// The document in a canonical form (keys sorted, one layout), so the diff shows changes in
/// meaning rather than in formatting.
/// Literal credentials are masked the way the admin API masks them, on both sides.
fn canonical(text: &str) -> anyhow::Result<String> {
    toml::from_str::<toml::Table>(text)?;
    Ok(aigw_cluster::redact_settings(text))
}

/// `aigw apply FILE`: prints the diff between FILE and the live settings, then (unless
/// `dry_run`) commits FILE, refusing if the live settings changed since they were read.
pub async fn apply(target: &AdminTarget, file: &Path, dry_run: bool) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let wanted =
        canonical(&text).with_context(|| format!("{} is not valid TOML", file.display()))?;
    let (status, live) = target.call(Method::GET, "/settings", None).await?;
    if !status.is_success() {
        bail!(
            "reading the live settings: {}",
            error_message(status, &live)
        );
    }
    let revision = live["revision"].as_u64().unwrap_or(0);
    let current = canonical(live["toml"].as_str().unwrap_or_default()).unwrap_or_default();
    let diff = similar::TextDiff::from_lines(&current, &wanted);
    if diff.ratio() == 1.0 {
        println!(
            "No changes: the live settings (revision {revision}) already match {}.",
            file.display()
        );
        return Ok(());
    }
    print!(
        "{}",
        diff.unified_diff().context_radius(3).header(
            &format!("live (revision {revision})"),
            &file.display().to_string()
        )
    );
    if dry_run {
        println!("Dry run: nothing was changed.");
        return Ok(());
    }
    let body = json!({"toml": text, "expected_revision": revision});
    let (status, answer) = target.call(Method::PUT, "/settings", Some(body)).await?;
    if !status.is_success() {
        bail!(
            "applying {}: {}",
            file.display(),
            error_message(status, &answer)
        );
    }
    println!(
        "Applied: settings are now at revision {}.",
        answer["revision"]
    );
    Ok(())
}

/// `aigw cluster status`: the members and their state, as a table.
pub async fn cluster_status(target: &AdminTarget) -> anyhow::Result<()> {
    let (status, body) = target.call(Method::GET, "/cluster", None).await?;
    if !status.is_success() {
        bail!("{}", error_message(status, &body));
    }
    println!(
        "cluster {}  leader {}  term {}  commit {}  (asked node {}, applied {})",
        body["cluster_name"].as_str().unwrap_or("?"),
        body["leader"],
        body["term"],
        body["commit_index"],
        body["node_id"],
        body["applied_index"],
    );
    println!(
        "{:<6} {:<22} {:<8} {:<6} {:<6} {:<22} {:<22} version",
        "id", "cluster", "role", "live", "lag", "api", "admin"
    );
    // Values are turned into strings first: `Value`'s Display ignores width.
    let text = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for m in body["members"].as_array().into_iter().flatten() {
        println!(
            "{:<6} {:<22} {:<8} {:<6} {:<6} {:<22} {:<22} {}",
            text(&m["id"]),
            text(&m["cluster_addr"]),
            text(&m["raft_role"]),
            text(&m["live"]),
            text(&m["lag"]),
            text(&m["api_addr"]),
            text(&m["admin_addr"]),
            text(&m["version"]),
        );
    }
    Ok(())
}

/// `aigw cluster remove ID`.
pub async fn cluster_remove(target: &AdminTarget, id: u64) -> anyhow::Result<()> {
    let (status, body) = target
        .call(Method::DELETE, &format!("/cluster/members/{id}"), None)
        .await?;
    if !status.is_success() {
        bail!("{}", error_message(status, &body));
    }
    println!("Node {id} was removed from the cluster.");
    Ok(())
}
