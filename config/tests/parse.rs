//! The TOML contract end to end: what parses into what, and exactly how each mistake is
//! reported (file, line, column, key path, expectation).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use aigw_config::{
    BreakerSettings, Config, HealthCheckSettings, ModelAccess, Ratio, RetryBudgetSettings,
    RoutingSettings, Strategy, UpstreamKind, UpstreamTimeouts, load, parse, parse_with_env,
};

fn env(name: &str) -> Option<String> {
    match name {
        "AIGW_ADMIN_TOKEN" => Some("admin-token-value".to_owned()),
        "AIGW_DEMO_KEY" => Some("demo-key-value".to_owned()),
        "PORT" => Some("9001".to_owned()),
        "UPSTREAM_HOST" => Some("10.0.0.7".to_owned()),
        _ => None,
    }
}

fn ok(text: &str) -> Config {
    match parse_with_env(text, "aigw.toml", &env) {
        Ok(config) => config,
        Err(errors) => panic!("expected the config to parse, got:\n{errors}"),
    }
}

/// The errors' display, one string per error.
fn errors(text: &str) -> Vec<String> {
    match parse_with_env(text, "aigw.toml", &env) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors.to_string().lines().map(str::to_owned).collect(),
    }
}

const NODE: &str = "[node]\nid = 1\napi_listen = \"127.0.0.1:8080\"\n";

#[test]
fn example_parses_when_its_env_vars_are_set() {
    let config = ok(Config::example());
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();

    assert_eq!(config.node.id, 1);
    assert_eq!(config.node.api_listen, addr("127.0.0.1:8080"));
    assert_eq!(config.node.admin_listen, Some(addr("127.0.0.1:8081")));
    assert_eq!(config.node.cluster_listen, Some(addr("127.0.0.1:7001")));
    assert_eq!(config.node.data_dir, PathBuf::from("./data/node1"));
    assert_eq!(config.server.max_body_bytes, 16 * 1024 * 1024);
    assert_eq!(config.server.shutdown_grace, Duration::from_secs(30));
    assert_eq!(config.admin.unwrap().token.expose(), "admin-token-value");

    let [upstream] = &config.bootstrap.upstreams[..] else {
        panic!("one upstream expected")
    };
    assert_eq!(upstream.id.as_str(), "vllm-a");
    assert_eq!(upstream.kind, UpstreamKind::OpenAi);
    assert_eq!(upstream.base_url, "http://127.0.0.1:9001/v1");
    assert_eq!(upstream.api_key, None);
    assert_eq!(upstream.timeouts, UpstreamTimeouts::default());
    assert_eq!(upstream.health, HealthCheckSettings::default());
    assert_eq!(upstream.breaker, BreakerSettings::default());
    assert_eq!(config.routing, RoutingSettings::default());

    let [model] = &config.bootstrap.models[..] else {
        panic!("one model expected")
    };
    assert_eq!(model.name, "chat-default");
    assert_eq!(model.strategy, Strategy::Weighted);
    assert_eq!(model.targets.len(), 1);
    assert_eq!(model.targets[0].upstream, upstream.id);
    assert_eq!(model.targets[0].model, "qwen2.5-7b-instruct");
    assert_eq!((model.targets[0].weight, model.targets[0].priority), (1, 0));

    let [key] = &config.bootstrap.keys[..] else {
        panic!("one key expected")
    };
    assert_eq!(key.name, "demo");
    assert_eq!(key.secret.expose(), "demo-key-value");
    assert_eq!(key.models, ModelAccess::All);
}

#[test]
fn example_file_needs_its_env_vars() {
    let errors = parse_with_env(Config::example(), "aigw.toml", &|_| None).unwrap_err();
    assert!(errors.to_string().contains("`AIGW_ADMIN_TOKEN` is not set"));
}

