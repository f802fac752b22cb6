//! `[[bootstrap.mcp_servers]]`, `[[bootstrap.agents]]`, `[[bootstrap.sandboxes]]` and a key's
//! `mcp_servers`: what parses into what, and how each mistake is reported.

use aigw_config::{Config, parse_with_env};

fn env(name: &str) -> Option<String> {
    (name == "FS_TOKEN").then(|| "fs-token-value".to_owned())
}

fn ok(text: &str) -> Config {
    match parse_with_env(text, "aigw.toml", &env) {
        Ok(config) => config,
        Err(errors) => panic!("expected the config to parse, got:\n{errors}"),
    }
}

fn errors(text: &str) -> Vec<String> {
    match parse_with_env(text, "aigw.toml", &env) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors.to_string().lines().map(str::to_owned).collect(),
    }
}

const NODE: &str = "[node]\nid = 1\napi_listen = \"127.0.0.1:8080\"\n";

#[test]
fn backends_parse_with_interpolated_headers_and_keys_name_their_mcp_servers() {
    let config = ok(&format!(
        r#"{NODE}
[[bootstrap.mcp_servers]]
name = "fs"
url = "http://127.0.0.1:9100/mcp/"
headers = {{ Authorization = "Bearer ${{FS_TOKEN}}", "X-Team" = "infra" }}

[[bootstrap.mcp_servers]]
name = "git"
url = "https://mcp.example.com"

[[bootstrap.agents]]
type = "coder"
url = "http://127.0.0.1:9200"

[[bootstrap.sandboxes]]
name = "py"
url = "http://127.0.0.1:9300/v1"
headers = {{ "X-Api-Key" = "k" }}

[[bootstrap.keys]]
name = "a"
secret = "sk-aaaaaaaa"
mcp_servers = ["fs"]

[[bootstrap.keys]]
name = "b"
secret = "sk-bbbbbbbb"

[[bootstrap.keys]]
name = "c"
secret = "sk-cccccccc"
mcp_servers = ["*"]

[[bootstrap.keys]]
name = "d"
secret = "sk-dddddddd"
mcp_servers = []
"#
    ));
    let backends = &config.bootstrap.backends;
    let fs = &backends.mcp_servers[0];
    assert_eq!(fs.name, "fs");
    assert_eq!(fs.url, "http://127.0.0.1:9100/mcp");
    let auth = fs
        .headers
        .iter()
        .find(|(n, _)| n == "Authorization")
        .unwrap();
    assert_eq!(auth.1.expose(), "Bearer fs-token-value");
    assert_eq!(backends.mcp_servers[1].headers, vec![]);
    assert_eq!(backends.agents[0].name, "coder");
    assert_eq!(backends.sandboxes[0].url, "http://127.0.0.1:9300/v1");
    let keys = &config.bootstrap.keys;
    assert_eq!(keys[0].mcp_servers, Some(vec!["fs".to_owned()]));
    assert_eq!(keys[1].mcp_servers, None);
    assert_eq!(keys[2].mcp_servers, None);
    assert_eq!(keys[3].mcp_servers, Some(vec![]));
    // The settings document keeps the backends as written: `${ENV}` stays a reference.
    let doc = &config.bootstrap.settings_toml;
    assert!(
        doc.contains("[[mcp_servers]]") && doc.contains("${FS_TOKEN}"),
        "{doc}"
    );
    assert!(!doc.contains("fs-token-value"), "{doc}");
    // Debug output names headers but never their values.
    let shown = format!("{config:?}");
    assert!(!shown.contains("fs-token-value") && shown.contains("Authorization"));
}

#[test]
fn backend_mistakes_are_reported_at_their_line_with_what_was_expected() {
    let text = format!(
        r#"{NODE}
[[bootstrap.mcp_servers]]
name = "a/b"
url = "ftp://x"

[[bootstrap.mcp_servers]]
name = "fs"
url = "http://127.0.0.1:1"
headers = {{ "Connection" = "close" }}

[[bootstrap.mcp_servers]]
name = "fs"
url = "http://127.0.0.1:2"

[[bootstrap.agents]]
type = ""
url = "http://127.0.0.1:3"

[[bootstrap.sandboxes]]
name = "py"
url = "http://127.0.0.1:4"
headers = {{ "Bad Name" = "v" }}

[[bootstrap.keys]]
name = "k"
secret = "sk-kkkkkkkk"
mcp_servers = ["nope"]
"#
    );
    let errors = errors(&text);
    let expected = [
        "aigw.toml:6:8: bootstrap.mcp_servers[0].name: invalid MCP server name \"a/b\"",
        "aigw.toml:7:7: bootstrap.mcp_servers[0].url: invalid url \"ftp://x\"",
        "aigw.toml:12:11: bootstrap.mcp_servers[1].headers.Connection: \"Connection\" is managed by the gateway",
        "aigw.toml:15:8: bootstrap.mcp_servers[2].name: duplicate MCP server name \"fs\" (first defined at line 10)",
        "aigw.toml:19:8: bootstrap.agents[0].type: invalid agent type \"\"",
        "aigw.toml:25:11: bootstrap.sandboxes[0].headers.Bad Name: invalid header name",
        "aigw.toml:30:16: bootstrap.keys[0].mcp_servers[0]: unknown MCP server \"nope\"; expected one of: \"a/b\", \"fs\"",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (error, start) in errors.iter().zip(expected) {
        assert!(
            error.starts_with(start),
            "{error}\n  expected to start with\n{start}"
        );
    }
}

#[test]
fn a_header_value_with_a_line_break_is_rejected_without_showing_it() {
    let text = format!(
        "{NODE}\n[[bootstrap.agents]]\ntype = \"coder\"\nurl = \"http://127.0.0.1:1\"\nheaders = {{ \"X-Key\" = \"secret-part\\r\\nInjected: 1\" }}\n"
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("bootstrap.agents[0].headers.X-Key: invalid header value"),
        "{}",
        errors[0]
    );
    assert!(!errors[0].contains("secret-part"));
}

#[test]
fn unknown_keys_in_a_backend_are_rejected() {
    let errors = errors(&format!(
        "{NODE}\n[[bootstrap.sandboxes]]\nname = \"py\"\nurl = \"http://127.0.0.1:1\"\ntoken = \"x\"\n"
    ));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("token"), "{}", errors[0]);
}
