//! The member's metrics, with etcd 3.4's names, types, labels and buckets, so
//! that dashboards and alert rules written for etcd work on shoal. The raft
//! loop, the log file, the peer streams and the API update these handles (an
//! atomic add each); values a scrape can read for itself (roles, sizes,
//! revisions) are read then by [`MemberCollector`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use metrics::prometheus_client::collector::Collector;
use metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use metrics::prometheus_client::metrics::gauge::ConstGauge;
use metrics::{Counter, Family, Gauge, Histogram, Registry, exponential_buckets};

use crate::node::NodeStatus;
use crate::state_machine::StateMachine;

/// A peer's label: `To` on what is sent to it, `From` on what it sent, as
/// etcd labels its peer metrics (member ids in hexadecimal).
pub type PeerLabels = Vec<(&'static str, String)>;

/// etcd's `--metrics basic` set that shoal keeps, as live handles.
#[derive(Debug)]
pub struct StoreMetrics {
    pub leader_changes_seen: Counter,
    pub proposals_committed: Counter,
    pub proposals_applied: Counter,
    pub proposals_pending: Gauge,
    pub proposals_failed: Counter,
    pub heartbeat_send_failures: Counter,
    pub slow_apply: Counter,
    pub slow_read_indexes: Counter,
    pub read_indexes_failed: Counter,
    pub wal_fsync_duration: Histogram,
    pub wal_write_bytes: Counter,
    pub backend_commit_duration: Histogram,
    pub mvcc_put: Counter,
    pub mvcc_range: Counter,
    pub mvcc_delete: Counter,
    pub mvcc_txn: Counter,
    pub lease_granted: Counter,
    pub lease_revoked: Counter,
    pub lease_renewed: Counter,
    pub peer: PeerMetrics,
}

/// The peer traffic and round trips, per peer.
#[derive(Clone, Debug)]
pub struct PeerMetrics {
    pub sent_bytes: Family<PeerLabels, Counter>,
    pub received_bytes: Family<PeerLabels, Counter>,
    pub sent_failures: Family<PeerLabels, Counter>,
    pub round_trip_time: Family<PeerLabels, Histogram, fn() -> Histogram>,
}

impl PeerMetrics {
    pub fn to(peer_id: u64) -> PeerLabels {
        vec![("To", format!("{peer_id:x}"))]
    }

    pub fn from(peer_id: u64) -> PeerLabels {
        vec![("From", format!("{peer_id:x}"))]
    }
}

/// etcd's disk histograms: 1 ms doubling to 8.192 s (14 buckets).
fn disk_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// etcd's peer round trip histogram: 0.1 ms doubling to 0.8192 s (14 buckets).
fn round_trip_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 14))
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            leader_changes_seen: Counter::default(),
            proposals_committed: Counter::default(),
            proposals_applied: Counter::default(),
            proposals_pending: Gauge::default(),
            proposals_failed: Counter::default(),
            heartbeat_send_failures: Counter::default(),
            slow_apply: Counter::default(),
            slow_read_indexes: Counter::default(),
            read_indexes_failed: Counter::default(),
            wal_fsync_duration: disk_histogram(),
            wal_write_bytes: Counter::default(),
            backend_commit_duration: disk_histogram(),
            mvcc_put: Counter::default(),
            mvcc_range: Counter::default(),
            mvcc_delete: Counter::default(),
            mvcc_txn: Counter::default(),
            lease_granted: Counter::default(),
            lease_revoked: Counter::default(),
            lease_renewed: Counter::default(),
            peer: PeerMetrics {
                sent_bytes: Family::default(),
                received_bytes: Family::default(),
                sent_failures: Family::default(),
                round_trip_time: Family::new_with_constructor(round_trip_histogram),
            },
        }
    }
}

