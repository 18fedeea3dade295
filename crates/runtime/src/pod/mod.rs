//! Pods as library calls for the node agent (the kubelet's runtime, as CRI
//! is to containerd): a sandbox of shared network, IPC and UTS namespaces
//! per pod, containers started in it under the runtime's monitor process,
//! their status, stop, exec and CRI-format logs, the node's pod network
//! (bridge, masquerade, routes to other nodes) and images by pull policy.
//!
//! State lives beside the `shoal run` containers' so the two share one
//! image store and one `image gc`:
//!
//! ```text
//! DATA_DIR/runtime/
//!   containers/<id>/          a pod's containers, as `shoal ps` shows them
//!   pods/<uid>/sandbox.json   the sandbox: name, namespace, address, ports
//!   pods/<uid>/ns/{net,ipc,uts}  the pinned namespaces (nsfs bind mounts)
//!   pods/<uid>/logs/<container>/<attempt>.log   CRI-format logs
//!   pod-network/leases/<address>.json           address leases
//!   pod-network/state.json    the last address handed out
//! ```
//!
//! Nothing here prints or exits; every failure is a [`PodError`].

pub(crate) mod attach;
mod container;
pub(crate) mod exec;
mod image;
pub mod log;
mod network;
mod sandbox;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use crate::container::cgroup::Usage;
pub use crate::container::network::{PortMapping, Protocol};
pub use crate::container::seccomp::{Profile as SeccompProfile, Seccomp};
pub use attach::AttachSession;
pub use exec::{EXEC_ENV, EXEC_OUTPUT_LIMIT, ExecOutput, ExecProcess, main as exec_main};
pub use image::{ImageInfo, PullPolicy, RegistryAuth};
pub use network::ROUTE_PROTOCOL;

/// What went wrong, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("image {image} is not present on this node and its pull policy is Never")]
    ImageNotPresent { image: String },
    #[error("cannot pull image {image}: {message}")]
    ImagePull { image: String, message: String },
    #[error("image {image}: signature check failed: {message}")]
    SignatureCheck { image: String, message: String },
    #[error("image {image} is corrupt: {message}")]
    ImageCorrupt { image: String, message: String },
    /// The container's record stays (as exited, reason
    /// `ContainerCannotRun`) under `id`.
    #[error("container {container} cannot run: {message}")]
    ContainerCannotRun {
        id: ContainerId,
        container: String,
        exit_code: i32,
        message: String,
    },
    #[error("pod {pod_uid} has no sandbox on this node")]
    SandboxNotFound { pod_uid: String },
    #[error("container {id} not found")]
    ContainerNotFound { id: ContainerId },
    #[error("container {id} is not running")]
    ContainerNotRunning { id: ContainerId },
    #[error("command in container {id} timed out after {seconds}s")]
    ExecTimeout { id: ContainerId, seconds: f64 },
    #[error("cannot connect to port {port} of pod {pod}: {message}")]
    PortForward {
        pod: String,
        port: u16,
        message: String,
    },
    #[error("invalid {what}: {message}")]
    Invalid { what: String, message: String },
    #[error("pod network: {message}")]
    Network { message: String },
    #[error("{0:#}")]
    Runtime(#[from] anyhow::Error),
}

impl PodError {
    fn invalid(what: impl Into<String>, message: impl Into<String>) -> PodError {
        PodError::Invalid {
            what: what.into(),
            message: message.into(),
        }
    }

    fn network(error: anyhow::Error) -> PodError {
        PodError::Network {
            message: format!("{error:#}"),
        }
    }
}

/// An IPv4 range, `10.42.3.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ipv4Cidr {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    pub fn new(address: Ipv4Addr, prefix_len: u8) -> Result<Ipv4Cidr, PodError> {
        if prefix_len > 32 {
            return Err(PodError::invalid(
                "CIDR",
                format!("{address}/{prefix_len}: the prefix length is over 32"),
            ));
        }
        Ok(Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(address) & Self::mask(prefix_len)),
            prefix_len,
        })
    }

    fn mask(prefix_len: u8) -> u32 {
        if prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix_len))
        }
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & Self::mask(self.prefix_len) == u32::from(self.network)
    }

    /// The `index`th address of the range (0 is the network's own).
    pub fn host(&self, index: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + index)
    }

    /// Addresses in the range, network and broadcast included.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = PodError;

    fn from_str(text: &str) -> Result<Ipv4Cidr, PodError> {
        let bad = || PodError::invalid("CIDR", format!("{text:?}: expected ADDRESS/PREFIX"));
        let (address, prefix_len) = text.split_once('/').ok_or_else(bad)?;
        Ipv4Cidr::new(
            address.parse().map_err(|_| bad())?,
            prefix_len.parse().map_err(|_| bad())?,
        )
    }
}

