//! `[fence]`: how a new leader makes sure an old primary it could not confirm down sends
//! nothing more (rule 4d of manage mode, `controller/promotion/fence.rs`). Only EC2 so far:
//! `aws = true` stops the old primary's instance, named by its `[[peer]] instance_id`.
//!
//! Every piece it needs is checked here, each naming its key, because a fence that cannot
//! run is found out only on the day a primary is lost: manage mode (only the key holder
//! fences), a `[cloud]` section (region, credentials, retries) and an instance id for every
//! peer (a node without one could not be fenced).

use std::collections::BTreeSet;

use serde::Deserialize;

use super::{AgentConfig, ClusterMode, ConfigProblem};

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct FenceConfig {
    /// Stop the old primary's EC2 instance (`StopInstances`, `Force`, `SkipOsShutdown`).
    pub aws: bool,
}

impl AgentConfig {
    pub(super) fn validate_fence(&self, v: &mut Vec<ConfigProblem>) {
        if !self.fence.aws {
            for (i, p) in self.peers.iter().enumerate() {
                if p.instance_id.is_some() {
                    v.push(ConfigProblem::new(
                        format!("peer[{i}].instance_id"),
                        "set, but fence.aws is false: only the fence uses it",
                    ));
                }
            }
            return;
        }
        if self.cluster.mode != ClusterMode::Manage {
            v.push(ConfigProblem::new(
                "fence.aws",
                "needs cluster.mode = \"manage\": only the agent holding the AG's leader key fences",
            ));
        }
        if self.cloud.is_none() {
            v.push(ConfigProblem::new(
                "fence.aws",
                "needs a [cloud] section (provider = \"aws\", region, call_timeout_ms, max_attempts)",
            ));
        }
        if self.ags.len() > 1 {
            v.push(ConfigProblem::new(
                "fence.aws",
                format!(
                    "{} [[ag]]: a node is stopped for one AG's loss while it may be another AG's healthy primary; the fence takes one AG per node",
                    self.ags.len()
                ),
            ));
        }
        if let Some(c) = &self.cloud
            && c.instance_id.is_none()
            && c.eni_id.is_some()
        {
            v.push(ConfigProblem::new(
                "cloud.instance_id",
                "required with fence.aws when cloud.eni_id is set: the fence must know this node's own instance, never to stop it",
            ));
        }
        if self.peers.is_empty() {
            v.push(ConfigProblem::new(
                "fence.aws",
                "no [[peer]]: there is no other node to fence",
            ));
        }
        self.validate_peer_instances(v);
    }

    fn validate_peer_instances(&self, v: &mut Vec<ConfigProblem>) {
        let own = self.cloud.as_ref().and_then(|c| c.instance_id.as_deref());
        let mut seen = BTreeSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            let key = format!("peer[{i}].instance_id");
            let Some(id) = p.instance_id.as_deref() else {
                v.push(ConfigProblem::new(
                    key,
                    format!("required with fence.aws: the instance stopped when {:?} is lost as primary", p.name),
                ));
                continue;
            };
            let why = if !tdsvip_cloud::valid_instance_id(id) {
                "is not an instance id (expected i- followed by 8 or 17 hex digits)"
            } else if Some(id) == own {
                "is this node's own instance (cloud.instance_id)"
            } else if !seen.insert(id) {
                "is another peer's instance too"
            } else {
                continue;
            };
            v.push(ConfigProblem::new(key, format!("{id:?} {why}")));
        }
    }
}
