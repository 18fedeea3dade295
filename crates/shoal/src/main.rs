//! The `shoal` binary: one program for every part of shoal. Each subcommand
//! lives in its own module; this file only parses the command line.

mod dashboard;
mod kubeconfig;
mod node;
mod scan;
mod serve;
mod sim;
mod template;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use store::config::{parse_initial_cluster, parse_url, parse_url_list};
use url::Url;

/// Every part of shoal allocates through jemalloc: glibc's malloc and free were
/// 9-13% of a member's CPU under put loads; side by side jemalloc took ~15% off
/// the CPU of a single-client put, for ~15 MiB more peak memory (BENCHMARKS.md).
/// The `system-allocator` feature leaves it out, for heap profilers.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once as it starts: one arena for every thread (a
/// member has a handful; memory one tokio worker frees is then reused by the
/// next, whichever runs it) and unused pages handed back after one second
/// instead of ten. With the defaults, peak member RSS in bench/compare was
/// 180 MiB; with these, 148 MiB (glibc: 141 MiB).
#[cfg(not(feature = "system-allocator"))]
#[allow(unsafe_code)] // the symbol jemalloc reads its options from: plain bytes
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static JEMALLOC_OPTIONS: &[u8] = b"narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// shoal: a self-driving cluster platform in one binary.
#[derive(Parser)]
#[command(name = "shoal", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start shoal on this machine: a single-member store serving the etcd v3 API
    /// on 127.0.0.1:2379, and the Kubernetes API on https://127.0.0.1:6443.
    Up(UpArgs),
    /// Run one store member. Takes etcd's flags, with etcd's meanings.
    Store(Box<StoreArgs>),
    /// Run the controllers alone (kube-controller-manager's role) against a
    /// cluster's Kubernetes API, e.g. beside `shoal up --disable-controllers`.
    /// Several may run: one leads, under the kube-controller-manager Lease.
    Controllers(ControllersArgs),
    /// Work with store snapshots (etcd's `snapshot` commands).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Load-test an etcd v3 endpoint (etcd or shoal) with etcd's benchmark workloads.
    Bench(Box<bench::BenchArgs>),
    /// Run the store under faults on network-namespace test hosts and check the
    /// recorded client history (needs root). See TESTING.md.
    Chaos(Box<chaos::ChaosArgs>),
    /// Run seeds of the store's deterministic simulation (simulated network,
    /// clock and disk; one checker per invariant). See TESTING.md.
    Sim(Box<sim::SimArgs>),
    /// Render a configuration file from store keys and Services' endpoints,
    /// check it, swap it in atomically and reload (confd's role).
    Template(Box<template::TemplateArgs>),
    /// The node's service proxy (its rules are run by the agent of
    /// `shoal up`).
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// Import and inspect the vulnerability data `shoal image scan` matches
    /// images against.
    Vulndb(scan::VulndbArgs),
    /// Issue a kubeconfig for a user: a client certificate from the cluster
    /// CA with the user as its common name and the groups as its
    /// organizations. Run on a server (it reads the CA from the data dir).
    Kubeconfig(kubeconfig::KubeconfigArgs),
    #[command(flatten)]
    Runtime(runtime::Command),
}

#[derive(Args)]
struct ControllersArgs {
    /// The kubeconfig to reach the API with.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// The cluster's pod range, split into a /24 per node.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: ipnet::Ipv4Net,
    /// How long a node may go without renewing its Lease before it is
    /// marked NotReady (Unknown) and tainted unreachable.
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,
}

#[derive(Subcommand)]
enum ProxyCommand {
    /// Delete every rule the service proxy made on this machine (its
    /// nftables table `ip shoal`). Stopping the agent leaves them, so that
    /// running pods keep reaching services.
    Cleanup,
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Create a new member data directory from a snapshot file: one saved from
    /// shoal (`etcdctl snapshot save` against shoal) or from etcd 3.4.
    Restore(RestoreArgs),
}

#[derive(Args)]
struct RestoreArgs {
    /// The snapshot file.
    file: PathBuf,
    /// Human-readable name for the restored member.
    #[arg(long, default_value = "default")]
    name: String,
    /// Path to the new data directory [default: ${name}.shoal].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The new cluster's members: name=peer-url,… [default: ${name}=${initial-advertise-peer-urls}].
    #[arg(long)]
    initial_cluster: Option<String>,
    /// The new cluster's token.
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// This member's peer URLs.
    #[arg(long, default_value = "http://localhost:2380", value_parser = url_list)]
    initial_advertise_peer_urls: UrlList,
}

