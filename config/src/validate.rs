//! Turns the file as written (`raw`) into typed settings (`model`), reporting every problem.
//!
//! Each check records its error and carries on, so one run shows the operator every mistake in
//! the file; the typed [`Config`] is built only when no check failed. Secret values never
//! appear in a message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{ConfigError, ConfigErrors, Locator};
use toml::Spanned;

use crate::model::{
    AdminSettings, Bootstrap, BreakerSettings, BudgetSettings, Capture, CidrBlock, ClusterMember,
    ClusterSettings, Config, HealthCheckSettings, KeyLimitSettings, KeySettings, LimitPeriod,
    MAX_ATTEMPTS, MAX_TARGETS_PER_MODEL, MIN_ID_SECRET_CHARS, ModelAccess, ModelSettings, NatsAuth,
    NodeSettings, Ratio, RecordsSettings, RetryBudgetSettings, RoutingSettings, ServerSettings,
    SinkKind, SinkSettings, Strategy, TargetSettings, TokenEncoding, UpstreamId, UpstreamKind,
    UpstreamSettings, UpstreamTimeouts,
};
use crate::raw::{
    RawAdmin, RawBootstrap, RawBreaker, RawBudget, RawCluster, RawConfig, RawHealth, RawKey,
    RawLimits, RawModel, RawNode, RawRecords, RawRouting, RawServer, RawSink, RawTarget,
    RawTimeouts, RawUpstream, Text,
};
use crate::secret::Secret;

#[path = "validate_backends.rs"]
mod passthrough_backends;

/// Key secrets shorter than this are too easy to guess.
const MIN_KEY_SECRET_CHARS: usize = 8;

pub(crate) fn validate(raw: RawConfig, at: &Locator<'_>) -> Result<Config, ConfigErrors> {
    let mut v = Validator {
        at,
        errors: Vec::new(),
    };
    let node = v.node(&raw.node);
    let server = v.server(&raw.server);
    let routing = v.routing(&raw.routing);
    let cluster = v.cluster(&raw.cluster, &raw.node);
    let admin = match &raw.admin {
        None => Some(None),
        Some(admin) => v.admin(admin).map(Some),
    };
    let records = v.records(&raw.records);
    let bootstrap = v.bootstrap(&raw.bootstrap);
    match (node, server, routing, cluster, admin, records, bootstrap) {
        (
            Some(node),
            Some(server),
            Some(routing),
            Some(cluster),
            Some(admin),
            Some(records),
            Some(bootstrap),
        ) if v.errors.is_empty() => Ok(Config {
            node,
            server,
            routing,
            cluster,
            admin,
            records,
            bootstrap,
        }),
        _ => Err(ConfigErrors::new(v.errors)),
    }
}

struct Validator<'a> {
    at: &'a Locator<'a>,
    errors: Vec<ConfigError>,
}

/// Names declared in one list, to check references against and to list in the error.
struct Declared<'r> {
    names: Vec<&'r str>,
    /// The `[[...]]` the names come from, for the error when there are none.
    section: &'static str,
}

impl Declared<'_> {
    fn contains(&self, name: &str) -> bool {
        self.names.contains(&name)
    }

    fn expected(&self) -> String {
        if self.names.is_empty() {
            return format!(
                "expected a name declared in [[{}]], but none are",
                self.section
            );
        }
        let mut quoted: Vec<String> = Vec::with_capacity(self.names.len());
        for name in &self.names {
            let name = format!("{name:?}");
            if !quoted.contains(&name) {
                quoted.push(name);
            }
        }
        format!("expected one of: {}", quoted.join(", "))
    }
}

