//! The service proxy's rule syncs (`proxy-sync`, `proxy-rules`), at the
//! scale of the row: 10,000 services of 5 endpoints. The rules go
//! into a network namespace named by `--netns` (made by `bench/proxy-sync`),
//! through `nsenter`, so the machine's own ruleset is untouched.
//!
//! `proxy-sync` runs the proxy's real sync loop (kube-rs watchers, the
//! coalescing, one netlink batch per sync) against an API server: objects
//! are made through the API, then each endpoint change is an API write
//! timed to the commit of the transaction that carries it (the batch is
//! acknowledged: the rules are in the kernel), and checked there with
//! `nft list chain`. Full resyncs are timed as the loop runs them (listing
//! the table's names, rendering, the batch).
//!
//! `proxy-rules` needs no server: the same services straight into the
//! proxy's planner, timed for nftables (over netlink, and through the `nft`
//! program as the proxy did before) and for an iptables-restore rule set
//! of kube-proxy's classic shape, full and one endpoint change (the measured
//! choice in ARCHITECTURE.md).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use proxy::{Nft, NodeContext, Proxier, ServiceKey};

use crate::report::{Recorder, Section, Summary};

#[derive(Args, Debug, Clone)]
pub struct ProxySyncArgs {
    /// The kubeconfig of the API server the objects are made in.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: std::path::PathBuf,
    /// The network namespace the rules go in (`ip netns add NAME`).
    #[arg(long)]
    pub netns: String,
    #[arg(long, default_value_t = 10_000)]
    pub services: u32,
    #[arg(long, default_value_t = 5)]
    pub endpoints_per_service: u32,
    /// Endpoint changes, one after the other.
    #[arg(long, default_value_t = 200)]
    pub changes: u32,
    /// Full resyncs to time.
    #[arg(long, default_value_t = 5)]
    pub resyncs: u32,
    /// The namespace the services are made in.
    #[arg(long, default_value = "proxy-bench")]
    pub namespace: String,
    /// Creates in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

#[derive(Args, Debug, Clone)]
pub struct ProxyRulesArgs {
    /// The network namespace the rules go in (`ip netns add NAME`).
    #[arg(long)]
    pub netns: String,
    #[arg(long, default_value_t = 10_000)]
    pub services: u32,
    #[arg(long, default_value_t = 5)]
    pub endpoints_per_service: u32,
    /// One-endpoint changes timed per backend.
    #[arg(long, default_value_t = 50)]
    pub changes: u32,
    /// Full syncs timed per backend.
    #[arg(long, default_value_t = 3)]
    pub full_syncs: u32,
}

const NAMESPACE_OF_RULES: &str = "proxy-bench";

fn service_name(index: u32) -> String {
    format!("svc-{index}")
}

/// Endpoint `index` of the run: distinct addresses in 10.42.0.0/16 (a
/// changed endpoint takes one in 10.41.0.0/16).
fn endpoint_address(base: [u8; 2], index: u32) -> String {
    Ipv4Addr::new(base[0], base[1], (index >> 8) as u8, index as u8).to_string()
}

fn service(namespace: &str, index: u32, cluster_ip: Option<String>) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some(namespace.to_string()),
            name: Some(service_name(index)),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip,
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn slice(namespace: &str, index: u32, addresses: Vec<String>) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some(namespace.to_string()),
            name: Some(format!("{}-1", service_name(index))),
            labels: Some(BTreeMap::from([
                (
                    proxy::model::SERVICE_NAME_LABEL.to_string(),
                    service_name(index),
                ),
                (
                    "endpointslice.kubernetes.io/managed-by".to_string(),
                    "shoal-bench".to_string(),
                ),
            ])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: addresses
            .into_iter()
            .map(|address| Endpoint {
                addresses: vec![address],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                node_name: Some("bench-node".into()),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

fn addresses_of(index: u32, per_service: u32) -> Vec<String> {
    (0..per_service)
        .map(|endpoint| endpoint_address([10, 42], index * per_service + endpoint))
        .collect()
}

fn node_context() -> NodeContext {
    NodeContext {
        node_name: "bench-node".into(),
        cluster_cidr: "10.42.0.0/16".parse().expect("a valid range"),
    }
}

/// The table must not exist yet: the benchmark never takes over a table
/// it did not make.
fn check_fresh(nft: &Nft) -> anyhow::Result<()> {
    let (chains, _) = nft.existing_names()?;
    anyhow::ensure!(
        chains.is_empty(),
        "the namespace already has a table ip {}: give the benchmark a namespace of its own",
        proxy::nft::TABLE
    );
    Ok(())
}

pub async fn proxy_sync(args: &ProxySyncArgs) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        args.services <= 60_000 && args.services * args.endpoints_per_service <= 65_000,
        "at most 60,000 services and 65,000 endpoints (one /16 of addresses)"
    );
    let nft = Nft::in_netns(&args.netns);
    check_fresh(&nft)?;
    let file = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("cannot read {}", args.kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .context("cannot use the kubeconfig")?;
    let client = kube::Client::try_from(config).context("cannot make an API client")?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(args.namespace.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(error).context("cannot create the namespace"),
    }
    let services: Api<Service> = Api::namespaced(client.clone(), &args.namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &args.namespace);

    let started = Instant::now();
    let per_service = args.endpoints_per_service;
    let mut creations = futures::stream::iter(0..args.services)
        .map(|index| {
            let services = services.clone();
            let slices = slices.clone();
            let namespace = args.namespace.clone();
            async move {
                services
                    .create(&PostParams::default(), &service(&namespace, index, None))
                    .await?;
                slices
                    .create(
                        &PostParams::default(),
                        &slice(&namespace, index, addresses_of(index, per_service)),
                    )
                    .await?;
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(args.concurrency);
    while let Some(created) = creations.next().await {
        created.context("cannot create the benchmark's services")?;
    }
    let create_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "made {} services and {} endpoints in {create_seconds:.1} s",
        args.services,
        args.services * per_service
    );

    let (reports, mut reported) = tokio::sync::mpsc::unbounded_channel();
    let full_sync_now = Arc::new(tokio::sync::Notify::new());
    let mut config = proxy::ProxyConfig::new(node_context());
    config.nft = nft.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let proxy_task = tokio::spawn(proxy::run(
        client.clone(),
        config,
        proxy::Observer {
            reports: Some(reports),
            full_sync_now: Some(full_sync_now.clone()),
        },
        stopped,
    ));

    let started = Instant::now();
    let first = loop {
        let report = tokio::time::timeout(Duration::from_secs(300), reported.recv())
            .await
            .context("no sync within 5 minutes")?
            .context("the proxy stopped")?;
        if report.full && report.services.len() >= args.services as usize {
            break report;
        }
    };
    eprintln!(
        "first full sync: {:.0} ms ({} bytes), {:.1} s after the proxy started",
        first.duration.as_secs_f64() * 1000.0,
        first.transaction_bytes,
        started.elapsed().as_secs_f64()
    );

    let mut changes = Recorder::new();
    let changes_started = Instant::now();
    let mut sync_durations = Recorder::new();
    for change in 0..args.changes {
        let index = (change * 7919) % args.services;
        let mut addresses = addresses_of(index, per_service);
        let new_address = endpoint_address([10, 41], change);
        addresses[0] = new_address.clone();
        let key = ServiceKey::new(&args.namespace, &service_name(index));
        let body = slice(&args.namespace, index, addresses);
        let written = Instant::now();
        let patch = kube::api::Patch::Merge(serde_json::json!({"endpoints": body.endpoints}));
        if let Err(error) = slices
            .patch(
                &format!("{}-1", service_name(index)),
                &kube::api::PatchParams::default(),
                &patch,
            )
            .await
        {
            changes.record_error(format!("the API write failed: {error}"));
            continue;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let committed = loop {
            match tokio::time::timeout_at(deadline, reported.recv()).await {
                Ok(Some(report)) if report.services.contains(&key) => break Some(report),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break None,
            }
        };
        let Some(report) = committed else {
            changes.record_error("not synced within 10 s");
            continue;
        };
        changes.record(report.committed_at.saturating_duration_since(written));
        sync_durations.record(report.duration);
        let chain = format!(
            "ep-{}/{}/tcp/http__{new_address}/8080",
            args.namespace,
            service_name(index)
        );
        let nft = nft.clone();
        let present =
            tokio::task::spawn_blocking(move || nft.list(&["chain", "ip", "shoal", &chain]))
                .await?;
        if let Err(error) = present {
            changes.record_error(format!("synced but not in the kernel: {error}"));
        }
    }
    let changes_duration = changes_started.elapsed();

    let mut resyncs = Recorder::new();
    let resyncs_started = Instant::now();
    for _ in 0..args.resyncs {
        full_sync_now.notify_one();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match tokio::time::timeout_at(deadline, reported.recv()).await {
                Ok(Some(report)) if report.full => {
                    resyncs.record(report.duration);
                    break;
                }
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => {
                    resyncs.record_error("no full resync within 60 s");
                    break;
                }
            }
        }
    }
    let resyncs_duration = resyncs_started.elapsed();
    let _ = stop.send(true);
    let _ = proxy_task.await;
    tokio::task::spawn_blocking(move || nft.delete_table()).await??;

    Ok(Summary::new("proxy-sync")
        .section(Section::new(
            "endpoint change: API write to rules in the kernel",
            changes,
            changes_duration,
        ))
        .section(Section::new(
            "endpoint change: the sync alone (plan and netlink batch)",
            sync_durations,
            changes_duration,
        ))
        .section(Section::new("full resync", resyncs, resyncs_duration))
        .detail("services", args.services)
        .detail("endpoints", args.services * per_service)
        .detail("create_seconds", create_seconds)
        .detail("first_full_sync_ms", first.duration.as_secs_f64() * 1000.0)
        .detail("full_sync_bytes", first.transaction_bytes as u64))
}

/// `iptables-restore` (or its legacy twin) in the namespace.
fn iptables_restore(program: &str, netns: &str, noflush: bool, input: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{netns}"))
        .arg(program);
    if noflush {
        command.arg("--noflush");
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

pub fn proxy_rules(args: &ProxyRulesArgs) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        args.services <= 60_000 && args.services * args.endpoints_per_service <= 65_000,
        "at most 60,000 services and 65,000 endpoints (one /16 of addresses)"
    );
    let nft = Nft::in_netns(&args.netns);
    check_fresh(&nft)?;
    let per_service = args.endpoints_per_service;
    let cluster_ip = |index: u32| endpoint_address([10, 43], index + 1);
    let mut proxier = Proxier::new(node_context());
    for index in 0..args.services {
        proxier.update_service(&service(NAMESPACE_OF_RULES, index, Some(cluster_ip(index))));
        proxier.update_slice(&slice(
            NAMESPACE_OF_RULES,
            index,
            addresses_of(index, per_service),
        ));
    }
    // `by_program`: the same transaction through `nft -f`, as the proxy
    // applied them before it spoke netlink.
    let sync = |proxier: &mut Proxier, by_program: bool| -> anyhow::Result<Duration> {
        let started = Instant::now();
        let names = if proxier.needs_listing() {
            Some(nft.existing_names()?)
        } else {
            None
        };
        let plan = proxier.plan(names);
        if by_program {
            nft.apply_with_program(&plan.transaction)?;
        } else {
            nft.apply(&plan.transaction)?;
        }
        proxier.committed(plan);
        Ok(started.elapsed())
    };
    let first = sync(&mut proxier, false)?;
    let mut sections = Vec::new();
    for (by_program, label, address_block) in [
        (false, "nftables over netlink", 41),
        (true, "nftables through the nft program", 39),
    ] {
        let mut full = Recorder::new();
        let started = Instant::now();
        for _ in 0..args.full_syncs {
            proxier.request_full_sync();
            full.record(sync(&mut proxier, by_program)?);
        }
        let full_duration = started.elapsed();
        let mut change = Recorder::new();
        let started = Instant::now();
        for change_index in 0..args.changes {
            let index = (change_index * 7919) % args.services;
            let mut addresses = addresses_of(index, per_service);
            addresses[0] = endpoint_address([10, address_block], change_index);
            proxier.update_slice(&slice(NAMESPACE_OF_RULES, index, addresses));
            change.record(sync(&mut proxier, by_program)?);
        }
        let change_duration = started.elapsed();
        sections.push(Section::new(
            &format!("{label}: full resync"),
            full,
            full_duration,
        ));
        sections.push(Section::new(
            &format!("{label}: one endpoint change"),
            change,
            change_duration,
        ));
    }
    // A periodic resync with nothing changed behind the proxy's back is
    // one read of the ruleset's generation (the sync loop then skips it).
    let mut unchanged = Recorder::new();
    let started = Instant::now();
    for _ in 0..args.changes {
        let began = Instant::now();
        nft.generation()?;
        unchanged.record(began.elapsed());
    }
    sections.push(Section::new(
        "periodic resync, ruleset unchanged (generation read)",
        unchanged,
        started.elapsed(),
    ));
    nft.delete_table()?;

    // The same services for iptables: rendered from the same model.
    let node = node_context();
    let mut all_targets: Vec<proxy::model::ServiceTargets> = (0..args.services)
        .map(|index| {
            let ports = proxy::model::service_ports(&service(
                NAMESPACE_OF_RULES,
                index,
                Some(cluster_ip(index)),
            ));
            let info = proxy::model::SliceInfo::of_slice(&slice(
                NAMESPACE_OF_RULES,
                index,
                addresses_of(index, per_service),
            ));
            proxy::model::targets(&ports[0], [&info], &node.node_name)
        })
        .collect();
    let cidr = node.cluster_cidr.to_string();
    let mut summary = Summary::new("proxy-rules");
    for section in sections {
        summary = summary.section(section);
    }
    let mut summary = summary.detail("nft_first_full_sync_ms", first.as_secs_f64() * 1000.0);
    for program in ["iptables-restore", "iptables-legacy-restore"] {
        if Command::new(program).arg("--version").output().is_err() {
            continue;
        }
        let mut full = Recorder::new();
        let started = Instant::now();
        for _ in 0..args.full_syncs {
            let began = Instant::now();
            let text = proxy::iptables::full(&all_targets, &cidr);
            iptables_restore(program, &args.netns, false, &text)?;
            full.record(began.elapsed());
        }
        let full_duration = started.elapsed();
        let mut partial = Recorder::new();
        let started = Instant::now();
        for change in 0..args.changes {
            let began = Instant::now();
            let index = ((change * 7919) % args.services) as usize;
            let before = all_targets[index].clone();
            let mut after = before.clone();
            after.cluster[0].address = endpoint_address([10, 40], change)
                .parse()
                .expect("an address");
            all_targets[index] = after.clone();
            let text = proxy::iptables::partial(&all_targets, &before, &after, &cidr);
            iptables_restore(program, &args.netns, true, &text)?;
            partial.record(began.elapsed());
        }
        let partial_duration = started.elapsed();
        // Empty the nat table again for the next program.
        iptables_restore(program, &args.netns, false, "*nat\nCOMMIT\n")?;
        summary = summary
            .section(Section::new(
                &format!("{program} full"),
                full,
                full_duration,
            ))
            .section(Section::new(
                &format!("{program} one endpoint change (partial, --noflush)"),
                partial,
                partial_duration,
            ));
    }
    Ok(summary
        .detail("services", args.services)
        .detail("endpoints", args.services * per_service))
}
