//! Member-to-member messages. Raft's messages go over plain TCP streams
//! (`raft_stream`), one per peer, written and read by threads of their own.
//! The peer URL also serves a gRPC `Peer` service, on the same port: one call
//! per snapshot (raft needs each snapshot's outcome), a probe of each peer
//! every second (whether it is reachable, for the strict reconfiguration
//! check), lease calls forwarded to the leader, and the member list for a
//! joining member.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::inbox::Sender;
use proto::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, ResponseHeader,
};
use proto::shoalpb::peer_client::PeerClient;
use proto::shoalpb::peer_server::{Peer, PeerServer};
use proto::shoalpb::{MembersRequest, RaftAck, RaftBatch};
use protobuf::Message as _;
use raft::SnapshotStatus;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

use crate::error::StoreError;
use crate::node::NodeInput;
use crate::raft_stream;
use crate::state_machine::StateMachine;

/// Messages waiting for one peer beyond this are dropped: raft retransmits, and a
/// peer that is down must not make us hold an unbounded backlog.
const PEER_QUEUE_LEN: usize = 8192;
const MAX_MESSAGES_PER_BATCH: usize = 4096;

/// Receives raft messages from other members and hands them to the raft loop,
/// and answers lease calls other members forward to the leader.
/// What the peer service needs of its member.
pub struct PeerContext {
    pub inbox: Sender<NodeInput>,
    pub state_machine: Arc<StateMachine>,
    pub member_id: u64,
    pub status: Arc<crate::node::NodeStatus>,
    /// How long a forwarded renewal may wait for the leader to catch up.
    pub patience: Duration,
}

/// Resolves when the peer server stops.
type Stopping = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

struct PeerService {
    inbox: Sender<NodeInput>,
    state_machine: Arc<StateMachine>,
    member_id: u64,
    status: Arc<crate::node::NodeStatus>,
    patience: Duration,
}

/// A client for calling the leader's peer service.
pub type LeaderClient = PeerClient<tonic::transport::Channel>;

/// A lazily connecting client for a member's peer URL.
pub fn leader_client(url: &str) -> Result<LeaderClient, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    Ok(PeerClient::new(endpoint.connect_lazy()))
}

fn not_leader() -> tonic::Status {
    tonic::Status::unavailable("etcdserver: not leader")
}

/// Hands a batch's messages to the raft loop.
fn deliver(inbox: &Sender<NodeInput>, batch: RaftBatch) -> Result<(), tonic::Status> {
    for bytes in batch.messages {
        let message = Message::parse_from_bytes(&bytes).map_err(|error| {
            tonic::Status::invalid_argument(format!("undecodable raft message: {error}"))
        })?;
        inbox
            .send(NodeInput::Raft(message))
            .map_err(|_| tonic::Status::unavailable("etcdserver: server stopped"))?;
    }
    Ok(())
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn send(
        &self,
        request: tonic::Request<RaftBatch>,
    ) -> Result<tonic::Response<RaftAck>, tonic::Status> {
        deliver(&self.inbox, request.into_inner())?;
        Ok(tonic::Response::new(RaftAck {}))
    }

    async fn lease_renew(
        &self,
        request: tonic::Request<LeaseKeepAliveRequest>,
    ) -> Result<tonic::Response<LeaseKeepAliveResponse>, tonic::Status> {
        let id = request.into_inner().id;
        let renewed = crate::node::renew_as_leader(
            &self.state_machine,
            &self.status,
            &self.inbox,
            id,
            self.patience,
        )
        .await;
        let ttl = match renewed {
            Ok(ttl) => ttl,
            Err(StoreError::NotLeader) => return Err(not_leader()),
            Err(_) => {
                return Err(tonic::Status::deadline_exceeded(
                    "etcdserver: request timed out",
                ));
            }
        };
        // TTL 0 tells the caller the lease does not exist, as etcd's keep-alive does.
        Ok(tonic::Response::new(LeaseKeepAliveResponse {
            header: None,
            id,
            ttl: ttl.unwrap_or(0),
        }))
    }

    async fn lease_time_to_live(
        &self,
        request: tonic::Request<LeaseTimeToLiveRequest>,
    ) -> Result<tonic::Response<LeaseTimeToLiveResponse>, tonic::Status> {
        let request = request.into_inner();
        let lessor = &self.state_machine.lessor;
        if !lessor.is_primary() {
            return Err(not_leader());
        }
        let response = match lessor.time_to_live(request.id, request.keys) {
            Some(found) => LeaseTimeToLiveResponse {
                header: None,
                id: request.id,
                ttl: found.remaining_seconds,
                granted_ttl: found.granted_seconds,
                keys: found.keys,
            },
            None => LeaseTimeToLiveResponse {
                header: None,
                id: request.id,
                ttl: -1,
                ..Default::default()
            },
        };
        Ok(tonic::Response::new(response))
    }

    async fn members(
        &self,
        _request: tonic::Request<MembersRequest>,
    ) -> Result<tonic::Response<MemberListResponse>, tonic::Status> {
        Ok(tonic::Response::new(MemberListResponse {
            header: Some(ResponseHeader {
                cluster_id: self.state_machine.cluster_id(),
                member_id: self.member_id,
                ..Default::default()
            }),
            members: self.state_machine.members(),
        }))
    }

    async fn member_promote(
        &self,
        request: tonic::Request<MemberPromoteRequest>,
    ) -> Result<tonic::Response<MemberPromoteResponse>, tonic::Status> {
        let member_id = request.into_inner().id;
        match crate::promote_on_leader(&self.inbox, self.member_id, member_id).await {
            Ok(members) => Ok(tonic::Response::new(MemberPromoteResponse {
                header: None,
                members,
            })),
            Err(StoreError::NotLeader) => Err(not_leader()),
            // The caller turns the message back into the error.
            Err(error) => Err(tonic::Status::failed_precondition(error.to_string())),
        }
    }
}

