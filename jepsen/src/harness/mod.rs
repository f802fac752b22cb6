//! The fault-injection harness behind `aigw-jepsen`: it runs a real `aigw` cluster as
//! processes (each node on its own loopback address, with its own data dir and log) in front of
//! `aigw-mock` upstreams, drives workloads through every node while a seeded nemesis
//! partitions (iptables), kills (-9), pauses (SIGSTOP) and breaks upstreams, then heals
//! everything, reads the final state and checks what the cluster claims.
//!
//! Owns: the process layout ([`procs`]), the partitions ([`net`]), the schedule
//! ([`schedule`], pure and seeded) and its execution ([`nemesis`]), the workloads, the history
//! and the checkers, the summary. Must never: build anything (it runs the release binaries it
//! is given), touch an address outside 127.0.0.0/8, or leave a process or an iptables rule
//! behind (processes die with [`procs::Processes`], the chain with [`net::Firewall`] and the
//! panic hook). Every loop is bounded by a count or the run's deadline.
//!
//! Used by: the `aigw-jepsen` binary; docs/JEPSEN.md explains a run and its output.

pub mod checker;
mod context;
pub mod history;
mod http;
mod nemesis;
pub mod net;
pub mod options;
mod procs;
mod rng;
mod run;
pub mod schedule;
mod summary;
pub mod workload;

pub use options::Options;
pub use run::run;
