//! The processes of a run: `aigw serve` nodes, each on its own loopback address with its own
//! config, data dir and log, and the `aigw-mock` upstreams. Nothing is built here: the binaries
//! come from flags or sit next to this executable (target/release).
//!
//! Every process is killed when the [`Processes`] are dropped (a normal end, an error, a panic
//! unwinding, Ctrl-C), so a run leaves nothing listening. Logs are appended across restarts,
//! with a line from the harness before each start.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// The admin token of every run's nodes.
pub const ADMIN_TOKEN: &str = "jepsen-admin-token";
/// The chat key bootstrapped into every run's cluster.
pub const CHAT_SECRET: &str = "sk-jepsen-chat-key";
/// How many mocks sit behind the one model (`chat-default`); the upstream nemesis faults these.
pub const MOCKS: usize = 2;
/// The index of the quota workload's own mock (`mock-q`, behind the model `quota-model`),
/// after the faulted ones. No nemesis touches it, so its per-key counts of what reached it
/// (`GET /mock/stats`, `by_user`) last the whole run and the gateway never fails over from it.
pub const QUOTA_MOCK: usize = MOCKS;
/// The model the quota workload's keys may use.
pub const QUOTA_MODEL: &str = "quota-model";

/// Where everything listens.
#[derive(Debug, Clone)]
pub struct Layout {
    pub nodes: usize,
    pub port_base: u16,
    /// The nodes' `routing.panic_mode`.
    pub panic_mode: bool,
    /// The chat mocks' error rate from the start (`None`: the mock's default, no errors).
    pub mock_error_rate: Option<f64>,
}

impl Layout {
    /// Node `i` (0-based, id `i + 1`) lives on 127.0.0.(11 + i).
    pub fn ip(&self, node: usize) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, 11 + node as u8)
    }
    pub fn cluster_port(&self) -> u16 {
        self.port_base + 1
    }
    pub fn api_url(&self, node: usize) -> String {
        format!("http://{}:{}", self.ip(node), self.port_base + 80)
    }
    pub fn admin_url(&self, node: usize) -> String {
        format!("http://{}:{}", self.ip(node), self.port_base + 81)
    }
    pub fn mock_addr(&self, mock: usize) -> String {
        format!("127.0.0.1:{}", self.port_base + 101 + mock as u16)
    }
    pub fn mock_name(mock: usize) -> String {
        if mock == QUOTA_MOCK {
            return "mock-q".into();
        }
        format!("mock-{}", (b'a' + mock as u8) as char)
    }

    fn node_config(&self, node: usize, data_dir: &Path) -> String {
        let members: Vec<String> = (0..self.nodes)
            .map(|n| format!("\"{}@{}:{}\"", n + 1, self.ip(n), self.cluster_port()))
            .collect();
        let mut toml = format!(
            r#"# Written by aigw-jepsen for one run.
[node]
id = {id}
api_listen = "{ip}:{api}"
admin_listen = "{ip}:{admin}"
cluster_listen = "{ip}:{cluster}"
data_dir = "{data}"

[server]
shutdown_grace = "1s"

[cluster]
name = "jepsen"
initial_members = [{members}]
write_timeout = "2s"

[admin]
token = "{token}"

[routing]
panic_mode = {panic_mode}
"#,
            id = node + 1,
            ip = self.ip(node),
            api = self.port_base + 80,
            admin = self.port_base + 81,
            cluster = self.cluster_port(),
            data = data_dir.display(),
            members = members.join(", "),
            token = ADMIN_TOKEN,
            panic_mode = self.panic_mode,
        );
        for mock in 0..=QUOTA_MOCK {
            toml.push_str(&format!(
                r#"
[[bootstrap.upstreams]]
id = "{name}"
kind = "openai"
base_url = "http://{addr}/v1"
timeouts = {{ connect = "1s", response_head = "3s", total = "10s" }}
health = {{ interval = "1s", timeout = "500ms" }}
"#,
                name = Self::mock_name(mock),
                addr = self.mock_addr(mock),
            ));
        }
        let targets: Vec<String> = (0..MOCKS)
            .map(|m| {
                format!(
                    "{{ upstream = \"{}\", model = \"mock-model\" }}",
                    Self::mock_name(m)
                )
            })
            .collect();
        toml.push_str(&format!(
            r#"
[[bootstrap.models]]
name = "chat-default"
targets = [{targets}]

[[bootstrap.models]]
name = "{QUOTA_MODEL}"
targets = [{{ upstream = "{quota}", model = "mock-model" }}]

[[bootstrap.keys]]
name = "jepsen-chat"
secret = "{CHAT_SECRET}"
"#,
            targets = targets.join(", "),
            quota = Self::mock_name(QUOTA_MOCK),
        ));
        toml
    }
}

/// Where the two executables are.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub aigw: PathBuf,
    pub mock: PathBuf,
}

impl Binaries {
    /// From the flags, else in `bin_dir`, else next to this executable.
    pub fn locate(
        aigw: Option<PathBuf>,
        mock: Option<PathBuf>,
        bin_dir: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let dir = match bin_dir {
            Some(dir) => dir,
            None => std::env::current_exe()
                .context("finding this executable")?
                .parent()
                .context("this executable has no directory")?
                .to_path_buf(),
        };
        let find = |given: Option<PathBuf>, name: &str| -> anyhow::Result<PathBuf> {
            let path = given.unwrap_or_else(|| dir.join(name));
            if !path.is_file() {
                bail!(
                    "{} not found; build it first: cargo build --release -p aigw --bin aigw \
                     -p aigw-jepsen --bins (or pass --{name} PATH)",
                    path.display()
                );
            }
            Ok(path)
        };
        Ok(Self {
            aigw: find(aigw, "aigw")?,
            mock: find(mock, "aigw-mock")?,
        })
    }
}

