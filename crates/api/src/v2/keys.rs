//! The v2 keys operations over the v3 key space (the mapping is described in
//! [`super`]). Every write reads what it depends on, decides as etcd 2's store
//! would, then commits in one v3 txn guarded by compares on everything it
//! read, so a concurrent change makes the txn fail and the operation start
//! again from a fresh read: each v2 write is atomic and is one revision.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use proto::etcdserverpb::request_op::Request as Operation;
use proto::etcdserverpb::response_op::Response as OperationResponse;
use proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest, TxnResponse,
};
use proto::mvccpb::KeyValue;
use proto::mvccpb::event::EventType;
use store::watch::{WatchMessage, WatchSpec};
use store::{Member, StoreError};

use super::node::{Answer, Code, Node, V2Error};

/// A write that keeps losing its compares (a hot key) gives up after this
/// many fresh starts, with etcd's internal error.
const MAX_ATTEMPTS: usize = 32;

/// The v3 key of the file node at `path`.
fn file_key(path: &str) -> Bytes {
    Bytes::copy_from_slice(path.as_bytes())
}

/// The v3 key marking the directory at `path`: the path and a slash, which
/// no file can have (v2 paths are cleaned of trailing slashes).
fn dir_key(path: &str) -> Bytes {
    if path == "/" {
        return Bytes::from_static(b"/");
    }
    Bytes::from(format!("{path}/"))
}

/// The end of the key span of everything under `prefix`.
fn prefix_end(prefix: &[u8]) -> Bytes {
    crate::lock::prefix_range_end(prefix)
}

/// `/a/b/c` -> `/a`, `/a/b`.
fn ancestors(path: &str) -> Vec<String> {
    path.match_indices('/')
        .skip(1)
        .map(|(position, _)| path[..position].to_string())
        .collect()
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('_')
}

fn range_op(key: Bytes, range_end: Bytes) -> RequestOp {
    RequestOp {
        request: Some(Operation::RequestRange(RangeRequest {
            key,
            range_end,
            ..Default::default()
        })),
    }
}

fn mod_revision_is(key: Bytes, range_end: Bytes, revision: i64, result: CompareResult) -> Compare {
    Compare {
        result: result as i32,
        target: CompareTarget::Mod as i32,
        key,
        range_end,
        target_union: Some(TargetUnion::ModRevision(revision)),
    }
}

fn unchanged(key: Bytes, kv: &Option<KeyValue>) -> Compare {
    mod_revision_is(
        key,
        Bytes::new(),
        kv.as_ref().map_or(0, |kv| kv.mod_revision),
        CompareResult::Equal,
    )
}

fn put_op(key: Bytes, value: Bytes, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(Operation::RequestPut(PutRequest {
            key,
            value,
            lease,
            ..Default::default()
        })),
    }
}

fn delete_op(key: Bytes, range_end: Bytes) -> RequestOp {
    RequestOp {
        request: Some(Operation::RequestDeleteRange(DeleteRangeRequest {
            key,
            range_end,
            prev_kv: true,
        })),
    }
}

fn range_kvs(response: &TxnResponse, index: usize) -> Vec<KeyValue> {
    match response
        .responses
        .get(index)
        .and_then(|op| op.response.as_ref())
    {
        Some(OperationResponse::ResponseRange(range)) => range.kvs.clone(),
        _ => Vec::new(),
    }
}

fn store_error(error: StoreError, index: i64) -> V2Error {
    let code = match error {
        StoreError::NoLeader => Code::LeaderElect,
        _ => Code::RaftInternal,
    };
    V2Error::new(code, error.to_string(), index)
}

fn lost_too_often(path: &str, index: i64) -> V2Error {
    V2Error::new(
        Code::RaftInternal,
        format!("too many concurrent changes to {path}"),
        index,
    )
}

/// What a write to one path depends on, read at one revision.
struct Snapshot {
    revision: i64,
    /// For each ancestor directory (outermost first): its path, and any file
    /// or directory marker at it.
    ancestors: Vec<(String, Option<KeyValue>, Option<KeyValue>)>,
    file: Option<KeyValue>,
    marker: Option<KeyValue>,
    /// Keys strictly under the path's directory marker.
    n_children: usize,
}

