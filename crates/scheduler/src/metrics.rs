//! kube-scheduler's metrics: `scheduler_schedule_attempts_total{result,profile}`,
//! `scheduler_scheduling_attempt_duration_seconds{result,profile}` and
//! `scheduler_pending_pods{queue}`. Served by the API port's `/metrics` of
//! the server the scheduler runs in.

use metrics::{
    Counter, EncodeLabelSet, FixedFamily, Gauge, Histogram, Registry, exponential_buckets,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
    profile: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: &'static str,
}

/// An attempt's outcome, as kube-scheduler labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    Scheduled,
    Unschedulable,
    Error,
}

impl AttemptResult {
    fn label(self) -> &'static str {
        match self {
            AttemptResult::Scheduled => "scheduled",
            AttemptResult::Unschedulable => "unschedulable",
            AttemptResult::Error => "error",
        }
    }
}

const RESULTS: [AttemptResult; 3] = [
    AttemptResult::Scheduled,
    AttemptResult::Unschedulable,
    AttemptResult::Error,
];
const PROFILE: &str = "default-scheduler";

/// The scheduler's handles: fixed label sets, created once, so an attempt
/// costs two atomic adds and a histogram observation.
#[derive(Debug)]
pub struct SchedulerMetrics {
    attempts: [Counter; 3],
    durations: [Histogram; 3],
    pub pending_active: Gauge,
    pub pending_unschedulable: Gauge,
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        // kube-scheduler's buckets: 1 ms doubling, 15 of them.
        let histogram = || Histogram::new(exponential_buckets(0.001, 2.0, 15));
        SchedulerMetrics {
            attempts: Default::default(),
            durations: [histogram(), histogram(), histogram()],
            pending_active: Gauge::default(),
            pending_unschedulable: Gauge::default(),
        }
    }
}

impl SchedulerMetrics {
    pub fn attempt(&self, result: AttemptResult, elapsed: std::time::Duration) {
        let idx = RESULTS
            .iter()
            .position(|known| *known == result)
            .unwrap_or(2);
        self.attempts[idx].inc();
        self.durations[idx].observe_duration(elapsed);
    }

    /// A registry serving these handles.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::default();
        let labels = |result: AttemptResult| ResultLabels {
            result: result.label(),
            profile: PROFILE,
        };
        let attempts = FixedFamily::new(
            RESULTS
                .iter()
                .zip(&self.attempts)
                .map(|(result, counter)| (labels(*result), counter.clone()))
                .collect(),
        );
        let durations = FixedFamily::new(
            RESULTS
                .iter()
                .zip(&self.durations)
                .map(|(result, histogram)| (labels(*result), histogram.clone()))
                .collect(),
        );
        let pending = FixedFamily::new(vec![
            (QueueLabels { queue: "active" }, self.pending_active.clone()),
            (
                QueueLabels {
                    queue: "unschedulable",
                },
                self.pending_unschedulable.clone(),
            ),
        ]);
        registry.register(
            "scheduler_schedule_attempts",
            "Number of attempts to schedule pods, by the result",
            attempts,
        );
        registry.register(
            "scheduler_scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            durations,
        );
        registry.register(
            "scheduler_pending_pods",
            "Number of pending pods, by the queue type",
            pending,
        );
        registry
    }
}
