//! Informers, as client-go's shared informers: one watch per kind of
//! object, a local copy every controller reads (no controller lists from
//! the API server in its loop), indexes over it, and handlers told of each
//! change so that controllers queue the keys it concerns.
//!
//! A relist (the watch expired, or the connection was lost for longer than
//! the server keeps history) replaces the copy at once when it is complete,
//! and handlers are told of what differs from the copy before it, deletions
//! included, so nothing is missed.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use futures::StreamExt as _;
use kube::Resource;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use serde::de::DeserializeOwned;

/// An object's key: `namespace/name`, or `name` for a cluster-scoped one.
pub type Key = String;

pub fn key_of<K: Resource>(object: &K) -> Key {
    let meta = object.meta();
    let name = meta.name.as_deref().unwrap_or_default();
    match meta.namespace.as_deref() {
        Some(namespace) if !namespace.is_empty() => format!("{namespace}/{name}"),
        _ => name.to_string(),
    }
}

/// One change to the copy, as handlers see it.
pub enum Change<'a, K> {
    Added(&'a K),
    Updated { old: &'a K, new: &'a K },
    Deleted(&'a K),
}

impl<'a, K> Change<'a, K> {
    /// The object as it is now (or was, for a deletion).
    pub fn object(&self) -> &'a K {
        match self {
            Change::Added(object) | Change::Deleted(object) => object,
            Change::Updated { new, .. } => new,
        }
    }
}

