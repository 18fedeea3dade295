//! Deterministic simulation of a store cluster.
//!
//! The members are the real thing: the raft loop ([`Node`]) with raft-rs, the
//! raft log and the MVCC state machine on redb, the watch hub. Only the world
//! around them is simulated, from one seed: the network (delay, loss,
//! duplication, reordering, partitions), the clock and timers, and the disk
//! ([`disk::SimDisk`]), whose crash drops every write that was not synced.
//! Clients write and read linearizably through random members while faults
//! are injected; checkers, one per property, watch every step. The same seed
//! gives the same run, event for event (the report's `trace_digest` proves
//! it), so a failure is reproduced with `shoal sim --seed N`.

pub mod disk;

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message as _;
use proto::etcdserverpb::{Member, PutRequest, RangeRequest};
use proto::mvccpb::event::EventType;
use proto::shoalpb::RaftRequest;
use raft::eraftpb::{Entry, Message, MessageType};
use raft::{GetEntriesContext, RawNode, SnapshotStatus, StateRole};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::error::StoreError;
use crate::node::{InjectedBugs, Network, Node, NodeInput, NodeSettings, NodeStatus, NodeWiring};
use crate::raft_log::{self, RaftLog};
use crate::state_machine::{ApplyResult, StateMachine};
use crate::watch::{WatchHub, WatchMessage, WatchQueue, WatchReceiver, WatchSpec};
use disk::SimDisk;

/// The properties the checkers hold the cluster to.
pub const ELECTION_SAFETY: &str = "Election Safety";
pub const LOG_MATCHING: &str = "Log Matching";
pub const LEADER_COMPLETENESS: &str = "Leader Completeness";
pub const STATE_MACHINE_SAFETY: &str = "State Machine Safety";
pub const REVISIONS_FORWARD: &str = "revisions never go backwards";
pub const NO_LOST_WRITE: &str = "no acknowledged write lost";
pub const WATCH_ORDER: &str = "watch events in order without gaps";
pub const CONVERGENCE: &str = "members converge once faults heal";
pub const LEASE_SAFETY: &str = "leased keys outlive their lease";
/// raft-rs stops a member (panics) when its durable state contradicts what the
/// leader knows of it, for instance a log shorter than what it acknowledged;
/// shoal refuses to start a member whose disk contradicts itself (a state
/// machine ahead of its log).
pub const NO_PANIC: &str = "no member panics or fails to restart";

pub const PROPERTIES: [&str; 10] = [
    NO_PANIC,
    ELECTION_SAFETY,
    LOG_MATCHING,
    LEADER_COMPLETENESS,
    STATE_MACHINE_SAFETY,
    REVISIONS_FORWARD,
    NO_LOST_WRITE,
    WATCH_ORDER,
    CONVERGENCE,
    LEASE_SAFETY,
];

const TICK: Duration = Duration::from_millis(100);
/// Election timeout in ticks (1 s, etcd's default); raft draws each timeout
/// from [ELECTION_TICKS, 2 * ELECTION_TICKS).
const ELECTION_TICKS: usize = 10;
const KEYS: usize = 8;
/// A client gives up on a request after this long (its outcome is unknown).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// After the faults: time for clients to run on a healthy cluster, then for
/// the members to settle.
const QUIET: Duration = Duration::from_secs(4);
const SETTLE: Duration = Duration::from_secs(8);
/// Clients that grant leases, attach a key, keep them alive for a while, then
/// revoke them or let them expire.
const LEASE_CLIENTS: usize = 2;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    pub members: usize,
    /// Simulated time with faults; a quiet period follows.
    pub duration: Duration,
    pub clients: usize,
    pub bugs: InjectedBugs,
}

impl SimOptions {
    pub fn new(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            members: 3,
            duration: Duration::from_secs(20),
            clients: 4,
            bugs: InjectedBugs::default(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Violation {
    pub property: &'static str,
    /// Simulated time.
    pub at: Duration,
    pub detail: String,
}

#[derive(Clone, Debug, Default)]
pub struct SimStats {
    pub writes_acked: u64,
    pub writes_failed: u64,
    pub writes_unknown: u64,
    pub reads_ok: u64,
    pub reads_failed: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub leaders: u64,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub snapshots_delivered: u64,
    pub pauses: u64,
    pub leases_granted: u64,
    pub keep_alives: u64,
    pub leases_expired: u64,
    pub members_added: u64,
    pub members_removed: u64,
    pub simulated: Duration,
}

impl SimStats {
    /// Adds another run's counts to these.
    pub fn add(&mut self, other: &SimStats) {
        self.writes_acked += other.writes_acked;
        self.writes_failed += other.writes_failed;
        self.writes_unknown += other.writes_unknown;
        self.reads_ok += other.reads_ok;
        self.reads_failed += other.reads_failed;
        self.crashes += other.crashes;
        self.partitions += other.partitions;
        self.leaders += other.leaders;
        self.messages_delivered += other.messages_delivered;
        self.messages_dropped += other.messages_dropped;
        self.snapshots_delivered += other.snapshots_delivered;
        self.pauses += other.pauses;
        self.leases_granted += other.leases_granted;
        self.keep_alives += other.keep_alives;
        self.leases_expired += other.leases_expired;
        self.members_added += other.members_added;
        self.members_removed += other.members_removed;
        self.simulated += other.simulated;
    }
}

#[derive(Clone, Debug)]
pub struct SimReport {
    pub seed: u64,
    pub violations: Vec<Violation>,
    pub stats: SimStats,
    /// A digest of every delivered message and every client outcome: two runs
    /// of one seed give the same digest.
    pub trace_digest: u64,
}

impl SimReport {
    /// One line per violation, at most one per property (the first).
    pub fn summary(&self) -> String {
        let mut seen = BTreeSet::new();
        let mut lines = Vec::new();
        for violation in &self.violations {
            if seen.insert(violation.property) {
                lines.push(format!(
                    "{} at {:.3}s: {}",
                    violation.property,
                    violation.at.as_secs_f64(),
                    violation.detail
                ));
            }
        }
        lines.join("\n")
    }

    pub fn violated(&self, property: &str) -> bool {
        self.violations
            .iter()
            .any(|violation| violation.property == property)
    }
}

/// Runs one seed to the end and reports what the checkers found. An error is
/// a failure of the simulation itself (a member that cannot even start).
pub fn run(options: &SimOptions) -> Result<SimReport, String> {
    let mut world = World::new(options.clone())?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.run()));
    match outcome {
        Ok(result) => result?,
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_else(|| "a panic without a message".into());
            world.stats.simulated = world.now();
            world.violation(NO_PANIC, text);
        }
    }
    Ok(world.report())
}

/// The network of the simulation, as the raft loop sees it: messages are
/// collected and the world delivers them.
struct SimNetwork {
    outbox: Arc<Mutex<Vec<Message>>>,
    peers: BTreeSet<u64>,
}

impl Network for SimNetwork {
    fn send(&mut self, message: Message) -> bool {
        self.outbox.lock().push(message);
        true
    }

    fn connect(&mut self, member_id: u64, _peer_urls: &[String]) {
        self.peers.insert(member_id);
    }

    fn disconnect(&mut self, member_id: u64) {
        self.peers.remove(&member_id);
    }

    fn is_connected(&self, member_id: u64) -> bool {
        self.peers.contains(&member_id)
    }
}