/// The node's share of the cluster's pod network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetwork {
    /// The bridge pods' veths join (`shoal0`).
    pub bridge: String,
    /// This node's pod range; the bridge holds its first address.
    pub pod_cidr: Ipv4Cidr,
    /// Every node's pod range together: traffic to it is not masqueraded.
    pub cluster_cidr: Ipv4Cidr,
    /// The pods' MTU (default: the MTU of the host's default route).
    pub mtu: Option<u32>,
}

/// What a pod's sandbox is made of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// The pod's hostname (default: its name).
    pub hostname: Option<String>,
    /// The host's network namespace and hostname instead of the pod's own.
    pub host_network: bool,
    /// hostPort mappings, DNAT rules from the host to the pod's address.
    pub port_mappings: Vec<PortMapping>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxInfo {
    /// The pod's address on the pod network; `None` with the host's network
    /// (the pod's IP is then the node's).
    pub ip: Option<Ipv4Addr>,
}

/// A sandbox on this machine, with its containers.
#[derive(Clone, Debug)]
pub struct SandboxRecord {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub host_network: bool,
    pub ip: Option<Ipv4Addr>,
    /// The host's end of the pod's veth.
    pub host_interface: Option<String>,
    pub port_mappings: Vec<PortMapping>,
    pub created_at: SystemTime,
    pub containers: Vec<ContainerRecord>,
}

#[derive(Clone, Debug)]
pub struct ContainerRecord {
    pub id: ContainerId,
    /// The name in the pod spec.
    pub name: String,
    pub attempt: u32,
    /// The resolved image id (`sha256:…`).
    pub image: String,
    pub status: ContainerStatus,
}

/// A container instance's id (32 hex digits), as `shoal ps` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContainerId(pub String);

impl fmt::Display for ContainerId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    Completed,
    Error,
    OomKilled,
    ContainerCannotRun,
}

impl ExitReason {
    /// The reason text Kubernetes shows in a terminated container's state.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Completed => "Completed",
            ExitReason::Error => "Error",
            ExitReason::OomKilled => "OOMKilled",
            ExitReason::ContainerCannotRun => "ContainerCannotRun",
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerStatus {
    Created,
    Running {
        pid: i32,
        started_at: SystemTime,
    },
    Exited {
        exit_code: i32,
        /// The signal that killed it, when one did.
        signal: Option<i32>,
        reason: ExitReason,
        message: String,
        started_at: Option<SystemTime>,
        finished_at: SystemTime,
    },
}

/// A host path bind-mounted into a container (volumes the agent prepared).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: PathBuf,
    pub read_only: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// `requests.cpu`: the CPU weight under contention (cpu.shares).
    pub cpu_request_millis: Option<u64>,
    /// `limits.cpu`: the CFS quota.
    pub cpu_limit_millis: Option<u64>,
    /// `limits.memory`: over it, the OOM killer.
    pub memory_limit_bytes: Option<u64>,
}

/// One container of a pod, as the agent has worked it out from the pod
/// spec and the image's config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    /// The resolved image id, from [`PodRuntime::ensure_image`].
    pub image: String,
    /// The final argv (command and args already merged with the image's
    /// Entrypoint and Cmd).
    pub args: Vec<String>,
    /// Set on top of the image's Env.
    pub env: Vec<(String, String)>,
    /// Default: the image's WorkingDir, else `/`.
    pub working_dir: Option<String>,
    /// Default: the image's User.
    pub user: Option<u32>,
    pub group: Option<u32>,
    pub supplemental_groups: Vec<u32>,
    pub read_only_rootfs: bool,
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    pub privileged: bool,
    pub mounts: Vec<Mount>,
    pub resources: Resources,
    /// The restart count: names this instance (and its log file).
    pub attempt: u32,
    /// The app's stdio is a pseudo-terminal (`tty: true`), which
    /// [`PodRuntime::attach`] reaches.
    pub tty: bool,
    /// The app's stdin is fed by [`PodRuntime::attach`] (else /dev/null).
    pub stdin: bool,
    /// The system calls the app may make: `RuntimeDefault` unless the pod
    /// asks otherwise (the kubelet's default is `Unconfined`; shoal's is
    /// the safe one).
    pub seccomp: Seccomp,
    /// `allowPrivilegeEscalation: true`: no `no_new_privs` (see
    /// [`crate::container::spec::InitSpec::allow_privilege_escalation`]).
    pub allow_privilege_escalation: bool,
}

/// What [`PodRuntime::start_container_with`] takes beyond the spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// The first attach session to end closes the app's stdin
    /// (Kubernetes' `stdinOnce`).
    pub stdin_once: bool,
}

/// Options of a node's runtime beyond its data directory and network.
#[derive(Clone, Debug, Default)]
pub struct PodRuntimeOptions {
    /// The binary re-executed as a container's monitor, init and exec
    /// helper; its `main` must call [`crate::reexec_dispatch`] first.
    /// Default: this process's own binary (`/proc/self/exe`).
    pub executable: Option<PathBuf>,
    /// Registries (`HOST[:PORT]`) spoken to over plain http.
    pub insecure_registries: Vec<String>,
    /// A container's log is rotated (to `<attempt>.log.1`) past this size;
    /// default [`log::DEFAULT_MAX_LOG_BYTES`] (10 MiB).
    pub log_max_bytes: Option<u64>,
    /// The most processes a pod may have, all its containers together (the
    /// kubelet's `--pod-pids-limit`); `None` for no limit.
    pub pod_pids_limit: Option<u64>,
}

