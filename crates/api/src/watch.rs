//! etcd's Watch service: one bidirectional stream carries many watchers, each
//! created and cancelled on its own, with ids chosen by the client or, from 0
//! upwards, by the server (as etcd numbers them).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use proto::etcdserverpb::watch_create_request::FilterType;
use proto::etcdserverpb::watch_request::RequestUnion;
use proto::etcdserverpb::watch_server::Watch;
use proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse};
use store::Member;
use store::watch::{WATCHER_QUEUE_LEN, WatchMessage, WatchSpec};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Responses buffered per stream before a slow client pushes back on its watchers.
const STREAM_QUEUE_LEN: usize = 1024;

pub struct WatchService {
    pub member: Arc<Member>,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (responses, receiver) = mpsc::channel(STREAM_QUEUE_LEN);
        let session = Session {
            member: self.member.clone(),
            responses,
            watchers: HashMap::new(),
            next_watch_id: 0,
        };
        tokio::spawn(session.run(request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// One client stream and its watchers.
struct Session {
    member: Arc<Member>,
    responses: mpsc::Sender<Result<WatchResponse, Status>>,
    /// Client-visible watch id -> hub id.
    watchers: HashMap<i64, u64>,
    next_watch_id: i64,
}

impl Session {
    async fn run(mut self, mut requests: Streaming<WatchRequest>) {
        loop {
            let request = match requests.message().await {
                Ok(Some(request)) => request,
                Ok(None) | Err(_) => break,
            };
            let keep_going = match request.request_union {
                Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
                Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id).await,
                Some(RequestUnion::ProgressRequest(_)) => {
                    // etcd answers with the current revision, addressed to no watcher.
                    let response = WatchResponse {
                        header: Some(self.member.current_header()),
                        watch_id: -1,
                        ..Default::default()
                    };
                    self.responses.send(Ok(response)).await.is_ok()
                }
                None => true,
            };
            if !keep_going {
                break;
            }
        }
        let hub = self.member.watch_hub();
        for hub_id in self.watchers.values() {
            hub.cancel(*hub_id);
        }
    }

    async fn create(&mut self, create: WatchCreateRequest) -> bool {
        let watch_id = if create.watch_id != 0 {
            create.watch_id
        } else {
            while self.watchers.contains_key(&self.next_watch_id) {
                self.next_watch_id += 1;
            }
            let id = self.next_watch_id;
            self.next_watch_id += 1;
            id
        };
        if self.watchers.contains_key(&watch_id) {
            // etcd answers with watch id -1: no watcher was created.
            let response = WatchResponse {
                header: Some(self.member.current_header()),
                watch_id: -1,
                created: true,
                canceled: true,
                cancel_reason: "mvcc: duplicate watch ID provided on the WatchStream".into(),
                ..Default::default()
            };
            return self.responses.send(Ok(response)).await.is_ok();
        }
        let spec = WatchSpec {
            key: create.key,
            range_end: create.range_end,
            start_revision: create.start_revision,
            prev_kv: create.prev_kv,
            no_put: create.filters.contains(&(FilterType::Noput as i32)),
            no_delete: create.filters.contains(&(FilterType::Nodelete as i32)),
        };
        let (sender, mut messages) = mpsc::channel(WATCHER_QUEUE_LEN);
        let (hub_id, revision) = self.member.watch_hub().watch(spec, sender);
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
        let fragment = create.fragment;
        // etcd fragments above the request limit plus the gRPC overhead it allows.
        let max_bytes = usize::try_from(self.member.max_request_bytes())
            .unwrap_or(usize::MAX)
            .saturating_add(crate::GRPC_OVERHEAD_BYTES);
        self.watchers.insert(watch_id, hub_id);
        // The created response goes out before any event of this watcher.
        let created = WatchResponse {
            header: Some(self.member.header(revision)),
            watch_id,
            created: true,
            ..Default::default()
        };
        if self.responses.send(Ok(created)).await.is_err() {
            return false;
        }
        let responses = self.responses.clone();
        let member = self.member.clone();
        tokio::spawn(async move {
            while let Some(message) = messages.recv().await {
                let response = match message {
                    WatchMessage::Events { revision, events } => {
                        let response = WatchResponse {
                            header: Some(member.header(revision)),
                            watch_id,
                            events,
                            ..Default::default()
                        };
                        if fragment && prost::Message::encoded_len(&response) > max_bytes {
                            if !send_fragments(&responses, response, max_bytes).await {
                                break;
                            }
                            continue;
                        }
                        response
                    }
                    WatchMessage::Progress { revision } => WatchResponse {
                        header: Some(member.header(revision)),
                        watch_id,
                        ..Default::default()
                    },
                    // etcd's compacted cancel carries no revision in its header.
                    WatchMessage::Compacted { compact_revision } => WatchResponse {
                        header: Some(ResponseHeader {
                            revision: 0,
                            ..member.current_header()
                        }),
                        watch_id,
                        canceled: true,
                        compact_revision,
                        cancel_reason: "mvcc: required revision has been compacted".into(),
                        ..Default::default()
                    },
                };
                if responses.send(Ok(response)).await.is_err() {
                    break;
                }
            }
        });
        true
    }

    async fn cancel(&mut self, watch_id: i64) -> bool {
        let Some(hub_id) = self.watchers.remove(&watch_id) else {
            return true;
        };
        self.member.watch_hub().cancel(hub_id);
        let response = WatchResponse {
            header: Some(self.member.current_header()),
            watch_id,
            canceled: true,
            ..Default::default()
        };
        self.responses.send(Ok(response)).await.is_ok()
    }
}

/// Splits a response too large for one message into fragments of at most
/// `max_bytes` (at least one event each), all but the last marked `fragment`, as
/// etcd does for watchers that asked for it. Returns false if the stream is gone.
async fn send_fragments(
    responses: &mpsc::Sender<Result<WatchResponse, Status>>,
    response: WatchResponse,
    max_bytes: usize,
) -> bool {
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
        let fragment = WatchResponse {
            header,
            watch_id,
            events,
            fragment: position + 1 < n_chunks,
            ..Default::default()
        };
        if responses.send(Ok(fragment)).await.is_err() {
            return false;
        }
    }
    true
}
