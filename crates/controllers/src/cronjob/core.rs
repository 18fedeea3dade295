//! The CronJob controller's decisions, sans IO: from a CronJob, the Jobs
//! it owns and the time, which Job to start (named for its scheduled
//! minute, so a restart never starts the same run twice), which to
//! replace or leave running (`concurrencyPolicy`), which finished Jobs to
//! delete (history limits), the status, and when to look again.
//!
//! Schedules are standard five-field cron (and `@hourly`-style macros),
//! evaluated in UTC; a `timeZone` other than UTC is refused.

use std::sync::Arc;
use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;

use crate::job::core::finished;

/// The annotation with a Job's scheduled time (upstream's, RFC 3339).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// More missed runs than this are not counted one by one (upstream's).
pub const MAX_MISSED: usize = 100;

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("unparseable schedule: {schedule:?}: {reason}")]
    Unparseable { schedule: String, reason: String },
    #[error("unknown time zone {0:?}: only UTC is supported")]
    UnknownTimeZone(String),
}

impl ScheduleError {
    /// The event reason upstream records.
    pub fn reason(&self) -> &'static str {
        match self {
            ScheduleError::Unparseable { .. } => "UnparseableSchedule",
            ScheduleError::UnknownTimeZone(_) => "UnknownTimeZone",
        }
    }
}

/// A parsed schedule.
pub struct Schedule(Cron);

impl Schedule {
    pub fn parse(cron_job: &CronJob) -> Result<Schedule, ScheduleError> {
        let spec = cron_job.spec.as_ref();
        if let Some(zone) = spec.and_then(|spec| spec.time_zone.as_deref())
            && !matches!(zone, "UTC" | "Etc/UTC")
        {
            return Err(ScheduleError::UnknownTimeZone(zone.to_string()));
        }
        let text = spec.map(|spec| spec.schedule.as_str()).unwrap_or_default();
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let parser = CronParser::builder().seconds(Seconds::Disallowed).build();
        parser
            .parse(expanded)
            .map(Schedule)
            .map_err(|error| ScheduleError::Unparseable {
                schedule: text.to_string(),
                reason: error.to_string(),
            })
    }

    /// The first scheduled time strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let zoned = after.to_zoned(TimeZone::UTC);
        self.0
            .find_next_occurrence(&zoned, false)
            .ok()
            .map(|next| next.timestamp())
    }
}

/// The name of the Job for the run scheduled at `scheduled` (upstream's:
/// the CronJob's name and the minutes since the epoch).
pub fn job_name(cron_job: &CronJob, scheduled: Timestamp) -> String {
    format!(
        "{}-{}",
        cron_job.metadata.name.as_deref().unwrap_or_default(),
        scheduled.as_second().div_euclid(60)
    )
}

/// The Job for the run scheduled at `scheduled`.
pub fn job_for(cron_job: &CronJob, scheduled: Timestamp, owner: OwnerReference) -> Job {
    let template = cron_job
        .spec
        .as_ref()
        .map(|spec| spec.job_template.clone())
        .unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    let mut annotations = template_meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.to_string(),
        scheduled.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(cron_job, scheduled)),
            namespace: cron_job.metadata.namespace.clone(),
            labels: template_meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// What to do now.
#[derive(Debug, Default)]
pub struct Plan {
    /// Start a Job for this scheduled time.
    pub start: Option<Timestamp>,
    /// Active Jobs to delete first (`Replace`).
    pub replace: Vec<Arc<Job>>,
    /// Finished Jobs beyond the history limits.
    pub prune: Vec<Arc<Job>>,
    /// A run that was skipped: missed its deadline, or forbidden while
    /// another runs (event reason and note).
    pub skipped: Option<(&'static str, String)>,
    /// The status (the driver adds the started Job to `active`).
    pub status: CronJobStatus,
    /// When the next run is due.
    pub recheck: Option<Duration>,
}

/// A reference to `job` in the CronJob's `status.active` (no resource
/// version: the list changes when Jobs come and go, not as they run).
pub fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".to_string()),
        kind: Some("Job".to_string()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: None,
        field_path: None,
    }
}

