//! The watch cache (kube-apiserver's, for what watches need): for each
//! resource one store watch feeds a window of recent changes and every
//! watcher of the resource. Ten thousand watchers of one resource cost the
//! store one watcher, and each change is encoded once, whatever the number
//! of watchers.
//!
//! It holds changes, not objects: a watcher that starts with the current
//! state reads it from the store at the cache's revision (the store keeps
//! history, so that read and the changes after it meet exactly), and lists
//! read the store. The objects' bodies then stay in one place, the store,
//! and the API server costs nothing per stored object (BENCHMARKS.md).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::objects;

/// Changes kept for watchers that start from a past resourceVersion.
const HISTORY: usize = 10_000;
/// Changes queued per watcher before a slow one is dropped (it re-watches).
const FAN_OUT_BUFFER: usize = 8_192;

/// How an object changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
    /// The cache lost its place in the store's history and started over:
    /// its watchers end (clients re-watch, or relist when told `Expired`).
    Resync,
}

/// One change of one object, encoded once for every watcher: its JSON and
/// its labels (what a plain watch with a label selector needs); the object
/// is decoded only when a watcher needs more (field selectors, Tables).
#[derive(Debug)]
pub struct Change {
    pub revision: i64,
    pub key: String,
    pub kind: ChangeKind,
    /// The object now (for a delete: as it was, at the delete's revision),
    /// as JSON with its resourceVersion.
    pub object_json: Bytes,
    pub labels: Arc<BTreeMap<String, String>>,
    /// The object before a modification, for selectors.
    pub previous_json: Option<Bytes>,
    pub previous_labels: Option<Arc<BTreeMap<String, String>>>,
    object: std::sync::OnceLock<Option<Arc<Value>>>,
    previous: std::sync::OnceLock<Option<Arc<Value>>>,
}

impl Change {
    pub fn new(
        revision: i64,
        key: String,
        kind: ChangeKind,
        (object_json, labels): (Bytes, BTreeMap<String, String>),
        previous: Option<(Bytes, BTreeMap<String, String>)>,
    ) -> Change {
        let (previous_json, previous_labels) = match previous {
            Some((json, labels)) => (Some(json), Some(Arc::new(labels))),
            None => (None, None),
        };
        Change {
            revision,
            key,
            kind,
            object_json,
            labels: Arc::new(labels),
            previous_json,
            previous_labels,
            object: std::sync::OnceLock::new(),
            previous: std::sync::OnceLock::new(),
        }
    }

    /// A change made from a decoded object (converted resources).
    pub fn from_value(
        revision: i64,
        key: String,
        kind: ChangeKind,
        object: Value,
        previous: Option<Value>,
    ) -> Change {
        let encode = |value: &Value| {
            (
                Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
                objects::labels_of(value),
            )
        };
        let change = Change::new(
            revision,
            key,
            kind,
            encode(&object),
            previous.as_ref().map(encode),
        );
        let _ = change.object.set(Some(Arc::new(object)));
        let _ = change.previous.set(previous.map(Arc::new));
        change
    }

    /// The object, decoded on first use.
    pub fn object(&self) -> Option<Arc<Value>> {
        self.object
            .get_or_init(|| serde_json::from_slice(&self.object_json).ok().map(Arc::new))
            .clone()
    }

    /// The object before a modification, decoded on first use.
    pub fn previous(&self) -> Option<Arc<Value>> {
        self.previous
            .get_or_init(|| {
                let json = self.previous_json.as_ref()?;
                serde_json::from_slice(json).ok().map(Arc::new)
            })
            .clone()
    }
}

#[derive(Default)]
struct State {
    /// Every change up to this revision is applied.
    revision: i64,
    history: VecDeque<Arc<Change>>,
    /// Changes after this revision are all in `history`.
    complete_after: i64,
    ready: bool,
}

/// One resource's cache.
pub struct Cache {
    state: RwLock<State>,
    changes: broadcast::Sender<Arc<Change>>,
    ready: tokio::sync::Notify,
}

/// What a watcher gets from the cache to start with.
pub struct Subscription {
    /// The cache's revision when the watcher joined: a watcher that wants
    /// the current state reads it from the store at this revision.
    pub revision: i64,
    /// Changes after the revision asked for, up to `revision`.
    pub backlog: Vec<Arc<Change>>,
    pub live: broadcast::Receiver<Arc<Change>>,
}

/// Why a watch cannot start from the revision asked for.
pub struct TooOld {
    pub oldest: i64,
}

impl Cache {
    fn new() -> Arc<Cache> {
        let (changes, _) = broadcast::channel(FAN_OUT_BUFFER);
        Arc::new(Cache {
            state: RwLock::new(State::default()),
            changes,
            ready: tokio::sync::Notify::new(),
        })
    }

    async fn wait_ready(&self) {
        loop {
            let notified = self.ready.notified();
            if self.state.read().ready {
                return;
            }
            notified.await;
        }
    }

    /// Joins the cache's watchers: from `after` (the changes after it), or
    /// from now (`after` None).
    pub async fn subscribe(&self, after: Option<i64>) -> Result<Subscription, TooOld> {
        self.wait_ready().await;
        // Subscribed before the snapshot: nothing falls between the two.
        let live = self.changes.subscribe();
        let state = self.state.read();
        let mut subscription = Subscription {
            revision: state.revision,
            backlog: Vec::new(),
            live,
        };
        match after {
            None => {}
            Some(after) if after < state.complete_after => {
                return Err(TooOld {
                    oldest: state.complete_after,
                });
            }
            Some(after) => {
                subscription.backlog = state
                    .history
                    .iter()
                    .filter(|change| change.revision > after)
                    .cloned()
                    .collect();
            }
        }
        Ok(subscription)
    }