/// Asks a member of a running cluster for its member list (used when joining).
pub async fn fetch_members(url: &str) -> Result<MemberListResponse, String> {
    let mut client = leader_client(url).map_err(|error| error.to_string())?;
    client
        .members(MembersRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| status.message().to_string())
}

/// Serves the peer protocol on an already-bound listener until `shutdown`
/// resolves: raft streams on threads of their own, everything else through
/// the gRPC server.
pub async fn serve_peers(
    listener: tokio::net::TcpListener,
    context: PeerContext,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let stopping: Stopping = futures::FutureExt::shared(futures::FutureExt::boxed(shutdown));
    let stopped = Arc::new(AtomicBool::new(false));
    let (grpc_connections, incoming) = mpsc::channel(64);
    let accept = tokio::spawn(accept_peers(
        listener,
        grpc_connections,
        context.status.metrics.peer.received_bytes.clone(),
        context.inbox.clone(),
        stopped.clone(),
        stopping.clone(),
    ));
    let service = PeerServer::new(PeerService {
        inbox: context.inbox,
        state_machine: context.state_machine,
        member_id: context.member_id,
        status: context.status,
        patience: context.patience,
    })
    .max_decoding_message_size(usize::MAX)
    .max_encoding_message_size(usize::MAX);
    let served = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(incoming),
            stopping,
        )
        .await;
    stopped.store(true, Ordering::Relaxed);
    accept.abort();
    served
}

/// How long an accepted connection may take to send its first byte.
const FIRST_BYTE_PATIENCE: Duration = Duration::from_secs(10);

/// Accepts peer connections and tells raft streams (by their first byte)
/// from gRPC connections.
async fn accept_peers(
    listener: tokio::net::TcpListener,
    grpc_connections: mpsc::Sender<std::io::Result<tokio::net::TcpStream>>,
    received_bytes: crate::raft_stream::ReceivedBytes,
    inbox: Sender<NodeInput>,
    stopped: Arc<AtomicBool>,
    stopping: Stopping,
) {
    let readers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping.clone() => {
                stopped.store(true, Ordering::Relaxed);
                return;
            }
        };
        let socket = match accepted {
            Ok((socket, _)) => socket,
            Err(error) => {
                tracing::warn!(%error, "cannot accept a peer connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Without this, Nagle's algorithm delays small messages.
        let _ = socket.set_nodelay(true);
        let grpc_connections = grpc_connections.clone();
        let inbox = inbox.clone();
        let stopped = stopped.clone();
        let readers = readers.clone();
        let received_bytes = received_bytes.clone();
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            match tokio::time::timeout(FIRST_BYTE_PATIENCE, socket.peek(&mut first)).await {
                Ok(Ok(1)) if first[0] == raft_stream::MAGIC[0] => {
                    match socket.into_std().and_then(|socket| {
                        socket.set_nonblocking(false)?;
                        Ok(socket)
                    }) {
                        Ok(socket) => raft_stream::spawn_reader(
                            socket,
                            inbox,
                            stopped,
                            readers,
                            Some(received_bytes),
                        ),
                        Err(error) => tracing::warn!(%error, "cannot read a raft stream"),
                    }
                }
                Ok(Ok(1)) => {
                    let _ = grpc_connections.send(Ok(socket)).await;
                }
                // Closed, failed or silent before its first byte.
                _ => {}
            }
        });
    }
}

