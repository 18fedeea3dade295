//! The nftables ruleset, laid out as kube-proxy's nftables mode lays it out
//! so that an endpoint change is a small transaction: verdict maps from
//! (address, protocol, port) and from (protocol, node port) to a chain per
//! service port, which picks an endpoint with `numgen random`, and a
//! chain per endpoint that DNATs. Rendering is pure: objects in, `nft -f`
//! text out; `Nft` is the one place that runs `nft`.
//!
//! The table (`ip shoal`):
//! - `nat-prerouting`, `nat-output` (hooks) jump to `services`, which
//!   looks up `service-ips` (ClusterIPs, external and load balancer IPs)
//!   and, for packets to a local address, `service-nodeports`;
//! - `filter-input`, `filter-forward`, `filter-output` send new
//!   connections through `no-endpoint-services` / `no-endpoint-nodeports`,
//!   which reject at once what has no endpoint (or drop what a Local
//!   policy keeps from the endpoints elsewhere, as kube-proxy does);
//! - `mark-for-masquerade` marks, `nat-postrouting` masquerades what is
//!   marked: traffic from outside the cluster range to a ClusterIP, all
//!   outside traffic to a Cluster-policy NodePort or external IP, and the
//!   hairpin (an endpoint reaching itself through its service);
//! - per service port `svc-ID` (all usable endpoints), `local-ID` (this
//!   node's, for the Local policies), `ext-ID` (outside traffic), per
//!   endpoint `ep-ID__ADDRESS/PORT` and, with `sessionAffinity: ClientIP`,
//!   a set `aff-SECONDS-ID__ADDRESS/PORT` of the clients it serves, with timeout,
//!   checked before the random pick.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::Stdio;

use crate::model::{Endpoint, ServicePort, ServiceTargets};

/// The table every rule of the proxy lives in.
pub const TABLE: &str = "shoal";

/// The mark a packet carries to be masqueraded (kube-proxy's bit).
const MASQUERADE_MARK: &str = "0x4000";

/// The verdict maps of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Map {
    /// `ipv4_addr . inet_proto . inet_service : verdict`.
    ServiceIps,
    /// `inet_proto . inet_service : verdict`, for local destinations.
    NodePorts,
    /// As `ServiceIps`, checked in the filter hooks: rejects and drops.
    NoEndpointServices,
    NoEndpointNodePorts,
}

impl Map {
    pub const ALL: [Map; 4] = [
        Map::ServiceIps,
        Map::NodePorts,
        Map::NoEndpointServices,
        Map::NoEndpointNodePorts,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Map::ServiceIps => "service-ips",
            Map::NodePorts => "service-nodeports",
            Map::NoEndpointServices => "no-endpoint-services",
            Map::NoEndpointNodePorts => "no-endpoint-nodeports",
        }
    }

    fn key_type(self) -> &'static str {
        match self {
            Map::ServiceIps | Map::NoEndpointServices => "ipv4_addr . inet_proto . inet_service",
            Map::NodePorts | Map::NoEndpointNodePorts => "inet_proto . inet_service",
        }
    }
}

/// What one or more service ports put in the table, by name, so two
/// versions can be compared and only the difference sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Objects {
    /// Chain name to its rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Set name to its declaration.
    pub sets: BTreeMap<String, String>,
    /// Map and key to the verdict.
    pub elements: BTreeMap<(Map, String), String>,
}

impl Objects {
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.sets.is_empty() && self.elements.is_empty()
    }

    /// Adds `other`'s objects (names are unique per service port, so
    /// nothing is overwritten).
    pub fn extend(&mut self, other: Objects) {
        self.chains.extend(other.chains);
        self.sets.extend(other.sets);
        self.elements.extend(other.elements);
    }

    pub fn n_rules(&self) -> usize {
        self.chains.values().map(Vec::len).sum()
    }
}

/// What the rules need besides the service: the pod range (traffic from
/// it is not masqueraded on its way to a ClusterIP).
#[derive(Clone, Debug)]
pub struct RuleContext {
    pub cluster_cidr: ipnet::Ipv4Net,
}

fn endpoint_chain(id: &str, endpoint: &Endpoint) -> String {
    format!("ep-{id}__{}/{}", endpoint.address, endpoint.port)
}

/// The timeout is part of the name: a set's timeout cannot change in place,
/// and a new name makes the rules that use it change too, so an ordinary
/// incremental sync replaces it.
fn affinity_set(id: &str, endpoint: &Endpoint, seconds: u32) -> String {
    format!("aff-{seconds}-{id}__{}/{}", endpoint.address, endpoint.port)
}

