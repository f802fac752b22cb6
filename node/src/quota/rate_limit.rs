//! Rate limits (RPM, TPM) on this node: each key's token buckets sized to this node's share
//! (the leader's plan for this moment, else the even split), the `x-ratelimit-*` headers, and
//! the demand gossiped to the planner.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aigw_cluster::{KeyId, KeyRecord, StateSnapshot};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

use super::Quotas;
use super::admission::Admission;
use super::bucket::{self, Bucket};
use super::ledger::KeyQuota;
use super::rates;
use super::refusal::{Refusal, TooLargeFor};

/// A key's rate buckets on this node.
#[derive(Default)]
pub(super) struct Rates {
    /// The share (per minute) the bucket was sized for, and the bucket.
    rpm: Option<(f64, Bucket)>,
    tpm: Option<(f64, Bucket)>,
    /// Requests and tokens per minute asked of this node (admitted or not), smoothed: the
    /// demand it gossips to the rate planner.
    demand: (f64, f64),
}

impl Rates {
    /// Gives back `requests` and `tokens` taken by an admission refused further on, or
    /// settles `tokens` (negative: more were used than taken, a debt).
    pub fn give_back(&mut self, requests: f64, tokens: f64, now: Instant) {
        if let Some((_, bucket)) = self.rpm.as_mut() {
            bucket.adjust(requests, now);
        }
        if let Some((_, bucket)) = self.tpm.as_mut() {
            bucket.adjust(tokens, now);
        }
    }
}

impl Quotas {
    /// Takes one request and its tokens from the key's RPM and TPM buckets, sized to this
    /// node's share now, or refuses with the wait in `retry-after`.
    pub(super) fn take_rates(
        &self,
        key: &KeyRecord,
        quota: &KeyQuota,
        snapshot: &StateSnapshot,
        admission: &mut Admission,
    ) -> Result<(), Refusal> {
        let voters = snapshot.voters;
        let now = Instant::now();
        let tokens = admission
            .estimate
            .input
            .saturating_add(admission.estimate.output) as f64;
        if key.limits.rpm.is_none() && key.limits.tpm.is_none() {
            return Ok(());
        }
        quota.asked_requests.fetch_add(1, Ordering::Relaxed);
        quota
            .asked_tokens
            .fetch_add(tokens as u64, Ordering::Relaxed);
        // This node's share: the leader's plan for this moment, else the even split.
        let plans = snapshot.rate_plans.get(&key.id);
        let clock = rates::now_ms();
        let share = |limit: u64, rate: rates::Rate| {
            let fallback = limit as f64 / voters as f64;
            match plans {
                Some(plans) => rates::share_at(plans, self.node, rate, fallback, clock),
                None => fallback,
            }
        };
        let mut rates = quota.rate.lock();
        let restarted = self.restarted;
        let sized = |slot: &mut Option<(f64, Bucket)>, share: f64, limit: u64, burst| {
            let capacity = bucket::capacity(share, limit, burst);
            match slot {
                Some((sized, bucket)) if *sized == share && bucket.capacity() == capacity => {}
                Some((_, bucket)) => *slot = Some((share, bucket.resized(share, capacity, now))),
                None => *slot = Some((share, Bucket::new(share, capacity, now, restarted))),
            }
        };
        if let Some(rpm) = key.limits.rpm {
            let rpm_share = share(rpm, rates::Rate::Rpm);
            sized(&mut rates.rpm, rpm_share, rpm, key.limits.rpm_burst);
            let (_, bucket) = rates.rpm.as_mut().expect("sized above");
            if !bucket.try_take(1.0, now) {
                let wait = bucket.wait_for(1.0, now);
                let mut headers = rate_headers(&mut rates, key, now);
                headers.extend(retry_after(wait));
                return Err(Refusal::Rate {
                    message: format!("Rate limit reached: {rpm} requests per minute for this key."),
                    headers,
                });
            }
        }
        if let Some(tpm) = key.limits.tpm {
            let tpm_share = share(tpm, rates::Rate::Tpm);
            sized(&mut rates.tpm, tpm_share, tpm, key.limits.tpm_burst);
            let (_, bucket) = rates.tpm.as_mut().expect("sized above");
            let capacity = bucket.capacity();
            if tokens > capacity {
                // Waiting would not help: the bucket never holds this much. No retry-after.
                if let Some((_, rpm)) = rates.rpm.as_mut() {
                    rpm.adjust(1.0, now);
                }
                let burst = key.limits.tpm_burst.map_or_else(
                    || "the default burst, a sixth of tpm".to_owned(),
                    |burst| format!("tpm_burst = {burst}"),
                );
                return Err(Refusal::TooLarge {
                    limit: TooLargeFor::Rate,
                    message: format!(
                        "This request needs about {tokens} tokens, more than this key's rate limit of {tpm} tokens per minute ever admits at once on this node: {} tokens (its share of the key's burst: {burst}). It can never be admitted as it is: lower max_tokens or max_completion_tokens, shorten the input, or raise the key's tpm or tpm_burst.",
                        capacity.floor()
                    ),
                    headers: rate_headers(&mut rates, key, now),
                });
            }
            if !bucket.try_take(tokens, now) {
                let wait = bucket.wait_for(tokens, now);
                if let Some((_, rpm)) = rates.rpm.as_mut() {
                    rpm.adjust(1.0, now);
                }
                let mut headers = rate_headers(&mut rates, key, now);
                headers.extend(retry_after(wait));
                return Err(Refusal::Rate {
                    message: format!(
                        "Rate limit reached: {tpm} tokens per minute for this key; this request needs about {tokens}."
                    ),
                    headers,
                });
            }
            admission.tpm_taken = tokens;
        }
        admission.headers = rate_headers(&mut rates, key, now);
        Ok(())
    }

