//! The route table: public model name -> its targets in priority tiers and the strategy that
//! picks among them, built from a state snapshot and read by the request path without locks.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use aigw_actors::{UpstreamHandle, Upstreams, WeightedRotation};
use aigw_cluster::StateSnapshot;
use aigw_config::Strategy;

use super::Endpoints;
use super::upstream::UpstreamEndpoint;

/// One way to serve a public model: an upstream and the model name it knows.
#[derive(Debug)]
pub(crate) struct RouteTarget {
    pub upstream: Arc<UpstreamEndpoint>,
    /// What the upstream's actor publishes (health, breaker, load) and the attempt door.
    pub handle: Arc<UpstreamHandle>,
    /// The upstream's model name, already encoded as a JSON string for splicing.
    pub model_json: Box<str>,
    pub weight: u32,
}

/// Targets of one priority, as a range of `ModelRoute::targets`.
#[derive(Debug)]
pub(crate) struct Tier {
    pub range: Range<usize>,
    /// Smooth weighted round-robin over the tier's targets (indices relative to the tier).
    pub rotation: WeightedRotation,
}

#[derive(Debug)]
pub(crate) struct ModelRoute {
    pub strategy: Strategy,
    /// How the model's tokens are estimated for token limits.
    pub tokens: crate::tokens::TokenCounting,
    /// What records of this model's calls keep, when the model says (`[[models]] records`).
    pub capture: Option<aigw_config::Capture>,
    /// The model's `default_max_tokens`, for upstreams that require `max_tokens`.
    pub default_max_tokens: Option<u64>,
    /// Sorted by priority, best first; settings order within a priority. At most 64, so a
    /// set of targets fits a `u64` mask.
    pub targets: Vec<RouteTarget>,
    /// In priority order: a tier is used only when no target of the tiers before it is.
    pub tiers: Vec<Tier>,
}

#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    models: HashMap<String, ModelRoute>,
    /// Public model names in settings order, for `GET /v1/models`.
    names: Vec<String>,
}

impl RouteTable {
    pub fn build(
        snapshot: &StateSnapshot,
        endpoints: &Endpoints,
        upstreams: &Upstreams,
    ) -> Result<Self, String> {
        let mut models = HashMap::new();
        let mut names = Vec::new();
        for model in &snapshot.models {
            if model.targets.len() > u64::BITS as usize {
                return Err(format!("model `{}`: more than 64 targets", model.name));
            }
            let mut settings: Vec<_> = model.targets.iter().collect();
            settings.sort_by_key(|t| t.priority);
            let targets = settings
                .iter()
                .map(|t| {
                    let unknown =
                        || format!("model `{}`: unknown upstream `{}`", model.name, t.upstream);
                    let upstream = endpoints.get(&t.upstream).cloned().ok_or_else(unknown)?;
                    let handle = upstreams
                        .get(t.upstream.as_str())
                        .cloned()
                        .ok_or_else(unknown)?;
                    let model_json = serde_json::to_string(&t.model)
                        .expect("a string always serialises")
                        .into_boxed_str();
                    Ok(RouteTarget {
                        upstream,
                        handle,
                        model_json,
                        weight: t.weight,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            let mut tiers = Vec::new();
            let mut start = 0;
            while start < settings.len() {
                let priority = settings[start].priority;
                let end = start
                    + settings[start..]
                        .iter()
                        .take_while(|t| t.priority == priority)
                        .count();
                let weights: Vec<u32> = settings[start..end].iter().map(|t| t.weight).collect();
                tiers.push(Tier {
                    range: start..end,
                    rotation: WeightedRotation::new(&weights),
                });
                start = end;
            }
            let route = ModelRoute {
                strategy: model.strategy,
                tokens: crate::tokens::TokenCounting::for_model(model),
                capture: model.records,
                default_max_tokens: model.default_max_tokens,
                targets,
                tiers,
            };
            names.push(model.name.clone());
            models.insert(model.name.clone(), route);
        }
        Ok(Self { models, names })
    }

    pub fn get(&self, model: &str) -> Option<&ModelRoute> {
        self.models.get(model)
    }

    /// A target on the upstream `id` (any model's), for calls that must go to that upstream.
    pub fn target_on(&self, id: &str) -> Option<&RouteTarget> {
        self.models
            .values()
            .flat_map(|route| &route.targets)
            .find(|target| &*target.upstream.id == id)
    }

    /// The encodings the models count tokens with.
    pub fn tokenizers(&self) -> Vec<aigw_config::TokenEncoding> {
        self.models.values().map(|m| m.tokens.encoding).collect()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}
