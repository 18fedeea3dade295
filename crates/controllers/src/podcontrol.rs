//! Pod writes for the controllers that own pods (upstream's
//! `RealPodControl` and `slowStartBatch`): creations in slow-start batches
//! run in parallel, deletions in parallel, adoption and release of pods
//! by their owner references, each with its expectation and its event.

use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};

use crate::expectations::Expectations;
use crate::ownership::controller_of;
use crate::pods::is_terminating;
use crate::pods::slow_start_batches;
use crate::runtime::{Change, Events, Informer, WorkQueue, key_of};

/// Creations in flight at once, across one slow-start batch.
pub const MAX_IN_FLIGHT: usize = 500;

pub struct PodControl {
    pub client: kube::Client,
    pub events: Events,
    pub expectations: Arc<Expectations>,
}

/// The pod's `namespace/name`.
pub fn pod_key(pod: &Pod) -> String {
    key_of(pod)
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// Whether a create failed only because the namespace is going away
/// (upstream does not count that as a failure).
fn namespace_terminating(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status)
        if status.code == 403 && status.message.contains("being terminated"))
}

impl PodControl {
    pub fn new(client: kube::Client, events: Events) -> PodControl {
        PodControl {
            client,
            events,
            expectations: Arc::new(Expectations::new()),
        }
    }

    /// Creates `pods` for the controller `key` (its object `owner`), in
    /// slow-start batches, stopping at the first batch with a failure.
    /// Returns how many were created, and the first error.
    pub async fn create(
        &self,
        key: &str,
        owner: &ObjectReference,
        pods: Vec<Pod>,
    ) -> (usize, Option<kube::Error>) {
        let total = pods.len();
        if total == 0 {
            return (0, None);
        }
        self.expectations.expect_creations(key, total);
        let mut pods = pods.into_iter();
        let mut created = 0;
        let mut attempted = 0;
        let mut first_error = None;
        for batch in slow_start_batches(total) {
            let batch_pods: Vec<Pod> = pods.by_ref().take(batch).collect();
            attempted += batch_pods.len();
            let client = self.client.clone();
            let results: Vec<Result<Pod, kube::Error>> = futures::stream::iter(batch_pods)
                .map(move |pod: Pod| {
                    let client = client.clone();
                    async move {
                        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
                        let api: Api<Pod> = Api::namespaced(client, &namespace);
                        api.create(&PostParams::default(), &pod).await
                    }
                })
                .buffer_unordered(MAX_IN_FLIGHT)
                .collect()
                .await;
            for result in results {
                match result {
                    Ok(pod) => {
                        created += 1;
                        self.events.record_later(
                            owner,
                            false,
                            "SuccessfulCreate",
                            format!("Created pod: {}", pod.metadata.name.unwrap_or_default()),
                        );
                    }
                    Err(error) => {
                        // The informer will never see this one.
                        self.expectations.creation_observed(key);
                        if namespace_terminating(&error) {
                            continue;
                        }
                        self.events.record_later(
                            owner,
                            true,
                            "FailedCreate",
                            format!("Error creating: {}", describe(&error)),
                        );
                        if first_error.is_none() {
                            first_error = Some(error);
                        }
                    }
                }
            }
            if first_error.is_some() {
                break;
            }
        }
        // Creations never asked for will never be seen either.
        for _ in attempted..total {
            self.expectations.creation_observed(key);
        }
        (created, first_error)
    }

