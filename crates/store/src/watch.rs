//! The watch hub: every watcher on this member, fed with each published batch of
//! changes by the raft loop. A watcher whose queue is full, or who asked for a
//! revision already in the past, is "unsynced" and catches up from MVCC history
//! on a background task (etcd's synced and unsynced watcher groups), so a slow
//! watcher never stalls writes or other watchers.
//!
//! Watchers deliver into a `WatchQueue`, which several watchers may share (the
//! watchers of one client stream share one, as in etcd), each message tagged
//! with its watcher's id. A watcher may have at most `WATCHER_QUEUE_LEN`
//! messages in the queue at once; past that it falls back to history.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use proto::mvccpb::Event;
use proto::mvccpb::event::EventType;
use tokio::sync::{Notify, mpsc};

/// Messages of one watcher a queue holds before the watcher falls back to history.
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

/// Where watchers deliver; cloned, it is the same queue.
#[derive(Clone, Debug)]
pub struct WatchQueue {
    sender: mpsc::UnboundedSender<Delivery>,
    /// The hub delivers a batch to the watchers of one group after another.
    group: u64,
}

/// The receiving end of a `WatchQueue`.
pub type WatchReceiver = mpsc::UnboundedReceiver<Delivery>;

static NEXT_GROUP: AtomicU64 = AtomicU64::new(1);

impl WatchQueue {
    /// A queue in a group of its own.
    pub fn new() -> (WatchQueue, WatchReceiver) {
        WatchQueue::in_group(WatchQueue::new_group())
    }

    /// A queue in `group`. The queues of one client connection share a
    /// group: the hub delivers a batch to a group's watchers one right
    /// after another, so the connection's task, woken by the first message,
    /// mostly finds the others there too and sends them in one write.
    pub fn in_group(group: u64) -> (WatchQueue, WatchReceiver) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (WatchQueue { sender, group }, receiver)
    }

    /// A group no queue is in yet.
    pub fn new_group() -> u64 {
        NEXT_GROUP.fetch_add(1, Ordering::Relaxed)
    }
}

/// One message for one watcher; its place in the watcher's allowance is
/// given back when it is dropped.
#[derive(Debug)]
pub struct Delivery {
    /// The hub id of the watcher, as `WatchHub::watch` returned it.
    pub watcher: u64,
    pub message: WatchMessage,
    _slot: QueueSlot,
}

