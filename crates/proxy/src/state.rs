//! What the proxy knows and what it has put in the kernel, with no I/O:
//! Services and EndpointSlices come in as they change, and each sync is a
//! plan — one transaction, full or only the services that changed — that
//! the caller applies and then reports on.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::model::{self, ServiceKey, ServicePort, SliceInfo};
use crate::nft::{self, Objects, RuleContext, Transaction};

/// This node, as the rules need it.
#[derive(Clone, Debug)]
pub struct NodeContext {
    /// The Node's name, matched against endpoints' `nodeName` for the Local
    /// traffic policies.
    pub node_name: String,
    /// The pod range (`--cluster-cidr`).
    pub cluster_cidr: ipnet::Ipv4Net,
}

/// One sync to carry out.
#[derive(Debug)]
pub struct Plan {
    pub transaction: Transaction,
    /// Whether it rewrites the whole table.
    pub full: bool,
    /// The services whose rules it changes (every one, for a full sync).
    pub services: Vec<ServiceKey>,
    /// What the kernel holds for those services once it is committed.
    applied: Vec<(ServiceKey, Objects)>,
}

/// The proxy's state: the cluster's objects (only what the rules use) and
/// what the kernel holds, per service.
pub struct Proxier {
    node: NodeContext,
    rule_context: RuleContext,
    services: HashMap<ServiceKey, Vec<ServicePort>>,
    /// Slices by their Service, then by their own name.
    slices: HashMap<ServiceKey, BTreeMap<String, SliceInfo>>,
    /// Which Service each slice (namespace, name) belongs to, so a slice
    /// whose label changes is taken off its former one.
    slice_owner: HashMap<(String, String), ServiceKey>,
    applied: HashMap<ServiceKey, Objects>,
    dirty: BTreeSet<ServiceKey>,
    full_sync_needed: bool,
    /// Whether `applied` is what the kernel holds as far as the proxy's
    /// own transactions go: false before the first commit and after a
    /// failed one.
    applied_is_known: bool,
    /// Whether the pending full sync may be skipped (a periodic one).
    full_sync_skippable: bool,
}

impl Proxier {
    pub fn new(node: NodeContext) -> Proxier {
        Proxier {
            rule_context: RuleContext {
                cluster_cidr: node.cluster_cidr,
            },
            node,
            services: HashMap::new(),
            slices: HashMap::new(),
            slice_owner: HashMap::new(),
            applied: HashMap::new(),
            dirty: BTreeSet::new(),
            full_sync_needed: true,
            applied_is_known: false,
            full_sync_skippable: false,
        }
    }

    /// Whether a sync has something to do.
    pub fn pending(&self) -> bool {
        self.full_sync_needed || !self.dirty.is_empty()
    }

    /// Asks for a full sync next (periodically, and after a failure: the
    /// kernel may no longer hold what `applied` says).
    pub fn request_full_sync(&mut self) {
        self.full_sync_needed = true;
        self.full_sync_skippable = false;
    }

    /// Asks for the periodic full sync, which repairs what changed the
    /// table behind the proxy's back: one the caller may skip
    /// (`skip_full_sync`) when nothing did.
    pub fn request_periodic_full_sync(&mut self) {
        if !self.full_sync_needed {
            self.full_sync_skippable = true;
        }
        self.full_sync_needed = true;
    }

    /// The caller found the ruleset untouched since the proxy's last commit
    /// (its generation unchanged): a pending full sync would rewrite the
    /// table to what it holds, so only the changed services are synced.
    /// Whether the full sync was dropped (never when the proxy does not
    /// know what the kernel holds: at the start, after a failure).
    pub fn skip_full_sync(&mut self) -> bool {
        if self.full_sync_needed && self.full_sync_skippable && self.applied_is_known {
            self.full_sync_needed = false;
            true
        } else {
            false
        }
    }

    pub fn n_services(&self) -> usize {
        self.services.len()
    }

