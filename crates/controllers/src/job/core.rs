//! The Job controller's decisions, sans IO: from a Job and its pods, how
//! many pods to start or stop, whether the Job succeeded or failed (and
//! why), its status, and when its time to live runs out.
//!
//! Finished pods are counted from their phase (the pods are kept until the
//! Job goes); upstream's tracking finalizer, which lets finished pods be
//! deleted early without losing the count, is not implemented.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::pods;

/// Condition types and reasons, as upstream's.
pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";
pub const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";
pub const FAILURE_TARGET: &str = "FailureTarget";
pub const BACKOFF_LIMIT_EXCEEDED: &str = "BackoffLimitExceeded";
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
pub const COMPLETIONS_REACHED: &str = "CompletionsReached";
pub const SUSPENDED: &str = "Suspended";

/// The first delay before a pod replaces a failed one, and the ceiling
/// (upstream's `DefaultJobPodFailureBackOff` and `MaxJobPodFailureBackOff`).
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(10);
pub const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(360);

/// What to do about a Job now.
#[derive(Debug, Default)]
pub struct Plan {
    /// Pods to create.
    pub create: usize,
    /// Active pods to delete, best first.
    pub delete: Vec<Arc<Pod>>,
    /// The status to write (compared with the Job's by the driver).
    pub status: JobStatus,
    /// Delete the Job itself (its time to live ran out).
    pub delete_job: bool,
    /// Look again after this long (a back-off, a deadline, a TTL).
    pub recheck: Option<Duration>,
    /// The Job asks for what this controller does not do (Indexed
    /// completion): nothing is done.
    pub unsupported: bool,
}

fn condition_true(status: &JobStatus, type_: &str) -> Option<JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|condition| condition.type_ == type_ && condition.status == "True")
        .cloned()
}

/// Whether the Job has finished: Complete or Failed.
pub fn finished(job: &Job) -> Option<JobCondition> {
    let status = job.status.as_ref()?;
    condition_true(status, COMPLETE).or_else(|| condition_true(status, FAILED))
}

fn condition(type_: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.to_string(),
        status: "True".to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn add_condition(status: &mut JobStatus, new: JobCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if !conditions
        .iter()
        .any(|condition| condition.type_ == new.type_)
    {
        conditions.push(new);
    }
}

/// Sets the condition `type_` to `status` (a change of status is a
/// transition; the same status keeps its time).
fn set_condition(
    job_status: &mut JobStatus,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let conditions = job_status.conditions.get_or_insert_with(Vec::new);
    match conditions
        .iter_mut()
        .find(|condition| condition.type_ == type_)
    {
        Some(present) if present.status == status => {}
        Some(present) => {
            *present = JobCondition {
                status: status.to_string(),
                ..condition(type_, reason, message, now)
            }
        }
        None => conditions.push(JobCondition {
            status: status.to_string(),
            ..condition(type_, reason, message, now)
        }),
    }
}

/// The delay before the next pod after `failures` failures.
pub fn failure_backoff(failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let shift = (failures - 1).min(16) as u32;
    FAILURE_BACKOFF
        .saturating_mul(1 << shift)
        .min(MAX_FAILURE_BACKOFF)
}

/// When a failed pod failed: its containers' latest finish, else its
/// creation.
fn failed_at(pod: &Pod) -> Option<Timestamp> {
    let finished = pod
        .status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|status| {
            status
                .state
                .as_ref()?
                .terminated
                .as_ref()?
                .finished_at
                .as_ref()
        })
        .map(|time| time.0)
        .max();
    finished.or_else(|| pod.metadata.creation_timestamp.as_ref().map(|time| time.0))
}

fn seconds(value: i64) -> Duration {
    Duration::from_secs(value.max(0) as u64)
}

fn until(deadline: Timestamp, now: Timestamp) -> Duration {
    if deadline <= now {
        return Duration::ZERO;
    }
    Duration::try_from(deadline.duration_since(now)).unwrap_or_default()
}

