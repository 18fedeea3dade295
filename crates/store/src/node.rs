//! The raft loop: one thread that owns raft-rs' `RawNode`, feeds it ticks,
//! proposals and peer messages, and handles each `Ready` — send, persist, apply —
//! with one redb write transaction and one fsync per batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::inbox::{Receiver, RecvTimeoutError, Sender};
use prost::Message as _;
use proto::etcdserverpb::Member;
use proto::shoalpb::{ConfChangeContext, RaftRequest};
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, Message, MessageType};
use raft::{RawNode, SnapshotStatus};
use redb::{Durability, WriteTransaction};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::error::StoreError;
use crate::raft_log::RaftLog;
use crate::state_machine::{ApplyResult, StateMachine};
use crate::watch::WatchHub;

/// raft-rs' settings for a member (and for the simulation's): one tick a
/// heartbeat, pre-vote and check-quorum as etcd runs them.
///
/// raft-rs' own `batch_append` stays off: it appends entries to an earlier
/// append for the same peer without checking that they follow that
/// message's previous index when the message is empty, so a resend after a
/// rejection could go out as `index 195, entries 194..195`, and the follower
/// then acknowledged index 197 of a log that ended at 195 (the simulation
/// found it, seed 70016). `coalesce_appends` does the merging instead.
pub fn raft_config(id: u64, election_tick: usize, applied: u64) -> raft::Config {
    raft::Config {
        id,
        election_tick,
        heartbeat_tick: 1,
        applied,
        max_size_per_msg: MAX_APPEND_BYTES,
        max_inflight_msgs: 512,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    }
}

/// The most entry bytes raft puts in one append, and `coalesce_appends`.
const MAX_APPEND_BYTES: u64 = 1024 * 1024;

/// Merges each append into the one before it for the same peer when it
/// continues that one: same term, its previous index and term are those of
/// the earlier one's last entry (or of its previous entry, when it has
/// none). The follower then does at once what the two would have made it
/// do in turn, and answers once; the answer to the first is as if lost,
/// which raft tolerates. Nothing is merged across another kind of message
/// to the same peer, so each peer still sees its messages in order.
///
/// raft-rs makes an append for every proposal stepped and for every
/// advance of the commit index, so at 64 clients a follower took about
/// two messages per put (39 a round) and answered each (BENCHMARKS.md).
pub fn coalesce_appends(messages: Vec<Message>) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    // The entry bytes of each message in `out`, kept as appends merge.
    let mut sizes: Vec<u64> = Vec::with_capacity(messages.len());
    for message in messages {
        let size = append_bytes(&message);
        // The peer's latest message so far: a ready holds a few peers'.
        let latest = out.iter().rposition(|earlier| earlier.to == message.to);
        if let Some(at) = latest
            && continues(&out[at], &message)
            && sizes[at] + size <= MAX_APPEND_BYTES
        {
            let earlier = &mut out[at];
            earlier.commit = earlier.commit.max(message.commit);
            earlier.entries.extend(message.entries);
            sizes[at] += size;
            continue;
        }
        out.push(message);
        sizes.push(size);
    }
    out
}

fn append_bytes(message: &Message) -> u64 {
    message
        .entries
        .iter()
        .map(|entry| (entry.data.len() + entry.context.len()) as u64)
        .sum()
}

/// Whether `next` is an append that carries on where the append `earlier`
/// ends.
fn continues(earlier: &Message, next: &Message) -> bool {
    if next.get_msg_type() != MessageType::MsgAppend
        || earlier.get_msg_type() != MessageType::MsgAppend
        || earlier.term != next.term
    {
        return false;
    }
    let (end_index, end_term) = earlier
        .entries
        .last()
        .map_or((earlier.index, earlier.log_term), |entry| {
            (entry.index, entry.term)
        });
    next.index == end_index && next.log_term == end_term
}

/// What the rest of the member sends the raft loop.
pub enum NodeInput {
    /// A client request to replicate; `respond` gets the result once it is applied here.
    Propose {
        id: u64,
        data: Vec<u8>,
        respond: oneshot::Sender<ApplyResult>,
    },
    /// A linearizable read waits for this to answer: the member has applied
    /// everything committed when the read arrived.
    ReadIndex {
        respond: ReadWaiter,
    },
    /// Hand leadership to another voter (etcd's MoveLeader); answered once it
    /// leads or the transfer times out.
    TransferLeader {
        target: u64,
        respond: oneshot::Sender<Result<(), StoreError>>,
    },
    /// A membership change; `respond` gets the result once it is applied here.
    ProposeConfChange {
        id: u64,
        change: ConfChange,
        context: Vec<u8>,
        respond: oneshot::Sender<ApplyResult>,
    },
    /// Promote a learner, if (on the leader) it has caught up.
    PromoteLearner {
        id: u64,
        member_id: u64,
        context: Vec<u8>,
        respond: oneshot::Sender<ApplyResult>,
    },
    /// A message from a peer.
    Raft(Message),
    Unreachable(u64),
    SnapshotStatus(u64, SnapshotStatus),
    Shutdown,
}

/// What the raft loop publishes for readers on other threads.
#[derive(Default)]
pub struct NodeStatus {
    pub leader_id: AtomicU64,
    pub term: AtomicU64,
    pub commit_index: AtomicU64,
    pub applied_index: AtomicU64,
    pub stopped: AtomicBool,
    /// True on a leader once it has committed an entry of its own term: only then
    /// is everything earlier leaders committed known to be in its log.
    pub committed_in_term: AtomicBool,
    /// Set when this member applied its own removal from the cluster.
    pub removed: AtomicBool,
    pub is_learner: AtomicBool,
    /// Set, with the reason, when storage failed and the loop stopped: the
    /// member can no longer promise durability, so whoever runs it must stop
    /// it (`Member::stopped` tells them).
    pub storage_failure: parking_lot::Mutex<Option<String>>,
    /// etcd's metrics, updated by the loop, the log and the peer streams.
    pub metrics: crate::metrics::StoreMetrics,
}

