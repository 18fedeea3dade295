//! The workload: concurrent clients of the `proto` crate's gRPC services, each
//! recording every operation it invokes. Register clients put unique values and
//! read linearizably; CAS clients swap two keys at once; lock clients take the
//! v3lock and write a fenced resource; lease clients attach keys to leases they
//! keep alive, revoke or let expire; watchers watch the whole prefix. All keys
//! live under [`PREFIX`]. A client moves to the next member after an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::lease_client::LeaseClient;
use proto::etcdserverpb::request_op::Request;
use proto::etcdserverpb::response_op::Response;
use proto::etcdserverpb::watch_client::WatchClient;
use proto::etcdserverpb::watch_request::RequestUnion;
use proto::etcdserverpb::{
    Compare, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use proto::mvccpb::KeyValue;
use proto::mvccpb::event::EventType;
use proto::v3lockpb::lock_client::LockClient;
use proto::v3lockpb::{LockRequest, UnlockRequest};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

use crate::client::{REQUEST_TIMEOUT, bounded, channel, write_outcome};
use crate::history::{Event, EventKind, Operation, Outcome, Record, Recorder};

/// Every key of the workload starts with this.
pub const PREFIX: &str = "chaos/";
/// The end of the prefix's range (`PREFIX` with its last byte incremented).
pub const PREFIX_END: &str = "chaos0";
pub const LOCK_NAME: &str = "chaos/lock";
pub const LOCK_RESOURCE: &str = "chaos/lock-resource";
const N_REGISTER_KEYS: usize = 8;
const N_CAS_GROUPS: usize = 2;
/// A lock request waits at most this long (it may queue behind other holders).
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// A watch stream silent for this long is reopened on another member.
const WATCH_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How many clients of each kind.
#[derive(Clone, Copy, Debug)]
pub struct WorkloadShape {
    pub n_register_clients: usize,
    pub n_cas_clients: usize,
    pub n_lock_clients: usize,
    pub n_lease_clients: usize,
    pub n_watchers: usize,
}

/// What every client shares.
#[derive(Clone)]
pub struct Context {
    pub urls: Arc<Vec<String>>,
    pub recorder: Recorder,
    pub deadline: Instant,
    pub cancelled: Arc<AtomicBool>,
    pub seed: u64,
}

impl Context {
    fn running(&self) -> bool {
        Instant::now() < self.deadline && !self.cancelled.load(Ordering::Relaxed)
    }
}

/// A client's connection to one member, moved to the next on errors.
struct Connection {
    urls: Arc<Vec<String>>,
    member_idx: usize,
    channel: Option<Channel>,
}

impl Connection {
    fn new(urls: Arc<Vec<String>>, member_idx: usize) -> Connection {
        Connection {
            member_idx: member_idx % urls.len(),
            urls,
            channel: None,
        }
    }

    fn channel(&mut self) -> Channel {
        if self.channel.is_none() {
            // A malformed URL cannot happen: the hosts build them.
            self.channel = channel(&self.urls[self.member_idx]).ok();
        }
        self.channel
            .clone()
            .unwrap_or_else(|| Channel::from_static("http://127.0.0.1:1").connect_lazy())
    }

    fn kv(&mut self) -> KvClient<Channel> {
        KvClient::new(self.channel())
    }

    fn next_member(&mut self) {
        self.member_idx = (self.member_idx + 1) % self.urls.len();
        self.channel = None;
    }
}

/// Starts every client; returns when all have stopped (at the deadline).
pub async fn run(context: Context, shape: WorkloadShape) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut client_id = 0u32;
    let mut next_id = || {
        client_id += 1;
        client_id
    };
    for _ in 0..shape.n_register_clients {
        tasks.spawn(register_client(context.clone(), next_id()));
    }
    for cas_idx in 0..shape.n_cas_clients {
        tasks.spawn(cas_client(
            context.clone(),
            next_id(),
            cas_idx % N_CAS_GROUPS,
        ));
    }
    for _ in 0..shape.n_lock_clients {
        tasks.spawn(lock_client(context.clone(), next_id()));
    }
    for _ in 0..shape.n_lease_clients {
        tasks.spawn(lease_client(context.clone(), next_id()));
    }
    for watcher_idx in 0..shape.n_watchers {
        tasks.spawn(watcher(context.clone(), next_id(), watcher_idx));
    }
    while tasks.join_next().await.is_some() {}
}

