//! etcd's v3lock service (Lock, Unlock), and the waiting recipe it shares with
//! elections: etcd's `concurrency` package (mutex and election) run inside the
//! server over the store [`Member`], as etcd runs it over an in-process client.
//!
//! A lock `name` is held through a key `name/<lease id in hex>` attached to the
//! caller's lease. Candidates queue by the create revision of their keys: the
//! holder is the key with the smallest one, and each waiter watches the key
//! created just before its own until every earlier key is deleted.
//!
//! **Fencing token.** The create revision of the lock key (`Range` the key
//! returned by Lock) grows with every grant of the same lock and never repeats,
//! so it is the fencing token: a resource guarded by the lock should refuse an
//! operation carrying a smaller create revision than one it has already seen,
//! or guard its own writes with a txn comparing the key's create revision. A
//! lease can expire while its holder still believes it holds the lock; the
//! token is what makes that holder's late writes detectable.

use std::sync::Arc;

use bytes::Bytes;
use proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use proto::etcdserverpb::request_op::Request as RequestOperation;
use proto::etcdserverpb::response_op::Response as ResponseOperation;
use proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, TxnRequest, TxnResponse,
};
use proto::mvccpb::event::EventType;
use proto::v3lockpb::lock_server::Lock;
use proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use store::watch::{WatchMessage, WatchQueue, WatchReceiver, WatchSpec};
use store::{Member, StoreError};
use tonic::{Request, Response, Status};

use crate::{errors, validate};

/// The TTL etcd's `concurrency` sessions grant when a request names no lease
/// (lease 0): etcd's server then creates a lease of its own, which nothing
/// keeps alive, so the key it holds goes away after this long.
const DEFAULT_SESSION_TTL_SECONDS: i64 = 60;

pub struct LockService {
    pub member: Arc<Member>,
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let caller = recipe_caller(&self.member, &request, &request.get_ref().name).await?;
        lock(&self.member, &caller, request.into_inner())
            .await
            .map(Response::new)
            .map_err(as_recipe_error)
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let caller = crate::auth::Credentials::of(&request)
            .caller(&self.member)
            .await
            .map_err(as_recipe_error)?;
        unlock(&self.member, &caller, request.into_inner())
            .await
            .map(Response::new)
            .map_err(as_recipe_error)
    }
}

/// etcd serves Lock and Election through an in-process client of its own KV
/// and Lease services, and that client's errors reach the wire as plain
/// errors: gRPC code Unknown with etcd's usual text (`etcdserver: requested
/// lease not found` included). Clients match on the text; shoal sends the
/// same code and text.
/// The caller of a lock or election call, who must be able to read the
/// name's keys (the recipe ranges and watches them); its writes are checked
/// as they apply, as the caller's own puts and deletes would be.
pub(crate) async fn recipe_caller<T>(
    member: &Member,
    request: &Request<T>,
    name: &[u8],
) -> Result<store::auth::AuthInfo, Status> {
    let caller = crate::auth::Credentials::of(request)
        .caller(member)
        .await
        .map_err(as_recipe_error)?;
    let prefix = prefix_of(name);
    let prefix_end = prefix_range_end(&prefix);
    crate::auth::check(
        member,
        &caller,
        &prefix,
        &prefix_end,
        store::auth::Access::Read,
    )
    .map_err(as_recipe_error)?;
    Ok(caller)
}

pub(crate) fn as_recipe_error(status: Status) -> Status {
    Status::unknown(status.message())
}

async fn lock(
    member: &Arc<Member>,
    caller: &store::auth::AuthInfo,
    request: LockRequest,
) -> Result<LockResponse, Status> {
    let lease = session_lease(member, request.lease).await?;
    let prefix = prefix_of(&request.name);
    let key = candidate_key(&prefix, lease);

    // Queue up, or find our key again: the same lease may lock the same name
    // again and holds it already (etcd's locks are re-entrant per lease).
    let txn = TxnRequest {
        compare: vec![create_revision_is(&key, 0)],
        success: vec![
            put_operation(&key, Bytes::new(), lease),
            range_operation(first_created(&prefix)),
        ],
        failure: vec![
            range_operation(RangeRequest {
                key: key.clone(),
                ..Default::default()
            }),
            range_operation(first_created(&prefix)),
        ],
    };
    let response = member
        .txn_as(Some(caller), txn)
        .await
        .map_err(errors::from_store)?;
    // From here on, giving up (an error, or the client going away) must not
    // leave our key queued: it would block every later candidate until the
    // lease ends. etcd's mutex deletes it too.
    let mut release = CleanupOnDrop::new(
        member.clone(),
        TxnRequest {
            success: vec![delete_operation(&key)],
            ..Default::default()
        },
    );
    let header = response.header.unwrap_or_default();
    let my_revision = if response.succeeded {
        header.revision
    } else {
        range_result(&response, 0)
            .and_then(|range| range.kvs.first())
            .map(|kv| kv.create_revision)
            .ok_or_else(|| lost_key(&key))?
    };
    let owner = range_result(&response, 1).and_then(|range| range.kvs.first());
    // Granted at once when no older key exists: the txn put our key with the
    // lease (or found it, attached to it), so the lease was alive at the grant.
    let header = match owner {
        None => header,
        Some(owner) if owner.create_revision == my_revision => header,
        Some(_) => {
            wait_deletes(member, &prefix, my_revision - 1).await?;
            // While we waited our lease may have ended and taken our key with
            // it; granting now would hand out a lock nobody holds (etcd bug
            // #11456). The earlier holders' keys are gone either way.
            confirm_still_held(member, &key, lease, session_expired).await?
        }
    };
    release.disarm();
    Ok(LockResponse {
        header: Some(header),
        key,
    })
}

