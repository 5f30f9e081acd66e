//! `[fence] aws`: the running side of rule 4d. The controller decides whom to stop
//! (`controller/promotion/fence.rs`); this stops that node's EC2 instance through
//! `tdsvip_cloud::InstanceFence`, in a task of its own so that the `FAILOVER` right behind
//! it does not wait for EC2, and says how it went in the log and in
//! `tdsvip_fences_total{result}`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tdsvip_cloud::{Ec2Api, Identity, InstanceFence};

use crate::config::AgentConfig;
use crate::driver::{DriverError, cfg_err};
use crate::metrics::{FenceResult, ManageMetrics};

/// The EC2 side of the fence and every peer's instance, by node name.
pub(crate) struct NodeFence {
    fence: InstanceFence,
    instances: BTreeMap<String, String>,
}

impl NodeFence {
    /// With `[fence] aws = true`: an EC2 client (the SDK's credential chain, `[cloud]`'s
    /// region, deadlines and retries) and the `[[peer]] instance_id`s; otherwise `None`.
    pub(crate) async fn connect(
        config: &AgentConfig,
        identity: Option<&Identity>,
    ) -> Result<Option<Arc<NodeFence>>, DriverError> {
        let (true, Some(cloud)) = (config.fence.aws, &config.cloud) else {
            return Ok(None);
        };
        let api = Ec2Api::connect(cloud).await.map_err(|e| {
            if e.is_config_problem() {
                cfg_err("cloud", e.to_string())
            } else {
                DriverError::Start(format!("fence.aws: cannot reach EC2: {e}"))
            }
        })?;
        // Never this node's own instance: without knowing it, the executor could not refuse.
        let Some(own) = identity.and_then(|i| i.instance_id.clone()) else {
            return Err(cfg_err(
                "cloud.instance_id",
                "fence.aws: this node's own instance id is unknown (IMDS did not say, and cloud.instance_id is not set)",
            ));
        };
        let instances = config
            .peers
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.instance_id.clone()?)))
            .collect();
        Ok(Some(Arc::new(NodeFence {
            fence: InstanceFence::new(api, Some(own)),
            instances,
        })))
    }

    /// Stops `node`'s instance in the background, for the leader key `token` of `ag`.
    /// `send_by` is the controller's bound for anything sent under that key, asked right
    /// before the call: past it, the key may be someone else's and the stop is not sent.
    pub(crate) fn stop(
        self: &Arc<Self>,
        ag: &str,
        token: i64,
        node: &str,
        send_by: Option<Instant>,
        metrics: &ManageMetrics,
    ) {
        let Some(instance) = self.instances.get(node).cloned() else {
            // check-config refuses a fence without every peer's instance: only a node
            // that is no [[peer]] gets here.
            tracing::error!(
                ag,
                token,
                node,
                "manage: fence not sent: {node:?} is no [[peer]] with an instance_id"
            );
            return metrics.count_fence(ag, FenceResult::NotSent);
        };
        let Some(send_by) = send_by.filter(|&t| Instant::now() < t) else {
            tracing::warn!(
                ag,
                token,
                node,
                instance,
                "manage: fence not sent: the leader key is no longer provably held"
            );
            return metrics.count_fence(ag, FenceResult::NotSent);
        };
        let (this, ag, node, metrics) = (
            self.clone(),
            ag.to_owned(),
            node.to_owned(),
            metrics.clone(),
        );
        tokio::spawn(async move {
            // No attempt past the key's proof as it stood when the stop was decided: a
            // retry landing later could stop a node that has since become primary.
            let report = this.fence.stop_by(&instance, send_by).await;
            if report.stopped() {
                metrics.count_fence(&ag, FenceResult::Stopped);
                tracing::warn!(ag, token, node, "manage: old primary fenced: {report}");
            } else if report.calls.is_empty() {
                metrics.count_fence(&ag, FenceResult::Refused);
                tracing::error!(
                    ag,
                    token,
                    node,
                    "manage: fence refused before EC2 (check [[peer]] instance_id): {report}"
                );
            } else {
                metrics.count_fence(&ag, FenceResult::Failed);
                tracing::error!(
                    ag,
                    token,
                    node,
                    "manage: the old primary's instance could not be stopped: {report}"
                );
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::AgentMetrics;

    const OWN: &str = "i-0aaaaaaaaaaaaaaaa";

    /// A fence whose EC2 endpoint is a closed port: none of these cases may reach it.
    async fn fence() -> Arc<NodeFence> {
        let mut cfg = tdsvip_cloud::moto::config("http://127.0.0.1:9", &[]);
        cfg.mode = tdsvip_cloud::ClaimMode::SecondaryIp;
        let api = tdsvip_cloud::moto::api(&cfg).await;
        let instances = [("b", "i-0bbbbbbbbbbbbbbbb"), ("mixed-up", OWN)]
            .map(|(n, i)| (n.to_owned(), i.to_owned()))
            .into();
        Arc::new(NodeFence {
            fence: InstanceFence::new(api, Some(OWN.to_owned())),
            instances,
        })
    }

    fn count(m: &AgentMetrics, result: &str) -> String {
        let line = format!("tdsvip_fences_total{{ag=\"AG1\",result=\"{result}\"}} ");
        let text = m.encode().unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in {text}"))
            .to_owned()
    }

    #[tokio::test]
    async fn only_with_the_keys_proof_only_a_peer_and_never_this_nodes_own_instance() {
        let m = AgentMetrics::new().unwrap();
        let manage = m.manage();
        manage.set_leader("AG1", true);
        let f = fence().await;
        let later = Some(Instant::now() + Duration::from_secs(5));
        f.stop("AG1", 9, "b", None, &manage);
        let past = Instant::now().checked_sub(Duration::from_millis(1));
        f.stop("AG1", 9, "b", past, &manage);
        f.stop("AG1", 9, "not-a-peer", later, &manage);
        assert_eq!(count(&m, "not_sent"), "3");
        // A map that names this node's own instance for a peer: refused before EC2.
        f.stop("AG1", 9, "mixed-up", later, &manage);
        let waited = Instant::now();
        while count(&m, "refused") != "1" {
            assert!(
                waited.elapsed() < Duration::from_secs(5),
                "no refusal counted"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(count(&m, "stopped"), "0");
        assert_eq!(count(&m, "failed"), "0");
    }
}