#[test]
fn optional_sections_and_keys_take_their_defaults() {
    let config = ok(NODE);
    assert_eq!(config.node.admin_listen, None);
    assert_eq!(config.node.cluster_listen, None);
    assert_eq!(config.node.data_dir, PathBuf::from("./data"));
    assert_eq!(config.server.max_body_bytes, 16_777_216);
    assert_eq!(config.server.max_upload_bytes, 26_214_400);
    assert_eq!(config.server.id_secret, None);
    assert_eq!(config.server.shutdown_grace, Duration::from_secs(30));
    assert_eq!(config.server.header_read_timeout, Duration::from_secs(30));
    assert_eq!(config.server.body_idle_timeout, Duration::from_secs(30));
    assert_eq!(config.server.keep_alive_timeout, Duration::from_secs(75));
    assert_eq!(config.server.max_connections, 10_000);
    assert_eq!(config.admin, None);
    assert_eq!(config.routing.max_attempts, 3);
    assert_eq!(config.routing.session_ttl, Duration::from_secs(600));
    assert_eq!(config.routing.peer_down_quorum, 2);
    assert_eq!(
        config.routing.retry_budget,
        RetryBudgetSettings {
            ratio: Ratio::new(0.2).unwrap(),
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    );
    assert!(config.bootstrap.upstreams.is_empty());
    assert!(config.bootstrap.models.is_empty());
    assert!(config.bootstrap.keys.is_empty());
}

#[test]
fn omitted_target_fields_keys_models_and_timeouts_take_their_defaults() {
    let config = ok(&format!(
        r#"{NODE}
[[bootstrap.upstreams]]
id = "a"
kind = "openai"
base_url = "https://api.example.com/v1/"
api_key = "sk-upstream"
timeouts = {{ idle = "2m" }}

[[bootstrap.models]]
name = "m"
strategy = "least-loaded"
targets = [{{ upstream = "a", model = "x" }}, {{ upstream = "a", model = "y", weight = 3, priority = 2 }}]

[[bootstrap.models]]
name = "n"
strategy = "sticky"
targets = [{{ upstream = "a", model = "z" }}]

[[bootstrap.keys]]
name = "all"
secret = "secret-one"

[[bootstrap.keys]]
name = "some"
secret = "secret-two"
models = ["n"]
records = "metadata"
"#
    ));
    let upstream = &config.bootstrap.upstreams[0];
    assert_eq!(upstream.base_url, "https://api.example.com/v1");
    assert_eq!(upstream.api_key.as_ref().unwrap().expose(), "sk-upstream");
    assert_eq!(
        upstream.timeouts,
        UpstreamTimeouts {
            idle: Duration::from_secs(120),
            ..UpstreamTimeouts::default()
        }
    );
    let m = &config.bootstrap.models[0];
    assert_eq!(m.strategy, Strategy::LeastLoaded);
    assert_eq!((m.targets[0].weight, m.targets[0].priority), (1, 0));
    assert_eq!((m.targets[1].weight, m.targets[1].priority), (3, 2));
    assert_eq!(config.bootstrap.models[1].strategy, Strategy::Sticky);
    assert_eq!(config.bootstrap.keys[0].models, ModelAccess::All);
    assert_eq!(config.bootstrap.keys[0].records, None);
    assert_eq!(
        config.bootstrap.keys[1].records,
        Some(aigw_config::Capture::Metadata)
    );
    let some = &config.bootstrap.keys[1].models;
    assert_eq!(*some, ModelAccess::Only(vec!["n".to_owned()]));
    assert!(some.allows("n") && !some.allows("m"));
}

#[test]
fn env_vars_are_interpolated_in_any_string_value() {
    let config = ok(r#"[node]
id = 1
api_listen = "127.0.0.1:${PORT}"
data_dir = "/var/lib/aigw/${PORT}"

[[bootstrap.upstreams]]
id = "up-${PORT}"
kind = "openai"
base_url = "http://${UPSTREAM_HOST}:${PORT}/v1"
timeouts = { connect = "${PORT}ms" }
"#);
    assert_eq!(config.node.api_listen.port(), 9001);
    assert_eq!(config.node.data_dir, PathBuf::from("/var/lib/aigw/9001"));
    let upstream = &config.bootstrap.upstreams[0];
    assert_eq!(upstream.id.as_str(), "up-9001");
    assert_eq!(upstream.base_url, "http://10.0.0.7:9001/v1");
    assert_eq!(upstream.timeouts.connect, Duration::from_millis(9001));
}

#[test]
fn unset_env_var_is_an_error_naming_it_at_its_line() {
    let errors = errors(&format!(
        "{NODE}\n[admin]\ntoken = \"Bearer ${{AIGW_MISSING_TOKEN}}\"\n"
    ));
    assert_eq!(
        errors,
        [
            "aigw.toml:6:9: admin.token: environment variable `AIGW_MISSING_TOKEN` is not set; \
             expected it to be set (write `$${` for a literal `${`)"
        ]
    );
}

#[test]
fn double_dollar_brace_is_a_literal_dollar_brace() {
    let config = ok(&format!(
        "{NODE}\n[admin]\ntoken = \"$${{NOT_A_VAR}}-and-${{PORT}}\"\n"
    ));
    assert_eq!(
        config.admin.unwrap().token.expose(),
        "${NOT_A_VAR}-and-9001"
    );
}

#[test]
fn parse_reads_the_process_environment() {
    let unset = parse(
        "[node]\nid = 1\napi_listen = \"${AIGW_CONFIG_TEST_SURELY_UNSET_7F3A}\"\n",
        "aigw.toml",
    )
    .unwrap_err();
    assert!(
        unset
            .to_string()
            .starts_with("aigw.toml:3:14: node.api_listen: environment variable `AIGW_CONFIG_TEST_SURELY_UNSET_7F3A` is not set")
    );
}

#[test]
fn unknown_key_is_rejected_naming_the_key_and_its_line() {
    assert_eq!(
        errors(&format!("{NODE}api_lisen = \"127.0.0.1:1\"\n")),
        [
            "aigw.toml:4:1: node.api_lisen: unknown key; expected one of `id`, `api_listen`, \
          `admin_listen`, `cluster_listen`, `data_dir`"
        ]
    );
}

#[test]
fn unknown_key_in_an_inline_table_is_rejected() {
    let errors = errors(&format!(
        r#"{NODE}
[[bootstrap.upstreams]]
id = "a"
kind = "openai"
base_url = "http://a"
timeouts = {{ conect = "1s" }}
"#
    ));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with(
            "aigw.toml:9:14: bootstrap.upstreams[0].timeouts.conect: unknown key; expected one of"
        ),
        "{errors:?}"
    );
}

#[test]
fn unknown_section_is_rejected() {
    assert_eq!(
        errors(&format!("{NODE}[nodes]\n")),
        [
            "aigw.toml:4:2: nodes: unknown key; expected one of `node`, `server`, `routing`, `cluster`, `admin`, `records`, `bootstrap`"
        ]
    );
}

#[test]
fn records_settings_have_defaults_and_sinks_are_checked() {
    let config = ok(&format!(
        "{NODE}[records]\ncapture = \"metadata\"\nfsync_interval = \"10ms\"\n\n\
         [[records.sinks]]\nname = \"js\"\nkind = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\n"
    ));
    let records = &config.records;
    assert!(records.enabled);
    assert_eq!(records.capture, aigw_config::Capture::Metadata);
    assert_eq!(records.fsync_interval, std::time::Duration::from_millis(10));
    assert_eq!(records.max_body_bytes, 1024 * 1024);
    assert_eq!(records.sinks.len(), 1);
    let aigw_config::SinkKind::Nats {
        subject, stream, ..
    } = &records.sinks[0].kind
    else {
        panic!("a nats sink: {:?}", records.sinks[0].kind);
    };
    assert_eq!(
        (subject.as_str(), stream.as_str()),
        ("aigw.records", "AIGW_RECORDS")
    );

    let kafka = ok(&format!(
        "{NODE}[[records.sinks]]\nname = \"k\"\nkind = \"kafka\"\nbrokers = [\"127.0.0.1:9092\"]\npartitions = 3\n"
    ));
    assert_eq!(
        kafka.records.sinks[0].kind,
        aigw_config::SinkKind::Kafka {
            brokers: vec!["127.0.0.1:9092".into()],
            topic: "aigw-records".into(),
            partitions: 3,
        }
    );

    let found = errors(&format!(
        "{NODE}[records]\ncapture = \"some\"\n\n\
         [[records.sinks]]\nname = \"a b\"\nkind = \"nats\"\n\n\
         [[records.sinks]]\nname = \"k\"\nkind = \"kafka\"\n\n\
         [[records.sinks]]\nname = \"n\"\nkind = \"nats\"\n"
    ));
    let all = found.join("\n");
    assert!(
        all.contains("records.capture: unknown capture \"some\""),
        "{all}"
    );
    assert!(all.contains("records.sinks[0].name"), "{all}");
    assert!(
        all.contains("records.sinks[1].brokers: a kafka sink needs brokers"),
        "{all}"
    );
    assert!(
        all.contains("records.sinks[2].url: a nats sink needs url"),
        "{all}"
    );

    let sink = |auth: &str| {
        format!(
            "{NODE}[[records.sinks]]\nname = \"js\"\nkind = \"nats\"\nurl = \"nats://h:4222\"\n{auth}"
        )
    };
    let config = ok(&sink("user = \"aigw\"\npassword = \"pw-1234\"\n"));
    let aigw_config::SinkKind::Nats { auth, .. } = &config.records.sinks[0].kind else {
        panic!("a nats sink");
    };
    let aigw_config::NatsAuth::UserPassword { user, password } = auth else {
        panic!("user and password: {auth:?}");
    };
    assert_eq!((user.as_str(), password.expose()), ("aigw", "pw-1234"));
    assert!(
        !format!("{auth:?}").contains("pw-1234"),
        "the password is not printed"
    );
    for (auth, error) in [
        (
            "password = \"pw\"\n",
            "records.sinks[0].user: password needs a user",
        ),
        (
            "user = \"aigw\"\n",
            "records.sinks[0].password: user needs a password",
        ),
        (
            "token = \"t\"\nuser = \"aigw\"\npassword = \"pw\"\n",
            "records.sinks[0].user: a nats sink authenticates one way",
        ),
    ] {
        let all = errors(&sink(auth)).join("\n");
        assert!(all.contains(error), "{auth}: {all}");
    }
}

#[test]
fn missing_required_key_is_named_at_its_table() {
    assert_eq!(
        errors("# comment\n[node]\nid = 1\n"),
        ["aigw.toml:2:1: node.api_listen: missing required key"]
    );
    assert_eq!(errors(""), ["aigw.toml:1:1: node: missing required key"]);
}

#[test]
fn wrong_type_names_the_key_its_line_and_the_expected_type() {
    assert_eq!(
        errors("[node]\nid = \"one\"\napi_listen = \"127.0.0.1:8080\"\n"),
        ["aigw.toml:2:6: node.id: invalid type: string \"one\", expected u64"]
    );
    assert_eq!(
        errors(&format!("{NODE}[server]\nmax_body_bytes = -1\n")),
        ["aigw.toml:5:18: server.max_body_bytes: invalid value: integer `-1`, expected usize"]
    );
}

#[test]
fn bad_duration_is_rejected_with_what_was_expected() {
    let errors = errors(&format!(
        "{NODE}[server]\nshutdown_grace = \"30 parsecs\"\n"
    ));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with(
            "aigw.toml:5:18: server.shutdown_grace: invalid duration \"30 parsecs\" (unknown time unit"
        ),
        "{errors:?}"
    );
    assert!(errors[0].ends_with("expected a duration such as \"30s\", \"500ms\" or \"5m\""));
}