impl Snapshot {
    fn is_dir(&self) -> bool {
        self.marker.is_some() || self.n_children > 0
    }

    fn exists(&self) -> bool {
        self.file.is_some() || self.is_dir()
    }

    /// The first ancestor that is a file: nothing can be created under it.
    fn file_ancestor(&self) -> Option<&str> {
        self.ancestors
            .iter()
            .find(|(_, file, _)| file.is_some())
            .map(|(path, _, _)| path.as_str())
    }

    /// Compares that hold while nothing this snapshot saw has changed.
    fn guards(&self, path: &str) -> Vec<Compare> {
        let mut guards = Vec::new();
        for (ancestor, file, marker) in &self.ancestors {
            guards.push(unchanged(file_key(ancestor), file));
            guards.push(unchanged(dir_key(ancestor), marker));
        }
        guards.push(unchanged(file_key(path), &self.file));
        guards.push(unchanged(dir_key(path), &self.marker));
        guards
    }

    /// Puts of the directory markers missing above `path`.
    fn missing_ancestor_markers(&self) -> Vec<RequestOp> {
        self.ancestors
            .iter()
            .filter(|(_, _, marker)| marker.is_none())
            .map(|(ancestor, _, _)| put_op(dir_key(ancestor), Bytes::new(), 0))
            .collect()
    }
}

/// The children span of the directory at `path` (its marker excluded).
fn children_span(path: &str) -> (Bytes, Bytes) {
    let marker = dir_key(path);
    let mut first_child = marker.to_vec();
    first_child.push(0);
    (Bytes::from(first_child), prefix_end(&marker))
}

/// What PUT asks for.
#[derive(Default, Debug)]
pub(crate) struct SetOptions {
    pub value: String,
    pub dir: bool,
    pub ttl_seconds: Option<i64>,
    pub prev_exist: Option<bool>,
    pub prev_value: Option<String>,
    pub prev_index: Option<i64>,
    pub refresh: bool,
}

/// What DELETE asks for.
#[derive(Default, Debug)]
pub(crate) struct DeleteOptions {
    pub dir: bool,
    pub recursive: bool,
    pub prev_value: Option<String>,
    pub prev_index: Option<i64>,
}

/// A successful operation: the answer, whether it created the node (201),
/// and the store index after it.
pub(crate) struct Outcome {
    pub answer: Answer,
    pub created: bool,
    pub index: i64,
}

/// etcd 2's compare-and-swap check, with its cause text.
fn compare_failure(
    prev_value: &Option<String>,
    prev_index: Option<i64>,
    value: &str,
    modified_index: i64,
) -> Option<String> {
    let value_differs = prev_value.as_ref().is_some_and(|prev| prev != value);
    let index_differs = prev_index.is_some_and(|prev| prev != modified_index);
    let prev_value = prev_value.as_deref().unwrap_or_default();
    let prev_index = prev_index.unwrap_or_default();
    match (value_differs, index_differs) {
        (true, true) => Some(format!(
            "[{prev_value} != {value}] [{prev_index} != {modified_index}]"
        )),
        (true, false) => Some(format!("[{prev_value} != {value}]")),
        (false, true) => Some(format!("[{prev_index} != {modified_index}]")),
        (false, false) => None,
    }
}

pub(crate) struct Keys<'a> {
    pub member: &'a Arc<Member>,
}

