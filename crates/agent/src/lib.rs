//! shoal's node agent, kubelet's role: one per machine. It registers the
//! machine as a Node, renews the Node's Lease in `kube-node-lease` as its
//! heartbeat, reports the Node's status when it changes (or once a minute),
//! converges the machine to the pods bound to it, and runs the service
//! proxy (`proxy`: Services and EndpointSlices as nftables rules).
//!
//! The agent reaches the cluster only through the Kubernetes API (a
//! `kube::Client`), never the store: a machine that joined with `--join`
//! has no store of its own.

pub mod join;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod pods;
pub mod routes;
pub mod streams;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How this machine's agent is set up (`shoal up`'s node flags).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node's name (`--node-name`; default the host name).
    pub node_name: String,
    /// The machine's data directory (`--data-dir`).
    pub data_dir: PathBuf,
    /// The address other machines reach this one at (the Node's InternalIP).
    pub node_ip: IpAddr,
    /// `--node-label`s, beside the well-known ones the agent sets itself.
    pub labels: BTreeMap<String, String>,
    /// `--node-taint`s, set when the Node is registered.
    pub taints: Vec<k8s_openapi::api::core::v1::Taint>,
    /// Where the agent serves logs, exec and attach (kubelet's 10250).
    pub agent_port: u16,
    /// The most pods the machine takes (kubelet's `--max-pods`).
    pub max_pods: u32,
    /// The most processes one pod may have (kubelet's `--pod-pids-limit`).
    pub pod_pids_limit: Option<u64>,
    /// Lets the machine run images without a trusted signature
    /// (`--insecure-options=image`).
    pub insecure_images: bool,
    /// How often the Lease is renewed, and for how long it holds.
    pub lease_renew: Duration,
    pub lease_duration: Duration,
    /// How often the Node's status is compared with what was last sent; it
    /// is sent when it differs, or when `status_report` has passed.
    pub status_check: Duration,
    pub status_report: Duration,
    /// The cluster DNS pods are pointed at (kubelet's `--cluster-dns`;
    /// empty: pods use the machine's resolver).
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster's domain (kubelet's `--cluster-domain`).
    pub cluster_domain: String,
    /// The machine's resolver configuration, the base of `dnsPolicy:
    /// Default` (kubelet's `--resolv-conf`).
    pub resolv_conf: PathBuf,
    /// Refuse to start a container whose image has a known vulnerability
    /// at or above this severity (`--image-scan-fail-on`; off when
    /// `None`). The advisories are the machine's own vulnerability
    /// database (`shoal vulndb import`).
    pub image_scan_fail_on: Option<scanner::severity::Severity>,
}

