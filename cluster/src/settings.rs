//! The cluster-wide settings document: TOML with `[[upstreams]]` and `[[models]]`, the same
//! fields as the config's `[[bootstrap.upstreams]]` and `[[bootstrap.models]]`.

use aigw_config::{ModelSettings, UpstreamSettings};

/// The typed settings of one document revision, as this node resolves them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub upstreams: Vec<UpstreamSettings>,
    pub models: Vec<ModelSettings>,
}

/// Parses and validates a settings document, resolving `${ENV}` from this process's
/// environment. Errors name the key and what was expected.
pub fn parse_settings(text: &str) -> Result<Settings, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| format!("settings: {e}"))?;
    if let Some(other) = table.keys().find(|k| *k != "upstreams" && *k != "models") {
        return Err(format!(
            "settings: unknown key `{other}`; expected `upstreams` or `models`"
        ));
    }
    // Validation lives in aigw-config; it checks a whole config, so wrap the document as the
    // `[bootstrap]` of a minimal one and report errors by key.
    let mut full = toml::Table::new();
    let mut node = toml::Table::new();
    node.insert("id".into(), toml::Value::Integer(0));
    node.insert(
        "api_listen".into(),
        toml::Value::String("127.0.0.1:0".into()),
    );
    full.insert("node".into(), toml::Value::Table(node));
    full.insert("bootstrap".into(), toml::Value::Table(table));
    let wrapped = toml::to_string(&full).map_err(|e| format!("settings: {e}"))?;
    let config = aigw_config::parse(&wrapped, "settings").map_err(|errors| {
        errors
            .as_slice()
            .iter()
            .map(|e| format!("{}: {}", e.key.trim_start_matches("bootstrap."), e.message))
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    Ok(Settings {
        upstreams: config.bootstrap.upstreams,
        models: config.bootstrap.models,
    })
}

/// The settings document held in a config file's `[bootstrap]` (without its keys), exactly as
/// written: `${ENV}` references are kept, not resolved.
pub fn settings_from_config_text(config_text: &str) -> Result<String, String> {
    let mut table: toml::Table = toml::from_str(config_text).map_err(|e| e.to_string())?;
    let mut settings = match table.remove("bootstrap") {
        Some(toml::Value::Table(bootstrap)) => bootstrap,
        _ => toml::Table::new(),
    };
    settings.remove("keys");
    toml::to_string(&settings).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[node]
id = 1
api_listen = "127.0.0.1:8080"

[[bootstrap.upstreams]]
id = "a"
kind = "openai"
base_url = "http://127.0.0.1:9001/v1"
api_key = "${SOME_UPSTREAM_KEY}"

[[bootstrap.models]]
name = "m"
targets = [{ upstream = "a", model = "x" }]

[[bootstrap.keys]]
name = "k"
secret = "sk-secret-123"
"#;

    #[test]
    fn bootstrap_settings_keep_env_references_and_drop_keys() {
        let doc = settings_from_config_text(CONFIG).unwrap();
        assert!(doc.contains("${SOME_UPSTREAM_KEY}"));
        assert!(!doc.contains("sk-secret-123"));
        assert!(doc.contains("[[upstreams]]") && doc.contains("[[models]]"));
    }

    #[test]
    fn a_document_parses_into_typed_settings() {
        let doc = "[[upstreams]]\nid = \"a\"\nkind = \"openai\"\nbase_url = \"http://h:1/v1\"\n\n[[models]]\nname = \"m\"\ntargets = [{ upstream = \"a\", model = \"x\" }]\n";
        let settings = parse_settings(doc).unwrap();
        assert_eq!(settings.upstreams[0].id.as_str(), "a");
        assert_eq!(settings.models[0].targets[0].model, "x");
    }

    #[test]
    fn invalid_documents_say_which_key_is_wrong() {
        let err = parse_settings(
            "[[models]]\nname = \"m\"\ntargets = [{ upstream = \"nope\", model = \"x\" }]\n",
        )
        .unwrap_err();
        assert!(err.contains("models[0].targets[0].upstream"), "{err}");
        let err = parse_settings("keys = []").unwrap_err();
        assert!(err.contains("unknown key `keys`"), "{err}");
    }
}
