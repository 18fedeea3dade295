//! This machine as a node of the cluster: the node agent `shoal up` runs
//! beside the server's parts, or alone on a machine that joined with
//! `--join URL --token TOKEN`.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use apiserver::join::{JoinAuthority, JoinRequest, JoinToken, key_and_request, node_files};

/// The node flags of `shoal up`, checked.
pub struct NodeSettings {
    pub name: String,
    pub ip: Option<IpAddr>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub taints: Vec<k8s_openapi::api::core::v1::Taint>,
    pub cluster_cidr: ipnet::Ipv4Net,
    pub service_cidr: ipnet::Ipv4Net,
    pub cluster_dns: std::net::Ipv4Addr,
    pub cluster_domain: String,
    pub agent_port: u16,
    pub max_pods: u32,
    pub pod_pids_limit: Option<u64>,
    pub insecure_images: bool,
    pub image_scan_fail_on: Option<scanner::severity::Severity>,
    pub disable_agent: bool,
    pub disable_scheduler: bool,
    pub disable_controllers: bool,
    pub lease_renew: std::time::Duration,
    pub node_monitor_grace_period: std::time::Duration,
    pub default_not_ready_toleration_seconds: i64,
    pub default_unreachable_toleration_seconds: i64,
    pub node_eviction_rate: Option<f64>,
}

impl NodeSettings {
    pub fn from_args(args: &crate::UpArgs) -> Result<NodeSettings, String> {
        let node = &args.node;
        let name = node.node_name.clone().unwrap_or_else(agent::host_name);
        apiserver::join::validate_node_name(&name).map_err(|error| error.message)?;
        let mut labels = std::collections::BTreeMap::new();
        for text in &node.node_labels {
            let (key, value) = agent::parse_label(text).map_err(|error| error.to_string())?;
            labels.insert(key, value);
        }
        let taints = node
            .node_taints
            .iter()
            .map(|text| agent::parse_taint(text).map_err(|error| error.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let insecure_images = match node.insecure_options.as_deref() {
            None => false,
            Some("image") => true,
            Some(other) => {
                return Err(format!(
                    "invalid --insecure-options {other:?}: the only option is \"image\""
                ));
            }
        };
        if node.cluster_cidr.prefix_len() > 24 {
            return Err(format!(
                "invalid --cluster-cidr {}: it must hold at least one /24",
                node.cluster_cidr
            ));
        }
        if args.join.is_some()
            && (node.disable_agent || node.disable_scheduler || node.disable_controllers)
        {
            return Err(
                "--disable-agent, --disable-scheduler and --disable-controllers are for servers; a machine that joins runs only an agent"
                    .into(),
            );
        }
        if let Some(rate) = node.node_eviction_rate
            && !(rate.is_finite() && rate >= 0.0)
        {
            return Err(format!(
                "invalid --node-eviction-rate {rate}: it must be a number of nodes per second, 0 or more"
            ));
        }
        for (flag, seconds) in [
            (
                "--default-not-ready-toleration-seconds",
                node.default_not_ready_toleration_seconds,
            ),
            (
                "--default-unreachable-toleration-seconds",
                node.default_unreachable_toleration_seconds,
            ),
        ] {
            if seconds < 0 {
                return Err(format!("invalid {flag} {seconds}: it must be 0 or more"));
            }
        }
        if node.node_monitor_grace_period <= node.node_lease_renew_interval {
            return Err(format!(
                "--node-monitor-grace-period ({:?}) must be longer than --node-lease-renew-interval ({:?})",
                node.node_monitor_grace_period, node.node_lease_renew_interval
            ));
        }
        if node.service_cidr.prefix_len() > 28 {
            return Err(format!(
                "invalid --service-cidr {}: it must hold at least 16 addresses",
                node.service_cidr
            ));
        }
        if node.service_cidr.contains(&node.cluster_cidr.network())
            || node.cluster_cidr.contains(&node.service_cidr.network())
        {
            return Err(format!(
                "--service-cidr {} overlaps --cluster-cidr {}: services and pods need ranges of their own",
                node.service_cidr, node.cluster_cidr
            ));
        }
        let cluster_domain = args.dns.cluster_domain.trim_end_matches('.').to_string();
        if cluster_domain.is_empty()
            || cluster_domain
                .split('.')
                .any(|label| !apiserver::is_dns1123_label(label))
        {
            return Err(format!(
                "invalid --cluster-domain {:?}: it must be a DNS name such as cluster.local",
                args.dns.cluster_domain
            ));
        }
        Ok(NodeSettings {
            name,
            ip: node.node_ip,
            labels,
            taints,
            cluster_cidr: node.cluster_cidr,
            service_cidr: node.service_cidr,
            cluster_dns: node
                .cluster_dns
                .unwrap_or_else(|| apiserver::nth_address(node.service_cidr, 10)),
            cluster_domain,
            agent_port: node.agent_port,
            max_pods: node.max_pods,
            pod_pids_limit: u64::try_from(node.pod_pids_limit)
                .ok()
                .filter(|max| *max > 0),
            insecure_images,
            image_scan_fail_on: node.image_scan_fail_on,
            disable_agent: node.disable_agent,
            disable_scheduler: node.disable_scheduler,
            disable_controllers: node.disable_controllers,
            lease_renew: node.node_lease_renew_interval,
            node_monitor_grace_period: node.node_monitor_grace_period,
            default_not_ready_toleration_seconds: node.default_not_ready_toleration_seconds,
            default_unreachable_toleration_seconds: node.default_unreachable_toleration_seconds,
            node_eviction_rate: node.node_eviction_rate,
        })
    }

    fn agent_config(&self, data_dir: &Path, node_ip: IpAddr) -> agent::AgentConfig {
        let mut config =
            agent::AgentConfig::new(self.name.clone(), data_dir.to_path_buf(), node_ip);
        config.labels = self.labels.clone();
        config.taints = self.taints.clone();
        config.agent_port = self.agent_port;
        config.max_pods = self.max_pods;
        config.pod_pids_limit = self.pod_pids_limit;
        config.insecure_images = self.insecure_images;
        config.image_scan_fail_on = self.image_scan_fail_on;
        config.cluster_dns = vec![IpAddr::V4(self.cluster_dns)];
        config.cluster_domain = self.cluster_domain.clone();
        // kubelet's ratio: a 40 s Lease renewed every 10 s.
        config.lease_renew = self.lease_renew;
        config.lease_duration = self.lease_renew * 4;
        // The agent checks the API's copy of its Ready condition as often
        // as it renews, so a node the controllers marked Unknown is Ready
        // again within one renewal of coming back.
        config.status_check = config.status_check.min(self.lease_renew);
        config
    }
}

/// A client for the API from a kubeconfig file.
pub async fn client_from(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read {}", kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .with_context(|| format!("cannot use {}", kubeconfig.display()))?;
    kube::Client::try_from(config).context("cannot make an API client")
}

/// The host part of an https URL, as an address (for the default node IP).
fn server_address(server: &str) -> Option<IpAddr> {
    let rest = server.strip_prefix("https://")?;
    let host = rest.split('/').next()?;
    let host = match host.rsplit_once(':') {
        Some((host, _)) => host,
        None => host,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Runs this machine as an agent of the cluster at `server` until SIGTERM or
/// SIGINT.
pub fn run_joined(
    server: &str,
    token: &str,
    data_dir: &Path,
    node: NodeSettings,
) -> anyhow::Result<()> {
    let token = JoinToken::parse(token)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("shoal")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let node_ip = match node.ip {
            Some(ip) => ip,
            None => server_address(server)
                .and_then(|peer| agent::local_address_towards(peer).ok())
                .unwrap_or(IpAddr::from([127, 0, 0, 1])),
        };
        let serving_names = vec![node_ip.to_string(), node.name.clone()];
        let files = agent::join::join(server, &token, &node.name, &serving_names, data_dir).await?;
        let client = client_from(&files.kubeconfig).await?;
        eprintln!(
            "shoal joined the cluster at {server} as node {} ({node_ip}); stop with Ctrl-C",
            node.name
        );
        let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
        let config = node.agent_config(data_dir, node_ip);
        let agent = tokio::spawn(agent::run(client, config, node.cluster_cidr, stop_receiver));
        tokio::select! {
            outcome = crate::serve::wait_for_signal() => outcome?,
            finished = wait_agent(agent) => return finished,
        }
        tracing::info!("shutting down");
        let _ = stop_sender.send(true);
        Ok(())
    })
}

async fn wait_agent(
    agent: tokio::task::JoinHandle<Result<(), agent::AgentError>>,
) -> anyhow::Result<()> {
    match agent.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.into()),
        Err(error) => Err(anyhow::anyhow!("the node agent stopped: {error}")),
    }
}