/// The node's pod runtime; cheap to clone (one shared state).
#[derive(Clone, Debug)]
pub struct PodRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    data_dir: PathBuf,
    runtime_root: PathBuf,
    network: PodNetwork,
    options: PodRuntimeOptions,
}

impl PodRuntime {
    /// Opens the runtime of the node whose data directory is `data_dir`.
    pub fn open(data_dir: &Path, network: PodNetwork) -> Result<PodRuntime, PodError> {
        PodRuntime::open_with(data_dir, network, PodRuntimeOptions::default())
    }

    pub fn open_with(
        data_dir: &Path,
        network: PodNetwork,
        options: PodRuntimeOptions,
    ) -> Result<PodRuntime, PodError> {
        if network.bridge.is_empty()
            || network.bridge.len() > 15
            || !network
                .bridge
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        {
            return Err(PodError::invalid(
                "bridge name",
                format!("{:?}: use 1-15 letters, digits, '-' or '_'", network.bridge),
            ));
        }
        if network.pod_cidr.prefix_len > 30 {
            return Err(PodError::invalid(
                "pod CIDR",
                format!("{} holds no pod address", network.pod_cidr),
            ));
        }
        let store = crate::image::store::Store::open(data_dir)?;
        let runtime_root = store.root().to_path_buf();
        for dir in [runtime_root.join("pods"), runtime_root.join("pod-network")] {
            std::fs::create_dir_all(&dir)
                .map_err(|error| anyhow::anyhow!("cannot create {}: {error}", dir.display()))?;
        }
        Ok(PodRuntime {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                runtime_root,
                network,
                options,
            }),
        })
    }

    pub fn network(&self) -> &PodNetwork {
        &self.inner.network
    }

    /// Sets up the node's pod network: the bridge with the first address
    /// of the pod range, forwarding on, masquerade for pod traffic leaving
    /// the cluster range. Idempotent; called at agent start.
    pub fn ensure_network(&self) -> Result<(), PodError> {
        network::ensure(self)
    }

    /// Makes the routes to other nodes' pod ranges exactly `routes`
    /// (`(range, node address)`); routes of nodes no longer listed go.
    pub fn set_peer_routes(&self, routes: &[(Ipv4Cidr, Ipv4Addr)]) -> Result<(), PodError> {
        network::set_peer_routes(routes)
    }

    /// Undoes [`ensure_network`](Self::ensure_network) and the peer routes.
    pub fn teardown_network(&self) -> Result<(), PodError> {
        network::teardown(self)
    }

    fn executable(&self) -> &Path {
        self.inner
            .options
            .executable
            .as_deref()
            .unwrap_or(Path::new("/proc/self/exe"))
    }

    fn pods_dir(&self) -> PathBuf {
        self.inner.runtime_root.join("pods")
    }

    fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.pods_dir().join(pod_uid)
    }
}

/// A pod uid becomes a directory name: nothing that could climb out.
fn check_uid(pod_uid: &str) -> Result<(), PodError> {
    if pod_uid.is_empty()
        || pod_uid.len() > 128
        || !pod_uid
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    {
        return Err(PodError::invalid(
            "pod uid",
            format!("{pod_uid:?}: expected letters, digits, '-' and '_'"),
        ));
    }
    Ok(())
}

/// 12 hex digits naming a pod in its veth and iptables rules.
fn pod_short_id(pod_uid: &str) -> String {
    crate::digest::Digest::of_bytes(pod_uid.as_bytes()).hex()[..12].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_contain() {
        let cidr: Ipv4Cidr = "10.42.3.7/24".parse().unwrap();
        assert_eq!(cidr.to_string(), "10.42.3.0/24");
        assert!(cidr.contains(Ipv4Addr::new(10, 42, 3, 200)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 42, 4, 1)));
        assert_eq!(cidr.host(1), Ipv4Addr::new(10, 42, 3, 1));
        assert_eq!(cidr.size(), 256);
        for bad in ["10.42.3.0", "10.42.3.0/33", "x/24", "10.42.3.0/"] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
        let everything: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(everything.contains(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn pod_short_ids_are_hex_and_stable() {
        let short = pod_short_id("2b1f6c3e-0d7a-4b8e-9a55-7c1e2f3a4b5c");
        assert_eq!(short.len(), 12);
        assert!(short.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_eq!(short, pod_short_id("2b1f6c3e-0d7a-4b8e-9a55-7c1e2f3a4b5c"));
        assert_ne!(short, pod_short_id("another"));
        assert!(check_uid("../etc").is_err());
        assert!(check_uid("2b1f6c3e-0d7a").is_ok());
    }
}
