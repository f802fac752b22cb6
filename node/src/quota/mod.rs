//! Admission against a key's limits, cluster-wide, without a Raft write per request.
//!
//! Period budgets (calls, tokens, input and output tokens per minute/hour/day/month/total) are
//! spent from leases: this node asks the cluster for a slice of a budget (`GrantLease`,
//! `available -= slice`) and admits locally while the slice lasts, one short lock per
//! admission. Only an empty slice makes a request wait, for the next grant. A slice is given
//! back with what was used (`CloseLease`) when the period rolls over, when it runs dry, or after
//! the key has been idle; after a restart a node closes its old leases at their persisted
//! marks. So admissions never exceed a budget under any fault (docs/QUOTAS.md), at the cost of
//! capacity stranded on an unreachable node until it returns.
//!
//! Rates (RPM, TPM) are enforced by a token bucket holding this node's share: the leader's
//! demand-weighted plan for this moment (rates.rs), else the limit divided by the number of
//! voting members (QUOTAS.md's fallback share, which always sums to at most the limit).
//!
//! Tokens are reserved at admission (input estimate + the output maximum) and reconciled with
//! the upstream's `usage` when the response ends; a reservation is refunded only to the lease it
//! came from (otherwise it stays counted, which strands but never over-admits).
//!
//! Files by concern: this one is the request glue ([`admit`], [`settle_on_end`]);
//! admission.rs takes concurrency, rates and budgets together; rate_limit.rs the buckets and
//! their headers; ledger.rs the leases and every effect around the pure lease arithmetic
//! (aigw-actors' lease.rs, beside the key actor that renews them); refusal.rs the engine's refusals and their one conversion to the client error;
//! raft_ledger.rs the I/O the key actors (aigw-actors) lease through; bucket.rs, rates.rs,
//! marks.rs, tap.rs as their docs say.
//!
//! This is an engine: it never imports a handler (openai/, passthrough/, admin/) or state.rs.

mod admission;
mod bucket;
mod ledger;
mod marks;
mod raft_ledger;
mod rate_limit;
pub(crate) mod rates;
mod refusal;
pub(crate) mod tap;

pub(crate) use admission::Admission;
pub(crate) use ledger::Quotas;
pub(crate) use refusal::Refusal;

use aigw_cluster::KeyRecord;
use aigw_config::TokenEncoding;

use crate::proxy::tap::{BodyEnds, TapBody};
use crate::tokens::{self, Estimate};
use tap::Usage;

/// Admits one request of `key` on this node: `Ok(None)` when the key has no limits.
/// `estimate` runs only when the key has token limits (a key with none pays no tokenizer),
/// first with an upper bound that costs nothing to compute; only a request that the bound
/// would have refused is estimated again with tiktoken (`exact`) and tried once more, so exact
/// counting (and the vocabulary's memory, loaded then) is paid where a limit is close.
/// `quotas`: unset when the node enforces no limits (unit tests without a cluster).
/// `encodings`: the vocabularies to load before an exact count.
pub(crate) async fn admit(
    quotas: Option<&Quotas>,
    key: &KeyRecord,
    encodings: impl FnOnce() -> Vec<TokenEncoding>,
    estimate: impl Fn(bool) -> Estimate,
) -> Result<Option<Admission>, Refusal> {
    let Some(quotas) = quotas.filter(|_| !key.limits.is_empty()) else {
        return Ok(None);
    };
    if !key.limits.counts_tokens() {
        return Ok(Some(quotas.admit(key, Estimate::calls_only()).await?));
    }
    match quotas.admit(key, estimate(false)).await {
        Err(Refusal::Rate { .. } | Refusal::Budget { .. } | Refusal::TooLarge { .. }) => {
            tokens::load(encodings()).await;
            Ok(Some(quotas.admit(key, estimate(true)).await?))
        }
        admitted => Ok(Some(admitted?)),
    }
}

/// Puts the admission's rate headers on `response` and settles it when the body ends, with the
/// usage `usage` reads from the body's ends (`None`: unknown, the reservation stands). An
/// upstream error settles at once with no tokens: nothing was generated, the call counts.
pub(crate) fn settle_on_end(
    mut admission: Option<Admission>,
    mut response: axum::response::Response,
    usage: impl FnOnce(&BodyEnds) -> Option<Usage> + Send + 'static,
) -> axum::response::Response {
    let Some(mut admission) = admission.take() else {
        return response;
    };
    response.headers_mut().extend(admission.take_headers());
    if !response.status().is_success() {
        admission.settle(Some(Usage::default()));
        return response;
    }
    let body = std::mem::take(response.body_mut());
    *response.body_mut() = TapBody::wrap(body, move |ends| admission.settle(usage(&ends)));
    response
}