fn rng_for(context: &Context, client: u32) -> StdRng {
    StdRng::seed_from_u64(context.seed ^ (u64::from(client) << 40) ^ 0x5eed)
}

async fn pause_between_ops(rng: &mut StdRng) {
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn header_revision(header: Option<&proto::etcdserverpb::ResponseHeader>) -> Option<i64> {
    header.map(|header| header.revision)
}

/// Records one operation: `result` gives the outcome and the operation as
/// completed.
fn record(context: &Context, client: u32, invoke_ns: u64, outcome: Outcome, operation: Operation) {
    context.recorder.record(Record {
        client,
        invoke_ns,
        complete_ns: context.recorder.now_ns(),
        outcome,
        operation,
    });
}

async fn register_client(context: Context, client: u32) {
    let mut rng = rng_for(&context, client);
    let mut connection = Connection::new(context.urls.clone(), client as usize);
    let mut seq = 0u64;
    while context.running() {
        let key = format!("{PREFIX}reg/{}", rng.random_range(0..N_REGISTER_KEYS));
        let invoke_ns = context.recorder.now_ns();
        if rng.random_bool(0.5) {
            seq += 1;
            let value = format!("c{client}-{seq}");
            let response = bounded(
                REQUEST_TIMEOUT,
                connection.kv().put(PutRequest {
                    key: key.clone().into(),
                    value: value.clone().into(),
                    ..Default::default()
                }),
            )
            .await;
            let (outcome, revision) = match &response {
                Ok(response) => (Outcome::Ok, header_revision(response.header.as_ref())),
                Err(status) => (write_outcome(status), None),
            };
            record(
                &context,
                client,
                invoke_ns,
                outcome,
                Operation::Put {
                    key,
                    value,
                    revision,
                },
            );
            if response.is_err() {
                connection.next_member();
            }
        } else {
            let response = bounded(
                REQUEST_TIMEOUT,
                connection.kv().range(RangeRequest {
                    key: key.clone().into(),
                    ..Default::default()
                }),
            )
            .await;
            match response {
                Ok(response) => {
                    let kv = response.kvs.first();
                    record(
                        &context,
                        client,
                        invoke_ns,
                        Outcome::Ok,
                        Operation::Get {
                            key,
                            value: kv.map(|kv| text(&kv.value)),
                            mod_revision: kv.map(|kv| kv.mod_revision),
                        },
                    );
                }
                Err(_) => {
                    record(
                        &context,
                        client,
                        invoke_ns,
                        Outcome::Fail,
                        Operation::Get {
                            key,
                            value: None,
                            mod_revision: None,
                        },
                    );
                    connection.next_member();
                }
            }
        }
        pause_between_ops(&mut rng).await;
    }
}

fn compare_value(key: &str, expected: &Option<String>) -> Compare {
    match expected {
        None => Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: key.to_string().into(),
            target_union: Some(TargetUnion::CreateRevision(0)),
            ..Default::default()
        },
        Some(value) => Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: key.to_string().into(),
            target_union: Some(TargetUnion::Value(value.clone().into())),
            ..Default::default()
        },
    }
}

fn put_op(key: &str, value: &str, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key.to_string().into(),
            value: value.to_string().into(),
            lease,
            ..Default::default()
        })),
    }
}

fn range_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            key: key.to_string().into(),
            ..Default::default()
        })),
    }
}

