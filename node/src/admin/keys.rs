//! `/admin/v1/keys`: create (the secret is shown once), list, read, change, delete.
//! Reads are linearizable; writes go through Raft from any node.

use std::collections::BTreeMap;

use aigw_cluster::{
    AllowedModels, Budget, BudgetKey, Command, Dimension, KeyId, KeyLimits, KeyPatch, KeyRecord,
    KeySecretHash, Outcome, Period, unix_now,
};
use aigw_config::Capture;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, body::Bytes};
use http::StatusCode;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::AdminState;
use super::error::AdminError;
use super::parse_json;

/// `limits` as the admin API takes and shows them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsJson {
    #[serde(default)]
    rpm: Option<u64>,
    #[serde(default)]
    tpm: Option<u64>,
    #[serde(default)]
    max_concurrent: Option<u32>,
    #[serde(default)]
    calls: Option<BudgetJson>,
    #[serde(default)]
    tokens: Option<BudgetJson>,
    #[serde(default)]
    input_tokens: Option<BudgetJson>,
    #[serde(default)]
    output_tokens: Option<BudgetJson>,
    #[serde(default)]
    rpm_burst: Option<u64>,
    #[serde(default)]
    tpm_burst: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetJson {
    limit: u64,
    period: String,
}

impl LimitsJson {
    fn into_limits(self) -> Result<KeyLimits, AdminError> {
        let budget = |name: &str, b: Option<BudgetJson>| -> Result<Option<Budget>, AdminError> {
            b.map(|b| {
                let period = Period::parse(&b.period).ok_or_else(|| {
                    AdminError::BadRequest(format!(
                        "limits.{name}.period: {:?} is not a period; expected minute, hour, day, month or total",
                        b.period
                    ))
                })?;
                Ok(Budget { limit: b.limit, period })
            })
            .transpose()
        };
        for (name, value) in [
            ("rpm", self.rpm),
            ("tpm", self.tpm),
            ("rpm_burst", self.rpm_burst),
            ("tpm_burst", self.tpm_burst),
        ] {
            if value == Some(0) {
                return Err(AdminError::BadRequest(format!(
                    "limits.{name} must be greater than 0"
                )));
            }
        }
        for (name, burst, rate, needs) in [
            ("rpm_burst", self.rpm_burst, self.rpm, "rpm"),
            ("tpm_burst", self.tpm_burst, self.tpm, "tpm"),
        ] {
            if burst.is_some() && rate.is_none() {
                return Err(AdminError::BadRequest(format!(
                    "limits.{name} is the burst of limits.{needs}, which is not set"
                )));
            }
        }
        if self.max_concurrent == Some(0) {
            return Err(AdminError::BadRequest(
                "limits.max_concurrent must be greater than 0".into(),
            ));
        }
        Ok(KeyLimits {
            rpm: self.rpm,
            tpm: self.tpm,
            max_concurrent: self.max_concurrent,
            calls: budget("calls", self.calls)?,
            tokens: budget("tokens", self.tokens)?,
            input_tokens: budget("input_tokens", self.input_tokens)?,
            output_tokens: budget("output_tokens", self.output_tokens)?,
            rpm_burst: self.rpm_burst,
            tpm_burst: self.tpm_burst,
        })
    }
}

fn limits_view(limits: &KeyLimits) -> Value {
    let budget =
        |b: &Option<Budget>| b.map(|b| json!({"limit": b.limit, "period": b.period.as_str()}));
    json!({
        "rpm": limits.rpm,
        "tpm": limits.tpm,
        "max_concurrent": limits.max_concurrent,
        "calls": budget(&limits.calls),
        "tokens": budget(&limits.tokens),
        "input_tokens": budget(&limits.input_tokens),
        "output_tokens": budget(&limits.output_tokens),
        "rpm_burst": limits.rpm_burst,
        "tpm_burst": limits.tpm_burst,
    })
}

/// A key as the admin API shows it: everything but the secret, which is never stored.
pub(crate) fn key_view(key: &KeyRecord) -> Value {
    json!({
        "object": "api_key",
        "id": key.id.as_str(),
        "name": key.name,
        "models": key.models.to_names(),
        "enabled": key.enabled,
        "expires_at": key.expires_at,
        "metadata": key.metadata,
        "created_at": key.created_at,
        "revision": key.revision,
        "limits": limits_view(&key.limits),
        "mcp_servers": mcp_servers_view(key.mcp_servers.as_deref()),
        "records": key.records.map(Capture::as_str),
    })
}