impl Keys<'_> {
    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, V2Error> {
        let index = self.member.current_header().revision;
        self.member
            .txn(request)
            .await
            .map_err(|error| store_error(error, index))
    }

    async fn snapshot(&self, path: &str) -> Result<Snapshot, V2Error> {
        let ancestor_paths = ancestors(path);
        let mut reads = Vec::new();
        for ancestor in &ancestor_paths {
            reads.push(range_op(file_key(ancestor), Bytes::new()));
            reads.push(range_op(dir_key(ancestor), Bytes::new()));
        }
        reads.push(range_op(file_key(path), Bytes::new()));
        reads.push(range_op(dir_key(path), Bytes::new()));
        let (first_child, end) = children_span(path);
        reads.push(RequestOp {
            request: Some(Operation::RequestRange(RangeRequest {
                key: first_child,
                range_end: end,
                count_only: true,
                ..Default::default()
            })),
        });
        let response = self
            .txn(TxnRequest {
                success: reads,
                ..Default::default()
            })
            .await?;
        let first = |index: usize| range_kvs(&response, index).into_iter().next();
        let ancestors = ancestor_paths
            .into_iter()
            .enumerate()
            .map(|(position, ancestor)| (ancestor, first(2 * position), first(2 * position + 1)))
            .collect::<Vec<_>>();
        let base = 2 * ancestors.len();
        let n_children = match response
            .responses
            .get(base + 2)
            .and_then(|op| op.response.as_ref())
        {
            Some(OperationResponse::ResponseRange(range)) => range.count as usize,
            _ => 0,
        };
        Ok(Snapshot {
            revision: response.header.unwrap_or_default().revision,
            ancestors,
            file: first(base),
            marker: first(base + 1),
            n_children,
        })
    }

    /// The seconds a lease has left, rounded up as etcd 2 rounds a node's TTL.
    async fn remaining_ttls(&self, leases: impl Iterator<Item = i64>) -> HashMap<i64, i64> {
        let mut remaining = HashMap::new();
        for lease in leases {
            if lease == 0 || remaining.contains_key(&lease) {
                continue;
            }
            if let Ok(Some(found)) = self.member.lease_time_to_live(lease, false).await {
                let seconds = (found.remaining_seconds + 1).min(found.granted_seconds);
                remaining.insert(lease, seconds);
            }
        }
        remaining
    }

    async fn node_of(
        &self,
        path: &str,
        file: &Option<KeyValue>,
        marker: &Option<KeyValue>,
    ) -> Node {
        let kv = marker.as_ref().or(file.as_ref());
        let ttls = self.remaining_ttls(kv.map(|kv| kv.lease).into_iter()).await;
        let mut node = Node {
            key: Some(path.to_string()),
            dir: marker.is_some() || file.is_none(),
            ..Default::default()
        };
        if let Some(kv) = kv {
            if !node.dir {
                node.value = Some(String::from_utf8_lossy(&kv.value).into_owned());
            }
            node.created_index = kv.create_revision;
            node.modified_index = kv.mod_revision;
            if let Some(ttl) = ttls.get(&kv.lease) {
                node.expire_in(*ttl);
            }
        }
        node
    }

    /// GET: a file, or a directory with its children (all levels if recursive).
    pub async fn get(&self, path: &str, recursive: bool) -> Result<Outcome, V2Error> {
        let marker = dir_key(path);
        let end = prefix_end(&marker);
        let mut reads = vec![range_op(marker.clone(), end)];
        if path != "/" {
            reads.push(range_op(file_key(path), Bytes::new()));
        }
        let response = self
            .txn(TxnRequest {
                success: reads,
                ..Default::default()
            })
            .await?;
        let index = response.header.unwrap_or_default().revision;
        let under = range_kvs(&response, 0);
        let file = range_kvs(&response, 1).into_iter().next();
        let ttls = self
            .remaining_ttls(under.iter().chain(file.iter()).map(|kv| kv.lease))
            .await;
        let node = if path == "/" {
            let mut root = build_tree(path, &under, &ttls, recursive);
            root.key = None;
            root.created_index = 0;
            root.modified_index = 0;
            root
        } else if !under.is_empty() {
            build_tree(path, &under, &ttls, recursive)
        } else if let Some(file) = file {
            let mut node = file_node(path, &file);
            if let Some(ttl) = ttls.get(&file.lease) {
                node.expire_in(*ttl);
            }
            node
        } else {
            return Err(V2Error::new(Code::KeyNotFound, path, index));
        };
        Ok(Outcome {
            answer: Answer {
                action: "get",
                node,
                prev_node: None,
            },
            created: false,
            index,
        })
    }

    /// PUT: set, create (prevExist=false), update (prevExist=true),
    /// compareAndSwap (prevValue, prevIndex), a directory (dir=true), a TTL,
    /// or a TTL refresh.
    pub async fn set(&self, path: &str, options: SetOptions) -> Result<Outcome, V2Error> {
        if path == "/" {
            let index = self.member.current_header().revision;
            return Err(V2Error::new(Code::RootReadOnly, "/", index));
        }
        let lease = self.grant(options.ttl_seconds).await?;
        let result = self.set_with_lease(path, &options, lease).await;
        if result.is_err()
            && let Some((lease, _)) = lease
        {
            self.release_leases(vec![lease]);
        }
        result
    }

    async fn grant(&self, ttl_seconds: Option<i64>) -> Result<Option<(i64, i64)>, V2Error> {
        let Some(ttl) = ttl_seconds.filter(|ttl| *ttl > 0) else {
            return Ok(None);
        };
        let index = self.member.current_header().revision;
        let granted = self
            .member
            .lease_grant(LeaseGrantRequest { ttl, id: 0 })
            .await
            .map_err(|error| store_error(error, index))?;
        Ok(Some((granted.id, ttl)))
    }

    async fn set_with_lease(
        &self,
        path: &str,
        options: &SetOptions,
        lease: Option<(i64, i64)>,
    ) -> Result<Outcome, V2Error> {
        let compare_and_swap = options.prev_value.is_some() || options.prev_index.is_some();
        for _ in 0..MAX_ATTEMPTS {
            let snapshot = self.snapshot(path).await?;
            let index = snapshot.revision;
            if let Some(file) = snapshot.file_ancestor() {
                return Err(V2Error::new(Code::NotDir, file, index));
            }
            let exists = snapshot.exists();
            let is_dir = snapshot.is_dir();
            let action = if compare_and_swap {
                if !exists {
                    return Err(V2Error::new(Code::KeyNotFound, path, index));
                }
                if is_dir {
                    return Err(V2Error::new(Code::NotFile, path, index));
                }
                let file = snapshot
                    .file
                    .as_ref()
                    .expect("an existing non-directory is a file");
                let value = String::from_utf8_lossy(&file.value);
                if let Some(cause) = compare_failure(
                    &options.prev_value,
                    options.prev_index,
                    &value,
                    file.mod_revision,
                ) {
                    return Err(V2Error::new(Code::TestFailed, cause, index));
                }
                "compareAndSwap"
            } else if options.prev_exist == Some(false) {
                if exists {
                    return Err(V2Error::new(Code::NodeExist, path, index));
                }
                "create"
            } else if options.prev_exist == Some(true) || options.refresh {
                if !exists {
                    return Err(V2Error::new(Code::KeyNotFound, path, index));
                }
                if is_dir && !options.dir && !options.refresh {
                    return Err(V2Error::new(Code::NotFile, path, index));
                }
                if options.refresh { "set" } else { "update" }
            } else {
                if is_dir {
                    return Err(V2Error::new(Code::NotFile, path, index));
                }
                "set"
            };
            let writes_dir = if exists { is_dir } else { options.dir };
            let value = if writes_dir {
                Bytes::new()
            } else if options.refresh {
                snapshot
                    .file
                    .as_ref()
                    .map(|file| file.value.clone())
                    .unwrap_or_default()
            } else {
                Bytes::from(options.value.clone())
            };
            let target = if writes_dir {
                dir_key(path)
            } else {
                file_key(path)
            };
            let mut writes = snapshot.missing_ancestor_markers();
            writes.push(put_op(target, value.clone(), lease.map_or(0, |(id, _)| id)));
            let response = self
                .txn(TxnRequest {
                    compare: snapshot.guards(path),
                    success: writes,
                    failure: Vec::new(),
                })
                .await?;
            if !response.succeeded {
                continue;
            }
            let revision = response.header.unwrap_or_default().revision;
            let previous = if exists {
                Some(self.node_of(path, &snapshot.file, &snapshot.marker).await)
            } else {
                None
            };
            let replaced = snapshot.marker.as_ref().or(snapshot.file.as_ref());
            let mut node = Node {
                key: Some(path.to_string()),
                dir: writes_dir,
                value: (!writes_dir).then(|| String::from_utf8_lossy(&value).into_owned()),
                modified_index: revision,
                created_index: replaced.map_or(revision, |kv| kv.create_revision),
                ..Default::default()
            };
            if let Some((_, ttl)) = lease {
                node.expire_in(ttl);
            }
            if let Some(old_lease) = replaced.map(|kv| kv.lease).filter(|lease| *lease != 0) {
                self.release_leases(vec![old_lease]);
            }
            return Ok(Outcome {
                answer: Answer {
                    action,
                    node,
                    prev_node: previous,
                },
                created: !exists,
                index: revision,
            });
        }
        Err(lost_too_often(path, self.member.current_header().revision))
    }

    /// POST: a new key in directory `path` named by the store index that
    /// creates it, so the keys of a directory sort in creation order.
    pub async fn create_in_order(
        &self,
        path: &str,
        value: String,
        ttl_seconds: Option<i64>,
    ) -> Result<Outcome, V2Error> {
        let lease = self.grant(ttl_seconds).await?;
        for _ in 0..MAX_ATTEMPTS {
            let snapshot = self.snapshot(path).await?;
            let index = snapshot.revision;
            if let Some(file) = snapshot.file_ancestor() {
                return Err(V2Error::new(Code::NotDir, file, index));
            }
            if snapshot.file.is_some() {
                return Err(V2Error::new(Code::NotDir, path, index));
            }
            let child = if path == "/" {
                format!("/{:020}", index + 1)
            } else {
                format!("{path}/{:020}", index + 1)
            };
            let mut guards = snapshot.guards(path);
            // Nothing in the directory changed since the read, so every key
            // in it is older than the one being named.
            let (first_child, end) = children_span(path);
            guards.push(mod_revision_is(
                first_child,
                end,
                index + 1,
                CompareResult::Less,
            ));
            let mut writes = snapshot.missing_ancestor_markers();
            if path != "/" && snapshot.marker.is_none() {
                writes.push(put_op(dir_key(path), Bytes::new(), 0));
            }
            writes.push(put_op(
                file_key(&child),
                Bytes::from(value.clone()),
                lease.map_or(0, |(id, _)| id),
            ));
            let response = self
                .txn(TxnRequest {
                    compare: guards,
                    success: writes,
                    failure: Vec::new(),
                })
                .await?;
            if !response.succeeded {
                continue;
            }
            let revision = response.header.unwrap_or_default().revision;
            let mut node = Node {
                key: Some(child),
                value: Some(value),
                modified_index: revision,
                created_index: revision,
                ..Default::default()
            };
            if let Some((_, ttl)) = lease {
                node.expire_in(ttl);
            }
            return Ok(Outcome {
                answer: Answer {
                    action: "create",
                    node,
                    prev_node: None,
                },
                created: true,
                index: revision,
            });
        }
        if let Some((lease, _)) = lease {
            self.release_leases(vec![lease]);
        }
        Err(lost_too_often(path, self.member.current_header().revision))
    }

    /// DELETE: a file (compareAndDelete with prevValue or prevIndex), an
    /// empty directory (dir=true), or a whole tree (recursive=true).
    pub async fn delete(&self, path: &str, options: DeleteOptions) -> Result<Outcome, V2Error> {
        if path == "/" {
            let index = self.member.current_header().revision;
            return Err(V2Error::new(Code::RootReadOnly, "/", index));
        }
        let compare_and_delete = options.prev_value.is_some() || options.prev_index.is_some();
        for _ in 0..MAX_ATTEMPTS {
            let snapshot = self.snapshot(path).await?;
            let index = snapshot.revision;
            if !snapshot.exists() {
                return Err(V2Error::new(Code::KeyNotFound, path, index));
            }
            let is_dir = snapshot.is_dir();
            let mut guards = snapshot.guards(path);
            let (action, delete) = if !is_dir {
                let file = snapshot
                    .file
                    .as_ref()
                    .expect("an existing non-directory is a file");
                if compare_and_delete {
                    let value = String::from_utf8_lossy(&file.value);
                    if let Some(cause) = compare_failure(
                        &options.prev_value,
                        options.prev_index,
                        &value,
                        file.mod_revision,
                    ) {
                        return Err(V2Error::new(Code::TestFailed, cause, index));
                    }
                    ("compareAndDelete", delete_op(file_key(path), Bytes::new()))
                } else {
                    ("delete", delete_op(file_key(path), Bytes::new()))
                }
            } else {
                if compare_and_delete || (!options.dir && !options.recursive) {
                    return Err(V2Error::new(Code::NotFile, path, index));
                }
                if options.recursive {
                    let marker = dir_key(path);
                    let end = prefix_end(&marker);
                    ("delete", delete_op(marker, end))
                } else {
                    if snapshot.n_children > 0 {
                        return Err(V2Error::new(Code::DirNotEmpty, path, index));
                    }
                    let (first_child, end) = children_span(path);
                    guards.push(mod_revision_is(first_child, end, 0, CompareResult::Equal));
                    ("delete", delete_op(dir_key(path), Bytes::new()))
                }
            };
            let response = self
                .txn(TxnRequest {
                    compare: guards,
                    success: vec![delete],
                    failure: Vec::new(),
                })
                .await?;
            if !response.succeeded {
                continue;
            }
            let revision = response.header.unwrap_or_default().revision;
            let previous = self.node_of(path, &snapshot.file, &snapshot.marker).await;
            let leases: Vec<i64> = match response
                .responses
                .first()
                .and_then(|op| op.response.as_ref())
            {
                Some(OperationResponse::ResponseDeleteRange(deleted)) => deleted
                    .prev_kvs
                    .iter()
                    .map(|kv| kv.lease)
                    .filter(|lease| *lease != 0)
                    .collect(),
                _ => Vec::new(),
            };
            self.release_leases(leases);
            let node = Node {
                key: Some(path.to_string()),
                dir: is_dir,
                modified_index: revision,
                created_index: previous.created_index,
                ..Default::default()
            };
            return Ok(Outcome {
                answer: Answer {
                    action,
                    node,
                    prev_node: Some(previous),
                },
                created: false,
                index: revision,
            });
        }
        Err(lost_too_often(path, self.member.current_header().revision))
    }

    /// Revokes, in the background, the per-node leases that no longer hold
    /// any key (the node was overwritten or deleted before its TTL ran out).
    fn release_leases(&self, leases: Vec<i64>) {
        if leases.is_empty() {
            return;
        }
        let member = self.member.clone();
        tokio::spawn(async move {
            for lease in leases {
                if let Ok(Some(found)) = member.lease_time_to_live(lease, true).await
                    && found.keys.is_empty()
                {
                    let _ = member.lease_revoke(LeaseRevokeRequest { id: lease }).await;
                }
            }
        });
    }

    /// `?wait=true`: the first change at or after `wait_index` (or after now)
    /// to the node at `path`, or anywhere under it if `recursive`.
    pub async fn wait(
        &self,
        path: &str,
        recursive: bool,
        wait_index: Option<i64>,
    ) -> Result<Outcome, V2Error> {
        let current = self.member.current_header().revision;
        let compacted = self.member.compact_revision();
        if let Some(wait_index) = wait_index
            && wait_index <= compacted
        {
            return Err(history_cleared(compacted, wait_index, current));
        }
        let (key, range_end) = if path == "/" {
            (Bytes::from_static(b"/"), prefix_end(b"/"))
        } else {
            (file_key(path), prefix_end(path.as_bytes()))
        };
        let spec = WatchSpec {
            key,
            range_end,
            start_revision: wait_index.unwrap_or(current + 1),
            prev_kv: true,
            no_put: false,
            no_delete: false,
        };
        let mut watch = crate::lock::Watch::start(self.member, spec);
        loop {
            let message = watch
                .next()
                .await
                .map_err(|status| V2Error::new(Code::RaftInternal, status.message(), current))?;
            match message {
                WatchMessage::Events { events, .. } => {
                    for event in events {
                        let Some(kv) = event.kv.as_ref() else {
                            continue;
                        };
                        let Some(node_path) = watched_path(path, recursive, &kv.key) else {
                            continue;
                        };
                        let answer = self.event_answer(&node_path, &event).await;
                        return Ok(Outcome {
                            answer,
                            created: false,
                            index: current,
                        });
                    }
                }
                WatchMessage::Compacted { compact_revision } => {
                    return Err(history_cleared(
                        compact_revision,
                        wait_index.unwrap_or(current + 1),
                        current,
                    ));
                }
                WatchMessage::Progress { .. } => {}
            }
        }
    }

    async fn event_answer(&self, path: &str, event: &proto::mvccpb::Event) -> Answer {
        let kv = event.kv.clone().unwrap_or_default();
        let is_marker = kv.key.ends_with(b"/");
        let split = |kv: Option<KeyValue>| {
            if is_marker { (None, kv) } else { (kv, None) }
        };
        let prev_node = match &event.prev_kv {
            Some(prev) => {
                let (file, marker) = split(Some(prev.clone()));
                Some(self.node_of(path, &file, &marker).await)
            }
            None => None,
        };
        if event.r#type == EventType::Delete as i32 {
            let node = Node {
                key: Some(path.to_string()),
                dir: is_marker,
                modified_index: kv.mod_revision,
                created_index: prev_node.as_ref().map_or(0, |node| node.created_index),
                ..Default::default()
            };
            return Answer {
                action: "delete",
                node,
                prev_node,
            };
        }
        let (file, marker) = split(Some(kv));
        Answer {
            action: "set",
            node: self.node_of(path, &file, &marker).await,
            prev_node,
        }
    }
}