async fn cas_client(context: Context, client: u32, group_idx: usize) {
    let mut rng = rng_for(&context, client);
    let mut connection = Connection::new(context.urls.clone(), client as usize);
    let keys: Vec<String> = ["a", "b"]
        .iter()
        .map(|suffix| format!("{PREFIX}cas/g{group_idx}/{suffix}"))
        .collect();
    let mut believed: Vec<Option<String>> = vec![None; keys.len()];
    let mut seq = 0u64;
    while context.running() {
        seq += 1;
        // Sometimes compare against a stale belief, so refusals happen too.
        let expected = if rng.random_bool(0.2) {
            vec![None; keys.len()]
        } else {
            believed.clone()
        };
        let new: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(key_idx, _)| format!("c{client}-{seq}-{key_idx}"))
            .collect();
        let request = TxnRequest {
            compare: keys
                .iter()
                .zip(&expected)
                .map(|(key, expected)| compare_value(key, expected))
                .collect(),
            success: keys
                .iter()
                .zip(&new)
                .map(|(key, value)| put_op(key, value, 0))
                .collect(),
            failure: keys.iter().map(|key| range_op(key)).collect(),
        };
        let invoke_ns = context.recorder.now_ns();
        let response = bounded(REQUEST_TIMEOUT, connection.kv().txn(request)).await;
        let mut operation = Operation::Cas {
            keys: keys.clone(),
            expected,
            new: new.clone(),
            succeeded: None,
            observed: None,
            revision: None,
        };
        let outcome = match response {
            Ok(response) => {
                let observed: Option<Vec<Option<String>>> = (!response.succeeded).then(|| {
                    response
                        .responses
                        .iter()
                        .map(|op| match &op.response {
                            Some(Response::ResponseRange(range)) => {
                                range.kvs.first().map(|kv| text(&kv.value))
                            }
                            _ => None,
                        })
                        .collect()
                });
                if let Operation::Cas {
                    succeeded,
                    observed: recorded,
                    revision,
                    ..
                } = &mut operation
                {
                    *succeeded = Some(response.succeeded);
                    *recorded = observed.clone();
                    *revision = header_revision(response.header.as_ref());
                }
                believed = match observed {
                    Some(observed) => observed,
                    None => new.into_iter().map(Some).collect(),
                };
                Outcome::Ok
            }
            Err(status) => {
                connection.next_member();
                write_outcome(&status)
            }
        };
        record(&context, client, invoke_ns, outcome, operation);
        pause_between_ops(&mut rng).await;
    }
}

/// Unique lease ids across clients and runs of one seed.
fn lease_id(context: &Context, client: u32, seq: u64) -> i64 {
    let id = ((context.seed & 0x7fff) << 40) | (u64::from(client) << 24) | (seq & 0xff_ffff);
    i64::try_from(id).unwrap_or(1).max(1)
}

async fn grant(
    context: &Context,
    connection: &mut Connection,
    client: u32,
    lease: i64,
    ttl_seconds: i64,
) -> bool {
    let invoke_ns = context.recorder.now_ns();
    let response = bounded(
        REQUEST_TIMEOUT,
        LeaseClient::new(connection.channel()).lease_grant(LeaseGrantRequest {
            ttl: ttl_seconds,
            id: lease,
        }),
    )
    .await;
    let outcome = match &response {
        Ok(_) => Outcome::Ok,
        Err(status) => {
            connection.next_member();
            write_outcome(status)
        }
    };
    record(
        context,
        client,
        invoke_ns,
        outcome,
        Operation::LeaseGrant { lease, ttl_seconds },
    );
    response.is_ok()
}

async fn revoke(context: &Context, connection: &mut Connection, client: u32, lease: i64) {
    let invoke_ns = context.recorder.now_ns();
    let response = bounded(
        REQUEST_TIMEOUT,
        LeaseClient::new(connection.channel()).lease_revoke(LeaseRevokeRequest { id: lease }),
    )
    .await;
    let outcome = match &response {
        Ok(_) => Outcome::Ok,
        Err(status) => {
            connection.next_member();
            write_outcome(status)
        }
    };
    record(
        context,
        client,
        invoke_ns,
        outcome,
        Operation::LeaseRevoke { lease },
    );
}