/// On a server: issues this machine's node certificates from the cluster
/// CA directly (no join round trip) and starts its agent against the local
/// API server at `api_url`.
pub async fn start_local_agent(
    data_dir: &Path,
    node: &NodeSettings,
    authority: &Arc<JoinAuthority>,
    api_url: &str,
    advertise: IpAddr,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let files = node_files(data_dir);
    let node_ip = node.ip.unwrap_or(advertise);
    let name_file = files.dir.join("node-name");
    let issued_for = std::fs::read_to_string(&name_file).unwrap_or_default();
    if issued_for != node.name || !files.client_cert.exists() || !files.serving_cert.exists() {
        let (client_key, client_csr) = key_and_request(&node.name)?;
        let (serving_key, serving_csr) = key_and_request(&node.name)?;
        let signed = authority
            .sign(&JoinRequest {
                node_name: node.name.clone(),
                client_csr,
                serving_csr,
                serving_names: vec![node_ip.to_string(), "127.0.0.1".into()],
            })
            .map_err(|error| anyhow::anyhow!("{}", error.message))?;
        for (path, text, secret) in [
            (&files.client_key, &client_key, true),
            (&files.client_cert, &signed.client_certificate, false),
            (&files.serving_key, &serving_key, true),
            (&files.serving_cert, &signed.serving_certificate, false),
        ] {
            apiserver::pki::write_file(path, text, secret)?;
        }
        std::fs::write(&name_file, &node.name)
            .with_context(|| format!("cannot write {}", name_file.display()))?;
    }
    agent::join::write_kubeconfig(&files, api_url)?;
    let client = client_from(&files.kubeconfig).await?;
    let config = node.agent_config(data_dir, node_ip);
    let cluster_cidr = node.cluster_cidr;
    Ok(tokio::spawn(async move {
        if let Err(error) = agent::run(client, config, cluster_cidr, stop).await {
            tracing::error!(%error, "the node agent stopped");
            eprintln!("error: the node agent stopped: {error}");
        }
    }))
}
