//! Events, core/v1 and events.k8s.io/v1 alike: kube-apiserver serves both from
//! one storage and prints them with the same columns.

use serde_json::{Value, json};

use crate::Column;
use crate::columns::{name_column, text, wide};
use crate::object::{get, int_at, name, present, str_at, time_at};
use crate::timestamp::{UnixNanos, since};

pub(crate) fn columns() -> Vec<Column> {
    vec![
        text(
            "Last Seen",
            "The time at which the most recent occurrence of this event was recorded.",
        ),
        text(
            "Type",
            "Type of this event (Normal, Warning), new types could be added in the future",
        ),
        text(
            "Reason",
            "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
        ),
        text("Object", "The object that this event is about."),
        wide(
            "Subobject",
            "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
        ),
        wide(
            "Source",
            "The component reporting this event. Should be a short machine understandable string.",
        ),
        text(
            "Message",
            "A human-readable description of the status of this operation.",
        ),
        wide(
            "First Seen",
            "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
        ),
        wide("Count", "The number of times this event has occurred."),
        Column {
            priority: 1,
            ..name_column()
        },
    ]
}

/// The fields the printer reads, named as in core/v1.
struct EventFields<'a> {
    involved_object: Option<&'a Value>,
    message: &'a str,
    first_timestamp: Option<UnixNanos>,
    last_timestamp: Option<UnixNanos>,
    count: i64,
    source: Option<&'a Value>,
}

pub(crate) fn core_cells(event: &Value, now: UnixNanos) -> Vec<Value> {
    let fields = EventFields {
        involved_object: get(event, &["involvedObject"]),
        message: str_at(event, &["message"]),
        first_timestamp: time_at(event, &["firstTimestamp"]),
        last_timestamp: time_at(event, &["lastTimestamp"]),
        count: int_at(event, &["count"]),
        source: get(event, &["source"]),
    };
    event_cells(event, &fields, now)
}

/// events.k8s.io/v1 renames the core fields (`regarding`, `note`, `deprecated*`).
pub(crate) fn events_group_cells(event: &Value, now: UnixNanos) -> Vec<Value> {
    let fields = EventFields {
        involved_object: get(event, &["regarding"]),
        message: str_at(event, &["note"]),
        first_timestamp: time_at(event, &["deprecatedFirstTimestamp"]),
        last_timestamp: time_at(event, &["deprecatedLastTimestamp"]),
        count: int_at(event, &["deprecatedCount"]),
        source: get(event, &["deprecatedSource"]),
    };
    event_cells(event, &fields, now)
}

fn event_cells(event: &Value, fields: &EventFields<'_>, now: UnixNanos) -> Vec<Value> {
    let event_time = time_at(event, &["eventTime"]);
    let first_seen = match fields.first_timestamp {
        Some(first) => since(Some(first), now),
        None => since(event_time, now),
    };
    let mut last_seen = match fields.last_timestamp {
        Some(last) => since(Some(last), now),
        None => first_seen.clone(),
    };
    let mut count = fields.count;
    if present(event, &["series"]) {
        last_seen = since(time_at(event, &["series", "lastObservedTime"]), now);
        count = int_at(event, &["series", "count"]);
    } else if count == 0 {
        // Singleton events of the new API carry no count.
        count = 1;
    }

    let involved = fields.involved_object.unwrap_or(&Value::Null);
    let kind = str_at(involved, &["kind"]).to_lowercase();
    let involved_name = str_at(involved, &["name"]);
    let target = if involved_name.is_empty() {
        kind
    } else {
        format!("{kind}/{involved_name}")
    };

    let source = fields.source.unwrap_or(&Value::Null);
    let component = first_non_empty(
        str_at(source, &["component"]),
        str_at(event, &["reportingController"]),
    );
    let instance = first_non_empty(
        str_at(source, &["host"]),
        str_at(event, &["reportingInstance"]),
    );
    let source_text = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };

    vec![
        json!(last_seen),
        json!(str_at(event, &["type"])),
        json!(str_at(event, &["reason"])),
        json!(target),
        json!(str_at(involved, &["fieldPath"])),
        json!(source_text),
        json!(fields.message.trim()),
        json!(first_seen),
        json!(count),
        json!(name(event)),
    ]
}

fn first_non_empty<'a>(first: &'a str, second: &'a str) -> &'a str {
    if first.is_empty() { second } else { first }
}