async fn lock_client(context: Context, client: u32) {
    let mut rng = rng_for(&context, client);
    let mut connection = Connection::new(context.urls.clone(), client as usize);
    let mut seq = 0u64;
    while context.running() {
        seq += 1;
        let lease = lease_id(&context, client, seq);
        if !grant(&context, &mut connection, client, lease, 5).await {
            pause_between_ops(&mut rng).await;
            continue;
        }
        let invoke_ns = context.recorder.now_ns();
        let response = bounded(
            LOCK_TIMEOUT,
            LockClient::new(connection.channel()).lock(LockRequest {
                name: LOCK_NAME.to_string().into(),
                lease,
            }),
        )
        .await;
        let (outcome, key, revision) = match &response {
            Ok(response) => (
                Outcome::Ok,
                Some(text(&response.key)),
                header_revision(response.header.as_ref()),
            ),
            Err(status) => (write_outcome(status), None, None),
        };
        record(
            &context,
            client,
            invoke_ns,
            outcome,
            Operation::LockAcquire {
                name: LOCK_NAME.to_string(),
                lease,
                key: key.clone(),
                revision,
            },
        );
        if let Some(owner_key) = key {
            // The fenced write: only while the owner key still exists.
            let value = format!("{owner_key} c{client}-{seq}");
            let invoke_ns = context.recorder.now_ns();
            let response = bounded(
                REQUEST_TIMEOUT,
                connection.kv().txn(TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Greater as i32,
                        target: CompareTarget::Create as i32,
                        key: owner_key.clone().into(),
                        target_union: Some(TargetUnion::CreateRevision(0)),
                        ..Default::default()
                    }],
                    success: vec![put_op(LOCK_RESOURCE, &value, 0)],
                    failure: vec![],
                }),
            )
            .await;
            let (outcome, succeeded, revision) = match &response {
                Ok(response) => (
                    Outcome::Ok,
                    Some(response.succeeded),
                    header_revision(response.header.as_ref()),
                ),
                Err(status) => (write_outcome(status), None, None),
            };
            record(
                &context,
                client,
                invoke_ns,
                outcome,
                Operation::FencedWrite {
                    owner_key: owner_key.clone(),
                    resource_key: LOCK_RESOURCE.to_string(),
                    value,
                    succeeded,
                    revision,
                },
            );
            tokio::time::sleep(Duration::from_millis(rng.random_range(10..100))).await;
            let invoke_ns = context.recorder.now_ns();
            let response = bounded(
                REQUEST_TIMEOUT,
                LockClient::new(connection.channel()).unlock(UnlockRequest {
                    key: owner_key.clone().into(),
                }),
            )
            .await;
            let outcome = match &response {
                Ok(_) => Outcome::Ok,
                Err(status) => write_outcome(status),
            };
            record(
                &context,
                client,
                invoke_ns,
                outcome,
                Operation::LockRelease { key: owner_key },
            );
        }
        if response.is_err() {
            connection.next_member();
        }
        // Revoking also releases a lock whose unlock was lost.
        revoke(&context, &mut connection, client, lease).await;
        pause_between_ops(&mut rng).await;
    }
}

/// One keep-alive on a fresh stream: the TTL answered, if any.
async fn keep_alive_once(channel: Channel, lease: i64) -> Result<i64, tonic::Status> {
    let request = tokio_stream::iter([LeaseKeepAliveRequest { id: lease }]);
    let mut client = LeaseClient::new(channel);
    let work = async {
        let mut responses = client.lease_keep_alive(request).await?.into_inner();
        match responses.next().await {
            Some(Ok(response)) => Ok(response.ttl),
            Some(Err(status)) => Err(status),
            None => Err(tonic::Status::unavailable("keep-alive stream closed")),
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("client timeout")))
}

async fn lease_client(context: Context, client: u32) {
    let mut rng = rng_for(&context, client);
    let mut connection = Connection::new(context.urls.clone(), client as usize);
    let mut seq = 0u64;
    while context.running() {
        seq += 1;
        let lease = lease_id(&context, client, seq);
        let ttl_seconds = rng.random_range(2..=4);
        if !grant(&context, &mut connection, client, lease, ttl_seconds).await {
            pause_between_ops(&mut rng).await;
            continue;
        }
        let key = format!("{PREFIX}lease/{lease:x}");
        let value = format!("c{client}-{seq}");
        let invoke_ns = context.recorder.now_ns();
        let response = bounded(
            REQUEST_TIMEOUT,
            connection.kv().put(PutRequest {
                key: key.clone().into(),
                value: value.clone().into(),
                lease,
                ..Default::default()
            }),
        )
        .await;
        let (outcome, revision) = match &response {
            Ok(response) => (Outcome::Ok, header_revision(response.header.as_ref())),
            Err(status) => {
                connection.next_member();
                (write_outcome(status), None)
            }
        };
        record(
            &context,
            client,
            invoke_ns,
            outcome,
            Operation::LeasePut {
                key,
                value,
                lease,
                revision,
            },
        );
        // 0: keep alive then revoke; 1: keep alive then let expire; 2: let expire.
        let plan = rng.random_range(0..3);
        let n_keep_alives = if plan == 2 {
            0
        } else {
            rng.random_range(1..=3)
        };
        for _ in 0..n_keep_alives {
            if !context.running() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(
                u64::try_from(ttl_seconds).unwrap_or(2) * 300,
            ))
            .await;
            let invoke_ns = context.recorder.now_ns();
            let response = keep_alive_once(connection.channel(), lease).await;
            let (outcome, ttl) = match &response {
                Ok(ttl) => (Outcome::Ok, Some(*ttl)),
                Err(status) => {
                    connection.next_member();
                    (write_outcome(status), None)
                }
            };
            record(
                &context,
                client,
                invoke_ns,
                outcome,
                Operation::LeaseKeepAlive {
                    lease,
                    ttl_seconds: ttl,
                },
            );
        }
        if plan == 0 {
            revoke(&context, &mut connection, client, lease).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
    }
}

