//! The server-side Table printing of kube-apiserver: the columns and row cells
//! that `kubectl get` receives when it asks for
//! `application/json;as=Table;v=v1;g=meta.k8s.io`, computed over objects in Go's
//! JSON shape (`serde_json::Value`).
//!
//! The crate is pure: no I/O, no async, and no input makes it panic. A missing
//! or mistyped field renders as the Go zero value would. Like kube-apiserver,
//! it always prints the wide columns (priority 1); kubectl hides them unless
//! `-o wide`. The caller builds the Table itself (`columnDefinitions`, `rows`
//! with `cells` and `object`).

mod columns;
mod custom;
mod duration;
mod jsonpath;
mod kinds;
mod labels;
mod object;
mod timestamp;

use std::time::SystemTime;

use serde_json::Value;

pub use custom::{CustomColumn, custom_cells, custom_columns, default_cells, default_columns};
pub use duration::human_duration;

/// One `TableColumnDefinition` of a Table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// "string", "integer", "number", "boolean" or "date".
    pub column_type: String,
    /// "name" for the Name column, otherwise usually empty.
    pub format: String,
    pub description: String,
    /// 0: always shown; 1: shown by kubectl only with `-o wide`.
    pub priority: i32,
}

/// The columns kube-apiserver prints for a built-in kind (`group` is "" for the
/// core group), or `None` when it has no printer for the kind; the caller then
/// uses [`default_columns`].
pub fn columns(group: &str, kind: &str) -> Option<Vec<Column>> {
    kinds::printer(group, kind).map(|printer| (printer.columns)())
}

/// One row's cells for `object`, in column order, as kube-apiserver renders
/// them (strings, integers, booleans). `now` is the clock for ages. Kinds
/// without a printer get [`default_cells`], so the number of cells always
/// matches the number of columns the caller uses.
pub fn cells(group: &str, kind: &str, object: &Value, now: SystemTime) -> Vec<Value> {
    match kinds::printer(group, kind) {
        Some(printer) => (printer.cells)(object, timestamp::unix_nanos(now)),
        None => default_cells(object, now),
    }
}

/// The `conditions` of a Table row: kube-apiserver marks pods that have
/// Succeeded or Failed with a `Completed` row condition. Empty for anything else.
pub fn row_conditions(group: &str, kind: &str, object: &Value) -> Vec<Value> {
    if kinds::is_core(group) && kind == "Pod" {
        return kinds::pod::row_conditions(object);
    }
    Vec::new()
}
