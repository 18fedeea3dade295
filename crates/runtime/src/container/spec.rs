//! What the container's init needs to know, handed from `shoal run` to the
//! init process (shoal itself, re-executed) as JSON in an environment
//! variable. Also the parsing of the run flags that end up here.

use std::path::PathBuf;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::container::network::Attachment;
use crate::container::seccomp::Seccomp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// The container's own network namespace with `eth0` on shoal's bridge:
    /// an address on a private subnet, the host as its gateway.
    Default,
    /// Only loopback, in the container's own network namespace.
    None,
    /// The host's network stack.
    Host,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub host_path: PathBuf,
    pub container_path: PathBuf,
    pub read_only: bool,
}

impl Volume {
    /// Parses `HOST:CONTAINER[:ro|:rw]`; both paths absolute.
    pub fn parse(text: &str) -> anyhow::Result<Volume> {
        let parts: Vec<&str> = text.split(':').collect();
        let (host, container, read_only) = match parts.as_slice() {
            [host, container] => (*host, *container, false),
            [host, container, "ro"] => (*host, *container, true),
            [host, container, "rw"] => (*host, *container, false),
            _ => bail!("invalid --volume {text:?}: expected HOST:CONTAINER[:ro]"),
        };
        if !host.starts_with('/') || !container.starts_with('/') {
            bail!("invalid --volume {text:?}: both paths must be absolute");
        }
        if container.split('/').any(|component| component == "..") {
            bail!("invalid --volume {text:?}: the container path may not contain '..'");
        }
        Ok(Volume {
            host_path: host.into(),
            container_path: container.into(),
            read_only,
        })
    }
}

/// Everything the init does, decided by the parent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InitSpec {
    /// How the user named the image, for error messages.
    pub image_name: String,
    /// Unpacked layer directory names under `layers_root`, top layer first.
    pub layers_root: PathBuf,
    pub layers: Vec<String>,
    /// shoal's own bottom layer: empty `proc`, `dev` and `sys` directories,
    /// so mounting there needs no copy-up into the container's upper layer
    /// (which would be disk writes on every start).
    #[serde(default)]
    pub mount_point_layer: Option<PathBuf>,
    /// The container's directory: `upper/`, `work/` and `rootfs/` live here.
    pub container_dir: PathBuf,
    pub hostname: String,
    pub net: NetMode,
    /// With `--net=default`: the address, bridge and veth the parent sets
    /// up before it starts the init.
    #[serde(default)]
    pub network: Option<Attachment>,
    pub cgroups: Vec<PathBuf>,
    pub volumes: Vec<Volume>,
    pub read_only_rootfs: bool,
    /// The program and its arguments; the program is looked up in the
    /// container's PATH when it has no '/'.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: String,
    /// `uid[:gid]` or `name[:group]`, resolved inside the container; empty
    /// for root.
    pub user: String,
    /// The inherited file descriptor the init reports failures on (closed on
    /// a successful exec).
    pub status_fd: i32,
    /// A pod's container joins its pod's pinned namespaces instead of making
    /// its own network, IPC and UTS namespaces.
    #[serde(default)]
    pub pod: Option<PodNamespaces>,
    /// Every capability, the host's devices, /sys writable, /proc unmasked.
    #[serde(default)]
    pub privileged: bool,
    /// Capabilities (`CAP_NET_ADMIN`, or `ALL` to drop) on top of, or taken
    /// from, the default set.
    #[serde(default)]
    pub capabilities_add: Vec<String>,
    #[serde(default)]
    pub capabilities_drop: Vec<String>,
    /// Group ids the app gets besides those of its user.
    #[serde(default)]
    pub supplemental_groups: Vec<u32>,
    /// A pod container's stdin is a pipe its monitor feeds from attached
    /// clients (else /dev/null).
    #[serde(default)]
    pub stdin: bool,
    /// The first attached client to leave closes the app's stdin
    /// (Kubernetes' `stdinOnce`).
    #[serde(default)]
    pub stdin_once: bool,
    /// A pod container's stdio is a pseudo-terminal, its controlling
    /// terminal, held by its monitor.
    #[serde(default)]
    pub terminal: bool,
    /// The system calls the app may make (none filtered when privileged).
    #[serde(default)]
    pub seccomp: Seccomp,
    /// Leave `no_new_privs` off (Kubernetes' `allowPrivilegeEscalation:
    /// true`): setuid binaries and file capabilities work. A seccomp filter
    /// sets it regardless (an unprivileged process needs it to install
    /// one), so this holds with `Unconfined` only.
    #[serde(default)]
    pub allow_privilege_escalation: bool,
}

/// The pinned namespace files of a pod (bind mounts of nsfs files) a
/// container's init joins; `None` is the host's (a host-network pod shares
/// the host's network and hostname).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse() {
        assert_eq!(
            Volume::parse("/srv/data:/data:ro").unwrap(),
            Volume {
                host_path: "/srv/data".into(),
                container_path: "/data".into(),
                read_only: true
            }
        );
        assert!(!Volume::parse("/a:/b").unwrap().read_only);
        for bad in ["/a", "a:/b", "/a:b", "/a:/b:rx", "/a:/../etc"] {
            assert!(Volume::parse(bad).is_err(), "{bad}");
        }
    }
}