/// On the leader: waits (up to `patience`) until it has committed an entry of its
/// own term and applied everything committed, so that what earlier leaders
/// committed (a lease revocation, say) has taken effect here.
pub async fn leader_caught_up(status: &NodeStatus, patience: Duration) -> Result<(), StoreError> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let caught_up = status.committed_in_term.load(Ordering::Acquire)
            && status.applied_index.load(Ordering::Acquire)
                >= status.commit_index.load(Ordering::Acquire);
        if caught_up {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::Timeout);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until a read index taken now has been confirmed by a quorum and
/// applied here: everything committed when the call began is visible, and on
/// a leader, it still led when the quorum answered.
pub async fn read_barrier(inbox: &Sender<NodeInput>, patience: Duration) -> Result<(), StoreError> {
    let (respond, result) = oneshot::channel();
    inbox
        .send(NodeInput::ReadIndex { respond })
        .map_err(|_| StoreError::Stopped)?;
    match tokio::time::timeout(patience, result).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Err(StoreError::Stopped),
        Err(_) => Err(StoreError::Timeout),
    }
}

/// Renews a lease on this member, which believes it leads. `Ok(None)`: no such
/// lease (or it has expired). `Err(NotLeader)`: this member does not lead.
///
/// A revocation an earlier leader committed may not be applied here yet, so
/// it waits until it has committed in its own term and applied everything
/// committed. And a leader cut off from the others (paused, partitioned)
/// still thinks it leads while a successor may have revoked the lease: a read
/// index confirms with a quorum that it still leads (etcd issue #15247).
pub async fn renew_as_leader(
    state_machine: &StateMachine,
    status: &NodeStatus,
    inbox: &Sender<NodeInput>,
    id: i64,
    patience: Duration,
) -> Result<Option<i64>, StoreError> {
    if !state_machine.lessor.is_primary() {
        return Err(StoreError::NotLeader);
    }
    leader_caught_up(status, patience).await?;
    read_barrier(inbox, patience).await?;
    if !state_machine.lessor.is_primary() {
        return Err(StoreError::NotLeader);
    }
    Ok(state_machine.lessor.renew(id))
}

/// How the loop reaches the other members. A running member sends through
/// gRPC ([`crate::transport::PeerNetwork`]); the simulation delivers the
/// messages itself, with the delays, losses and partitions it chooses.
pub trait Network: Send {
    /// Queues a message for its member. False if it cannot be queued (the
    /// member is gone or its queue is full): raft then treats it as unreachable.
    fn send(&mut self, message: Message) -> bool;
    /// Sends what `send` queued (a network may hold messages until then, to
    /// write a ready's messages to a peer at once).
    fn flush(&mut self) {}
    /// Talks to `member_id` at `peer_urls` from now on (a new member, or one
    /// that moved).
    fn connect(&mut self, member_id: u64, peer_urls: &[String]);
    fn disconnect(&mut self, member_id: u64);
    fn is_connected(&self, member_id: u64) -> bool;
}

/// Bugs the simulation can put back on purpose, to show that its checkers
/// catch them. All off in a real member, whose `Node<false>` never reads them.
#[derive(Clone, Copy, Debug, Default)]
pub struct InjectedBugs {
    /// Never fsync: acknowledge writes whose log entries a crash can lose.
    pub skip_fsync: bool,
    /// Answer a linearizable read at once from local state, without a read
    /// index confirmed by a quorum.
    pub read_without_quorum: bool,
    /// The lease bug the chaos run found (TESTING.md): the lessor follows the
    /// role only when a ready reports it, and an expiry decided by a deposed
    /// leader takes effect wherever it is committed.
    pub stale_lease_revoke: bool,
}

/// A membership change as raft carries it: the change, and its context (who
/// asked, so the answer finds the waiting client, and the member concerned).
pub fn member_change(
    id: u64,
    proposer: u64,
    change_type: raft::eraftpb::ConfChangeType,
    member: &Member,
) -> (ConfChange, Vec<u8>) {
    let context = ConfChangeContext {
        id,
        proposer,
        member: Some(member.clone()),
    }
    .encode_to_vec();
    let change = ConfChange {
        change_type,
        node_id: member.id,
        ..Default::default()
    };
    (change, context)
}

/// Settings the loop needs beyond the raft config.
pub struct NodeSettings {
    pub member_id: u64,
    pub tick_interval: Duration,
    pub election_timeout: Duration,
    pub snapshot_count: u64,
    /// How many applied entries to keep in the log after a compaction, so a slightly
    /// lagging follower catches up from the log instead of a snapshot.
    pub catch_up_entries: u64,
    /// This member's name and client URLs, announced to the cluster once a leader exists.
    pub self_member: Member,
    pub auto_promote_learners: bool,
    /// The first id of the proposals the loop makes itself (random in a real
    /// member, from the seed in the simulation).
    pub first_internal_id: u64,
    pub bugs: InjectedBugs,
}

/// The channels and shared state that connect the loop to the rest of the member.
pub struct NodeWiring {
    pub inbox: Receiver<NodeInput>,
    pub network: Box<dyn Network>,
    pub status: Arc<NodeStatus>,
    pub watch_hub: Arc<WatchHub>,
    pub clock: Clock,
}

/// A MoveLeader waiting for the transfer to finish.
struct PendingTransfer {
    target: u64,
    started: Instant,
    respond: oneshot::Sender<Result<(), StoreError>>,
}

struct ParkedProposal {
    since: Instant,
    data: Vec<u8>,
    id: u64,
}

/// A linearizable read waiting to be released.
type ReadWaiter = oneshot::Sender<Result<(), StoreError>>;

struct ReadBatch {
    context: u64,
    issued: Instant,
    waiters: Vec<ReadWaiter>,
}

