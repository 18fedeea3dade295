//! A member's configuration, taking etcd's flag meanings, and the identities
//! (member ids, cluster id) derived from it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::error::StartError;

/// Whether this member founds a new cluster or joins one that already runs
/// (`--initial-cluster-state new|existing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialClusterState {
    New,
    Existing,
}

/// etcd's automatic compaction (`--auto-compaction-mode`, `--auto-compaction-retention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep the revisions of the last `retention`; the leader compacts every
    /// min(retention, 1 hour) to the revision it saw `retention` ago.
    Periodic(Duration),
    /// Keep the last N revisions; checked every five minutes, as in etcd.
    Revision(i64),
}

/// Parses `--auto-compaction-retention` for a mode: a Go-style duration ("30m",
/// "1h30m", "500ms") or a plain number of hours in periodic mode, a number of
/// revisions in revision mode. "0" turns compaction off.
pub fn parse_auto_compaction(
    mode: &str,
    retention: &str,
) -> Result<Option<AutoCompaction>, String> {
    let retention = retention.trim();
    match mode {
        "periodic" => {
            if let Ok(hours) = retention.parse::<u64>() {
                return Ok((hours > 0)
                    .then(|| AutoCompaction::Periodic(Duration::from_secs(hours * 3600))));
            }
            let duration = parse_go_duration(retention)
                .ok_or_else(|| format!("invalid --auto-compaction-retention {retention:?}: expected a duration such as 1h or 30m, or a number of hours"))?;
            Ok((!duration.is_zero()).then_some(AutoCompaction::Periodic(duration)))
        }
        "revision" => {
            let revisions = retention.parse::<i64>().ok().filter(|revisions| *revisions >= 0).ok_or_else(|| {
                format!("invalid --auto-compaction-retention {retention:?}: revision mode takes a number of revisions")
            })?;
            Ok((revisions > 0).then_some(AutoCompaction::Revision(revisions)))
        }
        other => Err(format!(
            "invalid --auto-compaction-mode {other:?}: expected periodic or revision"
        )),
    }
}

/// Go's `time.ParseDuration` for the units operators use: h, m, s, ms.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits_end = rest
            .find(|character: char| !character.is_ascii_digit() && character != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits_end);
        let number: f64 = number.parse().ok()?;
        let unit_end = after
            .find(|character: char| character.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let seconds = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += Duration::from_secs_f64(number * seconds);
        rest = after;
    }
    Some(total)
}

/// One side's TLS files and switches, as etcd's flags give them: the client
/// side (`--cert-file`, `--key-file`, `--trusted-ca-file`,
/// `--client-cert-auth`, `--auto-tls`) or the peer side (the same with
/// `--peer-`). Only paths and switches: `api::tls` reads the files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    /// Refuse a connection without a certificate the trusted CA signed.
    pub client_cert_auth: bool,
    /// Serve a self-signed certificate made at start when no files are given.
    pub auto_tls: bool,
}

impl TlsFiles {
    /// Whether a certificate and key were given (etcd's `TLSInfo.Empty`
    /// is the opposite).
    pub fn has_cert_and_key(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }

    /// Whether this side can serve TLS at all: files given, or made at start.
    pub fn can_serve(&self) -> bool {
        self.has_cert_and_key() || self.auto_tls
    }
}

