//! One request's admission: the key's concurrency, its rates and its budgets taken together
//! or not at all, and [`Admission`], the claims settled when the response ends.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aigw_cluster::{Dimension, KeyRecord, unix_now};
use http::HeaderMap;
use tokio::time::Instant;

use super::Quotas;
use super::ledger::{KeyQuota, slot_index};
use super::rate_limit::retry_after;
use super::refusal::{Refusal, TooLargeFor};
use super::tap::Usage;
use crate::tokens::Estimate;

/// Units one request reserves in each dimension.
fn cost(dimension: Dimension, estimate: Estimate) -> u64 {
    match dimension {
        Dimension::Calls => 1,
        Dimension::Tokens => estimate.input.saturating_add(estimate.output),
        Dimension::InputTokens => estimate.input,
        Dimension::OutputTokens => estimate.output,
    }
}

fn actual(dimension: Dimension, usage: Usage) -> u64 {
    match dimension {
        Dimension::Calls => 1,
        Dimension::Tokens => usage.input.saturating_add(usage.output),
        Dimension::InputTokens => usage.input,
        Dimension::OutputTokens => usage.output,
    }
}

struct Reservation {
    dimension: Dimension,
    lease: u64,
    cost: u64,
}

/// One admitted request's claims, settled when its response ends.
pub(crate) struct Admission {
    quota: Option<Arc<KeyQuota>>,
    pub(super) estimate: Estimate,
    reservations: Vec<Reservation>,
    /// Tokens taken from the TPM bucket, given back or charged more at the end.
    pub(super) tpm_taken: f64,
    holds_concurrency: bool,
    /// `x-ratelimit-*` for the response.
    pub(super) headers: HeaderMap,
}

impl Admission {
    fn unlimited() -> Self {
        Self {
            quota: None,
            estimate: Estimate {
                input: 0,
                output: 0,
            },
            reservations: Vec::new(),
            tpm_taken: 0.0,
            holds_concurrency: false,
            headers: HeaderMap::new(),
        }
    }

    /// The input tokens reserved (0 when the key has no token limits).
    pub fn estimated_input(&self) -> u64 {
        self.estimate.input
    }

    /// The `x-ratelimit-*` headers for the response, moved out (a second call gets none).
    pub fn take_headers(&mut self) -> HeaderMap {
        std::mem::take(&mut self.headers)
    }

    /// Reconciles the reservations with what was used (`None`: unknown, keep them all).
    pub fn settle(mut self, usage: Option<Usage>) {
        let Some(quota) = self.quota.take() else {
            return;
        };
        if let Some(usage) = usage {
            for r in &self.reservations {
                if r.dimension == Dimension::Calls {
                    continue;
                }
                let used = actual(r.dimension, usage);
                let mut held = quota.slots[slot_index(r.dimension)].held.lock();
                if let Some(lease) = held.as_mut().filter(|l| l.id == r.lease) {
                    // Above the reservation is a debt the slice pays before the next admission.
                    lease.settle(r.cost, used);
                }
            }
            if self.tpm_taken > 0.0 {
                let used = usage.input.saturating_add(usage.output) as f64;
                quota
                    .rate
                    .lock()
                    .give_back(0.0, self.tpm_taken - used, Instant::now());
            }
        }
        if self.holds_concurrency {
            quota.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.holds_concurrency = false;
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.holds_concurrency
            && let Some(quota) = &self.quota
        {
            quota.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Quotas {
    /// Admits one request of `key` expected to cost `estimate`, or refuses it with 429 (rate:
    /// `rate_limit_exceeded`; budget: `insufficient_quota`). Waits on the cluster only when a
    /// budget's slice is empty.
    pub async fn admit(&self, key: &KeyRecord, estimate: Estimate) -> Result<Admission, Refusal> {
        let limits = &key.limits;
        if limits.is_empty() {
            return Ok(Admission::unlimited());
        }
        let quota = self.keys.entry(key.id.clone()).or_default().value().clone();
        quota.last_used.store(unix_now(), Ordering::Relaxed);
        // A request larger than a whole budget could only ever be refused as "used up",
        // which invites a retry that can never succeed.
        // (A call costs 1: a calls budget is never too small for one, only used up.)
        for dimension in Dimension::ALL {
            let units = cost(dimension, estimate);
            let budget = limits.budget(dimension);
            if let Some(budget) =
                budget.filter(|b| dimension != Dimension::Calls && units > b.limit)
            {
                let name = dimension.as_str();
                return Err(Refusal::TooLarge {
                    limit: TooLargeFor::Budget,
                    message: format!(
                        "This request needs about {units} {name}, more than this key's whole {name} budget of {} per {}: it can never be admitted as it is. Lower max_tokens or max_completion_tokens, shorten the input, or raise the budget.",
                        budget.limit,
                        budget.period.as_str()
                    ),
                    headers: self.rate_headers(key, &quota),
                });
            }
        }
        let snapshot = self.cluster.state().load();
        let voters = snapshot.voters;
        let mut admission = Admission {
            quota: Some(Arc::clone(&quota)),
            estimate,
            reservations: Vec::new(),
            tpm_taken: 0.0,
            holds_concurrency: false,
            headers: HeaderMap::new(),
        };

        if let Some(max) = limits.max_concurrent {
            let share = (max as usize / voters).max(1) as u32;
            if quota.in_flight.fetch_add(1, Ordering::AcqRel) >= share {
                quota.in_flight.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::Rate {
                    message: format!(
                        "Too many concurrent requests for this key (at most {share} at once on this node)."
                    ),
                    headers: retry_after(Duration::from_secs(1)),
                });
            }
            admission.holds_concurrency = true;
        }

        self.take_rates(key, &quota, &snapshot, &mut admission)?;

        for dimension in Dimension::ALL {
            let Some(budget) = limits.budget(dimension) else {
                continue;
            };
            let units = cost(dimension, estimate);
            match self
                .reserve(key, &quota, dimension, budget, units, voters)
                .await
            {
                Ok(Some(lease)) => admission.reservations.push(Reservation {
                    dimension,
                    lease,
                    cost: units,
                }),
                Ok(None) => {}
                Err(error) => {
                    self.release(&quota, &admission);
                    // A budget refusal describes the key's rates too, as an admission does,
                    // with what this request took given back.
                    return Err(error.with_rate_headers(self.rate_headers(key, &quota)));
                }
            }
        }
        Ok(admission)
    }

    /// Gives back what an admission took before it was refused further on.
    fn release(&self, quota: &KeyQuota, admission: &Admission) {
        for r in &admission.reservations {
            let mut held = quota.slots[slot_index(r.dimension)].held.lock();
            if let Some(lease) = held.as_mut().filter(|l| l.id == r.lease) {
                lease.settle(r.cost, 0);
            }
        }
        quota
            .rate
            .lock()
            .give_back(1.0, admission.tpm_taken, Instant::now());
    }
}