/// The rules of a chain that picks among `endpoints`: clients with an
/// affinity entry first, then a random endpoint.
fn pick_rules(port: &ServicePort, id: &str, endpoints: &[Endpoint]) -> Vec<String> {
    let mut rules = Vec::new();
    if let Some(seconds) = port.affinity_seconds {
        for endpoint in endpoints {
            rules.push(format!(
                "ip saddr @{} goto {}",
                affinity_set(id, endpoint, seconds),
                endpoint_chain(id, endpoint)
            ));
        }
    }
    // One rule per endpoint, each drawing its own number: endpoint k of N
    // is taken with probability 1/(N-k) when none before it was, which is
    // 1/N overall (iptables' `statistic` chain). Not one `numgen ... vmap
    // { … }`: every anonymous vmap is a set of its own, and the kernel
    // names a new set by scanning the table's sets, so 10,000 of them made
    // a full sync quadratic (BENCHMARKS.md, the proxy's rule sync).
    let n_endpoints = endpoints.len();
    for (index, endpoint) in endpoints.iter().enumerate() {
        let remaining = n_endpoints - index;
        if remaining > 1 {
            rules.push(format!(
                "numgen random mod {remaining} == 0 goto {}",
                endpoint_chain(id, endpoint)
            ));
        } else {
            rules.push(format!("goto {}", endpoint_chain(id, endpoint)));
        }
    }
    rules
}

/// Renders one service port and its targets.
pub fn service_objects(targets: &ServiceTargets, context: &RuleContext) -> Objects {
    let port = &targets.port;
    let id = port.id();
    let protocol = port.protocol.nft();
    let cidr = context.cluster_cidr;
    let mut objects = Objects::default();
    let service_chain = format!("svc-{id}");
    let local_chain = format!("local-{id}");
    let external_chain = format!("ext-{id}");

    for endpoint in targets.all_endpoints() {
        let mut rules = vec![format!(
            "ip saddr {} jump mark-for-masquerade",
            endpoint.address
        )];
        if let Some(seconds) = port.affinity_seconds {
            let set = affinity_set(&id, &endpoint, seconds);
            objects.sets.insert(
                set.clone(),
                format!("type ipv4_addr ; flags dynamic,timeout ; timeout {seconds}s ;"),
            );
            rules.push(format!("update @{set} {{ ip saddr }}"));
        }
        rules.push(format!(
            "meta l4proto {protocol} dnat to {}:{}",
            endpoint.address, endpoint.port
        ));
        objects.chains.insert(endpoint_chain(&id, &endpoint), rules);
    }

    let masquerade_outsiders = |rules: &mut Vec<String>| {
        // One rule per address rather than an anonymous set (see
        // `pick_rules`).
        for ip in &port.cluster_ips {
            rules.push(format!(
                "ip daddr {ip} ip saddr != {cidr} jump mark-for-masquerade"
            ));
        }
    };
    if !targets.cluster.is_empty() {
        let mut rules = Vec::new();
        masquerade_outsiders(&mut rules);
        rules.extend(pick_rules(port, &id, &targets.cluster));
        objects.chains.insert(service_chain.clone(), rules);
    }
    if !targets.local.is_empty() {
        let mut rules = Vec::new();
        masquerade_outsiders(&mut rules);
        rules.extend(pick_rules(port, &id, &targets.local));
        objects.chains.insert(local_chain.clone(), rules);
    }

    // ClusterIPs: to every endpoint, or to this node's for
    // internalTrafficPolicy Local (dropped when it has none, as upstream).
    for ip in &port.cluster_ips {
        let key = format!("{ip} . {protocol} . {}", port.port);
        if targets.cluster.is_empty() {
            objects.elements.insert(
                (Map::NoEndpointServices, key),
                "goto reject-chain".to_string(),
            );
        } else if !port.internal_local {
            objects
                .elements
                .insert((Map::ServiceIps, key), format!("goto {service_chain}"));
        } else if !targets.local.is_empty() {
            objects
                .elements
                .insert((Map::ServiceIps, key), format!("goto {local_chain}"));
        } else {
            objects
                .elements
                .insert((Map::NoEndpointServices, key), "drop".to_string());
        }
    }

    if port.has_external() {
        let mut keys: Vec<(Map, Map, String)> = port
            .external_ips
            .iter()
            .map(|ip| {
                (
                    Map::ServiceIps,
                    Map::NoEndpointServices,
                    format!("{ip} . {protocol} . {}", port.port),
                )
            })
            .collect();
        if let Some(node_port) = port.node_port {
            keys.push((
                Map::NodePorts,
                Map::NoEndpointNodePorts,
                format!("{protocol} . {node_port}"),
            ));
        }
        if targets.cluster.is_empty() {
            for (_, rejecting, key) in keys {
                objects
                    .elements
                    .insert((rejecting, key), "goto reject-chain".to_string());
            }
        } else {
            let rules = if port.external_local {
                // Pods and the node itself may use any endpoint (their
                // traffic is not "external"); outsiders keep their source
                // address and reach only this node's endpoints.
                let mut rules = vec![
                    format!("ip saddr {cidr} goto {service_chain}"),
                    "fib saddr type local jump mark-for-masquerade".to_string(),
                    format!("fib saddr type local goto {service_chain}"),
                ];
                if targets.local.is_empty() {
                    rules.push("drop".to_string());
                } else {
                    rules.push(format!("goto {local_chain}"));
                }
                rules
            } else {
                vec![
                    "jump mark-for-masquerade".to_string(),
                    format!("goto {service_chain}"),
                ]
            };
            objects.chains.insert(external_chain.clone(), rules);
            for (map, _, key) in keys {
                objects
                    .elements
                    .insert((map, key), format!("goto {external_chain}"));
            }
        }
    }
    objects
}

