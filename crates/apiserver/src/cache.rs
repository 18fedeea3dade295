//! The watch cache (kube-apiserver's): for each resource one store watch
//! feeds an in-memory copy of its objects and a window of recent changes.
//! Watches are served from it, so ten thousand watchers of one resource
//! cost the store one watcher; lists that accept any recent state
//! (`resourceVersion=0`) are answered from memory.
//!
//! Each change is parsed and encoded once, whatever the number of watchers.
//! A cached object is kept as its JSON bytes and its labels: what lists
//! and label selectors need without parsing it again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::objects;
use crate::storage;

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

/// A cached object.
#[derive(Debug, Clone)]
pub struct Entry {
    pub json: Bytes,
    pub mod_revision: i64,
    pub labels: Arc<BTreeMap<String, String>>,
}

impl Entry {
    pub fn object(&self) -> Option<Value> {
        serde_json::from_slice(&self.json).ok()
    }
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Entry>,
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
    /// The cache's revision when the watcher joined.
    pub revision: i64,
    /// Changes after the revision asked for, up to `revision`.
    pub backlog: Vec<Arc<Change>>,
    /// The current objects, when the watcher asked for the initial state.
    pub initial: Vec<Entry>,
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

    /// The objects under `prefix` and the revision they are as of.
    pub async fn list(&self, prefix: &str) -> (Vec<(String, Entry)>, i64) {
        self.wait_ready().await;
        let state = self.state.read();
        let objects = state
            .objects
            .range(prefix.to_string()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, entry)| (key.clone(), entry.clone()))
            .collect();
        (objects, state.revision)
    }

    /// One cached object, if the cache is ready and holds it.
    pub fn get(&self, key: &str) -> Option<Entry> {
        let state = self.state.read();
        if !state.ready {
            return None;
        }
        state.objects.get(key).cloned()
    }

    /// Joins the cache's watchers: from `after` (the changes after it), or
    /// with the current objects (`after` None).
    pub async fn subscribe(
        &self,
        prefix: &str,
        after: Option<i64>,
    ) -> Result<Subscription, TooOld> {
        self.wait_ready().await;
        // Subscribed before the snapshot: nothing falls between the two.
        let live = self.changes.subscribe();
        let state = self.state.read();
        let mut subscription = Subscription {
            revision: state.revision,
            backlog: Vec::new(),
            initial: Vec::new(),
            live,
        };
        match after {
            None => {
                subscription.initial = state
                    .objects
                    .range(prefix.to_string()..)
                    .take_while(|(key, _)| key.starts_with(prefix))
                    .map(|(_, entry)| entry.clone())
                    .collect();
            }
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

    fn reset(&self, objects: BTreeMap<String, Entry>, revision: i64) {
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
        state.objects = objects;
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
            match change.kind {
                ChangeKind::Deleted => {
                    state.objects.remove(&change.key);
                }
                _ => {
                    state.objects.insert(
                        change.key.clone(),
                        Entry {
                            json: change.object_json.clone(),
                            mod_revision: change.revision,
                            labels: Arc::clone(&change.labels),
                        },
                    );
                }
            }
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
        let end = client::prefix_end(prefix.as_bytes());
        let (items, revision) = match storage::page_raw(kv.as_ref(), prefix.as_bytes(), &end).await
        {
            Ok(listed) => listed,
            Err(error) => {
                tracing::debug!(%prefix, message = %error.message, "watch cache list failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Some(target) = cache.upgrade() else {
            return;
        };
        // Kept as stamped JSON: the objects are not decoded to fill the cache.
        let objects = items
            .into_iter()
            .filter_map(|(key, value, mod_revision)| {
                let (json, labels) = objects::stamp(&value, mod_revision)?;
                let entry = Entry {
                    json,
                    mod_revision,
                    labels: Arc::new(labels),
                };
                Some((key, entry))
            })
            .collect();
        target.reset(objects, revision);
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
