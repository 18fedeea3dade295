//! The client port's gRPC metrics, with go-grpc-prometheus' names and labels
//! as etcd serves them: `grpc_server_started_total` and
//! `grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}`
//! for every method (zero series included, as etcd pre-registers them), and
//! `etcd_network_client_grpc_{received,sent}_bytes_total`. A call costs an
//! atomic add at its start and one at its end: the counters are one array
//! indexed by method and code, with no map and no lock.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::prometheus_client::collector::Collector;
use metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use metrics::prometheus_client::metrics::counter::ConstCounter;

/// gRPC's status codes by number, as grpc-go names them.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
const CANCELED: i32 = 1;

/// Every method of etcd's client API and shoal's lock and election services:
/// (service, method, grpc_type).
const METHODS: &[(&str, &str, &str)] = &[
    ("etcdserverpb.KV", "Range", "unary"),
    ("etcdserverpb.KV", "Put", "unary"),
    ("etcdserverpb.KV", "DeleteRange", "unary"),
    ("etcdserverpb.KV", "Txn", "unary"),
    ("etcdserverpb.KV", "Compact", "unary"),
    ("etcdserverpb.Watch", "Watch", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseGrant", "unary"),
    ("etcdserverpb.Lease", "LeaseRevoke", "unary"),
    ("etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseTimeToLive", "unary"),
    ("etcdserverpb.Lease", "LeaseLeases", "unary"),
    ("etcdserverpb.Cluster", "MemberAdd", "unary"),
    ("etcdserverpb.Cluster", "MemberRemove", "unary"),
    ("etcdserverpb.Cluster", "MemberUpdate", "unary"),
    ("etcdserverpb.Cluster", "MemberList", "unary"),
    ("etcdserverpb.Cluster", "MemberPromote", "unary"),
    ("etcdserverpb.Maintenance", "Alarm", "unary"),
    ("etcdserverpb.Maintenance", "Status", "unary"),
    ("etcdserverpb.Maintenance", "Defragment", "unary"),
    ("etcdserverpb.Maintenance", "Hash", "unary"),
    ("etcdserverpb.Maintenance", "HashKV", "unary"),
    ("etcdserverpb.Maintenance", "Snapshot", "server_stream"),
    ("etcdserverpb.Maintenance", "MoveLeader", "unary"),
    ("etcdserverpb.Auth", "AuthEnable", "unary"),
    ("etcdserverpb.Auth", "AuthDisable", "unary"),
    ("etcdserverpb.Auth", "Authenticate", "unary"),
    ("etcdserverpb.Auth", "UserAdd", "unary"),
    ("etcdserverpb.Auth", "UserGet", "unary"),
    ("etcdserverpb.Auth", "UserList", "unary"),
    ("etcdserverpb.Auth", "UserDelete", "unary"),
    ("etcdserverpb.Auth", "UserChangePassword", "unary"),
    ("etcdserverpb.Auth", "UserGrantRole", "unary"),
    ("etcdserverpb.Auth", "UserRevokeRole", "unary"),
    ("etcdserverpb.Auth", "RoleAdd", "unary"),
    ("etcdserverpb.Auth", "RoleGet", "unary"),
    ("etcdserverpb.Auth", "RoleList", "unary"),
    ("etcdserverpb.Auth", "RoleDelete", "unary"),
    ("etcdserverpb.Auth", "RoleGrantPermission", "unary"),
    ("etcdserverpb.Auth", "RoleRevokePermission", "unary"),
    ("v3lockpb.Lock", "Lock", "unary"),
    ("v3lockpb.Lock", "Unlock", "unary"),
    ("v3electionpb.Election", "Campaign", "unary"),
    ("v3electionpb.Election", "Proclaim", "unary"),
    ("v3electionpb.Election", "Leader", "unary"),
    ("v3electionpb.Election", "Observe", "server_stream"),
    ("v3electionpb.Election", "Resign", "unary"),
];

/// The counters of one client port.
#[derive(Debug)]
pub struct GrpcMetrics {
    started: Box<[AtomicU64]>,
    /// `METHODS.len() * CODE_NAMES.len()`, method-major.
    handled: Box<[AtomicU64]>,
    received_bytes: AtomicU64,
    sent_bytes: AtomicU64,
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        let zeros = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        GrpcMetrics {
            started: zeros(METHODS.len()),
            handled: zeros(METHODS.len() * CODE_NAMES.len()),
            received_bytes: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
        }
    }
}

/// A method's place in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodIdx(usize);