impl Validator<'_> {
    fn report(&mut self, span: &Range<usize>, key: &str, message: impl Into<String>) {
        let error = self.at.error(Some(span.clone()), key, message);
        self.errors.push(error);
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        crate::error::line_column(self.at.text, span.start).0
    }

    fn node(&mut self, raw: &RawNode) -> Option<NodeSettings> {
        let api_listen = self.socket_addr(&raw.api_listen, "node.api_listen");
        let admin_listen = optional(raw.admin_listen.as_ref(), |t| {
            self.socket_addr(t, "node.admin_listen")
        });
        let cluster_listen = optional(raw.cluster_listen.as_ref(), |t| {
            self.socket_addr(t, "node.cluster_listen")
        });
        let data_dir = match &raw.data_dir {
            None => Some(PathBuf::from("./data")),
            Some(t) => self
                .non_empty(t, "node.data_dir", "expected a directory path")
                .map(PathBuf::from),
        };
        Some(NodeSettings {
            id: raw.id,
            api_listen: api_listen?,
            admin_listen: admin_listen?,
            cluster_listen: cluster_listen?,
            data_dir: data_dir?,
        })
    }

    fn server(&mut self, raw: &RawServer) -> Option<ServerSettings> {
        let defaults = ServerSettings::default();
        let max_body_bytes = match &raw.max_body_bytes {
            None => Some(defaults.max_body_bytes),
            Some(bytes) if *bytes.get_ref() == 0 => {
                self.report(
                    &bytes.span(),
                    "server.max_body_bytes",
                    "must be greater than 0; expected a number of bytes such as 16777216",
                );
                None
            }
            Some(bytes) => Some(*bytes.get_ref()),
        };
        let max_upload_bytes = match &raw.max_upload_bytes {
            None => Some(defaults.max_upload_bytes),
            Some(bytes) if *bytes.get_ref() == 0 => {
                self.report(
                    &bytes.span(),
                    "server.max_upload_bytes",
                    "must be greater than 0; expected a number of bytes such as 26214400",
                );
                None
            }
            Some(bytes) => Some(*bytes.get_ref()),
        };
        // A zero grace period is legitimate: stop at once without draining.
        let shutdown_grace = match &raw.shutdown_grace {
            None => Some(defaults.shutdown_grace),
            Some(t) => self.duration(t, "server.shutdown_grace"),
        };
        let header_read_timeout = self.positive_duration(
            raw.header_read_timeout.as_ref(),
            "server.header_read_timeout",
            defaults.header_read_timeout,
        );
        let body_idle_timeout = self.positive_duration(
            raw.body_idle_timeout.as_ref(),
            "server.body_idle_timeout",
            defaults.body_idle_timeout,
        );
        let keep_alive_timeout = self.positive_duration(
            raw.keep_alive_timeout.as_ref(),
            "server.keep_alive_timeout",
            defaults.keep_alive_timeout,
        );
        let max_connections = match &raw.max_connections {
            None => Some(defaults.max_connections),
            Some(n) if *n.get_ref() == 0 => {
                self.report(
                    &n.span(),
                    "server.max_connections",
                    "must be greater than 0; expected a number of client connections such as 10000",
                );
                None
            }
            Some(n) => Some(*n.get_ref()),
        };
        let mut trusted_proxies = Some(Vec::new());
        for (i, text) in raw.trusted_proxies.iter().enumerate() {
            match CidrBlock::parse(&text.value) {
                Some(block) => {
                    if let Some(blocks) = trusted_proxies.as_mut() {
                        blocks.push(block);
                    }
                }
                None => {
                    self.report(
                        &text.span,
                        &format!("server.trusted_proxies[{i}]"),
                        format!(
                            "invalid address block {:?}; expected a CIDR block such as \"10.0.0.0/8\" or \"2001:db8::/32\", or one address such as \"192.0.2.7\"",
                            text.value
                        ),
                    );
                    trusted_proxies = None;
                }
            }
        }
        let id_secret = optional(raw.id_secret.as_ref(), |t| {
            let chars = t.value.chars().count();
            if chars < MIN_ID_SECRET_CHARS {
                self.report(
                    &t.span,
                    "server.id_secret",
                    format!(
                        "secret is too short ({chars} characters); expected at least {MIN_ID_SECRET_CHARS}, the same on every node"
                    ),
                );
                return None;
            }
            Some(Secret::new(t.value.clone()))
        });
        Some(ServerSettings {
            max_body_bytes: max_body_bytes?,
            max_upload_bytes: max_upload_bytes?,
            shutdown_grace: shutdown_grace?,
            header_read_timeout: header_read_timeout?,
            body_idle_timeout: body_idle_timeout?,
            keep_alive_timeout: keep_alive_timeout?,
            max_connections: max_connections?,
            trusted_proxies: trusted_proxies?,
            id_secret: id_secret?,
        })
    }

    fn records(&mut self, raw: &RawRecords) -> Option<RecordsSettings> {
        let defaults = RecordsSettings::default();
        let capture = match &raw.capture {
            None => Some(defaults.capture),
            Some(t) => self.capture(t, "records.capture"),
        };
        let max_body_bytes = raw
            .max_body_bytes
            .as_ref()
            .map_or(defaults.max_body_bytes, |b| *b.get_ref());
        let mut positive = |raw: Option<&Spanned<u64>>, key: &str, default: u64| match raw {
            None => Some(default),
            Some(n) if *n.get_ref() == 0 => {
                self.report(
                    &n.span(),
                    key,
                    "must be greater than 0; expected a number of bytes",
                );
                None
            }
            Some(n) => Some(*n.get_ref()),
        };
        let segment_bytes = positive(
            raw.segment_bytes.as_ref(),
            "records.segment_bytes",
            defaults.segment_bytes,
        );
        let retain_bytes = positive(
            raw.retain_bytes.as_ref(),
            "records.retain_bytes",
            defaults.retain_bytes,
        );
        let fsync_interval = self.positive_duration(
            raw.fsync_interval.as_ref(),
            "records.fsync_interval",
            defaults.fsync_interval,
        );
        let segment_age = self.positive_duration(
            raw.segment_age.as_ref(),
            "records.segment_age",
            defaults.segment_age,
        );
        let retain_age = self.positive_duration(
            raw.retain_age.as_ref(),
            "records.retain_age",
            defaults.retain_age,
        );
        let sinks = self.sinks(&raw.sinks);
        Some(RecordsSettings {
            enabled: raw.enabled.unwrap_or(defaults.enabled),
            capture: capture?,
            max_body_bytes,
            fsync_interval: fsync_interval?,
            segment_bytes: segment_bytes?,
            segment_age: segment_age?,
            retain_bytes: retain_bytes?,
            retain_age: retain_age?,
            sinks: sinks?,
        })
    }

    fn capture(&mut self, t: &Text, key: &str) -> Option<Capture> {
        match t.value.as_str() {
            "full" => Some(Capture::Full),
            "metadata" => Some(Capture::Metadata),
            "raw" => Some(Capture::Raw),
            other => {
                self.report(
                    &t.span,
                    key,
                    format!(
                        "unknown capture {other:?}; expected \"full\", \"metadata\" or \"raw\""
                    ),
                );
                None
            }
        }
    }

    /// A NATS sink's credentials: `token`, or `user` with `password`.
    fn nats_auth(&mut self, sink: &RawSink, at: &str) -> Option<NatsAuth> {
        match (&sink.token, &sink.user, &sink.password) {
            (None, None, None) => Some(NatsAuth::None),
            (Some(token), None, None) => Some(NatsAuth::Token(Secret::new(token.value.clone()))),
            (None, Some(user), Some(password)) => Some(NatsAuth::UserPassword {
                user: user.value.clone(),
                password: Secret::new(password.value.clone()),
            }),
            (Some(_), Some(user), _) => {
                self.report(
                    &user.span,
                    &format!("{at}.user"),
                    "a nats sink authenticates one way: a token, or a user and a password",
                );
                None
            }
            (_, Some(user), None) => {
                self.report(
                    &user.span,
                    &format!("{at}.password"),
                    "user needs a password",
                );
                None
            }
            (_, None, Some(password)) => {
                self.report(
                    &password.span,
                    &format!("{at}.user"),
                    "password needs a user",
                );
                None
            }
        }
    }

    fn sinks(&mut self, raw: &[RawSink]) -> Option<Vec<SinkSettings>> {
        let mut sinks = Some(Vec::new());
        let mut names = Vec::new();
        for (i, sink) in raw.iter().enumerate() {
            let at = format!("records.sinks[{i}]");
            let name = sink.name.value.trim();
            let name_ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !name_ok {
                self.report(
                    &sink.name.span,
                    &format!("{at}.name"),
                    "expected a name of letters, digits, '-' and '_' (it names the sink's cursor file)",
                );
                sinks = None;
                continue;
            }
            if names.contains(&name) {
                self.report(
                    &sink.name.span,
                    &format!("{at}.name"),
                    format!("duplicate sink name {name:?}"),
                );
                sinks = None;
                continue;
            }
            names.push(name);
            let kind = match sink.kind.value.as_str() {
                "nats" => {
                    let Some(url) = &sink.url else {
                        self.report(
                            &sink.kind.span,
                            &format!("{at}.url"),
                            "a nats sink needs url, such as \"nats://127.0.0.1:4222\"",
                        );
                        sinks = None;
                        continue;
                    };
                    SinkKind::Nats {
                        url: url.value.clone(),
                        subject: sink
                            .subject
                            .as_ref()
                            .map_or_else(|| "aigw.records".to_owned(), |t| t.value.clone()),
                        stream: sink
                            .stream
                            .as_ref()
                            .map_or_else(|| "AIGW_RECORDS".to_owned(), |t| t.value.clone()),
                        auth: match self.nats_auth(sink, &at) {
                            Some(auth) => auth,
                            None => {
                                sinks = None;
                                continue;
                            }
                        },
                    }
                }
                "kafka" => {
                    if sink.brokers.is_empty() {
                        self.report(
                            &sink.kind.span,
                            &format!("{at}.brokers"),
                            "a kafka sink needs brokers, such as [\"127.0.0.1:9092\"]",
                        );
                        sinks = None;
                        continue;
                    }
                    let partitions = match &sink.partitions {
                        None => 1,
                        Some(n) if *n.get_ref() >= 1 => *n.get_ref(),
                        Some(n) => {
                            self.report(
                                &n.span(),
                                &format!("{at}.partitions"),
                                "expected at least 1 partition",
                            );
                            sinks = None;
                            continue;
                        }
                    };
                    SinkKind::Kafka {
                        brokers: sink.brokers.iter().map(|b| b.value.clone()).collect(),
                        topic: sink
                            .topic
                            .as_ref()
                            .map_or_else(|| "aigw-records".to_owned(), |t| t.value.clone()),
                        partitions,
                    }
                }
                other => {
                    self.report(
                        &sink.kind.span,
                        &format!("{at}.kind"),
                        format!("unknown sink kind {other:?}; expected \"nats\" or \"kafka\""),
                    );
                    sinks = None;
                    continue;
                }
            };
            if let Some(sinks) = sinks.as_mut() {
                sinks.push(SinkSettings {
                    name: name.to_owned(),
                    kind,
                });
            }
        }
        sinks
    }

    fn cluster(&mut self, raw: &RawCluster, node: &RawNode) -> Option<ClusterSettings> {
        let defaults = ClusterSettings::default();
        let name = match &raw.name {
            None => Some(defaults.name.clone()),
            Some(t) => self.non_empty(t, "cluster.name", "expected the cluster's name"),
        };
        let mut members = Vec::new();
        let mut ok = true;
        for (i, text) in raw.initial_members.iter().enumerate() {
            let key = format!("cluster.initial_members[{i}]");
            let parsed = text.value.split_once('@').and_then(|(id, addr)| {
                Some(ClusterMember {
                    id: id.trim().parse().ok()?,
                    addr: addr.trim().parse().ok()?,
                })
            });
            match parsed {
                Some(member) if members.iter().any(|m: &ClusterMember| m.id == member.id) => {
                    self.report(
                        &text.span,
                        &key,
                        format!("node id {} is listed twice", member.id),
                    );
                    ok = false;
                }
                Some(member) => members.push(member),
                None => {
                    self.report(
                        &text.span,
                        &key,
                        format!("invalid member {:?}; expected \"ID@HOST:PORT\" such as \"1@127.0.0.1:7001\"", text.value),
                    );
                    ok = false;
                }
            }
        }
        if ok && !members.is_empty() {
            let listen = node
                .cluster_listen
                .as_ref()
                .and_then(|t| t.value.parse::<SocketAddr>().ok());
            match members.iter().find(|m| m.id == node.id) {
                None => {
                    let span = raw.initial_members[0].span.clone();
                    self.report(
                        &span,
                        "cluster.initial_members",
                        format!("does not list this node (node.id = {}); expected every member of the new cluster, this one included", node.id),
                    );
                    ok = false;
                }
                Some(me) if listen != Some(me.addr) => {
                    let span = raw.initial_members[0].span.clone();
                    self.report(
                        &span,
                        "cluster.initial_members",
                        format!("lists this node at {}, but node.cluster_listen is {}; expected the same address", me.addr, node.cluster_listen.as_ref().map_or("not set", |t| t.value.as_str())),
                    );
                    ok = false;
                }
                Some(_) => {}
            }
        }
        let join = match &raw.join {
            None => Some(None),
            Some(t) => self.socket_addr(t, "cluster.join").map(Some),
        };
        let heartbeat = self.positive_duration(
            raw.heartbeat.as_ref(),
            "cluster.heartbeat",
            defaults.heartbeat,
        );
        let election_min = self.positive_duration(
            raw.election_timeout_min.as_ref(),
            "cluster.election_timeout_min",
            defaults.election_timeout_min,
        );
        let election_max = self.positive_duration(
            raw.election_timeout_max.as_ref(),
            "cluster.election_timeout_max",
            defaults.election_timeout_max,
        );
        let write_timeout = self.positive_duration(
            raw.write_timeout.as_ref(),
            "cluster.write_timeout",
            defaults.write_timeout,
        );
        let gossip_interval = self.positive_duration(
            raw.gossip_interval.as_ref(),
            "cluster.gossip_interval",
            defaults.gossip_interval,
        );
        let snapshot_every = match &raw.snapshot_every {
            None => Some(defaults.snapshot_every),
            Some(n) if *n.get_ref() >= 10 => Some(*n.get_ref()),
            Some(n) => {
                self.report(
                    &n.span(),
                    "cluster.snapshot_every",
                    "must be at least 10; expected a number of log entries",
                );
                None
            }
        };
        let (heartbeat, election_min, election_max) = (heartbeat?, election_min?, election_max?);
        if !(heartbeat < election_min && election_min < election_max) {
            let span = raw
                .election_timeout_min
                .as_ref()
                .or(raw.heartbeat.as_ref())
                .or(raw.election_timeout_max.as_ref())
                .map(|t| t.span.clone())
                .unwrap_or(0..0);
            self.report(
                &span,
                "cluster.election_timeout_min",
                "expected heartbeat < election_timeout_min < election_timeout_max",
            );
            return None;
        }
        if !ok {
            return None;
        }
        Some(ClusterSettings {
            name: name?,
            initial_members: members,
            join: join?,
            heartbeat,
            election_timeout_min: election_min,
            election_timeout_max: election_max,
            write_timeout: write_timeout?,
            snapshot_every: snapshot_every?,
            gossip_interval: gossip_interval?,
        })
    }

    fn routing(&mut self, raw: &RawRouting) -> Option<RoutingSettings> {
        let defaults = RoutingSettings::default();
        let max_attempts = match &raw.max_attempts {
            None => Some(defaults.max_attempts),
            Some(n) if (1..=MAX_ATTEMPTS).contains(n.get_ref()) => Some(*n.get_ref()),
            Some(n) => {
                self.report(
                    &n.span(),
                    "routing.max_attempts",
                    format!(
                        "must be within 1..={MAX_ATTEMPTS}; expected the number of upstream attempts per request, first included (1 disables failover)"
                    ),
                );
                None
            }
        };
        let budget = &raw.retry_budget;
        let budget_defaults = defaults.retry_budget;
        let ratio = match &budget.ratio {
            None => Some(budget_defaults.ratio),
            Some(r) => self.ratio(r, "routing.retry_budget.ratio"),
        };
        let window = self.positive_duration(
            budget.window.as_ref(),
            "routing.retry_budget.window",
            budget_defaults.window,
        );
        let session_ttl = self.positive_duration(
            raw.session_ttl.as_ref(),
            "routing.session_ttl",
            defaults.session_ttl,
        );
        let peer_down_quorum = self.at_least_one(
            raw.peer_down_quorum.as_ref(),
            "routing.peer_down_quorum",
            defaults.peer_down_quorum,
        );
        Some(RoutingSettings {
            max_attempts: max_attempts?,
            retry_budget: RetryBudgetSettings {
                ratio: ratio?,
                min_per_second: budget
                    .min_per_second
                    .unwrap_or(budget_defaults.min_per_second),
                window: window?,
            },
            session_ttl: session_ttl?,
            peer_down_quorum: peer_down_quorum?,
            panic_mode: raw.panic_mode.unwrap_or(defaults.panic_mode),
        })
    }

    fn health(&mut self, raw: &RawHealth, key: &str) -> Option<HealthCheckSettings> {
        let defaults = HealthCheckSettings::default();
        let path = match &raw.path {
            None => Some(defaults.path),
            Some(t) if t.value.is_empty() || t.value.contains(['?', '#', ' ']) => {
                self.report(
                    &t.span,
                    &format!("{key}.path"),
                    format!(
                        "invalid probe path {:?}; expected a path such as \"/health\" (on the upstream's host) or \"models\" (relative to base_url)",
                        t.value
                    ),
                );
                None
            }
            Some(t) => Some(t.value.clone()),
        };
        let interval = self.positive_duration(
            raw.interval.as_ref(),
            &format!("{key}.interval"),
            defaults.interval,
        );
        let timeout = self.positive_duration(
            raw.timeout.as_ref(),
            &format!("{key}.timeout"),
            defaults.timeout,
        );
        let healthy_threshold = self.at_least_one(
            raw.healthy_threshold.as_ref(),
            &format!("{key}.healthy_threshold"),
            defaults.healthy_threshold,
        );
        let unhealthy_threshold = self.at_least_one(
            raw.unhealthy_threshold.as_ref(),
            &format!("{key}.unhealthy_threshold"),
            defaults.unhealthy_threshold,
        );
        Some(HealthCheckSettings {
            enabled: raw.enabled.unwrap_or(defaults.enabled),
            path: path?,
            interval: interval?,
            timeout: timeout?,
            healthy_threshold: healthy_threshold?,
            unhealthy_threshold: unhealthy_threshold?,
        })
    }

    fn breaker(&mut self, raw: &RawBreaker, key: &str) -> Option<BreakerSettings> {
        let defaults = BreakerSettings::default();
        let failure_rate = match &raw.failure_rate {
            None => Some(defaults.failure_rate),
            Some(r) => self.ratio(r, &format!("{key}.failure_rate")),
        };
        let window = self.positive_duration(
            raw.window.as_ref(),
            &format!("{key}.window"),
            defaults.window,
        );
        let open_for = self.positive_duration(
            raw.open_for.as_ref(),
            &format!("{key}.open_for"),
            defaults.open_for,
        );
        let max_open_key = format!("{key}.max_open_for");
        let max_open_for = self.positive_duration(
            raw.max_open_for.as_ref(),
            &max_open_key,
            defaults.max_open_for,
        );
        // With only `open_for` raised past the default maximum, the maximum follows it.
        let max_open_for = match (raw.max_open_for.as_ref(), open_for, max_open_for) {
            (None, Some(open), Some(max)) => Some(max.max(open)),
            (Some(t), Some(open), Some(max)) if max < open => {
                self.report(
                    &t.span,
                    &max_open_key,
                    "must be at least open_for; expected the longest open period of the exponential backoff",
                );
                None
            }
            (_, _, max) => max,
        };
        let half_open_probes = self.at_least_one(
            raw.half_open_probes.as_ref(),
            &format!("{key}.half_open_probes"),
            defaults.half_open_probes,
        );
        Some(BreakerSettings {
            consecutive_failures: raw
                .consecutive_failures
                .unwrap_or(defaults.consecutive_failures),
            failure_rate: failure_rate?,
            window: window?,
            min_requests: raw.min_requests.unwrap_or(defaults.min_requests),
            open_for: open_for?,
            max_open_for: max_open_for?,
            half_open_probes: half_open_probes?,
        })
    }

    fn ratio(&mut self, raw: &Spanned<f64>, key: &str) -> Option<Ratio> {
        let ratio = Ratio::new(*raw.get_ref());
        if ratio.is_none() {
            self.report(
                &raw.span(),
                key,
                format!(
                    "{} is out of range; expected a number within 0.0..=1.0",
                    raw.get_ref()
                ),
            );
        }
        ratio
    }

    fn at_least_one(&mut self, raw: Option<&Spanned<u32>>, key: &str, default: u32) -> Option<u32> {
        match raw {
            None => Some(default),
            Some(n) if *n.get_ref() == 0 => {
                self.report(
                    &n.span(),
                    key,
                    format!("must be at least 1; expected a positive integer (default {default})"),
                );
                None
            }
            Some(n) => Some(*n.get_ref()),
        }
    }

    /// A duration that must be greater than zero, or `default` when absent.
    fn positive_duration(
        &mut self,
        raw: Option<&Text>,
        key: &str,
        default: Duration,
    ) -> Option<Duration> {
        let Some(t) = raw else {
            return Some(default);
        };
        let duration = self.duration(t, key)?;
        if duration.is_zero() {
            self.report(
                &t.span,
                key,
                "must be greater than 0; expected a duration such as \"5s\"",
            );
            return None;
        }
        Some(duration)
    }

    fn admin(&mut self, raw: &RawAdmin) -> Option<AdminSettings> {
        let token = self.non_empty(&raw.token, "admin.token", "expected a non-empty token")?;
        Some(AdminSettings {
            token: Secret::new(token),
        })
    }

    fn bootstrap(&mut self, raw: &RawBootstrap) -> Option<Bootstrap> {
        // References are checked against every declared name, even one with errors of its own,
        // so a single mistake is reported once rather than again at each reference.
        let upstream_ids = Declared {
            names: raw.upstreams.iter().map(|u| u.id.value.as_str()).collect(),
            section: "bootstrap.upstreams",
        };
        let model_names = Declared {
            names: raw.models.iter().map(|m| m.name.value.as_str()).collect(),
            section: "bootstrap.models",
        };

        let mut seen_ids = HashMap::new();
        let upstreams: Vec<Option<UpstreamSettings>> = raw
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| self.upstream(u, &format!("bootstrap.upstreams[{i}]"), &mut seen_ids))
            .collect();

        let mut seen_names = HashMap::new();
        let models: Vec<Option<ModelSettings>> = raw
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let key = format!("bootstrap.models[{i}]");
                self.model(m, &key, &mut seen_names, &upstream_ids)
            })
            .collect();

        let backends = self.backends(raw);
        let mcp_server_names = Declared {
            names: raw
                .mcp_servers
                .iter()
                .map(|m| m.name.value.as_str())
                .collect(),
            section: "bootstrap.mcp_servers",
        };

        let mut seen_names = HashMap::new();
        let mut seen_secrets = HashMap::new();
        let keys: Vec<Option<KeySettings>> = raw
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let key = format!("bootstrap.keys[{i}]");
                let names = (&model_names, &mcp_server_names);
                self.key(k, &key, &mut seen_names, &mut seen_secrets, names)
            })
            .collect();

        Some(Bootstrap {
            upstreams: upstreams.into_iter().collect::<Option<_>>()?,
            models: models.into_iter().collect::<Option<_>>()?,
            keys: keys.into_iter().collect::<Option<_>>()?,
            backends: backends?,
            // Filled in from the file's text by `parse_with_env`.
            settings_toml: String::new(),
        })
    }

    fn upstream(
        &mut self,
        raw: &RawUpstream,
        key: &str,
        seen_ids: &mut HashMap<String, usize>,
    ) -> Option<UpstreamSettings> {
        let id_key = format!("{key}.id");
        let id = match UpstreamId::new(raw.id.value.clone()) {
            Ok(id) => Some(id),
            Err(invalid) => {
                self.report(&raw.id.span, &id_key, invalid.to_string());
                None
            }
        };
        let unique = self.unique(&raw.id, &id_key, "upstream id", seen_ids);

        let kind = match UpstreamKind::from_name(raw.kind.value.as_str()) {
            Some(kind) => Some(kind),
            None => {
                self.report(
                    &raw.kind.span,
                    &format!("{key}.kind"),
                    format!(
                        "unknown upstream kind {:?}; expected one of: {}",
                        raw.kind.value,
                        UpstreamKind::NAMES.map(|n| format!("{n:?}")).join(", ")
                    ),
                );
                None
            }
        };

        let base_url = match normalize_base_url(&raw.base_url.value) {
            Ok(url) => Some(url),
            Err(why) => {
                self.report(
                    &raw.base_url.span,
                    &format!("{key}.base_url"),
                    format!("invalid base_url {:?}: {why}", raw.base_url.value),
                );
                None
            }
        };

        let api_key = optional(raw.api_key.as_ref(), |t| {
            self.non_empty(
                t,
                &format!("{key}.api_key"),
                "expected a non-empty key (leave api_key out to send no Authorization header)",
            )
            .map(Secret::new)
        });

        let timeouts = self.timeouts(&raw.timeouts, &format!("{key}.timeouts"));
        let health = self.health(&raw.health, &format!("{key}.health"));
        let breaker = self.breaker(&raw.breaker, &format!("{key}.breaker"));

        if !unique {
            return None;
        }
        Some(UpstreamSettings {
            id: id?,
            kind: kind?,
            base_url: base_url?,
            api_key: api_key?,
            timeouts: timeouts?,
            health: health?,
            breaker: breaker?,
        })
    }

    fn timeouts(&mut self, raw: &RawTimeouts, key: &str) -> Option<UpstreamTimeouts> {
        let defaults = UpstreamTimeouts::default();
        // A zero timeout would fail every request before it starts.
        let mut one = |raw: &Option<Text>, name: &str, default: Duration| {
            self.positive_duration(raw.as_ref(), &format!("{key}.{name}"), default)
        };
        let connect = one(&raw.connect, "connect", defaults.connect);
        let response_head = one(&raw.response_head, "response_head", defaults.response_head);
        let idle = one(&raw.idle, "idle", defaults.idle);
        let total = one(&raw.total, "total", defaults.total);
        Some(UpstreamTimeouts {
            connect: connect?,
            response_head: response_head?,
            idle: idle?,
            total: total?,
        })
    }

    fn model(
        &mut self,
        raw: &RawModel,
        key: &str,
        seen_names: &mut HashMap<String, usize>,
        upstream_ids: &Declared<'_>,
    ) -> Option<ModelSettings> {
        let name_key = format!("{key}.name");
        let name = self.non_empty(&raw.name, &name_key, "expected a model name");
        // "*" in a key's `models` means "every model", so no model may be called that.
        let name = name.filter(|name| {
            let wildcard = name == "*";
            if wildcard {
                self.report(
                    &raw.name.span,
                    &name_key,
                    "\"*\" is reserved (it means every model in a key's models); expected another name",
                );
            }
            !wildcard
        });
        let unique = self.unique(&raw.name, &name_key, "model name", seen_names);

        let strategy = match &raw.strategy {
            None => Some(Strategy::default()),
            Some(t) => match t.value.as_str() {
                "weighted" => Some(Strategy::Weighted),
                "sticky" => Some(Strategy::Sticky),
                "least-loaded" => Some(Strategy::LeastLoaded),
                other => {
                    self.report(
                        &t.span,
                        &format!("{key}.strategy"),
                        format!(
                            "unknown strategy {other:?}; expected one of: \"weighted\", \"sticky\", \"least-loaded\""
                        ),
                    );
                    None
                }
            },
        };

        let tokenizer = match &raw.tokenizer {
            None => Some(None),
            Some(t) => match TokenEncoding::from_name(&t.value) {
                Some(encoding) => Some(Some(encoding)),
                None => {
                    let names: Vec<String> = TokenEncoding::ALL
                        .iter()
                        .map(|e| format!("{:?}", e.as_str()))
                        .collect();
                    self.report(
                        &t.span,
                        &format!("{key}.tokenizer"),
                        format!(
                            "unknown tokenizer {:?}; expected one of: {}",
                            t.value,
                            names.join(", ")
                        ),
                    );
                    None
                }
            },
        };
        let default_max_tokens = match &raw.default_max_tokens {
            Some(n) if *n.get_ref() == 0 => {
                self.report(
                    &n.span(),
                    &format!("{key}.default_max_tokens"),
                    "expected a number of tokens greater than zero",
                );
                None
            }
            n => Some(n.as_ref().map(|n| *n.get_ref())),
        };

        let records = match &raw.records {
            None => Some(None),
            Some(t) => self.capture(t, &format!("{key}.records")).map(Some),
        };

        let targets_key = format!("{key}.targets");
        let target_count = raw.targets.get_ref().len();
        if target_count == 0 {
            self.report(
                &raw.targets.span(),
                &targets_key,
                "expected at least one target",
            );
        } else if target_count > MAX_TARGETS_PER_MODEL {
            self.report(
                &raw.targets.span(),
                &targets_key,
                format!(
                    "{target_count} targets; expected at most {MAX_TARGETS_PER_MODEL} (split the model in two)"
                ),
            );
        }
        let targets: Vec<Option<TargetSettings>> = raw
            .targets
            .get_ref()
            .iter()
            .enumerate()
            .map(|(i, t)| self.target(t, &format!("{targets_key}[{i}]"), upstream_ids))
            .collect();

        if target_count == 0 || target_count > MAX_TARGETS_PER_MODEL || !unique {
            return None;
        }
        Some(ModelSettings {
            name: name?,
            strategy: strategy?,
            tokenizer: tokenizer?,
            default_max_tokens: default_max_tokens?,
            records: records?,
            targets: targets.into_iter().collect::<Option<_>>()?,
        })
    }

    fn target(
        &mut self,
        raw: &RawTarget,
        key: &str,
        upstream_ids: &Declared<'_>,
    ) -> Option<TargetSettings> {
        let upstream = if upstream_ids.contains(&raw.upstream.value) {
            // An invalid declared id has been reported where it is declared.
            UpstreamId::new(raw.upstream.value.clone()).ok()
        } else {
            self.report(
                &raw.upstream.span,
                &format!("{key}.upstream"),
                format!(
                    "unknown upstream {:?}; {}",
                    raw.upstream.value,
                    upstream_ids.expected()
                ),
            );
            None
        };
        let model = self.non_empty(
            &raw.model,
            &format!("{key}.model"),
            "expected the model's name on the upstream",
        );
        let weight = match &raw.weight {
            None => Some(1),
            Some(w) if *w.get_ref() == 0 => {
                // A zero weight would declare a target that can never be picked.
                self.report(
                    &w.span(),
                    &format!("{key}.weight"),
                    "must be greater than 0; expected a positive integer (default 1)",
                );
                None
            }
            Some(w) => Some(*w.get_ref()),
        };
        Some(TargetSettings {
            upstream: upstream?,
            model: model?,
            weight: weight?,
            priority: raw.priority.unwrap_or(0),
        })
    }

    fn key(
        &mut self,
        raw: &RawKey,
        key: &str,
        seen_names: &mut HashMap<String, usize>,
        seen_secrets: &mut HashMap<String, String>,
        (model_names, mcp_server_names): (&Declared<'_>, &Declared<'_>),
    ) -> Option<KeySettings> {
        let name_key = format!("{key}.name");
        let name = self.non_empty(&raw.name, &name_key, "expected a key name");
        let unique = self.unique(&raw.name, &name_key, "key name", seen_names);
        let secret = self.key_secret(&raw.secret, &format!("{key}.secret"), key, seen_secrets);
        let models = match &raw.models {
            None => Some(ModelAccess::All),
            Some(list) => self.model_access(list.get_ref(), &list.span(), key, model_names),
        };
        let limits = self.key_limits(&raw.limits, &format!("{key}.limits"));
        let mcp_servers = match &raw.mcp_servers {
            None => Some(None),
            Some(list) => self.key_mcp_servers(list, key, mcp_server_names),
        };
        let records = match &raw.records {
            None => Some(None),
            Some(t) => self.capture(t, &format!("{key}.records")).map(Some),
        };
        if !unique {
            return None;
        }
        Some(KeySettings {
            name: name?,
            secret: secret?,
            models: models?,
            limits: limits?,
            mcp_servers: mcp_servers?,
            records: records?,
        })
    }

    fn key_limits(&mut self, raw: &RawLimits, key: &str) -> Option<KeyLimitSettings> {
        let mut ok = true;
        let mut positive = |v: &mut Self, n: Option<&Spanned<u64>>, name: &str| -> Option<u64> {
            let n = n?;
            if *n.get_ref() == 0 {
                v.report(
                    &n.span(),
                    &format!("{key}.{name}"),
                    "must be greater than 0; leave it out for no limit",
                );
                ok = false;
                return None;
            }
            Some(*n.get_ref())
        };
        let rpm = positive(self, raw.rpm.as_ref(), "rpm");
        let tpm = positive(self, raw.tpm.as_ref(), "tpm");
        let rpm_burst = positive(self, raw.rpm_burst.as_ref(), "rpm_burst");
        let tpm_burst = positive(self, raw.tpm_burst.as_ref(), "tpm_burst");
        let mut bursts_ok = true;
        for (burst, rate, name, needs) in [
            (&raw.rpm_burst, &raw.rpm, "rpm_burst", "rpm"),
            (&raw.tpm_burst, &raw.tpm, "tpm_burst", "tpm"),
        ] {
            if let (Some(burst), None) = (burst, rate) {
                self.report(
                    &burst.span(),
                    &format!("{key}.{name}"),
                    format!("is the burst of `{needs}`, which is not set; set `{needs}` too or leave it out"),
                );
                bursts_ok = false;
            }
        }
        let concurrent = raw
            .max_concurrent
            .as_ref()
            .map(|n| Spanned::new(n.span(), u64::from(*n.get_ref())));
        let max_concurrent =
            positive(self, concurrent.as_ref(), "max_concurrent").map(|n| n as u32);
        let mut budget = |v: &mut Self,
                          b: Option<&RawBudget>,
                          name: &str|
         -> Option<BudgetSettings> {
            let b = b?;
            let limit = positive(v, Some(&b.limit), &format!("{name}.limit"))?;
            let period = match b.period.value.as_str() {
                "minute" => LimitPeriod::Minute,
                "hour" => LimitPeriod::Hour,
                "day" => LimitPeriod::Day,
                "month" => LimitPeriod::Month,
                "total" => LimitPeriod::Total,
                other => {
                    v.report(
                        &b.period.span,
                        &format!("{key}.{name}.period"),
                        format!("unknown period {other:?}; expected \"minute\", \"hour\", \"day\", \"month\" or \"total\""),
                    );
                    return None;
                }
            };
            Some(BudgetSettings { limit, period })
        };
        let limits = KeyLimitSettings {
            rpm,
            tpm,
            max_concurrent,
            calls: budget(self, raw.calls.as_ref(), "calls"),
            tokens: budget(self, raw.tokens.as_ref(), "tokens"),
            input_tokens: budget(self, raw.input_tokens.as_ref(), "input_tokens"),
            output_tokens: budget(self, raw.output_tokens.as_ref(), "output_tokens"),
            rpm_burst,
            tpm_burst,
        };
        let complete = [
            &raw.calls,
            &raw.tokens,
            &raw.input_tokens,
            &raw.output_tokens,
        ]
        .iter()
        .zip([
            &limits.calls,
            &limits.tokens,
            &limits.input_tokens,
            &limits.output_tokens,
        ])
        .all(|(raw, parsed)| raw.is_none() == parsed.is_none());
        (ok && complete && bursts_ok).then_some(limits)
    }

    fn key_secret(
        &mut self,
        raw: &Text,
        secret_key: &str,
        key: &str,
        seen_secrets: &mut HashMap<String, String>,
    ) -> Option<Secret> {
        let chars = raw.value.chars().count();
        if chars < MIN_KEY_SECRET_CHARS {
            self.report(
                &raw.span,
                secret_key,
                format!(
                    "secret is too short ({chars} characters); expected at least {MIN_KEY_SECRET_CHARS}"
                ),
            );
            return None;
        }
        // Keys are found by their secret, so two keys with one secret would be ambiguous.
        if let Some(first) = seen_secrets.get(&raw.value) {
            self.report(
                &raw.span,
                secret_key,
                format!("same secret as {first}; expected every key to have its own secret"),
            );
            return None;
        }
        seen_secrets.insert(raw.value.clone(), key.to_owned());
        Some(Secret::new(raw.value.clone()))
    }

    fn model_access(
        &mut self,
        list: &[Text],
        span: &Range<usize>,
        key: &str,
        model_names: &Declared<'_>,
    ) -> Option<ModelAccess> {
        let models_key = format!("{key}.models");
        if list.is_empty() {
            self.report(
                span,
                &models_key,
                "expected at least one model name, or [\"*\"] for every model",
            );
            return None;
        }
        Some(
            match self.names_or_all(list, &models_key, "model", "model", model_names)? {
                None => ModelAccess::All,
                Some(names) => ModelAccess::Only(names),
            },
        )
    }

    /// A list of declared names, each once, or `["*"]` for all of them (`Some(None)`); `None`
    /// when an entry is wrong (each reported). `noun` names an entry in messages ("model",
    /// "MCP server"), `short` in the duplicate message ("model", "server").
    pub(super) fn names_or_all(
        &mut self,
        list: &[Text],
        list_key: &str,
        noun: &str,
        short: &str,
        declared: &Declared<'_>,
    ) -> Option<Option<Vec<String>>> {
        let mut names: Vec<String> = Vec::with_capacity(list.len());
        let mut ok = true;
        for (i, item) in list.iter().enumerate() {
            let item_key = format!("{list_key}[{i}]");
            let name = item.value.as_str();
            if name == "*" {
                if list.len() > 1 {
                    self.report(
                        &item.span,
                        &item_key,
                        format!(
                            "\"*\" must be the only entry; expected either [\"*\"] or a list of {noun} names"
                        ),
                    );
                    ok = false;
                }
            } else if !declared.contains(name) {
                self.report(
                    &item.span,
                    &item_key,
                    format!("unknown {noun} {name:?}; {}", declared.expected()),
                );
                ok = false;
            } else if names.iter().any(|n| n == name) {
                self.report(
                    &item.span,
                    &item_key,
                    format!("duplicate {noun} {name:?}; expected each {short} once"),
                );
                ok = false;
            } else {
                names.push(name.to_owned());
            }
        }
        if !ok {
            return None;
        }
        let all = list.len() == 1 && list[0].value == "*";
        Some((!all).then_some(names))
    }

    /// Records `text` as seen; false (with an error) if it was seen before.
    fn unique(
        &mut self,
        text: &Text,
        key: &str,
        what: &str,
        seen: &mut HashMap<String, usize>,
    ) -> bool {
        // `seen` keeps byte offsets: a line number costs a scan of the text, so it is worked
        // out only for a duplicate (per entry it made 100,000 keys take minutes).
        if let Some(&first) = seen.get(&text.value) {
            let first_line = self.line_of(&(first..first));
            let message = format!(
                "duplicate {what} {:?} (first defined at line {first_line}); expected every {what} to be unique",
                text.value
            );
            self.report(&text.span, key, message);
            return false;
        }
        seen.insert(text.value.clone(), text.span.start);
        true
    }

    fn non_empty(&mut self, text: &Text, key: &str, expected: &str) -> Option<String> {
        if text.value.is_empty() {
            self.report(&text.span, key, format!("is empty; {expected}"));
            return None;
        }
        Some(text.value.clone())
    }

    fn socket_addr(&mut self, text: &Text, key: &str) -> Option<SocketAddr> {
        match text.value.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.report(
                    &text.span,
                    key,
                    format!(
                        "invalid socket address {:?}; expected an IP address and port such as \"127.0.0.1:8080\"",
                        text.value
                    ),
                );
                None
            }
        }
    }

    fn duration(&mut self, text: &Text, key: &str) -> Option<Duration> {
        match humantime::parse_duration(&text.value) {
            Ok(duration) => Some(duration),
            Err(why) => {
                self.report(
                    &text.span,
                    key,
                    format!(
                        "invalid duration {:?} ({why}); expected a duration such as \"30s\", \"500ms\" or \"5m\"",
                        text.value
                    ),
                );
                None
            }
        }
    }
}

