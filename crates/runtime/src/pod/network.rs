//! The node's pod network, flannel's host-gw in miniature: a bridge holding
//! the first address of the node's pod range, pods' veths on it, forwarding
//! on, traffic from pods to outside the cluster range masqueraded, and a
//! route to every other node's pod range via that node's address.
//!
//! Rules carry the comment `shoal:BRIDGE` (the network's) or
//! `shoal:BRIDGE:POD` (a pod's hostPorts), as `shoal run`'s network rules do,
//! and are made with the same helpers. Peer routes carry the routing
//! protocol number [`ROUTE_PROTOCOL`], which is how they are found again.
//! Addresses are leased one file each under `DATA_DIR/runtime/pod-network/`.

use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::container::network::{RuleChange, apply_rules, default_route_mtu, tool, write_sysfs};
use crate::image::store::write_ephemeral;
use crate::pod::{Ipv4Cidr, PodError, PodRuntime};

/// The routing protocol number on peer routes (rtnetlink's protocol field;
/// 0-4 are the kernel's, and 90 is not used by the usual daemons).
pub const ROUTE_PROTOCOL: u8 = 90;
/// Written to the bridge's ifalias: tells our bridge from another's.
const BRIDGE_ALIAS: &str = "shoal pod network";

/// `pod-network/leases/<address>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Lease {
    pod_uid: String,
}

/// `pod-network/state.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AllocatorState {
    /// The last host index handed out; the next lease starts after it, so
    /// an address just freed is not reused at once.
    last_host: u32,
}