fn history_cleared(compacted: i64, wait_index: i64, current: i64) -> V2Error {
    V2Error::new(
        Code::EventIndexCleared,
        format!(
            "the requested history has been cleared [{}/{wait_index}]",
            compacted + 1
        ),
        current,
    )
}

/// The v2 path a changed v3 key stands for, if a wait on `path` sees it:
/// the node itself, or (recursive) anything under it that is not hidden.
fn watched_path(path: &str, recursive: bool, key: &[u8]) -> Option<String> {
    let key = std::str::from_utf8(key).ok()?;
    let node_path = key.strip_suffix('/').unwrap_or(key);
    if node_path == path || (path == "/" && node_path.is_empty()) {
        return Some(path.to_string());
    }
    let under = if path == "/" {
        node_path.strip_prefix('/')?
    } else {
        node_path.strip_prefix(path)?.strip_prefix('/')?
    };
    (recursive && !under.is_empty() && !under.split('/').any(is_hidden))
        .then(|| node_path.to_string())
}

fn file_node(path: &str, kv: &KeyValue) -> Node {
    Node {
        key: Some(path.to_string()),
        value: Some(String::from_utf8_lossy(&kv.value).into_owned()),
        modified_index: kv.mod_revision,
        created_index: kv.create_revision,
        ..Default::default()
    }
}

