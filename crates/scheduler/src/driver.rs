//! The scheduler while it leads: watches on nodes and pods feed the core's
//! model and the queue of pods to place; the scheduling loop takes pods off
//! the queue, asks the core for a node, assumes the pod there at once and
//! binds it through `pods/{name}/binding` with a bounded number of bindings
//! in flight. A pod that fits nowhere gets a FailedScheduling event and a
//! PodScheduled=False condition and waits until the cluster changes (with a
//! backoff), or at most `UNSCHEDULABLE_RESCAN`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{Notify, Semaphore};

use crate::SchedulerConfig;
use crate::core::{self, Cluster};
use crate::events::{self, PodEvent, Recorder};

/// The first retry of an unschedulable pod waits this long, doubling per
/// attempt up to `MAX_BACKOFF` (kube-scheduler's podInitialBackoff and
/// podMaxBackoff).
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// An unschedulable pod is retried after this long even if nothing changed
/// (upstream's podMaxInUnschedulablePodsDuration).
const UNSCHEDULABLE_RESCAN: Duration = Duration::from_secs(300);
/// How often the unschedulable pods are looked over.
const UNSCHEDULABLE_TICK: Duration = Duration::from_millis(200);

/// A pod waiting after a failed attempt.
struct Waiting {
    pod: Pod,
    attempts: u32,
    last_attempt: Instant,
    /// The cluster's change count at the last attempt.
    generation: u64,
}

/// What the watches, the loop and the binders share.
struct Shared {
    cluster: Cluster,
    /// Pods ready for an attempt, in arrival order.
    active: VecDeque<Pod>,
    /// Keys in `active` or being bound.
    pending: HashSet<String>,
    unschedulable: HashMap<String, Waiting>,
    /// Counts node and pod changes that may make room for a waiting pod.
    generation: u64,
}

/// Counters, for logs and the benchmark.
#[derive(Default)]
pub struct Stats {
    pub bound: AtomicU64,
    pub conflicts: AtomicU64,
    pub bind_errors: AtomicU64,
    pub unschedulable_attempts: AtomicU64,
}

pub struct Driver {
    client: kube::Client,
    config: SchedulerConfig,
    shared: Mutex<Shared>,
    wake: Notify,
    /// One permit per binding in flight.
    bindings: Arc<Semaphore>,
    recorder: Recorder,
    pub stats: Stats,
}

impl Driver {
    pub fn new(client: kube::Client, config: SchedulerConfig) -> Arc<Driver> {
        let mut cluster = Cluster::new();
        cluster.set_percentage_of_nodes_to_score(config.percentage_of_nodes_to_score);
        let recorder = Recorder::start(
            client.clone(),
            config.identity.clone(),
            config.event_backlog,
            config.scheduled_events_per_second,
        );
        Arc::new(Driver {
            bindings: Arc::new(Semaphore::new(config.max_in_flight_bindings.max(1))),
            client,
            shared: Mutex::new(Shared {
                cluster,
                active: VecDeque::new(),
                pending: HashSet::new(),
                unschedulable: HashMap::new(),
                generation: 0,
            }),
            wake: Notify::new(),
            recorder,
            stats: Stats::default(),
            config,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .expect("the scheduler's state lock is never poisoned")
    }

    /// Runs the watches and the scheduling loop until `stop` resolves.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let nodes = tokio::spawn(Arc::clone(&self).watch_nodes());
        let pods = tokio::spawn(Arc::clone(&self).watch_pods());
        let retries = tokio::spawn(Arc::clone(&self).retry_unschedulable());
        let scheduling = tokio::spawn(Arc::clone(&self).schedule_loop());
        stop.await;
        for task in [nodes, pods, retries, scheduling] {
            task.abort();
        }
        // Let bindings in flight finish: their outcome is the API's anyway.
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.bindings
                .acquire_many(self.config.max_in_flight_bindings.max(1) as u32),
        )
        .await;
    }