type Handler<K> = Box<dyn Fn(&Change<'_, K>) + Send + Sync>;
type Pair<K> = (Option<Arc<K>>, Option<Arc<K>>);
type IndexFn<K> = Box<dyn Fn(&K) -> Vec<String> + Send + Sync>;

struct Index<K> {
    name: &'static str,
    values_of: IndexFn<K>,
    keys: HashMap<String, HashSet<Key>>,
}

struct Copy<K> {
    objects: HashMap<Key, Arc<K>>,
    indexes: Vec<Index<K>>,
}

impl<K> Copy<K> {
    fn unindex(&mut self, key: &Key, object: &K) {
        for index in &mut self.indexes {
            for value in (index.values_of)(object) {
                if let Some(keys) = index.keys.get_mut(&value) {
                    keys.remove(key);
                    if keys.is_empty() {
                        index.keys.remove(&value);
                    }
                }
            }
        }
    }

    fn index(&mut self, key: &Key, object: &K) {
        for index in &mut self.indexes {
            for value in (index.values_of)(object) {
                index.keys.entry(value).or_default().insert(key.clone());
            }
        }
    }

    /// Stores `object`; returns what it replaced.
    fn put(&mut self, key: Key, object: Arc<K>) -> Option<Arc<K>> {
        let old = self.objects.insert(key.clone(), Arc::clone(&object));
        if let Some(old) = &old {
            self.unindex(&key, old);
        }
        self.index(&key, &object);
        old
    }

    fn remove(&mut self, key: &Key) -> Option<Arc<K>> {
        let old = self.objects.remove(key)?;
        self.unindex(key, &old);
        Some(old)
    }
}

/// A watched copy of every object of one kind (within its `Api`'s scope).
pub struct Informer<K> {
    copy: RwLock<Copy<K>>,
    handlers: RwLock<Vec<Handler<K>>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    pub fn new() -> Arc<Informer<K>> {
        Arc::new(Informer {
            copy: RwLock::new(Copy {
                objects: HashMap::new(),
                indexes: Vec::new(),
            }),
            handlers: RwLock::new(Vec::new()),
            synced: tokio::sync::watch::channel(false).0,
        })
    }

    /// Adds an index: `values_of` names the values an object is found
    /// under (by `by_index`). Add indexes before `run`.
    pub fn add_index(
        &self,
        name: &'static str,
        values_of: impl Fn(&K) -> Vec<String> + Send + Sync + 'static,
    ) {
        let mut copy = self.copy.write().unwrap_or_else(|p| p.into_inner());
        let mut index = Index {
            name,
            values_of: Box::new(values_of),
            keys: HashMap::new(),
        };
        for (key, object) in &copy.objects {
            for value in (index.values_of)(object) {
                index.keys.entry(value).or_default().insert(key.clone());
            }
        }
        copy.indexes.push(index);
    }

    /// Adds a handler, told of every change from now on (and not of what
    /// the copy already holds: a controller's first pass is its own).
    /// Handlers run on the informer's task and must be quick: queue keys.
    pub fn on_change(&self, handler: impl Fn(&Change<'_, K>) + Send + Sync + 'static) {
        self.handlers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(handler));
    }

    /// Queues the key of every object that changes: what a controller of
    /// this kind (its primary informer) needs from it.
    pub fn queue_keys(&self, queue: &Arc<super::WorkQueue<Key>>) {
        let queue = Arc::clone(queue);
        self.on_change(move |change| queue.add(key_of(change.object())));
    }

    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        let copy = self.copy.read().unwrap_or_else(|p| p.into_inner());
        copy.objects.get(key).cloned()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        let copy = self.copy.read().unwrap_or_else(|p| p.into_inner());
        copy.objects.values().cloned().collect()
    }

    pub fn keys(&self) -> Vec<Key> {
        let copy = self.copy.read().unwrap_or_else(|p| p.into_inner());
        copy.objects.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.copy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .objects
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The objects an index files under `value`.
    ///
    /// # Panics
    /// If no index is named `index` (a programming error).
    pub fn by_index(&self, index: &str, value: &str) -> Vec<Arc<K>> {
        let copy = self.copy.read().unwrap_or_else(|p| p.into_inner());
        let Some(found) = copy.indexes.iter().find(|i| i.name == index) else {
            panic!("no index named {index}");
        };
        found
            .keys
            .get(value)
            .map(|keys| {
                keys.iter()
                    .filter_map(|key| copy.objects.get(key).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// True once the first complete listing is in the copy.
    pub fn has_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first complete listing is in the copy.
    pub async fn synced(&self) {
        let mut receiver = self.synced.subscribe();
        let _ = receiver.wait_for(|synced| *synced).await;
    }

    fn notify(&self, change: Change<'_, K>) {
        let handlers = self.handlers.read().unwrap_or_else(|p| p.into_inner());
        for handler in handlers.iter() {
            handler(&change);
        }
    }

    fn apply(&self, object: K) {
        let key = key_of(&object);
        let object = Arc::new(slim(object));
        let old = {
            let mut copy = self.copy.write().unwrap_or_else(|p| p.into_inner());
            copy.put(key, Arc::clone(&object))
        };
        match old {
            Some(old) if same_version(old.as_ref(), object.as_ref()) => {}
            Some(old) => self.notify(Change::Updated {
                old: &old,
                new: &object,
            }),
            None => self.notify(Change::Added(&object)),
        }
    }

    fn delete(&self, object: K) {
        let key = key_of(&object);
        let old = {
            let mut copy = self.copy.write().unwrap_or_else(|p| p.into_inner());
            copy.remove(&key)
        };
        // The last state the watch sent, or the one held if that is newer.
        let gone = old.unwrap_or_else(|| Arc::new(object));
        self.notify(Change::Deleted(&gone));
    }

    /// Replaces the copy with a complete listing, telling handlers what
    /// differs.
    fn replace(&self, listed: Vec<K>) {
        let listed: HashMap<Key, Arc<K>> = listed
            .into_iter()
            .map(|object| (key_of(&object), Arc::new(slim(object))))
            .collect();
        // (before, after) for each object that differs.
        let mut changes: Vec<Pair<K>> = Vec::new();
        {
            let mut copy = self.copy.write().unwrap_or_else(|p| p.into_inner());
            let gone: Vec<Key> = copy
                .objects
                .keys()
                .filter(|key| !listed.contains_key(*key))
                .cloned()
                .collect();
            for key in gone {
                let old = copy.remove(&key);
                changes.push((old, None));
            }
            for (key, object) in listed {
                let old = copy.put(key, Arc::clone(&object));
                if old
                    .as_ref()
                    .is_none_or(|old| !same_version(old.as_ref(), object.as_ref()))
                {
                    changes.push((old, Some(object)));
                }
            }
        }
        for change in changes {
            match change {
                (Some(old), Some(new)) => self.notify(Change::Updated {
                    old: &old,
                    new: &new,
                }),
                (None, Some(new)) => self.notify(Change::Added(&new)),
                (Some(old), None) => self.notify(Change::Deleted(&old)),
                (None, None) => {}
            }
        }
        self.synced.send_replace(true);
    }

    /// Keeps the copy current until `stop` resolves: lists, then watches,
    /// relisting when the watch cannot resume, with a back-off on errors.
    pub async fn run(self: Arc<Self>, api: Api<K>, config: watcher::Config, stop: super::Stop) {
        let mut stream = watcher(api, config).default_backoff().boxed();
        let mut listing: Option<Vec<K>> = None;
        let mut stop = std::pin::pin!(stop.wait());
        loop {
            let event = tokio::select! {
                _ = &mut stop => return,
                event = stream.next() => event,
            };
            match event {
                None => return,
                Some(Err(error)) => {
                    tracing::debug!(kind = %K::kind(&()), %error, "watch failed; retrying");
                }
                Some(Ok(watcher::Event::Init)) => listing = Some(Vec::new()),
                Some(Ok(watcher::Event::InitApply(object))) => {
                    listing.get_or_insert_with(Vec::new).push(object)
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    self.replace(listing.take().unwrap_or_default())
                }
                Some(Ok(watcher::Event::Apply(object))) => self.apply(object),
                Some(Ok(watcher::Event::Delete(object))) => self.delete(object),
            }
        }
    }
}

/// The object as the copy keeps it: without `managedFields`, which no
/// controller reads and which are often the bulk of a small object (as
/// client-go's informers are told to drop them).
fn slim<K: Resource>(mut object: K) -> K {
    object.meta_mut().managed_fields = None;
    object
}

fn same_version<K: Resource>(old: &K, new: &K) -> bool {
    let old = old.meta().resource_version.as_deref();
    old.is_some() && old == new.meta().resource_version.as_deref()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod(name: &str, version: &str, node: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("default".to_string()),
                resource_version: Some(version.to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                node_name: Some(node.to_string()),
                ..Default::default()
            }),
            ..Pod::default()
        }
    }

    fn node_of(pod: &Pod) -> Vec<String> {
        vec![
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
        ]
    }

    /// An informer with a node index and a handler that logs each change.
    fn informer() -> (Arc<Informer<Pod>>, Arc<Mutex<Vec<String>>>) {
        let informer = Informer::<Pod>::new();
        informer.add_index("node", node_of);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        informer.on_change(move |change| {
            let line = match change {
                Change::Added(pod) => format!("added {}", key_of(*pod)),
                Change::Updated { old, new } => format!(
                    "updated {} {}->{}",
                    key_of(*new),
                    old.metadata.resource_version.as_deref().unwrap_or(""),
                    new.metadata.resource_version.as_deref().unwrap_or("")
                ),
                Change::Deleted(pod) => format!("deleted {}", key_of(*pod)),
            };
            log.lock().unwrap().push(line);
        });
        (informer, seen)
    }

    fn names(pods: Vec<Arc<Pod>>) -> Vec<String> {
        let mut names: Vec<String> = pods.iter().map(|pod| key_of(pod.as_ref())).collect();
        names.sort();
        names
    }

    #[test]
    fn changes_reach_handlers_and_indexes_follow_them() {
        let (informer, seen) = informer();
        informer.apply(pod("a", "1", "n1"));
        informer.apply(pod("b", "2", "n1"));
        informer.apply(pod("a", "3", "n2"));
        // The same version again (a relist's echo) is not a change.
        informer.apply(pod("a", "3", "n2"));
        informer.delete(pod("b", "2", "n1"));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "added default/a",
                "added default/b",
                "updated default/a 1->3",
                "deleted default/b"
            ]
        );
        assert!(informer.by_index("node", "n1").is_empty());
        assert_eq!(names(informer.by_index("node", "n2")), ["default/a"]);
        assert_eq!(
            informer
                .get("default/a")
                .unwrap()
                .metadata
                .resource_version
                .as_deref(),
            Some("3")
        );
    }

    #[test]
    fn a_relist_tells_handlers_what_differs_deletions_included() {
        let (informer, seen) = informer();
        assert!(!informer.has_synced());
        informer.replace(vec![pod("a", "1", "n1"), pod("b", "1", "n1")]);
        assert!(informer.has_synced());
        seen.lock().unwrap().clear();
        // While the watch was down: b was deleted, c created, a unchanged.
        informer.replace(vec![pod("a", "1", "n1"), pod("c", "5", "n3")]);
        let mut changes = seen.lock().unwrap().clone();
        changes.sort();
        assert_eq!(changes, ["added default/c", "deleted default/b"]);
        assert_eq!(names(informer.list()), ["default/a", "default/c"]);
        assert_eq!(names(informer.by_index("node", "n1")), ["default/a"]);
        assert_eq!(names(informer.by_index("node", "n3")), ["default/c"]);
    }

    #[test]
    fn an_index_added_late_covers_what_is_held() {
        let informer = Informer::<Pod>::new();
        informer.apply(pod("a", "1", "n1"));
        informer.add_index("node", node_of);
        assert_eq!(names(informer.by_index("node", "n1")), ["default/a"]);
    }
}
