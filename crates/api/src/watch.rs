//! etcd's Watch service: one bidirectional stream carries many watchers, each
//! created and cancelled on its own, with ids chosen by the client or, from 0
//! upwards, by the server (as etcd numbers them).
//!
//! A `Session` is one stream's state, apart from any transport: it turns the
//! client's requests and the hub's deliveries into responses. Its watchers
//! share one queue (as etcd's watchers of a stream share one channel), so a
//! stream costs one task to wake per delivery, however many watchers it has.
//! The gRPC server drives sessions on its connections (`grpc_watch`); the
//! HTTP gateway drives them through `WatchService`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use proto::etcdserverpb::watch_create_request::FilterType;
use proto::etcdserverpb::watch_request::RequestUnion;
use proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse};
use store::Member;
use store::watch::{Delivery, WatchMessage, WatchQueue, WatchReceiver, WatchSpec};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Responses buffered per stream before a slow client pushes back on its watchers.
const STREAM_QUEUE_LEN: usize = 1024;
/// The largest response that consecutive deliveries of one watcher are
/// joined into (far below the size at which responses are fragmented).
const COALESCE_BYTES: usize = 64 * 1024;
const _: () = assert!(COALESCE_BYTES < crate::GRPC_OVERHEAD_BYTES);

/// The Watch service as a tonic service, for the HTTP gateway.
pub struct WatchService {
    pub member: Arc<Member>,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

impl WatchService {
    pub async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let (responses, receiver) = mpsc::channel(STREAM_QUEUE_LEN);
        let mut session = Session::new(self.member.clone(), WatchQueue::new_group());
        session.credentials = crate::auth::Credentials::of(&request);
        tokio::spawn(run(session, request.into_inner(), responses));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// Drives a session from a tonic request stream until the client's requests
/// end or its responses are no longer read.
async fn run(
    mut session: Session,
    mut requests: Streaming<WatchRequest>,
    responses: mpsc::Sender<Result<WatchResponse, Status>>,
) {
    let mut out = Vec::new();
    loop {
        tokio::select! {
            request = requests.message() => match request {
                Ok(Some(request)) => session.handle(request, &mut out),
                Ok(None) | Err(_) => break,
            },
            _ = std::future::poll_fn(|context| {
                session.poll_deliveries(context, &mut out, 64, COALESCE_BYTES)
            }) => {}
        }
        for response in out.drain(..) {
            if responses.send(Ok(response)).await.is_err() {
                return;
            }
        }
    }
}

/// What the session knows of one of its watchers.
struct Watcher {
    watch_id: i64,
    /// Split responses over the size limit into fragments.
    fragment: bool,
}

/// One client stream and its watchers; the watchers are cancelled when it is
/// dropped.
pub(crate) struct Session {
    member: Arc<Member>,
    queue: WatchQueue,
    deliveries: WatchReceiver,
    /// Hub id -> the watcher.
    watchers: HashMap<u64, Watcher>,
    /// Client-visible watch id -> hub id.
    watch_ids: HashMap<i64, u64>,
    next_watch_id: i64,
    /// The size above which a fragmenting watcher's response is split.
    max_bytes: usize,
    /// While deliveries are taken: watcher -> the index in `out` of its
    /// events response still open to more events, and its size so far.
    open_responses: HashMap<u64, (usize, usize)>,
    /// Who opened the stream: each watch it creates needs read permission.
    pub(crate) credentials: crate::auth::Credentials,
}

impl Session {
    /// A session whose watchers deliver into a queue of `group` (one per
    /// client connection, `WatchQueue::in_group`).
    pub(crate) fn new(member: Arc<Member>, group: u64) -> Session {
        let (queue, deliveries) = WatchQueue::in_group(group);
        // etcd fragments above the request limit plus the gRPC overhead it allows.
        let max_bytes = usize::try_from(member.max_request_bytes())
            .unwrap_or(usize::MAX)
            .saturating_add(crate::GRPC_OVERHEAD_BYTES);
        Session {
            member,
            queue,
            deliveries,
            watchers: HashMap::new(),
            watch_ids: HashMap::new(),
            next_watch_id: 0,
            max_bytes,
            open_responses: HashMap::new(),
            credentials: crate::auth::Credentials::default(),
        }
    }