#[test]
fn connection_timeouts_and_cap_are_parsed() {
    let config = ok(&format!(
        "{NODE}[server]\nheader_read_timeout = \"5s\"\nbody_idle_timeout = \"2s\"\n\
         keep_alive_timeout = \"20s\"\nmax_connections = 512\n"
    ));
    assert_eq!(config.server.header_read_timeout, Duration::from_secs(5));
    assert_eq!(config.server.body_idle_timeout, Duration::from_secs(2));
    assert_eq!(config.server.keep_alive_timeout, Duration::from_secs(20));
    assert_eq!(config.server.max_connections, 512);
}

#[test]
fn zero_connection_timeouts_and_cap_are_rejected() {
    assert_eq!(
        errors(&format!(
            "{NODE}[server]\nheader_read_timeout = \"0s\"\nbody_idle_timeout = \"0ms\"\n\
             keep_alive_timeout = \"0s\"\nmax_connections = 0\n"
        )),
        [
            "aigw.toml:5:23: server.header_read_timeout: must be greater than 0; expected a duration such as \"5s\"",
            "aigw.toml:6:21: server.body_idle_timeout: must be greater than 0; expected a duration such as \"5s\"",
            "aigw.toml:7:22: server.keep_alive_timeout: must be greater than 0; expected a duration such as \"5s\"",
            "aigw.toml:8:19: server.max_connections: must be greater than 0; expected a number of client connections such as 10000",
        ]
    );
}

