//! policy/v1 PodDisruptionBudgets: MIN AVAILABLE, MAX UNAVAILABLE, ALLOWED DISRUPTIONS.

use serde_json::{Value, json};

use crate::Column;
use crate::columns::{age_column, integer, name_column, text};
use crate::object::{age, get, int_at, int_or_string, name};
use crate::timestamp::UnixNanos;

pub(crate) fn pod_disruption_budget_columns() -> Vec<Column> {
    vec![
        name_column(),
        text(
            "Min Available",
            "The minimum number of pods that must be available.",
        ),
        text(
            "Max Unavailable",
            "The maximum number of pods that may be unavailable.",
        ),
        integer(
            "Allowed Disruptions",
            "Calculated number of pods that may be disrupted at this time.",
        ),
        age_column(),
    ]
}

pub(crate) fn pod_disruption_budget_cells(budget: &Value, now: UnixNanos) -> Vec<Value> {
    let bound = |field: &str| {
        get(budget, &["spec", field]).map_or_else(|| "N/A".to_string(), int_or_string)
    };
    vec![
        json!(name(budget)),
        json!(bound("minAvailable")),
        json!(bound("maxUnavailable")),
        json!(int_at(budget, &["status", "disruptionsAllowed"])),
        json!(age(budget, now)),
    ]
}