/// A directory being assembled from the keys under it.
#[derive(Default)]
struct Entry {
    file: Option<KeyValue>,
    marker: Option<KeyValue>,
    children: BTreeMap<String, Entry>,
}

/// The directory at `path` and what is under it, from the sorted keys of its
/// span (its marker included, if it has one).
fn build_tree(path: &str, kvs: &[KeyValue], ttls: &HashMap<i64, i64>, recursive: bool) -> Node {
    let prefix = dir_key(path);
    let mut root = Entry::default();
    for kv in kvs {
        let Some(relative) = kv.key.strip_prefix(prefix.as_ref()) else {
            continue;
        };
        let Ok(relative) = std::str::from_utf8(relative) else {
            continue;
        };
        if relative.is_empty() {
            root.marker = Some(kv.clone());
            continue;
        }
        let (names, is_marker) = match relative.strip_suffix('/') {
            Some(directory) => (directory, true),
            None => (relative, false),
        };
        let mut entry = &mut root;
        for name in names.split('/') {
            entry = entry.children.entry(name.to_string()).or_default();
        }
        if is_marker {
            entry.marker = Some(kv.clone());
        } else {
            entry.file = Some(kv.clone());
        }
    }
    to_node(path, &root, ttls, if recursive { usize::MAX } else { 1 })
}