#[test]
fn zero_upstream_timeout_is_rejected() {
    assert_eq!(
        errors(&format!(
            "{NODE}[[bootstrap.upstreams]]\nid = \"a\"\nkind = \"openai\"\nbase_url = \"http://a\"\n\
             timeouts = {{ total = \"0s\" }}\n"
        )),
        [
            "aigw.toml:8:22: bootstrap.upstreams[0].timeouts.total: must be greater than 0; \
          expected a duration such as \"5s\""
        ]
    );
}

#[test]
fn bad_socket_address_is_rejected_with_what_was_expected() {
    assert_eq!(
        errors(
            "[node]\nid = 1\napi_listen = \"127.0.0.1:8080\"\nadmin_listen = \"localhost:8081\"\n"
        ),
        [
            "aigw.toml:4:16: node.admin_listen: invalid socket address \"localhost:8081\"; \
          expected an IP address and port such as \"127.0.0.1:8080\""
        ]
    );
}

#[test]
fn zero_max_body_bytes_is_rejected() {
    assert_eq!(
        errors(&format!("{NODE}[server]\nmax_body_bytes = 0\n")),
        [
            "aigw.toml:5:18: server.max_body_bytes: must be greater than 0; \
          expected a number of bytes such as 16777216"
        ]
    );
}

const UPSTREAM_A: &str = "[[bootstrap.upstreams]]\nid = \"vllm-a\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9001/v1\"\n";

#[test]
fn unknown_upstream_reference_is_reported_at_its_line_with_the_declared_ids() {
    // NODE is lines 1-3, UPSTREAM_A lines 4-7.
    let text = format!(
        r#"{NODE}{UPSTREAM_A}
[[bootstrap.models]]
name = "chat-default"
strategy = "weighted"
targets = [
  {{ upstream = "vllm-a", model = "qwen" }},
  {{ upstream = "vllm-b", model = "qwen" }},
]
"#
    );
    assert_eq!(
        errors(&text),
        [
            "aigw.toml:14:16: bootstrap.models[0].targets[1].upstream: unknown upstream \"vllm-b\"; \
          expected one of: \"vllm-a\""
        ]
    );
}

#[test]
fn reference_to_an_upstream_when_none_are_declared_says_so() {
    let text = format!(
        "{NODE}[[bootstrap.models]]\nname = \"m\"\ntargets = [{{ upstream = \"x\", model = \"y\" }}]\n"
    );
    assert_eq!(
        errors(&text),
        [
            "aigw.toml:6:25: bootstrap.models[0].targets[0].upstream: unknown upstream \"x\"; \
          expected a name declared in [[bootstrap.upstreams]], but none are"
        ]
    );
}

#[test]
fn duplicate_upstream_id_is_reported_with_the_first_definition() {
    assert_eq!(
        errors(&format!("{NODE}{UPSTREAM_A}{UPSTREAM_A}")),
        [
            "aigw.toml:9:6: bootstrap.upstreams[1].id: duplicate upstream id \"vllm-a\" \
          (first defined at line 5); expected every upstream id to be unique"
        ]
    );
}