#[derive(Args)]
struct UpArgs {
    /// Where shoal keeps its state.
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "/var/lib/shoal")]
    data_dir: PathBuf,
    /// Where the store serves clients (etcdctl, client libraries).
    #[arg(long, default_value = "http://127.0.0.1:2379", value_parser = parse_url)]
    listen_client_urls: Url,
    /// Where the store listens for other members.
    #[arg(long, default_value = "http://127.0.0.1:2380", value_parser = parse_url)]
    listen_peer_urls: Url,
    /// Where the Kubernetes API listens (HTTPS, client certificates).
    #[arg(long, default_value = "127.0.0.1:6443")]
    api_listen: std::net::SocketAddr,
    /// The address clients reach the API at, put in the serving certificate
    /// and the admin kubeconfig [default: the --api-listen address, or
    /// 127.0.0.1 when that is a wildcard].
    #[arg(long)]
    advertise_address: Option<std::net::IpAddr>,
    /// Users who authenticate with bearer tokens: a CSV file of
    /// `token,user,uid[,"group1,group2"]` lines, as kube-apiserver's flag.
    #[arg(long, value_name = "FILE")]
    token_auth_file: Option<PathBuf>,
    /// Encrypt chosen resources (Secrets, …) in the store: an
    /// EncryptionConfiguration file with aescbc, aesgcm, secretbox or
    /// identity providers, as kube-apiserver's flag.
    #[arg(long, value_name = "FILE")]
    encryption_provider_config: Option<PathBuf>,
    /// Raise an alarm when the store's backend exceeds this many bytes (0
    /// means the default, 2 GiB), as etcd's flag.
    #[arg(long, default_value_t = 0)]
    quota_backend_bytes: u64,
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,
    /// Join the cluster whose API server is at this URL
    /// (https://SERVER:6443) as a machine that runs pods (an agent only:
    /// no store, no API server). Needs --token.
    #[arg(long, requires = "token", value_name = "URL")]
    join: Option<String>,
    /// The cluster's join token: the contents of DATA_DIR/join-token on the
    /// first server.
    #[arg(long, env = "SHOAL_TOKEN", requires = "join", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    dns: DnsArgs,
}

/// The cluster DNS a server runs (not a joined machine).
#[derive(Args)]
struct DnsArgs {
    /// The cluster's DNS domain: services are SERVICE.NAMESPACE.svc.DOMAIN.
    #[arg(long, default_value = dns::DEFAULT_CLUSTER_DOMAIN)]
    cluster_domain: String,
    /// Where the cluster DNS listens (UDP and TCP), or `none` for no DNS
    /// [default: the advertise address, port 53; when that is loopback,
    /// which pods cannot reach, the address this machine reaches other
    /// networks from].
    #[arg(long, value_name = "ADDRESS:PORT|none")]
    cluster_dns_listen: Option<String>,
    /// An upstream resolver for names outside the cluster's domains
    /// (repeatable) [default: the non-loopback nameservers of
    /// /etc/resolv.conf].
    #[arg(long = "dns-upstream", value_name = "ADDRESS[:PORT]")]
    dns_upstreams: Vec<String>,
    /// The domain SkyDNS records under /skydns/ in the store are served in.
    #[arg(long, default_value = dns::DEFAULT_SKYDNS_DOMAIN)]
    skydns_domain: String,
}