async fn unlock(
    member: &Member,
    caller: &store::auth::AuthInfo,
    request: UnlockRequest,
) -> Result<UnlockResponse, Status> {
    let delete = DeleteRangeRequest {
        key: request.key,
        ..Default::default()
    };
    validate::delete_range(&delete)?;
    let response = member
        .delete_range_as(Some(caller), delete)
        .await
        .map_err(errors::from_store)?;
    Ok(UnlockResponse {
        header: response.header,
    })
}

/// etcd's mutex error (from 3.5 on) when the lock key vanished while its lease
/// is alive: someone else deleted it.
fn session_expired() -> Status {
    Status::unknown("session: session is expired")
}

fn lost_key(key: &[u8]) -> Status {
    errors::from_store(StoreError::Internal(format!(
        "key {} exists but was not returned",
        String::from_utf8_lossy(key)
    )))
}

/// The lease a recipe runs under: the caller's, or for lease 0 a new one with
/// etcd's session TTL, as etcd's server does.
pub(crate) async fn session_lease(member: &Member, lease: i64) -> Result<i64, Status> {
    if lease != 0 {
        return Ok(lease);
    }
    let granted = member
        .lease_grant(LeaseGrantRequest {
            ttl: DEFAULT_SESSION_TTL_SECONDS,
            id: 0,
        })
        .await
        .map_err(errors::from_store)?;
    Ok(granted.id)
}

/// etcd's key prefix for a lock or election: the name and a slash.
pub(crate) fn prefix_of(name: &[u8]) -> Bytes {
    let mut prefix = Vec::with_capacity(name.len() + 1);
    prefix.extend_from_slice(name);
    prefix.push(b'/');
    prefix.into()
}

/// The end of a prefix range: the prefix with its last byte below 0xff
/// incremented and what follows dropped; `\0` (to the end of the keyspace) if
/// every byte is 0xff. etcd's `GetPrefixRangeEnd`.
pub(crate) fn prefix_range_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return end.into();
        }
        end.pop();
    }
    Bytes::from_static(b"\0")
}

/// A candidate's key: the prefix and the lease id in lowercase hex, formatted
/// as Go's `%x` formats an int64 (a minus sign, not two's complement).
pub(crate) fn candidate_key(prefix: &[u8], lease: i64) -> Bytes {
    let sign = if lease < 0 { "-" } else { "" };
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{sign}{:x}", lease.unsigned_abs()).as_bytes());
    key.into()
}

/// The oldest key under the prefix (etcd's `WithFirstCreate`): the lock holder
/// or the election leader.
pub(crate) fn first_created(prefix: &Bytes) -> RangeRequest {
    RangeRequest {
        key: prefix.clone(),
        range_end: prefix_range_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        ..Default::default()
    }
}

pub(crate) fn create_revision_is(key: &Bytes, revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.clone(),
        target_union: Some(TargetUnion::CreateRevision(revision)),
        range_end: Bytes::new(),
    }
}

pub(crate) fn put_operation(key: &Bytes, value: Bytes, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(RequestOperation::RequestPut(PutRequest {
            key: key.clone(),
            value,
            lease,
            ..Default::default()
        })),
    }
}

pub(crate) fn range_operation(range: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(RequestOperation::RequestRange(range)),
    }
}

pub(crate) fn delete_operation(key: &Bytes) -> RequestOp {
    RequestOp {
        request: Some(RequestOperation::RequestDeleteRange(DeleteRangeRequest {
            key: key.clone(),
            ..Default::default()
        })),
    }
}

/// The range answer at `index` in a txn's responses.
pub(crate) fn range_result(response: &TxnResponse, index: usize) -> Option<&RangeResponse> {
    match response.responses.get(index)?.response.as_ref()? {
        ResponseOperation::ResponseRange(range) => Some(range),
        _ => None,
    }
}