#[test]
fn invalid_upstream_id_and_kind_are_rejected() {
    let errors = errors(&format!(
        "{NODE}[[bootstrap.upstreams]]\nid = \"vllm a\"\nkind = \"gemini\"\nbase_url = \"http://a\"\n"
    ));
    assert_eq!(
        errors,
        [
            "aigw.toml:5:6: bootstrap.upstreams[0].id: invalid upstream id \"vllm a\"; \
             expected a non-empty id of ASCII letters, digits, '.', '_' and '-'",
            "aigw.toml:6:8: bootstrap.upstreams[0].kind: unknown upstream kind \"gemini\"; \
             expected one of: \"openai\", \"anthropic\"",
        ]
    );
}

#[test]
fn the_anthropic_kind_is_accepted() {
    let config = aigw_config::parse(
        &format!(
            "{NODE}[[bootstrap.upstreams]]\nid = \"claude\"\nkind = \"anthropic\"\nbase_url = \"https://api.anthropic.com/v1\"\n"
        ),
        "aigw.toml",
    )
    .unwrap();
    let upstream = &config.bootstrap.upstreams[0];
    assert_eq!(upstream.kind, UpstreamKind::Anthropic);
}

#[test]
fn base_url_without_http_scheme_is_rejected() {
    assert_eq!(
        errors(&format!(
            "{NODE}[[bootstrap.upstreams]]\nid = \"a\"\nkind = \"openai\"\nbase_url = \"127.0.0.1:9001/v1\"\n"
        )),
        [
            "aigw.toml:7:12: bootstrap.upstreams[0].base_url: invalid base_url \"127.0.0.1:9001/v1\": \
          expected it to start with \"http://\" or \"https://\""
        ]
    );
}

#[test]
fn zero_weight_is_rejected() {
    let text = format!(
        "{NODE}{UPSTREAM_A}[[bootstrap.models]]\nname = \"m\"\n\
         targets = [{{ upstream = \"vllm-a\", model = \"x\", weight = 0 }}]\n"
    );
    assert_eq!(
        errors(&text),
        [
            "aigw.toml:10:57: bootstrap.models[0].targets[0].weight: must be greater than 0; \
          expected a positive integer (default 1)"
        ]
    );
}

#[test]
fn model_without_targets_and_unknown_strategy_are_rejected() {
    let text =
        format!("{NODE}[[bootstrap.models]]\nname = \"m\"\nstrategy = \"random\"\ntargets = []\n");
    assert_eq!(
        errors(&text),
        [
            "aigw.toml:6:12: bootstrap.models[0].strategy: unknown strategy \"random\"; \
             expected one of: \"weighted\", \"sticky\", \"least-loaded\"",
            "aigw.toml:7:11: bootstrap.models[0].targets: expected at least one target",
        ]
    );
}

#[test]
fn duplicate_model_name_is_rejected() {
    let model = "[[bootstrap.models]]\nname = \"m\"\ntargets = [{ upstream = \"vllm-a\", model = \"x\" }]\n";
    assert_eq!(
        errors(&format!("{NODE}{UPSTREAM_A}{model}{model}")),
        [
            "aigw.toml:12:8: bootstrap.models[1].name: duplicate model name \"m\" \
          (first defined at line 9); expected every model name to be unique"
        ]
    );
}

#[test]
fn key_referencing_an_unknown_model_is_rejected() {
    let text = format!(
        "{NODE}{UPSTREAM_A}[[bootstrap.models]]\nname = \"chat\"\n\
         targets = [{{ upstream = \"vllm-a\", model = \"x\" }}]\n\
         [[bootstrap.keys]]\nname = \"k\"\nsecret = \"12345678\"\nmodels = [\"chat\", \"embed\"]\n"
    );
    assert_eq!(
        errors(&text),
        [
            "aigw.toml:14:19: bootstrap.keys[0].models[1]: unknown model \"embed\"; \
          expected one of: \"chat\""
        ]
    );
}

#[test]
fn wildcard_must_be_alone_in_a_keys_models() {
    let text = format!(
        "{NODE}[[bootstrap.keys]]\nname = \"k\"\nsecret = \"12345678\"\nmodels = [\"*\", \"*\"]\n"
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 2);
    assert!(
        errors[0].starts_with(
            "aigw.toml:7:11: bootstrap.keys[0].models[0]: \"*\" must be the only entry"
        )
    );
}

#[test]
fn short_and_shared_key_secrets_are_rejected_without_showing_them() {
    let text = format!(
        "{NODE}[[bootstrap.keys]]\nname = \"a\"\nsecret = \"sk-shared-1\"\n\
         [[bootstrap.keys]]\nname = \"b\"\nsecret = \"sk-shared-1\"\n\
         [[bootstrap.keys]]\nname = \"c\"\nsecret = \"sk-tiny\"\n"
    );
    let errors = errors(&text);
    assert_eq!(
        errors,
        [
            "aigw.toml:9:10: bootstrap.keys[1].secret: same secret as bootstrap.keys[0]; \
             expected every key to have its own secret",
            "aigw.toml:12:10: bootstrap.keys[2].secret: secret is too short (7 characters); \
             expected at least 8",
        ]
    );
    assert!(!errors.concat().contains("sk-shared-1") && !errors.concat().contains("sk-tiny"));
}