fn finished_type(job: &Job) -> Option<String> {
    finished(job).map(|condition| condition.type_)
}

/// What to do about `cron_job` with its `jobs` at `now`.
pub fn plan(cron_job: &CronJob, schedule: &Schedule, jobs: &[Arc<Job>], now: Timestamp) -> Plan {
    let spec = cron_job.spec.clone().unwrap_or_default();
    let previous = cron_job.status.clone().unwrap_or_default();
    let mut plan = Plan::default();
    let mut status = previous.clone();

    // Active: the Jobs it owns that have not finished.
    let active: Vec<Arc<Job>> = jobs
        .iter()
        .filter(|job| finished_type(job).is_none() && job.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    status.active = (!active.is_empty()).then(|| active.iter().map(|job| reference(job)).collect());
    let last_success = jobs
        .iter()
        .filter(|job| finished_type(job).as_deref() == Some("Complete"))
        .filter_map(|job| {
            job.status
                .as_ref()?
                .completion_time
                .as_ref()
                .map(|time| time.0)
        })
        .max();
    if let Some(success) = last_success
        && previous
            .last_successful_time
            .as_ref()
            .is_none_or(|time| time.0 < success)
    {
        status.last_successful_time = Some(Time(success));
    }

    // History: keep the newest finished Jobs within the limits.
    let mut prune = |kind: &str, limit: Option<i32>| {
        let Some(limit) = limit else { return };
        let mut done: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|job| finished_type(job).as_deref() == Some(kind))
            .filter(|job| job.metadata.deletion_timestamp.is_none())
            .collect();
        done.sort_by_key(|job| {
            job.status
                .as_ref()
                .and_then(|status| status.start_time.as_ref())
                .or(job.metadata.creation_timestamp.as_ref())
                .map(|time| time.0)
        });
        let surplus = done.len().saturating_sub(limit.max(0) as usize);
        plan.prune.extend(done.into_iter().take(surplus).cloned());
    };
    prune("Complete", spec.successful_jobs_history_limit);
    prune("Failed", spec.failed_jobs_history_limit);

    // The run due now, if any: the latest scheduled time since the last
    // one started (or the CronJob was made), within the deadline.
    let created = cron_job
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|time| time.0)
        .unwrap_or(now);
    let mut earliest = previous
        .last_schedule_time
        .as_ref()
        .map(|time| time.0)
        .unwrap_or(created);
    if let Some(deadline) = spec.starting_deadline_seconds {
        let window_start = now - Duration::from_secs(deadline.max(0) as u64);
        if window_start > earliest {
            earliest = window_start;
        }
    }
    let mut due = None;
    let mut missed = 0;
    let mut cursor = earliest;
    while let Some(next) = schedule.next_after(cursor) {
        if next > now {
            plan.recheck = Some(Duration::try_from(next.duration_since(now)).unwrap_or_default());
            break;
        }
        due = Some(next);
        missed += 1;
        cursor = next;
        if missed > MAX_MISSED {
            // Too many to walk: take the latest before now directly.
            due = latest_before(schedule, cursor, now).or(due);
            plan.recheck = schedule
                .next_after(now)
                .map(|next| Duration::try_from(next.duration_since(now)).unwrap_or_default());
            break;
        }
    }
    plan.status = status;
    let Some(scheduled) = due else {
        return plan;
    };
    if spec.suspend == Some(true) {
        return plan;
    }
    if let Some(deadline) = spec.starting_deadline_seconds
        && scheduled + Duration::from_secs(deadline.max(0) as u64) < now
    {
        plan.skipped = Some((
            "MissSchedule",
            format!(
                "Missed scheduled time to start a job: {}",
                scheduled.strftime("%Y-%m-%dT%H:%M:%SZ")
            ),
        ));
        return plan;
    }
    // Already started (the copy may not show the status written with it).
    let name = job_name(cron_job, scheduled);
    if jobs
        .iter()
        .any(|job| job.metadata.name.as_deref() == Some(name.as_str()))
    {
        plan.status.last_schedule_time = Some(Time(scheduled));
        return plan;
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            plan.skipped = Some((
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid"
                    .to_string(),
            ));
            return plan;
        }
        Some("Replace") => plan.replace = active,
        _ => {}
    }
    plan.start = Some(scheduled);
    plan.status.last_schedule_time = Some(Time(scheduled));
    plan
}