fn to_node(path: &str, entry: &Entry, ttls: &HashMap<i64, i64>, depth: usize) -> Node {
    let is_dir = entry.marker.is_some() || !entry.children.is_empty() || entry.file.is_none();
    let kv = if is_dir {
        entry.marker.as_ref()
    } else {
        entry.file.as_ref()
    };
    let mut node = match kv {
        Some(kv) if !is_dir => file_node(path, kv),
        Some(kv) => Node {
            key: Some(path.to_string()),
            dir: true,
            modified_index: kv.mod_revision,
            created_index: kv.create_revision,
            ..Default::default()
        },
        // A directory with no marker (its keys were written through v3):
        // it exists because its children do, and has the indices of its
        // oldest key.
        None => {
            let oldest = oldest_key(entry);
            Node {
                key: Some(path.to_string()),
                dir: true,
                modified_index: oldest.map_or(0, |kv| kv.create_revision),
                created_index: oldest.map_or(0, |kv| kv.create_revision),
                ..Default::default()
            }
        }
    };
    if let Some(ttl) = kv.and_then(|kv| ttls.get(&kv.lease)) {
        node.expire_in(*ttl);
    }
    if is_dir && depth > 0 {
        let children: Vec<Node> = entry
            .children
            .iter()
            .filter(|(name, _)| !is_hidden(name))
            .map(|(name, child)| {
                let child_path = if path == "/" {
                    format!("/{name}")
                } else {
                    format!("{path}/{name}")
                };
                to_node(&child_path, child, ttls, depth - 1)
            })
            .collect();
        if !children.is_empty() {
            node.nodes = Some(children);
        }
    }
    node
}