#[test]
fn all_semantic_errors_are_reported_one_per_line_in_file_order() {
    let text = format!(
        r#"{NODE}{UPSTREAM_A}
[[bootstrap.models]]
name = "m"
targets = [{{ upstream = "vllm-b", model = "x", weight = 0 }}]

[[bootstrap.keys]]
name = "k"
secret = "12345678"
models = ["n"]
"#
    );
    let all = parse_with_env(&text, "aigw.toml", &env).unwrap_err();
    assert_eq!(all.as_slice().len(), 3);
    assert_eq!(
        all.to_string(),
        "aigw.toml:11:25: bootstrap.models[0].targets[0].upstream: unknown upstream \"vllm-b\"; \
         expected one of: \"vllm-a\"\n\
         aigw.toml:11:57: bootstrap.models[0].targets[0].weight: must be greater than 0; \
         expected a positive integer (default 1)\n\
         aigw.toml:16:11: bootstrap.keys[0].models[0]: unknown model \"n\"; expected one of: \"m\""
    );
    let first = &all.as_slice()[0];
    assert_eq!(
        (
            first.file.as_str(),
            first.line,
            first.column,
            first.key.as_str()
        ),
        (
            "aigw.toml",
            11,
            25,
            "bootstrap.models[0].targets[0].upstream"
        )
    );
}

#[test]
fn toml_syntax_error_has_a_line_and_column() {
    assert_eq!(
        errors("[node]\nid = 1\napi_listen = \"127.0.0.1:8080\n"),
        ["aigw.toml:3:29: invalid basic string, expected `\"`"]
    );
    let duplicate = errors("[node]\nid = 1\nid = 2\n");
    assert_eq!(duplicate.len(), 1);
    assert!(duplicate[0].starts_with("aigw.toml:3:1: "), "{duplicate:?}");
}

#[test]
fn debug_output_of_a_config_never_shows_secrets() {
    let config = ok(&format!(
        "{NODE}[admin]\ntoken = \"${{AIGW_ADMIN_TOKEN}}\"\n{UPSTREAM_A}api_key = \"sk-upstream-key\"\n\
         [[bootstrap.keys]]\nname = \"k\"\nsecret = \"${{AIGW_DEMO_KEY}}\"\n"
    ));
    let shown = format!("{config:?} {config:#?}");
    for secret in ["admin-token-value", "sk-upstream-key", "demo-key-value"] {
        assert!(!shown.contains(secret), "{secret} leaked");
    }
    assert!(shown.contains("Secret(***)"));
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aigw.toml");
    std::fs::write(&path, NODE).unwrap();
    assert_eq!(load(&path).unwrap().node.id, 1);

    std::fs::write(&path, "[node]\nid = 1\n").unwrap();
    let error = load(&path).unwrap_err().to_string();
    assert_eq!(
        error,
        format!(
            "{}:1:1: node.api_listen: missing required key",
            path.display()
        )
    );
}

#[test]
fn unreadable_file_is_an_error_naming_the_file_and_the_os_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let errors = load(&path).unwrap_err();
    let [error] = errors.as_slice() else {
        panic!("one error expected")
    };
    assert_eq!(error.file, path.display().to_string());
    assert_eq!((error.line, error.column), (0, 0));
    let shown = errors.to_string();
    assert!(shown.starts_with(&format!("{}: cannot read config file: ", path.display())));
    assert!(shown.contains("No such file or directory"), "{shown}");
}

const ONE_UPSTREAM: &str =
    "[[bootstrap.upstreams]]\nid = \"a\"\nkind = \"openai\"\nbase_url = \"http://h/v1\"\n";

#[test]
fn health_breaker_and_routing_settings_parse_and_omitted_ones_take_their_defaults() {
    let config = ok(&format!(
        r#"{NODE}
[routing]
max_attempts = 2
retry_budget = {{ ratio = 0.5, window = "1m" }}
session_ttl = "1h"
peer_down_quorum = 1
panic_mode = false

{ONE_UPSTREAM}health = {{ path = "/health", interval = "1s", unhealthy_threshold = 3 }}
breaker = {{ consecutive_failures = 0, failure_rate = 0.25, open_for = "10s", max_open_for = "40s" }}
"#
    ));
    assert_eq!(
        config.routing,
        RoutingSettings {
            max_attempts: 2,
            retry_budget: RetryBudgetSettings {
                ratio: Ratio::new(0.5).unwrap(),
                min_per_second: 10,
                window: Duration::from_secs(60),
            },
            session_ttl: Duration::from_secs(3600),
            peer_down_quorum: 1,
            panic_mode: false,
        }
    );
    let upstream = &config.bootstrap.upstreams[0];
    assert_eq!(
        upstream.health,
        HealthCheckSettings {
            path: "/health".into(),
            interval: Duration::from_secs(1),
            unhealthy_threshold: 3,
            ..HealthCheckSettings::default()
        }
    );
    assert_eq!(
        upstream.breaker,
        BreakerSettings {
            consecutive_failures: 0,
            failure_rate: Ratio::new(0.25).unwrap(),
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(40),
            ..BreakerSettings::default()
        }
    );
    assert!((upstream.breaker.failure_rate.as_f64() - 0.25).abs() < 1e-9);
}