/// The chains the table always has, with their rules.
fn base_chains() -> Vec<(&'static str, Option<&'static str>, Vec<String>)> {
    let lookup = |service_map: Map, node_port_map: Map| {
        vec![
            format!(
                "ip daddr . meta l4proto . th dport vmap @{}",
                service_map.name()
            ),
            format!(
                "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @{}",
                node_port_map.name()
            ),
        ]
    };
    let check = || vec!["ct state new jump service-endpoints-check".to_string()];
    vec![
        (
            "nat-prerouting",
            Some("type nat hook prerouting priority dstnat ; policy accept ;"),
            vec!["jump services".to_string()],
        ),
        (
            "nat-output",
            Some("type nat hook output priority -100 ; policy accept ;"),
            vec!["jump services".to_string()],
        ),
        (
            "nat-postrouting",
            Some("type nat hook postrouting priority srcnat ; policy accept ;"),
            vec!["jump masquerading".to_string()],
        ),
        (
            "filter-input",
            Some("type filter hook input priority -110 ; policy accept ;"),
            check(),
        ),
        (
            "filter-forward",
            Some("type filter hook forward priority -110 ; policy accept ;"),
            check(),
        ),
        (
            "filter-output",
            Some("type filter hook output priority -110 ; policy accept ;"),
            check(),
        ),
        ("services", None, lookup(Map::ServiceIps, Map::NodePorts)),
        (
            "service-endpoints-check",
            None,
            lookup(Map::NoEndpointServices, Map::NoEndpointNodePorts),
        ),
        (
            "mark-for-masquerade",
            None,
            vec![format!("meta mark set meta mark | {MASQUERADE_MARK}")],
        ),
        (
            "masquerading",
            None,
            vec![
                format!("meta mark & {MASQUERADE_MARK} == 0 return"),
                format!("meta mark set meta mark xor {MASQUERADE_MARK}"),
                "masquerade fully-random".to_string(),
            ],
        ),
        (
            "reject-chain",
            None,
            vec![
                "meta l4proto tcp reject with tcp reset".to_string(),
                "reject".to_string(),
            ],
        ),
    ]
}

/// The names of the chains every table has (never stale).
pub fn base_chain_names() -> BTreeSet<&'static str> {
    base_chains().into_iter().map(|(name, _, _)| name).collect()
}

/// One change to the table, in the order a transaction makes them. Rules,
/// set declarations, element keys and verdicts are nft's syntax: the text
/// is what `nft -f` reads, and `netlink` compiles the same text into
/// nf_tables messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    AddTable,
    /// Deletes every rule of the table (chains, sets and maps stay).
    FlushTable,
    DeleteTable,
    AddMap(Map),
    FlushMap(Map),
    /// A chain, with its hook declaration for a base chain.
    AddChain {
        name: String,
        hook: Option<&'static str>,
    },
    AddSet {
        name: String,
        declaration: String,
    },
    /// Appends a rule to a chain.
    AddRule {
        chain: String,
        rule: String,
    },
    /// Elements as (key, verdict).
    AddElements {
        map: Map,
        elements: Vec<(String, String)>,
    },
    DeleteElements {
        map: Map,
        keys: Vec<String>,
    },
    FlushChain(String),
    DeleteChain(String),
    DeleteSet(String),
}