fn oldest_key(entry: &Entry) -> Option<&KeyValue> {
    let own = entry.marker.iter().chain(entry.file.iter());
    own.chain(entry.children.values().filter_map(oldest_key))
        .min_by_key(|kv| kv.create_revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, revision: i64) -> KeyValue {
        KeyValue {
            key: Bytes::from(key.to_string()),
            value: Bytes::from(value.to_string()),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease: 0,
        }
    }

    #[test]
    fn directories_are_built_from_markers_and_files() {
        let kvs = vec![
            kv("/dir/", "", 10),
            kv("/dir/a/", "", 10),
            kv("/dir/a/b", "1", 10),
            kv("/dir/_hidden", "h", 11),
            kv("/dir/c", "2", 12),
        ];
        let node = build_tree("/dir", &kvs, &HashMap::new(), true);
        assert_eq!(
            serde_json::to_string(&node).unwrap(),
            r#"{"key":"/dir","dir":true,"nodes":[{"key":"/dir/a","dir":true,"nodes":[{"key":"/dir/a/b","value":"1","modifiedIndex":10,"createdIndex":10}],"modifiedIndex":10,"createdIndex":10},{"key":"/dir/c","value":"2","modifiedIndex":12,"createdIndex":12}],"modifiedIndex":10,"createdIndex":10}"#
        );
        let shallow = build_tree("/dir", &kvs, &HashMap::new(), false);
        assert!(shallow.nodes.unwrap()[0].nodes.is_none());
    }

    #[test]
    fn waits_see_the_node_and_unhidden_descendants() {
        assert_eq!(watched_path("/a", false, b"/a").as_deref(), Some("/a"));
        assert_eq!(watched_path("/a", false, b"/a/").as_deref(), Some("/a"));
        assert_eq!(watched_path("/a", false, b"/a/b"), None);
        assert_eq!(watched_path("/a", true, b"/a/b").as_deref(), Some("/a/b"));
        assert_eq!(watched_path("/a", true, b"/ab"), None);
        assert_eq!(watched_path("/a", true, b"/a/_b"), None);
        assert_eq!(watched_path("/", true, b"/x/").as_deref(), Some("/x"));
    }

    #[test]
    fn compare_failures_name_what_differed() {
        assert_eq!(
            compare_failure(&Some("a".into()), Some(3), "3", 19).unwrap(),
            "[a != 3] [3 != 19]"
        );
        assert_eq!(compare_failure(&None, Some(1), "x", 6).unwrap(), "[1 != 6]");
        assert!(compare_failure(&Some("x".into()), Some(6), "x", 6).is_none());
    }

    #[test]
    fn ancestors_exclude_the_root_and_the_node() {
        assert_eq!(ancestors("/a/b/c"), vec!["/a", "/a/b"]);
        assert!(ancestors("/a").is_empty());
    }
}
