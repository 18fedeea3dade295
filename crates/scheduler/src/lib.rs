//! shoal's scheduler, in kube-scheduler's role: it watches pods that no node
//! has yet and binds each to a node through `pods/binding`.
//!
//! `core` decides (a sans-IO cluster model with kube-scheduler's filters and
//! scores); `driver` does the I/O (watches, the queue of pods to place,
//! bindings, events) while `leader` holds the `kube-system/kube-scheduler`
//! Lease, so any server may run the scheduler and only one binds.

pub mod core;

pub use core::{Cluster, Placement, Unschedulable};
