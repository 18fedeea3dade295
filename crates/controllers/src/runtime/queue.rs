//! A work queue of keys, as client-go's workqueue: a key queued several
//! times before a worker takes it is processed once; a key is never
//! processed by two workers at once (one queued while it is being processed
//! waits until it is done); failures are retried after a per-key delay that
//! doubles up to a ceiling, and a success forgets the count.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

/// The first retry's delay and the ceiling (client-go's default
/// controller rate limiter: 5 ms doubling to 1,000 s).
pub const RETRY_BASE: Duration = Duration::from_millis(5);
pub const RETRY_MAX: Duration = Duration::from_secs(1000);

pub struct WorkQueue<T> {
    state: Mutex<State<T>>,
    ready: Notify,
    /// Itself, for the timers of delayed adds.
    this: Weak<WorkQueue<T>>,
}

struct State<T> {
    queue: VecDeque<T>,
    /// Keys waiting to be processed (queued, or re-added while processing).
    dirty: HashSet<T>,
    processing: HashSet<T>,
    failures: HashMap<T, u32>,
    shut_down: bool,
}

impl<T: Clone + Eq + Hash + Send + Sync + 'static> WorkQueue<T> {
    pub fn new() -> Arc<WorkQueue<T>> {
        Arc::new_cyclic(|this| WorkQueue {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
                shut_down: false,
            }),
            ready: Notify::new(),
            this: this.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: T) {
        let mut state = self.lock();
        if state.shut_down || !state.dirty.insert(key.clone()) {
            return;
        }
        if !state.processing.contains(&key) {
            state.queue.push_back(key);
            drop(state);
            self.ready.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let this = self.this.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(queue) = this.upgrade() {
                queue.add(key);
            }
        });
    }

    /// Queues `key` again after its next back-off delay.
    pub fn add_rate_limited(&self, key: T) {
        let failures = {
            let mut state = self.lock();
            let count = state.failures.entry(key.clone()).or_insert(0);
            *count = count.saturating_add(1);
            *count
        };
        self.add_after(key, retry_delay(failures));
    }

    /// Forgets `key`'s failures (after it succeeded).
    pub fn forget(&self, key: &T) {
        self.lock().failures.remove(key);
    }

    /// How many times in a row `key` has failed.
    pub fn failures(&self, key: &T) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// Waits for a key to process; `None` once the queue is shut down.
    /// The caller must call `done` with it afterwards.
    pub async fn get(&self) -> Option<T> {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if state.shut_down {
                    return None;
                }
                if let Some(key) = state.queue.pop_front() {
                    state.dirty.remove(&key);
                    state.processing.insert(key.clone());
                    let more = !state.queue.is_empty();
                    drop(state);
                    if more {
                        // Another worker may be waiting for the rest.
                        self.ready.notify_one();
                    }
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Marks `key` processed; queues it again if it was added meanwhile.
    pub fn done(&self, key: &T) {
        let mut state = self.lock();
        state.processing.remove(key);
        if state.dirty.contains(key) {
            state.queue.push_back(key.clone());
            drop(state);
            self.ready.notify_one();
        }
    }

    /// Stops handing out keys; `get` returns `None` from now on.
    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.ready.notify_waiters();
    }

    /// Keys queued and not yet taken.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The delay before the `failures`-th retry.
pub fn retry_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    RETRY_BASE
        .checked_mul(1u32 << exponent)
        .unwrap_or(RETRY_MAX)
        .min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_added_twice_is_processed_once() {
        let queue = WorkQueue::new();
        queue.add("a");
        queue.add("a");
        queue.add("b");
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.get().await, Some("a"));
        assert_eq!(queue.get().await, Some("b"));
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_processing_waits_until_done() {
        let queue = WorkQueue::new();
        queue.add("a");
        let key = queue.get().await.unwrap();
        queue.add("a");
        assert!(queue.is_empty(), "not handed to a second worker");
        queue.done(&key);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.get().await, Some("a"));
    }

    #[tokio::test]
    async fn shut_down_wakes_a_waiting_worker() {
        let queue: Arc<WorkQueue<&str>> = WorkQueue::new();
        let waiter = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { queue.get().await }
        });
        tokio::task::yield_now().await;
        queue.shut_down();
        assert_eq!(waiter.await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_success_forgets() {
        let queue = WorkQueue::new();
        queue.add_rate_limited("a");
        queue.add_rate_limited("a");
        assert_eq!(queue.failures(&"a"), 2);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(queue.get().await, Some("a"));
        queue.forget(&"a");
        assert_eq!(queue.failures(&"a"), 0);
    }

    #[test]
    fn retry_delays_double_to_the_ceiling() {
        assert_eq!(retry_delay(1), Duration::from_millis(5));
        assert_eq!(retry_delay(2), Duration::from_millis(10));
        assert_eq!(retry_delay(5), Duration::from_millis(80));
        assert_eq!(retry_delay(40), RETRY_MAX);
    }
}