/// Everything a store member needs to start.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<Url>,
    pub advertise_client_urls: Vec<Url>,
    pub listen_peer_urls: Vec<Url>,
    pub initial_advertise_peer_urls: Vec<Url>,
    /// Member name to its peer URLs, from `--initial-cluster`.
    pub initial_cluster: BTreeMap<String, Vec<Url>>,
    pub initial_cluster_state: InitialClusterState,
    pub initial_cluster_token: String,
    pub max_request_bytes: u64,
    pub quota_backend_bytes: u64,
    pub snapshot_count: u64,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub auto_compaction: Option<AutoCompaction>,
    /// Promote a learner as soon as it has caught up (beyond etcd; its issue #15107).
    pub auto_promote_learners: bool,
    /// How often watchers that asked for progress notifications get one
    /// (etcd's `--experimental-watch-progress-notify-interval`, 10 minutes).
    pub watch_progress_notify_interval: Duration,
    /// Refuse membership changes that could cost the cluster its quorum
    /// (etcd's `--strict-reconfig-check`, on by default).
    pub strict_reconfig_check: bool,
    /// Authentication knobs: `--auth-token` (only "simple" today),
    /// `--auth-token-ttl`, `--bcrypt-cost`.
    pub auth: crate::auth::AuthSettings,
    /// TLS for the client URLs (served on the `https://` ones only).
    pub client_tls: TlsFiles,
}

impl MemberConfig {
    /// A single-member configuration on the given client and peer URLs, as
    /// `shoal up` and tests use it.
    pub fn single(name: &str, data_dir: PathBuf, client_url: Url, peer_url: Url) -> Self {
        let mut initial_cluster = BTreeMap::new();
        initial_cluster.insert(name.to_string(), vec![peer_url.clone()]);
        MemberConfig {
            name: name.to_string(),
            data_dir,
            listen_client_urls: vec![client_url.clone()],
            advertise_client_urls: vec![client_url],
            listen_peer_urls: vec![peer_url.clone()],
            initial_advertise_peer_urls: vec![peer_url],
            initial_cluster,
            initial_cluster_state: InitialClusterState::New,
            initial_cluster_token: "etcd-cluster".to_string(),
            max_request_bytes: 1536 * 1024,
            quota_backend_bytes: 2 * 1024 * 1024 * 1024,
            snapshot_count: 100_000,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            auto_compaction: None,
            auto_promote_learners: false,
            watch_progress_notify_interval: Duration::from_secs(600),
            strict_reconfig_check: true,
            auth: crate::auth::AuthSettings::default(),
            client_tls: TlsFiles::default(),
        }
    }

    /// Checks the combinations etcd checks, with a message that names the problem.
    pub fn validate(&self) -> Result<(), StartError> {
        if self.name.is_empty() {
            return Err(StartError::Config("--name must not be empty".into()));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(StartError::Config(
                "--heartbeat-interval must be greater than 0".into(),
            ));
        }
        if self.election_timeout < self.heartbeat_interval * 5 {
            return Err(StartError::Config(format!(
                "--election-timeout[{}ms] should be at least 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout.as_millis(),
                self.heartbeat_interval.as_millis()
            )));
        }
        if self.snapshot_count == 0 {
            return Err(StartError::Config(
                "--snapshot-count must be greater than 0".into(),
            ));
        }
        if self.listen_client_urls.is_empty() {
            return Err(StartError::Config(
                "--listen-client-urls must name at least one URL".into(),
            ));
        }
        if self.listen_peer_urls.is_empty() {
            return Err(StartError::Config(
                "--listen-peer-urls must name at least one URL".into(),
            ));
        }
        for url in &self.listen_client_urls {
            if url.scheme() == "https" && !self.client_tls.can_serve() {
                // etcd's words.
                return Err(StartError::Config(format!(
                    "TLS key/cert (--cert-file, --key-file) must be provided for client url {} with HTTPS scheme",
                    url_text(url)
                )));
            }
        }
        if self.client_tls.cert_file.is_some() != self.client_tls.key_file.is_some() {
            return Err(StartError::Config(
                "--cert-file and --key-file must be given together".into(),
            ));
        }
        if self.client_tls.client_cert_auth && self.client_tls.trusted_ca_file.is_none() {
            return Err(StartError::Config(
                "--client-cert-auth needs --trusted-ca-file (the CA whose client certificates are accepted)".into(),
            ));
        }
        for url in self
            .listen_peer_urls
            .iter()
            .chain(&self.initial_advertise_peer_urls)
        {
            if url.scheme() == "https" {
                return Err(StartError::Config(format!(
                    "peer url {}: TLS between members (https peer URLs, --peer-cert-file) is not implemented yet; use http peer URLs on a trusted network",
                    url_text(url)
                )));
            }
        }
        let Some(own_urls) = self.initial_cluster.get(&self.name) else {
            return Err(StartError::Config(format!(
                "couldn't find local name {:?} in the initial cluster configuration (--initial-cluster)",
                self.name
            )));
        };
        let mut own_sorted: Vec<&str> = own_urls.iter().map(Url::as_str).collect();
        own_sorted.sort_unstable();
        let mut advertised: Vec<&str> = self
            .initial_advertise_peer_urls
            .iter()
            .map(Url::as_str)
            .collect();
        advertised.sort_unstable();
        if own_sorted != advertised {
            return Err(StartError::Config(format!(
                "--initial-cluster has {}={} but --initial-advertise-peer-urls is {}",
                self.name,
                own_sorted.join(","),
                advertised.join(",")
            )));
        }
        Ok(())
    }