/// A watcher's message in a queue, counted until dropped.
#[derive(Debug)]
struct QueueSlot(Arc<AtomicUsize>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A watcher's way into its queue.
#[derive(Clone)]
struct Outlet {
    watcher: u64,
    queue: WatchQueue,
    /// The watcher's messages in the queue.
    queued: Arc<AtomicUsize>,
}

impl Outlet {
    fn has_room(&self) -> bool {
        self.queued.load(Ordering::Acquire) < WATCHER_QUEUE_LEN
    }

    /// Queues a message unless the watcher's allowance is used up or the
    /// queue's reader is gone.
    fn try_send(&self, message: WatchMessage) -> bool {
        if !self.has_room() {
            return false;
        }
        // Only the hub adds, under its lock, so the check above still holds.
        self.queued.fetch_add(1, Ordering::AcqRel);
        let delivery = Delivery {
            watcher: self.watcher,
            message,
            _slot: QueueSlot(Arc::clone(&self.queued)),
        };
        self.queue.sender.send(delivery).is_ok()
    }
}

struct Watcher {
    spec: WatchSpec,
    next_revision: i64,
    synced: bool,
    outlet: Outlet,
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

/// The hub's watchers, in the order batches are delivered: by queue group.
#[derive(Default)]
struct Watchers {
    by_group: BTreeMap<(u64, u64), Watcher>,
    /// Watcher id -> its queue's group.
    group_of: HashMap<u64, u64>,
}

impl Watchers {
    fn insert(&mut self, id: u64, watcher: Watcher) {
        let group = watcher.outlet.queue.group;
        self.group_of.insert(id, group);
        self.by_group.insert((group, id), watcher);
    }

    fn get(&self, id: u64) -> Option<&Watcher> {
        let group = self.group_of.get(&id)?;
        self.by_group.get(&(*group, id))
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Watcher> {
        let group = self.group_of.get(&id)?;
        self.by_group.get_mut(&(*group, id))
    }

    fn remove(&mut self, id: u64) -> Option<Watcher> {
        let group = self.group_of.remove(&id)?;
        self.by_group.remove(&(group, id))
    }

    fn is_empty(&self) -> bool {
        self.by_group.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (u64, &Watcher)> {
        self.by_group
            .iter()
            .map(|((_, id), watcher)| (*id, watcher))
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Watcher> {
        self.by_group.values_mut()
    }
}

pub struct WatchHub {
    mvcc: Arc<mvcc::Mvcc>,
    watchers: Mutex<Watchers>,
    next_id: Mutex<u64>,
    wake: Notify,
}

impl WatchHub {
    pub fn new(mvcc: Arc<mvcc::Mvcc>) -> Arc<WatchHub> {
        Arc::new(WatchHub {
            mvcc,
            watchers: Mutex::new(Watchers::default()),
            next_id: Mutex::new(1),
            wake: Notify::new(),
        })
    }

    /// Registers a watcher delivering into `queue`; returns its hub id (the
    /// `watcher` of its deliveries) and the store revision at creation.
    pub fn watch(&self, spec: WatchSpec, queue: &WatchQueue) -> (u64, i64) {
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
                outlet: Outlet {
                    watcher: id,
                    queue: queue.clone(),
                    queued: Arc::new(AtomicUsize::new(0)),
                },
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
        self.watchers.lock().remove(id).is_some()
    }

    /// Queues a progress notification for a watcher that is caught up; behind its
    /// events, so it never claims a revision whose events are still queued.
    /// Returns false if the watcher is behind (etcd sends nothing then).
    pub fn progress(&self, id: u64) -> bool {
        let watchers = self.watchers.lock();
        let Some(watcher) = watchers.get(id) else {
            return false;
        };
        if !watcher.synced {
            return false;
        }
        let revision = watcher.next_revision - 1;
        watcher.outlet.try_send(WatchMessage::Progress { revision })
    }

    /// How many watchers are registered (for the metrics; takes the hub lock).
    pub fn n_watchers(&self) -> usize {
        self.watchers.lock().group_of.len()
    }

    pub fn exists(&self, id: u64) -> bool {
        self.watchers.lock().get(id).is_some()
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
        let batch: Vec<&[Event]> = events
            .chunk_by(|a, b| revision_of(a) == revision_of(b))
            .collect();
        let mut fell_behind = false;
        // Ordered by queue group: the streams of a connection get their
        // messages one right after another.
        for watcher in watchers.values_mut() {
            for events in &batch {
                let revision = revision_of(&events[0]);
                if !watcher.synced || revision < watcher.next_revision {
                    continue;
                }
                let selected = watcher.select(events);
                if !selected.is_empty() {
                    let message = WatchMessage::Events {
                        revision,
                        events: selected,
                    };
                    if !watcher.outlet.try_send(message) {
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
        let lagging: Vec<(u64, WatchSpec, i64, Outlet)> = self
            .watchers
            .lock()
            .iter()
            .filter(|(_, watcher)| !watcher.synced)
            .map(|(id, watcher)| {
                (
                    id,
                    watcher.spec.clone(),
                    watcher.next_revision,
                    watcher.outlet.clone(),
                )
            })
            .collect();
        let mut still_lagging = false;
        for (id, spec, next_revision, outlet) in lagging {
            if !outlet.has_room() {
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
                    let _ = outlet.try_send(WatchMessage::Compacted { compact_revision });
                    self.watchers.lock().remove(id);
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "reading history for a watcher failed; retrying");
                    still_lagging = true;
                    continue;
                }
            };
            let mut watchers = self.watchers.lock();
            let Some(watcher) = watchers.get_mut(id) else {
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
                if !watcher.outlet.try_send(message) {
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
