//! shoal's container runtime (rkt's role): a content-addressed image store,
//! image trust (ed25519 signatures), and isolated containers built directly
//! on Linux namespaces, overlayfs and cgroups.
//!
//! A binary that exposes the runtime must call [`reexec_dispatch`] first thing
//! in `main`: containers start by re-executing the binary as their init.

pub mod cli;
pub mod container;
pub mod digest;
pub mod image;
pub mod pod;
pub mod quantity;
pub mod trust;

use std::process::ExitCode;

pub use cli::{
    Command, ImageArgs, LogsArgs, PsArgs, RmArgs, RunArgs, StopArgs, TrustArgs, run_command,
    run_image, run_logs, run_ps, run_rm, run_run, run_stop, run_trust,
};

/// When this process is a container's init, a detached container's
/// monitor (shoal re-executed by `run` or a pod's start) or a pod's exec
/// helper, does that job and returns the exit
/// code; otherwise returns `None` at once.
pub fn reexec_dispatch() -> Option<ExitCode> {
    if let Ok(spec) = std::env::var(container::run::INIT_ENV) {
        return Some(ExitCode::from(container::init::main(&spec)));
    }
    if let Ok(argument) = std::env::var(container::run::MONITOR_ENV) {
        return Some(container::run::monitor_main(&argument));
    }
    if let Ok(spec) = std::env::var(pod::EXEC_ENV) {
        return Some(ExitCode::from(pod::exec_main(&spec)));
    }
    None
}
