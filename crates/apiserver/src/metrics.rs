//! The API server's metrics, with kube-apiserver's names where they exist:
//! `apiserver_request_total` and `apiserver_request_duration_seconds` by
//! verb, group, version, resource, subresource, scope and code, and the
//! cluster's objects counted as kube-state-metrics would show them
//! (`shoal_nodes`, `shoal_pods{phase}`), kept current from the watch cache
//! change by change: a scrape reads a few atomics, never the objects.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, EncodeLabelSet, Family, Gauge, Histogram, Registry};

use crate::cache::{ChangeKind, Subscription};

/// kube-apiserver's request duration buckets.
const REQUEST_DURATION_BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// The pod phases counted, in Kubernetes' order.
const PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: &'static str,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub scope: &'static str,
    pub component: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub verb: &'static str,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub scope: &'static str,
    pub component: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

fn request_duration_histogram() -> Histogram {
    Histogram::new(REQUEST_DURATION_BUCKETS)
}

/// The API server's handles.
#[derive(Debug)]
pub struct ApiMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    pub nodes: Gauge,
    /// By `PHASES`' order.
    pub pods_by_phase: [Gauge; 5],
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(request_duration_histogram),
            nodes: Gauge::default(),
            pods_by_phase: Default::default(),
        }
    }
}

impl ApiMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code",
            self.requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, group, version, resource, subresource, scope and component",
            self.request_duration.clone(),
        );
        registry.register(
            "shoal_nodes",
            "Number of Nodes in the cluster",
            self.nodes.clone(),
        );
        registry.register(
            "shoal_pods",
            "Number of Pods in the cluster by phase",
            metrics::FixedFamily::new(
                PHASES
                    .iter()
                    .zip(&self.pods_by_phase)
                    .map(|(phase, gauge)| (PhaseLabels { phase }, gauge.clone()))
                    .collect(),
            ),
        );
    }

    /// Counts one answered request.
    pub fn record(&self, labels: DurationLabels, code: u16, elapsed: Duration) {
        self.request_duration
            .get_or_create(&labels)
            .observe_duration(elapsed);
        let DurationLabels {
            verb,
            group,
            version,
            resource,
            subresource,
            scope,
            component,
        } = labels;
        self.requests
            .get_or_create(&RequestLabels {
                verb,
                group,
                version,
                resource,
                subresource,
                scope,
                component,
                code,
            })
            .inc();
    }
}

/// kube-apiserver's verb for a request.
pub fn verb(method: &http::Method, has_name: bool, watch: bool) -> &'static str {
    match *method {
        http::Method::GET if watch => "WATCH",
        http::Method::GET if has_name => "GET",
        http::Method::GET => "LIST",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE if has_name => "DELETE",
        http::Method::DELETE => "DELETECOLLECTION",
        _ => "UNKNOWN",
    }
}

fn phase_idx(object: Option<&serde_json::Value>) -> Option<usize> {
    let object = object?;
    let phase = object
        .pointer("/status/phase")
        .and_then(|phase| phase.as_str())
        .unwrap_or("Pending");
    Some(PHASES.iter().position(|known| *known == phase).unwrap_or(4))
}

