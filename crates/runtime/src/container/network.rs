//! `--net=default`: each container gets a veth pair, one end (`eth0`) in
//! its own network namespace with an address on a private /24, the other on
//! a bridge of the host; egress is masqueraded; `-p HOSTPORT:CONTAINERPORT`
//! publishes a port with DNAT rules.
//!
//! The network is per data directory (`DATA_DIR/runtime/network/`):
//! `network.json` names its bridge (`shoal0`, or the next free `shoalN`) and
//! subnet, and `leases/<address>.json` holds one lease per container (its
//! address, host-side veth and published ports). The bridge, its rules and
//! `network.json` are made when the first container needs them and removed
//! with the last lease, so a data directory with no container on the network
//! leaves nothing in the kernel.
//!
//! The subnet is the first 10.89.N.0/24 (N = 0, 1, … 255) that overlaps no
//! route in any of the kernel's routing tables (the default route aside)
//! and no address of any interface; the bridge holds .1, containers get
//! .2–.254. A /24 is a Kubernetes node's default pod range (and 10.89 sits
//! next to podman's 10.88, away from docker's 172.17 and flannel's 10.244).
//!
//! Bridges, routes and iptables rules belong to the whole machine, so every
//! change to them and to the leases happens under one machine-wide lock,
//! `/run/shoal/network.lock` (flock). Rules are made with Debian's
//! `iptables-restore --noflush` (one atomic batch per change) and carry the
//! comment `shoal:BRIDGE` (the network's) or `shoal:BRIDGE:ID` (a
//! container's), which is how they are found again to be deleted. Links and
//! addresses are made with `ip`.

use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::container::state::{Containers, Status};
use crate::image::store::write_ephemeral;

const LOCK_PATH: &str = "/run/shoal/network.lock";
/// Candidate subnets are 10.89.N.0/24.
const SUBNET_FIRST_OCTETS: [u8; 2] = [10, 89];
const PREFIX_LEN: u8 = 24;
/// The name containers see their interface by.
pub const CONTAINER_INTERFACE: &str = "eth0";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// `-p HOSTPORT:CONTAINERPORT[/tcp|/udp]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl PortMapping {
    pub fn parse(text: &str) -> anyhow::Result<PortMapping> {
        const EXPECTED: &str = "expected HOSTPORT:CONTAINERPORT[/tcp|/udp]";
        let (ports, protocol) = match text.split_once('/') {
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((ports, "udp")) => (ports, Protocol::Udp),
            Some((_, other)) => {
                bail!("unknown protocol {other:?}: {EXPECTED}")
            }
            None => (text, Protocol::Tcp),
        };
        let Some((host, container)) = ports.split_once(':') else {
            bail!("{EXPECTED}");
        };
        let port = |part: &str| -> anyhow::Result<u16> {
            if part.is_empty() || !part.bytes().all(|byte| byte.is_ascii_digit()) {
                bail!("{EXPECTED}");
            }
            match part.parse::<u32>() {
                Ok(port) if (1..=65535).contains(&port) => Ok(port as u16),
                _ => bail!("port {part} is not in 1-65535"),
            }
        };
        Ok(PortMapping {
            host_port: port(host)?,
            container_port: port(container)?,
            protocol,
        })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}:{}/{}",
            self.host_port,
            self.container_port,
            self.protocol.as_str()
        )
    }
}

/// A container's place on the network: what its init's parent sets up and
/// what `ps` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub bridge: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// The host's end of the veth pair.
    pub host_veth: String,
    pub mtu: u32,
    pub ports: Vec<PortMapping>,
}

/// `network.json`: the data directory's bridge and subnet.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct NetworkRecord {
    bridge: String,
    subnet: Ipv4Addr,
    prefix_len: u8,
    mtu: u32,
    /// The last host number handed out; the next lease starts after it, so
    /// an address just freed is not reused at once.
    last_host: u8,
}

impl NetworkRecord {
    fn gateway(&self) -> Ipv4Addr {
        host_address(self.subnet, 1)
    }
}

/// `leases/<address>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Lease {
    container_id: String,
    container_name: String,
    attachment: Attachment,
}

fn host_address(subnet: Ipv4Addr, host: u8) -> Ipv4Addr {
    let [first, second, third, _] = subnet.octets();
    Ipv4Addr::new(first, second, third, host)
}

