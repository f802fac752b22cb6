//! The circuit breaker of one upstream: closed -> open -> half-open -> closed (or open again).
//!
//! Closed: every request may go. Outlier detection (outlier.rs) decides when to open.
//! Open: no request goes until the open period ends; the period is `open_for`, doubled on
//! each reopening without a close in between, up to `max_open_for`, so a persistently broken
//! upstream costs one probe burst per `max_open_for` instead of one per `open_for`.
//! Half-open: at most `half_open_probes` requests go at once (the request path claims permits
//! the actor publishes); all of them succeeding closes the breaker, one failure reopens it.
//!
//! Every transition bumps `epoch`. Timers and probe outcomes carry the epoch they were made
//! for, so a timer of an earlier open period or a probe of an earlier half-open round cannot
//! move the breaker.

use std::time::Duration;

use aigw_config::BreakerSettings;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { until: Instant },
    HalfOpen { successes: u32 },
}

impl BreakerState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen { .. } => "half-open",
        }
    }
}

/// What a transition asks of the actor that owns the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    /// Arm a timer for the end of the open period.
    Opened {
        period: Duration,
    },
    /// Publish this many probe permits.
    HalfOpened {
        probes: u32,
    },
    /// Withdraw the probe permits.
    Closed,
    /// A probe ended without a verdict (its client left): give its permit back.
    ProbeReturned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    pub state: BreakerState,
    /// When the current state began.
    pub since: Instant,
    pub epoch: u64,
    /// Openings since the breaker was last closed: the backoff's exponent.
    pub reopenings: u32,
}

impl Breaker {
    pub fn new(now: Instant) -> Self {
        Self {
            state: BreakerState::Closed,
            since: now,
            epoch: 0,
            reopenings: 0,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.state == BreakerState::Closed
    }

    fn enter(&mut self, state: BreakerState, now: Instant) {
        self.state = state;
        self.since = now;
        self.epoch += 1;
    }

    /// Opens the breaker (outliers tripped it, or a half-open probe failed).
    pub fn open(&mut self, now: Instant, settings: &BreakerSettings) -> Transition {
        let period = open_period(settings, self.reopenings);
        self.reopenings = self.reopenings.saturating_add(1);
        self.enter(
            BreakerState::Open {
                until: now + period,
            },
            now,
        );
        Transition::Opened { period }
    }

    /// The open period armed in `epoch` is over: let probes through.
    pub fn open_elapsed(
        &mut self,
        epoch: u64,
        now: Instant,
        settings: &BreakerSettings,
    ) -> Transition {
        match self.state {
            BreakerState::Open { .. } if epoch == self.epoch => self.half_open(now, settings),
            _ => Transition::None,
        }
    }

    /// Lets probes through now, whatever is left of the open period (active health checks
    /// saw the upstream come back).
    pub fn half_open(&mut self, now: Instant, settings: &BreakerSettings) -> Transition {
        self.enter(BreakerState::HalfOpen { successes: 0 }, now);
        Transition::HalfOpened {
            probes: settings.half_open_probes,
        }
    }

    /// A probe admitted in `epoch` ended without saying anything about the upstream.
    pub fn probe_cancelled(&self, epoch: u64) -> Transition {
        match self.state {
            BreakerState::HalfOpen { .. } if epoch == self.epoch => Transition::ProbeReturned,
            _ => Transition::None,
        }
    }

    /// The outcome of a probe request admitted in `epoch`.
    pub fn probe_result(
        &mut self,
        epoch: u64,
        success: bool,
        now: Instant,
        settings: &BreakerSettings,
    ) -> Transition {
        let BreakerState::HalfOpen { successes } = self.state else {
            return Transition::None;
        };
        if epoch != self.epoch {
            return Transition::None;
        }
        if !success {
            return self.open(now, settings);
        }
        let successes = successes + 1;
        if successes >= settings.half_open_probes {
            self.reopenings = 0;
            self.enter(BreakerState::Closed, now);
            Transition::Closed
        } else {
            self.state = BreakerState::HalfOpen { successes };
            Transition::None
        }
    }
}

/// The open period after `reopenings` openings without a close: `open_for * 2^reopenings`,
/// at most `max_open_for`.
pub fn open_period(settings: &BreakerSettings, reopenings: u32) -> Duration {
    let factor = 1u32.checked_shl(reopenings.min(31)).unwrap_or(u32::MAX);
    settings
        .open_for
        .checked_mul(factor)
        .unwrap_or(Duration::MAX)
        .min(settings.max_open_for)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
            half_open_probes: 2,
            ..BreakerSettings::default()
        }
    }

    #[test]
    fn the_open_period_doubles_up_to_the_maximum() {
        let s = settings();
        let periods: Vec<u64> = (0..6).map(|n| open_period(&s, n).as_secs()).collect();
        assert_eq!(periods, [5, 10, 20, 40, 60, 60]);
        assert_eq!(open_period(&s, u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn closed_opens_then_half_opens_when_its_timer_fires_then_closes_on_enough_successes() {
        let s = settings();
        let t0 = Instant::now();
        let mut breaker = Breaker::new(t0);
        assert_eq!(
            breaker.open(t0, &s),
            Transition::Opened {
                period: Duration::from_secs(5)
            }
        );
        let opened = breaker.epoch;
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            breaker.open_elapsed(opened, t1, &s),
            Transition::HalfOpened { probes: 2 }
        );
        let probing = breaker.epoch;
        assert_eq!(
            breaker.probe_result(probing, true, t1, &s),
            Transition::None
        );
        assert_eq!(
            breaker.probe_result(probing, true, t1, &s),
            Transition::Closed
        );
        assert!(breaker.is_closed());
        assert_eq!(breaker.since, t1);
        assert_eq!(breaker.reopenings, 0, "a close resets the backoff");
    }

    #[test]
    fn a_failed_probe_reopens_for_twice_as_long() {
        let s = settings();
        let t0 = Instant::now();
        let mut breaker = Breaker::new(t0);
        breaker.open(t0, &s);
        breaker.open_elapsed(breaker.epoch, t0, &s);
        assert_eq!(
            breaker.probe_result(breaker.epoch, false, t0, &s),
            Transition::Opened {
                period: Duration::from_secs(10)
            }
        );
        assert!(
            matches!(breaker.state, BreakerState::Open { until } if until == t0 + Duration::from_secs(10))
        );
    }

    #[test]
    fn stale_timers_and_probes_change_nothing() {
        let s = settings();
        let t0 = Instant::now();
        let mut breaker = Breaker::new(t0);
        breaker.open(t0, &s);
        let first_open = breaker.epoch;
        breaker.half_open(t0, &s);
        let first_probe_round = breaker.epoch;
        breaker.probe_result(first_probe_round, false, t0, &s);
        // The first open period's timer fires during the second one.
        assert_eq!(breaker.open_elapsed(first_open, t0, &s), Transition::None);
        breaker.open_elapsed(breaker.epoch, t0, &s);
        // A probe admitted in the first round reports late.
        assert_eq!(
            breaker.probe_result(first_probe_round, true, t0, &s),
            Transition::None
        );
        assert_eq!(breaker.state, BreakerState::HalfOpen { successes: 0 });
    }

    #[test]
    fn probe_results_while_closed_are_ignored() {
        let s = settings();
        let mut breaker = Breaker::new(Instant::now());
        assert_eq!(
            breaker.probe_result(breaker.epoch, false, Instant::now(), &s),
            Transition::None
        );
        assert!(breaker.is_closed());
    }
}