/// Keeps `shoal_nodes` and `shoal_pods` current: one count at the cache's
/// revision, then each change from the watch cache. Runs until the API
/// server is dropped.
pub(crate) async fn keep_counts(api: std::sync::Weak<crate::Api>) {
    loop {
        let Some(strong) = api.upgrade() else { return };
        let pods = strong.caches.get("/registry/pods/");
        let nodes = strong.caches.get("/registry/minions/");
        let (Ok(pod_changes), Ok(node_changes)) =
            (pods.subscribe(None).await, nodes.subscribe(None).await)
        else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let counted = count_from_store(&strong, &pod_changes, &node_changes).await;
        drop(strong);
        if let Err(error) = counted {
            tracing::debug!(%error, "counting pods and nodes failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        follow(&api, pod_changes, node_changes).await;
    }
}

async fn count_from_store(
    api: &crate::Api,
    pods: &Subscription,
    nodes: &Subscription,
) -> Result<(), client::ClientError> {
    let mut by_phase = [0i64; 5];
    let mut start = b"/registry/pods/".to_vec();
    let end = client::prefix_end(b"/registry/pods/");
    // Pages of 1,000 at the subscription's revision, so the changes that
    // follow start exactly where the count ends.
    loop {
        let response = api
            .kv
            .range(proto::etcdserverpb::RangeRequest {
                key: start.clone().into(),
                range_end: end.clone().into(),
                revision: pods.revision,
                limit: 1000,
                ..Default::default()
            })
            .await?;
        for kv in &response.kvs {
            let object: Option<serde_json::Value> = serde_json::from_slice(&kv.value).ok();
            if let Some(idx) = phase_idx(object.as_ref()) {
                by_phase[idx] += 1;
            }
        }
        match (response.more, response.kvs.last()) {
            (true, Some(last)) => {
                start = last.key.to_vec();
                start.push(0);
            }
            _ => break,
        }
    }
    let node_count = api
        .kv
        .range(proto::etcdserverpb::RangeRequest {
            key: b"/registry/minions/".to_vec().into(),
            range_end: client::prefix_end(b"/registry/minions/").into(),
            revision: nodes.revision,
            count_only: true,
            ..Default::default()
        })
        .await?
        .count;
    let metrics = &api.metrics;
    metrics.nodes.set(node_count);
    for (gauge, count) in metrics.pods_by_phase.iter().zip(by_phase) {
        gauge.set(count);
    }
    Ok(())
}

/// Applies changes until either cache starts over (then the caller counts
/// again) or the API server goes.
async fn follow(
    api: &std::sync::Weak<crate::Api>,
    mut pods: Subscription,
    mut nodes: Subscription,
) {
    loop {
        tokio::select! {
            change = pods.live.recv() => {
                let Ok(change) = change else { return };
                let Some(api) = api.upgrade() else { return };
                let gauges = &api.metrics.pods_by_phase;
                match change.kind {
                    ChangeKind::Resync => return,
                    ChangeKind::Added => {
                        if let Some(idx) = phase_idx(change.object().as_deref()) {
                            gauges[idx].inc();
                        }
                    }
                    ChangeKind::Modified => {
                        let before = phase_idx(change.previous().as_deref());
                        let after = phase_idx(change.object().as_deref());
                        if before != after {
                            if let Some(idx) = before {
                                gauges[idx].dec();
                            }
                            if let Some(idx) = after {
                                gauges[idx].inc();
                            }
                        }
                    }
                    ChangeKind::Deleted => {
                        if let Some(idx) = phase_idx(change.object().as_deref()) {
                            gauges[idx].dec();
                        }
                    }
                }
            }
            change = nodes.live.recv() => {
                let Ok(change) = change else { return };
                let Some(api) = api.upgrade() else { return };
                match change.kind {
                    ChangeKind::Resync => return,
                    ChangeKind::Added => { api.metrics.nodes.inc(); }
                    ChangeKind::Deleted => { api.metrics.nodes.dec(); }
                    ChangeKind::Modified => {}
                }
            }
        }
    }
}

/// Serves the API server's `/metrics`.
pub fn endpoint(api_metrics: &ApiMetrics) -> Arc<metrics::Endpoint> {
    let endpoint = metrics::Endpoint::with_process_metrics();
    let mut registry = Registry::default();
    api_metrics.register(&mut registry);
    endpoint.add(Arc::new(registry));
    endpoint
}

/// `apiserver_registered_watchers{resource}`: the watchers of each
/// resource's watch cache, read at the scrape.
pub(crate) struct WatcherCollector(pub std::sync::Weak<crate::Api>);

impl std::fmt::Debug for WatcherCollector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("WatcherCollector")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

impl metrics::prometheus_client::collector::Collector for WatcherCollector {
    fn encode(
        &self,
        mut encoder: metrics::prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use metrics::prometheus_client::encoding::EncodeMetric;
        let Some(api) = self.0.upgrade() else {
            return Ok(());
        };
        let counts = api.caches.watcher_counts();
        let gauge_type = metrics::prometheus_client::metrics::MetricType::Gauge;
        let mut family = encoder.encode_descriptor(
            "apiserver_registered_watchers",
            "Number of currently registered watchers for a given resource",
            None,
            gauge_type,
        )?;
        for (prefix, count) in counts {
            let resource = prefix
                .trim_start_matches("/registry/")
                .trim_end_matches('/')
                .to_string();
            let gauge = metrics::prometheus_client::metrics::gauge::ConstGauge::new(count as i64);
            gauge.encode(family.encode_family(&ResourceLabels { resource })?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_follow_kube_apiserver() {
        assert_eq!(verb(&http::Method::GET, false, false), "LIST");
        assert_eq!(verb(&http::Method::GET, false, true), "WATCH");
        assert_eq!(verb(&http::Method::GET, true, false), "GET");
        assert_eq!(
            verb(&http::Method::DELETE, false, false),
            "DELETECOLLECTION"
        );
    }

    #[test]
    fn requests_and_pod_phases_render() {
        let api_metrics = ApiMetrics::default();
        api_metrics.pods_by_phase[1].set(3);
        api_metrics.record(
            DurationLabels {
                verb: "LIST",
                group: String::new(),
                version: "v1".into(),
                resource: "pods".into(),
                subresource: String::new(),
                scope: "cluster",
                component: "apiserver",
            },
            200,
            Duration::from_millis(3),
        );
        let text = endpoint(&api_metrics).encode(metrics::Format::Text);
        assert!(text.contains("shoal_pods{phase=\"Running\"} 3\n"), "{text}");
        assert!(text.contains("apiserver_request_total{verb=\"LIST\",group=\"\",version=\"v1\",resource=\"pods\",subresource=\"\",scope=\"cluster\",component=\"apiserver\",code=\"200\"} 1\n"), "{text}");
        assert!(
            text.contains("apiserver_request_duration_seconds_bucket{verb=\"LIST\",group=\"\",version=\"v1\",resource=\"pods\",subresource=\"\",scope=\"cluster\",component=\"apiserver\",le=\"0.005\"} 1\n"),
            "{text}"
        );
    }
}
