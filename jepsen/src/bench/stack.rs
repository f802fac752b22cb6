//! The three targets of every scenario and the processes behind them: the mock (direct), the
//! bare proxy in front of it, and aigw in front of it, all started fresh for a scenario so
//! one scenario's memory or pool state never leaks into the next.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use super::gateway_config;
use super::load::closed_loop::exchange;
use super::load::conn::Http1;
use super::load::request::ChatRequest;
use super::procs::{Binaries, Process, free_addr};

/// Longest wait for a process to answer its first request.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Direct,
    Bare,
    Aigw,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Direct, Target::Bare, Target::Aigw];

    pub fn label(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Bare => "bare proxy",
            Self::Aigw => "aigw",
        }
    }
}

/// What every scenario needs to start processes.
pub(crate) struct Env {
    pub bins: Binaries,
    /// Logs, configs and aigw's data dir; overwritten by the next run.
    pub work: PathBuf,
    /// The single key of the default aigw config.
    pub one_key: Vec<String>,
}

impl Env {
    pub fn spawn_mock(&self, flags: &[String], name: &str) -> anyhow::Result<Process> {
        let addr = free_addr()?;
        let mut command = Command::new(&self.bins.mock);
        command.arg("--listen").arg(addr.to_string()).args(flags);
        Process::spawn(command, name, addr, &self.work)
    }

    pub fn spawn_bare(&self, upstream: SocketAddr, name: &str) -> anyhow::Result<Process> {
        let addr = free_addr()?;
        let mut command = Command::new(&self.bins.bench);
        command
            .arg("bare-proxy")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--upstream")
            .arg(upstream.to_string());
        Process::spawn(command, name, addr, &self.work)
    }

    /// Writes an aigw config for `secrets` in front of `mock`; returns its address and path.
    pub fn aigw_config(
        &self,
        mock: SocketAddr,
        secrets: &[String],
        name: &str,
    ) -> anyhow::Result<(SocketAddr, PathBuf)> {
        let (addr, _admin, path) =
            self.aigw_config_with_admin(mock, secrets, name, gateway_config::KEY_LIMITS)?;
        Ok((addr, path))
    }

    /// [`Env::aigw_config`] with these key `limits`, also returning the admin API's address.
    pub fn aigw_config_with_admin(
        &self,
        mock: SocketAddr,
        secrets: &[String],
        name: &str,
        limits: &str,
    ) -> anyhow::Result<(SocketAddr, SocketAddr, PathBuf)> {
        let addr = free_addr()?;
        let admin = free_addr()?;
        let data_dir = self.work.join(format!("{name}-data"));
        // A node with an existing data dir restarts its old cluster; every run starts anew.
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir)
                .with_context(|| format!("removing {}", data_dir.display()))?;
        }
        let text = gateway_config::render(addr, admin, mock, &data_dir, secrets, limits);
        let path = gateway_config::write(&self.work, &format!("{name}.toml"), &text)?;
        Ok((addr, admin, path))
    }

    pub fn spawn_aigw(
        &self,
        addr: SocketAddr,
        config: &std::path::Path,
        name: &str,
    ) -> anyhow::Result<Process> {
        let mut command = Command::new(&self.bins.aigw);
        command.arg("serve").arg("--config").arg(config);
        Process::spawn(command, name, addr, &self.work)
    }

    /// A request with the default key, to `addr`.
    pub fn request(&self, addr: SocketAddr, stream: bool) -> anyhow::Result<ChatRequest> {
        ChatRequest::new(addr, stream, &self.one_key)
    }
}

/// Waits until `process` answers a chat completion with 2xx; returns the time since `since`.
pub(crate) async fn wait_ready(
    process: &mut Process,
    request: &ChatRequest,
    since: Instant,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + timeout;
    loop {
        process.ensure_running()?;
        if let Ok(mut conn) = Http1::connect(process.addr).await
            && exchange(&mut conn, request.build(0, false)).await.is_ok()
        {
            return Ok(since.elapsed());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not answer within {timeout:?}",
            process.name
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A mock, a bare proxy and an aigw (one key), all answering.
pub(crate) struct Stack {
    pub mock: Process,
    pub bare: Process,
    pub aigw: Process,
}

impl Stack {
    pub async fn start(env: &Env, scenario: &str, mock_flags: &[String]) -> anyhow::Result<Self> {
        let mut mock = env.spawn_mock(mock_flags, &format!("{scenario}-mock"))?;
        let mut bare = env.spawn_bare(mock.addr, &format!("{scenario}-bare"))?;
        let (addr, config) =
            env.aigw_config(mock.addr, &env.one_key, &format!("{scenario}-aigw"))?;
        let mut aigw = env.spawn_aigw(addr, &config, &format!("{scenario}-aigw"))?;
        let now = Instant::now();
        for process in [&mut mock, &mut bare, &mut aigw] {
            let request = env.request(process.addr, false)?;
            wait_ready(process, &request, now, READY_TIMEOUT)
                .await
                .with_context(|| format!("starting {}", process.name))?;
        }
        Ok(Self { mock, bare, aigw })
    }

    pub fn addr(&self, target: Target) -> SocketAddr {
        self.process(target).addr
    }

    /// The process that serves `target`'s clients: the mock itself for direct.
    pub fn process(&self, target: Target) -> &Process {
        match target {
            Target::Direct => &self.mock,
            Target::Bare => &self.bare,
            Target::Aigw => &self.aigw,
        }
    }

    pub fn process_mut(&mut self, target: Target) -> &mut Process {
        match target {
            Target::Direct => &mut self.mock,
            Target::Bare => &mut self.bare,
            Target::Aigw => &mut self.aigw,
        }
    }
}
