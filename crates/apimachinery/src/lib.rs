//! Kubernetes API machinery for shoal's API server and controllers: label and
//! field selectors, and the three patch formats (JSON patch, JSON merge patch,
//! strategic merge patch) over `serde_json::Value`.
//!
//! The crate is pure: no I/O, no async, no global state. Every input, however
//! malformed, gives a value or a typed error; nothing here panics or prints.
//! Error texts follow kube-apiserver's wording where clients may show or match
//! them.

pub mod fields;
pub mod labels;
pub mod patch;
