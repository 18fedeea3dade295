//! Opens the benchmark's gRPC connections: `--conns` HTTP/2 connections spread
//! round-robin over the endpoints (or all to the leader with `--target-leader`),
//! and `--clients` clients spread round-robin over those connections.

use std::time::Duration;

use anyhow::Context as _;
use proto::etcdserverpb::StatusRequest;
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::lease_client::LeaseClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use proto::etcdserverpb::watch_client::WatchClient;
use tonic::transport::{Channel, Endpoint};

use crate::unary::{self, KvConnection};

/// The TLS settings of every connection (`--cacert`, `--cert`, `--key`),
/// or `None` for plain text.
pub type Tls = Option<std::sync::Arc<rustls::ClientConfig>>;

/// The TLS settings the flags ask for.
pub fn tls_from_flags(
    cacert: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> anyhow::Result<Tls> {
    if cacert.is_none() && cert.is_none() && key.is_none() {
        return Ok(None);
    }
    let files = client::tls::ClientTlsFiles {
        ca_file: cacert.map(std::path::Path::to_path_buf),
        cert_file: cert.map(std::path::Path::to_path_buf),
        key_file: key.map(std::path::Path::to_path_buf),
    };
    Ok(Some(client::tls::client_config(&files)?))
}

/// The open connections and how many clients share them: tonic channels for
/// the workloads that hold streams, lean unary connections for the KV ones.
pub struct Connections {
    pub channels: Vec<Channel>,
    pub kv: Vec<KvConnection>,
    pub n_clients: usize,
}

impl Connections {
    /// One unary KV connection handle per benchmark client.
    pub fn kv_connections(&self) -> Vec<KvConnection> {
        (0..self.n_clients)
            .map(|client_idx| self.kv[client_idx % self.kv.len()].clone())
            .collect()
    }

    /// The connection client `client_idx` uses.
    pub fn channel(&self, client_idx: usize) -> Channel {
        self.channels[client_idx % self.channels.len()].clone()
    }

    /// One KV client per benchmark client.
    pub fn kv_clients(&self) -> Vec<KvClient<Channel>> {
        (0..self.n_clients)
            .map(|client_idx| kv_client(self.channel(client_idx)))
            .collect()
    }

    pub fn watch_client(&self, client_idx: usize) -> WatchClient<Channel> {
        WatchClient::new(self.channel(client_idx)).max_decoding_message_size(usize::MAX)
    }

    pub fn lease_client(&self, client_idx: usize) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel(client_idx)).max_decoding_message_size(usize::MAX)
    }
}

/// A KV client that accepts responses of any size, as etcd's Go client does
/// (a range over every key can be tens of megabytes).
pub fn kv_client(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel).max_decoding_message_size(usize::MAX)
}

/// Adds `http://` (`https://` with TLS) to an endpoint given as host:port,
/// as etcd's tools accept.
pub fn endpoint_url(endpoint: &str, tls: &Tls) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else if tls.is_some() {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

/// The endpoint URL of each of `n_conns` connections: round-robin over
/// `endpoints`, or the leader's endpoint alone when `target_leader` is set.
pub async fn targets(
    endpoints: &[String],
    n_conns: usize,
    target_leader: bool,
    dial_timeout: Duration,
    tls: &Tls,
) -> anyhow::Result<Vec<String>> {
    let mut urls: Vec<String> = endpoints
        .iter()
        .map(|endpoint| endpoint.trim())
        .filter(|endpoint| !endpoint.is_empty())
        .map(|endpoint| endpoint_url(endpoint, tls))
        .collect();
    anyhow::ensure!(!urls.is_empty(), "--endpoints is empty");
    if target_leader {
        urls = vec![find_leader(&urls, dial_timeout, tls).await?];
    }
    Ok((0..n_conns)
        .map(|conn_idx| urls[conn_idx % urls.len()].clone())
        .collect())
}

/// Opens a tonic channel to each target.
pub async fn channels(
    targets: &[String],
    dial_timeout: Duration,
    tls: &Tls,
) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(targets.len());
    for url in targets {
        channels.push(dial(url, dial_timeout, tls).await?);
    }
    Ok(channels)
}

/// Opens a unary KV connection to each target.
pub async fn kv_connections(
    targets: &[String],
    dial_timeout: Duration,
    tls: &Tls,
) -> anyhow::Result<Vec<KvConnection>> {
    let mut connections = Vec::with_capacity(targets.len());
    for url in targets {
        connections.push(unary::dial(url, dial_timeout, tls).await?);
    }
    Ok(connections)
}

/// Authenticates as `user` (`name:password`) at `url`; the token to send.
pub async fn authenticate(
    url: &str,
    user: &str,
    dial_timeout: Duration,
    tls: &Tls,
) -> anyhow::Result<http::HeaderValue> {
    let (name, password) = user.split_once(':').context("--user takes name:password")?;
    let channel = dial(url, dial_timeout, tls).await?;
    let response = proto::etcdserverpb::auth_client::AuthClient::new(channel)
        .authenticate(proto::etcdserverpb::AuthenticateRequest {
            name: name.to_string(),
            password: password.to_string(),
        })
        .await
        .with_context(|| format!("authenticate as {name} at {url}"))?
        .into_inner();
    http::HeaderValue::from_str(&response.token).context("the token is not a header value")
}

async fn dial(url: &str, dial_timeout: Duration, tls: &Tls) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("invalid endpoint {url}"))?
        .connect_timeout(dial_timeout)
        .tcp_nodelay(true);
    match tls {
        Some(config) => endpoint
            .connect_with_connector(client::tls::TlsConnector::new(
                std::sync::Arc::clone(config),
                dial_timeout,
            ))
            .await
            .with_context(|| format!("cannot connect to {url}")),
        None => endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {url}")),
    }
}

/// The endpoint whose member says it is the leader.
async fn find_leader(urls: &[String], dial_timeout: Duration, tls: &Tls) -> anyhow::Result<String> {
    let mut problems = Vec::new();
    for url in urls {
        let status = async {
            let channel = dial(url, dial_timeout, tls).await?;
            let response = MaintenanceClient::new(channel)
                .status(StatusRequest {})
                .await
                .with_context(|| format!("status of {url}"))?
                .into_inner();
            anyhow::Ok(response)
        };
        match tokio::time::timeout(dial_timeout, status).await {
            Ok(Ok(response)) => {
                let member_id = response.header.map(|header| header.member_id);
                if response.leader != 0 && Some(response.leader) == member_id {
                    return Ok(url.clone());
                }
            }
            Ok(Err(error)) => problems.push(format!("{error:#}")),
            Err(_) => problems.push(format!("status of {url}: timed out")),
        }
    }
    anyhow::bail!(
        "--target-leader: no endpoint is the leader{}",
        if problems.is_empty() {
            String::new()
        } else {
            format!(" ({})", problems.join("; "))
        }
    )
}

/// An error for a failed call, saying plainly when the server does not
/// implement the call (shoal before its watch and lease work).
pub fn call_error(call: &str, status: tonic::Status) -> anyhow::Error {
    if status.code() == tonic::Code::Unimplemented {
        anyhow::anyhow!(
            "{call}: not implemented by the server (gRPC Unimplemented: {})",
            status.message()
        )
    } else {
        anyhow::anyhow!("{call}: {} ({:?})", status.message(), status.code())
    }
}