    /// Deletes `pods` for the controller `key`, in parallel. A pod already
    /// gone is not an error. Returns the first error.
    pub async fn delete(
        &self,
        key: &str,
        owner: &ObjectReference,
        pods: &[Arc<Pod>],
    ) -> Option<kube::Error> {
        if pods.is_empty() {
            return None;
        }
        self.expectations
            .expect_deletions(key, pods.iter().map(|pod| pod_key(pod)));
        let client = self.client.clone();
        let results: Vec<(String, Result<(), kube::Error>)> = futures::stream::iter(pods.to_vec())
            .map(move |pod: Arc<Pod>| {
                let client = client.clone();
                async move {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
                    let api: Api<Pod> = Api::namespaced(client, &namespace);
                    let params = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid: pod.metadata.uid.clone(),
                            resource_version: None,
                        }),
                        ..DeleteParams::default()
                    };
                    let result = api.delete(&name, &params).await.map(|_| ());
                    (name, result)
                }
            })
            .buffer_unordered(MAX_IN_FLIGHT)
            .collect()
            .await;
        let mut first_error = None;
        for (name, result) in results {
            let namespace = owner.namespace.clone().unwrap_or_default();
            match result {
                Ok(()) => self.events.record_later(
                    owner,
                    false,
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                ),
                Err(error) => {
                    self.expectations
                        .deletion_observed(key, &format!("{namespace}/{name}"));
                    if is_status(&error, 404) {
                        continue;
                    }
                    self.events.record_later(
                        owner,
                        true,
                        "FailedDelete",
                        format!("Error deleting: {}", describe(&error)),
                    );
                    if first_error.is_none() {
                        first_error = Some(error);
                    }
                }
            }
        }
        first_error
    }

    /// Makes `owner` the controller of `pod`, if the pod is still the one
    /// read (same uid and resource version). Returns whether it is now.
    pub async fn adopt(&self, pod: &Pod, owner: &OwnerReference) -> Result<bool, kube::Error> {
        let references = crate::replicaset::core::adopted_references(pod, owner);
        self.set_references(pod, references).await
    }

    /// Removes the owner `owner_uid` from `pod`'s references. Returns
    /// whether it did (a pod gone or changed meanwhile is left alone).
    pub async fn release(&self, pod: &Pod, owner_uid: &str) -> Result<bool, kube::Error> {
        let references = crate::replicaset::core::released_references(pod, owner_uid);
        self.set_references(pod, references).await
    }

    /// Carries a claim out for the owner `reference` names: adopts its
    /// orphans and releases what stopped matching; returns the pods the
    /// owner controls now.
    pub async fn carry_out(
        &self,
        claim: crate::replicaset::core::Claim,
        reference: &OwnerReference,
    ) -> Result<Vec<Arc<Pod>>, kube::Error> {
        let mut owned = claim.owned;
        for orphan in claim.adopt {
            if self.adopt(&orphan, reference).await? {
                owned.push(orphan);
            }
        }
        for pod in &claim.release {
            self.release(pod, &reference.uid).await?;
        }
        Ok(owned)
    }

    async fn set_references(
        &self,
        pod: &Pod,
        references: Vec<OwnerReference>,
    ) -> Result<bool, kube::Error> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        // The uid and resource version make the patch conditional: a pod
        // recreated or changed since it was read is not claimed blindly.
        let patch = serde_json::json!({
            "metadata": {
                "uid": pod.metadata.uid,
                "resourceVersion": pod.metadata.resource_version,
                "ownerReferences": references,
            }
        });
        let name = pod.metadata.name.clone().unwrap_or_default();
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(true),
            Err(error)
                if is_status(&error, 404) || is_status(&error, 409) || is_status(&error, 422) =>
            {
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }
}

/// The key (`namespace/name`) of the object of `kind` that controls `pod`.
pub fn owner_key(pod: &Pod, kind: &str) -> Option<String> {
    let reference = controller_of(&pod.metadata)?;
    (reference.kind == kind).then(|| {
        format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            reference.name
        )
    })
}

/// What a pod change means to controllers of `kind` (upstream's
/// `addPod`, `updatePod`, `deletePod`): the expectations it meets, the
/// controllers to queue (`queue`), and, for a pod that is or became an
/// orphan, a call to `orphan` so the controllers that select it can queue
/// themselves.
/// Queues an owner's key on each change to it; a deleted owner's
/// expectations are dropped with it.
pub fn queue_owner_changes<K>(
    owners: &Informer<K>,
    queue: &Arc<WorkQueue<String>>,
    expectations: &Arc<Expectations>,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let queue = Arc::clone(queue);
    let expectations = Arc::clone(expectations);
    owners.on_change(move |change| {
        let key = key_of(change.object());
        if let Change::Deleted(_) = change {
            expectations.forget(&key);
        }
        queue.add(key);
    });
}

pub fn observe_pod_change(
    kind: &str,
    expectations: &Expectations,
    change: &Change<'_, Pod>,
    mut queue: impl FnMut(String),
    mut orphan: impl FnMut(&Pod),
) {
    match change {
        Change::Added(pod) => match owner_key(pod, kind) {
            Some(key) => {
                if is_terminating(pod) {
                    expectations.deletion_observed(&key, &pod_key(pod));
                } else {
                    expectations.creation_observed(&key);
                }
                queue(key);
            }
            None => orphan(pod),
        },
        Change::Updated { old, new } => {
            let (old_key, new_key) = (owner_key(old, kind), owner_key(new, kind));
            if let Some(key) = &new_key
                && is_terminating(new)
                && !is_terminating(old)
            {
                expectations.deletion_observed(key, &pod_key(new));
            }
            if old_key != new_key
                && let Some(key) = old_key
            {
                queue(key);
            }
            match new_key {
                Some(key) => queue(key),
                None => {
                    if controller_of(&new.metadata).is_none()
                        && (old.metadata.labels != new.metadata.labels
                            || controller_of(&old.metadata).is_some())
                    {
                        orphan(new);
                    }
                }
            }
        }
        Change::Deleted(pod) => {
            if let Some(key) = owner_key(pod, kind) {
                expectations.deletion_observed(&key, &pod_key(pod));
                queue(key);
            }
        }
    }
}

/// An API error as a person reads it: the server's message.
pub fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}
