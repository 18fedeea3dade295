//! One module per family of workloads; each turns its flags into requests and
//! returns a `Summary`.

pub mod hollow;
mod hollow_deployment;
pub mod kube;
pub mod kv;
pub mod lease;
pub mod proxy;
pub mod watch;