/// The tag on a container's rules (and in its veth's name): the first 12
/// hex digits of its id.
fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

struct Network {
    dir: PathBuf,
    runtime_root: PathBuf,
    _lock: Flock<File>,
}

impl Network {
    fn lock(runtime_root: &Path) -> anyhow::Result<Network> {
        let lock_path = Path::new(LOCK_PATH);
        if let Some(parent) = lock_path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_path)
            .with_context(|| format!("cannot open {LOCK_PATH}"))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| anyhow::anyhow!("cannot lock {LOCK_PATH}: {errno}"))?;
        let dir = runtime_root.join("network");
        fs::create_dir_all(dir.join("leases"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Network {
            dir,
            runtime_root: runtime_root.to_path_buf(),
            _lock: lock,
        })
    }

    fn record_path(&self) -> PathBuf {
        self.dir.join("network.json")
    }

    fn record(&self) -> anyhow::Result<Option<NetworkRecord>> {
        match fs::read(self.record_path()) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is corrupt", self.record_path().display())
            })?)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).context("cannot read the network record"),
        }
    }

    fn save_record(&self, record: &NetworkRecord) -> anyhow::Result<()> {
        write_ephemeral(&self.record_path(), &serde_json::to_vec_pretty(record)?)
    }

    fn lease_path(&self, address: Ipv4Addr) -> PathBuf {
        self.dir.join("leases").join(format!("{address}.json"))
    }

    fn leases(&self) -> anyhow::Result<Vec<Lease>> {
        let mut leases = Vec::new();
        for entry in fs::read_dir(self.dir.join("leases"))?.flatten() {
            let name = entry.file_name();
            let Some(address) = name.to_str().and_then(|name| name.strip_suffix(".json")) else {
                continue;
            };
            if address.parse::<Ipv4Addr>().is_err() {
                continue;
            }
            let bytes = fs::read(entry.path())?;
            let lease: Lease = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is corrupt", entry.path().display()))?;
            leases.push(lease);
        }
        Ok(leases)
    }

    /// The bridge this data directory's record names, if it is really there
    /// and really ours (its alias names this data directory).
    fn live_record(&self) -> anyhow::Result<Option<NetworkRecord>> {
        let Some(record) = self.record()? else {
            return Ok(None);
        };
        let alias = fs::read_to_string(format!("/sys/class/net/{}/ifalias", record.bridge))
            .unwrap_or_default();
        Ok((alias.trim_end() == self.bridge_alias()).then_some(record))
    }

    fn bridge_alias(&self) -> String {
        format!("shoal network of {}", self.dir.display())
    }

    /// Makes the bridge, its address and its rules, choosing a name and a
    /// subnet nothing else on this machine uses.
    fn create(&self) -> anyhow::Result<NetworkRecord> {
        let bridge = (0..)
            .map(|index| format!("shoal{index}"))
            .find(|name| !Path::new("/sys/class/net").join(name).exists())
            .context("no free bridge name")?;
        let routes = kernel_ranges()?;
        let subnet = (0..=255u8)
            .map(|third| Ipv4Addr::new(SUBNET_FIRST_OCTETS[0], SUBNET_FIRST_OCTETS[1], third, 0))
            .find(|candidate| {
                !routes.iter().any(|&(network, prefix_len)| {
                    overlaps(*candidate, PREFIX_LEN, network, prefix_len)
                })
            })
            .context(
                "every subnet 10.89.0.0/24 … 10.89.255.0/24 is already in use on this machine",
            )?;
        let record = NetworkRecord {
            bridge: bridge.clone(),
            subnet,
            prefix_len: PREFIX_LEN,
            mtu: default_route_mtu(),
            last_host: 1,
        };
        let made = (|| -> anyhow::Result<()> {
            let gateway = format!("{}/{}", record.gateway(), record.prefix_len);
            tool(
                "ip",
                &["-batch", "-"],
                Some(&format!(
                    "link add {bridge} mtu {mtu} type bridge\naddr add {gateway} dev {bridge}\nlink set {bridge} up\n",
                    mtu = record.mtu
                )),
            )?;
            write_sysfs(
                &format!("/sys/class/net/{bridge}/ifalias"),
                &self.bridge_alias(),
            )?;
            // Locally originated traffic to 127.0.0.1:HOSTPORT is DNATed to
            // a container; its loopback source may then leave by the bridge.
            write_sysfs(
                &format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
                "1",
            )?;
            // Containers' traffic is routed by the host. Like docker, shoal
            // turns forwarding on and leaves it on: other networks may rely
            // on it by then.
            write_sysfs("/proc/sys/net/ipv4/ip_forward", "1")?;
            let tag = format!("shoal:{bridge}");
            let subnet = format!("{}/{}", record.subnet, record.prefix_len);
            apply_rules(&[
                RuleChange::add(
                    "nat",
                    format!(
                        "-A POSTROUTING -s {subnet} ! -o {bridge} -m comment --comment {tag} -j MASQUERADE"
                    ),
                ),
                RuleChange::add(
                    "nat",
                    format!(
                        "-A POSTROUTING -s 127.0.0.0/8 -o {bridge} -m comment --comment {tag} -j MASQUERADE"
                    ),
                ),
                // Hairpin: a container reaching a published port through a
                // host address is answered through the host.
                RuleChange::add(
                    "nat",
                    format!(
                        "-A POSTROUTING -s {subnet} -o {bridge} -m conntrack --ctstate DNAT -m comment --comment {tag} -j MASQUERADE"
                    ),
                ),
                RuleChange::add(
                    "filter",
                    format!("-I FORWARD -i {bridge} -m comment --comment {tag} -j ACCEPT"),
                ),
                RuleChange::add(
                    "filter",
                    format!(
                        "-I FORWARD -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment {tag} -j ACCEPT"
                    ),
                ),
            ])
        })();
        if let Err(error) = made {
            remove_bridge(&bridge, &[]);
            return Err(error.context(format!("cannot create network bridge {bridge}")));
        }
        self.save_record(&record)?;
        Ok(record)
    }

    /// Removes the record and, unless its bridge name has since been taken
    /// by another data directory's network, the bridge and its rules.
    fn destroy(&self, record: &NetworkRecord) {
        self.destroy_with(record, &[]);
    }

    /// [`destroy`](Self::destroy), deleting `veths` in the same go.
    fn destroy_with(&self, record: &NetworkRecord, veths: &[&str]) {
        let bridge = &record.bridge;
        let exists = Path::new("/sys/class/net").join(bridge).exists();
        let alias =
            fs::read_to_string(format!("/sys/class/net/{bridge}/ifalias")).unwrap_or_default();
        if !exists || alias.trim_end() == self.bridge_alias() {
            remove_bridge(bridge, veths);
        } else {
            remove_links(veths);
        }
        let _ = fs::remove_file(self.record_path());
    }

    /// Drops the leases of containers that are gone or no longer running
    /// (their supervisor was killed before it could release them).
    fn sweep_stale(&self) -> anyhow::Result<()> {
        let containers = Containers::open(&self.runtime_root)?;
        for lease in self.leases()? {
            let stale = match containers.load(&lease.container_id) {
                Ok(state) => state.live_status() == Status::Exited,
                Err(_) => !containers.dir(&lease.container_id).exists(),
            };
            if stale {
                self.release_lease(&lease)?;
            }
        }
        Ok(())
    }

    fn release_lease(&self, lease: &Lease) -> anyhow::Result<()> {
        let attachment = &lease.attachment;
        let id = short_id(&lease.container_id);
        delete_rules(|tag| tag == [attachment.bridge.as_str(), id])?;
        // The veth dies with the container's network namespace, but the
        // kernel frees namespaces lazily: delete it now.
        remove_links(&[attachment.host_veth.as_str()]);
        self.remove_lease_file(lease)
    }

    fn remove_lease_file(&self, lease: &Lease) -> anyhow::Result<()> {
        match fs::remove_file(self.lease_path(lease.attachment.address)) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error).context("cannot remove a network lease"),
        }
    }

    /// With no lease left, the network goes.
    fn destroy_if_unused(&self) -> anyhow::Result<()> {
        if self.leases()?.is_empty()
            && let Some(record) = self.record()?
        {
            self.destroy(&record);
        }
        Ok(())
    }
}