/// One child process that can be killed, paused and started again with the same arguments.
struct Proc {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl Proc {
    fn start(&mut self, why: &str) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        writeln!(
            log,
            "===== aigw-jepsen: starting {} ({why}) =====",
            self.name
        )?;
        let err: File = log.try_clone()?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .env("AIGW_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.program.display()))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and reap it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    fn signal(&mut self, signal: &str) -> anyhow::Result<()> {
        let Some(pid) = self.pid() else {
            bail!("{} is not running", self.name)
        };
        // The shell's builtin `kill`: always there, unlike procps' binary, and no unsafe code.
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -s {signal} {pid}"))
            .status()
            .context("running sh -c kill")?;
        if !status.success() {
            bail!("kill -s {signal} {pid} ({}) failed", self.name);
        }
        Ok(())
    }

    /// Whether it exited on its own (reaping it if so).
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten();
        if status.is_some() {
            self.child = None;
        }
        status
    }
}

/// All processes of a run.
pub struct Processes {
    pub layout: Layout,
    nodes: Vec<Proc>,
    mocks: Vec<Proc>,
}

impl Processes {
    /// Writes each node's config under `out/nodeN/` and prepares (does not start) everything.
    pub fn prepare(layout: Layout, bins: &Binaries, out: &Path) -> anyhow::Result<Self> {
        let mut nodes = Vec::new();
        for n in 0..layout.nodes {
            let dir = out.join(format!("node{}", n + 1));
            let data = dir.join("data");
            std::fs::create_dir_all(&data)?;
            let data = data.canonicalize()?;
            let config = dir.join("aigw.toml");
            std::fs::write(&config, layout.node_config(n, &data))?;
            nodes.push(Proc {
                name: format!("node{}", n + 1),
                program: bins.aigw.clone(),
                args: vec![
                    "serve".into(),
                    "--config".into(),
                    config.display().to_string(),
                ],
                log: out.join(format!("node{}.log", n + 1)),
                child: None,
                paused: false,
            });
        }
        let mocks = (0..=QUOTA_MOCK)
            .map(|m| Proc {
                name: Layout::mock_name(m),
                program: bins.mock.clone(),
                args: {
                    let mut args = vec![
                        "--listen".into(),
                        layout.mock_addr(m),
                        "--chunks".into(),
                        "4".into(),
                    ];
                    if let Some(rate) = layout.mock_error_rate.filter(|_| m < MOCKS) {
                        args.extend(["--error-rate".into(), rate.to_string()]);
                    }
                    args
                },
                log: out.join(format!("{}.log", Layout::mock_name(m))),
                child: None,
                paused: false,
            })
            .collect();
        Ok(Self {
            layout,
            nodes,
            mocks,
        })
    }

    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for mock in &mut self.mocks {
            mock.start("run start")?;
        }
        for node in &mut self.nodes {
            node.start("run start")?;
        }
        Ok(())
    }

    pub fn kill_node(&mut self, n: usize) {
        self.nodes[n].kill();
    }
    pub fn start_node(&mut self, n: usize, why: &str) -> anyhow::Result<()> {
        self.nodes[n].start(why)
    }
    pub fn pause_node(&mut self, n: usize) -> anyhow::Result<()> {
        self.nodes[n].signal("STOP")?;
        self.nodes[n].paused = true;
        Ok(())
    }
    pub fn resume_node(&mut self, n: usize) -> anyhow::Result<()> {
        if self.nodes[n].paused {
            self.nodes[n].signal("CONT")?;
            self.nodes[n].paused = false;
        }
        Ok(())
    }
    pub fn kill_mock(&mut self, m: usize) {
        self.mocks[m].kill();
    }
    pub fn start_mock(&mut self, m: usize, why: &str) -> anyhow::Result<()> {
        self.mocks[m].start(why)
    }

    /// Nodes that exited by themselves (not killed by the harness): a crash to report.
    pub fn crashed_nodes(&mut self) -> Vec<(usize, String)> {
        self.nodes
            .iter_mut()
            .enumerate()
            .filter_map(|(i, p)| p.exited().map(|s| (i, s.to_string())))
            .collect()
    }

    /// Everything running again and nothing paused: the end of the faults.
    pub fn restore_all(&mut self) -> anyhow::Result<()> {
        for n in 0..self.nodes.len() {
            self.resume_node(n)?;
            self.nodes[n].start("healing at the end")?;
        }
        for mock in &mut self.mocks {
            mock.start("healing at the end")?;
        }
        Ok(())
    }

    /// SIGTERM to every node (graceful), then SIGKILL whatever is left after `grace`.
    pub async fn stop_all(&mut self, grace: std::time::Duration) {
        for node in &mut self.nodes {
            if node.paused {
                let _ = node.signal("CONT");
            }
            if node.child.is_some() {
                let _ = node.signal("TERM");
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline
            && self
                .nodes
                .iter_mut()
                .any(|n| n.child.is_some() && n.exited().is_none())
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.kill_everything();
    }

    fn kill_everything(&mut self) {
        for p in self.nodes.iter_mut().chain(self.mocks.iter_mut()) {
            p.kill();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.kill_everything();
    }
}
