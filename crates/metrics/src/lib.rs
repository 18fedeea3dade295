//! Prometheus metrics for every shoal part. Each part builds its own
//! [`Registry`] of counters, gauges and [`Histogram`]s (all atomics: an
//! observation takes no lock and allocates nothing) and adds it to the
//! [`Endpoint`] of the port that serves it; the endpoint renders the text
//! format 0.0.4, or OpenMetrics 1.0 when the scrape's `Accept` asks for it.
//! Serving HTTP is the caller's: this crate does no I/O beyond `/proc/self`.

pub mod histogram;
pub mod process;

use std::sync::{Arc, RwLock};

pub use histogram::{Histogram, exponential_buckets, linear_buckets};
pub use prometheus_client;
pub use prometheus_client::encoding::EncodeLabelSet;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::registry::Registry;

/// The text format's `Content-Type`, exactly as Prometheus 3 requires it.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// OpenMetrics 1.0's `Content-Type`.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A floating-point gauge (`Gauge<f64>`): sizes, seconds, ratios.
pub type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// A family whose members are fixed when it is made: live handles with
/// their labels. An observation touches only its handle (no map lookup, no
/// lock, no label set built); a scrape walks the members.
#[derive(Debug)]
pub struct FixedFamily<L, M> {
    members: Vec<(L, M)>,
}

impl<L, M> FixedFamily<L, M> {
    pub fn new(members: Vec<(L, M)>) -> Self {
        FixedFamily { members }
    }
}

impl<L, M> prometheus_client::encoding::EncodeMetric for FixedFamily<L, M>
where
    L: EncodeLabelSet,
    M: prometheus_client::encoding::EncodeMetric + prometheus_client::metrics::TypedMetric,
{
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        for (labels, metric) in &self.members {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        M::TYPE
    }
}

/// The exposition format a scrape gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
}

impl Format {
    /// Picks the format from an `Accept` header: OpenMetrics when it is
    /// accepted with a higher quality than the text format (Prometheus
    /// itself asks for it first), the text format otherwise.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let mut openmetrics_quality = 0.0f32;
        let mut text_quality = 0.0f32;
        for media_range in accept.split(',') {
            let mut parts = media_range.split(';').map(str::trim);
            let media_type = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut quality = 1.0f32;
            let mut version: Option<&str> = None;
            for parameter in parts {
                if let Some((key, value)) = parameter.split_once('=') {
                    match key.trim() {
                        "q" => quality = value.trim().parse().unwrap_or(0.0),
                        "version" => version = Some(value.trim()),
                        _ => {}
                    }
                }
            }
            match media_type.as_str() {
                // Only OpenMetrics 1.0.0 is served; 0.0.1 is the same text.
                "application/openmetrics-text"
                    if matches!(version, None | Some("1.0.0") | Some("0.0.1")) =>
                {
                    openmetrics_quality = openmetrics_quality.max(quality)
                }
                "text/plain" | "*/*" | "text/*" => text_quality = text_quality.max(quality),
                _ => {}
            }
        }
        if openmetrics_quality > 0.0 && openmetrics_quality > text_quality {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// What one `/metrics` path serves: the registries of the parts that run
/// behind its port. Parts started later add theirs with [`Endpoint::add`].
#[derive(Debug, Default)]
pub struct Endpoint {
    registries: RwLock<Vec<Arc<Registry>>>,
}

impl Endpoint {
    /// An endpoint serving the `process_*` metrics and nothing else yet.
    pub fn with_process_metrics() -> Arc<Endpoint> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::ProcessCollector));
        let endpoint = Endpoint::default();
        endpoint.add(Arc::new(registry));
        Arc::new(endpoint)
    }

    /// Serves `registry` too. Its names must not repeat another's.
    pub fn add(&self, registry: Arc<Registry>) {
        self.registries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(registry);
    }

    /// The body for a scrape with this `Accept` header, and its content type.
    pub fn render(&self, accept: Option<&str>) -> (&'static str, String) {
        let format = Format::negotiate(accept);
        (format.content_type(), self.encode(format))
    }

    /// Encodes every registry in `format`.
    pub fn encode(&self, format: Format) -> String {
        let registries = self
            .registries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let mut body = String::with_capacity(16 * 1024);
        for registry in &registries {
            // Writing into a String cannot fail; the encoders return
            // fmt::Error only for a failing writer.
            let _ = match format {
                Format::Text => {
                    prometheus_client::encoding::prometheus_text::encode(&mut body, registry)
                }
                Format::OpenMetrics => {
                    prometheus_client::encoding::text::encode_registry(&mut body, registry)
                }
            };
        }
        if format == Format::OpenMetrics {
            let _ = prometheus_client::encoding::text::encode_eof(&mut body);
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_scrapes_get_openmetrics_and_curl_gets_text() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(
            Format::negotiate(Some(
                "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5"
            )),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; version=2.0.0")),
            Format::Text
        );
    }

    #[test]
    fn both_formats_render_a_histogram_and_a_counter() {
        let mut registry = Registry::default();
        let fsync = Histogram::new(exponential_buckets(0.001, 2.0, 3));
        fsync.observe(0.0015);
        fsync.observe(5.0);
        registry.register("etcd_disk_wal_fsync_duration_seconds", "fsync", fsync);
        let puts = Counter::<u64>::default();
        puts.inc();
        registry.register("etcd_mvcc_put", "puts", puts);
        let endpoint = Endpoint::with_process_metrics();
        endpoint.add(Arc::new(registry));

        let (content_type, text) = endpoint.render(Some("*/*"));
        assert_eq!(content_type, TEXT_CONTENT_TYPE);
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.002\"} 1\n"));
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_count 2\n"));
        assert!(text.contains("# TYPE etcd_mvcc_put_total counter\netcd_mvcc_put_total 1\n"));
        assert!(text.contains("process_resident_memory_bytes "));
        assert!(text.ends_with('\n') && !text.contains("# EOF"));

        let (content_type, openmetrics) =
            endpoint.render(Some("application/openmetrics-text; version=1.0.0"));
        assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
        assert!(openmetrics.ends_with("# EOF\n"));
        assert!(
            openmetrics.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"} 2\n")
        );
        assert!(openmetrics.contains("etcd_mvcc_put_total 1\n"));
    }
}