/// Gives container `id` an address on this data directory's network
/// (creating the network on first use) and publishes its ports. Undoes all
/// of it on failure.
pub fn attach(
    runtime_root: &Path,
    id: &str,
    name: &str,
    ports: &[PortMapping],
) -> anyhow::Result<Attachment> {
    let network = Network::lock(runtime_root)?;
    network.sweep_stale()?;
    check_ports_free(&network, ports)?;
    let record = match network.live_record()? {
        Some(record) => record,
        None => {
            // A record whose bridge is gone (a reboot) is replaced; leases
            // of containers that are no longer running went in the sweep.
            if let Some(old) = network.record()? {
                network.destroy(&old);
            }
            network.create()?
        }
    };
    let result = (|| -> anyhow::Result<Attachment> {
        let taken: Vec<Ipv4Addr> = network
            .leases()?
            .iter()
            .map(|lease| lease.attachment.address)
            .collect();
        // Hosts 2..=254, starting after the last one handed out.
        let host = (0..253u16)
            .map(|offset| ((u16::from(record.last_host) - 1 + offset) % 253 + 2) as u8)
            .find(|host| !taken.contains(&host_address(record.subnet, *host)))
            .with_context(|| {
                format!(
                    "network {}/{} is full: 253 containers have addresses on it",
                    record.subnet, record.prefix_len
                )
            })?;
        let attachment = Attachment {
            bridge: record.bridge.clone(),
            address: host_address(record.subnet, host),
            prefix_len: record.prefix_len,
            gateway: record.gateway(),
            host_veth: format!("veth{}", &id[..id.len().min(11)]),
            mtu: record.mtu,
            ports: ports.to_vec(),
        };
        let lease = Lease {
            container_id: id.to_string(),
            container_name: name.to_string(),
            attachment: attachment.clone(),
        };
        write_ephemeral(
            &network.lease_path(attachment.address),
            &serde_json::to_vec_pretty(&lease)?,
        )?;
        network.save_record(&NetworkRecord {
            last_host: host,
            ..record.clone()
        })?;
        publish(&attachment, id)?;
        Ok(attachment)
    })();
    if let Err(error) = result {
        if let Ok(leases) = network.leases()
            && let Some(lease) = leases.iter().find(|lease| lease.container_id == id)
        {
            let _ = network.release_lease(lease);
        }
        let _ = network.destroy_if_unused();
        return Err(error);
    }
    result
}

