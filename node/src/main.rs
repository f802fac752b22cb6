//! The `aigw` command line: `serve`, `check` and `demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: 4.3% fewer instructions per request and +2 MiB of idle
/// RSS (BENCHMARKS.md, change 4). Only the binary: tests keep the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "aigw",
    version,
    about = "An OpenAI-compatible AI gateway cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node with the given config file.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
        /// Join an existing cluster through this member's cluster address (HOST:PORT); the
        /// node's data dir must be new.
        #[arg(long)]
        join: Option<std::net::SocketAddr>,
    },
    /// Show the diff between a settings file (`[[upstreams]]`, `[[models]]`) and the cluster's
    /// live settings, then commit it.
    Apply {
        /// The settings document (TOML).
        file: PathBuf,
        /// Only print the diff.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Cluster membership.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Validate a config file and print every error in it; exits non-zero when there is one.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Request records, offline from a node's data dir.
    Records {
        #[command(subcommand)]
        command: RecordsCommand,
    },
    /// Run one node with an embedded config in front of an in-process mock upstream.
    Demo {
        /// Address of the demo's OpenAI API.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Subcommand)]
enum RecordsCommand {
    /// Write a node's records (from its data dir; the node may be running) to stdout or a
    /// file: as stored (jsonl), or as OpenAI chat fine-tuning examples (openai-chat).
    Export {
        /// The node's data dir (`node.data_dir`).
        #[arg(long)]
        data_dir: PathBuf,
        /// From this time: unix ms, RFC 3339, or a duration before now (`7d`).
        #[arg(long)]
        since: Option<String>,
        /// Before this time, in the same forms.
        #[arg(long)]
        until: Option<String>,
        /// Only this public model.
        #[arg(long)]
        model: Option<String>,
        /// Only this key (id or name).
        #[arg(long)]
        key: Option<String>,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// Write here instead of stdout.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Jsonl,
    OpenaiChat,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Members, roles, indexes, lag and liveness.
    Status,
    /// Remove a member by node id.
    Remove { id: u64 },
}

/// Which node's admin API to talk to: a node's config file, or an address and a token.
#[derive(clap::Args)]
struct AdminArgs {
    /// A node's config file: its admin_listen and [admin] token are used.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// The admin API's base URL, e.g. http://127.0.0.1:8081.
    #[arg(long, global = true, conflicts_with = "config")]
    admin: Option<String>,
    /// The admin token.
    #[arg(long, env = "AIGW_ADMIN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

impl AdminArgs {
    fn target(self) -> anyhow::Result<aigw::admin_client::AdminTarget> {
        match (self.config, self.admin) {
            (Some(config), _) => aigw::admin_client::AdminTarget::from_config(&config),
            (None, Some(base_url)) => Ok(aigw::admin_client::AdminTarget {
                base_url,
                token: self.token.ok_or_else(|| {
                    anyhow::anyhow!("--token or AIGW_ADMIN_TOKEN is required with --admin")
                })?,
            }),
            (None, None) => {
                anyhow::bail!("say which node: --config NODE.toml, or --admin URL with --token")
            }
        }
    }
}

/// The log filter when `AIGW_LOG` is unset: aigw's own lines from info up, openraft's and
/// symphonia's from warn up. openraft logs each step of every election and shutdown at info
/// (18 of the 24 lines before `aigw demo`'s banner; 23-37 per node when a 3-node cluster
/// starts and stops), symphonia a note per decoded audio file.
const DEFAULT_LOG: &str = "info,openraft=warn,symphonia=warn";

/// Raises the soft open-files limit to the hard one: every client connection and its upstream
/// connection take a descriptor, and distributions start processes at 1,024.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(open_files_limit = limit, "open-files limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-files limit"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("AIGW_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if ansi {
        logs.init();
    } else {
        // The same lines, cheaper: a line per request is on the hot path (BENCHMARKS.md).
        logs.fmt_fields(plain_log::PlainFields)
            .with_timer(plain_log::UtcMicros)
            .init();
    }
    aigw::install_crypto_provider();
    match cli.command {
        Command::Check { config } => match aigw_config::load(&config) {
            Ok(cfg) => {
                println!(
                    "{}: OK ({} upstreams, {} models, {} keys)",
                    config.display(),
                    cfg.bootstrap.upstreams.len(),
                    cfg.bootstrap.models.len(),
                    cfg.bootstrap.keys.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config, join } => {
            let cfg = match aigw_config::load(&config) {
                Ok(mut cfg) => {
                    if join.is_some() {
                        cfg.cluster.join = join;
                    }
                    cfg
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            raise_open_files_limit();
            run(async move {
                let node = aigw::RunningNode::start(&cfg).await?;
                aigw::shutdown_signal().await;
                node.shutdown().await;
                Ok(())
            })
        }
        Command::Demo { listen } => run(aigw::demo::run(listen)),
        Command::Records {
            command:
                RecordsCommand::Export {
                    data_dir,
                    since,
                    until,
                    model,
                    key,
                    format,
                    out,
                },
        } => {
            let exported = (|| {
                use aigw::records::{export, query};
                let time = |t: Option<String>| t.map(|t| query::parse_time(&t)).transpose();
                let filter = query::Filter {
                    since_ms: time(since).map_err(anyhow::Error::msg)?,
                    until_ms: time(until).map_err(anyhow::Error::msg)?,
                    key,
                    model,
                    status: None,
                };
                let format = match format {
                    ExportFormat::Jsonl => export::Format::Jsonl,
                    ExportFormat::OpenaiChat => export::Format::OpenAiChat,
                };
                let dir = data_dir.join("records");
                if !dir.is_dir() {
                    anyhow::bail!("{} holds no records log", data_dir.display());
                }
                let mut sink: Box<dyn std::io::Write> = match &out {
                    Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
                    None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
                };
                Ok(export::export(&dir, &filter, format, &mut *sink)?)
            })();
            match exported {
                Ok(done) => {
                    eprintln!(
                        "{} records read, {} written, {} not an example, {} duplicates",
                        done.read, done.written, done.skipped, done.duplicates
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Apply {
            file,
            dry_run,
            admin,
        } => run(async move { aigw::admin_client::apply(&admin.target()?, &file, dry_run).await }),
        Command::Cluster { command, admin } => run(async move {
            let target = admin.target()?;
            match command {
                ClusterCommand::Status => aigw::admin_client::cluster_status(&target).await,
                ClusterCommand::Remove { id } => {
                    aigw::admin_client::cluster_remove(&target, id).await
                }
            }
        }),
    }
}

fn run(main: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("aigw: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("aigw: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines for a file or a pipe, byte for byte what tracing-subscriber's default format
/// writes there, at half the cost. With ANSI off, the default still runs every field name,
/// every `=` and the target through nu-ansi-term's no-op painting (about 290 instructions
/// each), and formats the whole timestamp for every line: together about 5,000 of the
/// 11,400 instructions of a request's log line (callgrind, bench/profile.sh).
mod plain_log {
    use std::cell::RefCell;
    use std::fmt::{self, Write as _};
    use std::time::{SystemTime, UNIX_EPOCH};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::FormatTime;

    /// `message` bare with control characters escaped (as the default does, so a message
    /// cannot inject terminal sequences), other fields as `name=value`, `log.*` metadata
    /// skipped, space-separated.
    pub struct PlainFields;

    impl<'a> MakeVisitor<Writer<'a>> for PlainFields {
        type Visitor = PlainVisitor<'a>;

        fn make_visitor(&self, writer: Writer<'a>) -> PlainVisitor<'a> {
            PlainVisitor {
                writer,
                padded: false,
                result: Ok(()),
            }
        }
    }

    pub struct PlainVisitor<'a> {
        writer: Writer<'a>,
        /// True once something is written, so the next field needs a space.
        padded: bool,
        result: fmt::Result,
    }

    impl Visit for PlainVisitor<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            let name = field.name();
            if self.result.is_err() || name.starts_with("log.") {
                return;
            }
            if self.padded {
                self.result = self.writer.write_char(' ');
            }
            self.padded = true;
            self.result = self.result.and_then(|()| match name {
                "message" => write!(Escaping(&mut self.writer), "{value:?}"),
                name => write!(
                    self.writer,
                    "{}={value:?}",
                    name.strip_prefix("r#").unwrap_or(name)
                ),
            });
        }
    }

    impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
        fn finish(self) -> fmt::Result {
            self.result
        }
    }

    impl VisitFmt for PlainVisitor<'_> {
        fn writer(&mut self) -> &mut dyn fmt::Write {
            &mut self.writer
        }
    }

    /// Escapes what tracing-subscriber's `EscapeGuard` escapes.
    struct Escaping<'a, W: fmt::Write>(&'a mut W);

    impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            if !s.chars().any(needs_escape) {
                return self.0.write_str(s);
            }
            for c in s.chars() {
                match c {
                    '\x1b' => self.0.write_str("\\x1b")?,
                    '\x07' => self.0.write_str("\\x07")?,
                    '\x08' => self.0.write_str("\\x08")?,
                    '\x0c' => self.0.write_str("\\x0c")?,
                    '\x7f' => self.0.write_str("\\x7f")?,
                    c if ('\u{80}'..='\u{9f}').contains(&c) => {
                        write!(self.0, "\\u{{{:x}}}", c as u32)?
                    }
                    c => self.0.write_char(c)?,
                }
            }
            Ok(())
        }
    }

    fn needs_escape(c: char) -> bool {
        matches!(
            c,
            '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
        )
    }

    /// RFC 3339 UTC with microseconds, like tracing-subscriber's `SystemTime`; the part up
    /// to the second is formatted once per second per thread.
    pub struct UtcMicros;

    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }

    impl FormatTime for UtcMicros {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let secs = now.as_secs();
            SECOND.with(|cached| {
                let mut cached = cached.borrow_mut();
                if cached.0 != secs {
                    cached.1.clear();
                    let _ = write_second(&mut cached.1, secs);
                    cached.0 = secs;
                }
                write!(w, "{}.{:06}Z", cached.1, now.subsec_micros())
            })
        }
    }

    /// `YYYY-MM-DDTHH:MM:SS` of a Unix time (civil-from-days, Howard Hinnant's algorithm).
    pub fn write_second(out: &mut impl fmt::Write, secs: u64) -> fmt::Result {
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            out,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            rem / 3_600,
            rem / 60 % 60,
            rem % 60
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn second(secs: u64) -> String {
            let mut s = String::new();
            write_second(&mut s, secs).unwrap();
            s
        }

        #[test]
        fn seconds_format_as_rfc3339() {
            assert_eq!(second(0), "1970-01-01T00:00:00");
            assert_eq!(second(951_782_400), "2000-02-29T00:00:00");
            assert_eq!(second(1_700_000_000), "2023-11-14T22:13:20");
            assert_eq!(second(4_102_444_799), "2099-12-31T23:59:59");
        }

        #[test]
        fn messages_are_escaped_like_the_default() {
            let mut out = String::new();
            write!(Escaping(&mut out), "a\x1b[31mb\u{9b}c").unwrap();
            assert_eq!(out, "a\\x1b[31mb\\u{9b}c");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_log_filter_is_valid() {
        // `EnvFilter::new` drops a directive it cannot parse without a word; a typo here would
        // bring the election lines back.
        assert!(EnvFilter::try_new(DEFAULT_LOG).is_ok());
    }
}
