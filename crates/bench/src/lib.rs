//! `shoal bench`: a load generator for the etcd v3 API with the etcd benchmark
//! tool's subcommands and flags, so the same command measures etcd and shoal;
//! and for the Kubernetes API (the `kube-*` workloads).
//!
//! The command line is here; `connect` opens the gRPC connections, `kube`
//! the Kubernetes API's (HTTP/2 over TLS, from a kubeconfig), `runner`
//! drives closed-loop clients, `report` keeps the HDR histograms and prints the
//! summary, and `workloads` holds one module per family of subcommands.

mod connect;
mod keys;
mod kube;
mod progress;
mod report;
mod runner;
mod unary;
mod workloads;

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};

/// Flags shared by every workload, with the etcd benchmark tool's names and
/// defaults. They may be given before or after the subcommand.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// gRPC endpoints, comma-separated (host:port or http://host:port).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Send every request to the leader: ask each endpoint for its status and
    /// keep only the one that leads.
    #[arg(long, global = true)]
    pub target_leader: bool,
    /// Number of gRPC connections (HTTP/2), spread over the endpoints.
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,
    /// Number of concurrent clients, spread over the connections.
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,
    /// Dial timeout for each connection, in seconds.
    #[arg(long, global = true, default_value_t = 5)]
    pub dial_timeout: u64,
    /// Verify certificates of TLS-enabled secure servers using this CA bundle.
    #[arg(long, global = true)]
    pub cacert: Option<std::path::PathBuf>,
    /// Identify the client using this TLS certificate file.
    #[arg(long, global = true)]
    pub cert: Option<std::path::PathBuf>,
    /// Identify the client using this TLS key file. (The field has its own
    /// name: `key` is the range and put workloads' key argument.)
    #[arg(long = "key", global = true, value_name = "KEY_FILE")]
    pub key_file: Option<std::path::PathBuf>,
    /// How to print the summary.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Call as this user, `name:password` (etcd benchmark's flag): the tool
    /// authenticates once and sends the token with every KV call.
    #[arg(long, global = true)]
    pub user: Option<String>,
    #[command(subcommand)]
    pub workload: Workload,
}

impl BenchArgs {
    /// The connections' TLS settings, from `--cacert`, `--cert`, `--key`.
    pub fn tls(&self) -> anyhow::Result<connect::Tls> {
        connect::tls_from_flags(
            self.cacert.as_deref(),
            self.cert.as_deref(),
            self.key_file.as_deref(),
        )
    }
}

/// How the summary is printed on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Read consistency, as the etcd benchmark tool spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable: the member confirms it is current (read index) first.
    #[value(name = "l")]
    Linearizable,
    /// Serializable: the member answers from its local state.
    #[value(name = "s")]
    Serializable,
}

/// The benchmark workloads.
#[derive(Subcommand, Debug, Clone)]
pub enum Workload {
    /// Put keys: `--total` Put requests.
    Put(workloads::kv::PutArgs),
    /// Range over a key or a key range: `--total` Range requests.
    Range(workloads::kv::RangeArgs),
    /// Transactions of `--txn-ops` puts each.
    TxnPut(workloads::kv::TxnPutArgs),
    /// Transactions that read a range or put a key, mixed by `--rw-ratio`.
    TxnMixed(workloads::kv::TxnMixedArgs),
    /// Many watchers on few streams: creation latency and event delivery.
    Watch(workloads::watch::WatchArgs),
    /// Latency from a put to its event, seen by every client's watcher.
    WatchLatency(workloads::watch::WatchLatencyArgs),
    /// Lease keep-alives over one keep-alive stream per client.
    LeaseKeepalive(workloads::lease::LeaseKeepaliveArgs),
    /// Create objects through the Kubernetes API (`--conns` connections of the
    /// kubeconfig's server); `--compare-store` then puts the same bytes
    /// straight into the store at `--endpoints`.
    KubeCreate(workloads::kube::KubeCreateArgs),
    /// List a collection through the Kubernetes API as `kubectl get` does.
    KubeList(workloads::kube::KubeListArgs),
    /// Latency from a change of one ConfigMap to each of `--clients` watchers.
    KubeWatchLatency(workloads::kube::KubeWatchLatencyArgs),
    /// Simulated machines (Nodes and Leases, pods marked Running without
    /// running anything) against a real server and its scheduler: bindings
    /// per second and create-to-bound latency.
    HollowNodes(workloads::hollow::HollowNodesArgs),
    /// The service proxy's sync against a real API server, rules in the
    /// network namespace `--netns`: from an endpoint change written to the
    /// API to its rules in the kernel, and the full resync.
    ProxySync(workloads::proxy::ProxySyncArgs),
    /// The service proxy's rules without a server: nftables against
    /// iptables-restore, a full sync and one endpoint change, in `--netns`.
    ProxyRules(workloads::proxy::ProxyRulesArgs),
}

/// Runs one benchmark and prints its summary on stdout (progress goes to
/// stderr when it is a terminal).
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(args.conns >= 1, "--conns must be at least 1");
    let summary = match &args.workload {
        Workload::KubeCreate(workload) => workloads::kube::create(&args, workload).await?,
        Workload::KubeList(workload) => workloads::kube::list(&args, workload).await?,
        Workload::KubeWatchLatency(workload) => {
            workloads::kube::watch_latency(&args, workload).await?
        }
        Workload::HollowNodes(workload) => workloads::hollow::hollow_nodes(&args, workload).await?,
        Workload::ProxySync(workload) => workloads::proxy::proxy_sync(workload).await?,
        Workload::ProxyRules(workload) => {
            let workload = workload.clone();
            tokio::task::spawn_blocking(move || workloads::proxy::proxy_rules(&workload))
                .await
                .context("the proxy-rules workload panicked")??
        }
        _ => run_etcd_workload(&args).await?,
    };
    match args.output {
        OutputFormat::Text => print!("{}", summary.to_text()),
        OutputFormat::Json => println!("{}", summary.to_json()),
    }
    summary.check_failures()
}

