//! The CronJob controller (batch/v1): starts each CronJob's Jobs on its
//! schedule, honours `concurrencyPolicy`, `suspend` and
//! `startingDeadlineSeconds`, prunes finished Jobs past the history
//! limits, and keeps the status (active Jobs, last schedule and success).
//! The decisions are `core`'s; this is the driver.

pub mod core;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, DeleteParams, PostParams};

use crate::cluster::{BY_CONTROLLER, Cluster};
use crate::ownership::{controller_of, controller_reference};
use crate::podcontrol::describe;
use crate::runtime::{Events, Next, Stop, WorkQueue};

/// The controller's name in events and logs (upstream's).
pub const NAME: &str = "cronjob-controller";

#[derive(Debug, thiserror::Error)]
pub enum CronJobError {
    #[error("cannot {action} job {job} of cronjob {key}: {message}")]
    Job {
        key: String,
        action: &'static str,
        job: String,
        message: String,
    },
    #[error("cannot update the status of cronjob {key}: {source}")]
    Status { key: String, source: kube::Error },
}

struct Controller {
    cluster: Arc<Cluster>,
    events: Events,
}

impl Controller {
    async fn delete_job(&self, key: &str, job: &Job) -> Result<(), CronJobError> {
        let namespace = job.metadata.namespace.clone().unwrap_or_default();
        let name = job.metadata.name.clone().unwrap_or_default();
        let api: Api<Job> = Api::namespaced(self.cluster.client.clone(), &namespace);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(CronJobError::Job {
                key: key.to_string(),
                action: "delete",
                job: name,
                message: describe(&error),
            }),
        }
    }

    async fn reconcile(&self, key: String) -> Result<Next, CronJobError> {
        let Some(cron_job) = self.cluster.cron_jobs.get(&key) else {
            return Ok(Next::Done);
        };
        if cron_job.metadata.deletion_timestamp.is_some() {
            return Ok(Next::Done);
        }
        let object = cron_job.object_ref(&());
        let schedule = match core::Schedule::parse(&cron_job) {
            Ok(schedule) => schedule,
            Err(error) => {
                self.events
                    .record_later(&object, true, error.reason(), error.to_string());
                return Ok(Next::Done);
            }
        };
        let uid = cron_job.metadata.uid.clone().unwrap_or_default();
        let jobs = self.cluster.jobs.by_index(BY_CONTROLLER, &uid);
        let now = Timestamp::now();
        let mut plan = core::plan(&cron_job, &schedule, &jobs, now);
        for job in &plan.prune {
            self.delete_job(&key, job).await?;
            let name = job.metadata.name.clone().unwrap_or_default();
            self.events.record_later(
                &object,
                false,
                "SuccessfulDelete",
                format!("Deleted job {name}"),
            );
        }
        if let Some((reason, note)) = plan.skipped.clone() {
            self.events.record_later(&object, true, reason, note);
        }
        if let Some(scheduled) = plan.start {
            for job in &plan.replace {
                self.delete_job(&key, job).await?;
                let name = job.metadata.name.clone().unwrap_or_default();
                self.events.record_later(
                    &object,
                    false,
                    "SuccessfulDelete",
                    format!("Deleted job {name}"),
                );
            }
            let job = core::job_for(
                &cron_job,
                scheduled,
                controller_reference(cron_job.as_ref()),
            );
            let name = job.metadata.name.clone().unwrap_or_default();
            let namespace = cron_job.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Job> = Api::namespaced(self.cluster.client.clone(), &namespace);
            match api.create(&PostParams::default(), &job).await {
                Ok(created) => {
                    self.events.record_later(
                        &object,
                        false,
                        "SuccessfulCreate",
                        format!("Created job {name}"),
                    );
                    let active = plan.status.active.get_or_insert_with(Vec::new);
                    active.retain(|reference| {
                        !plan
                            .replace
                            .iter()
                            .any(|job| job.metadata.uid == reference.uid)
                    });
                    active.push(core::reference(&created));
                }
                // Started already (the copy is behind).
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => {
                    let message = describe(&error);
                    self.events.record_later(
                        &object,
                        true,
                        "FailedCreate",
                        format!("Error creating job: {message}"),
                    );
                    return Err(CronJobError::Job {
                        key,
                        action: "create",
                        job: name,
                        message,
                    });
                }
            }
        }
        if cron_job.status.as_ref() != Some(&plan.status) {
            let mut updated = (*cron_job).clone();
            updated.status = Some(plan.status.clone());
            let namespace = cron_job.metadata.namespace.clone().unwrap_or_default();
            let api: Api<CronJob> = Api::namespaced(self.cluster.client.clone(), &namespace);
            api.replace_status(
                updated.metadata.name.as_deref().unwrap_or_default(),
                &PostParams::default(),
                &updated,
            )
            .await
            .map_err(|source| CronJobError::Status {
                key: key.clone(),
                source,
            })?;
        }
        // Just after the next run is due (the clock may be a little early).
        Ok(plan.recheck.take().map_or(Next::Done, |wait| {
            Next::After(wait + Duration::from_millis(100))
        }))
    }
}

/// Runs the CronJob controller with `workers` workers until `stop`.
pub async fn run(cluster: Arc<Cluster>, workers: usize, stop: Stop) {
    let controller = Arc::new(Controller {
        events: Events::new(cluster.client.clone(), NAME, &cluster.identity),
        cluster: Arc::clone(&cluster),
    });
    let queue: Arc<WorkQueue<String>> = WorkQueue::new();
    cluster.cron_jobs.queue_keys(&queue);
    {
        // A Job's change concerns its CronJob.
        let queue = Arc::clone(&queue);
        cluster.jobs.on_change(move |change| {
            let job = change.object();
            if let Some(owner) = controller_of(&job.metadata)
                && owner.kind == "CronJob"
            {
                let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
                queue.add(format!("{namespace}/{}", owner.name));
            }
        });
    }
    let reconcile = move |key| {
        let controller = Arc::clone(&controller);
        async move { controller.reconcile(key).await }
    };
    cluster
        .run_controller(NAME, &cluster.cron_jobs, queue, workers, reconcile, stop)
        .await;
}