#[test]
fn an_open_period_longer_than_the_default_maximum_raises_the_maximum() {
    let config = ok(&format!(
        "{NODE}{ONE_UPSTREAM}breaker = {{ open_for = \"10m\" }}\n"
    ));
    let breaker = &config.bootstrap.upstreams[0].breaker;
    assert_eq!(breaker.max_open_for, Duration::from_secs(600));
}

#[test]
fn out_of_range_health_breaker_and_routing_settings_are_rejected_with_their_keys() {
    let errors = errors(&format!(
        r#"{NODE}
[routing]
max_attempts = 11
retry_budget = {{ ratio = 1.5 }}
session_ttl = "0s"
peer_down_quorum = 0

{ONE_UPSTREAM}health = {{ interval = "0s", timeout = "soon", healthy_threshold = 0, path = "" }}
breaker = {{ failure_rate = -0.1, open_for = "1m", max_open_for = "30s", half_open_probes = 0, window = "0ms" }}
"#
    ));
    let expected = [
        "aigw.toml:6:16: routing.max_attempts: must be within 1..=10",
        "aigw.toml:7:26: routing.retry_budget.ratio: 1.5 is out of range; expected a number within 0.0..=1.0",
        "aigw.toml:8:15: routing.session_ttl: must be greater than 0",
        "aigw.toml:9:20: routing.peer_down_quorum: must be at least 1",
        "bootstrap.upstreams[0].health.interval: must be greater than 0",
        "bootstrap.upstreams[0].health.timeout: invalid duration \"soon\"",
        "bootstrap.upstreams[0].health.healthy_threshold: must be at least 1",
        "bootstrap.upstreams[0].health.path: invalid probe path \"\"",
        "bootstrap.upstreams[0].breaker.failure_rate: -0.1 is out of range",
        "bootstrap.upstreams[0].breaker.window: must be greater than 0",
        "bootstrap.upstreams[0].breaker.max_open_for: must be at least open_for",
        "bootstrap.upstreams[0].breaker.half_open_probes: must be at least 1",
    ];
    for want in expected {
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "missing {want:?} in:\n{}",
            errors.join("\n")
        );
    }
    assert_eq!(errors.len(), expected.len(), "{}", errors.join("\n"));
}

#[test]
fn unknown_health_or_breaker_keys_are_rejected() {
    let errors = errors(&format!(
        "{NODE}{ONE_UPSTREAM}breaker = {{ consecutive = 3 }}\n"
    ));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains("bootstrap.upstreams[0].breaker.consecutive: unknown key"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_model_with_more_than_64_targets_is_rejected() {
    let targets = vec![r#"{ upstream = "a", model = "x" }"#; 65].join(", ");
    let errors = errors(&format!(
        "{NODE}{ONE_UPSTREAM}\n[[bootstrap.models]]\nname = \"m\"\ntargets = [{targets}]\n"
    ));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains("bootstrap.models[0].targets: 65 targets; expected at most 64"),
        "{}",
        errors[0]
    );
}

const CLUSTER_NODE: &str =
    "[node]\nid = 2\napi_listen = \"127.0.0.1:8080\"\ncluster_listen = \"127.0.0.12:7001\"\n";

#[test]
fn cluster_members_parse_and_default_timings_apply() {
    let config = ok(&format!(
        "{CLUSTER_NODE}[cluster]\nname = \"prod\"\ninitial_members = [\"1@127.0.0.11:7001\", \"2@127.0.0.12:7001\"]\n"
    ));
    assert_eq!(config.cluster.name, "prod");
    assert_eq!(config.cluster.initial_members.len(), 2);
    assert_eq!(config.cluster.initial_members[1].id, 2);
    assert_eq!(
        config.cluster.election_timeout_min,
        Duration::from_millis(500)
    );
    assert!(
        ok(NODE).cluster.initial_members.is_empty(),
        "no [cluster]: a cluster of one"
    );
}

#[test]
fn cluster_member_errors_name_the_entry_and_what_was_expected() {
    let bad = errors(&format!(
        "{CLUSTER_NODE}[cluster]\ninitial_members = [\"2@127.0.0.12:7001\", \"x@nowhere\"]\n"
    ));
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].starts_with(
            "aigw.toml:6:41: cluster.initial_members[1]: invalid member \"x@nowhere\""
        ),
        "{bad:?}"
    );

    let missing_self = errors(&format!(
        "{CLUSTER_NODE}[cluster]\ninitial_members = [\"1@127.0.0.11:7001\"]\n"
    ));
    assert!(
        missing_self[0].contains("does not list this node (node.id = 2)"),
        "{missing_self:?}"
    );

    let wrong_addr = errors(&format!(
        "{CLUSTER_NODE}[cluster]\ninitial_members = [\"2@127.0.0.99:7001\"]\n"
    ));
    assert!(
        wrong_addr[0].contains("but node.cluster_listen is 127.0.0.12:7001"),
        "{wrong_addr:?}"
    );

    let timings = errors(&format!(
        "{NODE}[cluster]\nheartbeat = \"1s\"\nelection_timeout_min = \"500ms\"\n"
    ));
    assert!(
        timings[0].contains("heartbeat < election_timeout_min < election_timeout_max"),
        "{timings:?}"
    );
}