impl GrpcMetrics {
    /// The method a request path (`/service/method`) names, if it is known.
    pub fn method(path: &str) -> Option<MethodIdx> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        METHODS
            .iter()
            .position(|(known_service, known_method, _)| {
                *known_service == service && *known_method == method
            })
            .map(MethodIdx)
    }

    pub fn started(&self, method: MethodIdx) {
        self.started[method.0].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a finished call; a code outside gRPC's is counted as Unknown.
    pub fn handled(&self, method: MethodIdx, code: i32) {
        let code_idx = usize::try_from(code)
            .ok()
            .filter(|idx| *idx < CODE_NAMES.len())
            .unwrap_or(2);
        self.handled[method.0 * CODE_NAMES.len() + code_idx].fetch_add(1, Ordering::Relaxed);
    }

    pub fn received(&self, bytes: usize) {
        self.received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn sent(&self, bytes: usize) {
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A record of one call that counts it as handled when it is dropped:
    /// with the code it was given, or Canceled if the call was abandoned.
    pub fn call(self: &std::sync::Arc<Self>, path: &str) -> Option<CallRecord> {
        let method = Self::method(path)?;
        self.started(method);
        Some(CallRecord {
            metrics: self.clone(),
            method,
            code: CANCELED,
        })
    }
}

/// See [`GrpcMetrics::call`].
#[derive(Debug)]
pub struct CallRecord {
    metrics: std::sync::Arc<GrpcMetrics>,
    method: MethodIdx,
    code: i32,
}

impl CallRecord {
    pub fn set_code(&mut self, code: i32) {
        self.code = code;
    }

    /// Reads the code from `grpc-status` in headers or trailers, if there.
    pub fn set_code_from(&mut self, headers: &http::HeaderMap) {
        if let Some(code) = headers
            .get("grpc-status")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
        {
            self.code = code;
        }
    }

    pub fn metrics(&self) -> &GrpcMetrics {
        &self.metrics
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.metrics.handled(self.method, self.code);
    }
}

#[derive(Debug)]
struct Labels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: Option<&'static str>,
}

impl metrics::EncodeLabelSet for Labels {
    fn encode(
        &self,
        encoder: &mut metrics::prometheus_client::encoding::LabelSetEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use metrics::prometheus_client::encoding::EncodeLabel;
        if let Some(code) = self.grpc_code {
            ("grpc_code", code).encode(encoder.encode_label())?;
        }
        ("grpc_method", self.grpc_method).encode(encoder.encode_label())?;
        ("grpc_service", self.grpc_service).encode(encoder.encode_label())?;
        ("grpc_type", self.grpc_type).encode(encoder.encode_label())
    }
}

impl Collector for GrpcMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let labels = |idx: usize, code: Option<&'static str>| {
            let (grpc_service, grpc_method, grpc_type) = METHODS[idx];
            Labels {
                grpc_type,
                grpc_service,
                grpc_method,
                grpc_code: code,
            }
        };
        let counter_type = ConstCounter::new(0u64).metric_type();
        {
            let mut family = encoder.encode_descriptor(
                "grpc_server_started",
                "Total number of RPCs started on the server.",
                None,
                counter_type,
            )?;
            for (idx, started) in self.started.iter().enumerate() {
                let counter = ConstCounter::new(started.load(Ordering::Relaxed));
                counter.encode(family.encode_family(&labels(idx, None))?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "grpc_server_handled",
                "Total number of RPCs completed on the server, regardless of success or failure.",
                None,
                counter_type,
            )?;
            for (slot, handled) in self.handled.iter().enumerate() {
                let (idx, code_idx) = (slot / CODE_NAMES.len(), slot % CODE_NAMES.len());
                let counter = ConstCounter::new(handled.load(Ordering::Relaxed));
                counter.encode(family.encode_family(&labels(idx, Some(CODE_NAMES[code_idx])))?)?;
            }
        }
        for (name, help, value) in [
            (
                "etcd_network_client_grpc_received_bytes",
                "The total number of bytes received from grpc clients.",
                &self.received_bytes,
            ),
            (
                "etcd_network_client_grpc_sent_bytes",
                "The total number of bytes sent to grpc clients.",
                &self.sent_bytes,
            ),
        ] {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            counter.encode(encoder.encode_descriptor(name, help, None, counter_type)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn calls_count_by_method_and_code_and_dropped_calls_are_canceled() {
        let metrics = Arc::new(GrpcMetrics::default());
        let mut put = metrics.call("/etcdserverpb.KV/Put").unwrap();
        put.set_code(0);
        drop(put);
        drop(metrics.call("/etcdserverpb.Watch/Watch").unwrap());
        assert!(metrics.call("/nope.Service/Nothing").is_none());
        let mut registry = metrics::Registry::default();
        registry.register_collector(Box::new(metrics.clone()));
        let mut text = String::new();
        metrics::prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            .unwrap();
        assert!(text.contains("grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1\n"), "{text}");
        assert!(text.contains("grpc_server_handled_total{grpc_code=\"Canceled\",grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"} 1\n"));
        assert!(text.contains("grpc_server_started_total{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1\n"));
    }
}
