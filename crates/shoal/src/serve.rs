//! Runs a store member and its client API until SIGTERM or SIGINT, then shuts
//! both down cleanly.

use std::sync::Arc;

use anyhow::Context as _;

/// What `shoal up` runs beside the store: the Kubernetes API.
pub struct Platform {
    pub data_dir: std::path::PathBuf,
    pub api_listen: std::net::SocketAddr,
    pub advertise_address: std::net::IpAddr,
    /// This machine as a node: its agent's settings.
    pub node: crate::node::NodeSettings,
    /// The cluster DNS this server runs, if any.
    pub dns: Option<DnsSettings>,
    /// The users of `--token-auth-file`, read at start.
    pub token_auth_file: Option<Arc<apiserver::authn::TokenFile>>,
    /// Encryption at rest, read at start.
    pub encryption: Option<apiserver::encryption::EncryptionConfig>,
}

/// The cluster DNS's flags, checked.
pub struct DnsSettings {
    pub listen: std::net::SocketAddr,
    /// Whether the listen address was asked for (a taken port is then an
    /// error) or is the default (then a warning, and no DNS).
    pub listen_given: bool,
    /// The address pods reach this server's DNS at: its endpoint in the
    /// kube-dns Service.
    pub endpoint_address: std::net::IpAddr,
    /// The kube-dns Service's ClusterIP (`--cluster-dns`).
    pub cluster_ip: std::net::Ipv4Addr,
    pub config: dns::DnsConfig,
}