impl StoreMetrics {
    /// Registers every handle under etcd's name. Counters are registered
    /// without `_total`, which the encoder adds.
    pub fn register(&self, registry: &mut Registry) {
        let counters = [
            (
                "etcd_server_leader_changes_seen",
                "The number of leader changes seen",
                &self.leader_changes_seen,
            ),
            // etcd declares these two gauges; they only grow while a member
            // runs, so shoal declares them counters (same series, lint-clean).
            (
                "etcd_server_proposals_committed",
                "The total number of consensus proposals committed",
                &self.proposals_committed,
            ),
            (
                "etcd_server_proposals_applied",
                "The total number of consensus proposals applied",
                &self.proposals_applied,
            ),
            (
                "etcd_server_proposals_failed",
                "The total number of failed proposals seen",
                &self.proposals_failed,
            ),
            (
                "etcd_server_heartbeat_send_failures",
                "The total number of leader heartbeat send failures (likely overloaded from slow disk)",
                &self.heartbeat_send_failures,
            ),
            (
                "etcd_server_slow_apply",
                "The total number of slow apply requests (likely overloaded from slow disk)",
                &self.slow_apply,
            ),
            (
                "etcd_server_slow_read_indexes",
                "The total number of pending read indexes not in sync with leader's or timed out read index requests",
                &self.slow_read_indexes,
            ),
            (
                "etcd_server_read_indexes_failed",
                "The total number of failed read indexes seen",
                &self.read_indexes_failed,
            ),
            (
                "etcd_disk_wal_write_bytes",
                "Total number of bytes written in WAL",
                &self.wal_write_bytes,
            ),
            (
                "etcd_mvcc_put",
                "Total number of puts seen by this member",
                &self.mvcc_put,
            ),
            (
                "etcd_mvcc_range",
                "Total number of ranges seen by this member",
                &self.mvcc_range,
            ),
            (
                "etcd_mvcc_delete",
                "Total number of deletes seen by this member",
                &self.mvcc_delete,
            ),
            (
                "etcd_mvcc_txn",
                "Total number of txns seen by this member",
                &self.mvcc_txn,
            ),
            (
                "etcd_debugging_lease_granted",
                "The total number of granted leases",
                &self.lease_granted,
            ),
            (
                "etcd_debugging_lease_revoked",
                "The total number of revoked leases",
                &self.lease_revoked,
            ),
            (
                "etcd_debugging_lease_renewed",
                "The number of renewed leases seen by the leader",
                &self.lease_renewed,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit",
            self.proposals_pending.clone(),
        );
        registry.register(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL",
            self.wal_fsync_duration.clone(),
        );
        registry.register(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend",
            self.backend_commit_duration.clone(),
        );
        registry.register(
            "etcd_network_peer_sent_bytes",
            "The total number of bytes sent to peers",
            self.peer.sent_bytes.clone(),
        );
        registry.register(
            "etcd_network_peer_received_bytes",
            "The total number of bytes received from peers",
            self.peer.received_bytes.clone(),
        );
        registry.register(
            "etcd_network_peer_sent_failures",
            "The total number of send failures from peers",
            self.peer.sent_failures.clone(),
        );
        registry.register(
            "etcd_network_peer_round_trip_time_seconds",
            "Round-Trip-Time histogram between peers",
            self.peer.round_trip_time.clone(),
        );
    }
}

/// What a scrape reads from the member itself: roles, identity, sizes.
pub struct MemberCollector {
    pub(crate) member_id: u64,
    pub(crate) status: Arc<NodeStatus>,
    pub(crate) watch_hub: Arc<crate::watch::WatchHub>,
    pub(crate) state_machine: Arc<StateMachine>,
    pub(crate) db_path: PathBuf,
    pub(crate) quota_backend_bytes: u64,
}

impl std::fmt::Debug for MemberCollector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MemberCollector")
            .field("member_id", &format_args!("{:x}", self.member_id))
            .finish_non_exhaustive()
    }
}

/// The version shoal's store reports as etcd's (`/version`'s etcdserver).
pub const SERVER_VERSION: &str = "3.4.0";

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    // Whole numbers are written as integers, as etcd writes them (`1`, not
    // `1.0`): people grep for `etcd_server_has_leader 1`.
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        let gauge = ConstGauge::new(value as i64);
        return gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?);
    }
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

fn info_gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &'static str,
    value: String,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(1i64);
    let mut metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    let labels = [(label, value)];
    gauge.encode(metric.encode_family(&labels)?)
}

impl Collector for MemberCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let status = &self.status;
        let leader_id = status.leader_id.load(Ordering::Acquire);
        let flag = |on: bool| if on { 1.0 } else { 0.0 };
        gauge(
            &mut encoder,
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            flag(leader_id != 0 && !status.stopped.load(Ordering::Acquire)),
        )?;
        gauge(
            &mut encoder,
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            flag(leader_id == self.member_id),
        )?;
        gauge(
            &mut encoder,
            "etcd_server_is_learner",
            "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            flag(status.is_learner.load(Ordering::Acquire)),
        )?;
        info_gauge(
            &mut encoder,
            "etcd_server_id",
            "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
            "server_id",
            format!("{:x}", self.member_id),
        )?;
        info_gauge(
            &mut encoder,
            "etcd_server_version",
            "Which version is running. 1 for 'server_version' label with current version.",
            "server_version",
            SERVER_VERSION.to_string(),
        )?;
        info_gauge(
            &mut encoder,
            "etcd_cluster_version",
            "Which version is running. 1 for 'cluster_version' label with current cluster version",
            "cluster_version",
            "3.4".to_string(),
        )?;
        gauge(
            &mut encoder,
            "etcd_server_quota_backend_bytes",
            "Current backend storage quota size in bytes.",
            self.quota_backend_bytes as f64,
        )?;
        let db_bytes = std::fs::metadata(&self.db_path).map_or(0, |metadata| metadata.len());
        let mvcc = &self.state_machine.mvcc;
        gauge(
            &mut encoder,
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            db_bytes as f64,
        )?;
        gauge(
            &mut encoder,
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes.",
            mvcc.db_size_in_use().min(db_bytes.max(1)) as f64,
        )?;
        gauge(
            &mut encoder,
            "etcd_debugging_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            db_bytes as f64,
        )?;
        gauge(
            &mut encoder,
            "etcd_debugging_mvcc_keys_total",
            "Total number of keys.",
            mvcc.n_keys_indexed() as f64,
        )?;
        gauge(
            &mut encoder,
            "etcd_debugging_mvcc_current_revision",
            "The current revision of store.",
            mvcc.current_revision() as f64,
        )?;
        gauge(
            &mut encoder,
            "etcd_debugging_mvcc_compact_revision",
            "The revision of the last compaction in store.",
            mvcc.compact_revision() as f64,
        )?;
        gauge(
            &mut encoder,
            "etcd_debugging_mvcc_watcher_total",
            "Total number of watchers.",
            self.watch_hub.n_watchers() as f64,
        )?;
        Ok(())
    }
}