/// What to do about `job` whose claimed pods are `owned` (finished ones
/// included), at `now`. `may_act` is false while creations or deletions
/// asked for are not yet seen: then only the status is computed.
pub fn plan(job: &Job, owned: &[Arc<Pod>], may_act: bool, now: Timestamp) -> Plan {
    let spec = job.spec.clone().unwrap_or_default();
    let previous = job.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    let mut plan = Plan::default();

    if spec.completion_mode.as_deref() == Some("Indexed") {
        // Not implemented: such a Job is left alone rather than run
        // without its indexes (the driver says so in an event).
        plan.unsupported = true;
        plan.status = status;
        return plan;
    }

    if let Some(done) = finished(job) {
        // Only its time to live is left to watch.
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            let finished_at = previous
                .completion_time
                .as_ref()
                .map(|time| time.0)
                .or(done.last_transition_time.as_ref().map(|time| time.0))
                .unwrap_or(now);
            let expires = finished_at + seconds(ttl.into());
            if expires <= now {
                plan.delete_job = true;
            } else {
                plan.recheck = Some(until(expires, now));
            }
        }
        plan.status = status;
        return plan;
    }

    let active: Vec<Arc<Pod>> = owned
        .iter()
        .filter(|pod| pods::is_active(pod))
        .cloned()
        .collect();
    let terminating = owned
        .iter()
        .filter(|pod| {
            pods::is_terminating(pod) && !matches!(pods::phase(pod), "Succeeded" | "Failed")
        })
        .count() as i32;
    let succeeded = owned
        .iter()
        .filter(|pod| pods::phase(pod) == "Succeeded")
        .count() as i32;
    let failed_pods: Vec<&Arc<Pod>> = owned
        .iter()
        .filter(|pod| pods::phase(pod) == "Failed")
        .collect();
    let failed = failed_pods.len() as i32;
    let ready = active.iter().filter(|pod| pods::is_ready(pod)).count() as i32;

    let suspended = spec.suspend == Some(true);
    if suspended {
        // Suspended: no pod runs, and the deadline's clock restarts on
        // resumption.
        set_condition(
            &mut status,
            SUSPENDED,
            "True",
            "JobSuspended",
            "Job suspended",
            now,
        );
        status.start_time = None;
    } else if previous
        .conditions
        .iter()
        .flatten()
        .any(|condition| condition.type_ == SUSPENDED && condition.status == "True")
    {
        set_condition(
            &mut status,
            SUSPENDED,
            "False",
            "JobResumed",
            "Job resumed",
            now,
        );
    }
    let start_time = previous
        .start_time
        .as_ref()
        .map(|time| time.0)
        .filter(|_| !suspended)
        .unwrap_or(now);
    if !suspended {
        status.start_time = Some(Time(start_time));
    }
    status.succeeded = Some(succeeded.max(previous.succeeded.unwrap_or(0)));
    status.failed = Some(failed.max(previous.failed.unwrap_or(0)));
    let succeeded = status.succeeded.unwrap_or(0);
    let failed = status.failed.unwrap_or(0);
    status.ready = Some(ready);
    status.terminating = Some(terminating);

    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let completions = spec.completions;

    // Has it failed? (A failure decided earlier stands.)
    let mut failure = condition_true(&previous, FAILURE_TARGET).map(|target| {
        (
            target.reason.unwrap_or_default(),
            target.message.unwrap_or_default(),
        )
    });
    if failure.is_none() && failed > backoff_limit {
        failure = Some((
            BACKOFF_LIMIT_EXCEEDED.to_string(),
            "Job has reached the specified backoff limit".to_string(),
        ));
    }
    if failure.is_none()
        && !suspended
        && let Some(deadline) = spec.active_deadline_seconds
    {
        let expires = start_time + seconds(deadline);
        if expires <= now {
            failure = Some((
                DEADLINE_EXCEEDED.to_string(),
                "Job was active longer than specified deadline".to_string(),
            ));
        } else {
            plan.recheck = Some(until(expires, now));
        }
    }
    // Has it succeeded?
    let complete = failure.is_none()
        && match completions {
            Some(completions) => succeeded >= completions,
            // A work queue: done when one pod succeeded and none runs.
            None => succeeded > 0 && active.is_empty(),
        };

    if let Some((reason, message)) = &failure {
        add_condition(&mut status, condition(FAILURE_TARGET, reason, message, now));
        plan.delete = active.clone();
        if active.is_empty() && terminating == 0 {
            add_condition(&mut status, condition(FAILED, reason, message, now));
        }
    } else if complete {
        let message = "Reached expected number of succeeded pods";
        add_condition(
            &mut status,
            condition(SUCCESS_CRITERIA_MET, COMPLETIONS_REACHED, message, now),
        );
        plan.delete = active.clone();
        if active.is_empty() && terminating == 0 {
            add_condition(
                &mut status,
                condition(COMPLETE, COMPLETIONS_REACHED, message, now),
            );
            status.completion_time = Some(Time(now));
        }
    } else if suspended {
        plan.delete = active.clone();
    } else {
        let want_active = match completions {
            Some(completions) => (completions - succeeded).clamp(0, parallelism),
            None if succeeded > 0 => 0,
            None => parallelism,
        } as usize;
        if active.len() > want_active {
            let refs: Vec<&Pod> = active.iter().map(|pod| pod.as_ref()).collect();
            plan.delete = pods::deletion_order(&refs)
                .into_iter()
                .take(active.len() - want_active)
                .map(|index| Arc::clone(&active[index]))
                .collect();
        } else if active.len() < want_active {
            // After failures, a new pod waits out the back-off.
            let last_failure = failed_pods.iter().filter_map(|pod| failed_at(pod)).max();
            let wait = last_failure
                .map(|at| until(at + failure_backoff(failed), now))
                .unwrap_or_default();
            if wait.is_zero() {
                plan.create = (want_active - active.len()).min(pods::BURST_REPLICAS);
            } else {
                plan.recheck = Some(plan.recheck.map_or(wait, |earlier| earlier.min(wait)));
            }
        }
    }
    if !may_act {
        plan.create = 0;
        plan.delete.clear();
    }
    status.active = Some(active.len() as i32);
    plan.status = status;
    plan
}