/// Waits until no key under `prefix` has a create revision at or below
/// `max_create_revision` (etcd's `waitDeletes`): each round reads the newest
/// such key and waits for its deletion. Returns the header of the last read.
pub(crate) async fn wait_deletes(
    member: &Member,
    prefix: &Bytes,
    max_create_revision: i64,
) -> Result<ResponseHeader, Status> {
    loop {
        let newest_earlier = RangeRequest {
            key: prefix.clone(),
            range_end: prefix_range_end(prefix),
            limit: 1,
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Create as i32,
            max_create_revision,
            ..Default::default()
        };
        let response = member
            .range(newest_earlier)
            .await
            .map_err(errors::from_store)?;
        let header = response.header.unwrap_or_default();
        let Some(kv) = response.kvs.into_iter().next() else {
            return Ok(header);
        };
        wait_delete(member, &kv.key, header.revision).await?;
    }
}

/// Waits for `key`, which existed at `revision`, to be deleted after it.
async fn wait_delete(member: &Member, key: &Bytes, revision: i64) -> Result<(), Status> {
    let mut watch = Watch::start(
        member,
        WatchSpec {
            key: key.clone(),
            range_end: Bytes::new(),
            start_revision: revision + 1,
            prev_kv: false,
            no_put: true,
            no_delete: false,
        },
    );
    loop {
        match watch.next().await? {
            WatchMessage::Events { events, .. } => {
                if events
                    .iter()
                    .any(|event| event.r#type == EventType::Delete as i32)
                {
                    return Ok(());
                }
            }
            WatchMessage::Progress { .. } => {}
            // The history we needed is gone: read the prefix again instead,
            // which sees the key if it still exists.
            WatchMessage::Compacted { .. } => return Ok(()),
        }
    }
}

/// After a wait: our key must still exist (our lease did not end and nobody
/// deleted it) and the lease must still be alive. Returns the header of the
/// read, which becomes the response's header as in etcd.
pub(crate) async fn confirm_still_held(
    member: &Member,
    key: &Bytes,
    lease: i64,
    key_gone: fn() -> Status,
) -> Result<ResponseHeader, Status> {
    let response = member
        .range(RangeRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await
        .map_err(errors::from_store)?;
    let alive = member
        .lease_time_to_live(lease, false)
        .await
        .map_err(errors::from_store)?
        .is_some();
    if !alive {
        return Err(errors::from_store(StoreError::LeaseNotFound));
    }
    if response.kvs.is_empty() {
        return Err(key_gone());
    }
    Ok(response.header.unwrap_or_default())
}

/// A watcher on the member's watch hub, cancelled when dropped.
pub(crate) struct Watch<'a> {
    member: &'a Member,
    hub_id: u64,
    deliveries: WatchReceiver,
}

impl<'a> Watch<'a> {
    pub(crate) fn start(member: &'a Member, spec: WatchSpec) -> Watch<'a> {
        let (queue, deliveries) = WatchQueue::new();
        let (hub_id, _) = member.watch_hub().watch(spec, &queue);
        Watch {
            member,
            hub_id,
            deliveries,
        }
    }

    pub(crate) async fn next(&mut self) -> Result<WatchMessage, Status> {
        self.deliveries
            .recv()
            .await
            .map(|delivery| delivery.message)
            .ok_or_else(|| errors::from_store(StoreError::Stopped))
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.member.watch_hub().cancel(self.hub_id);
    }
}

/// Runs a cleanup txn if dropped while armed: when a request fails, or when
/// its client goes away and tonic drops the request's future mid-wait.
pub(crate) struct CleanupOnDrop {
    member: Arc<Member>,
    cleanup: Option<TxnRequest>,
}

impl CleanupOnDrop {
    pub(crate) fn new(member: Arc<Member>, cleanup: TxnRequest) -> CleanupOnDrop {
        CleanupOnDrop {
            member,
            cleanup: Some(cleanup),
        }
    }

    pub(crate) fn disarm(&mut self) {
        self.cleanup = None;
    }
}

impl Drop for CleanupOnDrop {
    fn drop(&mut self) {
        let Some(cleanup) = self.cleanup.take() else {
            return;
        };
        let member = self.member.clone();
        // Drop cannot wait; the txn goes through raft on its own task.
        tokio::spawn(async move {
            if let Err(error) = member.txn(cleanup).await {
                tracing::warn!(%error, "cleaning up after an abandoned lock or campaign failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_keys_format_lease_ids_as_go_does() {
        assert_eq!(candidate_key(b"lock/", 0x694d_7a3c), &b"lock/694d7a3c"[..]);
        assert_eq!(candidate_key(b"lock/", -255), &b"lock/-ff"[..]);
        assert_eq!(candidate_key(b"/", i64::MIN), &b"/-8000000000000000"[..]);
    }

    #[test]
    fn prefix_range_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_range_end(b"a/"), &b"a0"[..]);
        assert_eq!(prefix_range_end(b"a\xff"), &b"b"[..]);
        assert_eq!(prefix_range_end(b"\xff\xff"), &b"\0"[..]);
    }
}