impl DnsSettings {
    pub fn from_args(
        cluster_domain: &str,
        listen: Option<&str>,
        upstreams: &[String],
        skydns_domain: &str,
        advertise_address: std::net::IpAddr,
        service_cidr: ipnet::Ipv4Net,
        cluster_ip: std::net::Ipv4Addr,
    ) -> Result<Option<DnsSettings>, String> {
        let listen_given = listen.is_some();
        let listen = match listen {
            Some("none") => return Ok(None),
            Some(text) => text
                .parse::<std::net::SocketAddr>()
                .map_err(|error| format!("--cluster-dns-listen {text}: {error}"))?,
            // Pods cannot reach a loopback address of the machine: a server
            // whose API is on loopback (a one-machine cluster) serves DNS on
            // the address it reaches other networks from.
            None if advertise_address.is_loopback() => {
                let outward = agent::local_address_towards(std::net::IpAddr::from([192, 0, 2, 1]))
                    .ok()
                    .filter(|address| !address.is_loopback())
                    .ok_or_else(|| {
                        "the API is advertised on a loopback address and this machine has no route out: pass --cluster-dns-listen ADDRESS:53 (an address pods reach) or none".to_string()
                    })?;
                std::net::SocketAddr::new(outward, 53)
            }
            None => std::net::SocketAddr::new(advertise_address, 53),
        };
        let upstreams = if upstreams.is_empty() {
            std::fs::read_to_string("/etc/resolv.conf")
                .map(|text| dns::server::upstreams_from_resolv_conf(&text))
                .unwrap_or_default()
        } else {
            upstreams
                .iter()
                .map(|text| {
                    text.parse::<std::net::SocketAddr>()
                        .or_else(|_| {
                            text.parse::<std::net::IpAddr>()
                                .map(|ip| std::net::SocketAddr::new(ip, 53))
                        })
                        .map_err(|error| format!("--dns-upstream {text}: {error}"))
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let config = dns::DnsConfig {
            cluster_domain: dns::domain(cluster_domain).map_err(|error| error.to_string())?,
            skydns_domain: dns::domain(skydns_domain).map_err(|error| error.to_string())?,
            reverse_authority: vec![ipnet::IpNet::V4(service_cidr)],
            upstreams,
        };
        let endpoint_address = if listen.ip().is_unspecified() {
            advertise_address
        } else {
            listen.ip()
        };
        Ok(Some(DnsSettings {
            listen,
            listen_given,
            endpoint_address,
            cluster_ip,
            config,
        }))
    }
}

/// Starts the member, serves clients on every `--listen-client-urls` address,
/// with `platform` (`shoal up`) the Kubernetes API too, and blocks until a
/// shutdown signal.
pub fn run_store(config: store::MemberConfig, platform: Option<Platform>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("shoal")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let client_urls = config.listen_client_urls.clone();
        let data_dir = config.data_dir.clone();
        config.validate()?;
        let client_tls = client_tls(&config)?;
        // Bind client listeners first so a taken port is reported before the member starts.
        let mut listeners = Vec::new();
        for url in &client_urls {
            let listener = bind_url(url).await.with_context(|| {
                format!(
                    "cannot listen for clients on {}",
                    store::config::url_text(url)
                )
            })?;
            let tls = if url.scheme() == "https" {
                client_tls.clone()
            } else {
                // etcd's warnings, for the same inconsistencies.
                if config.client_tls.has_cert_and_key() {
                    tracing::warn!(client_url = %store::config::url_text(url), "scheme is HTTP while key and cert files are present; ignoring key and cert files");
                }
                if config.client_tls.client_cert_auth {
                    tracing::warn!(client_url = %store::config::url_text(url), "scheme is HTTP while --client-cert-auth is enabled; ignoring client cert auth for this URL");
                }
                None
            };
            listeners.push((listener, tls));
        }
        let api_listener = match &platform {
            Some(platform) => Some(apiserver::bind(platform.api_listen).await?),
            None => None,
        };
        let member = store::Member::start(config).await?;
        let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
        let mut servers = Vec::new();
        for (listener, tls) in listeners {
            let member = Arc::clone(&member);
            let mut stop = stop_receiver.clone();
            servers.push(tokio::spawn(async move {
                let signal = async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                };
                api::serve(member, listener, tls, signal).await
            }));
        }
        // The scheduler and the controllers stop before the API, so they can
        // give their Leases up.
        let (stop_scheduler, scheduler_stop) = tokio::sync::watch::channel(false);
        let mut controllers_stop = scheduler_stop.clone();
        let mut scheduler_task = None;
        let mut controllers_task = None;
        if let (Some(platform), Some(listener)) = (&platform, api_listener) {
            let started =
                start_api(platform, listener, &member, &stop_receiver, &mut servers).await?;
            let kubeconfig = started.kubeconfig;
            if let Some(settings) = &platform.dns {
                start_dns(
                    settings,
                    platform.node.cluster_cidr,
                    &started.dns_kubeconfig,
                    &member,
                    &stop_receiver,
                )
                .await?;
            }
            if !platform.node.disable_scheduler {
                scheduler_task = Some(
                    start_scheduler(
                        &started.scheduler_kubeconfig,
                        scheduler_stop,
                        &started.metrics,
                    )
                    .await?,
                );
            }
            if !platform.node.disable_controllers {
                let client = crate::node::client_from(&started.controllers_kubeconfig)
                    .await
                    .context("the controllers' client")?;
                let mut config =
                    controllers::ControllersConfig::new(&identity(), platform.node.cluster_cidr);
                config.node_monitor_grace_period = platform.node.node_monitor_grace_period;
                config.node_eviction_rate = platform.node.node_eviction_rate;
                controllers_task = Some(tokio::spawn(async move {
                    let stopped = async move {
                        let _ = controllers_stop.wait_for(|stopped| *stopped).await;
                    };
                    if let Err(error) = controllers::run(client, config, stopped).await {
                        tracing::error!(%error, "the controllers stopped");
                    }
                }));
            }
            let url = store::config::url_text(&client_urls[0]).to_string();
            eprintln!(
                "shoal is up: the store serves the etcd v3 API at {url} (data in {})",
                data_dir.display()
            );
            eprintln!(
                "  the Kubernetes API is at https://{}",
                api_address(platform)
            );
            eprintln!("  export KUBECONFIG={}", kubeconfig.display());
            eprintln!("  try: kubectl get nodes");
            eprintln!("  dashboard: {}", started.dashboard);
            eprintln!("  another machine joins with:");
            eprintln!("    {}", started.join_command);
            eprintln!("  stop with Ctrl-C");
        }
        let stopped = tokio::select! {
            outcome = wait_for_signal() => { outcome?; None }
            stopped = member.stopped() => Some(stopped),
        };
        tracing::info!("shutting down");
        let _ = stop_scheduler.send(true);
        for (part, task) in [
            ("scheduler", scheduler_task),
            ("controllers", controllers_task),
        ] {
            if let Some(task) = task
                && tokio::time::timeout(std::time::Duration::from_secs(5), task)
                    .await
                    .is_err()
            {
                tracing::warn!("the {part} did not stop within 5s");
            }
        }
        let _ = stop_sender.send(true);
        for server in servers {
            match tokio::time::timeout(std::time::Duration::from_secs(5), server).await {
                Ok(Ok(Err(error))) => tracing::warn!(%error, "client server stopped with an error"),
                Ok(_) => {}
                Err(_) => tracing::warn!("client server did not stop within 5s"),
            }
        }
        member.shutdown().await;
        tracing::info!("stopped");
        match stopped {
            None => Ok(()),
            Some(store::Stopped::Removed) => {
                anyhow::bail!("this member was removed from the cluster")
            }
            // etcd exits with 2 when its storage fails; scripts and the
            // chaos tests rely on that code.
            Some(store::Stopped::StorageFailed(reason)) => {
                eprintln!("error: storage failure: {reason}");
                std::process::exit(2)
            }
        }
    })
}

