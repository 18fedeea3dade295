//! The watch hub: every watcher on this member, fed with each published batch of
//! changes by the raft loop. A watcher whose queue is full, or who asked for a
//! revision already in the past, is "unsynced" and catches up from MVCC history
//! on a background task (etcd's synced and unsynced watcher groups), so a slow
//! watcher never stalls writes or other watchers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use proto::mvccpb::Event;
use proto::mvccpb::event::EventType;
use tokio::sync::{Notify, mpsc};

/// Messages a watcher's queue holds before the watcher falls back to history.
pub const WATCHER_QUEUE_LEN: usize = 256;
/// Main revisions read from history per catch-up step.
const CATCH_UP_REVISIONS: i64 = 1000;

/// What a watcher asked for.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub key: Bytes,
    pub range_end: Bytes,
    /// The first revision to deliver; 0 means "after the current revision".
    pub start_revision: i64,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
}

/// What a watcher receives.
#[derive(Debug, Clone)]
pub enum WatchMessage {
    /// Events in revision order; `revision` is the store revision the batch reflects.
    Events { revision: i64, events: Vec<Event> },
    /// The requested history is gone; the watcher has been removed.
    Compacted { compact_revision: i64 },
    /// Nothing more to deliver up to `revision` (etcd's progress notification).
    Progress { revision: i64 },
}

struct Watcher {
    spec: WatchSpec,
    next_revision: i64,
    synced: bool,
    sender: mpsc::Sender<WatchMessage>,
}

impl Watcher {
    fn select(&self, events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .filter(|event| {
                let key = event.kv.as_ref().map_or(&[][..], |kv| kv.key.as_ref());
                let is_put = event.r#type == EventType::Put as i32;
                mvcc::key_in_range(key, &self.spec.key, &self.spec.range_end)
                    && !(is_put && self.spec.no_put)
                    && (is_put || !self.spec.no_delete)
            })
            .map(|event| {
                let mut event = event.clone();
                if !self.spec.prev_kv {
                    event.prev_kv = None;
                }
                event
            })
            .collect()
    }
}

pub struct WatchHub {
    mvcc: Arc<mvcc::Mvcc>,
    watchers: Mutex<HashMap<u64, Watcher>>,
    next_id: Mutex<u64>,
    wake: Notify,
}

impl WatchHub {
    pub fn new(mvcc: Arc<mvcc::Mvcc>) -> Arc<WatchHub> {
        Arc::new(WatchHub {
            mvcc,
            watchers: Mutex::new(HashMap::new()),
            next_id: Mutex::new(1),
            wake: Notify::new(),
        })
    }

    /// Registers a watcher; returns its hub id and the store revision at creation.
    pub fn watch(&self, spec: WatchSpec, sender: mpsc::Sender<WatchMessage>) -> (u64, i64) {
        let id = {
            let mut next_id = self.next_id.lock();
            let id = *next_id;
            *next_id += 1;
            id
        };
        let mut watchers = self.watchers.lock();
        // Under the hub lock, so no batch can be published and notified in between.
        let current = self.mvcc.current_revision();
        let next_revision = if spec.start_revision <= 0 {
            current + 1
        } else {
            spec.start_revision
        };
        let synced = next_revision > current;
        watchers.insert(
            id,
            Watcher {
                spec,
                next_revision,
                synced,
                sender,
            },
        );
        drop(watchers);
        if !synced {
            self.wake.notify_one();
        }
        (id, current)
    }

    /// After a snapshot replaced the state, live delivery has a gap: every watcher
    /// catches up from the new history instead.
    pub(crate) fn resync_all(&self) {
        for watcher in self.watchers.lock().values_mut() {
            watcher.synced = false;
        }
        self.wake.notify_one();
    }

    pub fn cancel(&self, id: u64) -> bool {
        self.watchers.lock().remove(&id).is_some()
    }