fn convert_event(event: &proto::mvccpb::Event) -> Option<Event> {
    let kv: &KeyValue = event.kv.as_ref()?;
    Some(Event {
        kind: if event.r#type == EventType::Delete as i32 {
            EventKind::Delete
        } else {
            EventKind::Put
        },
        key: text(&kv.key),
        value: text(&kv.value),
        mod_revision: kv.mod_revision,
        create_revision: kv.create_revision,
    })
}

/// Watches the prefix from `start_revision` on `url`, handing each batch of
/// events to `deliver` until it returns false, the stream breaks, or it is
/// silent for `idle_timeout`. Returns the next revision to watch from.
pub async fn watch_prefix(
    url: &str,
    start_revision: i64,
    idle_timeout: Duration,
    mut deliver: impl FnMut(Vec<Event>) -> bool,
) -> i64 {
    let mut next_revision = start_revision;
    let Ok(channel) = channel(url) else {
        return next_revision;
    };
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: PREFIX.to_string().into(),
            range_end: PREFIX_END.to_string().into(),
            start_revision,
            ..Default::default()
        })),
    };
    if sender.send(create).await.is_err() {
        return next_revision;
    }
    let mut client = WatchClient::new(channel).max_decoding_message_size(usize::MAX);
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    let Ok(Ok(response)) = tokio::time::timeout(REQUEST_TIMEOUT, client.watch(stream)).await else {
        return next_revision;
    };
    let mut responses = response.into_inner();
    // Bounded by the idle timeout per message and by the caller's deliver().
    while let Ok(Some(Ok(message))) = tokio::time::timeout(idle_timeout, responses.next()).await {
        if message.canceled || message.compact_revision > 0 {
            break;
        }
        let events: Vec<Event> = message.events.iter().filter_map(convert_event).collect();
        if let Some(last) = events.last() {
            next_revision = last.mod_revision + 1;
        }
        if !events.is_empty() && !deliver(events) {
            break;
        }
    }
    drop(sender);
    next_revision
}

async fn watcher(context: Context, client: u32, watcher_idx: usize) {
    let watcher_id = u32::try_from(watcher_idx).unwrap_or(u32::MAX);
    let mut member_idx = watcher_idx % context.urls.len();
    let mut next_revision = 1;
    while context.running() {
        context.recorder.record(Record {
            client,
            invoke_ns: context.recorder.now_ns(),
            complete_ns: context.recorder.now_ns(),
            outcome: Outcome::Ok,
            operation: Operation::WatchStart {
                watcher: watcher_id,
                member: member_idx,
                start_revision: next_revision,
            },
        });
        let recorder = context.recorder.clone();
        let deadline = context.deadline;
        let cancelled = context.cancelled.clone();
        let url = context.urls[member_idx].clone();
        next_revision = watch_prefix(&url, next_revision, WATCH_IDLE_TIMEOUT, |events| {
            let now_ns = recorder.now_ns();
            recorder.record(Record {
                client,
                invoke_ns: now_ns,
                complete_ns: now_ns,
                outcome: Outcome::Ok,
                operation: Operation::WatchEvents {
                    watcher: watcher_id,
                    member: member_idx,
                    events,
                },
            });
            Instant::now() < deadline && !cancelled.load(Ordering::Relaxed)
        })
        .await;
        member_idx = (member_idx + 1) % context.urls.len();
        if context.running() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
