//! A pod's sandbox: network, IPC and UTS namespaces its containers share,
//! pinned by bind-mounting their nsfs files under
//! `DATA_DIR/runtime/pods/<uid>/ns/` (as `ip netns add` does).
//!
//! Why bind mounts and not a pause process: nothing has to run, be
//! supervised or be adopted after an agent restart for the namespaces to
//! live; they last until `remove_sandbox` unmounts them (or a reboot, after
//! which the sandbox is recreated), and a container joins them by opening a
//! file. The namespaces are made by a short-lived thread of the caller that
//! unshares them, wires the veth, sets the hostname, mounts the pins and
//! ends.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use serde::{Deserialize, Serialize};

use crate::container::netlink;
use crate::container::network::{self, Attachment, PortMapping};
use crate::container::spec::PodNamespaces;
use crate::container::state::now_unix_ms;
use crate::image::store::write_ephemeral;
use crate::pod::network::Leases;
use crate::pod::{PodError, PodRuntime, SandboxInfo, SandboxRecord, SandboxSpec, check_uid};

/// `pods/<uid>/sandbox.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SandboxState {
    pub(crate) uid: String,
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) hostname: String,
    pub(crate) host_network: bool,
    pub(crate) ip: Option<Ipv4Addr>,
    pub(crate) host_veth: Option<String>,
    pub(crate) port_mappings: Vec<PortMapping>,
    pub(crate) created_unix_ms: u64,
}

const NAMESPACES: [(&str, CloneFlags); 3] = [
    ("net", CloneFlags::CLONE_NEWNET),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
];

impl PodRuntime {
    fn sandbox_path(&self, pod_uid: &str) -> PathBuf {
        self.pod_dir(pod_uid).join("sandbox.json")
    }