/// Since when each peer has been reachable without interruption, as this
/// member's senders see it (etcd's "active since"): the strict reconfiguration
/// check counts on it. Senders probe an idle peer every second, so the record
/// is kept for every peer, whichever member leads.
pub type PeerActivity = Arc<parking_lot::Mutex<std::collections::HashMap<u64, std::time::Instant>>>;

/// How long a sender waits for messages before it probes its peer.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The raft loop's handle on one peer: its raft stream, and a bounded queue
/// to the task that sends snapshots and probes.
pub struct PeerSender {
    queue: mpsc::Sender<Message>,
    stream: Option<raft_stream::Outbox>,
}

impl PeerSender {
    /// Starts the sender task and the stream's thread for `peer_id` at `urls`
    /// (the first URL is used).
    pub fn start(
        runtime: &tokio::runtime::Handle,
        peer_id: u64,
        urls: Vec<String>,
        feedback: Sender<NodeInput>,
        activity: PeerActivity,
        metrics: Option<crate::metrics::PeerMetrics>,
    ) -> PeerSender {
        let to = crate::metrics::PeerMetrics::to(peer_id);
        let sent_bytes = metrics
            .as_ref()
            .map(|metrics| metrics.sent_bytes.get_or_create_owned(&to));
        let round_trip_time = metrics
            .as_ref()
            .map(|metrics| metrics.round_trip_time.get_or_create_owned(&to));
        let sent_failures = metrics
            .as_ref()
            .map(|metrics| metrics.sent_failures.get_or_create_owned(&to));
        let stream = urls.first().and_then(|url| {
            raft_stream::Outbox::start(peer_id, url, feedback.clone(), sent_bytes)
                .inspect_err(|error| {
                    tracing::error!(peer = %format!("{peer_id:x}"), %error, "cannot start a raft stream");
                })
                .ok()
        });
        let (queue, receiver) = mpsc::channel(PEER_QUEUE_LEN);
        runtime.spawn(run_sender(
            peer_id,
            urls,
            receiver,
            feedback,
            activity,
            round_trip_time,
            sent_failures,
        ));
        PeerSender { queue, stream }
    }

    /// Queues a message; if the peer's queue is full the message is dropped and
    /// raft is told the peer is unreachable, so it slows down and retries.
    pub fn send(&mut self, message: Message) -> bool {
        match &mut self.stream {
            Some(stream) if message.get_msg_type() != MessageType::MsgSnapshot => {
                stream.send(&message)
            }
            _ => self.queue.try_send(message).is_ok(),
        }
    }

    /// Writes the messages queued on the raft stream.
    pub fn flush(&mut self) {
        if let Some(stream) = &mut self.stream {
            stream.flush();
        }
    }
}

/// The raft loop's network in a running member: a sender task per peer.
pub struct PeerNetwork {
    peers: HashMap<u64, PeerSender>,
    runtime: tokio::runtime::Handle,
    /// The loop's own inbox, where senders report unreachable peers and
    /// finished snapshots.
    feedback: Sender<NodeInput>,
    activity: PeerActivity,
    metrics: Option<crate::metrics::PeerMetrics>,
}

impl PeerNetwork {
    /// Counts traffic and round trips per peer in `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::PeerMetrics) -> PeerNetwork {
        self.metrics = Some(metrics);
        self
    }

    pub fn new(
        runtime: tokio::runtime::Handle,
        feedback: Sender<NodeInput>,
        activity: PeerActivity,
    ) -> PeerNetwork {
        PeerNetwork {
            peers: HashMap::new(),
            runtime,
            feedback,
            activity,
            metrics: None,
        }
    }
}

impl crate::node::Network for PeerNetwork {
    fn send(&mut self, message: Message) -> bool {
        self.peers
            .get_mut(&message.to)
            .is_some_and(|peer| peer.send(message))
    }

    fn flush(&mut self) {
        for peer in self.peers.values_mut() {
            peer.flush();
        }
    }

    fn connect(&mut self, member_id: u64, peer_urls: &[String]) {
        let sender = PeerSender::start(
            &self.runtime,
            member_id,
            peer_urls.to_vec(),
            self.feedback.clone(),
            self.activity.clone(),
            self.metrics.clone(),
        );
        self.peers.insert(member_id, sender);
    }

