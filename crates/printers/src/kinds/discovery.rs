//! discovery.k8s.io/v1 EndpointSlices: ADDRESSTYPE, PORTS and ENDPOINTS, each
//! list cut to three entries with a " + N more..." tail.

use serde_json::{Value, json};

use crate::Column;
use crate::columns::{age_column, name_column, text};
use crate::object::{age, array_at, as_int, get, name, str_at};
use crate::timestamp::UnixNanos;

const MAX_SHOWN: usize = 3;

pub(crate) fn endpoint_slice_columns() -> Vec<Column> {
    vec![
        name_column(),
        text(
            "AddressType",
            "addressType specifies the type of address carried by this EndpointSlice.",
        ),
        text(
            "Ports",
            "ports specifies the list of network ports exposed by each endpoint in this slice.",
        ),
        text(
            "Endpoints",
            "endpoints is a list of unique endpoints in this slice.",
        ),
        age_column(),
    ]
}

pub(crate) fn endpoint_slice_cells(slice: &Value, now: UnixNanos) -> Vec<Value> {
    let ports: Vec<String> = array_at(slice, &["ports"])
        .iter()
        .map(
            |port| match (get(port, &["port"]).and_then(as_int), get(port, &["name"])) {
                (Some(number), _) => number.to_string(),
                (None, Some(port_name)) => port_name.as_str().unwrap_or("").to_string(),
                (None, None) => "*".to_string(),
            },
        )
        .collect();
    let addresses: Vec<String> = array_at(slice, &["endpoints"])
        .iter()
        .flat_map(|endpoint| array_at(endpoint, &["addresses"]))
        .map(|address| address.as_str().unwrap_or("").to_string())
        .collect();
    vec![
        json!(name(slice)),
        json!(str_at(slice, &["addressType"])),
        json!(list_with_more(&ports)),
        json!(list_with_more(&addresses)),
        json!(age(slice, now)),
    ]
}

/// The first three entries joined by commas, " + N more..." for the rest, "<unset>" for none.
fn list_with_more(entries: &[String]) -> String {
    let joined = entries
        .iter()
        .take(MAX_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    if entries.len() > MAX_SHOWN {
        return format!("{joined} + {} more...", entries.len() - MAX_SHOWN);
    }
    if joined.is_empty() {
        "<unset>".to_string()
    } else {
        joined
    }
}
