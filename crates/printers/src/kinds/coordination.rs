//! coordination.k8s.io/v1 Leases: HOLDER.

use serde_json::{Value, json};

use crate::Column;
use crate::columns::{age_column, name_column, text};
use crate::object::{age, name, str_at};
use crate::timestamp::UnixNanos;

pub(crate) fn lease_columns() -> Vec<Column> {
    vec![
        name_column(),
        text(
            "Holder",
            "holderIdentity contains the identity of the holder of a current lease.",
        ),
        age_column(),
    ]
}

pub(crate) fn lease_cells(lease: &Value, now: UnixNanos) -> Vec<Value> {
    vec![
        json!(name(lease)),
        json!(str_at(lease, &["spec", "holderIdentity"])),
        json!(age(lease, now)),
    ]
}