impl Command {
    fn write_text(&self, text: &mut String) {
        let _ = match self {
            Command::AddTable => writeln!(text, "add table ip {TABLE}"),
            Command::FlushTable => writeln!(text, "flush table ip {TABLE}"),
            Command::DeleteTable => writeln!(text, "delete table ip {TABLE}"),
            Command::AddMap(map) => writeln!(
                text,
                "add map ip {TABLE} {} {{ type {} : verdict ; }}",
                map.name(),
                map.key_type()
            ),
            Command::FlushMap(map) => writeln!(text, "flush map ip {TABLE} {}", map.name()),
            Command::AddChain {
                name,
                hook: Some(hook),
            } => writeln!(text, "add chain ip {TABLE} {name} {{ {hook} }}"),
            Command::AddChain { name, hook: None } => {
                writeln!(text, "add chain ip {TABLE} {name}")
            }
            Command::AddSet { name, declaration } => {
                writeln!(text, "add set ip {TABLE} {name} {{ {declaration} }}")
            }
            Command::AddRule { chain, rule } => {
                writeln!(text, "add rule ip {TABLE} {chain} {rule}")
            }
            Command::AddElements { map, elements } => {
                // A long `add element` is parsed far faster than many
                // short ones.
                for chunk in elements.chunks(1000) {
                    let _ = write!(text, "add element ip {TABLE} {} {{ ", map.name());
                    for (index, (key, verdict)) in chunk.iter().enumerate() {
                        let separator = if index == 0 { "" } else { ", " };
                        let _ = write!(text, "{separator}{key} : {verdict}");
                    }
                    text.push_str(" }\n");
                }
                Ok(())
            }
            Command::DeleteElements { map, keys } => writeln!(
                text,
                "delete element ip {TABLE} {} {{ {} }}",
                map.name(),
                keys.join(", ")
            ),
            Command::FlushChain(name) => writeln!(text, "flush chain ip {TABLE} {name}"),
            Command::DeleteChain(name) => writeln!(text, "delete chain ip {TABLE} {name}"),
            Command::DeleteSet(name) => writeln!(text, "delete set ip {TABLE} {name}"),
        };
    }
}

/// One atomic change to the table: commands in order, and their text as
/// an `nft -f` script (rendered when first asked for).
#[derive(Debug, Default)]
pub struct Transaction {
    commands: Vec<Command>,
    text: std::sync::OnceLock<String>,
}

impl Transaction {
    pub fn commands(&self) -> &[Command] {
        &self.commands
    }

    pub fn text(&self) -> &str {
        self.text.get_or_init(|| {
            let mut text = String::new();
            for command in &self.commands {
                command.write_text(&mut text);
            }
            text
        })
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    fn push(&mut self, command: Command) {
        self.commands.push(command);
    }

    /// Adds a command at the end (for a caller building its own, such as
    /// the table's deletion).
    pub fn push_command(&mut self, command: Command) {
        self.push(command);
        self.text.take();
    }
}

/// The whole table: base chains and maps, then `objects`. Rules already in
/// the table are flushed, maps emptied, and the chains and sets named in
/// `stale_chains` / `stale_sets` (found in the kernel, no longer wanted)
/// deleted. Affinity sets that stay keep their entries.
pub fn full_sync(
    objects: &Objects,
    stale_chains: &BTreeSet<String>,
    stale_sets: &BTreeSet<String>,
) -> Transaction {
    let mut tx = Transaction::default();
    tx.push(Command::AddTable);
    tx.push(Command::FlushTable);
    for map in Map::ALL {
        tx.push(Command::AddMap(map));
        tx.push(Command::FlushMap(map));
    }
    let base = base_chains();
    for (name, hook, _) in &base {
        tx.push(Command::AddChain {
            name: name.to_string(),
            hook: *hook,
        });
    }
    for (name, declaration) in &objects.sets {
        tx.push(Command::AddSet {
            name: name.clone(),
            declaration: declaration.clone(),
        });
    }
    for name in objects.chains.keys() {
        tx.push(Command::AddChain {
            name: name.clone(),
            hook: None,
        });
    }
    for (name, _, rules) in &base {
        for rule in rules {
            tx.push(Command::AddRule {
                chain: name.to_string(),
                rule: rule.clone(),
            });
        }
    }
    for (name, rules) in &objects.chains {
        for rule in rules {
            tx.push(Command::AddRule {
                chain: name.clone(),
                rule: rule.clone(),
            });
        }
    }
    add_elements(&mut tx, objects.elements.iter());
    let base_names = base_chain_names();
    for name in stale_chains {
        if !objects.chains.contains_key(name) && !base_names.contains(name.as_str()) {
            tx.push(Command::DeleteChain(name.clone()));
        }
    }
    for name in stale_sets {
        // The kernel lists maps among sets; the table's own stay.
        if !objects.sets.contains_key(name) && !Map::ALL.iter().any(|map| map.name() == name) {
            tx.push(Command::DeleteSet(name.clone()));
        }
    }
    tx
}

/// Elements go in one command per map.
fn add_elements<'a>(
    tx: &mut Transaction,
    elements: impl Iterator<Item = (&'a (Map, String), &'a String)>,
) {
    let mut by_map: BTreeMap<Map, Vec<(String, String)>> = BTreeMap::new();
    for ((map, key), verdict) in elements {
        by_map
            .entry(*map)
            .or_default()
            .push((key.clone(), verdict.clone()));
    }
    for (map, elements) in by_map {
        tx.push(Command::AddElements { map, elements });
    }
}