/// `["*"]` for every MCP server, else the list (possibly empty: none).
fn mcp_servers_view(servers: Option<&[String]>) -> Value {
    match servers {
        None => json!(["*"]),
        Some(names) => json!(names),
    }
}

/// `mcp_servers` as the admin API takes it: `null` or `["*"]` for every server, else names.
fn check_mcp_servers(servers: Option<Vec<String>>) -> Result<Option<Vec<String>>, AdminError> {
    let Some(names) = servers else {
        return Ok(None);
    };
    if names.iter().any(|n| n == "*") {
        if names.len() > 1 {
            return Err(AdminError::BadRequest(
                "`mcp_servers`: \"*\" must be the only entry".into(),
            ));
        }
        return Ok(None);
    }
    if names.iter().any(|n| n.is_empty() || n.len() > 200) {
        return Err(AdminError::BadRequest(
            "`mcp_servers` must list MCP server names (1 to 200 characters each), or be [\"*\"] for all".into(),
        ));
    }
    Ok(Some(names))
}

/// Each budget's state in its current period, cluster-wide: what is used for sure (given back
/// by closed leases), what nodes hold (leased, partly used), what is left to lease.
fn usage_view(key: &KeyRecord, snapshot: &aigw_cluster::StateSnapshot) -> Value {
    let now = unix_now();
    let mut out = serde_json::Map::new();
    for dimension in Dimension::ALL {
        let Some(budget) = key.limits.budget(dimension) else {
            continue;
        };
        let at = BudgetKey {
            key: key.id.clone(),
            dimension,
            period: budget.period.id_at(now),
        };
        let (closed, leased, available) = match snapshot.budgets.get(&at) {
            Some(state) => (state.closed_used, state.leased(), state.available),
            None => (0, 0, budget.limit),
        };
        out.insert(
            dimension.as_str().to_owned(),
            json!({
                "limit": budget.limit,
                "period": budget.period.as_str(),
                "used": closed,
                "leased_to_nodes": leased,
                "remaining": available,
                "resets_at": budget.period.ends_after(now),
            }),
        );
    }
    Value::Object(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    #[serde(default = "all_models")]
    models: Vec<String>,
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default = "yes")]
    enabled: bool,
    /// A secret of the caller's choosing; generated when absent.
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    limits: Option<LimitsJson>,
    /// The MCP servers the key may use; absent, `null` or `["*"]`: all.
    #[serde(default)]
    mcp_servers: Option<Vec<String>>,
    /// `"full"` or `"metadata"`: what its calls' records keep; absent or `null`: the node's
    /// (or the model's) policy.
    #[serde(default)]
    records: Option<Capture>,
}

fn all_models() -> Vec<String> {
    vec!["*".to_owned()]
}

fn yes() -> bool {
    true
}

fn check_name(name: &str) -> Result<(), AdminError> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(AdminError::BadRequest(
            "`name` must be 1 to 200 characters".into(),
        ));
    }
    Ok(())
}

fn check_models(models: Vec<String>) -> Result<AllowedModels, AdminError> {
    if models.is_empty() {
        return Err(AdminError::BadRequest(
            "`models` must list model names, or be [\"*\"] for all".into(),
        ));
    }
    if models.len() > 1 && models.iter().any(|m| m == "*") {
        return Err(AdminError::BadRequest(
            "`models`: \"*\" must be the only entry".into(),
        ));
    }
    Ok(AllowedModels::from_names(models))
}

