//! Runs a store member and its client API until SIGTERM or SIGINT, then shuts
//! both down cleanly.

use std::sync::Arc;

use anyhow::Context as _;

/// Starts the member, serves clients on every `--listen-client-urls` address,
/// and blocks until a shutdown signal.
pub fn run_store(config: store::MemberConfig, banner: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("shoal")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let client_urls = config.listen_client_urls.clone();
        let data_dir = config.data_dir.clone();
        // Bind client listeners first so a taken port is reported before the member starts.
        let mut listeners = Vec::new();
        for url in &client_urls {
            let listener = bind_url(url).await.with_context(|| {
                format!(
                    "cannot listen for clients on {}",
                    store::config::url_text(url)
                )
            })?;
            listeners.push(listener);
        }
        let member = store::Member::start(config).await?;
        let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
        let mut servers = Vec::new();
        for listener in listeners {
            let member = Arc::clone(&member);
            let mut stop = stop_receiver.clone();
            servers.push(tokio::spawn(async move {
                let signal = async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                };
                api::serve(member, listener, signal).await
            }));
        }
        if banner {
            let url = store::config::url_text(&client_urls[0]).to_string();
            eprintln!(
                "shoal is up: the store serves the etcd v3 API at {url} (data in {})",
                data_dir.display()
            );
            eprintln!("  try: ETCDCTL_API=3 etcdctl --endpoints={url} put hello world");
            eprintln!("  stop with Ctrl-C");
        }
        let stopped = tokio::select! {
            outcome = wait_for_signal() => { outcome?; None }
            stopped = member.stopped() => Some(stopped),
        };
        tracing::info!("shutting down");
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

async fn bind_url(url: &url::Url) -> std::io::Result<tokio::net::TcpListener> {
    let host = url.host_str().unwrap_or("127.0.0.1");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(2379);
    tokio::net::TcpListener::bind((host, port)).await
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