    /// This member's id in the initial cluster.
    pub fn member_id(&self) -> u64 {
        member_id(
            &self.initial_cluster[&self.name],
            &self.initial_cluster_token,
        )
    }

    /// The members `--initial-cluster` founds a cluster with, in etcd's form; only
    /// this member's own name is known before the others announce theirs.
    pub fn founding_members(&self) -> Vec<proto::etcdserverpb::Member> {
        let own_id = self.member_id();
        self.initial_cluster
            .iter()
            .map(|(name, urls)| {
                let id = member_id(urls, &self.initial_cluster_token);
                proto::etcdserverpb::Member {
                    id,
                    name: if id == own_id {
                        name.clone()
                    } else {
                        String::new()
                    },
                    peer_ur_ls: urls.iter().map(|url| url_text(url).to_string()).collect(),
                    client_ur_ls: Vec::new(),
                    is_learner: false,
                }
            })
            .collect()
    }

    /// The heartbeat interval is raft's tick; the election timeout is counted in ticks.
    pub fn election_ticks(&self) -> usize {
        let ticks = self.election_timeout.as_millis() / self.heartbeat_interval.as_millis().max(1);
        usize::try_from(ticks).unwrap_or(usize::MAX).max(2)
    }
}

/// Parses `--initial-cluster` (`name=url,name=url,…`). A name may appear more than
/// once to give a member several peer URLs, as in etcd.
pub fn parse_initial_cluster(text: &str) -> Result<BTreeMap<String, Vec<Url>>, String> {
    let mut members: BTreeMap<String, Vec<Url>> = BTreeMap::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let Some((name, url)) = item.split_once('=') else {
            return Err(format!("{item:?} is not of the form name=url"));
        };
        let url = parse_url(url)?;
        members.entry(name.to_string()).or_default().push(url);
    }
    if members.is_empty() {
        return Err("no members given".into());
    }
    Ok(members)
}

/// Parses one URL the way etcd accepts them on its flags: http or https with a host and port.
pub fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|error| format!("{text:?}: {error}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "{text:?}: URL scheme must be http or https, not {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none() || url.port_or_known_default().is_none() {
        return Err(format!("{text:?}: URL must have a host and a port"));
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err(format!("{text:?}: URL must not have a path"));
    }
    Ok(url)
}

/// Parses a comma-separated URL list.
pub fn parse_url_list(text: &str) -> Result<Vec<Url>, String> {
    let urls = text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(parse_url)
        .collect::<Result<Vec<_>, _>>()?;
    if urls.is_empty() {
        return Err("no URL given".into());
    }
    Ok(urls)
}

/// A member's id: a stable hash of its peer URLs and the cluster token, so every
/// founding member computes the same ids for everyone (etcd derives them the same
/// way, from the same inputs, with SHA-1; shoal's ids are its own).
pub fn member_id(peer_urls: &[Url], cluster_token: &str) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(url_text).collect();
    urls.sort_unstable();
    let mut hash = Fnv64::new();
    for url in urls {
        hash.write(url.as_bytes());
    }
    hash.write(cluster_token.as_bytes());
    // Raft reserves id 0 for "none".
    hash.finish().max(1)
}