    /// The `x-ratelimit-*` headers of `key` on this node now.
    pub(super) fn rate_headers(&self, key: &KeyRecord, quota: &KeyQuota) -> HeaderMap {
        rate_headers(&mut quota.rate.lock(), key, Instant::now())
    }

    /// This node's view of a key's rate buckets, for the admin API.
    pub fn local_rates(&self, key: &KeyId) -> Option<LocalRates> {
        let quota = self.keys.get(key)?;
        let now = Instant::now();
        let mut rates = quota.rate.lock();
        Some(LocalRates {
            remaining_requests: rates.rpm.as_mut().map(|(_, b)| b.remaining(now)),
            remaining_tokens: rates.tpm.as_mut().map(|(_, b)| b.remaining(now)),
            rpm_share: rates.rpm.as_ref().map(|(share, _)| *share),
            tpm_share: rates.tpm.as_ref().map(|(share, _)| *share),
            requests_per_minute: rates.demand.0,
            tokens_per_minute: rates.demand.1,
        })
    }

    /// Each active key's demand on this node since the last call `elapsed` seconds ago, per
    /// minute and smoothed, for the rate planner.
    pub(crate) fn take_demand(
        &self,
        elapsed: f64,
    ) -> std::collections::BTreeMap<KeyId, (f64, f64)> {
        let mut demand = std::collections::BTreeMap::new();
        for entry in self.keys.iter() {
            let requests = entry.asked_requests.swap(0, Ordering::Relaxed) as f64;
            let tokens = entry.asked_tokens.swap(0, Ordering::Relaxed) as f64;
            let mut rates = entry.rate.lock();
            if rates.rpm.is_none() && rates.tpm.is_none() {
                continue;
            }
            let per_minute = 60.0 / elapsed.max(0.001);
            let smooth = |old: f64, new: f64| 0.5 * old + 0.5 * new;
            rates.demand = (
                smooth(rates.demand.0, requests * per_minute),
                smooth(rates.demand.1, tokens * per_minute),
            );
            if rates.demand.0 >= 0.5 || rates.demand.1 >= 0.5 {
                demand.insert(entry.key().clone(), rates.demand);
            }
        }
        demand
    }
}

/// This node's view of a key's rates, for the admin API.
#[derive(Debug, serde::Serialize)]
pub(crate) struct LocalRates {
    pub remaining_requests: Option<u64>,
    pub remaining_tokens: Option<u64>,
    /// This node's share of the key's RPM and TPM now (planned by demand, else the even split).
    pub rpm_share: Option<f64>,
    pub tpm_share: Option<f64>,
    /// What this node was asked for, per minute (smoothed).
    pub requests_per_minute: f64,
    pub tokens_per_minute: f64,
}

/// OpenAI's rate-limit headers for this node's share of the key's RPM and TPM.
fn rate_headers(rates: &mut Rates, key: &KeyRecord, now: Instant) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let (Some(limit), Some((_, bucket))) = (key.limits.rpm, rates.rpm.as_mut()) {
        headers.insert(LIMIT_REQUESTS, HeaderValue::from(limit));
        headers.insert(REMAINING_REQUESTS, HeaderValue::from(bucket.remaining(now)));
        headers.insert(RESET_REQUESTS, seconds(bucket.until_full(now)));
    }
    if let (Some(limit), Some((_, bucket))) = (key.limits.tpm, rates.tpm.as_mut()) {
        headers.insert(LIMIT_TOKENS, HeaderValue::from(limit));
        headers.insert(REMAINING_TOKENS, HeaderValue::from(bucket.remaining(now)));
        headers.insert(RESET_TOKENS, seconds(bucket.until_full(now)));
    }
    headers
}

const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

/// `duration` as OpenAI writes it, seconds with three decimals (`"1.250s"`), rounded to the
/// millisecond, without `format!`: this runs for every admitted request of a rate-limited key.
fn seconds(duration: Duration) -> HeaderValue {
    let millis = duration.as_nanos().saturating_add(500_000) / 1_000_000;
    let (whole, frac) = (millis / 1000, (millis % 1000) as u16);
    let mut text = String::with_capacity(24);
    text.push_str(itoa::Buffer::new().format(whole));
    text.push('.');
    text.push(char::from(b'0' + (frac / 100) as u8));
    text.push(char::from(b'0' + (frac / 10 % 10) as u8));
    text.push(char::from(b'0' + (frac % 10) as u8));
    text.push('s');
    HeaderValue::try_from(text).expect("digits, a dot and an s are a valid header value")
}

pub(super) fn retry_after(wait: Duration) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    headers
}