/// The pod network's files, locked (flock) for as long as this lives.
pub(crate) struct Leases {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Leases {
    pub(crate) fn lock(runtime: &PodRuntime) -> Result<Leases, PodError> {
        let dir = runtime.inner.runtime_root.join("pod-network");
        fs::create_dir_all(dir.join("leases"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| anyhow::anyhow!("cannot lock {}: {errno}", path.display()))?;
        Ok(Leases { dir, _lock: lock })
    }

    fn lease_path(&self, address: Ipv4Addr) -> PathBuf {
        self.dir.join("leases").join(format!("{address}.json"))
    }

    fn leases(&self) -> Result<Vec<(Ipv4Addr, Lease)>, PodError> {
        let mut leases = Vec::new();
        let dir = self.dir.join("leases");
        for entry in fs::read_dir(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .flatten()
        {
            let name = entry.file_name();
            let Some(address) = name
                .to_str()
                .and_then(|name| name.strip_suffix(".json"))
                .and_then(|address| address.parse().ok())
            else {
                continue;
            };
            let bytes = fs::read(entry.path())
                .with_context(|| format!("cannot read {}", entry.path().display()))?;
            let lease: Lease = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is corrupt", entry.path().display()))?;
            leases.push((address, lease));
        }
        Ok(leases)
    }

    /// The address leased to `pod_uid`, or a new one. Leases whose pod
    /// directory is gone (a pod removed by hand) are freed first.
    pub(crate) fn lease(&self, runtime: &PodRuntime, pod_uid: &str) -> Result<Ipv4Addr, PodError> {
        let cidr = runtime.inner.network.pod_cidr;
        let mut taken = Vec::new();
        for (address, lease) in self.leases()? {
            if lease.pod_uid == pod_uid {
                return Ok(address);
            }
            if runtime.pod_dir(&lease.pod_uid).exists() {
                taken.push(address);
            } else {
                let _ = fs::remove_file(self.lease_path(address));
            }
        }
        let state_path = self.dir.join("state.json");
        let state: AllocatorState = fs::read(&state_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        // Hosts 2 .. size-2: the network's own address, the bridge's (.1)
        // and the broadcast address are not pods'.
        let n_hosts = (cidr.size() - 3) as u32;
        let host = (0..n_hosts)
            .map(|offset| (state.last_host.saturating_sub(2) + 1 + offset) % n_hosts + 2)
            .find(|host| !taken.contains(&cidr.host(*host)))
            .ok_or_else(|| PodError::Network {
                message: format!("pod range {cidr} is full: {n_hosts} pods have addresses"),
            })?;
        let address = cidr.host(host);
        write_ephemeral(
            &self.lease_path(address),
            &serde_json::to_vec(&Lease {
                pod_uid: pod_uid.to_string(),
            })
            .context("cannot encode a lease")?,
        )?;
        write_ephemeral(
            &state_path,
            &serde_json::to_vec(&AllocatorState { last_host: host })
                .context("cannot encode the allocator state")?,
        )?;
        Ok(address)
    }

    /// Frees `pod_uid`'s address, if it has one.
    pub(crate) fn release(&self, pod_uid: &str) -> Result<(), PodError> {
        for (address, lease) in self.leases()? {
            if lease.pod_uid == pod_uid {
                match fs::remove_file(self.lease_path(address)) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => {
                        return Err(anyhow::Error::from(error)
                            .context("cannot remove a pod address lease")
                            .into());
                    }
                }
            }
        }
        Ok(())
    }
}

/// The network-wide rules, each as `(table, chain, spec)`; added with `-I`
/// for FORWARD (ahead of a distribution's DROP policy rules) and `-A`
/// elsewhere.
fn network_rules(runtime: &PodRuntime) -> Vec<(&'static str, &'static str, String)> {
    let network = &runtime.inner.network;
    let bridge = &network.bridge;
    let tag = format!("shoal:{bridge}");
    let pods = network.pod_cidr;
    let cluster = network.cluster_cidr;
    vec![
        (
            "nat",
            "POSTROUTING",
            format!("-s {pods} ! -d {cluster} -m comment --comment {tag} -j MASQUERADE"),
        ),
        // Locally originated traffic to 127.0.0.1:HOSTPORT is DNATed to a
        // pod; its loopback source must not reach the pod.
        (
            "nat",
            "POSTROUTING",
            format!("-s 127.0.0.0/8 -o {bridge} -m comment --comment {tag} -j MASQUERADE"),
        ),
        // Hairpin: a pod reaching a hostPort on its own node is answered
        // through the host.
        (
            "nat",
            "POSTROUTING",
            format!(
                "-s {pods} -o {bridge} -m conntrack --ctstate DNAT -m comment --comment {tag} -j MASQUERADE"
            ),
        ),
        (
            "filter",
            "FORWARD",
            format!("-i {bridge} -m comment --comment {tag} -j ACCEPT"),
        ),
        // Other nodes' pods reach ours unmasqueraded: no conntrack state to
        // match, so everything bound for the bridge is let through.
        (
            "filter",
            "FORWARD",
            format!("-o {bridge} -m comment --comment {tag} -j ACCEPT"),
        ),
    ]
}

/// Bridge, address, forwarding and rules, each made only if missing.
pub(crate) fn ensure(runtime: &PodRuntime) -> Result<(), PodError> {
    let network = &runtime.inner.network;
    let bridge = &network.bridge;
    let gateway = format!(
        "{}/{}",
        network.pod_cidr.host(1),
        network.pod_cidr.prefix_len
    );
    match link_alias(bridge) {
        Some(alias) if alias == BRIDGE_ALIAS => {}
        Some(alias) => {
            return Err(PodError::Network {
                message: format!(
                    "interface {bridge} exists and is not shoal's pod bridge (its alias is {alias:?}): choose another bridge name"
                ),
            });
        }
        None => {
            let mtu = network.mtu.unwrap_or_else(default_route_mtu).to_string();
            tool(
                "ip",
                &["link", "add", bridge, "mtu", &mtu, "type", "bridge"],
                None,
            )
            .map_err(PodError::network)?;
            tool("ip", &["link", "set", bridge, "alias", BRIDGE_ALIAS], None)
                .map_err(PodError::network)?;
        }
    }
    tool(
        "ip",
        &["-batch", "-"],
        Some(&format!(
            "addr replace {gateway} dev {bridge}\nlink set {bridge} up\n"
        )),
    )
    .map_err(PodError::network)?;
    write_sysfs(
        &format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
        "1",
    )
    .map_err(PodError::network)?;
    write_sysfs("/proc/sys/net/ipv4/ip_forward", "1").map_err(PodError::network)?;
    let mut missing = Vec::new();
    for (table, chain, spec) in network_rules(runtime) {
        let mut check = vec!["-w", "-t", table, "-C", chain];
        check.extend(spec.split(' '));
        if tool("iptables", &check, None).is_err() {
            let verb = if chain == "FORWARD" { "-I" } else { "-A" };
            missing.push(RuleChange::add(table, format!("{verb} {chain} {spec}")));
        }
    }
    apply_rules(&missing)
        .context("cannot add the pod network's iptables rules")
        .map_err(PodError::network)
}

/// Makes the routes to other nodes' pod ranges exactly `routes`.
pub(crate) fn set_peer_routes(routes: &[(Ipv4Cidr, Ipv4Addr)]) -> Result<(), PodError> {
    let protocol = ROUTE_PROTOCOL.to_string();
    let listing = tool(
        "ip",
        &["-j", "-4", "route", "show", "proto", &protocol],
        None,
    )
    .map_err(PodError::network)?;
    let current: Vec<serde_json::Value> = serde_json::from_str(listing.trim())
        .or_else(|_| {
            if listing.trim().is_empty() {
                Ok(Vec::new())
            } else {
                Err(())
            }
        })
        .map_err(|()| PodError::Network {
            message: "cannot parse `ip -j route`".to_string(),
        })?;
    let wanted: Vec<String> = routes.iter().map(|(cidr, _)| cidr.to_string()).collect();
    let mut batch = String::new();
    for route in &current {
        let Some(destination) = route["dst"].as_str() else {
            continue;
        };
        // `ip` shows a /32 without its length.
        let destination = if destination.contains('/') {
            destination.to_string()
        } else {
            format!("{destination}/32")
        };
        if !wanted.contains(&destination) {
            batch.push_str(&format!("route del {destination} proto {protocol}\n"));
        }
    }
    for (cidr, via) in routes {
        batch.push_str(&format!(
            "route replace {cidr} via {via} proto {protocol}\n"
        ));
    }
    if batch.is_empty() {
        return Ok(());
    }
    tool("ip", &["-batch", "-"], Some(&batch))
        .map(|_| ())
        .map_err(PodError::network)
}

/// Removes the bridge, the network's rules and the peer routes (a node
/// leaving the cluster; tests). Pods' own rules and veths go with their
/// sandboxes.
pub(crate) fn teardown(runtime: &PodRuntime) -> Result<(), PodError> {
    set_peer_routes(&[])?;
    let bridge = runtime.inner.network.bridge.clone();
    crate::container::network::delete_rules(|tag| tag == [bridge.as_str()])
        .map_err(PodError::network)?;
    if link_alias(&bridge).as_deref() == Some(BRIDGE_ALIAS) {
        delete_link(&bridge);
    }
    Ok(())
}

/// A link's alias (empty without one), or `None` when there is no such
/// link. Asked of `ip`, which answers for the caller's network namespace
/// (sysfs shows the namespace of whoever mounted it).
fn link_alias(name: &str) -> Option<String> {
    let listing = tool("ip", &["-j", "link", "show", "dev", name], None).ok()?;
    let links: Vec<serde_json::Value> = serde_json::from_str(&listing).ok()?;
    let link = links.first()?;
    Some(link["ifalias"].as_str().unwrap_or_default().to_string())
}

/// Deletes a link if it is there (in the caller's network namespace).
pub(crate) fn delete_link(name: &str) {
    if link_alias(name).is_some() {
        let _ = tool("ip", &["link", "del", name], None);
    }
}