    fn disconnect(&mut self, member_id: u64) {
        self.peers.remove(&member_id);
    }

    fn is_connected(&self, member_id: u64) -> bool {
        self.peers.contains_key(&member_id)
    }
}

async fn run_sender(
    peer_id: u64,
    urls: Vec<String>,
    mut receiver: mpsc::Receiver<Message>,
    feedback: Sender<NodeInput>,
    activity: PeerActivity,
    round_trip_time: Option<metrics::Histogram>,
    sent_failures: Option<metrics::Counter>,
) {
    let Some(url) = urls.first() else {
        tracing::error!(peer = %format!("{peer_id:x}"), "peer has no URL; its messages are dropped");
        return;
    };
    let endpoint = match Endpoint::from_shared(url.clone()) {
        Ok(endpoint) => endpoint
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10)),
        Err(error) => {
            tracing::error!(peer = %format!("{peer_id:x}"), %url, %error, "invalid peer URL");
            return;
        }
    };
    let mut client = PeerClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let mut peer_was_down = false;
    loop {
        let first = match tokio::time::timeout(PROBE_INTERVAL, receiver.recv()).await {
            Ok(Some(message)) => Some(message),
            Ok(None) => break,
            // Idle: an empty call tells us whether the peer is still there.
            Err(_) => None,
        };
        let mut batch: Vec<Message> = first.into_iter().collect();
        while !batch.is_empty() && batch.len() < MAX_MESSAGES_PER_BATCH {
            match receiver.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        // Snapshots (and anything sent while the raft stream could not start)
        // go by a call whose outcome raft needs; an empty call is a probe.
        let snapshots = batch
            .iter()
            .filter(|message| message.get_msg_type() == MessageType::MsgSnapshot)
            .count();
        let deadline = if snapshots > 0 {
            Duration::from_secs(120)
        } else {
            Duration::from_secs(5)
        };
        let encoded = RaftBatch {
            messages: batch
                .iter()
                .map(|message| {
                    message
                        .write_to_bytes()
                        .expect("encoding a raft message")
                        .into()
                })
                .collect(),
        };
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(deadline, client.send(encoded)).await;
        let delivered = matches!(outcome, Ok(Ok(_)));
        // The once-a-second probe is a round trip to the peer (etcd's prober
        // measures the same); failed sends are its `sent_failures`.
        if delivered && batch.is_empty() {
            if let Some(round_trip_time) = &round_trip_time {
                round_trip_time.observe_duration(started.elapsed());
            }
        } else if !delivered && let Some(sent_failures) = &sent_failures {
            sent_failures.inc();
        }
        if delivered {
            activity
                .lock()
                .entry(peer_id)
                .or_insert_with(std::time::Instant::now);
        } else {
            activity.lock().remove(&peer_id);
        }
        let status = if delivered {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        for _ in 0..snapshots {
            let _ = feedback.send(NodeInput::SnapshotStatus(peer_id, status));
        }
        if delivered {
            if peer_was_down {
                tracing::info!(peer = %format!("{peer_id:x}"), %url, "peer reachable again");
                peer_was_down = false;
            }
            continue;
        }
        if batch.is_empty() && peer_was_down {
            // Still down; no need to say so again, or to tell raft about a probe.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        if !peer_was_down {
            let reason = match outcome {
                Ok(Err(status)) => status.message().to_string(),
                _ => "timed out".to_string(),
            };
            tracing::warn!(peer = %format!("{peer_id:x}"), %url, %reason, "peer unreachable");
            peer_was_down = true;
        }
        let _ = feedback.send(NodeInput::Unreachable(peer_id));
        // What queued up while the peer was down is stale; raft will resend what matters.
        while receiver.try_recv().is_ok() {}
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The host (an IPv6 address in brackets) and port of a peer URL: where a
/// member listens, and so where the others dial it.
pub fn host_and_port(url: &url::Url) -> (&str, u16) {
    (
        url.host_str().unwrap_or("127.0.0.1"),
        url.port_or_known_default().unwrap_or(2380),
    )
}

/// Binds a listener for a peer URL, for a clear error before anything starts.
pub async fn bind(url: &url::Url) -> std::io::Result<tokio::net::TcpListener> {
    let (host, port) = host_and_port(url);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let address: SocketAddr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{host} did not resolve")))?,
    };
    tokio::net::TcpListener::bind(address).await
}