/// How this machine appears as a Node and runs pods.
#[derive(Args)]
struct NodeArgs {
    /// The Node's name [default: the host name].
    #[arg(long)]
    node_name: Option<String>,
    /// The address other machines reach this one at (the Node's InternalIP)
    /// [default: the local address used to reach the API server].
    #[arg(long)]
    node_ip: Option<std::net::IpAddr>,
    /// A label for the Node, key=value (repeatable).
    #[arg(long = "node-label", value_name = "KEY=VALUE")]
    node_labels: Vec<String>,
    /// A taint for the Node, key[=value]:Effect (repeatable).
    #[arg(long = "node-taint", value_name = "KEY[=VALUE]:EFFECT")]
    node_taints: Vec<String>,
    /// The cluster's pod range; each node gets a /24 of it.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: ipnet::Ipv4Net,
    /// The range Services' ClusterIPs come from; its first address is the
    /// `kubernetes` service's, its tenth the cluster DNS's.
    #[arg(long, default_value = apiserver::DEFAULT_SERVICE_CIDR)]
    service_cidr: ipnet::Ipv4Net,
    /// The cluster DNS address pods' resolv.conf names [default: the
    /// service range's tenth address, kube-dns' ClusterIP].
    #[arg(long)]
    cluster_dns: Option<std::net::Ipv4Addr>,
    /// Where the node agent serves logs, exec and attach to the API server.
    #[arg(long, default_value_t = 10250)]
    agent_port: u16,
    /// The most pods this machine runs.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// The most processes one pod may have, its containers together
    /// (kubelet's flag; -1 or 0 for no limit).
    #[arg(long, default_value_t = 4096, allow_negative_numbers = true)]
    pod_pids_limit: i64,
    /// `image`: run images without a trusted signature on this machine.
    #[arg(long = "insecure-options", value_name = "image")]
    insecure_options: Option<String>,
    /// Refuse to start a container whose image has a known vulnerability
    /// at or above this severity (negligible, low, medium, high,
    /// critical), matched against this machine's `shoal vulndb` data; with
    /// no data, every image is refused. Off by default.
    #[arg(long, value_name = "SEVERITY")]
    image_scan_fail_on: Option<scanner::severity::Severity>,
    /// Run no node agent on this server (it then runs no pods).
    #[arg(long)]
    disable_agent: bool,
    /// Run no scheduler on this server.
    #[arg(long)]
    disable_scheduler: bool,
    /// Run no controllers on this server (node IPAM, the node lifecycle,
    /// taint-based eviction, pod garbage collection).
    #[arg(long)]
    disable_controllers: bool,
    /// How often this machine's agent renews its node Lease, its
    /// heartbeat (the Lease holds for four times as long).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    node_lease_renew_interval: std::time::Duration,
    /// How long a node may go without renewing its Lease before the
    /// controllers mark it NotReady (Unknown) and taint it unreachable.
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// The tolerationSeconds of the node.kubernetes.io/not-ready NoExecute
    /// toleration the API server gives pods that have none (0: such pods
    /// are evicted as soon as their node is marked).
    #[arg(long, default_value_t = 0)]
    default_not_ready_toleration_seconds: i64,
    /// The tolerationSeconds of the node.kubernetes.io/unreachable
    /// NoExecute toleration the API server gives pods that have none (0:
    /// such pods are evicted as soon as their node is marked).
    #[arg(long, default_value_t = 0)]
    default_unreachable_toleration_seconds: i64,
    /// Nodes per second marked for eviction in a healthy zone [default: no
    /// limit]. A zone with more than two nodes and at least 55% of them
    /// not Ready stops evictions (above 50 nodes: 0.01 per second).
    #[arg(long)]
    node_eviction_rate: Option<f64>,
}