/// The change from `old` to `new` (what some service ports had in the
/// table, and what they need now): new chains and sets first, so any rule
/// may name them; stale map elements out; changed chains flushed and
/// written; new elements in; then chains and sets no longer used deleted.
pub fn incremental(old: &Objects, new: &Objects) -> Transaction {
    let mut tx = Transaction::default();
    for (name, declaration) in &new.sets {
        if !old.sets.contains_key(name) {
            tx.push(Command::AddSet {
                name: name.clone(),
                declaration: declaration.clone(),
            });
        }
    }
    for name in new.chains.keys() {
        if !old.chains.contains_key(name) {
            tx.push(Command::AddChain {
                name: name.clone(),
                hook: None,
            });
        }
    }
    let mut removed_elements: BTreeMap<Map, Vec<String>> = BTreeMap::new();
    for ((map, key), verdict) in &old.elements {
        if new.elements.get(&(*map, key.clone())) != Some(verdict) {
            removed_elements.entry(*map).or_default().push(key.clone());
        }
    }
    for (map, keys) in removed_elements {
        tx.push(Command::DeleteElements { map, keys });
    }
    for (name, rules) in &old.chains {
        if new.chains.get(name) != Some(rules) {
            tx.push(Command::FlushChain(name.clone()));
        }
    }
    for (name, rules) in &new.chains {
        if old.chains.get(name) != Some(rules) {
            for rule in rules {
                tx.push(Command::AddRule {
                    chain: name.clone(),
                    rule: rule.clone(),
                });
            }
        }
    }
    add_elements(
        &mut tx,
        new.elements
            .iter()
            .filter(|(key, verdict)| old.elements.get(*key) != Some(*verdict)),
    );
    for name in old.chains.keys() {
        if !new.chains.contains_key(name) {
            tx.push(Command::DeleteChain(name.clone()));
        }
    }
    for name in old.sets.keys() {
        if !new.sets.contains_key(name) {
            tx.push(Command::DeleteSet(name.clone()));
        }
    }
    tx
}

/// Why a transaction or a listing failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nft failed: {message}")]
    Failed { message: String },
    #[error(transparent)]
    Netlink(#[from] crate::netlink::NetlinkError),
}

/// Where the table lives: this machine's network namespace, or another
/// (the tests' and the benchmark's). Transactions go to the kernel over
/// netlink (`crate::netlink`); the `nft` program is run only to list the
/// table for people and tests, and for the benchmark's comparison.
#[derive(Clone, Debug)]
pub struct Nft {
    command: Vec<String>,
    netns: Option<String>,
}

impl Default for Nft {
    fn default() -> Nft {
        Nft::host()
    }
}

impl Nft {
    /// The caller's network namespace.
    pub fn host() -> Nft {
        Nft {
            command: vec!["nft".to_string()],
            netns: None,
        }
    }

    /// The named network namespace (`ip netns add NAME`).
    pub fn in_netns(name: &str) -> Nft {
        Nft {
            command: vec![
                "nsenter".to_string(),
                format!("--net=/run/netns/{name}"),
                "nft".to_string(),
            ],
            netns: Some(name.to_string()),
        }
    }

    /// A netlink socket in the table's network namespace.
    pub fn socket(&self) -> Result<crate::netlink::Socket, NftError> {
        Ok(match &self.netns {
            None => crate::netlink::Socket::open()?,
            Some(name) => crate::netlink::Socket::open_in(std::path::Path::new(&format!(
                "/run/netns/{name}"
            )))?,
        })
    }