impl AgentConfig {
    /// kubelet's defaults for the timings: a 40 s lease renewed every 10 s,
    /// status checked every 10 s and reported at least once a minute.
    pub fn new(node_name: String, data_dir: PathBuf, node_ip: IpAddr) -> AgentConfig {
        AgentConfig {
            node_name,
            data_dir,
            node_ip,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            agent_port: 10250,
            max_pods: 110,
            pod_pids_limit: Some(runtime::container::cgroup::DEFAULT_PIDS_LIMIT),
            insecure_images: false,
            lease_renew: Duration::from_secs(10),
            lease_duration: Duration::from_secs(40),
            status_check: Duration::from_secs(10),
            status_report: Duration::from_secs(60),
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".to_string(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            image_scan_fail_on: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Join(String),
    #[error("cannot register node {node}: {source}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the pod network: {0}")]
    Network(String),
    #[error("invalid {flag} {value:?}: {reason}")]
    Flag {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

/// Parses `--node-label key=value`.
pub fn parse_label(text: &str) -> Result<(String, String), AgentError> {
    let (key, value) = text.split_once('=').ok_or_else(|| AgentError::Flag {
        flag: "--node-label",
        value: text.to_string(),
        reason: "expected key=value".into(),
    })?;
    if key.is_empty() {
        return Err(AgentError::Flag {
            flag: "--node-label",
            value: text.to_string(),
            reason: "the key is empty".into(),
        });
    }
    Ok((key.to_string(), value.to_string()))
}

/// Parses `--node-taint key[=value]:Effect`.
pub fn parse_taint(text: &str) -> Result<k8s_openapi::api::core::v1::Taint, AgentError> {
    let flag_error = |reason: &str| AgentError::Flag {
        flag: "--node-taint",
        value: text.to_string(),
        reason: reason.to_string(),
    };
    let (pair, effect) = text
        .rsplit_once(':')
        .ok_or_else(|| flag_error("expected key[=value]:Effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(flag_error(
            "the effect must be NoSchedule, PreferNoSchedule or NoExecute",
        ));
    }
    let (key, value) = match pair.split_once('=') {
        Some((key, value)) => (key, Some(value.to_string())),
        None => (pair, None),
    };
    if key.is_empty() {
        return Err(flag_error("the key is empty"));
    }
    Ok(k8s_openapi::api::core::v1::Taint {
        key: key.to_string(),
        value,
        effect: effect.to_string(),
        time_added: None,
    })
}

/// The machine's host name, the default node name (lowercased: a node
/// name is a DNS subdomain).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_ascii_lowercase())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// The local address this machine uses to reach `peer`: the Node's
/// InternalIP when none is given (no packet is sent).
pub fn local_address_towards(peer: IpAddr) -> std::io::Result<IpAddr> {
    let socket = std::net::UdpSocket::bind((
        if peer.is_ipv4() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([0u16; 8])
        },
        0,
    ))?;
    socket.connect((peer, 9))?;
    Ok(socket.local_addr()?.ip())
}

/// The bridge pods' veths join on every machine.
pub const POD_BRIDGE: &str = "shoal-pods";

/// Runs the agent until `shutdown`: registers the Node, then keeps its
/// Lease and status, the routes to other machines' pods, and the pods
/// bound to it. Returns an error only when the machine cannot be
/// registered or its pod network cannot be set up.
pub async fn run(
    client: kube::Client,
    config: AgentConfig,
    cluster_cidr: ipnet::Ipv4Net,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), AgentError> {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Node;
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let stream_listener = streams::listen(config.node_ip, config.agent_port).await?;
    let machine_dir = config.data_dir.clone();
    let machine = tokio::task::spawn_blocking(move || node::Machine::read(&machine_dir))
        .await
        .map_err(|error| AgentError::Join(error.to_string()))?;
    let mut registered = node::register(&nodes, &config, &machine).await?;
    // The node IPAM controller gives the Node its pod range just after it is
    // registered; wait for it a while (a cluster without the controller, or
    // with its range used up, leaves the node without one).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while registered
        .spec
        .as_ref()
        .and_then(|spec| spec.pod_cidr.as_ref())
        .is_none()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if let Ok(current) = nodes.get(&config.node_name).await {
            registered = current;
        }
    }
    let pod_cidr = registered
        .spec
        .as_ref()
        .and_then(|spec| spec.pod_cidr.clone())
        .and_then(|cidr| cidr.parse::<runtime::pod::Ipv4Cidr>().ok());
    let cluster = format!("{cluster_cidr}")
        .parse::<runtime::pod::Ipv4Cidr>()
        .map_err(|error| AgentError::Flag {
            flag: "--cluster-cidr",
            value: cluster_cidr.to_string(),
            reason: error.to_string(),
        })?;
    let problem: Option<String> = match pod_cidr {
        None => Some(format!(
            "node {} has no pod range (spec.podCIDR): only hostNetwork pods can run",
            config.node_name
        )),
        Some(_) => None,
    };
    // A node without a range of its own still needs a runtime: hostNetwork
    // pods run. Its bridge then has no addresses to hand out.
    let network = runtime::pod::PodNetwork {
        bridge: POD_BRIDGE.to_string(),
        pod_cidr: pod_cidr.unwrap_or(cluster),
        cluster_cidr: cluster,
        mtu: None,
    };
    let data_dir = config.data_dir.clone();
    let options = runtime::pod::PodRuntimeOptions {
        pod_pids_limit: config.pod_pids_limit,
        ..runtime::pod::PodRuntimeOptions::default()
    };
    let pod_runtime = tokio::task::spawn_blocking(move || {
        let runtime = runtime::pod::PodRuntime::open_with(&data_dir, network, options)?;
        if pod_cidr.is_some() {
            runtime.ensure_network()?;
        }
        Ok::<_, runtime::pod::PodError>(runtime)
    })
    .await
    .map_err(|error| AgentError::Join(error.to_string()))?
    .map_err(|error| AgentError::Network(error.to_string()))?;
    // Before anything runs: what was moved away while this machine was
    // gone or cut off goes first (bounded retries: an API that cannot be
    // listed now leaves it to the pod watch's first listing).
    for attempt in 0..10 {
        match pods::remove_moved(&client, &pod_runtime, &config).await {
            Ok(removed) => {
                if removed > 0 {
                    tracing::info!(removed, "stopped the pods moved off this node");
                }
                break;
            }
            Err(error) if attempt < 9 => {
                tracing::debug!(%error, "cannot check for moved pods yet; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(error) => tracing::warn!(%error, "cannot check for moved pods; the pod watch will"),
        }
    }
    tracing::info!(node = %config.node_name, pod_cidr = ?pod_cidr.map(|c| c.to_string()), "the node agent is up");

    let leases: kube::Api<Lease> = kube::Api::namespaced(client.clone(), lease::LEASE_NAMESPACE);
    let mut tasks = tokio::task::JoinSet::new();
    let (reconnected, reconnections) = tokio::sync::watch::channel(0u64);
    tasks.spawn(lease::heartbeat(
        leases,
        config.clone(),
        registered.clone(),
        reconnected,
        shutdown.clone(),
    ));
    let status_problem = problem.clone();
    tasks.spawn(node::report_status(
        nodes.clone(),
        config.clone(),
        machine,
        move || status_problem.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(routes::follow(
        nodes,
        config.node_name.clone(),
        pod_runtime.clone(),
        shutdown.clone(),
    ));
    // The service proxy (kube-proxy's role): its rules stay when the agent
    // stops, so running pods keep reaching services; `shoal proxy cleanup`
    // removes them.
    tasks.spawn(proxy::run(
        client.clone(),
        proxy::ProxyConfig::new(proxy::NodeContext {
            node_name: config.node_name.clone(),
            cluster_cidr,
        }),
        proxy::Observer::default(),
        shutdown.clone(),
    ));
    let stream_runtime = pod_runtime.clone();
    let pki_dir = config.data_dir.join("pki");
    let stream_shutdown = shutdown.clone();
    tasks.spawn(async move {
        if let Err(error) =
            streams::serve(stream_runtime, &pki_dir, stream_listener, stream_shutdown).await
        {
            tracing::error!(%error, "the agent cannot serve logs and exec");
        }
    });
    let scan_policy = config.image_scan_fail_on.map(|fail_on| {
        std::sync::Arc::new(scanner::policy::ScanPolicy::new(&config.data_dir, fail_on))
    });
    let context = std::sync::Arc::new(pods::worker::Context {
        events: pods::events::Events::new(client.clone(), config.node_name.clone()),
        scan_policy,
        client,
        runtime: pod_runtime,
        config,
    });
    tasks.spawn(pods::run(context, reconnections, shutdown.clone()));
    let mut shutdown = shutdown;
    let _ = shutdown.wait_for(|stopped| *stopped).await;
    // Containers keep running: an agent that stops is not a machine that
    // stops, and the next start adopts them.
    tasks.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        assert_eq!(
            parse_label("disk=ssd").unwrap(),
            ("disk".to_string(), "ssd".to_string())
        );
        assert!(parse_label("disk").is_err());
        assert!(parse_label("=x").is_err());
        let taint = parse_taint("dedicated=gpu:NoSchedule").unwrap();
        assert_eq!(
            (
                taint.key.as_str(),
                taint.value.as_deref(),
                taint.effect.as_str()
            ),
            ("dedicated", Some("gpu"), "NoSchedule")
        );
        let taint = parse_taint("maintenance:NoExecute").unwrap();
        assert_eq!(taint.value, None);
        for bad in ["x", "x=y", "x=y:Sometimes", ":NoSchedule"] {
            assert!(parse_taint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_local_address_towards_loopback_is_loopback() {
        assert_eq!(
            local_address_towards(IpAddr::from([127, 0, 0, 1])).unwrap(),
            IpAddr::from([127, 0, 0, 1])
        );
    }
}