/// Frees container `id`'s address and unpublishes its ports; the last
/// container takes the network with it. Idempotent.
pub fn release(runtime_root: &Path, id: &str) -> anyhow::Result<()> {
    let network = Network::lock(runtime_root)?;
    let (mine, others): (Vec<Lease>, Vec<Lease>) = network
        .leases()?
        .into_iter()
        .partition(|lease| lease.container_id == id);
    // The last container takes the network with it: its rules and veth go
    // with the network's, in one pass.
    if !mine.is_empty()
        && others.is_empty()
        && let Some(record) = network.record()?
        && mine
            .iter()
            .all(|lease| lease.attachment.bridge == record.bridge)
    {
        let veths: Vec<&str> = mine
            .iter()
            .map(|lease| lease.attachment.host_veth.as_str())
            .collect();
        network.destroy_with(&record, &veths);
        for lease in &mine {
            network.remove_lease_file(lease)?;
        }
        return Ok(());
    }
    for lease in &mine {
        network.release_lease(lease)?;
    }
    network.destroy_if_unused()
}

pub(crate) fn publish(attachment: &Attachment, id: &str) -> anyhow::Result<()> {
    let tag = format!("shoal:{}:{}", attachment.bridge, short_id(id));
    let mut changes = Vec::new();
    for port in &attachment.ports {
        for chain in ["PREROUTING", "OUTPUT"] {
            changes.push(RuleChange::add(
                "nat",
                format!(
                    "-A {chain} -p {protocol} -m addrtype --dst-type LOCAL --dport {host_port} -m comment --comment {tag} -j DNAT --to-destination {address}:{container_port}",
                    protocol = port.protocol.as_str(),
                    host_port = port.host_port,
                    address = attachment.address,
                    container_port = port.container_port,
                ),
            ));
        }
    }
    if changes.is_empty() {
        return Ok(());
    }
    apply_rules(&changes).context("cannot publish the container's ports")
}

