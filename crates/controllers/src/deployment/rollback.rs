//! Automatic rollback, shoal's addition to upstream's controller: a
//! Deployment annotated `shoal.io/auto-rollback: "true"` whose rollout
//! fails goes back to the last template that was fully rolled out.
//!
//! A rollout fails when it passes its progress deadline, or when a pod of
//! its new ReplicaSet crash-loops (a container waiting in
//! `CrashLoopBackOff`, or restarted `RESTART_LIMIT` times, or cannot get
//! its image: `ImagePullBackOff`, `ErrImageNeverPull`, `InvalidImageName`), or has not been
//! Ready for as long as the deadline. The ReplicaSets a rollout completed
//! with carry `shoal.io/fully-available`; the newest of them (by revision)
//! that is not the new one is where the Deployment goes back to. The failed
//! template's hash is kept in `shoal.io/failed-revision-hash`: while the
//! Deployment's template is that one again, the controller does not roll it
//! out (so a re-applied manifest does not fail the same way over and over).

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::hash::POD_TEMPLATE_HASH;
use super::progress;

/// Opt-in, on the Deployment.
pub const AUTO_ROLLBACK: &str = "shoal.io/auto-rollback";
/// On the Deployment: the pod-template-hash of the template rolled back from.
pub const FAILED_REVISION_HASH: &str = "shoal.io/failed-revision-hash";
/// On a ReplicaSet: a rollout completed with it (all desired pods updated
/// and available).
pub const FULLY_AVAILABLE: &str = "shoal.io/fully-available";
/// The Deployment condition (status True) that says the last rollout was
/// rolled back, with why as its reason; cleared when the next rollout
/// starts.
pub const ROLLED_BACK: &str = "RolledBack";
/// The Warning event's reason, and the Progressing reason right after.
pub const EVENT_REASON: &str = "RolledBack";
pub const PROGRESSING_REASON: &str = "AutoRollback";
/// Why, as the `RolledBack` condition's reason.
pub const REASON_DEADLINE: &str = "ProgressDeadlineExceeded";
pub const REASON_CRASH_LOOP: &str = "CrashLoopBackOff";
pub const REASON_RESTARTS: &str = "TooManyRestarts";
pub const REASON_NOT_READY: &str = "PodNotReady";
pub const REASON_IMAGE: &str = "ImagePullBackOff";

/// Waiting reasons that say a container cannot get its image: the agent
/// has failed to pull it at least twice (`ImagePullBackOff`), or it can
/// never have it (`ErrImageNeverPull`: absent with `imagePullPolicy:
/// Never`; `InvalidImageName`). A rollout to such an image does not
/// progress by waiting, so the rollback need not wait for the deadline.
const IMAGE_FAILURES: [&str; 3] = ["ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"];

/// Restarts of one container that count as a crash loop.
pub const RESTART_LIMIT: i32 = 3;

pub fn enabled(deployment: &Deployment) -> bool {
    annotation(&deployment.metadata, AUTO_ROLLBACK) == Some("true")
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

pub fn is_fully_available(replica_set: &ReplicaSet) -> bool {
    annotation(&replica_set.metadata, FULLY_AVAILABLE) == Some("true")
}

pub fn template_hash_of(replica_set: &ReplicaSet) -> Option<&str> {
    replica_set
        .metadata
        .labels
        .as_ref()?
        .get(POD_TEMPLATE_HASH)
        .map(String::as_str)
}

/// The template hash the Deployment must not roll out again, if any.
pub fn failed_hash(deployment: &Deployment) -> Option<&str> {
    annotation(&deployment.metadata, FAILED_REVISION_HASH)
}

/// Why a rollout is failing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub detail: String,
}

/// Whether the rollout to `new` is failing: the deadline passed (by
/// `status`, the status this sync computed), or one of `pods` (the new
/// ReplicaSet's) crash-loops or stays unready past the deadline.
pub fn failure(
    deployment: &Deployment,
    status: &k8s_openapi::api::apps::v1::DeploymentStatus,
    new: &ReplicaSet,
    pods: &[std::sync::Arc<Pod>],
    now: &Time,
) -> Option<Failure> {
    let name = new.metadata.name.as_deref().unwrap_or_default();
    if progress::condition(status, progress::PROGRESSING)
        .and_then(|condition| condition.reason.as_deref())
        == Some(progress::TIMED_OUT)
    {
        return Some(Failure {
            reason: REASON_DEADLINE,
            detail: format!("ReplicaSet \"{name}\" has timed out progressing"),
        });
    }
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        let containers = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for container in containers {
            let waiting = container
                .state
                .as_ref()
                .and_then(|state| state.waiting.as_ref())
                .and_then(|waiting| waiting.reason.as_deref());
            if let Some(reason) = waiting.filter(|reason| IMAGE_FAILURES.contains(reason)) {
                let image = &container.image;
                return Some(Failure {
                    reason: REASON_IMAGE,
                    detail: format!(
                        "container \"{}\" of pod \"{pod_name}\" cannot get image \"{image}\" ({reason})",
                        container.name
                    ),
                });
            }
            if waiting == Some("CrashLoopBackOff") {
                return Some(Failure {
                    reason: REASON_CRASH_LOOP,
                    detail: format!(
                        "container \"{}\" of pod \"{pod_name}\" is in CrashLoopBackOff",
                        container.name
                    ),
                });
            }
            if container.restart_count >= RESTART_LIMIT {
                return Some(Failure {
                    reason: REASON_RESTARTS,
                    detail: format!(
                        "container \"{}\" of pod \"{pod_name}\" restarted {} times",
                        container.name, container.restart_count
                    ),
                });
            }
        }
        if let Some(deadline) = progress::progress_deadline(deployment) {
            let ready = status
                .conditions
                .iter()
                .flatten()
                .find(|condition| condition.type_ == "Ready");
            let unready_since = match ready {
                Some(condition) if condition.status == "True" => None,
                Some(condition) => condition
                    .last_transition_time
                    .as_ref()
                    .or(pod.metadata.creation_timestamp.as_ref()),
                None => pod.metadata.creation_timestamp.as_ref(),
            };
            if let Some(since) = unready_since
                && now.0.as_second() - since.0.as_second() > i64::from(deadline)
            {
                return Some(Failure {
                    reason: REASON_NOT_READY,
                    detail: format!("pod \"{pod_name}\" has not been ready for {deadline}s"),
                });
            }
        }
    }
    None
}
