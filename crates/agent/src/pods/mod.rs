//! The pods bound to this machine: one watch on them (`spec.nodeName`
//! this node), a worker task per pod, and the sweep that removes from the
//! machine what no pod in the API accounts for.
//!
//! A restarted agent finds the sandboxes and containers the last run left
//! (`PodRuntime::list`) and hands each to its pod's worker, which adopts the
//! running containers rather than starting them again.

pub mod events;
pub mod names;
pub mod probe;
pub mod spec;
pub mod status;
pub mod volumes;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use tokio::sync::mpsc;

use worker::{Context, Update, Worker};

/// Before the agent runs any pod: stops and removes every sandbox on the
/// machine whose pod the API no longer binds here (deleted for good while
/// the agent was away) or is deleting (evicted: most likely replaced
/// elsewhere already; its grace period, begun while the agent was away,
/// is not waited for). A machine that comes back thus never runs a pod
/// that was moved, not even for the moment its workers take to learn of
/// it; the workers then finish the deletions in the API. Returns how many
/// sandboxes it removed.
pub async fn remove_moved(
    client: &kube::Client,
    runtime: &runtime::pod::PodRuntime,
    config: &crate::AgentConfig,
) -> Result<usize, crate::AgentError> {
    let on_machine = {
        let runtime = runtime.clone();
        tokio::task::spawn_blocking(move || runtime.list())
            .await
            .map_err(|error| crate::AgentError::Join(error.to_string()))?
            .map_err(|error| crate::AgentError::Network(error.to_string()))?
    };
    if on_machine.is_empty() {
        return Ok(0);
    }
    let pods: Api<Pod> = Api::all(client.clone());
    let listed = pods
        .list(
            &kube::api::ListParams::default()
                .fields(&format!("spec.nodeName={}", config.node_name)),
        )
        .await?;
    let kept: HashSet<String> = listed
        .items
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| pod.metadata.uid.clone())
        .collect();
    let mut removed = 0;
    for record in on_machine {
        if kept.contains(&record.uid) {
            continue;
        }
        tracing::info!(pod = %record.name, namespace = %record.namespace, "stopping a pod no longer bound to this node before running any");
        let runtime = runtime.clone();
        let data_dir = config.data_dir.clone();
        let uid = record.uid.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let outcome = runtime.remove_sandbox(&uid);
            let _ = std::fs::remove_dir_all(volumes::pod_dir(&data_dir, &uid));
            outcome
        })
        .await;
        match outcome {
            Ok(Ok(())) => removed += 1,
            Ok(Err(error)) => {
                tracing::warn!(%error, pod = %record.name, "cannot remove a pod no longer bound here")
            }
            Err(error) => {
                tracing::warn!(%error, pod = %record.name, "cannot remove a pod no longer bound here")
            }
        }
    }
    Ok(removed)
}

/// Watches the node's pods and runs a worker for each until `shutdown`.
/// Each bump of `reconnected` (the API reachable again after a silence)
/// starts the watch afresh with a new listing: the old watch may have
/// died with its connection without a word, and the pods deleted in the
/// meantime must reach their workers.
pub async fn run(
    ctx: Arc<Context>,
    mut reconnected: tokio::sync::watch::Receiver<u64>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let config =
        watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.config.node_name));
    let mut stream = watcher(pods.clone(), config.clone()).boxed();
    let mut workers: HashMap<String, mpsc::Sender<Update>> = HashMap::new();
    let mut leftovers: HashMap<String, runtime::pod::SandboxRecord> = {
        let runtime = ctx.runtime.clone();
        match tokio::task::spawn_blocking(move || runtime.list()).await {
            Ok(Ok(records)) => records
                .into_iter()
                .map(|record| (record.uid.clone(), record))
                .collect(),
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot list the pods left on this machine");
                HashMap::new()
            }
            Err(_) => HashMap::new(),
        }
    };
    let mut listing: Option<HashSet<String>> = None;
    loop {
        let wake = tokio::select! {
            event = stream.next() => Wake::Event(event),
            changed = reconnected.changed() => Wake::Reconnected(changed.is_ok()),
            _ = shutdown.wait_for(|stopped| *stopped) => Wake::Stop,
        };
        let event = match wake {
            Wake::Event(event) => event,
            // The heartbeat is gone: the agent is stopping.
            Wake::Stop | Wake::Reconnected(false) => return,
            Wake::Reconnected(true) => {
                tracing::info!("watching this node's pods afresh");
                stream = watcher(pods.clone(), config.clone()).boxed();
                continue;
            }
        };
        let Some(event) = event else { return };
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                // The watcher retries by itself; say why it had to.
                tracing::debug!(%error, "the pod watch was interrupted");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        match event {
            watcher::Event::Init => listing = Some(HashSet::new()),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if let Some(listing) = listing.as_mut() {
                    listing.insert(uid.clone());
                }
                deliver(&ctx, &mut workers, &mut leftovers, uid, pod);
            }
            watcher::Event::Delete(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if let Some(sender) = workers.remove(&uid) {
                    let _ = sender.send(Update::Gone).await;
                }
            }
            watcher::Event::InitDone => {
                let present = listing.take().unwrap_or_default();
                // Pods deleted while the agent was away or the watch was
                // broken: their workers stop them.
                let vanished: Vec<String> = workers
                    .keys()
                    .filter(|uid| !present.contains(*uid))
                    .cloned()
                    .collect();
                for uid in vanished {
                    if let Some(sender) = workers.remove(&uid) {
                        let _ = sender.send(Update::Gone).await;
                    }
                }
                // What is on the machine for pods the API does not have.
                for (uid, record) in leftovers.drain() {
                    tracing::info!(pod = %record.name, namespace = %record.namespace, "removing a pod the API no longer has");
                    let runtime = ctx.runtime.clone();
                    let data_dir = ctx.config.data_dir.clone();
                    tokio::task::spawn_blocking(move || {
                        if let Err(error) = runtime.remove_sandbox(&uid) {
                            tracing::warn!(%error, "cannot remove a leftover pod");
                        }
                        let _ = std::fs::remove_dir_all(volumes::pod_dir(&data_dir, &uid));
                    });
                }
            }
        }
        workers.retain(|_, sender| !sender.is_closed());
    }
}

enum Wake<E> {
    Event(Option<E>),
    Reconnected(bool),
    Stop,
}

fn deliver(
    ctx: &Arc<Context>,
    workers: &mut HashMap<String, mpsc::Sender<Update>>,
    leftovers: &mut HashMap<String, runtime::pod::SandboxRecord>,
    uid: String,
    pod: Pod,
) {
    if let Some(sender) = workers.get(&uid)
        && !sender.is_closed()
    {
        // A full queue already holds an update the worker will read; the
        // newest state comes with the next one.
        let _ = sender.try_send(Update::Pod(Box::new(pod)));
        return;
    }
    let terminal = pod
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
    let existing = leftovers.remove(&uid);
    if terminal && existing.is_none() && pod.metadata.deletion_timestamp.is_none() {
        // Finished before this agent started and nothing left to adopt.
        return;
    }
    let (sender, receiver) = mpsc::channel(16);
    let worker = Worker::new(Arc::clone(ctx), pod, existing);
    tokio::spawn(worker.run(receiver));
    workers.insert(uid, sender);
}