    pub(crate) fn load_sandbox(&self, pod_uid: &str) -> Result<SandboxState, PodError> {
        let path = self.sandbox_path(pod_uid);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(PodError::SandboxNotFound {
                    pod_uid: pod_uid.to_string(),
                });
            }
            Err(error) => {
                return Err(anyhow::Error::from(error)
                    .context(format!("cannot read {}", path.display()))
                    .into());
            }
        };
        Ok(serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is corrupt", path.display()))?)
    }

    /// The pinned namespaces a container of the pod joins.
    pub(crate) fn pod_namespaces(&self, sandbox: &SandboxState) -> PodNamespaces {
        let ns = self.pod_dir(&sandbox.uid).join("ns");
        PodNamespaces {
            net: (!sandbox.host_network).then(|| ns.join("net")),
            ipc: Some(ns.join("ipc")),
            uts: (!sandbox.host_network).then(|| ns.join("uts")),
        }
    }

    /// Creates the pod's sandbox, or finds the one it has (by uid).
    pub fn create_sandbox(&self, spec: &SandboxSpec) -> Result<SandboxInfo, PodError> {
        check_uid(&spec.uid)?;
        let hostname = spec.hostname.clone().unwrap_or_else(|| spec.name.clone());
        if hostname.is_empty() || hostname.len() > 64 {
            return Err(PodError::invalid(
                "hostname",
                format!("{hostname:?}: it must have 1-64 characters"),
            ));
        }
        let leases = Leases::lock(self)?;
        if let Ok(existing) = self.load_sandbox(&spec.uid) {
            if self.namespaces_pinned(&existing) {
                return Ok(SandboxInfo { ip: existing.ip });
            }
            // The pins are gone (a reboot): what is left is cleared and the
            // sandbox made again, with the same address when it is free.
            self.teardown(&existing, &leases)?;
        }
        let dir = self.pod_dir(&spec.uid);
        let ns_dir = dir.join("ns");
        fs::create_dir_all(&ns_dir)
            .with_context(|| format!("cannot create {}", ns_dir.display()))?;
        let mut state = SandboxState {
            uid: spec.uid.clone(),
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            hostname,
            host_network: spec.host_network,
            ip: None,
            host_veth: None,
            port_mappings: spec.port_mappings.clone(),
            created_unix_ms: now_unix_ms(),
        };
        let made = self.make_sandbox(&mut state, &leases);
        if let Err(error) = made {
            let _ = self.teardown(&state, &leases);
            return Err(error);
        }
        Ok(SandboxInfo { ip: state.ip })
    }

    fn make_sandbox(&self, state: &mut SandboxState, leases: &Leases) -> Result<(), PodError> {
        let network = &self.inner.network;
        let attachment = if state.host_network {
            None
        } else {
            let address = leases.lease(self, &state.uid)?;
            state.ip = Some(address);
            let host_veth = format!("vp{}", super::pod_short_id(&state.uid));
            state.host_veth = Some(host_veth.clone());
            Some(Attachment {
                bridge: network.bridge.clone(),
                address,
                prefix_len: network.pod_cidr.prefix_len,
                gateway: network.pod_cidr.host(1),
                host_veth,
                mtu: network.mtu.unwrap_or_else(network::default_route_mtu),
                ports: state.port_mappings.clone(),
            })
        };
        // Saved first, so that a failure half-way is torn down by
        // `remove_sandbox` even after a crash.
        self.save_sandbox(state)?;
        let ns_dir = self.pod_dir(&state.uid).join("ns");
        let host_network = state.host_network;
        let hostname = state.hostname.clone();
        let thread_attachment = attachment.clone();
        let pinned = std::thread::Builder::new()
            .name("pod-sandbox".into())
            .spawn(move || pin_namespaces(&ns_dir, host_network, &hostname, thread_attachment))
            .context("cannot start a thread")?
            .join()
            .map_err(|_| anyhow::anyhow!("the sandbox thread panicked"))?;
        pinned.map_err(|error| PodError::Network {
            message: format!("cannot create the pod's namespaces: {error:#}"),
        })?;
        if let Some(attachment) = &attachment
            && !attachment.ports.is_empty()
        {
            check_host_ports_free(&attachment.ports)?;
            network::publish(attachment, &super::pod_short_id(&state.uid))
                .map_err(PodError::network)?;
        }
        Ok(())
    }

    fn save_sandbox(&self, state: &SandboxState) -> Result<(), PodError> {
        Ok(write_ephemeral(
            &self.sandbox_path(&state.uid),
            &serde_json::to_vec_pretty(state).context("cannot encode a sandbox")?,
        )?)
    }

    fn namespaces_pinned(&self, state: &SandboxState) -> bool {
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let pins = self.pod_namespaces(state);
        [pins.net, pins.ipc, pins.uts]
            .into_iter()
            .flatten()
            .all(|path| is_mount_point(&mounts, &path))
    }

    /// Removes everything the pod left on the machine: its containers
    /// (killed), their cgroups and records, its hostPort rules, veth,
    /// address lease, pinned namespaces, logs and directory. Idempotent.
    pub fn remove_sandbox(&self, pod_uid: &str) -> Result<(), PodError> {
        check_uid(pod_uid)?;
        for record in self.containers_of(pod_uid)? {
            self.kill_and_remove(&record)?;
        }
        crate::container::cgroup::remove_group(&super::container::pod_cgroup_group(pod_uid));
        let leases = Leases::lock(self)?;
        match self.load_sandbox(pod_uid) {
            Ok(state) => self.teardown(&state, &leases),
            Err(PodError::SandboxNotFound { .. }) => {
                // Nothing recorded; a lease or directory may still be left
                // by a crash in the middle of a create.
                leases.release(pod_uid)?;
                remove_pod_dir(&self.pod_dir(pod_uid))
            }
            Err(error) => Err(error),
        }
    }

    fn teardown(&self, state: &SandboxState, leases: &Leases) -> Result<(), PodError> {
        let short = super::pod_short_id(&state.uid);
        let bridge = self.inner.network.bridge.clone();
        if !state.port_mappings.is_empty() {
            network::delete_rules(|tag| tag == [bridge.as_str(), short.as_str()])
                .map_err(PodError::network)?;
        }
        if let Some(veth) = &state.host_veth {
            // It goes with the network namespace, but the kernel frees
            // namespaces lazily: deleted now, so its name is free at once.
            super::network::delete_link(veth);
        }
        let ns_dir = self.pod_dir(&state.uid).join("ns");
        for (name, _) in NAMESPACES {
            let path = ns_dir.join(name);
            let _ = umount2(&path, MntFlags::MNT_DETACH);
        }
        leases.release(&state.uid)?;
        remove_pod_dir(&self.pod_dir(&state.uid))
    }

    /// A connection to `port` on the pod's loopback (`kubectl
    /// port-forward`): made from inside the pod's network namespace, so it
    /// reaches ports bound to 127.0.0.1 too.
    pub fn port_forward(&self, pod_uid: &str, port: u16) -> Result<TcpStream, PodError> {
        check_uid(pod_uid)?;
        let sandbox = self.load_sandbox(pod_uid)?;
        let namespace = self
            .pod_namespaces(&sandbox)
            .net
            .map(|path| {
                File::open(&path).with_context(|| {
                    format!("the pod's network namespace {} is gone", path.display())
                })
            })
            .transpose()?;
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let connected = std::thread::Builder::new()
            .name("pod-port-forward".into())
            .spawn(move || -> anyhow::Result<TcpStream> {
                // The socket keeps the namespace it was made in; the thread
                // that entered it ends here.
                if let Some(namespace) = &namespace {
                    nix::sched::setns(namespace, CloneFlags::CLONE_NEWNET)
                        .context("cannot enter the pod's network namespace")?;
                }
                Ok(TcpStream::connect_timeout(&target, Duration::from_secs(5))?)
            })
            .context("cannot start a thread")?
            .join()
            .map_err(|_| anyhow::anyhow!("the port-forward thread panicked"))?;
        connected.map_err(|error| PodError::PortForward {
            pod: format!("{}/{}", sandbox.namespace, sandbox.name),
            port,
            message: format!("{error:#}"),
        })
    }

    /// Every sandbox on the machine with its containers.
    pub fn list(&self) -> Result<Vec<SandboxRecord>, PodError> {
        let mut records = Vec::new();
        let all_containers = self.all_containers()?;
        let dir = self.pods_dir();
        for entry in fs::read_dir(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .flatten()
        {
            let Some(uid) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            // A directory without its record is a create in progress.
            let Ok(state) = self.load_sandbox(&uid) else {
                continue;
            };
            records.push(SandboxRecord {
                uid: state.uid.clone(),
                name: state.name.clone(),
                namespace: state.namespace.clone(),
                host_network: state.host_network,
                ip: state.ip,
                host_interface: state.host_veth.clone(),
                port_mappings: state.port_mappings.clone(),
                created_at: UNIX_EPOCH + Duration::from_millis(state.created_unix_ms),
                containers: all_containers
                    .iter()
                    .filter(|(pod_uid, _)| *pod_uid == state.uid)
                    .map(|(_, record)| record.clone())
                    .collect(),
            });
        }
        records.sort_by_key(|record| record.created_at);
        Ok(records)
    }
}

