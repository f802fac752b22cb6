//! The route table: public model name -> the targets that serve it, built from a state
//! snapshot and read by the request path without locks.

use std::collections::HashMap;
use std::sync::Arc;

use aigw_actors::WeightedRotation;
use aigw_cluster::StateSnapshot;

use super::upstream::UpstreamEndpoint;

/// One way to serve a public model: an upstream and the model name it knows.
#[derive(Debug)]
pub(crate) struct RouteTarget {
    pub upstream: Arc<UpstreamEndpoint>,
    /// The upstream's model name, already encoded as a JSON string for splicing.
    pub model_json: Box<str>,
}

#[derive(Debug)]
pub(crate) struct ModelRoute {
    /// Targets of the best priority tier (lowest `priority`). Lower tiers take traffic only
    /// through failover, which comes with upstream health (routing issue).
    targets: Vec<RouteTarget>,
    rotation: WeightedRotation,
}

impl ModelRoute {
    /// The target for the next request, by smooth weighted round-robin.
    pub fn pick(&self) -> Option<&RouteTarget> {
        self.rotation.pick().map(|i| &self.targets[i])
    }
}

#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    models: HashMap<String, ModelRoute>,
    /// Public model names in settings order, for `GET /v1/models`.
    names: Vec<String>,
}

impl RouteTable {
    pub fn build(snapshot: &StateSnapshot) -> Result<Self, String> {
        let mut upstreams = HashMap::new();
        for settings in &snapshot.upstreams {
            let endpoint = UpstreamEndpoint::new(settings)?;
            upstreams.insert(settings.id.clone(), Arc::new(endpoint));
        }
        let mut models = HashMap::new();
        let mut names = Vec::new();
        for model in &snapshot.models {
            let best_tier = model.targets.iter().map(|t| t.priority).min();
            let tier: Vec<_> = model
                .targets
                .iter()
                .filter(|t| Some(t.priority) == best_tier)
                .collect();
            let targets = tier
                .iter()
                .map(|t| {
                    let upstream = upstreams.get(&t.upstream).cloned().ok_or_else(|| {
                        format!("model `{}`: unknown upstream `{}`", model.name, t.upstream)
                    })?;
                    let model_json = serde_json::to_string(&t.model)
                        .expect("a string always serialises")
                        .into_boxed_str();
                    Ok(RouteTarget {
                        upstream,
                        model_json,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            let weights: Vec<u32> = tier.iter().map(|t| t.weight).collect();
            let route = ModelRoute {
                targets,
                rotation: WeightedRotation::new(&weights),
            };
            names.push(model.name.clone());
            models.insert(model.name.clone(), route);
        }
        Ok(Self { models, names })
    }

    pub fn get(&self, model: &str) -> Option<&ModelRoute> {
        self.models.get(model)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}
