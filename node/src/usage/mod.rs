//! Usage metering: one record per request with its capability's fields, summed in memory per
//! key and capability on this node, for `GET /admin/v1/usage`.
//!
//! Per node, not replicated: the cluster-wide usage ledger (batches committed through Raft,
//! spooled to disk until acknowledged) is not built yet. Totals here start from
//! zero when the node starts. The mutex is held for a map update, never across an await.

pub(crate) mod audio;

use parking_lot::Mutex;
use std::collections::BTreeMap;

use aigw_cluster::KeyId;
use serde::Serialize;

/// What was used, by endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Capability {
    Chat,
    Embeddings,
    Images,
    AudioTranscriptions,
    Videos,
    /// Pass-through capabilities: a call count each.
    Mcp,
    Agent,
    Sandbox,
}

/// One request's usage. Fields the capability does not have stay `None`; a field the
/// capability has but the gateway could not learn is also `None`, and counted as unmetered.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct UsageRecord {
    /// Chat and embeddings: `usage.prompt_tokens` of the upstream's answer (for a chat stream
    /// without usage, the gateway's estimate).
    pub input_tokens: Option<u64>,
    /// Chat: `usage.completion_tokens` (for a stream without usage, the streamed text counted).
    pub output_tokens: Option<u64>,
    /// Chat: `usage.prompt_tokens_details.cached_tokens`, part of the input.
    pub cached_tokens: Option<u64>,
    /// Images: how many were asked for (`n`, default 1).
    pub images: Option<u64>,
    /// Images: the requested `size` (`"1024x1024"`, or `"auto"` when not given).
    pub size_tier: Option<String>,
    /// Audio: seconds of audio, from the answer's `duration` or the uploaded file's header.
    pub audio_seconds: Option<f64>,
    /// Videos: seconds of video asked for (`seconds`).
    pub video_seconds: Option<f64>,
}

/// Sums for one key and capability.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct UsageTotals {
    pub requests: u64,
    /// Requests whose capability field could not be learned (e.g. no `usage` in the answer).
    pub unmetered: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub images: u64,
    /// Image count per size tier.
    pub images_by_size: BTreeMap<String, u64>,
    pub audio_seconds: f64,
    pub video_seconds: f64,
}

impl UsageTotals {
    fn add(&mut self, capability: Capability, record: &UsageRecord) {
        self.requests += 1;
        let metered = match capability {
            Capability::Chat | Capability::Embeddings => record.input_tokens.is_some(),
            Capability::Images => record.images.is_some(),
            Capability::AudioTranscriptions => record.audio_seconds.is_some(),
            Capability::Videos => record.video_seconds.is_some(),
            Capability::Mcp | Capability::Agent | Capability::Sandbox => true,
        };
        if !metered {
            self.unmetered += 1;
        }
        self.input_tokens += record.input_tokens.unwrap_or(0);
        self.output_tokens += record.output_tokens.unwrap_or(0);
        self.cached_tokens += record.cached_tokens.unwrap_or(0);
        if let Some(images) = record.images {
            self.images += images;
            let tier = record.size_tier.clone().unwrap_or_else(|| "auto".into());
            *self.images_by_size.entry(tier).or_default() += images;
        }
        self.audio_seconds += record.audio_seconds.unwrap_or(0.0);
        self.video_seconds += record.video_seconds.unwrap_or(0.0);
    }
}

/// This node's usage totals.
#[derive(Debug, Default)]
pub(crate) struct UsageMeter {
    totals: Mutex<BTreeMap<(KeyId, Capability), UsageTotals>>,
}

/// One row of [`UsageMeter::totals`].
#[derive(Debug, Serialize)]
pub(crate) struct UsageRow {
    pub key_id: String,
    pub capability: Capability,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

impl UsageMeter {
    pub fn record(&self, key: &KeyId, capability: Capability, record: &UsageRecord) {
        tracing::debug!(key = %key, ?capability, ?record, "usage");
        let mut totals = self.totals.lock();
        totals
            .entry((key.clone(), capability))
            .or_default()
            .add(capability, record);
    }

    /// Every key's totals per capability, by key id then capability.
    pub fn totals(&self) -> Vec<UsageRow> {
        let totals = self.totals.lock();
        totals
            .iter()
            .map(|((key, capability), totals)| UsageRow {
                key_id: key.to_string(),
                capability: *capability,
                totals: totals.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_sum_per_key_and_capability_and_unknown_fields_count_as_unmetered() {
        let meter = UsageMeter::default();
        let a = KeyId::parse("key_a").unwrap();
        let b = KeyId::parse("key_b").unwrap();
        let tokens = |n| UsageRecord {
            input_tokens: n,
            ..UsageRecord::default()
        };
        meter.record(&a, Capability::Embeddings, &tokens(Some(5)));
        meter.record(&a, Capability::Embeddings, &tokens(Some(7)));
        meter.record(&a, Capability::Embeddings, &tokens(None));
        let images = UsageRecord {
            images: Some(2),
            size_tier: Some("256x256".into()),
            ..UsageRecord::default()
        };
        meter.record(&b, Capability::Images, &images);
        let rows = meter.totals();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].key_id.as_str(), rows[0].capability),
            ("key_a", Capability::Embeddings)
        );
        assert_eq!(rows[0].totals.requests, 3);
        assert_eq!(rows[0].totals.input_tokens, 12);
        assert_eq!(rows[0].totals.unmetered, 1);
        assert_eq!(rows[1].totals.images_by_size["256x256"], 2);
    }
}