#[derive(Args)]
struct StoreArgs {
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    name: String,
    /// Path to the data directory [default: ${name}.shoal].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// List of URLs to listen on for client traffic.
    #[arg(long, default_value = "http://localhost:2379", value_parser = url_list)]
    listen_client_urls: UrlList,
    /// List of this member's client URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://localhost:2379", value_parser = url_list)]
    advertise_client_urls: UrlList,
    /// List of URLs to listen on for peer traffic.
    #[arg(long, default_value = "http://localhost:2380", value_parser = url_list)]
    listen_peer_urls: UrlList,
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://localhost:2380", value_parser = url_list)]
    initial_advertise_peer_urls: UrlList,
    /// Initial cluster configuration for bootstrapping: name=peer-url,…
    /// [default: ${name}=${initial-advertise-peer-urls}].
    #[arg(long)]
    initial_cluster: Option<String>,
    /// Initial cluster state: new (founding a cluster) or existing (joining one).
    #[arg(long, value_enum, default_value_t = ClusterState::New)]
    initial_cluster_state: ClusterState,
    /// Initial cluster token, which keeps the member ids of separate clusters apart.
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value_t = 1536 * 1024)]
    max_request_bytes: u64,
    /// Raise an alarm when the backend size exceeds the given quota (0 means the
    /// default, 2 GiB).
    #[arg(long, default_value_t = 0)]
    quota_backend_bytes: u64,
    /// Number of committed transactions between compactions of the raft log.
    #[arg(long, default_value_t = 100_000)]
    snapshot_count: u64,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value_t = 100)]
    heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to time out.
    #[arg(long, default_value_t = 1000)]
    election_timeout: u64,
    /// Interpret --auto-compaction-retention as a time span ("periodic") or a
    /// number of revisions ("revision").
    #[arg(long, default_value = "periodic")]
    auto_compaction_mode: String,
    /// Auto compaction retention: for periodic mode a duration such as 1h or 30m
    /// (a plain number means hours), for revision mode a number of revisions.
    /// 0 turns auto compaction off.
    #[arg(long, default_value = "0")]
    auto_compaction_retention: String,
    /// Promote learners to voting members as soon as they have caught up with the
    /// leader (not in etcd 3.4).
    #[arg(long)]
    auto_promote_learners: bool,
    /// Accepted for etcd compatibility: shoal always serves the v2 keys API (over
    /// the same store as v3), so the flag changes nothing.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = true,
          action = clap::ArgAction::Set)]
    enable_v2: bool,
    /// Refuse membership changes that could cost the cluster its quorum.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    strict_reconfig_check: bool,
    /// The kind of token Authenticate hands out: "simple" (etcd's default;
    /// the only kind shoal makes today).
    #[arg(long, default_value = "simple")]
    auth_token: String,
    /// How long an unused simple token stays valid, in seconds.
    #[arg(long, default_value_t = 300)]
    auth_token_ttl: u64,
    /// The bcrypt cost of stored password hashes (4 to 31).
    #[arg(long, default_value_t = store::auth::DEFAULT_BCRYPT_COST)]
    bcrypt_cost: u32,
    /// How often watchers that asked for progress notifications get one.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    experimental_watch_progress_notify_interval: std::time::Duration,
    #[command(flatten)]
    client_tls: ClientTlsArgs,
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,
}

/// etcd's client TLS flags; TLS is served on the `https://` client URLs.
#[derive(Args, Clone, Default)]
struct ClientTlsArgs {
    /// Path to the client server TLS cert file.
    #[arg(long)]
    cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long)]
    trusted_ca_file: Option<PathBuf>,
    /// Enable client cert authentication.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false,
          action = clap::ArgAction::Set)]
    client_cert_auth: bool,
    /// Client TLS using generated certificates.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false,
          action = clap::ArgAction::Set)]
    auto_tls: bool,
}

impl ClientTlsArgs {
    fn files(&self) -> store::config::TlsFiles {
        store::config::TlsFiles {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            trusted_ca_file: self.trusted_ca_file.clone(),
            client_cert_auth: self.client_cert_auth,
            auto_tls: self.auto_tls,
        }
    }
}

/// A comma-separated list of URLs, as etcd's URL flags take them.
#[derive(Clone)]
struct UrlList(Vec<Url>);

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    store::config::parse_go_duration(text)
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| format!("{text:?} is not a duration such as 10m or 30s"))
}

fn url_list(text: &str) -> Result<UrlList, String> {
    parse_url_list(text).map(UrlList)
}