    /// Handles one request of the client, adding its answers to `out`.
    pub(crate) fn handle(&mut self, request: WatchRequest, out: &mut Vec<WatchResponse>) {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create, out),
            Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id, out),
            Some(RequestUnion::ProgressRequest(_)) => {
                // etcd answers with the current revision, addressed to no watcher.
                out.push(WatchResponse {
                    header: Some(self.member.current_header()),
                    watch_id: -1,
                    ..Default::default()
                });
            }
            None => {}
        }
    }

    /// Takes the deliveries of the session's watchers that are ready, at
    /// most `max`, and stops once what they made reaches about `max_bytes`
    /// encoded; adds what they make to `out` (nothing for a watcher
    /// cancelled meanwhile) and returns how many it took, Pending if none.
    /// The events of one watcher taken in one call go out in one response
    /// (as etcd sends a catching-up watcher's events), up to
    /// `COALESCE_BYTES`: a watcher's messages stay in their order, while
    /// another watcher's may now come before or after them (etcd orders
    /// events per watcher only).
    pub(crate) fn poll_deliveries(
        &mut self,
        context: &mut Context<'_>,
        out: &mut Vec<WatchResponse>,
        max: usize,
        max_bytes: usize,
    ) -> Poll<usize> {
        debug_assert!(max > 0, "a call taking nothing registers no waker");
        let mut open = std::mem::take(&mut self.open_responses);
        open.clear();
        let mut taken = 0;
        let mut made_bytes = 0;
        while taken < max && made_bytes < max_bytes {
            // The session holds a sender of its own queue: it never closes.
            let Poll::Ready(Some(delivery)) = self.deliveries.poll_recv(context) else {
                break;
            };
            taken += 1;
            let Delivery {
                watcher,
                mut message,
                ..
            } = delivery;
            if let WatchMessage::Events { revision, events } = &mut message
                && let Some((index, bytes)) = open.get_mut(&watcher)
            {
                let added: usize = events.iter().map(prost::Message::encoded_len).sum();
                if *bytes + added <= COALESCE_BYTES {
                    let response = &mut out[*index];
                    response.header = Some(self.member.header(*revision));
                    response.events.append(events);
                    *bytes += added;
                    made_bytes += added;
                    continue;
                }
            }
            let is_events = matches!(message, WatchMessage::Events { .. });
            let before = out.len();
            self.deliver(watcher, message, out);
            // Only a single plain events response stays open: a progress
            // notification, a cancel or fragments end what may join it.
            let made: usize = out[before..].iter().map(prost::Message::encoded_len).sum();
            made_bytes += made;
            if is_events && out.len() == before + 1 && !out[before].fragment {
                open.insert(watcher, (before, made));
            } else {
                open.remove(&watcher);
            }
        }
        self.open_responses = open;
        if taken == 0 {
            Poll::Pending
        } else {
            Poll::Ready(taken)
        }
    }

    fn create(&mut self, create: WatchCreateRequest, out: &mut Vec<WatchResponse>) {
        if let Err(error) = self.watch_permitted(&create) {
            // etcd answers with watch id -1 and the gRPC error's text.
            let status = crate::auth::auth_status(error);
            out.push(WatchResponse {
                header: Some(self.member.current_header()),
                watch_id: -1,
                created: true,
                canceled: true,
                cancel_reason: format!(
                    "rpc error: code = {} desc = {}",
                    go_code_name(status.code()),
                    status.message()
                ),
                ..Default::default()
            });
            return;
        }
        let watch_id = if create.watch_id != 0 {
            create.watch_id
        } else {
            while self.watch_ids.contains_key(&self.next_watch_id) {
                self.next_watch_id += 1;
            }
            let id = self.next_watch_id;
            self.next_watch_id += 1;
            id
        };
        if self.watch_ids.contains_key(&watch_id) {
            // etcd answers with watch id -1: no watcher was created.
            out.push(WatchResponse {
                header: Some(self.member.current_header()),
                watch_id: -1,
                created: true,
                canceled: true,
                cancel_reason: "mvcc: duplicate watch ID provided on the WatchStream".into(),
                ..Default::default()
            });
            return;
        }
        let spec = WatchSpec {
            key: create.key,
            range_end: create.range_end,
            start_revision: create.start_revision,
            prev_kv: create.prev_kv,
            no_put: create.filters.contains(&(FilterType::Noput as i32)),
            no_delete: create.filters.contains(&(FilterType::Nodelete as i32)),
        };
        let (hub_id, revision) = self.member.watch_hub().watch(spec, &self.queue);
        if create.progress_notify {
            let member = self.member.clone();
            let interval = member.config().watch_progress_notify_interval;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    if member.watch_hub().progress(hub_id) {
                        continue;
                    }
                    if !member.watch_hub().exists(hub_id) {
                        return;
                    }
                }
            });
        }
        self.watch_ids.insert(watch_id, hub_id);
        self.watchers.insert(
            hub_id,
            Watcher {
                watch_id,
                fragment: create.fragment,
            },
        );
        // The created response goes out before any event of this watcher:
        // its deliveries are taken from the queue after `out` is sent.
        out.push(WatchResponse {
            header: Some(self.member.header(revision)),
            watch_id,
            created: true,
            ..Default::default()
        });
    }

    /// etcd's isWatchPermitted: read permission on the watched range.
    fn watch_permitted(&self, create: &WatchCreateRequest) -> Result<(), store::auth::AuthError> {
        if !self.member.auth().is_enabled() && self.credentials.is_empty() {
            return Ok(());
        }
        let caller = self.credentials.caller_now(&self.member)?;
        self.member.auth().check(
            &caller,
            &create.key,
            &create.range_end,
            store::auth::Access::Read,
        )
    }

    fn cancel(&mut self, watch_id: i64, out: &mut Vec<WatchResponse>) {
        let Some(hub_id) = self.watch_ids.remove(&watch_id) else {
            return;
        };
        self.watchers.remove(&hub_id);
        self.member.watch_hub().cancel(hub_id);
        out.push(WatchResponse {
            header: Some(self.member.current_header()),
            watch_id,
            canceled: true,
            ..Default::default()
        });
    }

    /// Turns a message for hub watcher `hub_id` into responses in `out`.
    fn deliver(&mut self, hub_id: u64, message: WatchMessage, out: &mut Vec<WatchResponse>) {
        let Some(watcher) = self.watchers.get(&hub_id) else {
            return;
        };
        let watch_id = watcher.watch_id;
        match message {
            WatchMessage::Events { revision, events } => {
                let response = WatchResponse {
                    header: Some(self.member.header(revision)),
                    watch_id,
                    events,
                    ..Default::default()
                };
                if watcher.fragment && prost::Message::encoded_len(&response) > self.max_bytes {
                    fragments(response, self.max_bytes, out);
                } else {
                    out.push(response);
                }
            }
            WatchMessage::Progress { revision } => out.push(WatchResponse {
                header: Some(self.member.header(revision)),
                watch_id,
                ..Default::default()
            }),
            // The hub has removed the watcher. etcd's compacted cancel
            // carries no revision in its header.
            WatchMessage::Compacted { compact_revision } => {
                self.watchers.remove(&hub_id);
                self.watch_ids.remove(&watch_id);
                out.push(WatchResponse {
                    header: Some(ResponseHeader {
                        revision: 0,
                        ..self.member.current_header()
                    }),
                    watch_id,
                    canceled: true,
                    compact_revision,
                    cancel_reason: "mvcc: required revision has been compacted".into(),
                    ..Default::default()
                });
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let hub = self.member.watch_hub();
        for hub_id in self.watchers.keys() {
            hub.cancel(*hub_id);
        }
    }
}

/// Splits a response too large for one message into fragments of at most
/// `max_bytes` (at least one event each), all but the last marked `fragment`,
/// as etcd does for watchers that asked for it.
fn fragments(response: WatchResponse, max_bytes: usize, out: &mut Vec<WatchResponse>) {
    let WatchResponse {
        header,
        watch_id,
        events,
        ..
    } = response;
    let mut chunks: Vec<Vec<proto::mvccpb::Event>> = vec![Vec::new()];
    let mut chunk_bytes = 0;
    for event in events {
        let event_bytes = prost::Message::encoded_len(&event) + 8;
        let current = chunks.last_mut().expect("never empty");
        if !current.is_empty() && chunk_bytes + event_bytes > max_bytes {
            chunks.push(Vec::new());
            chunk_bytes = 0;
        }
        chunk_bytes += event_bytes;
        chunks.last_mut().expect("never empty").push(event);
    }
    let n_chunks = chunks.len();
    for (position, events) in chunks.into_iter().enumerate() {
        out.push(WatchResponse {
            header,
            watch_id,
            events,
            fragment: position + 1 < n_chunks,
            ..Default::default()
        });
    }
}

/// Go's name of a gRPC code, as etcd's error texts print it.
fn go_code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::Unauthenticated => "Unauthenticated",
        tonic::Code::InvalidArgument => "InvalidArgument",
        tonic::Code::FailedPrecondition => "FailedPrecondition",
        _ => "Unknown",
    }
}
