//! The table of built-in printers, one per (group, kind) that kube-apiserver's
//! `pkg/printers/internalversion` registers and shoal serves.

pub(crate) mod apps;
pub(crate) mod batch;
pub(crate) mod coordination;
pub(crate) mod core;
pub(crate) mod discovery;
pub(crate) mod event;
pub(crate) mod node;
pub(crate) mod pod;
pub(crate) mod policy;

use serde_json::Value;

use crate::Column;
use crate::timestamp::UnixNanos;

type ColumnsFn = fn() -> Vec<Column>;
type CellsFn = fn(&Value, UnixNanos) -> Vec<Value>;

pub(crate) struct Printer {
    pub(crate) columns: ColumnsFn,
    pub(crate) cells: CellsFn,
}

pub(crate) fn is_core(group: &str) -> bool {
    group.is_empty() || group == "core"
}

/// The printer for a kind, `None` where kube-apiserver falls back to its
/// default table convertor (LimitRange, CustomResourceDefinition, ...).
pub(crate) fn printer(group: &str, kind: &str) -> Option<Printer> {
    let (columns, cells): (ColumnsFn, CellsFn) =
        match (if is_core(group) { "" } else { group }, kind) {
            ("", "Pod") => (pod::columns, pod::cells),
            ("", "Node") => (node::columns, node::cells),
            ("", "Namespace") => (core::namespace_columns, core::namespace_cells),
            ("", "Service") => (core::service_columns, core::service_cells),
            ("", "Endpoints") => (core::endpoints_columns, core::endpoints_cells),
            ("", "ConfigMap") => (core::config_map_columns, core::config_map_cells),
            ("", "Secret") => (core::secret_columns, core::secret_cells),
            ("", "ServiceAccount") => (core::service_account_columns, core::service_account_cells),
            ("", "ResourceQuota") => (core::resource_quota_columns, core::resource_quota_cells),
            ("", "Event") => (event::columns, event::core_cells),
            ("events.k8s.io", "Event") => (event::columns, event::events_group_cells),
            ("apps", "Deployment") => (apps::deployment_columns, apps::deployment_cells),
            ("apps", "ReplicaSet") => (apps::replica_set_columns, apps::replica_set_cells),
            ("apps", "DaemonSet") => (apps::daemon_set_columns, apps::daemon_set_cells),
            ("apps", "StatefulSet") => (apps::stateful_set_columns, apps::stateful_set_cells),
            ("apps", "ControllerRevision") => (
                apps::controller_revision_columns,
                apps::controller_revision_cells,
            ),
            ("batch", "Job") => (batch::job_columns, batch::job_cells),
            ("batch", "CronJob") => (batch::cron_job_columns, batch::cron_job_cells),
            ("discovery.k8s.io", "EndpointSlice") => (
                discovery::endpoint_slice_columns,
                discovery::endpoint_slice_cells,
            ),
            ("coordination.k8s.io", "Lease") => {
                (coordination::lease_columns, coordination::lease_cells)
            }
            ("policy", "PodDisruptionBudget") => (
                policy::pod_disruption_budget_columns,
                policy::pod_disruption_budget_cells,
            ),
            _ => return None,
        };
    Some(Printer { columns, cells })
}