#[derive(Clone, Copy, ValueEnum)]
enum ClusterState {
    New,
    Existing,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// `--auth-token`, `--auth-token-ttl` and `--bcrypt-cost`, checked as etcd
/// checks them.
fn auth_settings(
    token: &str,
    token_ttl_seconds: u64,
    bcrypt_cost: u32,
) -> Result<store::auth::AuthSettings, String> {
    let kind = token.split(',').next().unwrap_or_default();
    if kind != "simple" {
        return Err(format!(
            "invalid --auth-token {token:?}: shoal issues simple tokens only (jwt is not supported yet)"
        ));
    }
    // etcd falls back to the default cost for one out of bcrypt's range.
    let bcrypt_cost = if (4..=31).contains(&bcrypt_cost) {
        bcrypt_cost
    } else {
        store::auth::DEFAULT_BCRYPT_COST
    };
    Ok(store::auth::AuthSettings {
        bcrypt_cost,
        token_ttl: std::time::Duration::from_secs(token_ttl_seconds.max(1)),
    })
}

impl StoreArgs {
    fn into_config(self) -> Result<store::MemberConfig, String> {
        let initial_cluster_text = match &self.initial_cluster {
            Some(text) => text.clone(),
            None => self
                .initial_advertise_peer_urls
                .0
                .iter()
                .map(|url| format!("{}={}", self.name, store::config::url_text(url)))
                .collect::<Vec<_>>()
                .join(","),
        };
        let initial_cluster = parse_initial_cluster(&initial_cluster_text)
            .map_err(|error| format!("invalid --initial-cluster: {error}"))?;
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from(format!("{}.shoal", self.name)));
        let auto_compaction = store::config::parse_auto_compaction(
            &self.auto_compaction_mode,
            &self.auto_compaction_retention,
        )?;
        Ok(store::MemberConfig {
            name: self.name,
            data_dir,
            listen_client_urls: self.listen_client_urls.0,
            advertise_client_urls: self.advertise_client_urls.0,
            listen_peer_urls: self.listen_peer_urls.0,
            initial_advertise_peer_urls: self.initial_advertise_peer_urls.0,
            initial_cluster,
            initial_cluster_state: match self.initial_cluster_state {
                ClusterState::New => store::InitialClusterState::New,
                ClusterState::Existing => store::InitialClusterState::Existing,
            },
            initial_cluster_token: self.initial_cluster_token,
            max_request_bytes: self.max_request_bytes,
            quota_backend_bytes: if self.quota_backend_bytes == 0 {
                2 * 1024 * 1024 * 1024
            } else {
                self.quota_backend_bytes
            },
            snapshot_count: self.snapshot_count,
            heartbeat_interval: std::time::Duration::from_millis(self.heartbeat_interval),
            election_timeout: std::time::Duration::from_millis(self.election_timeout),
            auto_compaction,
            auto_promote_learners: self.auto_promote_learners,
            watch_progress_notify_interval: self.experimental_watch_progress_notify_interval,
            strict_reconfig_check: self.strict_reconfig_check,
            auth: auth_settings(&self.auth_token, self.auth_token_ttl, self.bcrypt_cost)?,
            client_tls: self.client_tls.files(),
        })
        .inspect(|_| {
            if !self.enable_v2 {
                tracing::warn!("--enable-v2=false is ignored: the v2 keys API is always served");
            }
        })
    }
}