    /// Queues a progress notification for a watcher that is caught up; behind its
    /// events, so it never claims a revision whose events are still queued.
    /// Returns false if the watcher is behind (etcd sends nothing then).
    pub fn progress(&self, id: u64) -> bool {
        let watchers = self.watchers.lock();
        let Some(watcher) = watchers.get(&id) else {
            return false;
        };
        if !watcher.synced {
            return false;
        }
        let revision = watcher.next_revision - 1;
        watcher
            .sender
            .try_send(WatchMessage::Progress { revision })
            .is_ok()
    }

    pub fn exists(&self, id: u64) -> bool {
        self.watchers.lock().contains_key(&id)
    }

    /// Delivers a published batch (events in revision order) to synced watchers.
    /// Called by the raft loop after it published the batch; never blocks.
    pub(crate) fn notify(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let mut watchers = self.watchers.lock();
        if watchers.is_empty() {
            return;
        }
        let mut fell_behind = false;
        for group in events.chunk_by(|a, b| revision_of(a) == revision_of(b)) {
            let revision = revision_of(&group[0]);
            for watcher in watchers.values_mut() {
                if !watcher.synced || revision < watcher.next_revision {
                    continue;
                }
                let selected = watcher.select(group);
                if !selected.is_empty() {
                    let message = WatchMessage::Events {
                        revision,
                        events: selected,
                    };
                    if watcher.sender.try_send(message).is_err() {
                        // Full (or gone): catch up from history later, from this revision.
                        watcher.synced = false;
                        fell_behind = true;
                        continue;
                    }
                }
                watcher.next_revision = revision + 1;
            }
        }
        drop(watchers);
        if fell_behind {
            self.wake.notify_one();
        }
    }

    /// Catches unsynced watchers up from history until the hub is dropped.
    pub async fn run_catch_up(self: Arc<Self>) {
        loop {
            let pending = self.catch_up_round();
            if pending {
                // Queues were full: give their readers a moment.
                tokio::time::sleep(Duration::from_millis(5)).await;
            } else {
                let _ =
                    tokio::time::timeout(Duration::from_millis(100), self.wake.notified()).await;
            }
            if Arc::strong_count(&self) == 1 {
                return;
            }
        }
    }

    /// One pass over the unsynced watchers; true if some still lag.
    pub(crate) fn catch_up_round(&self) -> bool {
        let lagging: Vec<(u64, WatchSpec, i64, mpsc::Sender<WatchMessage>)> = self
            .watchers
            .lock()
            .iter()
            .filter(|(_, watcher)| !watcher.synced)
            .map(|(id, watcher)| {
                (
                    *id,
                    watcher.spec.clone(),
                    watcher.next_revision,
                    watcher.sender.clone(),
                )
            })
            .collect();
        let mut still_lagging = false;
        for (id, spec, next_revision, sender) in lagging {
            if sender.capacity() == 0 {
                still_lagging = true;
                continue;
            }
            let history = match self.mvcc.history(
                &spec.key,
                &spec.range_end,
                next_revision,
                CATCH_UP_REVISIONS,
            ) {
                Ok(history) => history,
                Err(mvcc::MvccError::Compacted) => {
                    let compact_revision = self.mvcc.compact_revision();
                    let _ = sender.try_send(WatchMessage::Compacted { compact_revision });
                    self.watchers.lock().remove(&id);
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "reading history for a watcher failed; retrying");
                    still_lagging = true;
                    continue;
                }
            };
            let mut watchers = self.watchers.lock();
            let Some(watcher) = watchers.get_mut(&id) else {
                continue;
            };
            if watcher.next_revision != next_revision {
                continue;
            }
            let selected = watcher.select(&history.events);
            if !selected.is_empty() {
                let message = WatchMessage::Events {
                    revision: self.mvcc.current_revision().max(history.scanned_through),
                    events: selected,
                };
                if watcher.sender.try_send(message).is_err() {
                    still_lagging = true;
                    continue;
                }
            }
            watcher.next_revision = history.scanned_through + 1;
            // Published revisions are notified under this lock, so if nothing newer
            // has been published the watcher sees every later batch live.
            if watcher.next_revision > self.mvcc.current_revision() {
                watcher.synced = true;
            } else {
                still_lagging = true;
            }
        }
        still_lagging
    }
}

fn revision_of(event: &Event) -> i64 {
    event.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}