/// A host port can be published once: not by two containers (of any data
/// directory: the rules are machine-wide), and not while a host process
/// has it bound.
fn check_ports_free(network: &Network, ports: &[PortMapping]) -> anyhow::Result<()> {
    for (index, port) in ports.iter().enumerate() {
        if ports[..index]
            .iter()
            .any(|earlier| earlier.host_port == port.host_port && earlier.protocol == port.protocol)
        {
            bail!(
                "host port {}/{} is published twice",
                port.host_port,
                port.protocol.as_str()
            );
        }
    }
    if ports.is_empty() {
        return Ok(());
    }
    let rules: Vec<Rule> = list_rules()?
        .into_iter()
        .filter(|(table, _)| *table == "nat")
        .map(|(_, rule)| rule)
        .collect();
    for port in ports {
        let owner = rules.iter().find_map(|rule| {
            let tag = rule.tag()?;
            let published = rule.chain() == "PREROUTING"
                && rule.option("-p") == Some(port.protocol.as_str())
                && rule.option("--dport") == Some(port.host_port.to_string().as_str());
            (published && tag.len() == 2).then(|| (tag[0].to_string(), tag[1].to_string()))
        });
        if let Some((bridge, short)) = owner {
            let name = network
                .leases()?
                .into_iter()
                .find(|lease| {
                    lease.attachment.bridge == bridge && short_id(&lease.container_id) == short
                })
                .map_or_else(
                    || format!("{short} (of another data directory)"),
                    |lease| lease.container_name,
                );
            bail!(
                "host port {}/{} is already published by container {name}",
                port.host_port,
                port.protocol.as_str()
            );
        }
        let bound = match port.protocol {
            Protocol::Tcp => std::net::TcpListener::bind(("0.0.0.0", port.host_port)).err(),
            Protocol::Udp => std::net::UdpSocket::bind(("0.0.0.0", port.host_port)).err(),
        };
        if let Some(error) = bound
            && error.kind() == std::io::ErrorKind::AddrInUse
        {
            bail!(
                "host port {}/{} is in use by a process on this machine",
                port.host_port,
                port.protocol.as_str()
            );
        }
    }
    Ok(())
}

/// Run by the thread that starts the container's init, in a network
/// namespace it has just unshared (`container_ns`; `host_ns` is the one it
/// came from): makes the veth pair with `eth0` here and the other end on the
/// host, addresses and routes `eth0`, and puts the host end on the bridge.
/// Returns with the thread back in `container_ns`.
pub fn connect(attachment: &Attachment, host_ns: &File, container_ns: &File) -> anyhow::Result<()> {
    use nix::sched::{CloneFlags, setns};
    let host_ns_path = format!("/proc/{}/fd/{}", std::process::id(), host_ns.as_raw_fd());
    let Attachment {
        bridge,
        address,
        prefix_len,
        gateway,
        host_veth,
        mtu,
        ..
    } = attachment;
    tool(
        "ip",
        &["-batch", "-"],
        Some(&format!(
            "link add {CONTAINER_INTERFACE} mtu {mtu} type veth peer name {host_veth} mtu {mtu} netns {host_ns_path}\n\
             addr add {address}/{prefix_len} dev {CONTAINER_INTERFACE}\n\
             link set {CONTAINER_INTERFACE} up\n\
             route add default via {gateway} dev {CONTAINER_INTERFACE}\n"
        )),
    )?;
    setns(host_ns, CloneFlags::CLONE_NEWNET).context("cannot return to the host's network")?;
    // Hairpin mode: where br_netfilter is loaded (Docker and many
    // distributions load it), a packet a container sends to a service or
    // host port that DNATs back to that same container is bridged rather
    // than routed, and a bridge sends a frame back out of the port it came
    // in on only in hairpin mode (kubelet's "hairpin-veth" for the same
    // reason).
    let host_side = tool(
        "ip",
        &["-batch", "-"],
        Some(&format!(
            "link set {host_veth} master {bridge} up
             link set {host_veth} type bridge_slave hairpin on
"
        )),
    );
    setns(container_ns, CloneFlags::CLONE_NEWNET)
        .context("cannot enter the container's network")?;
    host_side.map(|_| ())
}