fn main() -> ExitCode {
    // Containers start by running this binary again as their init or monitor;
    // that must happen before any argument parsing.
    if let Some(code) = runtime::reexec_dispatch() {
        return code;
    }
    let parsed = scan::add_to(Cli::command())
        .try_get_matches()
        .and_then(|matches| {
            if let Some(code) = scan::dispatch(&matches) {
                return Ok(Err(code));
            }
            Cli::from_arg_matches(&matches).map(Ok)
        });
    let cli = match parsed {
        Ok(Ok(cli)) => cli,
        Ok(Err(code)) => return code,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) || matches!(
                error.kind(),
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = error.print();
                return if error.use_stderr() {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // One line that names the problem; `--help` has the rest.
            let rendered = error.render().to_string();
            let first_line = rendered
                .lines()
                .next()
                .unwrap_or("error: invalid arguments");
            eprintln!("{first_line}");
            return ExitCode::from(2);
        }
    };
    let (config, log_level, platform) = match cli.command {
        Command::Snapshot(SnapshotCommand::Restore(args)) => return restore_snapshot(args),
        Command::Bench(args) => {
            return match bench::run(*args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Chaos(args) => {
            return match chaos::run(*args) {
                Ok(code) => code,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Sim(args) => return sim::run(*args),
        Command::Template(args) => {
            init_logging(args.log_level);
            return template::run(*args);
        }
        Command::Proxy(ProxyCommand::Cleanup) => {
            return match proxy::cleanup() {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("the service proxy has no rules on this machine");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: cannot delete the service proxy's rules: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Controllers(args) => {
            init_logging(args.log_level);
            return match serve::run_controllers(
                &args.kubeconfig,
                args.cluster_cidr,
                args.node_monitor_grace_period,
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Kubeconfig(args) => {
            return match kubeconfig::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Vulndb(args) => {
            return match scan::run_vulndb(args) {
                Ok(code) => code,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Runtime(command) => {
            return match runtime::run_command(command) {
                Ok(code) => code,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Up(args) => {
            let node = match node::NodeSettings::from_args(&args) {
                Ok(node) => node,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(2);
                }
            };
            if let (Some(server), Some(token)) = (&args.join, &args.token) {
                init_logging(args.log_level);
                return match node::run_joined(server, token, &args.data_dir, node) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => {
                        eprintln!("error: {error:#}");
                        ExitCode::FAILURE
                    }
                };
            }
            let mut config = store::MemberConfig::single(
                "default",
                args.data_dir.join("store"),
                args.listen_client_urls,
                args.listen_peer_urls,
            );
            if args.quota_backend_bytes > 0 {
                config.quota_backend_bytes = args.quota_backend_bytes;
            }
            let advertise = args.advertise_address.unwrap_or_else(|| {
                if args.api_listen.ip().is_unspecified() {
                    std::net::IpAddr::from([127, 0, 0, 1])
                } else {
                    args.api_listen.ip()
                }
            });
            let dns = match serve::DnsSettings::from_args(
                &args.dns.cluster_domain,
                args.dns.cluster_dns_listen.as_deref(),
                &args.dns.dns_upstreams,
                &args.dns.skydns_domain,
                advertise,
                node.service_cidr,
                node.cluster_dns,
            ) {
                Ok(dns) => dns,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(2);
                }
            };
            let token_auth_file = match &args.token_auth_file {
                Some(path) => match apiserver::authn::TokenFile::load(path) {
                    Ok(file) => Some(std::sync::Arc::new(file)),
                    Err(error) => {
                        eprintln!("error: {error}");
                        return ExitCode::from(2);
                    }
                },
                None => None,
            };
            let encryption = match &args.encryption_provider_config {
                Some(path) => match apiserver::encryption::EncryptionConfig::load(path) {
                    Ok(config) => Some(config),
                    Err(error) => {
                        eprintln!("error: {error}");
                        return ExitCode::from(2);
                    }
                },
                None => None,
            };
            let platform = serve::Platform {
                data_dir: args.data_dir,
                api_listen: args.api_listen,
                advertise_address: advertise,
                node,
                dns,
                token_auth_file,
                encryption,
            };
            (config, args.log_level, Some(platform))
        }
        Command::Store(args) => {
            let log_level = args.log_level;
            match args.into_config() {
                Ok(config) => (config, log_level, None),
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    init_logging(log_level);
    match serve::run_store(config, platform) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn restore_snapshot(args: RestoreArgs) -> ExitCode {
    let store_args = StoreArgs {
        name: args.name,
        data_dir: args.data_dir,
        listen_client_urls: UrlList(vec![parse_url("http://localhost:2379").expect("valid")]),
        advertise_client_urls: UrlList(vec![parse_url("http://localhost:2379").expect("valid")]),
        listen_peer_urls: args.initial_advertise_peer_urls.clone(),
        initial_advertise_peer_urls: args.initial_advertise_peer_urls,
        initial_cluster: args.initial_cluster,
        initial_cluster_state: ClusterState::New,
        initial_cluster_token: args.initial_cluster_token,
        max_request_bytes: 1536 * 1024,
        quota_backend_bytes: 0,
        snapshot_count: 100_000,
        heartbeat_interval: 100,
        election_timeout: 1000,
        auto_compaction_mode: "periodic".into(),
        auto_compaction_retention: "0".into(),
        auto_promote_learners: false,
        experimental_watch_progress_notify_interval: std::time::Duration::from_secs(600),
        strict_reconfig_check: true,
        auth_token: "simple".into(),
        auth_token_ttl: 300,
        bcrypt_cost: store::auth::DEFAULT_BCRYPT_COST,
        enable_v2: true,
        client_tls: ClientTlsArgs::default(),
        log_level: LogLevel::Info,
    };
    let config = match store_args.into_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    match store::restore::restore(&args.file, &config) {
        Ok(summary) => {
            println!(
                "restored {} snapshot {} into {} (member {:x}, cluster {:x}, revision {})",
                summary.source,
                args.file.display(),
                config.data_dir.display(),
                summary.member_id,
                summary.cluster_id,
                summary.revision
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: LogLevel) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.directive()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