/// The raft loop. `FAULTS` is true only in the simulation: in a real member
/// the injected bugs' checks are constants and compile away.
pub struct Node<const FAULTS: bool = false> {
    raw: RawNode<RaftLog>,
    db: Arc<mvcc::Db>,
    state_machine: Arc<StateMachine>,
    inbox: Receiver<NodeInput>,
    network: Box<dyn Network>,
    clock: Clock,
    status: Arc<NodeStatus>,
    settings: NodeSettings,
    watch_hub: Arc<WatchHub>,
    waiters: HashMap<u64, oneshot::Sender<ApplyResult>>,
    parked: Vec<ParkedProposal>,
    reads_waiting: Vec<ReadWaiter>,
    read_in_flight: Option<ReadBatch>,
    reads_awaiting_apply: Vec<(u64, Vec<ReadWaiter>)>,
    next_read_context: u64,
    transfer: Option<PendingTransfer>,
    last_publish_attempt: Option<Instant>,
    next_publish_id: u64,
    /// The term in which this member's lessor was made primary, if it is.
    lessor_term: Option<u64>,
    /// When redb was last committed durably (see `DURABLE_EVERY`).
    last_durable: Instant,
    /// When state was last applied without a sync, if that has not been made
    /// durable since (see `make_durable_when_idle`).
    undurable_since: Option<Instant>,
}

/// How often the applied state in redb is made durable. In between it is
/// committed without a sync: the raft log file holds every applied entry
/// durably, and a restart applies again what redb lost. This bounds that
/// replay and lets redb reuse the pages earlier commits freed.
const DURABLE_EVERY: Duration = Duration::from_secs(1);

/// The largest number of inputs taken before handling a ready: large enough to
/// batch a burst of proposals, small enough to keep ticks on time.
const MAX_INPUTS_PER_ROUND: usize = 8192;
/// With 100 ms ticks, about a thousand revocations a second.
const MAX_REVOKES_PER_TICK: usize = 100;
/// An apply slower than this counts in `etcd_server_slow_apply_total`, as
/// etcd's 100 ms warning threshold.
const SLOW_APPLY: Duration = Duration::from_millis(100);

impl<const FAULTS: bool> Node<FAULTS> {
    /// The bugs the simulation puts back; none, at compile time, in a member.
    #[inline(always)]
    fn bugs(&self) -> InjectedBugs {
        if FAULTS {
            self.settings.bugs
        } else {
            InjectedBugs::default()
        }
    }

    pub fn new(
        raw: RawNode<RaftLog>,
        db: Arc<mvcc::Db>,
        state_machine: Arc<StateMachine>,
        settings: NodeSettings,
        wiring: NodeWiring,
    ) -> Self {
        let first_internal_id = settings.first_internal_id;
        let started = wiring.clock.now();
        Self {
            raw,
            db,
            state_machine,
            inbox: wiring.inbox,
            network: wiring.network,
            clock: wiring.clock,
            status: wiring.status,
            settings,
            watch_hub: wiring.watch_hub,
            waiters: HashMap::new(),
            parked: Vec::new(),
            reads_waiting: Vec::new(),
            read_in_flight: None,
            reads_awaiting_apply: Vec::new(),
            next_read_context: 1,
            transfer: None,
            last_publish_attempt: None,
            next_publish_id: first_internal_id | 1,
            lessor_term: None,
            last_durable: started,
            undurable_since: None,
        }
    }