#[test]
fn upload_limit_and_id_secret_are_checked_with_their_line() {
    let config = ok(&format!(
        "{NODE}[server]\nmax_upload_bytes = 1000\nid_secret = \"0123456789abcdef\"\n"
    ));
    assert_eq!(config.server.max_upload_bytes, 1000);
    assert_eq!(
        config.server.id_secret.unwrap().expose(),
        "0123456789abcdef"
    );
    assert_eq!(
        errors(&format!(
            "{NODE}[server]\nmax_upload_bytes = 0\nid_secret = \"short\"\n"
        )),
        [
            "aigw.toml:5:20: server.max_upload_bytes: must be greater than 0; expected a number of bytes such as 26214400",
            "aigw.toml:6:13: server.id_secret: secret is too short (5 characters); expected at least 16, the same on every node",
        ]
    );
}

const KEY_WITH: &str = "[[bootstrap.keys]]\nname = \"k\"\nsecret = \"sk-limits-123\"\n";

#[test]
fn key_limits_parse_with_their_periods() {
    let config = ok(&format!(
        "{NODE}{KEY_WITH}limits = {{ rpm = 600, tpm = 100000, max_concurrent = 8, calls = {{ limit = 10000, period = \"day\" }}, output_tokens = {{ limit = 5, period = \"total\" }} }}\n"
    ));
    let limits = &config.bootstrap.keys[0].limits;
    assert_eq!(limits.rpm, Some(600));
    assert_eq!(limits.max_concurrent, Some(8));
    assert_eq!(
        limits.calls,
        Some(aigw_config::BudgetSettings {
            limit: 10000,
            period: aigw_config::LimitPeriod::Day
        })
    );
    assert_eq!(limits.tokens, None);
    assert_eq!(
        ok(&format!("{NODE}{KEY_WITH}")).bootstrap.keys[0].limits,
        Default::default()
    );
}

#[test]
fn key_limit_errors_name_the_key_and_what_was_expected() {
    let bad = errors(&format!(
        "{NODE}{KEY_WITH}limits = {{ rpm = 0, calls = {{ limit = 10, period = \"fortnight\" }} }}\n"
    ));
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(
        bad[0].contains("bootstrap.keys[0].limits.rpm: must be greater than 0"),
        "{bad:?}"
    );
    assert!(
        bad[1].contains("bootstrap.keys[0].limits.calls.period: unknown period \"fortnight\""),
        "{bad:?}"
    );
    let unknown = errors(&format!("{NODE}{KEY_WITH}limits = {{ rps = 5 }}\n"));
    assert!(
        unknown[0].contains("limits.rps: unknown key"),
        "{unknown:?}"
    );
}

#[test]
fn trusted_proxies_are_parsed_as_address_blocks() {
    let config = ok(&format!(
        "{NODE}[server]\ntrusted_proxies = [\"10.1.2.3/8\", \"192.0.2.7\", \"2001:db8::/32\"]\n"
    ));
    let blocks: Vec<String> = config
        .server
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(blocks, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
    let [eight, one, v6] = &config.server.trusted_proxies[..] else {
        panic!("three blocks")
    };
    assert!(eight.contains("10.200.0.1".parse().unwrap()));
    assert!(!eight.contains("11.0.0.1".parse().unwrap()));
    assert!(one.contains("::ffff:192.0.2.7".parse().unwrap()));
    assert!(!one.contains("192.0.2.8".parse().unwrap()));
    assert!(v6.contains("2001:db8:1::9".parse().unwrap()));
    assert!(!v6.contains("10.0.0.1".parse().unwrap()));
    assert!(ok(NODE).server.trusted_proxies.is_empty());
}

#[test]
fn a_bad_trusted_proxy_is_rejected_with_what_was_expected() {
    assert_eq!(
        errors(&format!(
            "{NODE}[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\", \"proxy.local\"]\n"
        )),
        [
            "aigw.toml:5:34: server.trusted_proxies[1]: invalid address block \"10.0.0.0/33\"; expected a CIDR block such as \"10.0.0.0/8\" or \"2001:db8::/32\", or one address such as \"192.0.2.7\"",
            "aigw.toml:5:49: server.trusted_proxies[2]: invalid address block \"proxy.local\"; expected a CIDR block such as \"10.0.0.0/8\" or \"2001:db8::/32\", or one address such as \"192.0.2.7\"",
        ]
    );
}