    async fn watch_nodes(self: Arc<Self>) {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut listed: Option<HashSet<String>> = None;
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(%error, "node watch failed; resuming");
                    continue;
                }
            };
            let mut shared = self.lock();
            match event {
                Event::Init => listed = Some(HashSet::new()),
                Event::InitApply(node) | Event::Apply(node) => {
                    if let (Some(listed), Some(name)) =
                        (listed.as_mut(), node.metadata.name.as_ref())
                    {
                        listed.insert(name.clone());
                    }
                    shared.cluster.apply_node(&node);
                    shared.generation += 1;
                }
                Event::Delete(node) => {
                    shared
                        .cluster
                        .delete_node(node.metadata.name.as_deref().unwrap_or_default());
                    shared.generation += 1;
                }
                Event::InitDone => {
                    if let Some(listed) = listed.take() {
                        for name in shared.cluster.node_names() {
                            if !listed.contains(&name) {
                                shared.cluster.delete_node(&name);
                            }
                        }
                    }
                    shared.generation += 1;
                }
            }
        }
    }

    async fn watch_pods(self: Arc<Self>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        // Finished pods are dropped here rather than by a field selector,
        // which would make the API server decode every pod it sends.
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut listed: Option<HashSet<String>> = None;
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(%error, "pod watch failed; resuming");
                    continue;
                }
            };
            let mut woke = false;
            {
                let mut shared = self.lock();
                match event {
                    Event::Init => listed = Some(HashSet::new()),
                    Event::InitApply(pod) | Event::Apply(pod) => {
                        if let Some(listed) = listed.as_mut() {
                            listed.insert(core::pod_key(&pod));
                        }
                        woke = self.pod_changed(&mut shared, pod);
                    }
                    Event::Delete(pod) => {
                        let key = core::pod_key(&pod);
                        shared.cluster.delete_pod(&pod);
                        shared.unschedulable.remove(&key);
                        shared.active.retain(|queued| core::pod_key(queued) != key);
                        shared.generation += 1;
                    }
                    Event::InitDone => {
                        if let Some(listed) = listed.take() {
                            for key in shared.cluster.confirmed_pod_keys() {
                                if !listed.contains(&key) {
                                    shared.cluster.remove_pod_key(&key);
                                }
                            }
                            shared.unschedulable.retain(|key, _| listed.contains(key));
                        }
                        shared.generation += 1;
                    }
                }
            }
            if woke {
                self.wake.notify_one();
            }
        }
    }

    /// A pod was added or changed: into the model if bound, into the queue
    /// if it is ours to place. Returns whether the queue grew.
    fn pod_changed(&self, shared: &mut Shared, pod: Pod) -> bool {
        let key = core::pod_key(&pod);
        let spec = pod.spec.as_ref();
        let bound = spec
            .and_then(|spec| spec.node_name.as_deref())
            .is_some_and(|node| !node.is_empty());
        if bound || core::is_terminal(&pod) {
            let was_placed = shared.cluster.is_placed(&key);
            shared.cluster.apply_pod(&pod);
            shared.unschedulable.remove(&key);
            if !was_placed && !shared.pending.contains(&key) {
                shared.generation += 1;
            }
            return false;
        }
        let ours = spec
            .and_then(|spec| spec.scheduler_name.as_deref())
            .unwrap_or("default-scheduler")
            == self.config.scheduler_name;
        if !ours || pod.metadata.deletion_timestamp.is_some() {
            return false;
        }
        if let Some(waiting) = shared.unschedulable.get_mut(&key) {
            // Our own status patch comes back here: keep waiting.
            waiting.pod = pod;
            return false;
        }
        if shared.pending.contains(&key) || shared.cluster.is_placed(&key) {
            return false;
        }
        shared.pending.insert(key);
        shared.active.push_back(pod);
        true
    }

    async fn schedule_loop(self: Arc<Self>) {
        loop {
            let Ok(permit) = Arc::clone(&self.bindings).acquire_owned().await else {
                return;
            };
            let next = {
                let mut shared = self.lock();
                loop {
                    match shared.active.pop_front() {
                        // Bound by someone else while it waited in the queue.
                        Some(pod) if shared.cluster.is_placed(&core::pod_key(&pod)) => {
                            shared.pending.remove(&core::pod_key(&pod));
                        }
                        other => break other,
                    }
                }
            };
            let Some(pod) = next else {
                drop(permit);
                self.wake.notified().await;
                continue;
            };
            let key = core::pod_key(&pod);
            let attempt_started = Instant::now();
            let decision = {
                let mut shared = self.lock();
                let metrics = &self.config.metrics;
                metrics.pending_active.set(shared.active.len() as i64);
                metrics
                    .pending_unschedulable
                    .set(shared.unschedulable.len() as i64);
                match shared.cluster.schedule(&pod) {
                    Ok(placement) => {
                        shared.cluster.assume(&pod, &placement.node);
                        shared.unschedulable.remove(&key);
                        Ok(placement)
                    }
                    Err(unschedulable) => {
                        shared.pending.remove(&key);
                        let generation = shared.generation;
                        let attempts = shared.unschedulable.get(&key).map_or(0, |w| w.attempts) + 1;
                        shared.unschedulable.insert(
                            key.clone(),
                            Waiting {
                                pod: pod.clone(),
                                attempts,
                                last_attempt: Instant::now(),
                                generation,
                            },
                        );
                        Err(unschedulable)
                    }
                }
            };
            self.config.metrics.attempt(
                if decision.is_ok() {
                    crate::metrics::AttemptResult::Scheduled
                } else {
                    crate::metrics::AttemptResult::Unschedulable
                },
                attempt_started.elapsed(),
            );
            match decision {
                Ok(placement) => {
                    let driver = Arc::clone(&self);
                    tokio::spawn(async move {
                        driver.bind(pod, placement.node).await;
                        drop(permit);
                    });
                }
                Err(unschedulable) => {
                    drop(permit);
                    self.stats
                        .unschedulable_attempts
                        .fetch_add(1, Ordering::Relaxed);
                    let message = unschedulable.to_string();
                    tracing::debug!(pod = %key, %message, "unschedulable");
                    let recorder = self.recorder.clone();
                    let client = self.client.clone();
                    tokio::spawn(async move {
                        recorder
                            .record(PodEvent::about(
                                &pod,
                                true,
                                "FailedScheduling",
                                message.clone(),
                            ))
                            .await;
                        if let Err(error) = events::mark_unschedulable(client, &pod, &message).await
                        {
                            tracing::debug!(%error, "cannot set PodScheduled=False");
                        }
                    });
                }
            }
        }
    }

    /// Writes the binding; the API refuses (409) a pod already bound, so a
    /// pod is never bound twice, whoever else is binding.
    async fn bind(&self, pod: Pod, node: String) {
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let key = core::pod_key(&pod);
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                uid: pod.metadata.uid.clone(),
                ..ObjectMeta::default()
            },
            target: ObjectReference {
                kind: Some("Node".to_string()),
                api_version: Some("v1".to_string()),
                name: Some(node.clone()),
                ..ObjectReference::default()
            },
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let outcome: Result<serde_json::Value, kube::Error> = api
            .create_subresource("binding", &name, &PostParams::default(), &binding)
            .await;
        let mut shared = self.lock();
        shared.pending.remove(&key);
        match outcome {
            Ok(_) => {
                self.stats.bound.fetch_add(1, Ordering::Relaxed);
                drop(shared);
                if self.config.scheduled_events {
                    self.recorder.offer(PodEvent::about(
                        &pod,
                        false,
                        "Scheduled",
                        format!("Successfully assigned {namespace}/{name} to {node}"),
                    ));
                }
            }
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
                // Bound elsewhere, or gone: the pod watch tells the rest.
                self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                shared.cluster.forget(&pod);
            }
            Err(error) => {
                tracing::warn!(pod = %key, %node, %error, "binding failed; will retry");
                self.stats.bind_errors.fetch_add(1, Ordering::Relaxed);
                shared.cluster.forget(&pod);
                let generation = shared.generation;
                shared.unschedulable.insert(
                    key,
                    Waiting {
                        pod,
                        attempts: 1,
                        last_attempt: Instant::now(),
                        generation: generation.saturating_sub(1),
                    },
                );
            }
        }
    }

    /// Moves waiting pods back to the queue: those whose backoff has passed
    /// and the cluster has changed since their attempt, and any that waited
    /// `UNSCHEDULABLE_RESCAN`.
    async fn retry_unschedulable(self: Arc<Self>) {
        let mut tick = tokio::time::interval(UNSCHEDULABLE_TICK);
        loop {
            tick.tick().await;
            let mut moved = false;
            {
                let mut shared = self.lock();
                let generation = shared.generation;
                let now = Instant::now();
                let due: Vec<String> = shared
                    .unschedulable
                    .iter()
                    .filter(|(_, waiting)| {
                        let since = now.duration_since(waiting.last_attempt);
                        let backoff = INITIAL_BACKOFF
                            .saturating_mul(1 << waiting.attempts.saturating_sub(1).min(8))
                            .min(MAX_BACKOFF);
                        (waiting.generation < generation && since >= backoff)
                            || since >= UNSCHEDULABLE_RESCAN
                    })
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in due {
                    if shared.pending.contains(&key) {
                        continue;
                    }
                    // Its attempts stay counted for the next backoff.
                    let waiting = shared.unschedulable.get(&key).expect("listed just now");
                    let pod = waiting.pod.clone();
                    shared.pending.insert(key);
                    shared.active.push_back(pod);
                    moved = true;
                }
            }
            if moved {
                self.wake.notify_one();
            }
        }
    }
}