/// A member while its process runs.
struct Running {
    node: Node<true>,
    status: Arc<NodeStatus>,
    outbox: Arc<Mutex<Vec<Message>>>,
    watch_hub: Arc<WatchHub>,
    watch: WatchReceiver,
    /// The last revision the watcher delivered (1: none yet).
    watched_revision: i64,
    /// Puts the watcher has seen since this life began: (key, value).
    seen_puts: BTreeSet<(Bytes, Bytes)>,
    role: (u64, StateRole),
    revision: i64,
    /// Committed entries checked so far.
    recorded_commit: u64,
}

struct SimMember {
    id: u64,
    disk: SimDisk,
    running: Option<Running>,
    /// Bumped at every start, so clients notice a restart under them.
    life: u64,
    next_tick: Duration,
    restart_at: Option<Duration>,
    /// SIGSTOP: until then the member neither ticks nor receives.
    paused_until: Option<Duration>,
    /// For a member added to the running cluster: the cluster it joins (its id
    /// and members), used when it starts with an empty disk.
    joins: Option<(u64, Vec<Member>)>,
    /// Removed from the cluster: stopped for good.
    removed: bool,
}

/// A message on the wire.
struct InFlight {
    at: Duration,
    seq: u64,
    message: Message,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    /// Reversed, so the heap pops the earliest first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

enum Waiter {
    Write(oneshot::Receiver<ApplyResult>),
    Read(oneshot::Receiver<Result<(), StoreError>>),
}

struct Operation {
    key: Bytes,
    /// Some for a put.
    value: Option<Bytes>,
    member: usize,
    life: u64,
    started: Duration,
    /// The highest revision of any operation completed before this one began.
    floor: i64,
    /// The revision of the last acknowledged put to this key completed before
    /// this one began.
    key_floor: i64,
    waiter: Waiter,
}

struct Client {
    next_at: Duration,
    operation: Option<Operation>,
    count: u64,
}

/// A lease client's requests, in the order it makes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaseStep {
    Grant,
    Put,
    KeepAlive,
    Revoke,
}

enum LeaseWaiter {
    Apply(oneshot::Receiver<ApplyResult>),
    /// A renewal on the member that leads: first until it has committed in its
    /// term and applied everything, then a read index confirming leadership
    /// (what `node::renew_as_leader` does in a running member).
    CaughtUp,
    Confirming(oneshot::Receiver<Result<(), StoreError>>),
}

struct LeaseRequest {
    step: LeaseStep,
    lease: i64,
    member: usize,
    life: u64,
    started: Duration,
    waiter: LeaseWaiter,
}

struct LeaseClient {
    next_at: Duration,
    request: Option<LeaseRequest>,
    lease: i64,
    ttl: i64,
    key: Bytes,
    keep_alives_left: u32,
    count: u64,
}

/// What the lease checker knows of one lease.
struct LeaseRecord {
    key: Bytes,
    /// The lease cannot expire before this: the start of the last request
    /// (grant or keep-alive) that reported it alive, plus its TTL.
    alive_until: Duration,
    revoke_sent: bool,
    deleted_at: Option<Duration>,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Crash,
    CrashAll,
    Isolate,
    IsolateLeader,
    OneWay,
    Lossy,
    /// SIGSTOP then SIGCONT, of the leader most often.
    Pause,
    /// A member added (three voters) or removed (four), through the leader.
    Membership,
}

struct World {
    options: SimOptions,
    rng: StdRng,
    clock: Clock,
    members: Vec<SimMember>,
    ids: Vec<u64>,
    in_flight: BinaryHeap<InFlight>,
    next_seq: u64,
    /// (from, to) member ids whose messages are dropped.
    blocked: BTreeSet<(u64, u64)>,
    loss: f64,
    fault_ends_at: Option<Duration>,
    next_fault_at: Duration,
    clients: Vec<Client>,
    lease_clients: Vec<LeaseClient>,
    leases: BTreeMap<i64, LeaseRecord>,
    next_request_id: u64,
    faults_on: bool,
    clients_on: bool,
    // What the checkers know.
    leaders: BTreeMap<u64, u64>,
    committed: BTreeMap<u64, (u64, u64)>,
    revision_events: BTreeMap<i64, u64>,
    floor: i64,
    key_floors: BTreeMap<Bytes, i64>,
    acked: Vec<(Bytes, Bytes, i64)>,
    violations: Vec<Violation>,
    stats: SimStats,
    trace: DefaultHasher,
}

fn member_info(id: u64) -> Member {
    Member {
        id,
        name: format!("m{id}"),
        peer_ur_ls: vec![format!("http://sim-m{id}:2380")],
        client_ur_ls: vec![format!("http://sim-m{id}:2379")],
        is_learner: false,
    }
}

fn entry_digest(entry: &Entry) -> u64 {
    let mut hasher = DefaultHasher::new();
    entry.term.hash(&mut hasher);
    (entry.get_entry_type() as i32).hash(&mut hasher);
    entry.data.as_ref().hash(&mut hasher);
    entry.context.as_ref().hash(&mut hasher);
    hasher.finish()
}

fn entry_at(raft: &raft::Raft<RaftLog>, index: u64) -> Option<Entry> {
    raft.raft_log
        .slice(index, index + 1, None, GetEntriesContext::empty(false))
        .ok()?
        .into_iter()
        .next()
}

impl World {
    fn new(options: SimOptions) -> Result<World, String> {
        let mut rng = StdRng::seed_from_u64(options.seed);
        let ids: Vec<u64> = (1..=options.members as u64).collect();
        let members = ids
            .iter()
            .map(|&id| SimMember {
                id,
                disk: SimDisk::new(),
                running: None,
                life: 0,
                next_tick: Duration::from_millis(rng.random_range(1..100)),
                restart_at: None,
                paused_until: None,
                joins: None,
                removed: false,
            })
            .collect();
        let clients = (0..options.clients)
            .map(|_| Client {
                next_at: Duration::from_millis(rng.random_range(1500..2500)),
                operation: None,
                count: 0,
            })
            .collect();
        let lease_clients = (0..LEASE_CLIENTS)
            .map(|_| LeaseClient {
                next_at: Duration::from_millis(rng.random_range(1500..2500)),
                request: None,
                lease: 0,
                ttl: 0,
                key: Bytes::new(),
                keep_alives_left: 0,
                count: 0,
            })
            .collect();
        let mut world = World {
            lease_clients,
            leases: BTreeMap::new(),
            rng,
            clock: Clock::simulated(),
            members,
            ids,
            in_flight: BinaryHeap::new(),
            next_seq: 0,
            blocked: BTreeSet::new(),
            loss: 0.0,
            fault_ends_at: None,
            next_fault_at: Duration::from_secs(3),
            clients,
            next_request_id: 1,
            faults_on: true,
            clients_on: true,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            revision_events: BTreeMap::new(),
            floor: 0,
            key_floors: BTreeMap::new(),
            acked: Vec::new(),
            violations: Vec::new(),
            stats: SimStats::default(),
            trace: DefaultHasher::new(),
            options,
        };
        for idx in 0..world.members.len() {
            world.start(idx)?;
        }
        Ok(world)
    }

    fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    fn violation(&mut self, property: &'static str, detail: String) {
        let at = self.now();
        self.violations.push(Violation {
            property,
            at,
            detail,
        });
    }

