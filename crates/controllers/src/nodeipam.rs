//! Node IPAM (kube-controller-manager's range allocator): every Node gets a
//! pod range of its own, the first free /24 of the cluster's range, written
//! to `spec.podCIDR` (and `podCIDRs`). The ranges in use are the Nodes'
//! own: the controller keeps no state beyond what it read from them, so a
//! restart (or another server taking over) starts from the truth. A Node
//! that names a range keeps it; when the cluster range is used up a Node
//! gets none, as upstream leaves it, and a warning says so.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt as _;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;

/// The size of each node's pod range.
pub const NODE_PREFIX: u8 = 24;

/// The ranges in use and who holds them (pure; the loop below feeds it).
#[derive(Debug, Default)]
pub struct Ranges {
    cluster: Option<Ipv4Net>,
    held: BTreeMap<String, Ipv4Net>,
}

impl Ranges {
    pub fn new(cluster: Ipv4Net) -> Ranges {
        Ranges {
            cluster: Some(cluster),
            held: BTreeMap::new(),
        }
    }

    /// Records what a Node holds; returns true when it needs a range.
    pub fn observe(&mut self, name: &str, pod_cidr: Option<&str>) -> bool {
        match pod_cidr.and_then(|text| text.parse::<Ipv4Net>().ok()) {
            Some(range) => {
                self.held.insert(name.to_string(), range);
                false
            }
            None => {
                self.held.remove(name);
                true
            }
        }
    }

    pub fn forget(&mut self, name: &str) {
        self.held.remove(name);
    }

    /// The first /24 of the cluster range no node holds, reserved for
    /// `name`.
    pub fn allocate(&mut self, name: &str) -> Option<Ipv4Net> {
        let cluster = self.cluster?;
        let taken: BTreeSet<Ipv4Net> = self.held.values().copied().collect();
        let free = cluster
            .subnets(NODE_PREFIX.max(cluster.prefix_len()))
            .ok()?
            .find(|range| {
                !taken
                    .iter()
                    .any(|held| held.contains(range) || range.contains(held))
            })?;
        self.held.insert(name.to_string(), free);
        Some(free)
    }
}

/// Gives every Node without a pod range one, until `shutdown`.
pub async fn run(
    client: kube::Client,
    cluster: Ipv4Net,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let nodes: Api<Node> = Api::all(client);
    let mut ranges = Ranges::new(cluster);
    let mut stream = watcher(nodes.clone(), watcher::Config::default()).boxed();
    // Nodes seen without a range while the first listing is read: they are
    // given one only once every range in use is known.
    let mut waiting: Vec<String> = Vec::new();
    let mut listed = false;
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        };
        let Some(event) = event else { return };
        let mut needing = Vec::new();
        match event {
            Ok(watcher::Event::Init) => {
                listed = false;
                ranges = Ranges::new(cluster);
            }
            Ok(watcher::Event::InitApply(node)) | Ok(watcher::Event::Apply(node)) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                let pod_cidr = node.spec.as_ref().and_then(|spec| spec.pod_cidr.as_deref());
                if ranges.observe(&name, pod_cidr) && node.metadata.deletion_timestamp.is_none() {
                    if listed {
                        needing.push(name);
                    } else {
                        waiting.push(name);
                    }
                }
            }
            Ok(watcher::Event::InitDone) => {
                listed = true;
                needing.append(&mut waiting);
            }
            Ok(watcher::Event::Delete(node)) => {
                ranges.forget(&node.metadata.name.unwrap_or_default());
            }
            Err(error) => {
                tracing::debug!(%error, "the node watch was interrupted");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        for name in needing {
            let Some(range) = ranges.allocate(&name) else {
                tracing::warn!(node = %name, %cluster, "no pod range is left for a node");
                continue;
            };
            let patch = serde_json::json!({
                "spec": {"podCIDR": range.to_string(), "podCIDRs": [range.to_string()]}
            });
            match nodes
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => tracing::info!(node = %name, %range, "a node got its pod range"),
                Err(error) => {
                    ranges.forget(&name);
                    tracing::warn!(node = %name, %error, "cannot give a node its pod range");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_handed_out_in_order_around_the_ones_held() {
        let mut ranges = Ranges::new("10.42.0.0/16".parse().unwrap());
        assert!(!ranges.observe("a", Some("10.42.0.0/24")));
        assert!(ranges.observe("b", None));
        assert_eq!(ranges.allocate("b").unwrap().to_string(), "10.42.1.0/24");
        assert_eq!(ranges.allocate("c").unwrap().to_string(), "10.42.2.0/24");
        ranges.forget("a");
        assert_eq!(ranges.allocate("d").unwrap().to_string(), "10.42.0.0/24");
        let mut small = Ranges::new("10.42.0.0/24".parse().unwrap());
        assert!(small.allocate("a").is_some());
        assert_eq!(small.allocate("b"), None);
    }
}