/// A hostPort is published once on the machine: not twice by one pod, and
/// not by two pods or `shoal run` containers (whose DNAT rules would race).
fn check_host_ports_free(ports: &[PortMapping]) -> Result<(), PodError> {
    for (index, port) in ports.iter().enumerate() {
        if ports[..index]
            .iter()
            .any(|earlier| earlier.host_port == port.host_port && earlier.protocol == port.protocol)
        {
            return Err(PodError::invalid(
                "hostPort",
                format!(
                    "{}/{} is mapped twice",
                    port.host_port,
                    port.protocol.as_str()
                ),
            ));
        }
    }
    let rules = network::list_rules().map_err(PodError::network)?;
    for port in ports {
        let taken = rules.iter().any(|(table, rule)| {
            *table == "nat"
                && rule.chain() == "PREROUTING"
                && rule.tag().is_some_and(|tag| tag.len() == 2)
                && rule.option("-p") == Some(port.protocol.as_str())
                && rule.option("--dport") == Some(port.host_port.to_string().as_str())
        });
        if taken {
            return Err(PodError::Network {
                message: format!(
                    "host port {}/{} is already published on this node",
                    port.host_port,
                    port.protocol.as_str()
                ),
            });
        }
    }
    Ok(())
}

/// Run on a thread of its own: unshares the namespaces, wires the network,
/// names the host and pins the namespaces. The thread then ends; the pins
/// keep the namespaces.
fn pin_namespaces(
    ns_dir: &Path,
    host_network: bool,
    hostname: &str,
    attachment: Option<Attachment>,
) -> anyhow::Result<()> {
    let host_net = File::open("/proc/thread-self/ns/net")
        .context("cannot open this thread's network namespace")?;
    let flags = if host_network {
        CloneFlags::CLONE_NEWIPC
    } else {
        CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS
    };
    unshare(flags).context("cannot create namespaces")?;
    if !host_network {
        nix::unistd::sethostname(hostname).context("cannot set the hostname")?;
        netlink::loopback_up()?;
        if let Some(attachment) = &attachment {
            let pod_net = File::open("/proc/thread-self/ns/net")
                .context("cannot open the new network namespace")?;
            network::connect(attachment, &host_net, &pod_net).with_context(|| {
                format!("cannot connect the pod to bridge {}", attachment.bridge)
            })?;
        }
    }
    for (name, _) in NAMESPACES {
        if host_network && name != "ipc" {
            continue;
        }
        let pin = ns_dir.join(name);
        File::create(&pin).with_context(|| format!("cannot create {}", pin.display()))?;
        mount(
            Some(Path::new(&format!("/proc/thread-self/ns/{name}"))),
            &pin,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("cannot pin the {name} namespace at {}", pin.display()))?;
    }
    Ok(())
}

/// Whether `path` is a mount point in `mountinfo` (this process's).
pub(crate) fn is_mount_point(mountinfo: &str, path: &Path) -> bool {
    let wanted = path.to_string_lossy();
    mountinfo.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mount_point| unescape_mount_path(mount_point) == wanted)
    })
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape_mount_path(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(character) = chars.next() {
        if character == '\\' {
            let digits: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&digits, 8) {
                Ok(byte) => out.push(byte as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&digits);
                }
            }
        } else {
            out.push(character);
        }
    }
    out
}

fn remove_pod_dir(dir: &Path) -> Result<(), PodError> {
    // The pins are unmounted (lazily) before this; a pin that is still a
    // mount point would make the removal fail, which is reported.
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(anyhow::Error::from(error)
            .context(format!("cannot remove {}", dir.display()))
            .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_found_in_mountinfo_with_escapes() {
        let mountinfo = "36 35 98:0 / /mnt/a\\040b rw - ext3 /dev/root rw\n\
                         40 35 0:4 net:[4026532] /data/pods/x/ns/net rw - nsfs nsfs rw\n";
        assert!(is_mount_point(mountinfo, Path::new("/mnt/a b")));
        assert!(is_mount_point(mountinfo, Path::new("/data/pods/x/ns/net")));
        assert!(!is_mount_point(mountinfo, Path::new("/data/pods/x/ns/ipc")));
    }
}