pub(crate) async fn create(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Response, AdminError> {
    let request: CreateKey = parse_json(&body)?;
    check_name(&request.name)?;
    let secret = match request.secret {
        Some(secret) if secret.len() < 8 || secret.chars().any(char::is_whitespace) => {
            return Err(AdminError::BadRequest(
                "`secret` must be at least 8 characters with no whitespace".into(),
            ));
        }
        Some(secret) => secret,
        None => format!("sk-aigw-{:032x}", rand::random::<u128>()),
    };
    let key = KeyRecord {
        id: KeyId::random(),
        name: request.name,
        secret_hash: KeySecretHash::of_secret(&secret),
        models: check_models(request.models)?,
        enabled: request.enabled,
        expires_at: request.expires_at,
        metadata: request.metadata,
        created_at: unix_now(),
        revision: 0,
        limits: request
            .limits
            .map(LimitsJson::into_limits)
            .transpose()?
            .unwrap_or_default(),
        mcp_servers: check_mcp_servers(request.mcp_servers)?,
        records: request.records,
    };
    match state.cluster.write(Command::CreateKey { key }).await? {
        Outcome::Key(key) => {
            let mut view = key_view(&key);
            view["secret"] = Value::String(secret);
            Ok((StatusCode::CREATED, Json(view)).into_response())
        }
        other => Err(AdminError::Internal(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    limit: Option<usize>,
    /// Only keys whose id sorts after this one (the previous page's `last_id`).
    #[serde(default)]
    after: Option<String>,
}

pub(crate) async fn list(
    State(state): State<AdminState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, AdminError> {
    state.cluster.linearizable_read().await?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let snapshot = state.cluster.state().load();
    let mut page: Vec<&KeyRecord> = snapshot
        .keys
        .iter()
        .filter(|k| {
            query
                .after
                .as_deref()
                .is_none_or(|after| k.id.as_str() > after)
        })
        .take(limit + 1)
        .collect();
    let has_more = page.len() > limit;
    page.truncate(limit);
    Ok(Json(json!({
        "object": "list",
        "data": page.iter().map(|k| key_view(k)).collect::<Vec<_>>(),
        "has_more": has_more,
        "last_id": page.last().map(|k| k.id.as_str()),
        "total": snapshot.keys.len(),
    })))
}

fn key_id(id: &str) -> Result<KeyId, AdminError> {
    KeyId::parse(id).ok_or_else(|| AdminError::NotFound(format!("no key with id `{id}`")))
}

pub(crate) async fn get(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let id = key_id(&id)?;
    state.cluster.linearizable_read().await?;
    let snapshot = state.cluster.state().load();
    let key = snapshot
        .keys
        .get(&id)
        .ok_or_else(|| AdminError::NotFound(format!("no key with id `{id}`")))?;
    let mut view = key_view(key);
    view["usage"] = usage_view(key, &snapshot);
    if let Some(rates) = state.app.quotas.get().and_then(|q| q.local_rates(&key.id)) {
        view["rate_on_this_node"] = json!(rates);
    }
    Ok(Json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchKey {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    enabled: Option<bool>,
    /// Absent: unchanged; `null`: no expiry; a number: unix seconds.
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<Option<u64>>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    limits: Option<LimitsJson>,
    /// Absent: unchanged; `null` or `["*"]`: every MCP server; a list: only those.
    #[serde(default, deserialize_with = "present")]
    mcp_servers: Option<Option<Vec<String>>>,
    /// Absent: unchanged; `null`: the node's (or the model's) policy; `"full"` or `"metadata"`.
    #[serde(default, deserialize_with = "present")]
    records: Option<Option<Capture>>,
}

/// Tells a field that is present (even as `null`) from one that is absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

pub(crate) async fn update(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, AdminError> {
    let id = key_id(&id)?;
    let request: PatchKey = parse_json(&body)?;
    if let Some(name) = &request.name {
        check_name(name)?;
    }
    let patch = KeyPatch {
        name: request.name,
        models: request.models.map(check_models).transpose()?,
        enabled: request.enabled,
        expires_at: request.expires_at,
        metadata: request.metadata,
        limits: request.limits.map(LimitsJson::into_limits).transpose()?,
        mcp_servers: request.mcp_servers.map(check_mcp_servers).transpose()?,
        records: request.records,
    };
    match state
        .cluster
        .write(Command::UpdateKey { id, patch })
        .await?
    {
        Outcome::Key(key) => Ok(Json(key_view(&key))),
        other => Err(AdminError::Internal(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}

pub(crate) async fn delete(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let id = key_id(&id)?;
    state
        .cluster
        .write(Command::DeleteKey { id: id.clone() })
        .await?;
    Ok(Json(
        json!({"object": "api_key.deleted", "id": id.as_str(), "deleted": true}),
    ))
}