/// The cluster id: a hash of every founding member id.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut hash = Fnv64::new();
    for id in ids {
        hash.write(&id.to_be_bytes());
    }
    hash.finish()
}

/// A URL as etcd prints it: without the trailing slash `Url` adds.
pub fn url_text(url: &Url) -> &str {
    url.as_str().trim_end_matches('/')
}

/// 64-bit FNV-1a: small, stable across Rust versions and platforms.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab","c") and ("a","bc") hash differently.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parses_names_and_repeated_names() {
        let cluster = parse_initial_cluster(
            "a=http://127.0.0.1:2380,b=http://127.0.0.1:2381,a=http://10.0.0.1:2380",
        )
        .unwrap();
        assert_eq!(cluster.len(), 2);
        assert_eq!(cluster["a"].len(), 2);
        assert!(parse_initial_cluster("a").is_err());
        assert!(parse_initial_cluster("a=ftp://x:1").is_err());
    }

    #[test]
    fn member_ids_depend_on_urls_and_token_not_order() {
        let first = parse_url_list("http://127.0.0.1:2380,http://127.0.0.1:2390").unwrap();
        let second = parse_url_list("http://127.0.0.1:2390,http://127.0.0.1:2380").unwrap();
        assert_eq!(member_id(&first, "t"), member_id(&second, "t"));
        assert_ne!(member_id(&first, "t"), member_id(&first, "u"));
    }

    #[test]
    fn auto_compaction_retention_takes_etcds_forms() {
        let hour = Duration::from_secs(3600);
        assert_eq!(
            parse_auto_compaction("periodic", "1"),
            Ok(Some(AutoCompaction::Periodic(hour)))
        );
        assert_eq!(
            parse_auto_compaction("periodic", "1h30m"),
            Ok(Some(AutoCompaction::Periodic(hour + hour / 2)))
        );
        assert_eq!(parse_auto_compaction("periodic", "0"), Ok(None));
        assert_eq!(
            parse_auto_compaction("revision", "1000"),
            Ok(Some(AutoCompaction::Revision(1000)))
        );
        assert!(parse_auto_compaction("revision", "1h").is_err());
        assert!(parse_auto_compaction("periodic", "soon").is_err());
        assert!(parse_auto_compaction("sometimes", "1").is_err());
    }

    #[test]
    fn validate_names_the_problem() {
        let mut config = MemberConfig::single(
            "n1",
            PathBuf::from("/tmp/x"),
            parse_url("http://127.0.0.1:2379").unwrap(),
            parse_url("http://127.0.0.1:2380").unwrap(),
        );
        assert!(config.validate().is_ok());
        config.name = "n2".into();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("n2"), "{error}");
    }

    #[test]
    fn https_client_url_needs_a_certificate() {
        let mut config = MemberConfig::single(
            "n1",
            PathBuf::from("/tmp/x"),
            parse_url("https://127.0.0.1:2379").unwrap(),
            parse_url("http://127.0.0.1:2380").unwrap(),
        );
        let error = config.validate().unwrap_err().to_string();
        assert_eq!(
            error,
            "invalid configuration: TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379 with HTTPS scheme"
        );
        config.client_tls.auto_tls = true;
        assert!(config.validate().is_ok());
        config.client_tls.client_cert_auth = true;
        assert!(config.validate().is_err());
        config.client_tls.trusted_ca_file = Some(PathBuf::from("/tmp/ca.pem"));
        assert!(config.validate().is_ok());
    }
}