/// Whether two statuses differ in what the controller writes (probe
/// times aside).
pub fn status_changed(old: Option<&JobStatus>, new: &JobStatus) -> bool {
    let Some(old) = old else { return true };
    let count = |value: Option<i32>| value.unwrap_or(0);
    let types = |status: &JobStatus| -> Vec<(String, String)> {
        status
            .conditions
            .iter()
            .flatten()
            .map(|condition| (condition.type_.clone(), condition.status.clone()))
            .collect()
    };
    count(old.active) != count(new.active)
        || count(old.succeeded) != count(new.succeeded)
        || count(old.failed) != count(new.failed)
        || old.ready != new.ready
        || old.terminating != new.terminating
        || old.start_time != new.start_time
        || old.completion_time != new.completion_time
        || types(old) != types(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::testing::*;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const UID: &str = "job-uid";

    fn job(completions: Option<i32>, parallelism: i32, backoff_limit: i32) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("work".into()),
                namespace: Some("default".into()),
                uid: Some(UID.into()),
                ..ObjectMeta::default()
            },
            spec: Some(JobSpec {
                completions,
                parallelism: Some(parallelism),
                backoff_limit: Some(backoff_limit),
                ..JobSpec::default()
            }),
            status: None,
        }
    }

    fn worker(name: &str, created: i64) -> Pod {
        pod(name, &[("job-name", "work")], Some(UID), created)
    }

    fn failed_at_second(name: &str, second: i64) -> Pod {
        let mut pod = with_phase(worker(name, 0), "Failed");
        pod.status.get_or_insert_default().container_statuses = Some(vec![ContainerStatus {
            name: "main".into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 1,
                    finished_at: Some(Time(at(second))),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }]);
        pod
    }

    fn arcs(pods: Vec<Pod>) -> Vec<Arc<Pod>> {
        pods.into_iter().map(Arc::new).collect()
    }

    fn types(status: &JobStatus) -> Vec<&str> {
        status
            .conditions
            .iter()
            .flatten()
            .map(|condition| condition.type_.as_str())
            .collect()
    }

    /// Runs a Job against a cluster that does what is asked one pod at a
    /// time, where every pod succeeds at once: each state is a restart
    /// point, and the Job never has more than `parallelism` active pods
    /// nor more than `completions` successes.
    #[test]
    fn completions_are_reached_parallelism_at_a_time_from_any_partial_state() {
        let mut job = job(Some(3), 2, 6);
        let mut pods: Vec<Pod> = Vec::new();
        let mut created = 0;
        for step in 0..30 {
            let plan = plan(&job, &arcs(pods.clone()), true, at(step));
            job.status = Some(plan.status.clone());
            if finished(&job).is_some() {
                assert_eq!(types(&plan.status), [SUCCESS_CRITERIA_MET, COMPLETE]);
                assert_eq!(plan.status.succeeded, Some(3));
                assert!(plan.status.completion_time.is_some());
                return;
            }
            let active = pods.iter().filter(|pod| pods::is_active(pod)).count();
            assert!(
                active + plan.create <= 2,
                "more than parallelism at step {step}"
            );
            if plan.create > 0 {
                created += 1;
                pods.push(running(worker(&format!("p{created}"), step)));
            } else if let Some(running_pod) = pods.iter_mut().find(|pod| pods::is_active(pod)) {
                running_pod.status.get_or_insert_default().phase = Some("Succeeded".into());
            }
            let successes = pods
                .iter()
                .filter(|pod| pods::phase(pod) == "Succeeded")
                .count();
            assert!(successes <= 3);
        }
        panic!("the job never completed");
    }

    #[test]
    fn failures_back_off_then_exceed_the_limit() {
        let job = job(Some(1), 1, 1);
        // One failure: the replacement waits 10 s after it.
        let pods = arcs(vec![failed_at_second("p1", 100)]);
        let waiting = plan(&job, &pods, true, at(104));
        assert_eq!(waiting.create, 0);
        assert_eq!(waiting.recheck, Some(Duration::from_secs(6)));
        let retry = plan(&job, &pods, true, at(110));
        assert_eq!(retry.create, 1);
        assert_eq!(retry.status.failed, Some(1));
        // A second failure is over a limit of one: failed, nothing created.
        let pods = arcs(vec![
            failed_at_second("p1", 100),
            failed_at_second("p2", 120),
        ]);
        let failed = plan(&job, &pods, true, at(121));
        assert_eq!(failed.create, 0);
        assert_eq!(types(&failed.status), [FAILURE_TARGET, FAILED]);
        let condition = failed.status.conditions.as_ref().unwrap().last().unwrap();
        assert_eq!(condition.reason.as_deref(), Some(BACKOFF_LIMIT_EXCEEDED));
        assert_eq!(
            condition.message.as_deref(),
            Some("Job has reached the specified backoff limit")
        );
    }

    #[test]
    fn a_job_past_its_deadline_stops_its_pods_then_fails() {
        let mut job = job(Some(5), 2, 6);
        job.spec.as_mut().unwrap().active_deadline_seconds = Some(30);
        job.status = Some(JobStatus {
            start_time: Some(Time(at(0))),
            ..JobStatus::default()
        });
        let pods = arcs(vec![running(worker("a", 0)), running(worker("b", 0))]);
        let early = plan(&job, &pods, true, at(10));
        assert_eq!(early.recheck, Some(Duration::from_secs(20)));
        assert!(early.delete.is_empty());
        let late = plan(&job, &pods, true, at(31));
        assert_eq!(late.delete.len(), 2);
        assert_eq!(types(&late.status), [FAILURE_TARGET]);
        // Restarted while the pods terminate: the decision stands, and
        // Failed follows once they are gone.
        job.status = Some(late.status);
        let going = arcs(vec![terminating(running(worker("a", 0)))]);
        let still = plan(&job, &going, true, at(32));
        assert_eq!(types(&still.status), [FAILURE_TARGET]);
        let gone = plan(&job, &[], true, at(33));
        assert_eq!(types(&gone.status), [FAILURE_TARGET, FAILED]);
        let condition = gone.status.conditions.as_ref().unwrap().last().unwrap();
        assert_eq!(condition.reason.as_deref(), Some(DEADLINE_EXCEEDED));
    }

    #[test]
    fn a_finished_job_is_deleted_when_its_time_to_live_runs_out() {
        let mut job = job(Some(1), 1, 6);
        job.spec.as_mut().unwrap().ttl_seconds_after_finished = Some(60);
        let done = plan(
            &job,
            &arcs(vec![with_phase(worker("a", 0), "Succeeded")]),
            true,
            at(100),
        );
        job.status = Some(done.status);
        assert!(finished(&job).is_some());
        let soon = plan(&job, &[], true, at(130));
        assert!(!soon.delete_job);
        assert_eq!(soon.recheck, Some(Duration::from_secs(30)));
        assert!(plan(&job, &[], true, at(160)).delete_job);
    }

    #[test]
    fn nothing_is_created_or_deleted_while_expectations_are_pending() {
        let job = job(Some(3), 3, 6);
        let plan = plan(&job, &[], false, at(0));
        assert_eq!(plan.create, 0);
        assert_eq!(plan.status.active, Some(0));
        assert!(plan.status.start_time.is_some());
    }

    #[test]
    fn a_work_queue_job_completes_when_a_pod_succeeded_and_none_runs() {
        let job = job(None, 2, 6);
        let pods = arcs(vec![
            with_phase(worker("a", 0), "Succeeded"),
            running(worker("b", 0)),
        ]);
        let running_one = plan(&job, &pods, true, at(5));
        assert_eq!(running_one.create, 0);
        assert!(types(&running_one.status).is_empty());
        let pods = arcs(vec![
            with_phase(worker("a", 0), "Succeeded"),
            with_phase(worker("b", 0), "Succeeded"),
        ]);
        let done = plan(&job, &pods, true, at(6));
        assert_eq!(types(&done.status), [SUCCESS_CRITERIA_MET, COMPLETE]);
    }

    #[test]
    fn a_suspended_job_stops_its_pods_and_resumes_with_a_new_start_time() {
        let mut job = job(Some(4), 2, 6);
        job.spec.as_mut().unwrap().suspend = Some(true);
        job.status = Some(JobStatus {
            start_time: Some(Time(at(0))),
            ..JobStatus::default()
        });
        let pods = arcs(vec![
            running(worker("a", 0)),
            with_phase(worker("b", 0), "Succeeded"),
        ]);
        let suspended = plan(&job, &pods, true, at(10));
        assert_eq!(suspended.create, 0);
        assert_eq!(suspended.delete.len(), 1);
        assert_eq!(suspended.status.start_time, None);
        assert_eq!(types(&suspended.status), [SUSPENDED]);
        job.status = Some(suspended.status);
        job.spec.as_mut().unwrap().suspend = Some(false);
        let resumed = plan(
            &job,
            &arcs(vec![with_phase(worker("b", 0), "Succeeded")]),
            true,
            at(20),
        );
        assert_eq!(resumed.create, 2);
        assert_eq!(resumed.status.start_time, Some(Time(at(20))));
        let condition = &resumed.status.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_deref()),
            ("False", Some("JobResumed"))
        );
    }

    #[test]
    fn an_indexed_job_is_left_alone() {
        let mut job = job(Some(3), 3, 6);
        job.spec.as_mut().unwrap().completion_mode = Some("Indexed".into());
        let plan = plan(&job, &[], true, at(0));
        assert!(plan.unsupported);
        assert_eq!(plan.create, 0);
        assert!(!status_changed(Some(&JobStatus::default()), &plan.status));
    }

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        assert_eq!(failure_backoff(0), Duration::ZERO);
        assert_eq!(failure_backoff(1), Duration::from_secs(10));
        assert_eq!(failure_backoff(3), Duration::from_secs(40));
        assert_eq!(failure_backoff(20), MAX_FAILURE_BACKOFF);
    }
}
