//! The events the scheduler records on pods (core/v1 Events, source
//! component `default-scheduler`, as `kubectl describe pod` shows them) and
//! the PodScheduled=False condition of a pod that fits nowhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;

/// The source component on every event (upstream's default profile name).
pub const COMPONENT: &str = "default-scheduler";

/// Events written at once.
const CONCURRENT_EVENT_WRITES: usize = 8;

/// One event to record on a pod.
pub struct PodEvent {
    pub namespace: String,
    pub pod_name: String,
    pub pod_uid: Option<String>,
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

impl PodEvent {
    pub fn about(pod: &Pod, warning: bool, reason: &'static str, message: String) -> PodEvent {
        PodEvent {
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            pod_name: pod.metadata.name.clone().unwrap_or_default(),
            pod_uid: pod.metadata.uid.clone(),
            warning,
            reason,
            message,
        }
    }
}

/// Counts of what the recorder did, for logs and tests.
#[derive(Default)]
pub struct EventCounts {
    pub written: AtomicU64,
    pub failed: AtomicU64,
    /// Scheduled events skipped because the writer was behind.
    pub skipped: AtomicU64,
}

/// Queues events for a writer task. `Scheduled` events are offered: at most
/// `offered_per_second` of them (a token bucket with a second's burst) and
/// only while the writer is not behind; the rest are skipped and counted,
/// since at benchmark rates one event per binding would double the API's
/// writes. `FailedScheduling` events wait for room.
#[derive(Clone)]
pub struct Recorder {
    sender: mpsc::Sender<PodEvent>,
    pub counts: Arc<EventCounts>,
    bucket: Arc<std::sync::Mutex<TokenBucket>>,
}

struct TokenBucket {
    per_second: f64,
    tokens: f64,
    refilled: std::time::Instant,
}

impl TokenBucket {
    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second.max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Recorder {
    /// Starts the writer task; it ends when every `Recorder` is dropped.
    pub fn start(
        client: kube::Client,
        identity: String,
        capacity: usize,
        offered_per_second: usize,
    ) -> Recorder {
        let (sender, receiver) = mpsc::channel::<PodEvent>(capacity.max(1));
        let counts = Arc::new(EventCounts::default());
        let writer_counts = Arc::clone(&counts);
        let sequence = Arc::new(AtomicU64::new(0));
        tokio::spawn(async move {
            tokio_stream_of(receiver)
                .for_each_concurrent(CONCURRENT_EVENT_WRITES, |event| {
                    let client = client.clone();
                    let identity = identity.clone();
                    let counts = Arc::clone(&writer_counts);
                    let sequence = sequence.fetch_add(1, Ordering::Relaxed);
                    async move {
                        match write_event(client, &identity, sequence, event).await {
                            Ok(()) => counts.written.fetch_add(1, Ordering::Relaxed),
                            Err(error) => {
                                tracing::debug!(%error, "cannot record an event");
                                counts.failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
                .await;
        });
        let bucket = TokenBucket {
            per_second: offered_per_second as f64,
            tokens: offered_per_second as f64,
            refilled: std::time::Instant::now(),
        };
        Recorder {
            sender,
            counts,
            bucket: Arc::new(std::sync::Mutex::new(bucket)),
        }
    }

    /// Queues an event, or skips it when over the rate or the writer is behind.
    pub fn offer(&self, event: PodEvent) {
        let allowed = self.bucket.lock().is_ok_and(|mut bucket| bucket.take());
        if !allowed || self.sender.try_send(event).is_err() {
            self.counts.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues an event, waiting for room.
    pub async fn record(&self, event: PodEvent) {
        let _ = self.sender.send(event).await;
    }
}

fn tokio_stream_of<T: Send + 'static>(
    mut receiver: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |context| receiver.poll_recv(context))
}

async fn write_event(
    client: kube::Client,
    identity: &str,
    sequence: u64,
    event: PodEvent,
) -> Result<(), kube::Error> {
    let now = Timestamp::now();
    // Unique per scheduler and event, in the form client-go gives names.
    let name = format!(
        "{}.{:x}{:04x}",
        event.pod_name,
        now.as_nanosecond() as u64,
        sequence & 0xffff
    );
    let body: Event = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": event.namespace},
        "involvedObject": {
            "kind": "Pod",
            "apiVersion": "v1",
            "namespace": event.namespace,
            "name": event.pod_name,
            "uid": event.pod_uid,
        },
        "reason": event.reason,
        "message": event.message,
        "type": if event.warning { "Warning" } else { "Normal" },
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": identity,
        "action": if event.warning { "Scheduling" } else { "Binding" },
        "firstTimestamp": now.to_string(),
        "lastTimestamp": now.to_string(),
        "count": 1,
    }))
    .map_err(kube::Error::SerdeError)?;
    Api::<Event>::namespaced(client, &event.namespace)
        .create(&PostParams::default(), &body)
        .await?;
    Ok(())
}

/// Sets the pod's PodScheduled condition to False, reason Unschedulable,
/// with the scheduler's message (what `kubectl describe pod` and
/// controllers read).
pub async fn mark_unschedulable(
    client: kube::Client,
    pod: &Pod,
    message: &str,
) -> Result<(), kube::Error> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": Timestamp::now().to_string(),
    }]}});
    Api::<Pod>::namespaced(client, namespace)
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    Ok(())
}
