//! What every controller is built from: informers (`cache`), work queues
//! (`queue`), the workers that drain a queue into a reconcile function,
//! the stop signal, and the events a controller records on the objects it
//! acts on.

pub mod cache;
pub mod queue;

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

pub use cache::{Change, Informer, Key, key_of};
pub use queue::WorkQueue;

/// Resolves (for every clone) when the controllers must stop: the leader
/// lost its Lease, or the server is shutting down.
#[derive(Clone)]
pub struct Stop(tokio::sync::watch::Receiver<bool>);

impl Stop {
    /// A stop signal and the sender that gives it.
    pub fn new() -> (tokio::sync::watch::Sender<bool>, Stop) {
        let (sender, receiver) = tokio::sync::watch::channel(false);
        (sender, Stop(receiver))
    }

    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// The receiver, for code that takes one (`nodeipam::run`).
    pub fn receiver(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.clone()
    }
}

/// What one reconcile asks of its queue.
#[derive(Debug, Default, PartialEq, Eq)]
pub enum Next {
    /// Done until something changes.
    #[default]
    Done,
    /// Look again after this long (a deadline, `minReadySeconds`, …).
    After(Duration),
}

/// Runs `workers` tasks that take keys from `queue` and reconcile them,
/// until `stop`: a success forgets the key's failures (and queues it again
/// later if asked), an error is logged and retried with back-off.
pub async fn run_workers<T, E, F, Fut>(
    name: &'static str,
    queue: Arc<WorkQueue<T>>,
    workers: usize,
    reconcile: F,
    stop: Stop,
) where
    T: Clone + Eq + Hash + Send + Sync + std::fmt::Display + 'static,
    E: std::fmt::Display,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Next, E>> + Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let queue = Arc::clone(&queue);
        let reconcile = reconcile.clone();
        tasks.spawn(async move {
            while let Some(key) = queue.get().await {
                match reconcile(key.clone()).await {
                    Ok(next) => {
                        queue.forget(&key);
                        if let Next::After(delay) = next {
                            queue.add_after(key.clone(), delay);
                        }
                    }
                    Err(error) => {
                        let failures = queue.failures(&key);
                        if failures < 5 {
                            tracing::debug!(controller = name, %key, %error, "reconcile failed; retrying");
                        } else {
                            tracing::warn!(controller = name, %key, %error, failures, "reconcile keeps failing; retrying");
                        }
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        });
    }
    stop.wait().await;
    queue.shut_down();
    while tasks.join_next().await.is_some() {}
}

/// Records events on objects, as one controller (`reportingController`
/// and the source component, e.g. `replicaset-controller`).
///
/// Like upstream's event broadcaster, it filters spam: each object gets a
/// burst of `EVENT_BURST` events, then one more per `EVENT_REFILL` (so
/// scaling to a thousand pods records a few dozen events, not a thousand).
///
/// Each event is published by a recorder of its own: kube's `Recorder`
/// folds events that differ only in their note into one series that keeps
/// the first note, where upstream's broadcaster keeps distinct messages
/// apart ("Scaled up replica set web-x from 3 to 5" must not show as a
/// repeat of "… from 0 to 3").
#[derive(Clone)]
pub struct Events {
    client: kube::Client,
    reporter: Reporter,
    budgets: Arc<parking_lot::Mutex<std::collections::HashMap<String, EventBudget>>>,
}

/// Events an object may get at once, and how often it gets one more
/// (upstream's `EventSourceObjectSpamFilter`: 25, one per five minutes).
pub const EVENT_BURST: f64 = 25.0;
pub const EVENT_REFILL: Duration = Duration::from_secs(300);

struct EventBudget {
    tokens: f64,
    at: std::time::Instant,
}

impl Events {
    pub fn new(client: kube::Client, controller: &str, instance: &str) -> Events {
        Events {
            client,
            reporter: Reporter {
                controller: controller.to_string(),
                instance: Some(instance.to_string()),
            },
            budgets: Arc::default(),
        }
    }

    /// Takes one event from the object's budget; false when it has none.
    fn allowed(&self, reference: &ObjectReference) -> bool {
        let key = reference
            .uid
            .clone()
            .or_else(|| reference.name.clone())
            .unwrap_or_default();
        let mut budgets = self.budgets.lock();
        let now = std::time::Instant::now();
        if budgets.len() > 10_000 {
            budgets.retain(|_, budget| now.duration_since(budget.at) < EVENT_REFILL * 25);
        }
        let budget = budgets.entry(key).or_insert(EventBudget {
            tokens: EVENT_BURST,
            at: now,
        });
        let refilled = now.duration_since(budget.at).as_secs_f64() / EVENT_REFILL.as_secs_f64();
        budget.tokens = (budget.tokens + refilled).min(EVENT_BURST);
        budget.at = now;
        if budget.tokens < 1.0 {
            return false;
        }
        budget.tokens -= 1.0;
        true
    }

    /// Records a Normal (or, with `warning`, a Warning) event on `object`.
    /// Failures are logged: an event is never worth failing a reconcile.
    pub async fn record<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        self.record_on(&object.object_ref(&()), warning, reason, note)
            .await;
    }

    /// Records an event on the object `reference` names.
    pub async fn record_on(
        &self,
        reference: &ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        if self.allowed(reference) {
            self.publish(reference, warning, reason, note).await;
        }
    }

    async fn publish(
        &self,
        reference: &ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(error) = recorder.publish(&event, reference).await {
            tracing::debug!(%reason, %error, "cannot record an event");
        }
    }

    /// Records the event in the background (the caller does not wait).
    pub fn record_later(
        &self,
        reference: &ObjectReference,
        warning: bool,
        reason: impl Into<String>,
        note: String,
    ) {
        if !self.allowed(reference) {
            return;
        }
        let reason = reason.into();
        let events = self.clone();
        let reference = reference.clone();
        tokio::spawn(async move {
            events.publish(&reference, warning, &reason, note).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_object_gets_a_burst_of_events_then_few() {
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let events = Events::new(client, "test-controller", "here");
        let reference = ObjectReference {
            uid: Some("u1".into()),
            ..ObjectReference::default()
        };
        let allowed = (0..100).filter(|_| events.allowed(&reference)).count();
        assert_eq!(allowed, EVENT_BURST as usize);
        let other = ObjectReference {
            uid: Some("u2".into()),
            ..ObjectReference::default()
        };
        assert!(events.allowed(&other));
    }
}