/// Address ranges the kernel knows: every route's destination (in every
/// table, the default route aside) and every interface's subnet.
fn kernel_ranges() -> anyhow::Result<Vec<(Ipv4Addr, u8)>> {
    let mut ranges = Vec::new();
    // One `ip` for both listings: two JSON documents, one after the other.
    let listing = tool(
        "ip",
        &["-j", "-4", "-batch", "-"],
        Some("route show table all\naddr show\n"),
    )?;
    let documents: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&listing)
        .into_iter()
        .collect::<Result<_, _>>()
        .context("cannot parse `ip -j route` and `ip -j addr`")?;
    let [routes, links] = documents.as_slice() else {
        bail!("`ip -j -batch` gave {} listings, not 2", documents.len());
    };
    for route in routes.as_array().into_iter().flatten() {
        if let Some(range) = route["dst"].as_str().and_then(parse_range) {
            ranges.push(range);
        }
    }
    for link in links.as_array().into_iter().flatten() {
        for info in link["addr_info"].as_array().into_iter().flatten() {
            if let (Some(local), Some(prefix_len)) = (
                info["local"].as_str().and_then(|text| text.parse().ok()),
                info["prefixlen"].as_u64(),
            ) {
                ranges.push((local, prefix_len.min(32) as u8));
            }
        }
    }
    Ok(ranges)
}

/// `10.0.0.0/8` or `192.0.2.7` (a /32); `default` and other words are not
/// ranges.
fn parse_range(text: &str) -> Option<(Ipv4Addr, u8)> {
    match text.split_once('/') {
        Some((address, prefix_len)) => {
            let prefix_len: u8 = prefix_len.parse().ok()?;
            (prefix_len <= 32).then_some((address.parse().ok()?, prefix_len))
        }
        None => Some((text.parse().ok()?, 32)),
    }
}

/// Whether two ranges share an address; a /0 (a default route) overlaps
/// nothing here, since it is a fallback, not a claim.
fn overlaps(left: Ipv4Addr, left_len: u8, right: Ipv4Addr, right_len: u8) -> bool {
    let common = left_len.min(right_len);
    if common == 0 {
        return false;
    }
    let mask = u32::MAX << (32 - u32::from(common));
    u32::from(left) & mask == u32::from(right) & mask
}

/// The MTU of the interface the default route leaves by (1500 without
/// one): containers' packets then fit the host's path out.
pub(crate) fn default_route_mtu() -> u32 {
    let device = fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|table| {
            table.lines().skip(1).find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.get(1) == Some(&"00000000") && fields.get(7) == Some(&"00000000"))
                    .then(|| fields[0].to_string())
            })
        });
    device
        .and_then(|device| fs::read_to_string(format!("/sys/class/net/{device}/mtu")).ok())
        .and_then(|mtu| mtu.trim().parse().ok())
        .unwrap_or(1500)
}

/// Deletes a bridge and every rule tagged for it (best effort: what is
/// already gone is fine).
fn remove_bridge(bridge: &str, veths: &[&str]) {
    let _ = delete_rules(|tag| tag.first() == Some(&bridge));
    let mut links = veths.to_vec();
    links.push(bridge);
    remove_links(&links);
}

/// Deletes those of `links` that exist, with one `ip`.
pub(crate) fn remove_links(links: &[&str]) {
    let batch: String = links
        .iter()
        .filter(|link| Path::new("/sys/class/net").join(link).exists())
        .map(|link| format!("link del {link}\n"))
        .collect();
    if !batch.is_empty() {
        let _ = tool("ip", &["-force", "-batch", "-"], Some(&batch));
    }
}

pub(crate) fn write_sysfs(path: &str, value: &str) -> anyhow::Result<()> {
    fs::write(path, value).with_context(|| format!("cannot write {value} to {path}"))
}

