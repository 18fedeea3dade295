//! shoal's cluster DNS (CoreDNS's role): names of the Kubernetes DNS
//! specification under the cluster domain, SkyDNS's `/skydns/` records,
//! everything else forwarded to the machine's upstream resolvers.
//!
//! The zones are built from watched state (`watch`) and swapped whole; a
//! query reads one snapshot and never touches the store or the API
//! (`resolve`, no I/O). `server` is the UDP and TCP loop, `kube_dns` the
//! Service pods reach it by.

pub mod cluster;
pub mod fastpath;
pub mod kube_dns;
pub mod resolve;
pub mod server;
pub mod skydns;
mod udp;
pub mod watch;
pub mod zone;

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::rr::Name;

pub use resolve::{SharedZones, Zones};
pub use server::ServeError;

/// The default cluster domain (`--cluster-domain`).
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// SkyDNS's default domain.
pub const DEFAULT_SKYDNS_DOMAIN: &str = "skydns.local";

/// How the cluster DNS runs.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub cluster_domain: Name,
    pub skydns_domain: Name,
    /// Reverse names answered authoritatively (NXDOMAIN when unknown): the
    /// service and pod ranges.
    pub reverse_authority: Vec<ipnet::IpNet>,
    pub upstreams: Vec<SocketAddr>,
}

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{domain:?} is not a domain name: {reason}")]
    BadDomain { domain: String, reason: String },
}

/// A domain name from a flag, made fully qualified.
pub fn domain(text: &str) -> Result<Name, ConfigError> {
    let mut name =
        Name::from_ascii(text.trim_end_matches('.')).map_err(|error| ConfigError::BadDomain {
            domain: text.to_string(),
            reason: error.to_string(),
        })?;
    if name.is_root() {
        return Err(ConfigError::BadDomain {
            domain: text.to_string(),
            reason: "the root is not a cluster domain".to_string(),
        });
    }
    name.set_fqdn(true);
    Ok(name)
}

/// Zones with no records yet: every name under the two domains is
/// NXDOMAIN until the first build.
pub fn empty_zones(config: &DnsConfig) -> Zones {
    let built = cluster::build(&config.cluster_domain, &cluster::ClusterState::default(), 0);
    Zones {
        cluster: Arc::new(built.forward),
        reverse_v4: Arc::new(built.reverse_v4),
        reverse_v6: Arc::new(built.reverse_v6),
        reverse_authority: config.reverse_authority.clone(),
        skydns: Arc::new(skydns::build(
            &config.skydns_domain,
            &skydns::Entries::new(),
            0,
        )),
    }
}

/// Runs the cluster DNS on bound sockets: follows the cluster through
/// `client` and SkyDNS's keys through `kv`, and answers until `stop`.
pub async fn run(
    config: DnsConfig,
    sockets: server::Sockets,
    client: kube::Client,
    kv: client::SharedKv,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let zones = SharedZones::new(empty_zones(&config));
    let cluster = tokio::spawn(watch::follow_cluster(
        client,
        config.cluster_domain.clone(),
        zones.clone(),
    ));
    let skydns = tokio::spawn(watch::follow_skydns(
        kv,
        config.skydns_domain.clone(),
        zones.clone(),
    ));
    server::run(sockets, zones, config.upstreams, stop).await;
    cluster.abort();
    skydns.abort();
}

#[cfg(test)]
mod tests;