    fn reset(&self, revision: i64) {
        let mut state = self.state.write();
        if state.ready {
            let _ = self.changes.send(Arc::new(Change::new(
                revision,
                String::new(),
                ChangeKind::Resync,
                (Bytes::new(), BTreeMap::new()),
                None,
            )));
        }
        state.revision = revision;
        state.history.clear();
        state.complete_after = revision;
        state.ready = true;
        drop(state);
        self.ready.notify_waiters();
    }

    fn apply(&self, revision: i64, events: Vec<proto::mvccpb::Event>) {
        let mut state = self.state.write();
        for change in changes_from(events) {
            let change = Arc::new(change);
            if state.history.len() == HISTORY
                && let Some(dropped) = state.history.pop_front()
            {
                state.complete_after = dropped.revision;
            }
            state.history.push_back(Arc::clone(&change));
            // No receivers is not an error: nobody watches right now.
            let _ = self.changes.send(change);
        }
        state.revision = state.revision.max(revision);
    }
}

/// Store events as changes, each object encoded once.
pub fn changes_from(events: Vec<proto::mvccpb::Event>) -> Vec<Change> {
    use proto::mvccpb::event::EventType;
    let mut changes = Vec::with_capacity(events.len());
    for event in events {
        let Some(kv) = event.kv else { continue };
        let key = String::from_utf8_lossy(&kv.key).into_owned();
        if event.r#type == EventType::Delete as i32 {
            // A deleted object, as it was, at the delete's revision.
            let Some(deleted) = event
                .prev_kv
                .as_ref()
                .and_then(|prev| objects::stamp(&prev.value, kv.mod_revision))
            else {
                continue;
            };
            changes.push(Change::new(
                kv.mod_revision,
                key,
                ChangeKind::Deleted,
                deleted,
                None,
            ));
        } else {
            let Some(now) = objects::stamp(&kv.value, kv.mod_revision) else {
                continue;
            };
            let previous = event
                .prev_kv
                .as_ref()
                .and_then(|prev| objects::stamp(&prev.value, prev.mod_revision));
            let kind = if kv.create_revision == kv.mod_revision {
                ChangeKind::Added
            } else {
                ChangeKind::Modified
            };
            changes.push(Change::new(kv.mod_revision, key, kind, now, previous));
        }
    }
    changes
}

/// Every resource's cache, started on first use.
pub struct Caches {
    kv: client::SharedKv,
    caches: Mutex<HashMap<String, Arc<Cache>>>,
}

impl Caches {
    pub fn new(kv: client::SharedKv) -> Caches {
        Caches {
            kv,
            caches: Mutex::new(HashMap::new()),
        }
    }

    /// Each cache's prefix and how many watchers it feeds now.
    pub fn watcher_counts(&self) -> Vec<(String, usize)> {
        self.caches
            .lock()
            .iter()
            .map(|(prefix, cache)| (prefix.clone(), cache.changes.receiver_count()))
            .collect()
    }

    /// The cache of the objects under `prefix` (a resource's key prefix).
    pub fn get(&self, prefix: &str) -> Arc<Cache> {
        let mut caches = self.caches.lock();
        if let Some(cache) = caches.get(prefix) {
            return Arc::clone(cache);
        }
        let cache = Cache::new();
        caches.insert(prefix.to_string(), Arc::clone(&cache));
        tokio::spawn(feed(
            Arc::clone(&self.kv),
            prefix.to_string(),
            Arc::downgrade(&cache),
        ));
        cache
    }
}

/// Keeps one cache in step with the store: a list, then a watch from the
/// list's revision; a new list whenever the watch ends.
async fn feed(kv: client::SharedKv, prefix: String, cache: std::sync::Weak<Cache>) {
    loop {
        // Where the store is now: the watch starts right after it.
        let revision = match kv
            .range(proto::etcdserverpb::RangeRequest {
                key: prefix.as_bytes().to_vec().into(),
                range_end: client::prefix_end(prefix.as_bytes()).into(),
                count_only: true,
                ..Default::default()
            })
            .await
        {
            Ok(response) => response.header.map_or(0, |header| header.revision),
            Err(error) => {
                tracing::debug!(%prefix, %error, "watch cache could not read the revision; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Some(target) = cache.upgrade() else {
            return;
        };
        target.reset(revision);
        drop(target);
        let request = client::WatchRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: client::prefix_end(prefix.as_bytes()),
            start_revision: revision + 1,
            prev_kv: true,
        };
        let mut updates = match kv.watch(request).await {
            Ok(updates) => updates,
            Err(error) => {
                tracing::debug!(%prefix, %error, "watch cache watch failed; relisting");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        while let Some(update) = updates.next().await {
            let Some(target) = cache.upgrade() else {
                return;
            };
            match update {
                Ok(client::WatchUpdate::Events { revision, events }) => {
                    target.apply(revision, events)
                }
                Ok(client::WatchUpdate::Progress { revision }) => {
                    let mut state = target.state.write();
                    state.revision = state.revision.max(revision);
                }
                Err(error) => {
                    tracing::debug!(%prefix, %error, "watch cache watch ended; relisting");
                    break;
                }
            }
        }
    }
}