/// The latest scheduled time in (`after`, `now`].
fn latest_before(schedule: &Schedule, after: Timestamp, now: Timestamp) -> Option<Timestamp> {
    // Step back from now an hour at a time to a window with a run in it.
    let mut window = Duration::from_secs(3600);
    while window < Duration::from_secs(3600 * 24 * 366) {
        let start = (now - window).max(after);
        let mut latest = None;
        let mut cursor = start;
        while let Some(next) = schedule.next_after(cursor) {
            if next > now {
                break;
            }
            latest = Some(next);
            cursor = next;
        }
        if latest.is_some() {
            return latest;
        }
        window *= 2;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::testing::at;
    use k8s_openapi::api::batch::v1::{CronJobSpec, JobCondition, JobStatus, JobTemplateSpec};

    fn cron_job(schedule: &str, policy: &str) -> CronJob {
        CronJob {
            metadata: ObjectMeta {
                name: Some("tick".into()),
                namespace: Some("default".into()),
                uid: Some("cj-uid".into()),
                creation_timestamp: Some(Time(at(0))),
                ..ObjectMeta::default()
            },
            spec: Some(CronJobSpec {
                schedule: schedule.into(),
                concurrency_policy: Some(policy.into()),
                successful_jobs_history_limit: Some(2),
                failed_jobs_history_limit: Some(1),
                job_template: JobTemplateSpec::default(),
                ..CronJobSpec::default()
            }),
            status: None,
        }
    }

    fn job(cron_job: &CronJob, scheduled: Timestamp, outcome: Option<&str>) -> Arc<Job> {
        let mut job = job_for(cron_job, scheduled, OwnerReference::default());
        job.metadata.creation_timestamp = Some(Time(scheduled));
        job.status = Some(JobStatus {
            start_time: Some(Time(scheduled)),
            completion_time: outcome
                .filter(|kind| *kind == "Complete")
                .map(|_| Time(scheduled + Duration::from_secs(5))),
            conditions: outcome.map(|kind| {
                vec![JobCondition {
                    type_: kind.into(),
                    status: "True".into(),
                    ..JobCondition::default()
                }]
            }),
            ..JobStatus::default()
        });
        Arc::new(job)
    }

    // at(0) is 2027-01-15T08:00:00Z, on a minute.
    fn minute(n: i64) -> Timestamp {
        at(60 * n)
    }

    #[test]
    fn a_run_starts_once_per_scheduled_minute_even_after_a_restart() {
        let mut cron_job = cron_job("* * * * *", "Allow");
        let schedule = Schedule::parse(&cron_job).unwrap();
        let early = plan(
            &cron_job,
            &schedule,
            &[],
            minute(0) + Duration::from_secs(30),
        );
        assert_eq!(early.start, None);
        assert_eq!(early.recheck, Some(Duration::from_secs(30)));
        let first = plan(
            &cron_job,
            &schedule,
            &[],
            minute(1) + Duration::from_secs(2),
        );
        assert_eq!(first.start, Some(minute(1)));
        assert_eq!(
            job_name(&cron_job, minute(1)),
            format!("tick-{}", minute(1).as_second() / 60)
        );
        // Restarted after creating the Job, before writing the status:
        // the Job's name says it already ran.
        let started = vec![job(&cron_job, minute(1), None)];
        let again = plan(
            &cron_job,
            &schedule,
            &started,
            minute(1) + Duration::from_secs(3),
        );
        assert_eq!(again.start, None);
        assert_eq!(again.status.last_schedule_time, Some(Time(minute(1))));
        assert_eq!(again.status.active.as_ref().map(Vec::len), Some(1));
        cron_job.status = Some(again.status);
        // The next minute, another run beside it (Allow).
        let next = plan(&cron_job, &schedule, &started, minute(2));
        assert_eq!(next.start, Some(minute(2)));
    }

    #[test]
    fn forbid_skips_and_replace_stops_the_running_job() {
        let mut forbid = cron_job("* * * * *", "Forbid");
        forbid.status = Some(CronJobStatus {
            last_schedule_time: Some(Time(minute(1))),
            ..CronJobStatus::default()
        });
        let schedule = Schedule::parse(&forbid).unwrap();
        let running = vec![job(&forbid, minute(1), None)];
        let skipped = plan(&forbid, &schedule, &running, minute(2));
        assert_eq!(skipped.start, None);
        assert_eq!(
            skipped.skipped.as_ref().map(|(reason, _)| *reason),
            Some("JobAlreadyActive")
        );
        let mut replace = forbid.clone();
        replace.spec.as_mut().unwrap().concurrency_policy = Some("Replace".into());
        let replaced = plan(&replace, &schedule, &running, minute(2));
        assert_eq!(replaced.start, Some(minute(2)));
        assert_eq!(replaced.replace.len(), 1);
    }

    #[test]
    fn suspended_or_late_runs_do_not_start() {
        let mut late = cron_job("*/5 * * * *", "Allow");
        late.spec.as_mut().unwrap().starting_deadline_seconds = Some(10);
        let schedule = Schedule::parse(&late).unwrap();
        // Within the deadline of the run at minute 5.
        assert_eq!(
            plan(&late, &schedule, &[], minute(5) + Duration::from_secs(8)).start,
            Some(minute(5))
        );
        // Past it: nothing starts (the window starts after the run).
        let missed = plan(&late, &schedule, &[], minute(5) + Duration::from_secs(30));
        assert_eq!(missed.start, None);
        let mut suspended = cron_job("* * * * *", "Allow");
        suspended.spec.as_mut().unwrap().suspend = Some(true);
        assert_eq!(plan(&suspended, &schedule, &[], minute(3)).start, None);
    }

    #[test]
    fn finished_jobs_beyond_the_history_limits_are_pruned_oldest_first() {
        let mut cron_job = cron_job("0 0 1 1 *", "Allow");
        cron_job.status = Some(CronJobStatus {
            last_schedule_time: Some(Time(minute(10))),
            ..CronJobStatus::default()
        });
        let schedule = Schedule::parse(&cron_job).unwrap();
        let jobs = vec![
            job(&cron_job, minute(1), Some("Complete")),
            job(&cron_job, minute(2), Some("Complete")),
            job(&cron_job, minute(3), Some("Complete")),
            job(&cron_job, minute(4), Some("Failed")),
            job(&cron_job, minute(5), Some("Failed")),
        ];
        let plan = plan(&cron_job, &schedule, &jobs, minute(11));
        let pruned: Vec<String> = plan
            .prune
            .iter()
            .map(|job| job.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            pruned,
            [
                job_name(&cron_job, minute(1)),
                job_name(&cron_job, minute(4))
            ]
        );
        assert_eq!(
            plan.status.last_successful_time,
            Some(Time(minute(3) + Duration::from_secs(5)))
        );
        assert!(plan.status.active.is_none());
    }

    #[test]
    fn bad_schedules_and_zones_are_refused() {
        assert!(matches!(
            Schedule::parse(&cron_job("every minute", "Allow")),
            Err(ScheduleError::Unparseable { .. })
        ));
        let mut zoned = cron_job("* * * * *", "Allow");
        zoned.spec.as_mut().unwrap().time_zone = Some("Europe/Paris".into());
        assert_eq!(
            Schedule::parse(&zoned).err(),
            Some(ScheduleError::UnknownTimeZone("Europe/Paris".into()))
        );
        let hourly = Schedule::parse(&cron_job("@hourly", "Allow")).unwrap();
        assert_eq!(hourly.next_after(minute(1)), Some(minute(60)));
    }
}
