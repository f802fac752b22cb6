//! The cluster-wide settings document: TOML with `[[upstreams]]`, `[[models]]`,
//! `[[mcp_servers]]`, `[[agents]]` and `[[sandboxes]]`, the same fields as the config's
//! `[[bootstrap.upstreams]]` and so on.

use aigw_config::{Backends, ModelSettings, UpstreamSettings};

/// The top-level keys of a settings document.
const SECTIONS: [&str; 5] = ["upstreams", "models", "mcp_servers", "agents", "sandboxes"];

/// The typed settings of one document revision, as this node resolves them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub upstreams: Vec<UpstreamSettings>,
    pub models: Vec<ModelSettings>,
    /// MCP servers, agent backends and sandboxes.
    pub backends: Backends,
}

/// Where a node looks up `${NAME}` references: the process environment in production, a map
/// in tests.
pub type EnvLookup = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The process environment as an `EnvLookup`.
pub fn process_env() -> EnvLookup {
    std::sync::Arc::new(|name| std::env::var(name).ok())
}

/// Parses and validates a settings document, resolving `${ENV}` with `env`. Errors name the
/// key and what was expected.
pub fn parse_settings(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| format!("settings: {e}"))?;
    if let Some(other) = table.keys().find(|k| !SECTIONS.contains(&k.as_str())) {
        return Err(format!(
            "settings: unknown key `{other}`; expected one of `{}`",
            SECTIONS.join("`, `")
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
    let config = aigw_config::parse_with_env(&wrapped, "settings", env).map_err(|errors| {
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
        backends: config.bootstrap.backends,
    })
}

/// The document with every credential that is written literally (not as a `${ENV}`
/// reference) replaced by `"***"`: what may be shown to an operator or printed in a diff.
pub fn redact_settings(text: &str) -> String {
    let Ok(mut table) = toml::from_str::<toml::Table>(text) else {
        return String::new();
    };
    if let Some(toml::Value::Array(upstreams)) = table.get_mut("upstreams") {
        for upstream in upstreams.iter_mut() {
            if let Some(toml::Value::String(key)) =
                upstream.as_table_mut().and_then(|u| u.get_mut("api_key"))
                && !is_env_reference(key)
            {
                *key = "***".to_owned();
            }
        }
    }
    // Backend headers carry credentials too; a value that mixes text and a reference
    // (`Bearer ${TOKEN}`) is redacted whole.
    for section in ["mcp_servers", "agents", "sandboxes"] {
        let Some(toml::Value::Array(backends)) = table.get_mut(section) else {
            continue;
        };
        for backend in backends.iter_mut() {
            let headers = backend.as_table_mut().and_then(|b| b.get_mut("headers"));
            let Some(toml::Value::Table(headers)) = headers else {
                continue;
            };
            for (_, value) in headers.iter_mut() {
                if !value.as_str().is_some_and(is_env_reference) {
                    *value = toml::Value::String("***".to_owned());
                }
            }
        }
    }
    toml::to_string(&table).unwrap_or_default()
}

/// `${NAME}` and nothing else.
fn is_env_reference(value: &str) -> bool {
    value
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
        .is_some_and(|name| !name.is_empty() && !name.contains(['$', '{', '}']))
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

    fn env(name: &str) -> Option<String> {
        (name == "SOME_UPSTREAM_KEY").then(|| "upstream-secret".to_owned())
    }

    #[test]
    fn bootstrap_settings_keep_env_references_and_drop_keys() {
        let config = aigw_config::parse_with_env(CONFIG, "c.toml", &env).unwrap();
        let doc = &config.bootstrap.settings_toml;
        assert!(doc.contains("${SOME_UPSTREAM_KEY}"));
        assert!(!doc.contains("sk-secret-123"));
        assert!(doc.contains("[[upstreams]]") && doc.contains("[[models]]"));
        let settings = parse_settings(doc, &env).unwrap();
        assert_eq!(
            settings.upstreams[0].api_key.as_ref().unwrap().expose(),
            "upstream-secret"
        );
        assert!(
            parse_settings(doc, &|_| None)
                .unwrap_err()
                .contains("SOME_UPSTREAM_KEY")
        );
    }

    #[test]
    fn literal_credentials_are_redacted_and_references_kept() {
        let doc = "[[upstreams]]\nid = \"a\"\nkind = \"openai\"\nbase_url = \"http://h:1/v1\"\napi_key = \"sk-literal\"\n\n[[upstreams]]\nid = \"b\"\nkind = \"openai\"\nbase_url = \"http://h:2/v1\"\napi_key = \"${B_KEY}\"\n";
        let shown = redact_settings(doc);
        assert!(!shown.contains("sk-literal"), "{shown}");
        assert!(
            shown.contains("${B_KEY}") && shown.contains("***"),
            "{shown}"
        );
    }

    #[test]
    fn bootstrap_key_limits_reach_the_replicated_key() {
        let text = format!(
            "{CONFIG}limits = {{ rpm = 60, calls = {{ limit = 100, period = \"month\" }} }}\n"
        );
        let config = aigw_config::parse_with_env(&text, "c.toml", &env).unwrap();
        let snapshot = crate::StateSnapshot::from_bootstrap(&config.bootstrap);
        let key = snapshot.keys.authenticate("sk-secret-123").unwrap();
        assert_eq!(key.limits.rpm, Some(60));
        assert_eq!(
            key.limits.calls,
            Some(crate::Budget {
                limit: 100,
                period: crate::Period::Month
            })
        );
    }

    #[test]
    fn backend_headers_are_redacted_unless_they_are_env_references() {
        let doc = "[[mcp_servers]]\nname = \"fs\"\nurl = \"http://h:1\"\nheaders = { Authorization = \"Bearer lit-secret\", \"X-Key\" = \"${FS_KEY}\" }\n\n[[agents]]\ntype = \"coder\"\nurl = \"http://h:2\"\nheaders = { \"X-Mixed\" = \"Bearer ${T}\" }\n\n[[sandboxes]]\nname = \"py\"\nurl = \"http://h:3\"\n";
        let shown = redact_settings(doc);
        assert!(!shown.contains("lit-secret"), "{shown}");
        assert!(!shown.contains("Bearer ${T}"), "{shown}");
        assert!(shown.contains("${FS_KEY}"), "{shown}");
        assert!(shown.contains("[[sandboxes]]"), "{shown}");
    }

    #[test]
    fn backends_in_a_document_are_live_settings() {
        let doc = "[[mcp_servers]]\nname = \"fs\"\nurl = \"http://h:1/mcp\"\nheaders = { \"X-Key\" = \"${SOME_UPSTREAM_KEY}\" }\n\n[[agents]]\ntype = \"coder\"\nurl = \"http://h:2\"\n\n[[sandboxes]]\nname = \"py\"\nurl = \"http://h:3\"\n";
        let settings = parse_settings(doc, &env).unwrap();
        let fs = &settings.backends.mcp_servers[0];
        assert_eq!(
            (fs.name.as_str(), fs.url.as_str()),
            ("fs", "http://h:1/mcp")
        );
        assert_eq!(fs.headers[0].1.expose(), "upstream-secret");
        assert_eq!(settings.backends.agents[0].name, "coder");
        assert_eq!(settings.backends.sandboxes[0].name, "py");
        let err = parse_settings(
            "[[sandboxes]]\nname = \"a b\"\nurl = \"http://h:3\"\n",
            &env,
        )
        .unwrap_err();
        assert!(err.contains("sandboxes[0].name"), "{err}");
    }

    #[test]
    fn a_bootstrap_key_keeps_its_mcp_servers() {
        let text = CONFIG.replace(
            "[[bootstrap.keys]]",
            "[[bootstrap.mcp_servers]]\nname = \"fs\"\nurl = \"http://h:1\"\n\n[[bootstrap.keys]]",
        ) + "mcp_servers = [\"fs\"]\n";
        let config = aigw_config::parse_with_env(&text, "c.toml", &env).unwrap();
        let snapshot = crate::StateSnapshot::from_bootstrap(&config.bootstrap);
        let key = snapshot.keys.authenticate("sk-secret-123").unwrap();
        assert!(key.may_use_mcp_server("fs"));
        assert!(!key.may_use_mcp_server("git"));
        assert_eq!(snapshot.backends.mcp_servers[0].name, "fs");
    }

    #[test]
    fn a_document_parses_into_typed_settings() {
        let doc = "[[upstreams]]\nid = \"a\"\nkind = \"openai\"\nbase_url = \"http://h:1/v1\"\n\n[[models]]\nname = \"m\"\ntargets = [{ upstream = \"a\", model = \"x\" }]\n";
        let settings = parse_settings(doc, &env).unwrap();
        assert_eq!(settings.upstreams[0].id.as_str(), "a");
        assert_eq!(settings.models[0].targets[0].model, "x");
    }

    #[test]
    fn invalid_documents_say_which_key_is_wrong() {
        let err = parse_settings(
            "[[models]]\nname = \"m\"\ntargets = [{ upstream = \"nope\", model = \"x\" }]\n",
            &env,
        )
        .unwrap_err();
        assert!(err.contains("models[0].targets[0].upstream"), "{err}");
        let err = parse_settings("keys = []", &env).unwrap_err();
        assert!(err.contains("unknown key `keys`"), "{err}");
    }
}
