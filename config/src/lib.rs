//! aigw's configuration: the typed settings, read from a TOML file.
//!
//! This crate owns the TOML contract (`aigw.example.toml` shows all of it), `${NAME}`
//! interpolation of string values from the environment, and validation: a [`Config`] it
//! returns is already checked (ids unique, references resolved, weights, timeouts, probe and
//! breaker settings in range, addresses and durations parsed), and a file it rejects gets every problem reported as
//! `file:line:column: key.path: what was expected`.
//!
//! It must never do anything but read: no sockets, no directories created, no logging, and no
//! secret value in an error message or a `Debug` output. It depends on no other aigw crate.
//!
//! Called by the node binary at startup ([`load`]) and by tests that build configs from text
//! ([`parse`], [`parse_with_env`]); the cluster and proxy take the settings types it defines.
//!
//! The pipeline is `interpolate` + `raw` (serde's view of the file, strings interpolated as
//! they are deserialized) then `validate` (typed settings in `model`), with `error` turning
//! byte spans into the positions the operator reads.

#![forbid(unsafe_code)]

mod backends;
mod error;
mod interpolate;
mod model;
mod raw;
mod secret;
mod validate;

use std::path::Path;

pub use backends::{BackendSettings, Backends};
pub use error::{ConfigError, ConfigErrors};
pub use model::{
    AdminSettings, Bootstrap, BreakerSettings, BudgetSettings, Capture, CidrBlock, ClusterMember,
    ClusterSettings, Config, HealthCheckSettings, InvalidUpstreamId, KeyLimitSettings, KeySettings,
    LimitPeriod, MAX_ATTEMPTS, MAX_TARGETS_PER_MODEL, MIN_ID_SECRET_CHARS, ModelAccess,
    ModelSettings, NatsAuth, NodeId, NodeSettings, Ratio, RecordsSettings, RetryBudgetSettings,
    RoutingSettings, ServerSettings, SinkKind, SinkSettings, Strategy, TargetSettings,
    TokenEncoding, UpstreamId, UpstreamKind, UpstreamSettings, UpstreamTimeouts,
};
pub use secret::Secret;

use error::Locator;

/// Reads and parses the config file at `path`, interpolating from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|io| {
        ConfigErrors::one(ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read config file: {io}"),
        })
    })?;
    parse(&text, &file)
}

/// Parses config `text`; `file` names it in errors. Interpolates from the process environment.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    parse_with_env(text, file, &|name| std::env::var(name).ok())
}

/// Parses config `text`, taking `${NAME}` values from `env` instead of the process environment.
pub fn parse_with_env(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let at = Locator { file, text };
    let raw = interpolate::with_env(env, || {
        let deserializer = toml::Deserializer::parse(text).map_err(|e| at.syntax(&e))?;
        serde_path_to_error::deserialize::<_, raw::RawConfig>(deserializer)
            .map_err(|e| at.deserialize(&e))
    })
    .map_err(ConfigErrors::one)?;
    let mut config = validate::validate(raw, &at)?;
    config.bootstrap.settings_toml = bootstrap_settings_as_written(text);
    Ok(config)
}

/// The `[bootstrap]` table of a (valid) config text without its keys, as a TOML document with
/// `[[upstreams]]` and `[[models]]`, strings as written (no interpolation).
fn bootstrap_settings_as_written(text: &str) -> String {
    let mut table: toml::Table = toml::from_str(text).unwrap_or_default();
    let mut settings = match table.remove("bootstrap") {
        Some(toml::Value::Table(bootstrap)) => bootstrap,
        _ => toml::Table::new(),
    };
    settings.remove("keys");
    toml::to_string(&settings).unwrap_or_default()
}