    /// Runs until shutdown. A storage failure is fatal: the member cannot promise
    /// durability any more, so the loop stops and records why in
    /// `NodeStatus::storage_failure` (etcd exits; shoal leaves that to the
    /// process that embeds the member).
    pub fn run(mut self) {
        let mut next_tick = Instant::now() + self.settings.tick_interval;
        self.publish_status();
        let mut inputs = std::collections::VecDeque::new();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut shutdown = false;
            let mut idle = false;
            match self
                .inbox
                .wait_take(&mut inputs, MAX_INPUTS_PER_ROUND, wait)
            {
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => idle = true,
                Err(RecvTimeoutError::Disconnected) => shutdown = true,
            }
            while let Some(input) = inputs.pop_front() {
                shutdown |= self.handle_input(input);
            }
            if shutdown {
                break;
            }
            let now = Instant::now();
            if now >= next_tick {
                next_tick += self.settings.tick_interval;
                if next_tick < now {
                    next_tick = now + self.settings.tick_interval;
                }
                self.tick();
            }
            // Only when a whole wait passed with nothing to do: then no
            // write is waiting for the loop.
            let outcome = self.round().and_then(|()| {
                if idle {
                    self.make_durable_when_idle(self.clock.now())
                } else {
                    Ok(())
                }
            });
            if let Err(error) = outcome {
                tracing::error!(%error, "storage failure; stopping the member");
                // Nothing more is written: what is on disk is the last state
                // the member vouched for. The waiters learn it stopped.
                *self.status.storage_failure.lock() = Some(error.to_string());
                self.status.stopped.store(true, Ordering::SeqCst);
                self.fail_waiters();
                return;
            }
            if self.status.removed.load(Ordering::SeqCst) {
                break;
            }
        }
        if let Err(error) = self.make_durable() {
            tracing::warn!(%error, "could not make the applied state durable at shutdown");
        }
        self.status.stopped.store(true, Ordering::SeqCst);
        self.fail_waiters();
        tracing::info!("raft loop stopped");
    }

    fn fail_waiters(&mut self) {
        for (_, waiter) in self.waiters.drain() {
            let _ = waiter.send(ApplyResult::Error(StoreError::Stopped));
        }
    }

    /// One raft tick (a heartbeat interval has passed) and the loop's own
    /// timed work: parked proposals, lease expiry, transfers, promotions.
    pub fn tick(&mut self) {
        self.raw.tick();
        let now = self.clock.now();
        self.on_tick(now);
    }

    /// What follows a batch of inputs: pending reads are asked for, then one
    /// `Ready` is persisted, sent and applied. An error is a storage failure.
    pub fn round(&mut self) -> Result<(), String> {
        self.issue_reads();
        self.handle_ready()
    }

    /// For the simulation: raft's state, to check its invariants and to draw
    /// election timeouts from the seed.
    pub fn raft(&mut self) -> &mut raft::Raft<RaftLog> {
        &mut self.raw.raft
    }

    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    pub fn state_machine(&self) -> &Arc<StateMachine> {
        &self.state_machine
    }

    /// Steps one input. Returns true on shutdown.
    pub fn handle_input(&mut self, input: NodeInput) -> bool {
        match input {
            NodeInput::Propose { id, data, respond } => {
                self.waiters.insert(id, respond);
                self.propose(id, data, self.clock.now());
            }
            NodeInput::ReadIndex { respond } if self.bugs().read_without_quorum => {
                let _ = respond.send(Ok(()));
            }
            NodeInput::ReadIndex { respond } => self.reads_waiting.push(respond),
            NodeInput::TransferLeader { target, respond } => self.start_transfer(target, respond),
            NodeInput::ProposeConfChange {
                id,
                change,
                context,
                respond,
            } => {
                self.waiters.insert(id, respond);
                if let Err(error) = self.raw.propose_conf_change(context, change) {
                    tracing::debug!(%error, "configuration change dropped");
                    if let Some(waiter) = self.waiters.remove(&id) {
                        let _ = waiter.send(ApplyResult::Error(StoreError::Timeout));
                    }
                }
            }
            NodeInput::PromoteLearner {
                id,
                member_id,
                context,
                respond,
            } => self.promote_learner(id, member_id, context, respond),
            NodeInput::Raft(message) => {
                if let Err(error) = self.raw.step(message) {
                    tracing::debug!(%error, "dropped a raft message");
                }
            }
            NodeInput::Unreachable(peer_id) => self.raw.report_unreachable(peer_id),
            NodeInput::SnapshotStatus(peer_id, status) => {
                self.raw.report_snapshot(peer_id, status);
            }
            NodeInput::Shutdown => return true,
        }
        false
    }

    fn propose(&mut self, id: u64, data: Vec<u8>, since: Instant) {
        if self.raw.raft.leader_id == raft::INVALID_ID {
            // No leader to forward to: hold the proposal until one is elected.
            self.parked.push(ParkedProposal { since, data, id });
            return;
        }
        if let Err(error) = self.raw.propose(Vec::new(), data) {
            tracing::debug!(%error, "proposal dropped");
            self.status.metrics.proposals_failed.inc();
            if let Some(waiter) = self.waiters.remove(&id) {
                let _ = waiter.send(ApplyResult::Error(StoreError::Timeout));
            }
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let leader_known = self.raw.raft.leader_id != raft::INVALID_ID;
        if leader_known && !self.parked.is_empty() {
            for parked in std::mem::take(&mut self.parked) {
                self.propose(parked.id, parked.data, parked.since);
            }
        }
        // Proposals parked for longer than a few election timeouts fail with etcd's error.
        let give_up_after = self.settings.election_timeout * 3;
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|parked| now.duration_since(parked.since) > give_up_after);
        self.parked = kept;
        for parked in expired {
            self.status.metrics.proposals_failed.inc();
            if let Some(waiter) = self.waiters.remove(&parked.id) {
                let _ = waiter.send(ApplyResult::Error(StoreError::NoLeader));
            }
        }
        // A read index request can be lost with a leader; ask again.
        if let Some(batch) = &self.read_in_flight
            && now.duration_since(batch.issued) > self.settings.election_timeout
        {
            let batch = self.read_in_flight.take().expect("checked above");
            self.reads_waiting.extend(batch.waiters);
        }
        self.maybe_publish_self(now);
        self.revoke_expired_leases(now);
        self.check_transfer(now);
        if self.settings.auto_promote_learners {
            self.promote_caught_up_learners();
        }
    }

    /// On the leader: proposes promoting every learner that has caught up. raft
    /// accepts one configuration change at a time; a refused one is retried on a
    /// later tick.
    fn promote_caught_up_learners(&mut self) {
        let raft = &self.raw.raft;
        if raft.state != raft::StateRole::Leader || raft.has_pending_conf() {
            return;
        }
        let leader_last = raft.raft_log.last_index();
        let ready: Vec<u64> = raft
            .prs()
            .conf()
            .learners()
            .iter()
            .copied()
            .filter(|learner| {
                let matched = raft
                    .prs()
                    .get(*learner)
                    .map_or(0, |progress| progress.matched);
                matched > 0 && matched.saturating_mul(10) >= leader_last.saturating_mul(9)
            })
            .collect();
        if let Some(learner) = ready.first() {
            tracing::info!(member = %format!("{learner:x}"), "promoting a learner that has caught up");
            let change = ConfChange {
                change_type: raft::eraftpb::ConfChangeType::AddNode,
                node_id: *learner,
                ..Default::default()
            };
            let context = ConfChangeContext::default().encode_to_vec();
            let _ = self.raw.propose_conf_change(context, change);
        }
    }

    /// On the leader: promotes a learner whose log has caught up to within 10% of
    /// ours (etcd's readiness rule).
    fn promote_learner(
        &mut self,
        id: u64,
        member_id: u64,
        context: Vec<u8>,
        respond: oneshot::Sender<ApplyResult>,
    ) {
        let raft = &self.raw.raft;
        if raft.state != raft::StateRole::Leader {
            let _ = respond.send(ApplyResult::Error(StoreError::NotLeader));
            return;
        }
        if !raft.prs().conf().learners().contains(&member_id) {
            let _ = respond.send(ApplyResult::Error(StoreError::MemberNotLearner));
            return;
        }
        let leader_last = raft.raft_log.last_index();
        let learner_matched = raft
            .prs()
            .get(member_id)
            .map_or(0, |progress| progress.matched);
        if learner_matched.saturating_mul(10) < leader_last.saturating_mul(9) {
            let _ = respond.send(ApplyResult::Error(StoreError::LearnerNotReady));
            return;
        }
        let change = ConfChange {
            change_type: raft::eraftpb::ConfChangeType::AddNode,
            node_id: member_id,
            ..Default::default()
        };
        self.waiters.insert(id, respond);
        if let Err(error) = self.raw.propose_conf_change(context, change) {
            tracing::debug!(%error, "promotion dropped");
            if let Some(waiter) = self.waiters.remove(&id) {
                let _ = waiter.send(ApplyResult::Error(StoreError::Timeout));
            }
        }
    }

    fn start_transfer(&mut self, target: u64, respond: oneshot::Sender<Result<(), StoreError>>) {
        let raft = &self.raw.raft;
        if raft.state != raft::StateRole::Leader {
            let _ = respond.send(Err(StoreError::NotLeader));
            return;
        }
        if !raft.prs().conf().voters().contains(target) {
            let _ = respond.send(Err(StoreError::BadLeaderTransferee));
            return;
        }
        if target == self.settings.member_id {
            let _ = respond.send(Ok(()));
            return;
        }
        if let Some(earlier) = self.transfer.take() {
            let _ = earlier.respond.send(Err(StoreError::LeaderTransferTimeout));
        }
        self.raw.transfer_leader(target);
        self.transfer = Some(PendingTransfer {
            target,
            started: self.clock.now(),
            respond,
        });
    }

    /// Answers a pending leadership transfer once it is done or has taken too long.
    fn check_transfer(&mut self, now: Instant) {
        let Some(transfer) = &self.transfer else {
            return;
        };
        let done = self.raw.raft.leader_id == transfer.target;
        let too_long = now.duration_since(transfer.started) > self.settings.election_timeout * 2;
        if done || too_long {
            let respond = self.transfer.take().expect("checked above").respond;
            let outcome = if done {
                Ok(())
            } else {
                Err(StoreError::LeaderTransferTimeout)
            };
            let _ = respond.send(outcome);
        }
    }

    /// Lease deadlines live on the leader only: a new leader gives every lease its
    /// full TTL again (plus an election timeout), a former leader forgets them.
    /// Tracked by term: a member that lost leadership and won it back between two
    /// looks starts afresh too.
    fn on_role_change(&mut self) {
        let raft = &self.raw.raft;
        let leading_in = (raft.state == raft::StateRole::Leader).then_some(raft.term);
        let lessor = &self.state_machine.lessor;
        if leading_in == self.lessor_term && leading_in.is_some() == lessor.is_primary() {
            return;
        }
        lessor.demote();
        if leading_in.is_some() {
            lessor.promote(self.settings.election_timeout);
        }
        self.lessor_term = leading_in;
    }

    /// On the leader: proposes revoking expired leases, at most `MAX_REVOKES_PER_TICK`
    /// a tick (etcd limits revocations to about a thousand a second too).
    fn revoke_expired_leases(&mut self, now: Instant) {
        // Inputs stepped since the last ready may have deposed this member, and
        // a follower forwards proposals to its leader: a revocation decided here
        // now would reach the new leader and end a lease it keeps alive (etcd
        // issues #12528 and #15247). Catch the lessor up with the role first.
        if !self.bugs().stale_lease_revoke {
            self.on_role_change();
            if self.raw.raft.state != raft::StateRole::Leader {
                return;
            }
        }
        let term = self.raw.raft.term;
        let expired = self.state_machine.lessor.expired(
            now,
            self.settings.election_timeout * 2,
            MAX_REVOKES_PER_TICK,
        );
        for id in expired {
            self.next_publish_id = self.next_publish_id.wrapping_add(2);
            let request = RaftRequest {
                id: self.next_publish_id,
                proposer: 0,
                lease_revoke: Some(proto::etcdserverpb::LeaseRevokeRequest { id }),
                expiry_term: term,
                ..Default::default()
            };
            if let Err(error) = self.raw.propose(Vec::new(), request.encode_to_vec()) {
                tracing::debug!(%error, lease = id, "proposing a lease revocation failed");
            }
        }
    }

    fn maybe_publish_self(&mut self, now: Instant) {
        if self.raw.raft.leader_id == raft::INVALID_ID {
            return;
        }
        let me = &self.settings.self_member;
        let current = self.state_machine.member(me.id);
        let up_to_date = current
            .is_some_and(|member| member.name == me.name && member.client_ur_ls == me.client_ur_ls);
        if up_to_date {
            return;
        }
        if self
            .last_publish_attempt
            .is_some_and(|last| now.duration_since(last) < self.settings.election_timeout)
        {
            return;
        }
        self.last_publish_attempt = Some(now);
        self.next_publish_id = self.next_publish_id.wrapping_add(2);
        let request = RaftRequest {
            id: self.next_publish_id,
            proposer: 0,
            publish_member: Some(me.clone()),
            ..Default::default()
        };
        let _ = self.raw.propose(Vec::new(), request.encode_to_vec());
    }

    fn issue_reads(&mut self) {
        if self.read_in_flight.is_some() || self.reads_waiting.is_empty() {
            return;
        }
        if self.raw.raft.leader_id == raft::INVALID_ID {
            return;
        }
        let context = self.next_read_context;
        self.next_read_context += 1;
        self.raw.read_index(self.read_context_bytes(context));
        self.read_in_flight = Some(ReadBatch {
            context,
            issued: self.clock.now(),
            waiters: std::mem::take(&mut self.reads_waiting),
        });
    }

    /// The leader keys pending reads by context and drops a duplicate, so contexts
    /// must be unique across members: our member id, then our counter.
    fn read_context_bytes(&self, context: u64) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&self.settings.member_id.to_be_bytes());
        bytes.extend_from_slice(&context.to_be_bytes());
        bytes
    }

    fn send(&mut self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        for message in coalesce_appends(messages) {
            let to = message.to;
            if !self.network.is_connected(to) {
                tracing::debug!(to = %format!("{to:x}"), "message for an unknown member dropped");
            } else {
                let is_heartbeat = message.get_msg_type() == MessageType::MsgHeartbeat;
                if !self.network.send(message) {
                    if is_heartbeat {
                        self.status.metrics.heartbeat_send_failures.inc();
                    }
                    self.raw.report_unreachable(to);
                }
            }
        }
        self.network.flush();
    }

    fn handle_ready(&mut self) -> Result<(), String> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if ready.ss().is_some() {
            self.publish_status();
            self.check_transfer(self.clock.now());
        }
        // Every ready, not only those with a new soft state: the role may have
        // changed while inputs were stepped, before a ready was taken.
        if ready.ss().is_some() || !self.bugs().stale_lease_revoke {
            self.on_role_change();
        }
        self.send(ready.take_messages());

        if !ready.snapshot().is_empty() {
            // A snapshot replaces the whole state: install it in a transaction of its
            // own, so the lessor can be rebuilt from it before later entries apply.
            let snapshot = ready.snapshot().clone();
            let wtx = self.db.begin_write().map_err(|error| error.to_string())?;
            self.state_machine.restore(&wtx, &snapshot.data)?;
            self.raw
                .mut_store()
                .apply_snapshot(&wtx, snapshot.get_metadata())?;
            wtx.commit().map_err(|error| error.to_string())?;
            self.made_durable();
            self.raw.mut_store().finish_rewrite()?;
            self.after_apply(Vec::new(), Vec::new(), true);
            self.state_machine.reload_leases()?;
            tracing::info!(
                index = snapshot.get_metadata().index,
                term = snapshot.get_metadata().term,
                "applied a snapshot from the leader"
            );
        }
        // A follower persists first and answers the leader at once: its
        // acknowledgement is on every write's path, its applying is not. The
        // leader is the other way round: what this ready commits is answered
        // by applying it, and it need not wait for the fsync of the entries
        // proposed since. That is safe because raft-rs hands out only entries
        // that are both committed and persisted here (`next_entries_since`
        // stops at the persisted index), and a restart raises the commit index
        // to what redb applied (`RaftLog::load`).
        if self.raw.raft.state == raft::StateRole::Leader {
            self.apply_committed(&ready.take_committed_entries())?;
        }
        let skip_fsync = self.bugs().skip_fsync;
        let log = self.raw.mut_store();
        log.append(ready.entries());
        if let Some(hard_state) = ready.hs() {
            log.set_hard_state(hard_state.clone());
        }
        let flushed = log.flush(ready.must_sync() && !skip_fsync)?;
        let metrics = &self.status.metrics;
        metrics.wal_write_bytes.inc_by(flushed.written_bytes);
        if let Some(sync_duration) = flushed.sync_duration {
            metrics.wal_fsync_duration.observe_duration(sync_duration);
        }
        self.send(ready.take_persisted_messages());

        self.apply_committed(&ready.take_committed_entries())?;
        let read_states = ready.take_read_states();
        for read_state in read_states {
            self.on_read_state(read_state.index, &read_state.request_ctx);
        }

        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        self.send(light.take_messages());
        self.apply_committed(&light.take_committed_entries())?;
        self.raw.advance_apply();
        self.maybe_compact_log()?;
        self.publish_status();
        Ok(())
    }

    /// Applies committed entries in one redb transaction (see `commit_applied`)
    /// and answers whoever waits for them. The log file already holds them
    /// durably.
    fn apply_committed(&mut self, committed: &[Entry]) -> Result<(), String> {
        if committed.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let wtx = self.db.begin_write().map_err(|error| error.to_string())?;
        let mut results = Vec::new();
        let mut events = Vec::new();
        self.apply_entries(&wtx, committed, &mut results, &mut events)?;
        self.commit_applied(wtx)?;
        self.after_apply(results, events, false);
        // etcd's warning threshold for an apply ("apply request took too long").
        if started.elapsed() > SLOW_APPLY {
            self.status.metrics.slow_apply.inc();
        }
        Ok(())
    }

    fn apply_entries(
        &mut self,
        wtx: &WriteTransaction,
        entries: &[Entry],
        results: &mut Vec<(u64, ApplyResult)>,
        events: &mut Vec<proto::mvccpb::Event>,
    ) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let state_machine = self.state_machine.clone();
        let mut writer = state_machine.mvcc.writer(wtx);
        for entry in entries {
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    // Empty entries are the no-ops new leaders append.
                    if !entry.data.is_empty() {
                        let request = RaftRequest::decode(entry.data.as_ref())
                            .map_err(|error| format!("entry {}: {error}", entry.index))?;
                        if request.expiry_term != 0
                            && request.expiry_term != entry.term
                            && !self.bugs().stale_lease_revoke
                        {
                            tracing::info!(
                                index = entry.index,
                                decided_in = request.expiry_term,
                                committed_in = entry.term,
                                "dropped a lease expiry decided by a former leader"
                            );
                            continue;
                        }
                        count_request(&self.status.metrics, &request);
                        let result = state_machine.apply_request(
                            &mut writer,
                            wtx,
                            &request,
                            entry.index,
                            events,
                        )?;
                        if let (Some(update), ApplyResult::Members { .. }) =
                            (&request.member_update, &result)
                            && update.id != self.settings.member_id
                        {
                            // Talk to the member at its new address from now on.
                            self.network.connect(update.id, &update.peer_ur_ls);
                        }
                        if request.proposer == self.settings.member_id {
                            results.push((request.id, result));
                        }
                    }
                }
                EntryType::EntryConfChange => {
                    let change = ConfChange::parse_from_bytes(&entry.data)
                        .map_err(|error| format!("entry {}: {error}", entry.index))?;
                    let outcome = self.apply_membership(
                        wtx,
                        &change,
                        change.get_change_type(),
                        change.node_id,
                        &entry.context,
                    )?;
                    if let Some((id, result)) = outcome {
                        results.push((id, result));
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    // shoal proposes only single-step changes; a joint change from
                    // elsewhere is still applied to raft, member by member.
                    let change = ConfChangeV2::parse_from_bytes(&entry.data)
                        .map_err(|error| format!("entry {}: {error}", entry.index))?;
                    match self.raw.apply_conf_change(&change) {
                        Ok(conf_state) => self.raw.mut_store().set_conf_state(wtx, conf_state)?,
                        Err(error) => {
                            tracing::warn!(%error, "configuration change refused by raft")
                        }
                    }
                }
            }
            writer.set_consistent_index(entry.index);
        }
        Ok(())
    }

    /// Commits a transaction of applied state: without a sync, unless
    /// `DURABLE_EVERY` has passed since the last durable commit.
    fn commit_applied(&mut self, mut wtx: WriteTransaction) -> Result<(), String> {
        let now = self.clock.now();
        if now.saturating_duration_since(self.last_durable) < DURABLE_EVERY
            || self.bugs().skip_fsync
        {
            wtx.set_durability(Durability::None)
                .map_err(|error| error.to_string())?;
            self.undurable_since = (!self.bugs().skip_fsync).then_some(now);
        } else {
            self.made_durable();
        }
        let started = std::time::Instant::now();
        wtx.commit().map_err(|error| error.to_string())?;
        self.status
            .metrics
            .backend_commit_duration
            .observe_duration(started.elapsed());
        Ok(())
    }

    /// Commits everything applied so far durably.
    fn make_durable(&mut self) -> Result<(), String> {
        let started = std::time::Instant::now();
        let wtx = self.db.begin_write().map_err(|error| error.to_string())?;
        wtx.commit().map_err(|error| error.to_string())?;
        self.status
            .metrics
            .backend_commit_duration
            .observe_duration(started.elapsed());
        self.made_durable();
        Ok(())
    }

    /// Records a durable commit of redb.
    fn made_durable(&mut self) {
        self.last_durable = self.clock.now();
        self.undurable_since = None;
    }

    /// Makes the applied state durable once nothing has been applied for a
    /// whole tick; the loop calls it when a wait for input timed out. A
    /// durable commit writes out all that redb buffered since the last one
    /// (38-44 ms on the raft thread after a second of puts at 1,000 clients,
    /// BENCHMARKS.md), and every write waits meanwhile; done in a pause, it
    /// does not fall on the next burst of writes.
    fn make_durable_when_idle(&mut self, now: Instant) -> Result<(), String> {
        match self.undurable_since {
            Some(applied)
                if now.saturating_duration_since(applied) >= self.settings.tick_interval =>
            {
                self.make_durable()
            }
            _ => Ok(()),
        }
    }

    /// Applies one membership change to raft, the member list and the transport.
    fn apply_membership(
        &mut self,
        wtx: &WriteTransaction,
        change: &ConfChange,
        change_type: raft::eraftpb::ConfChangeType,
        node_id: u64,
        context: &[u8],
    ) -> Result<Option<(u64, ApplyResult)>, String> {
        let context = ConfChangeContext::decode(context).unwrap_or_default();
        let waiter = (context.proposer == self.settings.member_id).then_some(context.id);
        let conf_state = match self.raw.apply_conf_change(change) {
            Ok(conf_state) => conf_state,
            Err(error) => {
                tracing::warn!(%error, node = %format!("{node_id:x}"), "configuration change refused by raft");
                let result = ApplyResult::Error(StoreError::Internal(format!(
                    "configuration change refused: {error}"
                )));
                return Ok(waiter.map(|id| (id, result)));
            }
        };
        self.raw.mut_store().set_conf_state(wtx, conf_state)?;
        let member = self.state_machine.apply_member_change(
            wtx,
            change_type,
            node_id,
            context.member.as_ref(),
        )?;
        let is_removal = change_type == raft::eraftpb::ConfChangeType::RemoveNode;
        if node_id == self.settings.member_id {
            if is_removal {
                tracing::warn!("this member was removed from the cluster; stopping");
                self.status.removed.store(true, Ordering::SeqCst);
            } else if let Some(member) = &member {
                self.status
                    .is_learner
                    .store(member.is_learner, Ordering::Release);
            }
        } else if is_removal {
            self.network.disconnect(node_id);
        } else if let Some(member) = &member
            && !self.network.is_connected(node_id)
        {
            self.network.connect(node_id, &member.peer_ur_ls);
        }
        tracing::info!(
            change = ?change_type,
            member = %format!("{node_id:x}"),
            "applied a membership change"
        );
        let result = ApplyResult::Members {
            member,
            members: self.state_machine.members(),
        };
        Ok(waiter.map(|id| (id, result)))
    }

    /// Makes applied state visible, answers the clients that wait for it, and
    /// releases reads whose index is now applied.
    fn after_apply(
        &mut self,
        results: Vec<(u64, ApplyResult)>,
        events: Vec<proto::mvccpb::Event>,
        restored: bool,
    ) {
        self.state_machine.mvcc.publish();
        if restored {
            self.watch_hub.resync_all();
        }
        // The clients first: their answers need nothing the watchers get,
        // and a watcher created meanwhile starts after the published revision
        // (or catches up from history), so it sees each event once.
        for (id, result) in results {
            if let Some(waiter) = self.waiters.remove(&id) {
                let _ = waiter.send(result);
            }
        }
        self.watch_hub.notify(&events);
        self.release_reads();
    }

    fn release_reads(&mut self) {
        let applied = self.state_machine.mvcc.consistent_index();
        self.reads_awaiting_apply.retain_mut(|(index, waiters)| {
            if *index <= applied {
                for waiter in waiters.drain(..) {
                    let _ = waiter.send(Ok(()));
                }
                false
            } else {
                true
            }
        });
    }

    fn on_read_state(&mut self, index: u64, context: &[u8]) {
        let Some(batch) = &self.read_in_flight else {
            return;
        };
        if context != self.read_context_bytes(batch.context) {
            return;
        }
        let batch = self.read_in_flight.take().expect("checked above");
        self.reads_awaiting_apply.push((index, batch.waiters));
        self.release_reads();
    }

    /// Every `snapshot_count` applied entries, drops the log up to the applied index
    /// less a catch-up margin. The state machine in redb is the snapshot: a follower
    /// that needs entries from before the compaction point receives a snapshot.
    fn maybe_compact_log(&mut self) -> Result<(), String> {
        let applied = self.state_machine.mvcc.consistent_index();
        let truncated = self.raw.store().truncated_index();
        let keep = self.settings.catch_up_entries;
        if applied < truncated + self.settings.snapshot_count + keep {
            return Ok(());
        }
        let compact_to = applied - keep;
        // A durable commit also makes every earlier non-durable apply durable, so
        // the applied state on disk is at least at the compaction point.
        let mut wtx = self.db.begin_write().map_err(|error| error.to_string())?;
        if self.bugs().skip_fsync {
            wtx.set_durability(Durability::None)
                .map_err(|error| error.to_string())?;
        }
        self.raw.mut_store().compact(&wtx, compact_to)?;
        wtx.commit().map_err(|error| error.to_string())?;
        self.made_durable();
        self.raw.mut_store().finish_rewrite()?;
        tracing::info!(applied, compacted_to = compact_to, "compacted the raft log");
        Ok(())
    }

    fn publish_status(&self) {
        let raft = &self.raw.raft;
        let metrics = &self.status.metrics;
        let previous_leader = self.status.leader_id.swap(raft.leader_id, Ordering::AcqRel);
        if previous_leader != raft.leader_id && raft.leader_id != raft::INVALID_ID {
            metrics.leader_changes_seen.inc();
        }
        self.status.term.store(raft.term, Ordering::Release);
        let previous_commit = self
            .status
            .commit_index
            .swap(raft.raft_log.committed, Ordering::AcqRel);
        metrics
            .proposals_committed
            .inc_by(raft.raft_log.committed.saturating_sub(previous_commit));
        let applied = self.state_machine.mvcc.consistent_index();
        let previous_applied = self.status.applied_index.swap(applied, Ordering::AcqRel);
        metrics
            .proposals_applied
            .inc_by(applied.saturating_sub(previous_applied));
        metrics
            .proposals_pending
            .set((self.waiters.len() + self.parked.len()) as i64);
        let committed_term = raft.raft_log.term(raft.raft_log.committed).unwrap_or(0);
        self.status
            .committed_in_term
            .store(committed_term == raft.term, Ordering::Release);
    }
}