/// Runs a networking tool; its error (first lines of stderr) becomes one
/// line.
pub(crate) fn tool(program: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().with_context(|| {
        format!("cannot run {program}: install it (Debian's iproute2 and iptables)")
    })?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("no stdin")?;
        pipe.write_all(input.as_bytes())
            .with_context(|| format!("cannot write to {program}"))?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect();
        let what = match stdin {
            Some(input) => format!(
                "{program} {} ({})",
                args.join(" "),
                input.trim().replace('\n', "; ")
            ),
            None => format!("{program} {}", args.join(" ")),
        };
        bail!("`{what}` failed: {}", reason.join("; "));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub(crate) struct RuleChange {
    pub(crate) table: &'static str,
    pub(crate) line: String,
}

impl RuleChange {
    pub(crate) fn add(table: &'static str, line: String) -> RuleChange {
        RuleChange { table, line }
    }
}

/// Applies rule changes as one `iptables-restore --noflush` batch: all or
/// none.
pub(crate) fn apply_rules(changes: &[RuleChange]) -> anyhow::Result<()> {
    let mut batch = String::new();
    for table in ["nat", "filter"] {
        let lines: Vec<&str> = changes
            .iter()
            .filter(|change| change.table == table)
            .map(|change| change.line.as_str())
            .collect();
        if !lines.is_empty() {
            batch.push_str(&format!("*{table}\n{}\nCOMMIT\n", lines.join("\n")));
        }
    }
    if batch.is_empty() {
        return Ok(());
    }
    tool("iptables-restore", &["-w", "--noflush"], Some(&batch)).map(|_| ())
}

/// One line of `iptables -S`.
pub(crate) struct Rule {
    tokens: Vec<String>,
    line: String,
}

impl Rule {
    pub(crate) fn chain(&self) -> &str {
        self.tokens.get(1).map_or("", String::as_str)
    }

    pub(crate) fn option(&self, name: &str) -> Option<&str> {
        let index = self.tokens.iter().position(|token| token == name)?;
        self.tokens.get(index + 1).map(String::as_str)
    }

    /// `shoal:BRIDGE[:ID]` split at ':' without the `shoal`, or `None` for a
    /// rule that is not shoal's.
    pub(crate) fn tag(&self) -> Option<Vec<&str>> {
        let comment = self.option("--comment")?.trim_matches('"');
        let mut parts = comment.split(':');
        (parts.next() == Some("shoal")).then(|| parts.collect())
    }
}

/// The rules of the `nat` and `filter` tables, from one `iptables-save`.
pub(crate) fn list_rules() -> anyhow::Result<Vec<(&'static str, Rule)>> {
    let listing = tool("iptables-save", &[], None)?;
    let mut rules = Vec::new();
    let mut table = None;
    for line in listing.lines() {
        if let Some(name) = line.strip_prefix('*') {
            table = ["nat", "filter"].into_iter().find(|known| *known == name);
        } else if let Some(table) = table
            && line.starts_with("-A ")
        {
            rules.push((
                table,
                Rule {
                    tokens: line.split_whitespace().map(str::to_string).collect(),
                    line: line.to_string(),
                },
            ));
        }
    }
    Ok(rules)
}

/// Deletes every shoal rule whose tag (`[BRIDGE]` or `[BRIDGE, ID]`)
/// satisfies `doomed`.
pub(crate) fn delete_rules(doomed: impl Fn(&[&str]) -> bool) -> anyhow::Result<()> {
    let changes: Vec<RuleChange> = list_rules()?
        .into_iter()
        .filter(|(_, rule)| rule.tag().is_some_and(|tag| doomed(&tag)))
        .map(|(table, rule)| RuleChange {
            table,
            line: format!("-D{}", &rule.line[2..]),
        })
        .collect();
    apply_rules(&changes).context("cannot delete shoal's iptables rules")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mappings_parse() {
        assert_eq!(
            PortMapping::parse("8080:80").unwrap(),
            PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(
            PortMapping::parse("53:5353/udp").unwrap().protocol,
            Protocol::Udp
        );
        assert_eq!(
            PortMapping::parse("1:65535/tcp").unwrap().to_string(),
            "1:65535/tcp"
        );
        for bad in [
            "abc",
            "80",
            "99999:80",
            "0:80",
            "80:0",
            ":80",
            "80:",
            "80:80/sctp",
            "+1:80",
            "80:80:80",
        ] {
            assert!(PortMapping::parse(bad).is_err(), "{bad}");
        }
        assert!(
            PortMapping::parse("99999:80")
                .unwrap_err()
                .to_string()
                .contains("port 99999 is not in 1-65535")
        );
    }

    #[test]
    fn ranges_overlap_on_their_common_prefix() {
        let subnet = Ipv4Addr::new(10, 89, 0, 0);
        assert!(overlaps(subnet, 24, Ipv4Addr::new(10, 0, 0, 0), 8));
        assert!(overlaps(subnet, 24, Ipv4Addr::new(10, 89, 0, 77), 32));
        assert!(!overlaps(subnet, 24, Ipv4Addr::new(10, 89, 1, 0), 24));
        assert!(!overlaps(subnet, 24, Ipv4Addr::new(0, 0, 0, 0), 0));
        assert_eq!(parse_range("default"), None);
        assert_eq!(
            parse_range("192.0.2.0/24"),
            Some((Ipv4Addr::new(192, 0, 2, 0), 24))
        );
        assert_eq!(
            parse_range("192.0.2.2"),
            Some((Ipv4Addr::new(192, 0, 2, 2), 32))
        );
    }
}
