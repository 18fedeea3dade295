//! batch/v1 Jobs: STATUS from the job conditions, COMPLETIONS, DURATION.

use serde_json::{Value, json};

use crate::Column;
use crate::columns::{
    CONTAINERS_DESCRIPTION, IMAGES_DESCRIPTION, age_column, name_column, text, wide,
};
use crate::duration::human_duration_nanos;
use crate::labels::format_label_selector;
use crate::object::{
    age, array_at, condition, container_cells, get, int_at, name, opt_int_at, present, str_at,
    time_at,
};
use crate::timestamp::{UnixNanos, saturating_go_duration};

pub(crate) fn job_columns() -> Vec<Column> {
    vec![
        name_column(),
        text("Status", "Status of the job."),
        text(
            "Completions",
            "The number of pods which reached phase Succeeded.",
        ),
        text("Duration", "Time required to complete the job."),
        age_column(),
        wide("Containers", CONTAINERS_DESCRIPTION),
        wide("Images", IMAGES_DESCRIPTION),
        wide(
            "Selector",
            "A label query over pods that should match the pod count.",
        ),
    ]
}

pub(crate) fn job_cells(job: &Value, now: UnixNanos) -> Vec<Value> {
    let succeeded = int_at(job, &["status", "succeeded"]);
    let completions = match opt_int_at(job, &["spec", "completions"]) {
        Some(completions) => format!("{succeeded}/{completions}"),
        None => {
            let parallelism = opt_int_at(job, &["spec", "parallelism"]).unwrap_or(0);
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    // A present start or completion time that is Go's zero time still counts as set.
    let start = present(job, &["status", "startTime"])
        .then(|| time_at(job, &["status", "startTime"]).unwrap_or(GO_ZERO_TIME_NANOS));
    let completion = present(job, &["status", "completionTime"])
        .then(|| time_at(job, &["status", "completionTime"]).unwrap_or(GO_ZERO_TIME_NANOS));
    let duration = match (start, completion) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration_nanos(saturating_go_duration(now - start)),
        (Some(start), Some(completion)) => {
            human_duration_nanos(saturating_go_duration(completion - start))
        }
    };
    let conditions = array_at(job, &["status", "conditions"]);
    let holds = |condition_type: &str| {
        condition(conditions, condition_type)
            .is_some_and(|condition| str_at(condition, &["status"]) == "True")
    };
    let status = if holds("Complete") {
        "Complete"
    } else if holds("Failed") {
        "Failed"
    } else if present(job, &["metadata", "deletionTimestamp"]) {
        "Terminating"
    } else if holds("Suspended") {
        "Suspended"
    } else if holds("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) =
        container_cells(array_at(job, &["spec", "template", "spec", "containers"]));
    vec![
        json!(name(job)),
        json!(status),
        json!(completions),
        json!(duration),
        json!(age(job, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(get(job, &["spec", "selector"]))),
    ]
}

const GO_ZERO_TIME_NANOS: UnixNanos = -62_135_596_800 * 1_000_000_000;

pub(crate) fn cron_job_columns() -> Vec<Column> {
    vec![
        name_column(),
        text("Schedule", "The schedule in Cron format."),
        text("Timezone", "The time zone the schedule is in."),
        text("Suspend", "Whether new jobs are suspended."),
        crate::columns::integer("Active", "The number of running jobs."),
        text("Last Schedule", "When a job was last scheduled."),
        age_column(),
        wide("Containers", CONTAINERS_DESCRIPTION),
        wide("Images", IMAGES_DESCRIPTION),
        wide(
            "Selector",
            "A label query over pods that should match the pod count.",
        ),
    ]
}

pub(crate) fn cron_job_cells(cron_job: &Value, now: UnixNanos) -> Vec<Value> {
    let time_zone = match str_at(cron_job, &["spec", "timeZone"]) {
        "" => "<none>".to_string(),
        zone => zone.to_string(),
    };
    let suspend = match get(cron_job, &["spec", "suspend"]).and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let last_schedule = match time_at(cron_job, &["status", "lastScheduleTime"]) {
        Some(time) => crate::timestamp::since(Some(time), now),
        None => "<none>".to_string(),
    };
    let template = &[
        "spec",
        "jobTemplate",
        "spec",
        "template",
        "spec",
        "containers",
    ];
    let (names, images) = container_cells(array_at(cron_job, template));
    vec![
        json!(name(cron_job)),
        json!(str_at(cron_job, &["spec", "schedule"])),
        json!(time_zone),
        json!(suspend),
        json!(array_at(cron_job, &["status", "active"]).len()),
        json!(last_schedule),
        json!(age(cron_job, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(get(
            cron_job,
            &["spec", "jobTemplate", "spec", "selector"]
        ))),
    ]
}