fn api_address(platform: &Platform) -> String {
    std::net::SocketAddr::new(platform.advertise_address, platform.api_listen.port()).to_string()
}

/// Makes the certificates and admin kubeconfig (once), and starts the API
/// server and its garbage collector. Returns the kubeconfig's path.
async fn start_api(
    platform: &Platform,
    listener: tokio::net::TcpListener,
    member: &Arc<store::Member>,
    stop: &tokio::sync::watch::Receiver<bool>,
    servers: &mut Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
) -> anyhow::Result<ApiStarted> {
    let address = api_address(platform);
    let mut names = vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        platform.advertise_address.to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
        apiserver::nth_address(platform.node.service_cidr, 1).to_string(),
    ];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(host.trim().to_string());
    }
    names.dedup();
    let pki = apiserver::pki::ensure(
        &platform.data_dir.join("pki"),
        &names,
        &format!("https://{address}"),
    )
    .context("cannot set up the cluster's certificates")?;
    let tls = apiserver::tls_config(
        &pki.serving_cert_pem,
        &pki.serving_key_pem,
        &pki.ca_cert_pem,
    )?;
    let token = apiserver::join::ensure_token(&platform.data_dir, &pki.ca_cert_pem)
        .context("cannot make the join token")?;
    let authority = Arc::new(
        apiserver::join::JoinAuthority::load(&platform.data_dir.join("pki"), &token)
            .context("cannot load the cluster CA")?,
    );
    let dashboard_token = crate::dashboard::ensure_token(&platform.data_dir.join("pki"))?;
    let mut tokens = platform
        .token_auth_file
        .as_deref()
        .cloned()
        .unwrap_or_default();
    if !tokens.insert(&dashboard_token.token, crate::dashboard::user()) {
        anyhow::bail!(
            "the dashboard token in {} is also in --token-auth-file",
            dashboard_token.path.display()
        );
    }
    let kv: client::SharedKv = Arc::new(client::Local::new(Arc::clone(member)));
    let api = apiserver::Api::new(
        kv,
        apiserver::ApiConfig {
            advertise_address: address.clone(),
            join: Some(Arc::clone(&authority)),
            agent_client_tls: Some(apiserver::agent_client_tls(
                &pki.ca_cert_pem,
                &pki.kubelet_client_cert_pem,
                &pki.kubelet_client_key_pem,
            )?),
            default_not_ready_toleration_seconds: platform
                .node
                .default_not_ready_toleration_seconds,
            default_unreachable_toleration_seconds: platform
                .node
                .default_unreachable_toleration_seconds,
            service_cidr: platform.node.service_cidr,
            tokens: Some(Arc::new(tokens)),
            encryption: platform.encryption.clone(),
        },
    );
    // The first start elects the member's leadership first: retry briefly.
    let mut attempts = 0;
    loop {
        match api.bootstrap().await {
            Ok(()) => break,
            Err(error) if attempts < 50 => {
                attempts += 1;
                tracing::debug!(%error, "API bootstrap not done yet; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(error) => anyhow::bail!("cannot start the Kubernetes API: {error}"),
        }
    }
    let mut stop_api = stop.clone();
    let server_api = Arc::clone(&api);
    servers.push(tokio::spawn(async move {
        apiserver::serve(server_api, listener, tls, async move {
            let _ = stop_api.wait_for(|stopped| *stopped).await;
        })
        .await;
        Ok(())
    }));
    let metrics_endpoint = Arc::clone(api.metrics_endpoint());
    let mut stop_collector = stop.clone();
    tokio::spawn(api.run_collector(async move {
        let _ = stop_collector.wait_for(|stopped| *stopped).await;
    }));
    if !platform.node.disable_agent {
        crate::node::start_local_agent(
            &platform.data_dir,
            &platform.node,
            &authority,
            &format!("https://{address}"),
            platform.advertise_address,
            stop.clone(),
        )
        .await
        .context("cannot start the node agent")?;
    }
    // The scheduler, the controllers and the DNS each reach the API as a
    // user of their own, with a role of their own (authz::bootstrap).
    let component = |name: &str, user: &str| {
        apiserver::pki::component_kubeconfig(&pki.dir, name, user, &format!("https://{address}"))
            .with_context(|| format!("cannot write the {name} kubeconfig"))
    };
    Ok(ApiStarted {
        scheduler_kubeconfig: component("scheduler", apiserver::authz::bootstrap::SCHEDULER_USER)?,
        controllers_kubeconfig: component(
            "controllers",
            apiserver::authz::bootstrap::CONTROLLERS_USER,
        )?,
        dns_kubeconfig: component("dns", apiserver::authz::bootstrap::DNS_USER)?,
        kubeconfig: pki.admin_kubeconfig,
        metrics: metrics_endpoint,
        join_command: format!("shoal up --join https://{address} --token {}", token.text()),
        dashboard: format!(
            "https://{address}/ui/ (log in with the token in {})",
            dashboard_token.path.display()
        ),
    })
}

/// Starts the cluster DNS on `settings.listen`, and makes sure the
/// kube-dns Service lists it (in the background: DNS answers meanwhile).
async fn start_dns(
    settings: &DnsSettings,
    cluster_cidr: ipnet::Ipv4Net,
    kubeconfig: &std::path::Path,
    member: &Arc<store::Member>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let sockets = match dns::server::bind(settings.listen).await {
        Ok(sockets) => sockets,
        Err(error) if !settings.listen_given => {
            tracing::warn!(%error, "the cluster DNS is not running (choose an address with --cluster-dns-listen)");
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    let client = crate::node::client_from(kubeconfig)
        .await
        .context("the cluster DNS's client")?;
    let kv: client::SharedKv = Arc::new(client::Local::new(Arc::clone(member)));
    let mut config = settings.config.clone();
    config
        .reverse_authority
        .push(ipnet::IpNet::V4(cluster_cidr));
    let mut stop_dns = stop.clone();
    tokio::spawn(dns::run(config, sockets, client.clone(), kv, async move {
        let _ = stop_dns.wait_for(|stopped| *stopped).await;
    }));
    let cluster_ip = settings.cluster_ip;
    let address = settings.endpoint_address;
    let port = settings.listen.port();
    tokio::spawn(async move {
        // Another server may be writing the same objects, or the API may
        // still be settling: retry for a minute.
        for attempt in 0..30 {
            match dns::kube_dns::ensure(client.clone(), cluster_ip, address, port).await {
                Ok(()) => return,
                Err(error) if attempt < 3 => tracing::debug!(%error, "kube-dns not written yet"),
                Err(error) => tracing::warn!(%error, "kube-dns not written yet"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
        tracing::warn!("cannot write the kube-dns Service and its endpoints");
    });
    tracing::info!(listen = %settings.listen, "the cluster DNS is serving");
    Ok(())
}

/// What `start_api` made that the operator is told about.
struct ApiStarted {
    kubeconfig: std::path::PathBuf,
    scheduler_kubeconfig: std::path::PathBuf,
    controllers_kubeconfig: std::path::PathBuf,
    dns_kubeconfig: std::path::PathBuf,
    join_command: String,
    /// The API port's `/metrics`, where the scheduler adds its own.
    metrics: Arc<metrics::Endpoint>,
    /// The dashboard's address and where its login token is.
    dashboard: String,
}

/// Starts the scheduler (`scheduler::run`) with a client of the API built
/// from its own kubeconfig (user system:kube-scheduler); it competes for the scheduler's Lease and, when
/// it holds it, binds pods. It stops when `stop` turns true.
async fn start_scheduler(
    kubeconfig: &std::path::Path,
    mut stop: tokio::sync::watch::Receiver<bool>,
    metrics_endpoint: &metrics::Endpoint,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let client = crate::node::client_from(kubeconfig)
        .await
        .context("the scheduler's client")?;
    let config = scheduler::SchedulerConfig::new(&identity());
    metrics_endpoint.add(Arc::new(config.metrics.registry()));
    Ok(tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        if let Err(error) = scheduler::run(client, config, stopped).await {
            tracing::error!(%error, "the scheduler stopped");
        }
    }))
}

/// `shoal controllers`: the controllers alone, until SIGTERM or SIGINT.
pub fn run_controllers(
    kubeconfig: &std::path::Path,
    cluster_cidr: ipnet::Ipv4Net,
    node_monitor_grace_period: std::time::Duration,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = crate::node::client_from(kubeconfig).await?;
        let mut config = controllers::ControllersConfig::new(&identity(), cluster_cidr);
        config.node_monitor_grace_period = node_monitor_grace_period;
        controllers::run(client, config, async {
            if let Err(error) = wait_for_signal().await {
                tracing::error!(%error, "cannot wait for signals");
                std::future::pending::<()>().await;
            }
        })
        .await?;
        Ok(())
    })
}

/// This server's name in the Leases it competes for: host and process.
fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|host| host.trim().to_string())
        .unwrap_or_else(|_| "shoal".to_string());
    format!("{host}_{}", std::process::id())
}

/// The client port's TLS settings, read (or, for `--auto-tls`, made under
/// `DATA_DIR/fixtures/client`, as etcd does) before anything listens, so a
/// bad file stops the start with one line naming it.
fn client_tls(config: &store::MemberConfig) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let mut hosts: Vec<String> = Vec::new();
    for url in config
        .listen_client_urls
        .iter()
        .chain(&config.advertise_client_urls)
    {
        let host = url.host_str().unwrap_or_default();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if !host.is_empty() && !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    let auto_tls_dir = config.data_dir.join("fixtures").join("client");
    Ok(api::tls::server_config(
        &config.client_tls,
        &auto_tls_dir,
        &hosts,
    )?)
}

async fn bind_url(url: &url::Url) -> std::io::Result<tokio::net::TcpListener> {
    let host = url.host_str().unwrap_or("127.0.0.1");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(2379);
    tokio::net::TcpListener::bind((host, port)).await
}

pub async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