/// `Some(None)` when the key is absent, `Some(Some(v))` when present and valid, `None` when
/// present and invalid (the check has reported it).
fn optional<T>(raw: Option<&Text>, check: impl FnOnce(&Text) -> Option<T>) -> Option<Option<T>> {
    match raw {
        None => Some(None),
        Some(text) => check(text).map(Some),
    }
}

/// `base_url` without its trailing `/`, or why it is not an upstream base URL.
///
/// Only what the proxy relies on is checked: the scheme, a host, a numeric port, and nothing
/// that would break appending an API path (`/chat/completions`).
fn normalize_base_url(url: &str) -> Result<String, &'static str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("expected it to start with \"http://\" or \"https://\"")?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("expected no whitespace");
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    if path.contains(['?', '#']) {
        return Err("expected no query or fragment, since API paths are appended to it");
    }
    if authority.contains('@') {
        // Credentials in the URL would end up in logs; api_key keeps them out.
        return Err("expected no user:password@ (put credentials in api_key)");
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let close = bracketed
            .find(']')
            .ok_or("expected ']' after an IPv6 host")?;
        let after = &bracketed[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err("expected ':port' after an IPv6 host"),
        };
        (&bracketed[..close], port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("expected a host after the scheme");
    }
    // u16's parser alone would also take "+80".
    let numeric =
        |port: &str| port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok();
    if port.is_some_and(|port| !numeric(port)) {
        return Err("expected a numeric port up to 65535");
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::normalize_base_url;

    #[test]
    fn base_url_loses_its_trailing_slash() {
        assert_eq!(
            normalize_base_url("http://127.0.0.1:9001/v1/").unwrap(),
            "http://127.0.0.1:9001/v1"
        );
        assert_eq!(
            normalize_base_url("https://api.example.com/").unwrap(),
            "https://api.example.com"
        );
        assert_eq!(
            normalize_base_url("http://[::1]:8000/v1").unwrap(),
            "http://[::1]:8000/v1"
        );
    }

    #[test]
    fn base_url_needs_an_http_scheme_and_a_host() {
        for bad in [
            "127.0.0.1:9001/v1",
            "ftp://host/v1",
            "http://",
            "http:///v1",
            "http://:80/v1",
            "http://host:port/v1",
            "http://host:99999",
            "http://host/v1?x=1",
            "http://user:pw@host/v1",
            "http://ho st/v1",
            "http://[::1/v1",
        ] {
            assert!(normalize_base_url(bad).is_err(), "{bad}");
        }
    }
}
