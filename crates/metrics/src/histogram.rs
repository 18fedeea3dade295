//! A histogram whose observation is a few atomic adds: no lock, no
//! allocation, so it can sit on the store's and the API's hot paths.
//! (prometheus-client's own `Histogram` takes a lock on every observation.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// A Prometheus histogram with fixed bucket bounds. Clones share the counts.
#[derive(Clone, Debug)]
pub struct Histogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Upper bounds, ascending, without `+Inf`.
    upper_bounds: Box<[f64]>,
    /// Per bucket (not cumulative) counts; the last one is `+Inf`'s.
    counts: Box<[AtomicU64]>,
    /// The sum of observations, as `f64` bits.
    sum_bits: AtomicU64,
}

impl Histogram {
    /// A histogram with these upper bounds (sorted here; `+Inf` is implied).
    pub fn new(upper_bounds: impl IntoIterator<Item = f64>) -> Self {
        let mut upper_bounds: Vec<f64> = upper_bounds
            .into_iter()
            .filter(|bound| bound.is_finite())
            .collect();
        upper_bounds.sort_by(f64::total_cmp);
        upper_bounds.dedup();
        let counts = (0..=upper_bounds.len())
            .map(|_| AtomicU64::new(0))
            .collect();
        Histogram {
            inner: Arc::new(Inner {
                upper_bounds: upper_bounds.into_boxed_slice(),
                counts,
                sum_bits: AtomicU64::new(0f64.to_bits()),
            }),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        let inner = &*self.inner;
        // The first bucket whose upper bound is >= value (Prometheus' `le`).
        let bucket_idx = inner.upper_bounds.partition_point(|bound| *bound < value);
        inner.counts[bucket_idx].fetch_add(1, Ordering::Relaxed);
        let mut current = inner.sum_bits.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + value).to_bits();
            match inner.sum_bits.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, duration: Duration) {
        self.observe(duration.as_secs_f64());
    }

    /// The count and sum of observations so far.
    pub fn count_and_sum(&self) -> (u64, f64) {
        let count = self
            .inner
            .counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum();
        (
            count,
            f64::from_bits(self.inner.sum_bits.load(Ordering::Relaxed)),
        )
    }

    /// Per-bucket (not cumulative) counts with their upper bounds, `+Inf` last.
    fn buckets(&self) -> Vec<(f64, u64)> {
        let inner = &*self.inner;
        inner
            .upper_bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(
                inner
                    .counts
                    .iter()
                    .map(|count| count.load(Ordering::Relaxed)),
            )
            .collect()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let buckets = self.buckets();
        // The count is the buckets' total, read once, so `+Inf` always equals
        // `_count` even while observations race the scrape.
        let count = buckets.iter().map(|(_, count)| count).sum();
        let sum = f64::from_bits(self.inner.sum_bits.load(Ordering::Relaxed));
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// `count` bounds starting at `start`, each `factor` times the one before
/// (Go client's `ExponentialBuckets`).
pub fn exponential_buckets(start: f64, factor: f64, count: usize) -> Vec<f64> {
    std::iter::successors(Some(start), |bound| Some(bound * factor))
        .take(count)
        .collect()
}

/// `count` bounds starting at `start`, `width` apart (`LinearBuckets`).
pub fn linear_buckets(start: f64, width: f64, count: usize) -> Vec<f64> {
    (0..count).map(|idx| start + width * idx as f64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_at_or_above_them() {
        let histogram = Histogram::new([0.1, 1.0, 10.0]);
        for value in [0.05, 0.1, 0.5, 1.0, 20.0] {
            histogram.observe(value);
        }
        assert_eq!(
            histogram.buckets(),
            vec![(0.1, 2), (1.0, 2), (10.0, 0), (f64::INFINITY, 1)]
        );
        let (count, sum) = histogram.count_and_sum();
        assert_eq!(count, 5);
        assert!((sum - 21.65).abs() < 1e-9);
    }

    #[test]
    fn exponential_buckets_double() {
        assert_eq!(
            exponential_buckets(0.001, 2.0, 4),
            vec![0.001, 0.002, 0.004, 0.008]
        );
        assert_eq!(linear_buckets(1.0, 2.0, 3), vec![1.0, 3.0, 5.0]);
    }
}