/// Counts a request by kind in etcd's `etcd_mvcc_*_total`, on every member
/// that applies it, as etcd counts them.
fn count_request(metrics: &crate::metrics::StoreMetrics, request: &RaftRequest) {
    if request.put.is_some() {
        metrics.mvcc_put.inc();
    } else if request.delete_range.is_some() {
        metrics.mvcc_delete.inc();
    } else if request.txn.is_some() {
        metrics.mvcc_txn.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(to: u64, index: u64, log_term: u64, entries: &[(u64, u64)], commit: u64) -> Message {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgAppend);
        message.to = to;
        message.term = 5;
        message.index = index;
        message.log_term = log_term;
        message.commit = commit;
        message.entries = entries
            .iter()
            .map(|&(index, term)| Entry {
                index,
                term,
                data: vec![1; 10].into(),
                ..Default::default()
            })
            .collect::<Vec<_>>()
            .into();
        message
    }

    fn shape(messages: &[Message]) -> Vec<(u64, MessageType, u64, Vec<u64>, u64)> {
        messages
            .iter()
            .map(|message| {
                (
                    message.to,
                    message.get_msg_type(),
                    message.index,
                    message.entries.iter().map(|entry| entry.index).collect(),
                    message.commit,
                )
            })
            .collect()
    }

    #[test]
    fn appends_that_continue_each_other_merge_per_peer() {
        let messages = vec![
            append(2, 10, 5, &[(11, 5)], 9),
            append(3, 10, 5, &[(11, 5)], 9),
            append(2, 11, 5, &[(12, 5)], 9),
            append(3, 11, 5, &[(12, 5)], 9),
            // A commit advance: an empty append after the last entry.
            append(2, 12, 5, &[], 11),
        ];
        assert_eq!(
            shape(&coalesce_appends(messages)),
            vec![
                (2, MessageType::MsgAppend, 10, vec![11, 12], 11),
                (3, MessageType::MsgAppend, 10, vec![11, 12], 9),
            ]
        );
    }

    /// What raft-rs' `batch_append` got wrong: a resend from a lower index
    /// after an empty append must stay a message of its own.
    #[test]
    fn an_append_that_does_not_continue_the_earlier_one_stays_apart() {
        let messages = vec![
            append(2, 195, 5, &[], 195),
            append(2, 193, 5, &[(194, 5), (195, 5)], 195),
        ];
        assert_eq!(
            shape(&coalesce_appends(messages)),
            vec![
                (2, MessageType::MsgAppend, 195, vec![], 195),
                (2, MessageType::MsgAppend, 193, vec![194, 195], 195),
            ]
        );
        // Nor does an append whose previous term differs from the earlier
        // one's last entry, or one of another term that would otherwise
        // continue it.
        let messages = vec![
            append(2, 10, 5, &[(11, 4)], 9),
            append(2, 11, 5, &[(12, 5)], 9),
        ];
        assert_eq!(coalesce_appends(messages).len(), 2);
        let mut other_term = append(2, 12, 5, &[(13, 5)], 9);
        other_term.term = 6;
        let messages = vec![append(2, 11, 5, &[(12, 5)], 9), other_term];
        assert_eq!(coalesce_appends(messages).len(), 2);
    }

    #[test]
    fn nothing_merges_across_another_message_to_the_same_peer() {
        let mut heartbeat = Message::default();
        heartbeat.set_msg_type(MessageType::MsgHeartbeat);
        heartbeat.to = 2;
        let messages = vec![
            append(2, 10, 5, &[(11, 5)], 9),
            heartbeat,
            append(2, 11, 5, &[(12, 5)], 9),
        ];
        assert_eq!(
            shape(&coalesce_appends(messages)),
            vec![
                (2, MessageType::MsgAppend, 10, vec![11], 9),
                (2, MessageType::MsgHeartbeat, 0, vec![], 0),
                (2, MessageType::MsgAppend, 11, vec![12], 9),
            ]
        );
    }

    #[test]
    fn merged_appends_stay_within_the_size_bound() {
        let mut big = append(2, 10, 5, &[(11, 5)], 9);
        big.entries[0].data = vec![0; MAX_APPEND_BYTES as usize - 5].into();
        let messages = vec![big, append(2, 11, 5, &[(12, 5)], 9)];
        assert_eq!(coalesce_appends(messages).len(), 2);
    }
}