    pub fn update_service(&mut self, service: &Service) {
        let Some(key) = ServiceKey::of_service(service) else {
            return;
        };
        let ports = model::service_ports(service);
        if self.services.get(&key) != Some(&ports) {
            self.services.insert(key.clone(), ports);
            self.dirty.insert(key);
        }
    }

    pub fn delete_service(&mut self, key: &ServiceKey) {
        if self.services.remove(key).is_some() {
            self.dirty.insert(key.clone());
        }
    }

    pub fn update_slice(&mut self, slice: &EndpointSlice) {
        let (Some(namespace), Some(name)) = (
            slice.metadata.namespace.clone(),
            slice.metadata.name.clone(),
        ) else {
            return;
        };
        let id = (namespace, name);
        let owner = ServiceKey::of_slice(slice);
        if let Some(previous) = self.slice_owner.get(&id)
            && Some(previous) != owner.as_ref()
        {
            let previous = previous.clone();
            self.delete_slice(&id.0, &id.1);
            self.dirty.insert(previous);
        }
        let Some(owner) = owner else { return };
        let info = SliceInfo::of_slice(slice);
        let slices = self.slices.entry(owner.clone()).or_default();
        if slices.get(&id.1) != Some(&info) {
            slices.insert(id.1.clone(), info);
            self.dirty.insert(owner.clone());
        }
        self.slice_owner.insert(id, owner);
    }

    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        let id = (namespace.to_string(), name.to_string());
        let Some(owner) = self.slice_owner.remove(&id) else {
            return;
        };
        if let Some(slices) = self.slices.get_mut(&owner) {
            slices.remove(name);
            if slices.is_empty() {
                self.slices.remove(&owner);
            }
        }
        self.dirty.insert(owner);
    }

    /// The services known now, and the slices' (namespace, name): for a
    /// relist to find what was deleted while the watch was down.
    pub fn service_keys(&self) -> Vec<ServiceKey> {
        self.services.keys().cloned().collect()
    }

    pub fn slice_ids(&self) -> Vec<(String, String)> {
        self.slice_owner.keys().cloned().collect()
    }

    /// What one service needs in the kernel now.
    fn objects_of(&self, key: &ServiceKey) -> Objects {
        let mut objects = Objects::default();
        let Some(ports) = self.services.get(key) else {
            return objects;
        };
        let slices = self.slices.get(key);
        for port in ports {
            let targets = model::targets(
                port,
                slices.into_iter().flat_map(|slices| slices.values()),
                &self.node.node_name,
            );
            objects.extend(nft::service_objects(&targets, &self.rule_context));
        }
        objects
    }

    /// The next sync. `kernel_names` is the table's chains and sets as
    /// listed now, wanted for a full sync only (`needs_listing` says when).
    pub fn plan(&mut self, kernel_names: Option<(BTreeSet<String>, BTreeSet<String>)>) -> Plan {
        if self.full_sync_needed {
            let mut keys: BTreeSet<ServiceKey> = self.services.keys().cloned().collect();
            keys.extend(self.applied.keys().cloned());
            let mut all = Objects::default();
            let mut applied = Vec::with_capacity(keys.len());
            for key in &keys {
                let objects = self.objects_of(key);
                all.extend(objects.clone());
                applied.push((key.clone(), objects));
            }
            let (chains, sets) = kernel_names.unwrap_or_default();
            return Plan {
                transaction: nft::full_sync(&all, &chains, &sets),
                full: true,
                services: keys.into_iter().collect(),
                applied,
            };
        }
        let mut old = Objects::default();
        let mut new = Objects::default();
        let mut applied = Vec::with_capacity(self.dirty.len());
        for key in &self.dirty {
            if let Some(previous) = self.applied.get(key) {
                old.extend(previous.clone());
            }
            let objects = self.objects_of(key);
            new.extend(objects.clone());
            applied.push((key.clone(), objects));
        }
        Plan {
            transaction: nft::incremental(&old, &new),
            full: false,
            services: self.dirty.iter().cloned().collect(),
            applied,
        }
    }

    /// Whether the next plan is a full sync (which wants the kernel's names).
    pub fn needs_listing(&self) -> bool {
        self.full_sync_needed
    }

    /// The plan is in the kernel: it is what `applied` holds from now on.
    /// Services that changed while it was applied stay dirty only if they
    /// changed after `plan` (the caller applies between the two calls with
    /// no updates in between, so all planned services are clean).
    pub fn committed(&mut self, plan: Plan) {
        if plan.full {
            self.applied.clear();
            self.full_sync_needed = false;
            self.applied_is_known = true;
        }
        for (key, objects) in plan.applied {
            self.dirty.remove(&key);
            if objects.is_empty() {
                self.applied.remove(&key);
            } else {
                self.applied.insert(key, objects);
            }
        }
    }

    /// The plan failed: the kernel holds what it held before (a transaction
    /// is atomic), but the next sync rewrites the whole table anyway in
    /// case something else changed it.
    pub fn failed(&mut self) {
        self.full_sync_needed = true;
        self.applied_is_known = false;
    }

    /// Chains the kernel holds for the service now (for tests and the
    /// benchmark's checks).
    pub fn applied_chains(&self, key: &ServiceKey) -> Vec<String> {
        self.applied
            .get(key)
            .map(|objects| objects.chains.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn proxier() -> Proxier {
        Proxier::new(NodeContext {
            node_name: "n1".into(),
            cluster_cidr: "10.42.0.0/16".parse().unwrap(),
        })
    }

    fn service(name: &str, ip: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": name},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}
        }))
        .unwrap()
    }

    fn slice(name: &str, service: &str, addresses: &[&str]) -> EndpointSlice {
        let endpoints: Vec<_> = addresses
            .iter()
            .map(|address| json!({"addresses": [address], "conditions": {"ready": true}}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": name,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints
        }))
        .unwrap()
    }

    #[test]
    fn the_first_sync_is_full_and_later_ones_touch_only_changed_services() {
        let mut proxier = proxier();
        proxier.update_service(&service("web", "10.43.0.5"));
        proxier.update_service(&service("api", "10.43.0.6"));
        proxier.update_slice(&slice("web-1", "web", &["10.42.0.5"]));
        proxier.update_slice(&slice("api-1", "api", &["10.42.0.9"]));
        let plan = proxier.plan(None);
        assert!(plan.full);
        assert!(
            plan.transaction
                .text()
                .contains("goto svc-default/api/tcp/http")
        );
        proxier.committed(plan);
        assert!(!proxier.pending());

        // The same object again changes nothing.
        proxier.update_slice(&slice("web-1", "web", &["10.42.0.5"]));
        assert!(!proxier.pending());

        proxier.update_slice(&slice("web-1", "web", &["10.42.0.5", "10.42.0.6"]));
        let plan = proxier.plan(None);
        assert!(!plan.full);
        assert_eq!(plan.services, vec![ServiceKey::new("default", "web")]);
        let text = plan.transaction.text().to_string();
        assert!(text.contains("add chain ip shoal ep-default/web/tcp/http__10.42.0.6/8080"));
        assert!(!text.contains("api"), "{text}");
        proxier.committed(plan);
        assert_eq!(
            proxier.applied_chains(&ServiceKey::new("default", "web")),
            vec![
                "ep-default/web/tcp/http__10.42.0.5/8080",
                "ep-default/web/tcp/http__10.42.0.6/8080",
                "svc-default/web/tcp/http"
            ]
        );
    }

    #[test]
    fn deleting_a_slice_or_its_service_removes_what_it_put_in_the_kernel() {
        let mut proxier = proxier();
        proxier.update_service(&service("web", "10.43.0.5"));
        proxier.update_slice(&slice("web-1", "web", &["10.42.0.5"]));
        let plan = proxier.plan(None);
        proxier.committed(plan);

        proxier.delete_slice("default", "web-1");
        let plan = proxier.plan(None);
        let text = plan.transaction.text().to_string();
        assert!(text.contains("delete chain ip shoal ep-default/web/tcp/http__10.42.0.5/8080"));
        assert!(text.contains("add element ip shoal no-endpoint-services"));
        proxier.committed(plan);

        proxier.delete_service(&ServiceKey::new("default", "web"));
        let plan = proxier.plan(None);
        assert_eq!(
            plan.transaction.text(),
            "delete element ip shoal no-endpoint-services { 10.43.0.5 . tcp . 80 }\n"
        );
        proxier.committed(plan);
        assert!(!proxier.pending());
        assert!(proxier.applied.is_empty());
    }

    #[test]
    fn a_slice_relabelled_to_another_service_leaves_the_first() {
        let mut proxier = proxier();
        proxier.update_service(&service("web", "10.43.0.5"));
        proxier.update_service(&service("api", "10.43.0.6"));
        proxier.update_slice(&slice("shared", "web", &["10.42.0.5"]));
        let plan = proxier.plan(None);
        proxier.committed(plan);
        proxier.update_slice(&slice("shared", "api", &["10.42.0.5"]));
        let plan = proxier.plan(None);
        assert_eq!(
            plan.services,
            vec![
                ServiceKey::new("default", "api"),
                ServiceKey::new("default", "web")
            ]
        );
        proxier.committed(plan);
        assert_eq!(
            proxier.applied_chains(&ServiceKey::new("default", "web")),
            Vec::<String>::new()
        );
        assert_eq!(
            proxier
                .applied_chains(&ServiceKey::new("default", "api"))
                .len(),
            2
        );
    }

    #[test]
    fn a_periodic_full_sync_is_skipped_only_once_the_kernel_is_known() {
        let mut proxier = proxier();
        proxier.update_service(&service("web", "10.43.0.5"));
        assert!(!proxier.skip_full_sync(), "the first sync is always full");
        let plan = proxier.plan(None);
        assert!(plan.full);
        proxier.committed(plan);
        proxier.request_full_sync();
        assert!(!proxier.skip_full_sync(), "an asked-for full sync is done");
        proxier.request_periodic_full_sync();
        assert!(!proxier.skip_full_sync(), "and stays asked for");
        let plan = proxier.plan(None);
        assert!(plan.full);
        proxier.committed(plan);
        proxier.request_periodic_full_sync();
        proxier.update_slice(&slice("web-1", "web", &["10.42.0.5"]));
        assert!(proxier.skip_full_sync());
        let plan = proxier.plan(None);
        assert!(!plan.full);
        assert_eq!(plan.services, vec![ServiceKey::new("default", "web")]);
    }

    #[test]
    fn a_failed_sync_is_followed_by_a_full_one() {
        let mut proxier = proxier();
        proxier.update_service(&service("web", "10.43.0.5"));
        let plan = proxier.plan(None);
        proxier.committed(plan);
        proxier.update_slice(&slice("web-1", "web", &["10.42.0.5"]));
        let plan = proxier.plan(None);
        assert!(!plan.full);
        drop(plan);
        proxier.failed();
        assert!(proxier.needs_listing());
        proxier.request_periodic_full_sync();
        assert!(
            !proxier.skip_full_sync(),
            "after a failure the kernel is not known"
        );
        let plan = proxier.plan(Some((
            BTreeSet::from(["ep-default/gone/tcp/http__10.42.0.1/80".to_string()]),
            BTreeSet::new(),
        )));
        assert!(plan.full);
        assert!(
            plan.transaction
                .text()
                .contains("delete chain ip shoal ep-default/gone/tcp/http__10.42.0.1/80")
        );
    }
}
