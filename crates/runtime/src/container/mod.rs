//! Containers: the init that builds one, the cgroups that limit it, and the
//! records and supervision that `run`, `ps`, `logs`, `stop` and `rm` share.

pub mod cgroup;
pub mod init;
pub mod netlink;
pub mod network;
pub mod run;
pub mod seccomp;
pub mod spec;
pub mod state;
mod syscalls_x86_64;
