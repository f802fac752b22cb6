//! The processes a benchmark runs: the release `aigw` and `aigw-mock` binaries, and this
//! binary again as the bare proxy. Nothing is built here; missing binaries are an error that
//! says how to build them.
//!
//! Every process gets a port picked in advance, its stderr in a log file, and is killed when
//! its handle is dropped, so a failed or interrupted run leaves nothing listening.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// Where the three executables are.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub aigw: PathBuf,
    pub mock: PathBuf,
    /// This executable, which serves the bare proxy with its `bare-proxy` subcommand.
    pub bench: PathBuf,
}

impl Binaries {
    /// `aigw` and `aigw-mock` from the flags, else next to this executable (target/release).
    pub fn locate(aigw: Option<PathBuf>, mock: Option<PathBuf>) -> anyhow::Result<Self> {
        let bench = std::env::current_exe().context("finding this executable")?;
        let dir = bench
            .parent()
            .context("this executable has no parent directory")?
            .to_path_buf();
        let find = |given: Option<PathBuf>, name: &str| -> anyhow::Result<PathBuf> {
            let path = given.unwrap_or_else(|| dir.join(name));
            anyhow::ensure!(
                path.is_file(),
                "{} not found; build the binaries first: cargo build --release --workspace --bins \
                 (or pass --{name} PATH)",
                path.display()
            );
            Ok(path)
        };
        Ok(Self {
            aigw: find(aigw, "aigw")?,
            mock: find(mock, "aigw-mock")?,
            bench,
        })
    }

    /// True when the binaries come from a debug build, whose numbers mean nothing.
    pub fn is_debug_build(&self) -> bool {
        self.aigw.components().any(|c| c.as_os_str() == "debug")
    }
}

/// A child process serving on `addr`; killed on drop.
pub(crate) struct Process {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Process {
    pub fn spawn(
        mut command: Command,
        name: &str,
        addr: SocketAddr,
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let stderr = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        Ok(Self {
            name: name.to_owned(),
            addr,
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process' resident set size in bytes.
    pub fn rss(&mut self) -> anyhow::Result<u64> {
        self.ensure_running()?;
        super::memory::rss_bytes(self.pid())
    }

    /// An error naming the exit and the end of the log when the process has died.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                anyhow::bail!(
                    "{} exited ({status}); end of {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail.join("\n")
                )
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free right now. The bind is dropped before the child binds it, a race that
/// only another process grabbing ports on loopback at the same moment can lose.
pub(crate) fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}