/// The etcd v3 workloads, over tonic channels or unary KV connections.
async fn run_etcd_workload(args: &BenchArgs) -> anyhow::Result<report::Summary> {
    let dial_timeout = Duration::from_secs(args.dial_timeout.max(1));
    let tls = args.tls()?;
    let targets = connect::targets(
        &args.endpoints,
        args.conns,
        args.target_leader,
        dial_timeout,
        &tls,
    )
    .await?;
    let is_kv = matches!(
        args.workload,
        Workload::Put(_) | Workload::Range(_) | Workload::TxnPut(_) | Workload::TxnMixed(_)
    );
    let connections = connect::Connections {
        channels: if is_kv {
            Vec::new()
        } else {
            connect::channels(&targets, dial_timeout, &tls).await?
        },
        kv: match args.workload {
            _ if is_kv => {
                let connections = connect::kv_connections(&targets, dial_timeout, &tls).await?;
                match &args.user {
                    Some(user) => {
                        let token =
                            connect::authenticate(&targets[0], user, dial_timeout, &tls).await?;
                        connections
                            .into_iter()
                            .map(|connection| connection.with_token(token.clone()))
                            .collect()
                    }
                    None => connections,
                }
            }
            // The puts go on a connection of their own, as in etcd's tool.
            Workload::WatchLatency(_) => {
                connect::kv_connections(&targets[..1], dial_timeout, &tls).await?
            }
            _ => Vec::new(),
        },
        n_clients: args.clients,
    };
    let summary = match &args.workload {
        Workload::Put(workload) => workloads::kv::put(&connections, workload).await?,
        Workload::Range(workload) => workloads::kv::range(&connections, workload).await?,
        Workload::TxnPut(workload) => workloads::kv::txn_put(&connections, workload).await?,
        Workload::TxnMixed(workload) => workloads::kv::txn_mixed(&connections, workload).await?,
        Workload::Watch(workload) => workloads::watch::watch(&connections, workload).await?,
        Workload::WatchLatency(workload) => {
            workloads::watch::watch_latency(&connections, workload).await?
        }
        Workload::LeaseKeepalive(workload) => {
            workloads::lease::lease_keepalive(&connections, workload).await?
        }
        Workload::KubeCreate(_)
        | Workload::KubeList(_)
        | Workload::KubeWatchLatency(_)
        | Workload::HollowNodes(_)
        | Workload::ProxySync(_)
        | Workload::ProxyRules(_) => {
            unreachable!("the Kubernetes API and proxy workloads are run by run_async")
        }
    };
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser, Subcommand};

    use super::*;

    /// The shape the `shoal` binary wires in: `shoal bench …`.
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand)]
    enum Command {
        Bench(Box<BenchArgs>),
    }

    #[test]
    fn flags_parse_as_etcds_benchmark_takes_them() {
        Cli::command().debug_assert();
        let Cli {
            command: Command::Bench(args),
        } = Cli::try_parse_from([
            "shoal",
            "bench",
            "--endpoints",
            "a:1,b:2",
            "--conns",
            "8",
            "put",
            "--clients",
            "64",
            "--total",
            "5",
            "--sequential-keys",
        ])
        .unwrap();
        assert_eq!(args.endpoints, ["a:1", "b:2"]);
        assert_eq!((args.conns, args.clients), (8, 64));
        let Workload::Put(put) = &args.workload else {
            panic!("not a put: {:?}", args.workload)
        };
        assert_eq!((put.total, put.key_size, put.sequential_keys), (5, 8, true));

        let Cli {
            command: Command::Bench(args),
        } = Cli::try_parse_from(["shoal", "bench", "range", "k", "--consistency", "s"]).unwrap();
        let Workload::Range(range) = &args.workload else {
            panic!("not a range: {:?}", args.workload)
        };
        assert_eq!(range.consistency, Consistency::Serializable);
        assert_eq!(args.endpoints, ["127.0.0.1:2379"]);
    }

    #[test]
    fn kube_workloads_take_a_kubeconfig() {
        let Cli {
            command: Command::Bench(args),
        } = Cli::try_parse_from([
            "shoal",
            "bench",
            "--conns",
            "8",
            "--clients",
            "64",
            "kube-create",
            "--kubeconfig",
            "/data/admin.kubeconfig",
            "--total",
            "20000",
            "--compare-store",
        ])
        .unwrap();
        let Workload::KubeCreate(create) = &args.workload else {
            panic!("not a kube-create: {:?}", args.workload)
        };
        assert_eq!(
            create.api.kubeconfig.to_str(),
            Some("/data/admin.kubeconfig")
        );
        assert_eq!((create.total, create.val_size), (20_000, 1024));
        assert!(create.compare_store && !create.store_only);
        assert!(
            Cli::try_parse_from([
                "shoal",
                "bench",
                "kube-create",
                "--kubeconfig",
                "k",
                "--compare-store",
                "--store-only",
            ])
            .is_err()
        );
        let Cli {
            command: Command::Bench(args),
        } = Cli::try_parse_from([
            "shoal",
            "bench",
            "kube-list",
            "--kubeconfig",
            "k",
            "--as",
            "json",
            "--limit",
            "0",
        ])
        .unwrap();
        let Workload::KubeList(list) = &args.workload else {
            panic!("not a kube-list: {:?}", args.workload)
        };
        assert_eq!(
            (list.list_as, list.limit),
            (workloads::kube::ListAs::Json, 0)
        );
    }
}
