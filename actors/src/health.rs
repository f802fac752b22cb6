//! Active health checks: the probe the node injects, and the thresholds that turn a run of
//! probe results into a health verdict.
//!
//! This crate does no HTTP: the node implements [`HealthProbe`] with its upstream client. The
//! upstream actor runs it every `interval`, bounds it by `timeout` (dropping the future
//! cancels the request) and feeds the result to [`ProbeTracker`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use aigw_config::HealthCheckSettings;
use tokio::time::Instant;

/// A probe's answer: `Err` says why it failed, in words safe to show an operator.
pub type ProbeResult = Result<(), String>;

pub type ProbeFuture = Pin<Box<dyn Future<Output = ProbeResult> + Send + 'static>>;

/// One active health check of one upstream, e.g. `GET /health` expecting a 2xx.
pub trait HealthProbe: Send + Sync + 'static {
    /// Starts one probe. The caller enforces the timeout.
    fn probe(&self) -> ProbeFuture;

    /// What this probe checks, e.g. the URL it gets. A settings change rebuilds every probe;
    /// one whose target is unchanged still watches the same upstream, so its actor and state
    /// are kept (`NodeActors::plan_upstreams`). Compared, never shown or logged, so it may
    /// carry what the probe sends. `None` (the default): the probe object is its own target,
    /// and only the same `Arc` counts as unchanged.
    fn target(&self) -> Option<String> {
        None
    }
}

impl std::fmt::Debug for dyn HealthProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the target: it may hold credentials.
        f.debug_struct("HealthProbe").finish_non_exhaustive()
    }
}

/// Whether two probes check the same thing (see [`HealthProbe::target`]).
pub(crate) fn same_target(a: &Arc<dyn HealthProbe>, b: &Arc<dyn HealthProbe>) -> bool {
    if Arc::ptr_eq(a, b) {
        return true;
    }
    match (a.target(), b.target()) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// What the probes say about an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// No verdict yet (just started, or probes disabled).
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTracker {
    pub health: Health,
    /// When `health` last changed.
    pub since: Instant,
    passes_in_a_row: u32,
    fails_in_a_row: u32,
    /// Why the last failed probe failed, for the admin view.
    pub last_failure: Option<Arc<str>>,
}

impl ProbeTracker {
    pub fn new(now: Instant) -> Self {
        Self {
            health: Health::Unknown,
            since: now,
            passes_in_a_row: 0,
            fails_in_a_row: 0,
            last_failure: None,
        }
    }

    /// Records one probe result; returns the new health when it changed.
    ///
    /// From `Unknown` one pass is enough to be up (nothing contradicts it), while going down
    /// always takes `unhealthy_threshold` failures, so a node that starts while an upstream
    /// blips does not shun it.
    pub fn record(
        &mut self,
        result: &ProbeResult,
        now: Instant,
        settings: &HealthCheckSettings,
    ) -> Option<Health> {
        let next = match result {
            Ok(()) => {
                self.passes_in_a_row = self.passes_in_a_row.saturating_add(1);
                self.fails_in_a_row = 0;
                let enough = self.health == Health::Unknown
                    || self.passes_in_a_row >= settings.healthy_threshold;
                (self.health != Health::Up && enough).then_some(Health::Up)
            }
            Err(why) => {
                self.fails_in_a_row = self.fails_in_a_row.saturating_add(1);
                self.passes_in_a_row = 0;
                self.last_failure = Some(why.as_str().into());
                let enough = self.fails_in_a_row >= settings.unhealthy_threshold;
                (self.health != Health::Down && enough).then_some(Health::Down)
            }
        };
        if let Some(health) = next {
            self.health = health;
            self.since = now;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(healthy: u32, unhealthy: u32) -> HealthCheckSettings {
        HealthCheckSettings {
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
            ..HealthCheckSettings::default()
        }
    }

    #[test]
    fn one_pass_from_unknown_is_up_then_the_unhealthy_threshold_takes_it_down() {
        let s = settings(2, 3);
        let now = Instant::now();
        let mut tracker = ProbeTracker::new(now);
        assert_eq!(tracker.record(&Ok(()), now, &s), Some(Health::Up));
        let fail = Err("connection refused".to_owned());
        assert_eq!(tracker.record(&fail, now, &s), None);
        assert_eq!(tracker.record(&fail, now, &s), None);
        assert_eq!(tracker.record(&fail, now, &s), Some(Health::Down));
        assert_eq!(tracker.last_failure.as_deref(), Some("connection refused"));
    }

    #[test]
    fn coming_back_takes_the_healthy_threshold_in_a_row() {
        let s = settings(2, 1);
        let now = Instant::now();
        let mut tracker = ProbeTracker::new(now);
        let fail = Err("503".to_owned());
        assert_eq!(tracker.record(&fail, now, &s), Some(Health::Down));
        assert_eq!(tracker.record(&Ok(()), now, &s), None);
        assert_eq!(tracker.record(&fail, now, &s), None);
        assert_eq!(tracker.record(&Ok(()), now, &s), None);
        let later = now + std::time::Duration::from_secs(1);
        assert_eq!(tracker.record(&Ok(()), later, &s), Some(Health::Up));
        assert_eq!(tracker.since, later);
    }

    #[test]
    fn from_unknown_going_down_still_takes_the_threshold() {
        let s = settings(1, 2);
        let now = Instant::now();
        let mut tracker = ProbeTracker::new(now);
        let fail = Err("timeout".to_owned());
        assert_eq!(tracker.record(&fail, now, &s), None);
        assert_eq!(tracker.health, Health::Unknown);
        assert_eq!(tracker.record(&fail, now, &s), Some(Health::Down));
    }
}
