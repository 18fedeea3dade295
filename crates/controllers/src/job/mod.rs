//! The Job controller (batch/v1): runs each Job's pods until enough
//! succeed or too many fail, records it in the Job's status and
//! conditions, and deletes finished Jobs whose time to live ran out. The
//! decisions are `core`'s; this is the driver.

pub mod core;

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use scheduler::core::selectors::selector_matches;

use crate::cluster::{BY_NAMESPACE, Cluster};
use crate::ownership::controller_reference;
use crate::podcontrol::{PodControl, describe, observe_pod_change, queue_owner_changes};
use crate::pods;
use crate::replicaset::core::claim;
use crate::runtime::{Events, Next, Stop, WorkQueue, key_of};

/// The controller's name in events and logs (upstream's).
pub const NAME: &str = "job-controller";

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cannot adopt or release pods of job {key}: {source}")]
    Claim { key: String, source: kube::Error },
    #[error("cannot {action} pods of job {key}: {message}")]
    Pods {
        key: String,
        action: &'static str,
        message: String,
    },
    #[error("cannot update the status of job {key}: {source}")]
    Status { key: String, source: kube::Error },
    #[error("cannot delete the finished job {key}: {source}")]
    Delete { key: String, source: kube::Error },
}

struct Controller {
    cluster: Arc<Cluster>,
    pods: PodControl,
}

impl Controller {
    fn queue_selecting(&self, queue: &WorkQueue<String>, pod: &Pod) {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let labels = pods::labels_of(pod);
        for job in self.cluster.jobs.by_index(BY_NAMESPACE, namespace) {
            if let Some(selector) = job.spec.as_ref().and_then(|spec| spec.selector.as_ref())
                && selector_matches(selector, &labels)
            {
                queue.add(key_of(job.as_ref()));
            }
        }
    }

    async fn reconcile(&self, key: String) -> Result<Next, JobError> {
        let Some(job) = self.cluster.jobs.get(&key) else {
            self.pods.expectations.forget(&key);
            return Ok(Next::Done);
        };
        let namespace = job.metadata.namespace.clone().unwrap_or_default();
        let name = job.metadata.name.clone().unwrap_or_default();
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let deleting = job.metadata.deletion_timestamp.is_some();
        let may_act = self.pods.expectations.satisfied(&key) && !deleting;
        let all_pods = self.cluster.pods.by_index(BY_NAMESPACE, &namespace);
        // A Job's finished pods are its own too: claim them all.
        let mut owned: Vec<Arc<Pod>> = all_pods
            .iter()
            .filter(|pod| {
                crate::replicaset::core::controlled_by(pod, &uid) && !pods::is_active(pod)
            })
            .cloned()
            .collect();
        let selector = job.spec.as_ref().and_then(|spec| spec.selector.as_ref());
        let claimed = claim(&uid, deleting, selector, &all_pods);
        let reference = controller_reference(job.as_ref());
        owned.extend(
            self.pods
                .carry_out(claimed, &reference)
                .await
                .map_err(|source| JobError::Claim {
                    key: key.clone(),
                    source,
                })?,
        );

        let plan = core::plan(&job, &owned, may_act, Timestamp::now());
        if plan.unsupported {
            self.pods.events.record_later(
                &job.object_ref(&()),
                true,
                "UnsupportedCompletionMode",
                "completionMode Indexed is not supported by shoal's job controller".to_string(),
            );
            return Ok(Next::Done);
        }
        let api: Api<Job> = Api::namespaced(self.cluster.client.clone(), &namespace);
        if plan.delete_job {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match api.delete(&name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => return Err(JobError::Delete { key, source }),
            }
            return Ok(Next::Done);
        }
        let object = job.object_ref(&());
        let mut failure = None;
        if plan.create > 0 {
            let template = job
                .spec
                .as_ref()
                .map(|spec| spec.template.clone())
                .unwrap_or_default();
            let pod =
                pods::pod_from_template(&template, &namespace, &format!("{name}-"), reference);
            let (_, error) = self
                .pods
                .create(&key, &object, vec![pod; plan.create])
                .await;
            failure = error.map(|error| ("create", describe(&error)));
        } else if !plan.delete.is_empty() {
            failure = self
                .pods
                .delete(&key, &object, &plan.delete)
                .await
                .map(|error| ("delete", describe(&error)));
        }
        if core::status_changed(job.status.as_ref(), &plan.status) {
            let newly_finished = core::finished(&job).is_none() && {
                let mut with_status = (*job).clone();
                with_status.status = Some(plan.status.clone());
                core::finished(&with_status)
            }
            .is_some();
            let mut updated = (*job).clone();
            updated.status = Some(plan.status.clone());
            api.replace_status(&name, &PostParams::default(), &updated)
                .await
                .map_err(|source| JobError::Status {
                    key: key.clone(),
                    source,
                })?;
            if newly_finished {
                let condition = core::finished(&updated).unwrap_or_default();
                if condition.type_ == core::COMPLETE {
                    let note = "Job completed".to_string();
                    self.pods
                        .events
                        .record_later(&object, false, "Completed", note);
                } else {
                    self.pods.events.record_later(
                        &object,
                        true,
                        condition.reason.unwrap_or_default(),
                        condition.message.unwrap_or_default(),
                    );
                }
            }
        }
        if let Some((action, message)) = failure {
            return Err(JobError::Pods {
                key,
                action,
                message,
            });
        }
        Ok(plan.recheck.map_or(Next::Done, Next::After))
    }
}

/// Runs the Job controller with `workers` workers until `stop`.
pub async fn run(cluster: Arc<Cluster>, workers: usize, stop: Stop) {
    let events = Events::new(cluster.client.clone(), NAME, &cluster.identity);
    let controller = Arc::new(Controller {
        pods: PodControl::new(cluster.client.clone(), events),
        cluster: Arc::clone(&cluster),
    });
    let queue: Arc<WorkQueue<String>> = WorkQueue::new();
    queue_owner_changes(&cluster.jobs, &queue, &controller.pods.expectations);
    {
        let queue = Arc::clone(&queue);
        let controller_for_handler = Arc::clone(&controller);
        cluster.pods.on_change(move |change| {
            observe_pod_change(
                "Job",
                &controller_for_handler.pods.expectations,
                change,
                |key| queue.add(key),
                |pod| controller_for_handler.queue_selecting(&queue, pod),
            )
        });
    }
    let reconcile = move |key| {
        let controller = Arc::clone(&controller);
        async move { controller.reconcile(key).await }
    };
    cluster
        .run_controller(NAME, &cluster.jobs, queue, workers, reconcile, stop)
        .await;
}