    /// Runs `nft` with `args`, `input` on its standard input; its output.
    fn run(&self, args: &[&str], input: Option<&str>) -> Result<String, NftError> {
        let mut child = std::process::Command::new(&self.command[0])
            .args(&self.command[1..])
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(NftError::Spawn)?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            // A failed write shows up as nft's own error below.
            let _ = stdin.write_all(input.as_bytes());
        }
        let output = child.wait_with_output().map_err(NftError::Spawn)?;
        if !output.status.success() {
            let message = String::from_utf8_lossy(&output.stderr);
            // nft repeats the offending line and underlines it; the first
            // lines say what and where, and are what a log needs.
            let message: Vec<&str> = message.lines().take(6).collect();
            return Err(NftError::Failed {
                message: message.join(" | "),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Commits one transaction atomically, as one netlink batch: it is in
    /// the kernel when this returns Ok.
    pub fn apply(&self, tx: &Transaction) -> Result<(), NftError> {
        self.apply_sized(tx).map(drop)
    }

    /// As `apply`; the batch's size in bytes (0 for an empty transaction).
    pub fn apply_sized(&self, tx: &Transaction) -> Result<usize, NftError> {
        if tx.is_empty() {
            return Ok(0);
        }
        Ok(crate::netlink::apply(&self.socket()?, tx)?)
    }

    /// Commits one transaction through the `nft` program (`nft -f -`), as
    /// the proxy did before it spoke netlink: kept for the benchmark's
    /// comparison and the tests' differential check.
    pub fn apply_with_program(&self, tx: &Transaction) -> Result<(), NftError> {
        if tx.is_empty() {
            return Ok(());
        }
        self.run(&["-f", "-"], Some(tx.text())).map(drop)
    }

    /// `nft list` with `args` (`ruleset`, `chain ip shoal NAME`, …).
    pub fn list(&self, args: &[&str]) -> Result<String, NftError> {
        let mut all = vec!["list"];
        all.extend_from_slice(args);
        self.run(&all, None)
    }

    /// The chains and sets the kernel's table has now (none when it has
    /// no table), for a full sync to delete what it no longer wants: their
    /// names only, not their rules.
    pub fn existing_names(&self) -> Result<(BTreeSet<String>, BTreeSet<String>), NftError> {
        Ok(crate::netlink::table_names(&self.socket()?)?)
    }

    /// The ruleset's generation, which every committed transaction in the
    /// namespace changes: equal to the one read after the proxy's last
    /// commit, nobody else has changed the ruleset since.
    pub fn generation(&self) -> Result<u32, NftError> {
        Ok(crate::netlink::generation(&self.socket()?)?)
    }

    /// Deletes the proxy's table, if there is one: the machine's ruleset
    /// is then as it was before the proxy ran. Whether there was one.
    pub fn delete_table(&self) -> Result<bool, NftError> {
        Ok(crate::netlink::delete_table(&self.socket()?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Protocol, ServiceKey};

    fn context() -> RuleContext {
        RuleContext {
            cluster_cidr: "10.42.0.0/16".parse().unwrap(),
        }
    }

    fn port() -> ServicePort {
        ServicePort {
            service: ServiceKey::new("default", "web"),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            cluster_ips: vec![[10, 43, 0, 5].into()],
            external_ips: vec![],
            node_port: None,
            affinity_seconds: None,
            internal_local: false,
            external_local: false,
        }
    }

    fn endpoint(last: u8) -> Endpoint {
        Endpoint {
            address: [10, 42, 0, last].into(),
            port: 8080,
        }
    }

    fn targets(port: ServicePort, cluster: Vec<Endpoint>, local: Vec<Endpoint>) -> ServiceTargets {
        ServiceTargets {
            port,
            cluster,
            local,
        }
    }

    #[test]
    fn a_cluster_ip_service_with_two_endpoints() {
        let objects = service_objects(
            &targets(port(), vec![endpoint(5), endpoint(6)], vec![]),
            &context(),
        );
        assert_eq!(
            objects.elements,
            BTreeMap::from([(
                (Map::ServiceIps, "10.43.0.5 . tcp . 80".to_string()),
                "goto svc-default/web/tcp/http".to_string()
            )])
        );
        assert_eq!(
            objects.chains["svc-default/web/tcp/http"],
            vec![
                "ip daddr 10.43.0.5 ip saddr != 10.42.0.0/16 jump mark-for-masquerade",
                "numgen random mod 2 == 0 goto ep-default/web/tcp/http__10.42.0.5/8080",
                "goto ep-default/web/tcp/http__10.42.0.6/8080",
            ]
        );
        assert_eq!(
            objects.chains["ep-default/web/tcp/http__10.42.0.6/8080"],
            vec![
                "ip saddr 10.42.0.6 jump mark-for-masquerade",
                "meta l4proto tcp dnat to 10.42.0.6:8080",
            ]
        );
        assert_eq!(objects.chains.len(), 3);
        assert!(objects.sets.is_empty());
    }

    #[test]
    fn no_endpoints_rejects_every_address_of_the_service() {
        let mut port = port();
        port.node_port = Some(30080);
        port.external_ips = vec![[192, 0, 2, 1].into()];
        let objects = service_objects(&targets(port, vec![], vec![]), &context());
        assert!(objects.chains.is_empty());
        let rejected: Vec<(Map, &str)> = objects
            .elements
            .iter()
            .map(|((map, key), verdict)| {
                assert_eq!(verdict, "goto reject-chain");
                (*map, key.as_str())
            })
            .collect();
        assert_eq!(
            rejected,
            vec![
                (Map::NoEndpointServices, "10.43.0.5 . tcp . 80"),
                (Map::NoEndpointServices, "192.0.2.1 . tcp . 80"),
                (Map::NoEndpointNodePorts, "tcp . 30080"),
            ]
        );
    }

    #[test]
    fn affinity_is_checked_before_the_random_pick_and_recorded_per_endpoint() {
        let mut port = port();
        port.affinity_seconds = Some(30);
        let objects = service_objects(&targets(port, vec![endpoint(5)], vec![]), &context());
        let service = &objects.chains["svc-default/web/tcp/http"];
        assert_eq!(
            service[1],
            "ip saddr @aff-30-default/web/tcp/http__10.42.0.5/8080 goto ep-default/web/tcp/http__10.42.0.5/8080"
        );
        assert_eq!(service[2], "goto ep-default/web/tcp/http__10.42.0.5/8080");
        assert_eq!(
            objects.chains["ep-default/web/tcp/http__10.42.0.5/8080"][1],
            "update @aff-30-default/web/tcp/http__10.42.0.5/8080 { ip saddr }"
        );
        assert_eq!(
            objects.sets["aff-30-default/web/tcp/http__10.42.0.5/8080"],
            "type ipv4_addr ; flags dynamic,timeout ; timeout 30s ;"
        );
    }

    #[test]
    fn node_ports_masquerade_with_the_cluster_policy_and_keep_the_source_with_local() {
        let mut port = port();
        port.node_port = Some(30080);
        let objects = service_objects(
            &targets(port.clone(), vec![endpoint(5)], vec![]),
            &context(),
        );
        assert_eq!(
            objects.elements[&(Map::NodePorts, "tcp . 30080".to_string())],
            "goto ext-default/web/tcp/http"
        );
        assert_eq!(
            objects.chains["ext-default/web/tcp/http"],
            vec!["jump mark-for-masquerade", "goto svc-default/web/tcp/http"]
        );

        port.external_local = true;
        let objects = service_objects(
            &targets(
                port.clone(),
                vec![endpoint(5), endpoint(6)],
                vec![endpoint(6)],
            ),
            &context(),
        );
        let external = &objects.chains["ext-default/web/tcp/http"];
        assert_eq!(
            external[0],
            "ip saddr 10.42.0.0/16 goto svc-default/web/tcp/http"
        );
        assert_eq!(external[3], "goto local-default/web/tcp/http");
        assert_eq!(
            objects.chains["local-default/web/tcp/http"][1],
            "goto ep-default/web/tcp/http__10.42.0.6/8080"
        );

        // Endpoints elsewhere only: outsiders are dropped, pods still served.
        let objects = service_objects(&targets(port, vec![endpoint(5)], vec![]), &context());
        assert_eq!(objects.chains["ext-default/web/tcp/http"][3], "drop");
    }

    #[test]
    fn internal_traffic_policy_local_without_local_endpoints_drops() {
        let mut port = port();
        port.internal_local = true;
        let objects = service_objects(
            &targets(port.clone(), vec![endpoint(5)], vec![]),
            &context(),
        );
        assert_eq!(
            objects.elements[&(Map::NoEndpointServices, "10.43.0.5 . tcp . 80".to_string())],
            "drop"
        );
        let objects = service_objects(
            &targets(port, vec![endpoint(5)], vec![endpoint(5)]),
            &context(),
        );
        assert_eq!(
            objects.elements[&(Map::ServiceIps, "10.43.0.5 . tcp . 80".to_string())],
            "goto local-default/web/tcp/http"
        );
    }

    #[test]
    fn an_endpoint_change_rewrites_one_service_chain_and_nothing_else() {
        let before = service_objects(
            &targets(port(), vec![endpoint(5), endpoint(6)], vec![]),
            &context(),
        );
        let after = service_objects(
            &targets(port(), vec![endpoint(5), endpoint(7)], vec![]),
            &context(),
        );
        let tx = incremental(&before, &after);
        let lines: Vec<&str> = tx.text().lines().collect();
        assert_eq!(
            lines,
            vec![
                "add chain ip shoal ep-default/web/tcp/http__10.42.0.7/8080",
                // A chain must be empty to be deleted.
                "flush chain ip shoal ep-default/web/tcp/http__10.42.0.6/8080",
                "flush chain ip shoal svc-default/web/tcp/http",
                "add rule ip shoal ep-default/web/tcp/http__10.42.0.7/8080 ip saddr 10.42.0.7 jump mark-for-masquerade",
                "add rule ip shoal ep-default/web/tcp/http__10.42.0.7/8080 meta l4proto tcp dnat to 10.42.0.7:8080",
                "add rule ip shoal svc-default/web/tcp/http ip daddr 10.43.0.5 ip saddr != 10.42.0.0/16 jump mark-for-masquerade",
                "add rule ip shoal svc-default/web/tcp/http numgen random mod 2 == 0 goto ep-default/web/tcp/http__10.42.0.5/8080",
                "add rule ip shoal svc-default/web/tcp/http goto ep-default/web/tcp/http__10.42.0.7/8080",
                "delete chain ip shoal ep-default/web/tcp/http__10.42.0.6/8080",
            ]
        );
        assert!(incremental(&after, &after).is_empty());
    }

    #[test]
    fn losing_the_last_endpoint_moves_the_address_to_the_reject_map() {
        let before = service_objects(&targets(port(), vec![endpoint(5)], vec![]), &context());
        let after = service_objects(&targets(port(), vec![], vec![]), &context());
        let text = incremental(&before, &after).text().to_string();
        let order: Vec<usize> = [
            "delete element ip shoal service-ips { 10.43.0.5 . tcp . 80 }",
            "flush chain ip shoal svc-default/web/tcp/http",
            "add element ip shoal no-endpoint-services { 10.43.0.5 . tcp . 80 : goto reject-chain }",
            "delete chain ip shoal svc-default/web/tcp/http",
        ]
        .iter()
        .map(|line| text.find(line).unwrap_or_else(|| panic!("{line} in {text}")))
        .collect();
        assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "{text}");
        // And a removed service takes everything with it.
        let gone = incremental(&before, &Objects::default());
        assert!(
            gone.text()
                .contains("delete chain ip shoal ep-default/web/tcp/http__10.42.0.5/8080")
        );
        assert!(!gone.text().contains("add "));
    }

    #[test]
    fn a_full_sync_flushes_then_deletes_only_stale_objects() {
        let objects = service_objects(&targets(port(), vec![endpoint(5)], vec![]), &context());
        let stale_chains = BTreeSet::from([
            "svc-default/web/tcp/http".to_string(),
            "svc-default/old/tcp/http".to_string(),
            "services".to_string(),
        ]);
        let stale_sets = BTreeSet::from([
            "aff-default/old/tcp/http__10.42.0.9/80".to_string(),
            "service-ips".to_string(),
        ]);
        let text = full_sync(&objects, &stale_chains, &stale_sets)
            .text()
            .to_string();
        assert!(text.starts_with("add table ip shoal\nflush table ip shoal\n"));
        assert!(text.contains("flush map ip shoal service-ips\n"));
        assert!(text.contains("delete chain ip shoal svc-default/old/tcp/http\n"));
        assert!(!text.contains("delete chain ip shoal svc-default/web/tcp/http\n"));
        assert!(!text.contains("delete chain ip shoal services\n"));
        assert!(text.contains("delete set ip shoal aff-default/old/tcp/http__10.42.0.9/80\n"));
        assert!(!text.contains("delete set ip shoal service-ips\n"));
        assert!(text.contains(
            "add element ip shoal service-ips { 10.43.0.5 . tcp . 80 : goto svc-default/web/tcp/http }"
        ));
    }
}
