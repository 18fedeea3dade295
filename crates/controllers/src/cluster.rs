//! The cluster as the controllers see it: one informer per kind they read,
//! shared by all of them, with the indexes they look things up by.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::api::Api;
use kube::runtime::watcher;

use crate::ownership::controller_uid;
use crate::runtime::{Informer, Next, Stop, WorkQueue, run_workers};

/// Index: objects by the uid of their controller (`ownerReferences`).
pub const BY_CONTROLLER: &str = "controller";
/// Index: namespaced objects by namespace.
pub const BY_NAMESPACE: &str = "namespace";
/// Index: pods by `spec.nodeName` (unscheduled pods are under "").
pub const BY_NODE: &str = "node";

/// Index: EndpointSlices by `namespace/service` (their
/// `kubernetes.io/service-name` label).
pub const BY_SERVICE: &str = "service";
/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Lease namespace the node agents renew their heartbeats in.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

pub struct Cluster {
    pub client: kube::Client,
    /// This server's name (events' reporting instance, the Lease holder).
    pub identity: String,
    pub pods: Arc<Informer<Pod>>,
    pub nodes: Arc<Informer<Node>>,
    pub node_leases: Arc<Informer<Lease>>,
    pub replica_sets: Arc<Informer<ReplicaSet>>,
    pub deployments: Arc<Informer<Deployment>>,
    pub daemon_sets: Arc<Informer<DaemonSet>>,
    /// DaemonSets' template history.
    pub controller_revisions: Arc<Informer<ControllerRevision>>,
    pub jobs: Arc<Informer<Job>>,
    pub cron_jobs: Arc<Informer<CronJob>>,
    pub disruption_budgets: Arc<Informer<PodDisruptionBudget>>,
    pub services: Arc<Informer<Service>>,
    pub endpoints: Arc<Informer<Endpoints>>,
    pub endpoint_slices: Arc<Informer<EndpointSlice>>,
}

fn namespaced<K>(informer: &Informer<K>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    informer.add_index(BY_NAMESPACE, |object| {
        vec![object.meta().namespace.clone().unwrap_or_default()]
    });
    informer.add_index(BY_CONTROLLER, |object| {
        controller_uid(object.meta())
            .map(|uid| vec![uid.to_string()])
            .unwrap_or_default()
    });
}

/// Runs `informer` over `api` on `tasks` until `stop`.
fn watch<K>(
    tasks: &mut tokio::task::JoinSet<()>,
    informer: &Arc<Informer<K>>,
    api: Api<K>,
    stop: &Stop,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    tasks.spawn(Arc::clone(informer).run(api, watcher::Config::default(), stop.clone()));
}

impl Cluster {
    /// The informers, empty and not yet running (`start` runs them).
    pub fn new(client: kube::Client, identity: &str) -> Arc<Cluster> {
        let cluster = Cluster {
            client,
            identity: identity.to_string(),
            pods: Informer::new(),
            nodes: Informer::new(),
            node_leases: Informer::new(),
            replica_sets: Informer::new(),
            deployments: Informer::new(),
            daemon_sets: Informer::new(),
            controller_revisions: Informer::new(),
            jobs: Informer::new(),
            cron_jobs: Informer::new(),
            disruption_budgets: Informer::new(),
            services: Informer::new(),
            endpoints: Informer::new(),
            endpoint_slices: Informer::new(),
        };
        namespaced(&cluster.pods);
        cluster.pods.add_index(BY_NODE, |pod| {
            vec![
                pod.spec
                    .as_ref()
                    .and_then(|spec| spec.node_name.clone())
                    .unwrap_or_default(),
            ]
        });
        namespaced(&cluster.replica_sets);
        namespaced(&cluster.deployments);
        namespaced(&cluster.daemon_sets);
        namespaced(&cluster.controller_revisions);
        namespaced(&cluster.jobs);
        namespaced(&cluster.cron_jobs);
        namespaced(&cluster.disruption_budgets);
        namespaced(&cluster.services);
        namespaced(&cluster.endpoints);
        namespaced(&cluster.endpoint_slices);
        cluster.endpoint_slices.add_index(BY_SERVICE, |slice| {
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
                .map(|service| {
                    vec![format!(
                        "{}/{service}",
                        slice.metadata.namespace.as_deref().unwrap_or_default()
                    )]
                })
                .unwrap_or_default()
        });
        Arc::new(cluster)
    }

    /// Runs every informer until `stop`.
    pub fn start(&self, tasks: &mut tokio::task::JoinSet<()>, stop: &Stop) {
        let client = &self.client;
        watch(tasks, &self.pods, Api::all(client.clone()), stop);
        watch(tasks, &self.nodes, Api::all(client.clone()), stop);
        watch(
            tasks,
            &self.node_leases,
            Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
            stop,
        );
        watch(tasks, &self.replica_sets, Api::all(client.clone()), stop);
        watch(tasks, &self.deployments, Api::all(client.clone()), stop);
        watch(tasks, &self.daemon_sets, Api::all(client.clone()), stop);
        watch(
            tasks,
            &self.controller_revisions,
            Api::all(client.clone()),
            stop,
        );
        watch(tasks, &self.jobs, Api::all(client.clone()), stop);
        watch(tasks, &self.cron_jobs, Api::all(client.clone()), stop);
        watch(
            tasks,
            &self.disruption_budgets,
            Api::all(client.clone()),
            stop,
        );
        watch(tasks, &self.services, Api::all(client.clone()), stop);
        watch(tasks, &self.endpoints, Api::all(client.clone()), stop);
        watch(tasks, &self.endpoint_slices, Api::all(client.clone()), stop);
    }

    /// Waits until every informer holds its first complete listing.
    pub async fn synced(&self) {
        self.pods.synced().await;
        self.nodes.synced().await;
        self.node_leases.synced().await;
        self.replica_sets.synced().await;
        self.deployments.synced().await;
        self.daemon_sets.synced().await;
        self.controller_revisions.synced().await;
        self.jobs.synced().await;
        self.cron_jobs.synced().await;
        self.disruption_budgets.synced().await;
        self.services.synced().await;
        self.endpoints.synced().await;
        self.endpoint_slices.synced().await;
    }

    /// A controller's main loop: waits for every informer's first listing
    /// (or `stop`), queues every key of its `primary` kind once (its first
    /// pass over what exists), then runs `workers` workers reconciling
    /// what `queue` hands out until `stop`.
    pub async fn run_controller<K, E, F, Fut>(
        &self,
        name: &'static str,
        primary: &Informer<K>,
        queue: Arc<WorkQueue<String>>,
        workers: usize,
        reconcile: F,
        stop: Stop,
    ) where
        K: Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        E: std::fmt::Display,
        F: Fn(String) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = Result<Next, E>> + Send,
    {
        tokio::select! {
            _ = self.synced() => {}
            _ = stop.clone().wait() => return,
        }
        for key in primary.keys() {
            queue.add(key);
        }
        run_workers(name, queue, workers, reconcile, stop).await;
    }
}