    /// Starts (or restarts) a member from what its disk holds.
    fn start(&mut self, idx: usize) -> Result<(), String> {
        let id = self.members[idx].id;
        let failed = |what: &str, error: String| format!("member {id}: {what}: {error}");
        let backend = self.members[idx].disk.backend();
        let disk = self.members[idx].disk.clone();
        let log_file = || -> Box<dyn crate::wal::WalFile> { Box::new(disk.log_file()) };
        let db = Arc::new(
            mvcc::Db::with_backend(backend, 4 << 20)
                .map_err(|error| failed("open", error.to_string()))?,
        );
        let state_machine = Arc::new(
            StateMachine::open(db.clone(), 2, self.clock.clone())
                .map_err(|error| failed("state machine", error))?,
        );
        let log = if raft_log::has_state(&db).map_err(|error| failed("raft state", error))? {
            RaftLog::load(&db, state_machine.clone(), log_file())
                .map_err(|error| failed("raft log", error))?
                .ok_or_else(|| failed("raft log", "missing".into()))?
        } else {
            let wtx = db
                .begin_write()
                .map_err(|error| failed("bootstrap", error.to_string()))?;
            let log = match self.members[idx].joins.clone() {
                // Joining a running cluster (--initial-cluster-state existing):
                // an empty log; the leader sends a snapshot.
                Some((cluster_id, members)) => {
                    state_machine
                        .bootstrap_members(&wtx, cluster_id, members)
                        .map_err(|error| failed("bootstrap", error))?;
                    RaftLog::empty(&wtx, state_machine.clone(), log_file())
                        .map_err(|error| failed("bootstrap", error))?
                }
                None => {
                    let founders: Vec<u64> = (1..=self.options.members as u64).collect();
                    let members = founders.iter().map(|&id| member_info(id)).collect();
                    state_machine
                        .bootstrap_members(&wtx, crate::config::cluster_id(&founders), members)
                        .map_err(|error| failed("bootstrap", error))?;
                    RaftLog::bootstrap(&wtx, founders, state_machine.clone(), log_file())
                        .map_err(|error| failed("bootstrap", error))?
                }
            };
            wtx.commit()
                .map_err(|error| failed("bootstrap", error.to_string()))?;
            log
        };
        let consistent_index = state_machine.mvcc.consistent_index();
        let applied = if consistent_index == 0 {
            log.truncated_index()
        } else {
            consistent_index
        };
        let config = crate::node::raft_config(id, ELECTION_TICKS, applied);
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&config, log, &logger)
            .map_err(|error| failed("raft", error.to_string()))?;
        let outbox = Arc::new(Mutex::new(Vec::new()));
        let network = SimNetwork {
            outbox: outbox.clone(),
            peers: self
                .ids
                .iter()
                .copied()
                .filter(|&peer| peer != id)
                .collect(),
        };
        let watch_hub = WatchHub::new(state_machine.mvcc.clone());
        let (_, inbox) = crate::inbox::channel();
        let settings = NodeSettings {
            member_id: id,
            tick_interval: TICK,
            election_timeout: TICK * ELECTION_TICKS as u32,
            // Small, so that compactions and snapshots happen in every run.
            snapshot_count: 100,
            catch_up_entries: 20,
            self_member: member_info(id),
            auto_promote_learners: false,
            first_internal_id: self.rng.random(),
            bugs: self.options.bugs,
        };
        let status = Arc::new(NodeStatus::default());
        let wiring = NodeWiring {
            inbox,
            network: Box::new(network),
            status: status.clone(),
            watch_hub: watch_hub.clone(),
            clock: self.clock.clone(),
        };
        let mut node = Node::<true>::new(raw, db, state_machine.clone(), settings, wiring);
        // Every event from the first revision: the watcher replays the member's
        // whole history, then follows it live.
        let (queue, watch) = WatchQueue::new();
        watch_hub.watch(
            WatchSpec {
                key: Bytes::from_static(b"\0"),
                range_end: Bytes::from_static(b"\0"),
                start_revision: 1,
                prev_kv: false,
                no_put: false,
                no_delete: false,
            },
            &queue,
        );
        let timeout = self.election_timeout_ticks();
        node.raft().set_randomized_election_timeout(timeout);
        let role = (node.raft().term, node.raft().state);
        let first_index = node.raft().raft_log.first_index();
        let member = &mut self.members[idx];
        member.life += 1;
        member.restart_at = None;
        member.paused_until = None;
        member.running = Some(Running {
            node,
            status,
            outbox,
            watch_hub,
            watch,
            watched_revision: 1,
            seen_puts: BTreeSet::new(),
            role,
            revision: state_machine.mvcc.current_revision(),
            recorded_commit: first_index.saturating_sub(1),
        });
        Ok(())
    }

    fn election_timeout_ticks(&mut self) -> usize {
        self.rng.random_range(ELECTION_TICKS..2 * ELECTION_TICKS)
    }

    /// Power loss on one member: its process and unsynced writes are gone.
    fn crash(&mut self, idx: usize, down_for: Duration) {
        let now = self.now();
        let member = &mut self.members[idx];
        if member.running.is_none() {
            return;
        }
        member.disk.crash();
        member.running = None;
        member.restart_at = Some(now + down_for);
        self.stats.crashes += 1;
    }

    fn run(&mut self) -> Result<(), String> {
        let faulty_until = self.options.duration;
        let clients_until = faulty_until + QUIET;
        let end = clients_until + SETTLE;
        loop {
            let now = self.now();
            if self.faults_on && now >= faulty_until {
                self.heal_all()?;
                self.faults_on = false;
            }
            if self.clients_on && now >= clients_until {
                self.clients_on = false;
            }
            if now >= end || (!self.clients_on && now >= clients_until && self.settled()) {
                break;
            }
            let mut touched = BTreeSet::new();
            self.deliver_due(now, &mut touched);
            for idx in 0..self.members.len() {
                if let Some(restart_at) = self.members[idx].restart_at
                    && restart_at <= now
                {
                    if let Err(error) = self.start(idx) {
                        // The run cannot go on without it; what it found stands.
                        self.violation(NO_PANIC, error);
                        return Ok(());
                    }
                    touched.insert(idx);
                }
                let paused = self.members[idx]
                    .paused_until
                    .is_some_and(|until| until > now);
                if self.members[idx].next_tick <= now && !paused {
                    self.members[idx].paused_until = None;
                    // As the real loop: one tick however late, then on schedule.
                    let member = &mut self.members[idx];
                    member.next_tick += TICK;
                    if member.next_tick <= now {
                        member.next_tick = now + TICK;
                    }
                    if let Some(running) = &mut self.members[idx].running {
                        running.node.tick();
                        touched.insert(idx);
                    }
                }
            }
            if self.faults_on {
                self.inject_faults(now);
            }
            self.drive_clients(now, &mut touched);
            self.drive_lease_clients(now, &mut touched);
            while let Some(idx) = touched.pop_first() {
                self.process(idx, &mut touched)?;
            }
            self.poll_clients(now);
            self.poll_lease_clients(now, &mut touched);
            while let Some(idx) = touched.pop_first() {
                self.process(idx, &mut touched)?;
            }
            self.reconcile_membership()?;
            let next = self.next_event_time(now);
            self.clock.advance(next.saturating_sub(now));
        }
        self.stats.simulated = self.now();
        self.final_checks();
        Ok(())
    }

    fn next_event_time(&self, now: Duration) -> Duration {
        let mut next = now + TICK;
        if let Some(top) = self.in_flight.peek() {
            next = next.min(top.at);
        }
        for member in &self.members {
            match member.paused_until {
                Some(until) if until > now => next = next.min(until),
                _ => next = next.min(member.next_tick),
            }
            if let Some(restart_at) = member.restart_at {
                next = next.min(restart_at);
            }
        }
        for client in &self.clients {
            if client.operation.is_none() {
                next = next.min(client.next_at);
            }
        }
        for client in &self.lease_clients {
            if client.request.is_none() {
                next = next.min(client.next_at);
            }
        }
        next.max(now + Duration::from_micros(100))
    }

    /// True once every member runs and all have applied the same index.
    fn settled(&mut self) -> bool {
        let mut applied = BTreeSet::new();
        for member in self.members.iter().filter(|member| !member.removed) {
            match &member.running {
                Some(running) => {
                    applied.insert(running.node.state_machine().mvcc.consistent_index());
                }
                None => return false,
            }
        }
        applied.len() == 1
            && self.in_flight.len() < 4 * self.members.len()
            && self.clients.iter().all(|client| client.operation.is_none())
            && self
                .lease_clients
                .iter()
                .all(|client| client.request.is_none())
    }

    fn deliver_due(&mut self, now: Duration, touched: &mut BTreeSet<usize>) {
        while self.in_flight.peek().is_some_and(|top| top.at <= now) {
            let InFlight { message, seq, .. } = self.in_flight.pop().expect("peeked");
            let (from, to) = (message.from, message.to);
            if let Some(idx) = self.ids.iter().position(|&id| id == to)
                && let Some(until) = self.members[idx].paused_until
                && until > now
            {
                // Waits in the socket until the member runs again.
                self.in_flight.push(InFlight {
                    at: until,
                    seq,
                    message,
                });
                continue;
            }
            let is_snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
            let to_idx = self.ids.iter().position(|&id| id == to);
            let from_idx = self.ids.iter().position(|&id| id == from);
            let delivered = !self.blocked.contains(&(from, to))
                && to_idx.is_some_and(|idx| self.members[idx].running.is_some());
            if delivered {
                let idx = to_idx.expect("checked");
                (
                    from,
                    to,
                    message.get_msg_type() as i32,
                    message.term,
                    message.index,
                )
                    .hash(&mut self.trace);
                let running = self.members[idx].running.as_mut().expect("checked");
                running.node.handle_input(NodeInput::Raft(message));
                touched.insert(idx);
                self.stats.messages_delivered += 1;
            } else {
                self.stats.messages_dropped += 1;
            }
            if is_snapshot {
                let status = if delivered {
                    self.stats.snapshots_delivered += 1;
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                if let Some(from_idx) = from_idx
                    && let Some(running) = &mut self.members[from_idx].running
                {
                    running
                        .node
                        .handle_input(NodeInput::SnapshotStatus(to, status));
                    touched.insert(from_idx);
                }
            }
        }
    }

    /// Handles the member's readies until it has none, sends what it wrote,
    /// and checks every invariant the step could have broken.
    fn process(&mut self, idx: usize, touched: &mut BTreeSet<usize>) -> Result<(), String> {
        if self.is_paused(idx, self.now()) {
            return Ok(());
        }
        for _ in 0..16 {
            let Some(running) = &mut self.members[idx].running else {
                return Ok(());
            };
            if !running.node.has_ready() {
                break;
            }
            running
                .node
                .round()
                .map_err(|error| format!("member {}: storage failure: {error}", idx + 1))?;
        }
        let Some(running) = &mut self.members[idx].running else {
            return Ok(());
        };
        let messages = std::mem::take(&mut *running.outbox.lock());
        self.send(messages);
        self.check_role(idx);
        self.check_committed(idx);
        self.check_watch(idx);
        let Some(running) = &mut self.members[idx].running else {
            return Ok(());
        };
        let revision = running.node.state_machine().mvcc.current_revision();
        if revision < running.revision {
            let before = running.revision;
            self.violation(
                REVISIONS_FORWARD,
                format!(
                    "member {} went from revision {before} to {revision} while running",
                    idx + 1
                ),
            );
        }
        if let Some(running) = &mut self.members[idx].running {
            running.revision = running.revision.max(revision);
        }
        // A new role draws its election timeout from the seed, not from raft's
        // own thread-local generator.
        let role = {
            let raft = self.members[idx]
                .running
                .as_mut()
                .expect("running")
                .node
                .raft();
            (raft.term, raft.state)
        };
        let previous = self.members[idx].running.as_ref().expect("running").role;
        if role != previous {
            let timeout = self.election_timeout_ticks();
            let running = self.members[idx].running.as_mut().expect("running");
            running.node.raft().set_randomized_election_timeout(timeout);
            running.role = role;
            touched.insert(idx);
        }
        Ok(())
    }

    fn send(&mut self, messages: Vec<Message>) {
        let now = self.now();
        for message in messages {
            if self.blocked.contains(&(message.from, message.to)) || self.rng.random_bool(self.loss)
            {
                self.stats.messages_dropped += 1;
                if message.get_msg_type() == MessageType::MsgSnapshot {
                    // The sender learns that the snapshot did not arrive.
                    self.in_flight.push(InFlight {
                        at: now + Duration::from_millis(1),
                        seq: self.next_seq,
                        message: Message {
                            to: u64::MAX,
                            ..message
                        },
                    });
                    self.next_seq += 1;
                }
                continue;
            }
            let copies = if self.rng.random_bool(0.01) { 2 } else { 1 };
            for _ in 0..copies {
                let delay = if self.rng.random_bool(0.02) {
                    Duration::from_millis(self.rng.random_range(20..200))
                } else {
                    Duration::from_micros(self.rng.random_range(200..5000))
                };
                self.in_flight.push(InFlight {
                    at: now + delay,
                    seq: self.next_seq,
                    message: message.clone(),
                });
                self.next_seq += 1;
            }
        }
    }

    fn check_role(&mut self, idx: usize) {
        let Some(running) = &mut self.members[idx].running else {
            return;
        };
        let id = running.node.raft().id;
        let raft = running.node.raft();
        if raft.state != StateRole::Leader {
            return;
        }
        let term = raft.term;
        let became_leader = running.role != (term, StateRole::Leader);
        // Leader Completeness: the new leader's log holds every committed entry.
        let mut missing = None;
        if became_leader {
            let first = raft.raft_log.first_index();
            let last = raft.raft_log.last_index();
            for (&index, &(entry_term, _)) in self.committed.range(first..) {
                let held = if index > last {
                    None
                } else {
                    raft.raft_log.term(index).ok()
                };
                if held != Some(entry_term) {
                    missing = Some((index, entry_term, held));
                    break;
                }
            }
        }
        if became_leader {
            self.stats.leaders += 1;
        }
        if let Some((index, entry_term, held)) = missing {
            self.violation(
                LEADER_COMPLETENESS,
                format!(
                    "member {id} became leader of term {term} without committed entry {index} (term {entry_term}); its log has {held:?} there"
                ),
            );
        }
        match self.leaders.get(&term) {
            Some(&leader) if leader != id => self.violation(
                ELECTION_SAFETY,
                format!("members {leader} and {id} both lead term {term}"),
            ),
            Some(_) => {}
            None => {
                self.leaders.insert(term, id);
            }
        }
    }

    /// State Machine Safety: every member commits the same entry at an index.
    fn check_committed(&mut self, idx: usize) {
        let Some(running) = &mut self.members[idx].running else {
            return;
        };
        let raft = running.node.raft();
        let committed = raft.raft_log.committed;
        let first = raft.raft_log.first_index();
        let from = running.recorded_commit.max(first.saturating_sub(1)) + 1;
        let mut found = Vec::new();
        for index in from..=committed {
            if let Some(entry) = entry_at(raft, index) {
                found.push((index, entry.term, entry_digest(&entry)));
            }
        }
        running.recorded_commit = running.recorded_commit.max(committed);
        let id = self.members[idx].id;
        for (index, term, digest) in found {
            match self.committed.get(&index) {
                Some(&(known_term, known_digest))
                    if (known_term, known_digest) != (term, digest) =>
                {
                    self.violation(
                        STATE_MACHINE_SAFETY,
                        format!(
                            "member {id} committed another entry at index {index} (term {term}) than a member before it (term {known_term})"
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    self.committed.insert(index, (term, digest));
                }
            }
        }
    }

    /// Watch events: in revision order, no gaps, no repeats, and at each
    /// revision the same events on every member.
    fn check_watch(&mut self, idx: usize) {
        let id = self.members[idx].id;
        let mut problems = Vec::new();
        let mut batches = Vec::new();
        let mut deleted = Vec::new();
        {
            let Some(running) = &mut self.members[idx].running else {
                return;
            };
            for _ in 0..64 {
                running.watch_hub.catch_up_round();
                let mut drained = false;
                while let Ok(delivery) = running.watch.try_recv() {
                    drained = true;
                    match delivery.message {
                        WatchMessage::Events { events, .. } => {
                            let mut by_revision: BTreeMap<i64, DefaultHasher> = BTreeMap::new();
                            for event in &events {
                                let Some(kv) = &event.kv else { continue };
                                let revision = kv.mod_revision;
                                if revision < running.watched_revision {
                                    problems.push(format!(
                                        "member {id}: event at revision {revision} after revision {}",
                                        running.watched_revision
                                    ));
                                } else if revision > running.watched_revision + 1 {
                                    problems.push(format!(
                                        "member {id}: events jumped from revision {} to {revision}",
                                        running.watched_revision
                                    ));
                                }
                                running.watched_revision = running.watched_revision.max(revision);
                                let hasher = by_revision.entry(revision).or_default();
                                (event.r#type, &kv.key, &kv.value).hash(hasher);
                                if event.r#type == EventType::Put as i32 {
                                    running
                                        .seen_puts
                                        .insert((kv.key.clone(), kv.value.clone()));
                                } else if kv.key.starts_with(b"lease/") {
                                    deleted.push(kv.key.clone());
                                }
                            }
                            batches.extend(
                                by_revision
                                    .into_iter()
                                    .map(|(revision, hasher)| (revision, hasher.finish())),
                            );
                        }
                        WatchMessage::Compacted { compact_revision } => problems.push(format!(
                            "member {id}: watcher compacted at {compact_revision} with no compaction"
                        )),
                        WatchMessage::Progress { .. } => {}
                    }
                }
                if !drained {
                    break;
                }
            }
        }
        for problem in problems {
            self.violation(WATCH_ORDER, problem);
        }
        for key in deleted {
            self.leased_key_deleted(&key);
        }
        for (revision, digest) in batches {
            match self.revision_events.get(&revision) {
                Some(&known) if known != digest => self.violation(
                    STATE_MACHINE_SAFETY,
                    format!(
                        "member {id} has other events at revision {revision} than another member"
                    ),
                ),
                Some(_) => {}
                None => {
                    self.revision_events.insert(revision, digest);
                }
            }
        }
    }

    fn inject_faults(&mut self, now: Duration) {
        if let Some(ends_at) = self.fault_ends_at {
            if now < ends_at {
                return;
            }
            self.blocked.clear();
            self.loss = 0.0;
            self.fault_ends_at = None;
            self.next_fault_at = now + Duration::from_millis(self.rng.random_range(200..1500));
        }
        let someone_down = self
            .members
            .iter()
            .filter(|m| !m.removed)
            .any(|m| m.running.is_none() || m.paused_until.is_some_and(|until| until > now));
        if now < self.next_fault_at || someone_down {
            return;
        }
        let faults = [
            Fault::Crash,
            Fault::CrashAll,
            Fault::Isolate,
            Fault::IsolateLeader,
            Fault::OneWay,
            Fault::Lossy,
            Fault::Pause,
            Fault::Membership,
        ];
        let fault = faults[self.rng.random_range(0..faults.len())];
        let lasts = Duration::from_millis(self.rng.random_range(500..4000));
        let active: Vec<usize> = (0..self.members.len())
            .filter(|&idx| !self.members[idx].removed)
            .collect();
        let victim = active[self.rng.random_range(0..active.len())];
        (fault as u8, victim, lasts.as_millis() as u64).hash(&mut self.trace);
        match fault {
            Fault::Crash => {
                self.crash(victim, lasts);
                self.next_fault_at = now + lasts + Duration::from_millis(500);
                return;
            }
            Fault::CrashAll => {
                for idx in 0..self.members.len() {
                    let down = Duration::from_millis(self.rng.random_range(100..1500));
                    self.crash(idx, down);
                }
                self.next_fault_at = now + Duration::from_secs(2);
                return;
            }
            Fault::Isolate | Fault::IsolateLeader => {
                let target = match fault {
                    Fault::IsolateLeader => self.leader_idx().unwrap_or(victim),
                    _ => victim,
                };
                let id = self.members[target].id;
                for &other in &self.ids {
                    if other != id {
                        self.blocked.insert((id, other));
                        self.blocked.insert((other, id));
                    }
                }
                self.stats.partitions += 1;
            }
            Fault::OneWay => {
                // The victim hears the others but they do not hear it.
                let id = self.members[victim].id;
                for &other in &self.ids {
                    if other != id {
                        self.blocked.insert((id, other));
                    }
                }
                self.stats.partitions += 1;
            }
            Fault::Lossy => self.loss = 0.3,
            Fault::Membership => {
                self.change_membership(victim);
                self.next_fault_at = now + Duration::from_secs(3);
                return;
            }
            Fault::Pause => {
                let target = if self.rng.random_bool(0.7) {
                    self.leader_idx().unwrap_or(victim)
                } else {
                    victim
                };
                // Long enough, often, for the paused leader's lease deadlines to pass.
                let paused_for = Duration::from_millis(self.rng.random_range(1000..6000));
                self.members[target].paused_until = Some(now + paused_for);
                self.stats.pauses += 1;
                self.next_fault_at = now + paused_for + Duration::from_millis(500);
                return;
            }
        }
        self.fault_ends_at = Some(now + lasts);
    }

    /// A random member for a client's next request, if the one drawn is up.
    fn pick_member(&mut self, now: Duration) -> Option<usize> {
        let member = self.rng.random_range(0..self.members.len());
        (self.members[member].running.is_some() && !self.is_paused(member, now)).then_some(member)
    }

    fn is_paused(&self, idx: usize, now: Duration) -> bool {
        self.members[idx]
            .paused_until
            .is_some_and(|until| until > now)
    }

    fn leader_idx(&mut self) -> Option<usize> {
        (0..self.members.len()).find(|&idx| {
            self.members[idx]
                .running
                .as_mut()
                .is_some_and(|running| running.node.raft().state == StateRole::Leader)
        })
    }

    /// End of the faulty phase: the network heals and every member runs.
    fn heal_all(&mut self) -> Result<(), String> {
        for member in &mut self.members {
            member.paused_until = None;
        }
        self.blocked.clear();
        self.loss = 0.0;
        self.fault_ends_at = None;
        for idx in 0..self.members.len() {
            if self.members[idx].running.is_none()
                && !self.members[idx].removed
                && let Err(error) = self.start(idx)
            {
                self.violation(NO_PANIC, error);
                self.members[idx].removed = true;
            }
        }
        Ok(())
    }

    fn drive_clients(&mut self, now: Duration, touched: &mut BTreeSet<usize>) {
        if !self.clients_on {
            return;
        }
        for client_idx in 0..self.clients.len() {
            let client = &self.clients[client_idx];
            if client.operation.is_some() || client.next_at > now {
                continue;
            }
            let Some(member) = self.pick_member(now) else {
                self.clients[client_idx].next_at = now + Duration::from_millis(50);
                continue;
            };
            let key = Bytes::from(format!("k{}", self.rng.random_range(0..KEYS)));
            let is_write = self.rng.random_bool(0.6);
            let count = self.clients[client_idx].count;
            self.clients[client_idx].count += 1;
            let key_floor = self.key_floors.get(&key).copied().unwrap_or(0);
            let running = self.members[member].running.as_mut().expect("checked");
            let (value, waiter) = if is_write {
                let value = Bytes::from(format!("c{client_idx}-{count}"));
                let id = self.next_request_id;
                self.next_request_id += 1;
                let request = RaftRequest {
                    id,
                    proposer: running.node.raft().id,
                    put: Some(PutRequest {
                        key: key.clone(),
                        value: value.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let (respond, receive) = oneshot::channel();
                running.node.handle_input(NodeInput::Propose {
                    id,
                    data: request.encode_to_vec(),
                    respond,
                });
                (Some(value), Waiter::Write(receive))
            } else {
                let (respond, receive) = oneshot::channel();
                running.node.handle_input(NodeInput::ReadIndex { respond });
                (None, Waiter::Read(receive))
            };
            touched.insert(member);
            self.clients[client_idx].operation = Some(Operation {
                key,
                value,
                member,
                life: self.members[member].life,
                started: now,
                floor: self.floor,
                key_floor,
                waiter,
            });
        }
    }

    fn poll_clients(&mut self, now: Duration) {
        for client_idx in 0..self.clients.len() {
            let Some(mut operation) = self.clients[client_idx].operation.take() else {
                continue;
            };
            let member = &self.members[operation.member];
            let alive = member.running.is_some() && member.life == operation.life;
            let is_write = operation.value.is_some();
            let outcome = if !alive {
                Some(Err(true))
            } else {
                match &mut operation.waiter {
                    Waiter::Write(receive) => match receive.try_recv() {
                        Ok(ApplyResult::Put(response)) => {
                            Some(Ok(response.header.map_or(0, |header| header.revision)))
                        }
                        Ok(_) => Some(Err(false)),
                        Err(oneshot::error::TryRecvError::Empty) => None,
                        Err(oneshot::error::TryRecvError::Closed) => Some(Err(true)),
                    },
                    Waiter::Read(receive) => match receive.try_recv() {
                        Ok(Ok(())) => Some(Ok(0)),
                        Ok(Err(_)) => Some(Err(false)),
                        Err(oneshot::error::TryRecvError::Empty) => None,
                        Err(oneshot::error::TryRecvError::Closed) => Some(Err(true)),
                    },
                }
            };
            let outcome = match outcome {
                None if now.saturating_sub(operation.started) > CLIENT_TIMEOUT => Some(Err(true)),
                other => other,
            };
            let Some(outcome) = outcome else {
                self.clients[client_idx].operation = Some(operation);
                continue;
            };
            self.clients[client_idx].next_at =
                now + Duration::from_millis(self.rng.random_range(0..30));
            (client_idx, now.as_micros() as u64, format!("{outcome:?}")).hash(&mut self.trace);
            match outcome {
                Ok(revision) if is_write => self.complete_write(operation, revision),
                Ok(_) => self.complete_read(operation),
                Err(unknown) => match (is_write, unknown) {
                    (true, true) => self.stats.writes_unknown += 1,
                    (true, false) => self.stats.writes_failed += 1,
                    (false, _) => self.stats.reads_failed += 1,
                },
            }
        }
    }

    fn complete_write(&mut self, operation: Operation, revision: i64) {
        self.stats.writes_acked += 1;
        let value = operation.value.expect("a write");
        if revision < operation.floor {
            self.violation(
                REVISIONS_FORWARD,
                format!(
                    "a put to {:?} was acknowledged at revision {revision}, below revision {} acknowledged before it began",
                    operation.key, operation.floor
                ),
            );
        }
        self.floor = self.floor.max(revision);
        let key_floor = self.key_floors.entry(operation.key.clone()).or_default();
        *key_floor = (*key_floor).max(revision);
        self.acked.push((operation.key, value, revision));
    }

    /// A linearizable read released by the member: read its state now.
    fn complete_read(&mut self, operation: Operation) {
        let Some(running) = &self.members[operation.member].running else {
            return;
        };
        let response = running.node.state_machine().mvcc.range(&RangeRequest {
            key: operation.key.clone(),
            ..Default::default()
        });
        let Ok(response) = response else {
            self.stats.reads_failed += 1;
            return;
        };
        self.stats.reads_ok += 1;
        let revision = response.header.map_or(0, |header| header.revision);
        let mod_revision = response.kvs.first().map_or(0, |kv| kv.mod_revision);
        let id = self.members[operation.member].id;
        if revision < operation.floor {
            self.violation(
                REVISIONS_FORWARD,
                format!(
                    "a linearizable read on member {id} answered at revision {revision}, below revision {} acknowledged before it began (a stale read)",
                    operation.floor
                ),
            );
        } else if mod_revision < operation.key_floor {
            self.violation(
                REVISIONS_FORWARD,
                format!(
                    "a linearizable read of {:?} on member {id} returned the version of revision {mod_revision}, older than the write acknowledged at {} before it began",
                    operation.key, operation.key_floor
                ),
            );
        }
        self.floor = self.floor.max(revision);
    }

    fn final_checks(&mut self) {
        // Log Matching over every pair of running members.
        let mut logs = Vec::new();
        for member in &mut self.members {
            let Some(running) = &mut member.running else {
                continue;
            };
            let raft = running.node.raft();
            let first = raft.raft_log.first_index();
            let last = raft.raft_log.last_index();
            let entries: BTreeMap<u64, (u64, u64)> = (first..=last)
                .filter_map(|index| {
                    entry_at(raft, index).map(|entry| (index, (entry.term, entry_digest(&entry))))
                })
                .collect();
            logs.push((member.id, entries));
        }
        let mut problems = Vec::new();
        for (a, (id_a, log_a)) in logs.iter().enumerate() {
            for (id_b, log_b) in logs.iter().skip(a + 1) {
                let same_term_at = log_a
                    .iter()
                    .rev()
                    .find(|(index, (term, _))| log_b.get(index).is_some_and(|(t, _)| t == term))
                    .map(|(index, _)| *index);
                let Some(upto) = same_term_at else { continue };
                for (index, entry) in log_a.range(..=upto) {
                    if let Some(other) = log_b.get(index)
                        && other != entry
                    {
                        problems.push(format!(
                            "members {id_a} and {id_b} agree on the term at index {upto} but differ at {index}"
                        ));
                        break;
                    }
                }
            }
        }
        for problem in problems {
            self.violation(LOG_MATCHING, problem);
        }

        // Convergence, then every acknowledged write in every member's history.
        let mut states = BTreeMap::new();
        for member in &mut self.members {
            let Some(running) = &mut member.running else {
                continue;
            };
            let mvcc = &running.node.state_machine().mvcc;
            let hash = mvcc.hash_kv(0).map(|(hash, _)| hash).unwrap_or(0);
            states.insert(member.id, (mvcc.current_revision(), hash));
        }
        let distinct: BTreeSet<_> = states.values().collect();
        let active = self.members.iter().filter(|member| !member.removed).count();
        if distinct.len() > 1 || states.len() != active {
            let detail = format!(
                "after {:?} without faults, (revision, hash) by member: {states:?}",
                QUIET + SETTLE
            );
            self.violation(CONVERGENCE, detail);
        }
        let mut lost = Vec::new();
        for member in &self.members {
            let Some(running) = &member.running else {
                continue;
            };
            if let Some((key, value, revision)) = self
                .acked
                .iter()
                .find(|(key, value, _)| !running.seen_puts.contains(&(key.clone(), value.clone())))
            {
                lost.push(format!(
                    "member {} has no put of {value:?} to {key:?}, acknowledged at revision {revision}",
                    member.id
                ));
            }
        }
        for problem in lost {
            self.violation(NO_LOST_WRITE, problem);
        }
    }

    fn report(self) -> SimReport {
        SimReport {
            seed: self.options.seed,
            violations: self.violations,
            stats: self.stats,
            trace_digest: self.trace.finish(),
        }
    }
}

/// The lease workload and its checker.
impl World {
    fn drive_lease_clients(&mut self, now: Duration, touched: &mut BTreeSet<usize>) {
        if !self.clients_on {
            return;
        }
        for client_idx in 0..self.lease_clients.len() {
            let client = &self.lease_clients[client_idx];
            if client.request.is_some() || client.next_at > now {
                continue;
            }
            let Some(member) = self.pick_member(now) else {
                self.lease_clients[client_idx].next_at = now + Duration::from_millis(50);
                continue;
            };
            let client = &mut self.lease_clients[client_idx];
            let step = if client.lease == 0 {
                LeaseStep::Grant
            } else if client.key.is_empty() {
                LeaseStep::Put
            } else if client.keep_alives_left > 0 {
                LeaseStep::KeepAlive
            } else {
                LeaseStep::Revoke
            };
            let waiter = match step {
                LeaseStep::KeepAlive => {
                    client.keep_alives_left -= 1;
                    LeaseWaiter::CaughtUp
                }
                _ => {
                    let request = match step {
                        LeaseStep::Grant => {
                            client.count += 1;
                            client.lease = ((client_idx as i64 + 1) << 32) | client.count as i64;
                            client.ttl = self.rng.random_range(2..=4);
                            client.keep_alives_left = self.rng.random_range(2..10);
                            RaftRequest {
                                lease_grant: Some(proto::etcdserverpb::LeaseGrantRequest {
                                    ttl: client.ttl,
                                    id: client.lease,
                                }),
                                ..Default::default()
                            }
                        }
                        LeaseStep::Put => RaftRequest {
                            put: Some(PutRequest {
                                key: Bytes::from(format!("lease/{:x}", client.lease)),
                                value: Bytes::from_static(b"leased"),
                                lease: client.lease,
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        _ => {
                            // Half the leases are revoked, the others left to expire.
                            if self.rng.random_bool(0.5) {
                                if let Some(record) = self.leases.get_mut(&client.lease) {
                                    record.revoke_sent = true;
                                }
                                RaftRequest {
                                    lease_revoke: Some(proto::etcdserverpb::LeaseRevokeRequest {
                                        id: client.lease,
                                    }),
                                    ..Default::default()
                                }
                            } else {
                                client.lease = 0;
                                client.key = Bytes::new();
                                client.next_at = now + Duration::from_millis(10);
                                continue;
                            }
                        }
                    };
                    let id = self.next_request_id;
                    self.next_request_id += 1;
                    let running = self.members[member].running.as_mut().expect("checked");
                    let request = RaftRequest {
                        id,
                        proposer: running.node.raft().id,
                        ..request
                    };
                    let (respond, receive) = oneshot::channel();
                    running.node.handle_input(NodeInput::Propose {
                        id,
                        data: request.encode_to_vec(),
                        respond,
                    });
                    touched.insert(member);
                    LeaseWaiter::Apply(receive)
                }
            };
            let lease = self.lease_clients[client_idx].lease;
            self.lease_clients[client_idx].request = Some(LeaseRequest {
                step,
                lease,
                member,
                life: self.members[member].life,
                started: now,
                waiter,
            });
        }
    }

    fn poll_lease_clients(&mut self, now: Duration, touched: &mut BTreeSet<usize>) {
        for client_idx in 0..self.lease_clients.len() {
            let Some(mut request) = self.lease_clients[client_idx].request.take() else {
                continue;
            };
            let member = &self.members[request.member];
            let alive = member.running.is_some() && member.life == request.life;
            let timed_out = now.saturating_sub(request.started) > CLIENT_TIMEOUT;
            // Some(true): done, the lease lives; Some(false): done, it does not
            // (or the outcome is unknown); None: still waiting.
            let outcome = if !alive || timed_out {
                Some(false)
            } else {
                self.advance_lease_request(&mut request, touched)
            };
            let Some(succeeded) = outcome else {
                self.lease_clients[client_idx].request = Some(request);
                continue;
            };
            let client = &mut self.lease_clients[client_idx];
            (
                client_idx,
                now.as_micros() as u64,
                request.step as u8,
                succeeded,
            )
                .hash(&mut self.trace);
            let ttl = Duration::from_secs(client.ttl as u64);
            match (request.step, succeeded) {
                (LeaseStep::Grant, true) => {
                    self.stats.leases_granted += 1;
                    self.leases.insert(
                        client.lease,
                        LeaseRecord {
                            key: Bytes::from(format!("lease/{:x}", client.lease)),
                            alive_until: request.started + ttl,
                            revoke_sent: false,
                            deleted_at: None,
                        },
                    );
                    client.next_at = now;
                }
                (LeaseStep::Put, true) => {
                    client.key = Bytes::from(format!("lease/{:x}", client.lease));
                    client.next_at = now + ttl / 3;
                }
                (LeaseStep::KeepAlive, true) => {
                    self.stats.keep_alives += 1;
                    let lease = client.lease;
                    client.next_at = now + ttl / 3;
                    if let Some(record) = self.leases.get_mut(&lease) {
                        record.alive_until = record.alive_until.max(request.started + ttl);
                        if let Some(deleted_at) = record.deleted_at {
                            let key = record.key.clone();
                            self.violation(
                                LEASE_SAFETY,
                                format!(
                                    "a keep-alive sent at {:.3}s found lease {lease:x} alive, but its key {key:?} was deleted at {:.3}s",
                                    request.started.as_secs_f64(),
                                    deleted_at.as_secs_f64()
                                ),
                            );
                        }
                    }
                }
                (LeaseStep::Grant, false) | (LeaseStep::Put, false) | (LeaseStep::Revoke, _) => {
                    // Start over with a new lease (a failed grant may still
                    // have been applied; its lease expires on its own).
                    client.lease = 0;
                    client.key = Bytes::new();
                    client.next_at = now + Duration::from_millis(self.rng.random_range(10..200));
                }
                (LeaseStep::KeepAlive, false) => {
                    // The lease is gone, or the answer never came: give up on it.
                    client.lease = 0;
                    client.key = Bytes::new();
                    client.next_at = now + Duration::from_millis(50);
                }
            }
        }
    }

    /// Moves a lease request on; returns its outcome once it has one.
    fn advance_lease_request(
        &mut self,
        request: &mut LeaseRequest,
        touched: &mut BTreeSet<usize>,
    ) -> Option<bool> {
        let confirm_leadership = !self.options.bugs.stale_lease_revoke;
        match &mut request.waiter {
            LeaseWaiter::Apply(receive) => match receive.try_recv() {
                Ok(ApplyResult::LeaseGrant(_))
                | Ok(ApplyResult::Put(_))
                | Ok(ApplyResult::LeaseRevoke(_)) => Some(true),
                Ok(_) => Some(false),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => Some(false),
            },
            LeaseWaiter::CaughtUp => {
                // Renewals go to the leader; a follower forwards them.
                let leader_id = {
                    let running = self.members[request.member].running.as_mut()?;
                    let raft = running.node.raft();
                    if raft.state == StateRole::Leader {
                        raft.id
                    } else {
                        raft.leader_id
                    }
                };
                let leader = self.ids.iter().position(|&id| id == leader_id)?;
                if self.is_paused(leader, self.now()) {
                    return None;
                }
                let running = self.members[leader].running.as_mut()?;
                if !running.node.state_machine().lessor.is_primary() {
                    return None;
                }
                let status = &running.status;
                let caught_up = status
                    .committed_in_term
                    .load(std::sync::atomic::Ordering::Acquire)
                    && status
                        .applied_index
                        .load(std::sync::atomic::Ordering::Acquire)
                        >= status
                            .commit_index
                            .load(std::sync::atomic::Ordering::Acquire);
                if !caught_up {
                    return None;
                }
                request.member = leader;
                request.life = self.members[leader].life;
                if !confirm_leadership {
                    return Some(self.renew_on(leader, request.lease));
                }
                let (respond, receive) = oneshot::channel();
                let running = self.members[leader].running.as_mut()?;
                running.node.handle_input(NodeInput::ReadIndex { respond });
                touched.insert(leader);
                request.waiter = LeaseWaiter::Confirming(receive);
                None
            }
            LeaseWaiter::Confirming(receive) => match receive.try_recv() {
                Ok(Ok(())) => Some(self.renew_on(request.member, request.lease)),
                Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => Some(false),
                Err(oneshot::error::TryRecvError::Empty) => None,
            },
        }
    }

    /// The lessor's renewal on a member that (still) believes it leads.
    fn renew_on(&mut self, member: usize, lease: i64) -> bool {
        let Some(running) = &self.members[member].running else {
            return false;
        };
        let lessor = &running.node.state_machine().lessor;
        lessor.is_primary() && lessor.renew(lease).is_some()
    }

    fn leased_key_deleted(&mut self, key: &Bytes) {
        let now = self.now();
        let Some((&lease, record)) = self
            .leases
            .iter_mut()
            .find(|(_, record)| record.key == *key)
        else {
            return;
        };
        if record.deleted_at.is_some() {
            return;
        }
        record.deleted_at = Some(now);
        if !record.revoke_sent {
            self.stats.leases_expired += 1;
        }
        if !record.revoke_sent && now < record.alive_until {
            let alive_until = record.alive_until;
            self.violation(
                LEASE_SAFETY,
                format!(
                    "key {key:?} of lease {lease:x} was deleted at {:.3}s, though the lease was reported alive until at least {:.3}s and nobody revoked it",
                    now.as_secs_f64(),
                    alive_until.as_secs_f64()
                ),
            );
        }
    }
}

/// Membership changes: proposed through the leader like `etcdctl member
/// add/remove`, then carried out as an operator would once applied.
impl World {
    /// With three voters, adds a fourth; with more, removes `victim`.
    fn change_membership(&mut self, victim: usize) {
        let Some(leader) = self.leader_idx() else {
            return;
        };
        if self.is_paused(leader, self.now()) {
            return;
        }
        let active = self.members.iter().filter(|member| !member.removed).count();
        let (change_type, member) = if active <= self.options.members {
            let id = self.ids.iter().max().copied().unwrap_or(0) + 1;
            (raft::eraftpb::ConfChangeType::AddNode, member_info(id))
        } else {
            let id = self.members[victim].id;
            (raft::eraftpb::ConfChangeType::RemoveNode, member_info(id))
        };
        (change_type as i32, member.id).hash(&mut self.trace);
        let id = self.next_request_id;
        self.next_request_id += 1;
        let running = self.members[leader].running.as_mut().expect("leads");
        let (change, context) =
            crate::node::member_change(id, running.node.raft().id, change_type, &member);
        // Nobody waits: the outcome shows in the members the leader applies.
        let (respond, _) = oneshot::channel();
        running.node.handle_input(NodeInput::ProposeConfChange {
            id,
            change,
            context,
            respond,
        });
        let mut touched = BTreeSet::new();
        touched.insert(leader);
        while let Some(idx) = touched.pop_first() {
            if let Err(error) = self.process(idx, &mut touched) {
                self.violation(NO_PANIC, error);
            }
        }
    }

    /// Starts members the cluster has added and stops those it has removed,
    /// as the leader's applied member list says.
    fn reconcile_membership(&mut self) -> Result<(), String> {
        let now = self.now();
        let Some(leader) = self.leader_idx() else {
            return Ok(());
        };
        if self.is_paused(leader, now) {
            return Ok(());
        }
        // Only from a leader that has applied everything committed: its
        // member list is then the cluster's.
        let caught_up = {
            let status = &self.members[leader].running.as_ref().expect("leads").status;
            status
                .committed_in_term
                .load(std::sync::atomic::Ordering::Acquire)
                && status
                    .applied_index
                    .load(std::sync::atomic::Ordering::Acquire)
                    >= status
                        .commit_index
                        .load(std::sync::atomic::Ordering::Acquire)
        };
        if !caught_up {
            return Ok(());
        }
        let (cluster_id, members) = {
            let running = self.members[leader].running.as_ref().expect("leads");
            let state_machine = running.node.state_machine();
            (state_machine.cluster_id(), state_machine.members())
        };
        for member in &members {
            if self.ids.contains(&member.id) {
                continue;
            }
            self.ids.push(member.id);
            self.members.push(SimMember {
                id: member.id,
                disk: SimDisk::new(),
                running: None,
                life: 0,
                next_tick: now + Duration::from_millis(self.rng.random_range(1..100)),
                restart_at: None,
                paused_until: None,
                joins: Some((cluster_id, members.clone())),
                removed: false,
            });
            self.stats.members_added += 1;
            self.start(self.members.len() - 1)?;
        }
        for idx in 0..self.members.len() {
            let member = &self.members[idx];
            if member.removed || members.iter().any(|known| known.id == member.id) {
                continue;
            }
            let member = &mut self.members[idx];
            member.removed = true;
            member.running = None;
            member.restart_at = None;
            member.paused_until = None;
            self.stats.members_removed += 1;
        }
        Ok(())
    }
}
