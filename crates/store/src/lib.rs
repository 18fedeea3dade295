//! A shoal store member: raft consensus (tikv's raft-rs) replicating requests to
//! the MVCC state machine, everything persisted in one redb database.
//!
//! [`Member`] is the handle the API layer uses: it proposes writes and waits for
//! them to apply, serves reads (linearizable by read index, or serializable from
//! local state), and reports status. The raft loop runs on its own thread
//! (`node`); peers talk over gRPC (`transport`).

pub mod auth;
pub mod clock;
mod compactor;
pub mod config;
pub mod error;
mod inbox;
pub mod lease;
pub mod metrics;
mod node;
mod raft_log;
mod raft_stream;
pub mod restore;
pub mod sim;
mod state_machine;
mod transport;
pub mod wal;
pub mod watch;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use inbox::Sender;
use parking_lot::Mutex;
use prost::Message as _;
use proto::etcdserverpb::alarm_request::AlarmAction;
use proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmType};
use proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    Member as MemberInfo, PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader,
    TxnRequest, TxnResponse,
};
use proto::shoalpb::RaftRequest;
use raft::RawNode;
use tokio::sync::oneshot;

use clock::Clock;
pub use config::{InitialClusterState, MemberConfig};
pub use error::{StartError, StoreError};
pub use node::InjectedBugs;
use node::{Node, NodeInput, NodeSettings, NodeStatus, NodeWiring};
use raft_log::RaftLog;
use state_machine::{ApplyResult, StateMachine};
use watch::WatchHub;

/// redb's own page cache, which also holds the pages written since the last
/// durable commit. The file is in the kernel's page cache as well, so a large
/// redb cache mostly doubles what the member holds in memory: at 64 MiB the
/// members' peak RSS in the full bench/compare run was 0.54x etcd's, at 32 MiB
/// it is lower with the same throughput (BENCHMARKS.md).
const REDB_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// The raft log file in a member's data directory (see `wal`).
const WAL_FILE: &str = "raft.wal";

/// Opens (or creates) the raft log file of the data directory `data_dir`.
pub(crate) fn open_wal(data_dir: &Path) -> Result<Box<dyn wal::WalFile>, StartError> {
    let path = data_dir.join(WAL_FILE);
    let file = wal::FileWal::open(&path).map_err(|error| StartError::Database {
        path: path.display().to_string(),
        message: error.to_string(),
    })?;
    Ok(Box::new(file))
}

/// The etcd API version shoal's store speaks; reported where etcd reports its own version.
pub const ETCD_API_VERSION: &str = "3.4.0";

/// A running store member.
pub struct Member {
    config: MemberConfig,
    member_id: u64,
    inbox: Sender<NodeInput>,
    status: Arc<NodeStatus>,
    state_machine: Arc<StateMachine>,
    watch_hub: Arc<WatchHub>,
    activity: transport::PeerActivity,
    db: Arc<mvcc::Db>,
    db_path: PathBuf,
    next_request_id: AtomicU64,
    request_timeout: Duration,
    node_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    peer_shutdown: Mutex<Option<oneshot::Sender<()>>>,
    peer_server: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Clients for forwarding lease calls to the leader, by member id.
    peer_clients: Mutex<HashMap<u64, transport::LeaderClient>>,
    /// The database file's size as last read, and when: the quota check runs
    /// on every write, and a `stat` per put was 1% of a member's CPU.
    db_size_probe: Mutex<Option<(std::time::Instant, u64)>>,
    /// Held for the member's lifetime: the data directory's lock.
    _lock: File,
}

/// How long a read of the database file's size serves the quota check.
const DB_SIZE_PROBE_EVERY: Duration = Duration::from_millis(100);

/// Why a member stopped without being asked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// It applied its own removal from the cluster.
    Removed,
    /// Its log or database could not be written: it cannot promise durability.
    StorageFailed(String),
}

/// A point-in-time view of the member, for etcd's Maintenance.Status.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    pub leader_id: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub db_size_bytes: u64,
    pub db_size_in_use_bytes: u64,
    pub revision: i64,
}

pub(crate) fn lock_data_dir(data_dir: &Path) -> Result<File, StartError> {
    let path_text = data_dir.display().to_string();
    std::fs::create_dir_all(data_dir).map_err(|source| StartError::DataDir {
        path: path_text.clone(),
        source,
    })?;
    let lock_path = data_dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| StartError::DataDir {
            path: path_text.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StartError::DataDirLocked { path: path_text })
        }
        Err(std::fs::TryLockError::Error(source)) => Err(StartError::DataDir {
            path: path_text,
            source,
        }),
    }
}

impl Member {
    /// Starts a member: locks and opens the data directory, restores or creates
    /// the raft state, listens on the peer URLs, and starts the raft loop. Must be
    /// called inside a tokio runtime.
    pub async fn start(config: MemberConfig) -> Result<Arc<Member>, StartError> {
        config.validate()?;
        let lock = lock_data_dir(&config.data_dir)?;
        let db_path = config.data_dir.join("shoal.redb");
        let database_error = |message: String| StartError::Database {
            path: db_path.display().to_string(),
            message,
        };
        let db = Arc::new(
            mvcc::Db::open(&db_path, REDB_CACHE_BYTES)
                .map_err(|error| database_error(error.to_string()))?,
        );
        let min_lease_ttl = lease::Lessor::min_ttl_for(config.election_timeout);
        let state_machine = Arc::new(
            StateMachine::open(db.clone(), min_lease_ttl, Clock::system())
                .map_err(&database_error)?,
        );

        let wal = open_wal(&config.data_dir)?;
        let restarting = raft_log::has_state(&db).map_err(&database_error)?;
        let mut member_id;
        let raft_log = if restarting {
            member_id = Self::stored_member_id(&state_machine, &config)?;
            RaftLog::load(&db, state_machine.clone(), wal)
                .map_err(&database_error)?
                .expect("has_state said the raft state exists")
        } else {
            member_id = config.member_id();
            let wtx = db
                .begin_write()
                .map_err(|error| database_error(error.to_string()))?;
            let log = match config.initial_cluster_state {
                InitialClusterState::New => {
                    let members = config.founding_members();
                    let ids: Vec<u64> = members.iter().map(|member| member.id).collect();
                    state_machine
                        .bootstrap_members(&wtx, config::cluster_id(&ids), members)
                        .map_err(&database_error)?;
                    RaftLog::bootstrap(&wtx, ids, state_machine.clone(), wal)
                        .map_err(&database_error)?
                }
                InitialClusterState::Existing => {
                    // Learn our id and the cluster from a running member, as etcd does.
                    let (cluster_id, members) = Self::discover_cluster(&config).await?;
                    let advertised = advertised_peer_urls(&config);
                    let me = members
                        .iter()
                        .find(|member| member.peer_ur_ls == advertised)
                        .ok_or_else(|| {
                            StartError::Config(format!(
                                "no member of the running cluster has peer URLs {}: add this member first (etcdctl member add {} --peer-urls={})",
                                advertised.join(","),
                                config.name,
                                advertised.join(",")
                            ))
                        })?;
                    member_id = me.id;
                    state_machine
                        .bootstrap_members(&wtx, cluster_id, members)
                        .map_err(&database_error)?;
                    RaftLog::empty(&wtx, state_machine.clone(), wal).map_err(&database_error)?
                }
            };
            wtx.commit()
                .map_err(|error| database_error(error.to_string()))?;
            log
        };

        state_machine.auth.configure(config.auth);
        let consistent_index = state_machine.mvcc.consistent_index();
        let applied = if consistent_index == 0 {
            raft_log.truncated_index()
        } else {
            consistent_index
        };
        if applied < raft_log.truncated_index() {
            return Err(database_error(format!(
                "applied index {applied} is behind the compacted raft log ({}): the data directory is damaged",
                raft_log.truncated_index()
            )));
        }
        let raft_config = node::raft_config(member_id, config.election_ticks(), applied);
        raft_config
            .validate()
            .map_err(|error| StartError::Raft(error.to_string()))?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, raft_log, &logger)
            .map_err(|error| StartError::Raft(error.to_string()))?;

        // Listen for peers before anything can send to us.
        let mut listeners = Vec::new();
        for url in &config.listen_peer_urls {
            let listener = transport::bind(url)
                .await
                .map_err(|source| StartError::PeerListen {
                    url: config::url_text(url).to_string(),
                    source,
                })?;
            listeners.push(listener);
        }

        let (inbox_sender, inbox) = inbox::channel();
        let status = Arc::new(NodeStatus::default());
        let activity = transport::PeerActivity::default();
        let runtime = tokio::runtime::Handle::current();
        let mut network =
            transport::PeerNetwork::new(runtime.clone(), inbox_sender.clone(), activity.clone())
                .with_metrics(status.metrics.peer.clone());
        let mut known_peer_urls: HashMap<u64, Vec<String>> = state_machine
            .members()
            .into_iter()
            .map(|member| (member.id, member.peer_ur_ls))
            .collect();
        if config.initial_cluster_state == InitialClusterState::Existing {
            for urls in config.initial_cluster.values() {
                let id = config::member_id(urls, &config.initial_cluster_token);
                known_peer_urls.entry(id).or_insert_with(|| {
                    urls.iter()
                        .map(|url| config::url_text(url).to_string())
                        .collect()
                });
            }
        }
        for (peer_id, urls) in known_peer_urls {
            if peer_id != member_id {
                node::Network::connect(&mut network, peer_id, &urls);
            }
        }

        let (peer_shutdown, peer_shutdown_signal) = oneshot::channel::<()>();
        let shared_signal = futures::future::FutureExt::shared(async move {
            let _ = peer_shutdown_signal.await;
        });
        let mut servers = Vec::new();
        for listener in listeners {
            let signal = shared_signal.clone();
            let inbox = inbox_sender.clone();
            let leases = state_machine.clone();
            let peer_status = status.clone();
            let patience = config.election_timeout;
            servers.push(tokio::spawn(async move {
                if let Err(error) = transport::serve_peers(
                    listener,
                    transport::PeerContext {
                        inbox,
                        state_machine: leases,
                        member_id,
                        status: peer_status,
                        patience,
                    },
                    signal,
                )
                .await
                {
                    tracing::error!(%error, "peer server failed");
                }
            }));
        }
        let peer_server = tokio::spawn(async move {
            for server in servers {
                let _ = server.await;
            }
        });

        let self_member = MemberInfo {
            id: member_id,
            name: config.name.clone(),
            peer_ur_ls: config
                .initial_advertise_peer_urls
                .iter()
                .map(|url| config::url_text(url).to_string())
                .collect(),
            client_ur_ls: config
                .advertise_client_urls
                .iter()
                .map(|url| config::url_text(url).to_string())
                .collect(),
            is_learner: false,
        };
        let settings = NodeSettings {
            member_id,
            tick_interval: config.heartbeat_interval,
            election_timeout: config.election_timeout,
            snapshot_count: config.snapshot_count,
            catch_up_entries: config.snapshot_count.min(5000),
            self_member,
            auto_promote_learners: config.auto_promote_learners,
            first_internal_id: rand::random(),
            bugs: node::InjectedBugs::default(),
        };
        let watch_hub = WatchHub::new(state_machine.mvcc.clone());
        tokio::spawn(watch_hub.clone().run_catch_up());
        let wiring = NodeWiring {
            inbox,
            network: Box::new(network),
            status: status.clone(),
            watch_hub: watch_hub.clone(),
            clock: Clock::system(),
        };
        // A real member's loop: the simulation's fault switches compile away.
        let node = Node::<false>::new(raw, db.clone(), state_machine.clone(), settings, wiring);
        let node_thread = std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || node.run())
            .map_err(|error| StartError::Raft(format!("cannot start the raft thread: {error}")))?;

        tracing::info!(
            name = %config.name,
            member_id = %format!("{member_id:x}"),
            cluster_id = %format!("{:x}", state_machine.cluster_id()),
            restarting,
            "store member started"
        );
        let request_timeout = Duration::from_secs(5) + config.election_timeout * 2;
        let start_id = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64)
            << 8;
        let member = Arc::new(Member {
            config,
            member_id,
            inbox: inbox_sender,
            status,
            state_machine,
            watch_hub,
            activity,
            db,
            db_path,
            next_request_id: AtomicU64::new(start_id),
            request_timeout,
            node_thread: Mutex::new(Some(node_thread)),
            peer_shutdown: Mutex::new(Some(peer_shutdown)),
            peer_server: Mutex::new(Some(peer_server)),
            peer_clients: Mutex::new(HashMap::new()),
            db_size_probe: Mutex::new(None),
            _lock: lock,
        });
        if let Some(policy) = member.config.auto_compaction {
            tokio::spawn(compactor::run(Arc::downgrade(&member), policy));
        }
        Ok(member)
    }

    /// Asks the members named in `--initial-cluster` (other than this one) for the
    /// running cluster's id and member list.
    async fn discover_cluster(config: &MemberConfig) -> Result<(u64, Vec<MemberInfo>), StartError> {
        let advertised = advertised_peer_urls(config);
        let mut failures = Vec::new();
        for urls in config.initial_cluster.values() {
            for url in urls {
                let url = config::url_text(url).to_string();
                if advertised.contains(&url) {
                    continue;
                }
                match tokio::time::timeout(Duration::from_secs(3), transport::fetch_members(&url))
                    .await
                {
                    Ok(Ok(response)) => {
                        let cluster_id = response.header.map_or(0, |header| header.cluster_id);
                        return Ok((cluster_id, response.members));
                    }
                    Ok(Err(error)) => failures.push(format!("{url}: {error}")),
                    Err(_) => failures.push(format!("{url}: timed out")),
                }
            }
        }
        Err(StartError::Config(format!(
            "--initial-cluster-state existing: could not reach any member of the running cluster ({})",
            if failures.is_empty() {
                "--initial-cluster names no other member".to_string()
            } else {
                failures.join("; ")
            }
        )))
    }

    /// On restart the member's id is whichever stored member has our peer URLs.
    fn stored_member_id(
        state_machine: &StateMachine,
        config: &MemberConfig,
    ) -> Result<u64, StartError> {
        let advertised: Vec<String> = config
            .initial_advertise_peer_urls
            .iter()
            .map(|url| config::url_text(url).to_string())
            .collect();
        let expected = config.member_id();
        let members = state_machine.members();
        if members.iter().any(|member| member.id == expected) {
            return Ok(expected);
        }
        members
            .iter()
            .find(|member| member.peer_ur_ls == advertised)
            .map(|member| member.id)
            .ok_or_else(|| {
                StartError::Config(format!(
                    "the data directory belongs to another member: no member in it has peer URLs {}",
                    advertised.join(",")
                ))
            })
    }

    pub fn is_leader(&self) -> bool {
        self.status.leader_id.load(Ordering::Acquire) == self.member_id
    }

    pub fn compact_revision(&self) -> i64 {
        self.state_machine.mvcc.compact_revision()
    }

    pub fn config(&self) -> &MemberConfig {
        &self.config
    }

    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.state_machine.cluster_id()
    }

    /// The member's watchers; the API registers and cancels watches here.
    pub fn watch_hub(&self) -> &Arc<WatchHub> {
        &self.watch_hub
    }

    pub fn members(&self) -> Vec<MemberInfo> {
        self.state_machine.members()
    }

    /// A response header as etcd fills it: cluster, member, revision and raft term.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id(),
            member_id: self.member_id,
            revision,
            raft_term: self.status.term.load(Ordering::Acquire),
        }
    }

    /// The header with the current revision.
    pub fn current_header(&self) -> ResponseHeader {
        self.header(self.state_machine.mvcc.current_revision())
    }

    pub fn status(&self) -> MemberStatus {
        let db_size_bytes = std::fs::metadata(&self.db_path)
            .map(|metadata| metadata.len())
            .unwrap_or(0);
        MemberStatus {
            leader_id: self.status.leader_id.load(Ordering::Acquire),
            term: self.status.term.load(Ordering::Acquire),
            commit_index: self.status.commit_index.load(Ordering::Acquire),
            applied_index: self.status.applied_index.load(Ordering::Acquire),
            db_size_bytes,
            db_size_in_use_bytes: self
                .state_machine
                .mvcc
                .db_size_in_use()
                .min(db_size_bytes.max(1)),
            revision: self.state_machine.mvcc.current_revision(),
        }
    }

    /// The member's status as etcd's `Maintenance.Status` answers it.
    pub fn status_response(&self) -> proto::etcdserverpb::StatusResponse {
        let status = self.status();
        proto::etcdserverpb::StatusResponse {
            header: Some(self.header(status.revision)),
            version: ETCD_API_VERSION.to_string(),
            db_size: i64::try_from(status.db_size_bytes).unwrap_or(i64::MAX),
            leader: status.leader_id,
            raft_index: status.commit_index,
            raft_term: status.term,
            raft_applied_index: status.applied_index,
            errors: self.alarm_descriptions(),
            db_size_in_use: i64::try_from(status.db_size_in_use_bytes).unwrap_or(i64::MAX),
            is_learner: self.is_learner(),
        }
    }

    pub fn max_request_bytes(&self) -> u64 {
        self.config.max_request_bytes
    }

    async fn propose(&self, mut request: RaftRequest) -> Result<ApplyResult, StoreError> {
        if self.status.stopped.load(Ordering::Acquire) {
            return Err(StoreError::Stopped);
        }
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        request.id = id;
        request.proposer = self.member_id;
        let data = request.encode_to_vec();
        if data.len() as u64 > self.config.max_request_bytes {
            return Err(StoreError::RequestTooLarge);
        }
        self.check_quota(&request, data.len() as u64)?;
        let (respond, result) = oneshot::channel();
        self.inbox
            .send(NodeInput::Propose { id, data, respond })
            .map_err(|_| StoreError::Stopped)?;
        match tokio::time::timeout(self.request_timeout, result).await {
            Ok(Ok(ApplyResult::Error(error))) => Err(error),
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(StoreError::Stopped),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// etcd's backend quota: a request that adds data is refused once the database
    /// would grow past `--quota-backend-bytes`, and the NOSPACE alarm is raised.
    fn check_quota(&self, request: &RaftRequest, cost: u64) -> Result<(), StoreError> {
        let adds_data = request.put.is_some()
            || request.lease_grant.is_some()
            || request.txn.as_ref().is_some_and(state_machine::txn_has_put);
        if !adds_data {
            return Ok(());
        }
        if self.state_machine.no_space() {
            return Err(StoreError::NoSpace);
        }
        let db_bytes = {
            let mut probe = self.db_size_probe.lock();
            let now = std::time::Instant::now();
            match *probe {
                Some((read_at, bytes)) if now.duration_since(read_at) < DB_SIZE_PROBE_EVERY => {
                    bytes
                }
                _ => {
                    let bytes = self.db.file_size();
                    *probe = Some((now, bytes));
                    bytes
                }
            }
        };
        if db_bytes + cost <= self.config.quota_backend_bytes {
            return Ok(());
        }
        tracing::warn!(
            quota_bytes = self.config.quota_backend_bytes,
            db_bytes,
            "database space exceeded; raising the NOSPACE alarm"
        );
        let raise = RaftRequest {
            alarm: Some(AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: self.member_id,
                alarm: AlarmType::Nospace as i32,
            }),
            proposer: 0,
            ..Default::default()
        };
        let _ = self.inbox.send(NodeInput::Propose {
            id: self.next_request_id.fetch_add(1, Ordering::Relaxed),
            data: raise.encode_to_vec(),
            respond: oneshot::channel().0,
        });
        Err(StoreError::NoSpace)
    }

    /// etcd's Alarm: list (locally), raise or clear an alarm (through raft).
    pub async fn alarm(&self, request: AlarmRequest) -> Result<Vec<AlarmMember>, StoreError> {
        if request.action == AlarmAction::Get as i32 {
            return Ok(self.state_machine.alarms(request.alarm));
        }
        match self
            .propose(RaftRequest {
                alarm: Some(request),
                ..Default::default()
            })
            .await?
        {
            ApplyResult::Alarms(alarms) => Ok(alarms),
            other => Err(unexpected(other)),
        }
    }

    /// Active alarms as etcd's Status reports them.
    pub fn alarm_descriptions(&self) -> Vec<String> {
        self.state_machine
            .alarms(AlarmType::None as i32)
            .into_iter()
            .map(|alarm| {
                let name = AlarmType::try_from(alarm.alarm)
                    .map(|kind| kind.as_str_name())
                    .unwrap_or("UNKNOWN");
                format!("memberID:{} alarm:{name} ", alarm.member_id)
            })
            .collect()
    }

    /// The auth store (users, roles, tokens) as this member has applied it.
    pub fn auth(&self) -> &auth::AuthStore {
        &self.state_machine.auth
    }

    /// Proposes one auth change (`request` has one of its auth fields set)
    /// on behalf of `caller`, who must be an admin once auth is on.
    pub async fn auth_change(
        &self,
        caller: &auth::AuthInfo,
        mut request: RaftRequest,
    ) -> Result<auth::AuthApplied, StoreError> {
        debug_assert!(auth::is_auth_request(&request));
        request.header = Some(caller.header());
        match self.propose(request).await? {
            ApplyResult::Auth(applied) => Ok(applied),
            other => Err(unexpected(other)),
        }
    }

    /// etcd's Authenticate: the password checked here (bcrypt, one check at a
    /// time), then the token issued through raft so every member knows it.
    /// Retried if the auth state changed while the password was checked.
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<String, StoreError> {
        /// Each retry means an auth change raced the check; a few suffice.
        const MAX_ATTEMPTS: usize = 5;
        self.linearizable_barrier().await?;
        for _ in 0..MAX_ATTEMPTS {
            let checked_revision = match self.auth().check_password(name, password).await {
                Ok(revision) => revision,
                Err(error) => {
                    if error != auth::AuthError::AuthNotEnabled {
                        // Never the password: only who tried and why it failed.
                        tracing::warn!(user = name, %error, "invalid authentication was requested");
                    }
                    return Err(error.into());
                }
            };
            let prefix: String = {
                use rand::Rng as _;
                const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
                let mut random = rand::rng();
                (0..16)
                    .map(|_| char::from(LETTERS[random.random_range(0..LETTERS.len())]))
                    .collect()
            };
            let request = RaftRequest {
                authenticate: Some(proto::shoalpb::InternalAuthenticateRequest {
                    name: name.to_owned(),
                    simple_token: prefix,
                }),
                ..Default::default()
            };
            let token = match self.propose(request).await? {
                ApplyResult::Auth(auth::AuthApplied::Token(token)) => token,
                other => return Err(unexpected(other)),
            };
            if checked_revision == self.auth().revision() {
                return Ok(token);
            }
            tracing::info!("auth revision changed while the password was checked; retrying");
        }
        Err(StoreError::Auth(auth::AuthError::AuthOldRevision))
    }

    /// The caller a simple token stands for. A token issued at a raft index
    /// this member has not applied yet is looked up again once it has.
    pub async fn auth_info_from_token(&self, token: &str) -> Result<auth::AuthInfo, StoreError> {
        if let Some(info) = self.auth().info_from_token(token) {
            return Ok(info);
        }
        let issued_at = auth::AuthStore::token_index(token).unwrap_or(0);
        if issued_at > self.state_machine.mvcc.consistent_index() {
            self.linearizable_barrier().await?;
            if let Some(info) = self.auth().info_from_token(token) {
                return Ok(info);
            }
        }
        tracing::warn!("invalid auth token");
        Err(auth::AuthError::InvalidAuthToken.into())
    }

    /// Waits until this member has applied everything committed when the call began.
    pub async fn linearizable_barrier(&self) -> Result<(), StoreError> {
        match node::read_barrier(&self.inbox, self.request_timeout).await {
            Err(StoreError::Timeout)
                if self.status.leader_id.load(Ordering::Acquire) == raft::INVALID_ID =>
            {
                Err(StoreError::NoLeader)
            }
            outcome => outcome,
        }
    }

    /// etcd's metrics for this member, to be served on its client port
    /// (`/metrics`), where the API adds its gRPC counters.
    pub fn metrics_registry(&self) -> ::metrics::Registry {
        let mut registry = ::metrics::Registry::default();
        self.status.metrics.register(&mut registry);
        registry.register_collector(Box::new(crate::metrics::MemberCollector {
            member_id: self.member_id,
            status: self.status.clone(),
            watch_hub: self.watch_hub.clone(),
            state_machine: self.state_machine.clone(),
            db_path: self.db_path.clone(),
            quota_backend_bytes: self.config.quota_backend_bytes,
        }));
        registry
    }

    /// The live metric handles, for the API's counts.
    pub fn metrics(&self) -> &crate::metrics::StoreMetrics {
        &self.status.metrics
    }

    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        self.status.metrics.mvcc_range.inc();
        if !request.serializable {
            self.linearizable_barrier().await?;
        }
        let mut response = self.state_machine.mvcc.range(&request)?;
        let revision = response.header.as_ref().map_or(0, |header| header.revision);
        response.header = Some(self.header(revision));
        Ok(response)
    }

    /// `range` for the gRPC API: the response encoded straight from the stored
    /// records (see `mvcc::EncodedRange`), and the header to send with it.
    pub async fn range_encoded(
        &self,
        request: RangeRequest,
    ) -> Result<(mvcc::EncodedRange, ResponseHeader), StoreError> {
        self.status.metrics.mvcc_range.inc();
        if !request.serializable {
            self.linearizable_barrier().await?;
        }
        let encoded = self.state_machine.mvcc.range_encoded(&request)?;
        let header = self.header(encoded.header_revision);
        Ok((encoded, header))
    }

    pub async fn put(&self, request: PutRequest) -> Result<PutResponse, StoreError> {
        self.put_as(None, request).await
    }

    /// A put on behalf of a client: with `caller`, the apply checks its
    /// permission again at the auth state of that moment.
    pub async fn put_as(
        &self,
        caller: Option<&auth::AuthInfo>,
        request: PutRequest,
    ) -> Result<PutResponse, StoreError> {
        let request = RaftRequest {
            put: Some(request),
            header: caller.map(auth::AuthInfo::header),
            ..Default::default()
        };
        self.propose_for(request, |result| match result {
            ApplyResult::Put(response) => Ok(response),
            other => Err(other),
        })
        .await
    }

    pub async fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, StoreError> {
        self.delete_range_as(None, request).await
    }

    pub async fn delete_range_as(
        &self,
        caller: Option<&auth::AuthInfo>,
        request: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, StoreError> {
        let request = RaftRequest {
            delete_range: Some(request),
            header: caller.map(auth::AuthInfo::header),
            ..Default::default()
        };
        self.propose_for(request, |result| match result {
            ApplyResult::DeleteRange(response) => Ok(response),
            other => Err(other),
        })
        .await
    }

    pub async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, StoreError> {
        self.txn_as(None, request).await
    }

    pub async fn txn_as(
        &self,
        caller: Option<&auth::AuthInfo>,
        request: TxnRequest,
    ) -> Result<TxnResponse, StoreError> {
        let request = RaftRequest {
            txn: Some(request),
            header: caller.map(auth::AuthInfo::header),
            ..Default::default()
        };
        self.propose_for(request, |result| match result {
            ApplyResult::Txn(response) => Ok(response),
            other => Err(other),
        })
        .await
    }

    pub async fn compact(
        &self,
        request: CompactionRequest,
    ) -> Result<CompactionResponse, StoreError> {
        let request = RaftRequest {
            compaction: Some(request),
            ..Default::default()
        };
        self.propose_for(request, |result| match result {
            ApplyResult::Compaction(response) => Ok(response),
            other => Err(other),
        })
        .await
    }

    pub async fn lease_grant(
        &self,
        mut request: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, StoreError> {
        if request.ttl > lease::MAX_LEASE_TTL_SECONDS {
            return Err(StoreError::LeaseTtlTooLarge);
        }
        if request.id == 0 {
            // Positive and unlikely to be taken: the request id generator's next value.
            loop {
                let id = (self.next_request_id.fetch_add(1, Ordering::Relaxed) & (i64::MAX as u64))
                    as i64;
                if id != 0 && !self.state_machine.lessor.exists(id) {
                    request.id = id;
                    break;
                }
            }
        }
        let request = RaftRequest {
            lease_grant: Some(request),
            ..Default::default()
        };
        self.propose_for(request, |result| match result {
            ApplyResult::LeaseGrant(response) => Ok(response),
            other => Err(other),
        })
        .await
    }

    pub async fn lease_revoke(
        &self,
        request: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, StoreError> {
        self.lease_revoke_as(None, request).await
    }

    pub async fn lease_revoke_as(
        &self,
        caller: Option<&auth::AuthInfo>,
        request: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, StoreError> {
        let request = RaftRequest {
            lease_revoke: Some(request),
            header: caller.map(auth::AuthInfo::header),
            ..Default::default()
        };
        self.propose_for(request, |result| match result {
            ApplyResult::LeaseRevoke(response) => Ok(response),
            other => Err(other),
        })
        .await
    }

    /// Renews a lease: on the leader directly, elsewhere by asking the leader.
    /// Returns the TTL, or `LeaseNotFound`. Like etcd, a follower keeps trying
    /// until the request times out, each attempt with whoever leads then, so a
    /// keep-alive survives a leader that stopped answering.
    pub async fn lease_renew(&self, id: i64) -> Result<i64, StoreError> {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let attempt_timeout = self.config.election_timeout;
        loop {
            let attempt = if self.state_machine.lessor.is_primary() {
                node::renew_as_leader(
                    &self.state_machine,
                    &self.status,
                    &self.inbox,
                    id,
                    attempt_timeout,
                )
                .await
            } else {
                self.forward_renew(id, attempt_timeout).await
            };
            match attempt {
                Ok(Some(ttl)) => return Ok(ttl),
                Ok(None) => return Err(StoreError::LeaseNotFound),
                Err(StoreError::NotLeader | StoreError::NoLeader | StoreError::Timeout)
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(StoreError::NotLeader) => return Err(StoreError::NoLeader),
                Err(error) => return Err(error),
            }
        }
    }

    /// One renewal through the leader's peer service.
    async fn forward_renew(&self, id: i64, timeout: Duration) -> Result<Option<i64>, StoreError> {
        let mut client = self.leader_client()?;
        let call = client.lease_renew(proto::etcdserverpb::LeaseKeepAliveRequest { id });
        let response = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(|status| forwarding_error(&status))?
            .into_inner();
        Ok((response.ttl > 0).then_some(response.ttl))
    }

    /// A lease's remaining and granted TTL, as the leader knows them; `None` if
    /// the lease does not exist.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        with_keys: bool,
    ) -> Result<Option<lease::LeaseTimeToLive>, StoreError> {
        if self.state_machine.lessor.is_primary() {
            self.linearizable_barrier().await?;
            return Ok(self.state_machine.lessor.time_to_live(id, with_keys));
        }
        let mut client = self.leader_client()?;
        let response = client
            .lease_time_to_live(proto::etcdserverpb::LeaseTimeToLiveRequest {
                id,
                keys: with_keys,
            })
            .await
            .map_err(|status| forwarding_error(&status))?
            .into_inner();
        if response.ttl < 0 {
            return Ok(None);
        }
        Ok(Some(lease::LeaseTimeToLive {
            remaining_seconds: response.ttl,
            granted_seconds: response.granted_ttl,
            keys: response.keys,
        }))
    }

    /// etcd's MoveLeader: this member, which must lead, hands leadership to `target`.
    pub async fn move_leader(&self, target: u64) -> Result<(), StoreError> {
        let (respond, result) = oneshot::channel();
        self.inbox
            .send(NodeInput::TransferLeader { target, respond })
            .map_err(|_| StoreError::Stopped)?;
        match tokio::time::timeout(self.request_timeout, result).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(StoreError::Stopped),
            Err(_) => Err(StoreError::LeaderTransferTimeout),
        }
    }

    /// The whole state as a snapshot file's bytes: etcd 3.4's backend database
    /// (a bbolt file) with its sha256 trailer, taken while writes go on. etcd's
    /// `snapshot status` and `snapshot restore` take it, and so does
    /// `shoal snapshot restore`.
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>, StoreError> {
        self.state_machine
            .etcd_snapshot()
            .map_err(StoreError::Internal)
    }

    /// etcd's Defragment: rewrites the database file without its free pages.
    /// Reads and writes on this member wait while it runs (as in etcd).
    pub async fn defragment(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.defragment(Duration::from_secs(30)))
            .await
            .map_err(|error| StoreError::Internal(format!("defragmentation task failed: {error}")))?
            .map_err(|error| StoreError::Internal(format!("defragmentation failed: {error}")))
    }

    /// etcd's HashKV: a hash of the key-value history up to `revision` (0 = now),
    /// equal on every member that applied the same history, and the compact revision.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64), StoreError> {
        Ok(self.state_machine.mvcc.hash_kv(revision)?)
    }

    async fn propose_member_change(
        &self,
        change_type: raft::eraftpb::ConfChangeType,
        member: MemberInfo,
    ) -> Result<(Option<MemberInfo>, Vec<MemberInfo>), StoreError> {
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (change, context) = node::member_change(id, self.member_id, change_type, &member);
        let (respond, result) = oneshot::channel();
        self.inbox
            .send(NodeInput::ProposeConfChange {
                id,
                change,
                context,
                respond,
            })
            .map_err(|_| StoreError::Stopped)?;
        members_result(tokio::time::timeout(self.request_timeout, result).await)
    }

    /// etcd's strict reconfiguration check (`--strict-reconfig-check`), made by
    /// the member that got the request, as in etcd: a new voter needs a quorum of
    /// started voters, and every voter must have been reachable for five
    /// seconds; removing a live voter must leave a quorum of reachable voters
    /// (removing an unreachable one is always allowed); learners never count.
    fn check_reconfig(&self, change: Reconfiguration) -> Result<(), StoreError> {
        const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
        if !self.config.strict_reconfig_check {
            return Ok(());
        }
        let voters: Vec<MemberInfo> = self
            .members()
            .into_iter()
            .filter(|member| !member.is_learner)
            .collect();
        let activity = self.activity.lock();
        let now = std::time::Instant::now();
        let healthy_since = now.checked_sub(HEALTH_INTERVAL).unwrap_or(now);
        let connected_since = |id: u64| {
            id == self.member_id
                || activity
                    .get(&id)
                    .is_some_and(|since| *since <= healthy_since)
        };
        let started = |member: &MemberInfo| !member.name.is_empty();
        match change {
            Reconfiguration::Add { learner } => {
                if !learner {
                    let n_members = voters.len() + 1;
                    let n_started = voters.iter().filter(|member| started(member)).count();
                    let restoring_a_single_member = n_started == 1 && n_members == 2;
                    if !restoring_a_single_member && n_started < n_members / 2 + 1 {
                        return Err(StoreError::NotEnoughStartedMembers);
                    }
                }
                if !voters.iter().all(|member| connected_since(member.id)) {
                    return Err(StoreError::Unhealthy);
                }
                Ok(())
            }
            Reconfiguration::Remove { id } => {
                if !voters.iter().any(|member| member.id == id) {
                    return Ok(());
                }
                let others: Vec<&MemberInfo> =
                    voters.iter().filter(|member| member.id != id).collect();
                let n_started = others.iter().filter(|member| started(member)).count();
                if n_started < others.len() / 2 + 1 {
                    return Err(StoreError::NotEnoughStartedMembers);
                }
                if id != self.member_id && !activity.contains_key(&id) {
                    return Ok(());
                }
                let n_active = voters
                    .iter()
                    .filter(|member| connected_since(member.id))
                    .count();
                if n_active.saturating_sub(1) < 1 + (voters.len() - 1) / 2 {
                    return Err(StoreError::Unhealthy);
                }
                Ok(())
            }
        }
    }

    /// etcd's MemberAdd: a new voter or learner at `peer_urls`.
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<(MemberInfo, Vec<MemberInfo>), StoreError> {
        let mut parsed = Vec::new();
        for url in &peer_urls {
            parsed.push(config::parse_url(url).map_err(|_| StoreError::MemberBadUrls)?);
        }
        if parsed.is_empty() {
            return Err(StoreError::MemberBadUrls);
        }
        let normalized: Vec<String> = parsed
            .iter()
            .map(|url| config::url_text(url).to_string())
            .collect();
        let members = self.members();
        if members
            .iter()
            .any(|member| member.peer_ur_ls.iter().any(|url| normalized.contains(url)))
        {
            return Err(StoreError::PeerUrlExists);
        }
        if is_learner && members.iter().filter(|member| member.is_learner).count() >= 1 {
            return Err(StoreError::TooManyLearners);
        }
        self.check_reconfig(Reconfiguration::Add {
            learner: is_learner,
        })?;
        // Unique even when the same URLs come back after a removal, as etcd's are.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let token = format!("{}/{now}", self.config.initial_cluster_token);
        let new_member = MemberInfo {
            id: config::member_id(&parsed, &token),
            name: String::new(),
            peer_ur_ls: normalized,
            client_ur_ls: Vec::new(),
            is_learner,
        };
        let change_type = if is_learner {
            raft::eraftpb::ConfChangeType::AddLearnerNode
        } else {
            raft::eraftpb::ConfChangeType::AddNode
        };
        let (added, members) = self
            .propose_member_change(change_type, new_member.clone())
            .await?;
        Ok((added.unwrap_or(new_member), members))
    }

    pub async fn member_remove(&self, id: u64) -> Result<Vec<MemberInfo>, StoreError> {
        let member = self
            .state_machine
            .member(id)
            .ok_or(StoreError::MemberNotFound)?;
        self.check_reconfig(Reconfiguration::Remove { id })?;
        let (_, members) = self
            .propose_member_change(raft::eraftpb::ConfChangeType::RemoveNode, member)
            .await?;
        Ok(members)
    }

    pub async fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<Vec<MemberInfo>, StoreError> {
        if self.state_machine.member(id).is_none() {
            return Err(StoreError::MemberNotFound);
        }
        let mut normalized = Vec::new();
        for url in &peer_urls {
            let parsed = config::parse_url(url).map_err(|_| StoreError::MemberBadUrls)?;
            normalized.push(config::url_text(&parsed).to_string());
        }
        let request = RaftRequest {
            member_update: Some(proto::etcdserverpb::MemberUpdateRequest {
                id,
                peer_ur_ls: normalized,
            }),
            ..Default::default()
        };
        match self.propose(request).await? {
            ApplyResult::Members { members, .. } => Ok(members),
            other => Err(unexpected(other)),
        }
    }

    /// etcd's MemberPromote: decided by the leader, which alone knows whether the
    /// learner has caught up; other members forward the request to it.
    pub async fn member_promote(&self, id: u64) -> Result<Vec<MemberInfo>, StoreError> {
        let member = self
            .state_machine
            .member(id)
            .ok_or(StoreError::MemberNotFound)?;
        if !member.is_learner {
            return Err(StoreError::MemberNotLearner);
        }
        match promote_on_leader(&self.inbox, self.member_id, id).await {
            Err(StoreError::NotLeader) => {}
            other => return other,
        }
        let mut client = self.leader_client()?;
        match client
            .member_promote(proto::etcdserverpb::MemberPromoteRequest { id })
            .await
        {
            Ok(response) => Ok(response.into_inner().members),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                Err(match status.message() {
                    message if message == StoreError::LearnerNotReady.to_string() => {
                        StoreError::LearnerNotReady
                    }
                    message if message == StoreError::MemberNotLearner.to_string() => {
                        StoreError::MemberNotLearner
                    }
                    message => StoreError::Internal(message.to_string()),
                })
            }
            Err(status) => Err(forwarding_error(&status)),
        }
    }

    /// Resolves once the member has stopped for good on its own: it was
    /// removed from the cluster, or its storage failed. The process that runs
    /// it should then shut it down and stop.
    pub async fn stopped(&self) -> Stopped {
        loop {
            if let Some(reason) = self.status.storage_failure.lock().clone() {
                return Stopped::StorageFailed(reason);
            }
            if self.status.removed.load(Ordering::Acquire) {
                return Stopped::Removed;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn is_learner(&self) -> bool {
        self.status.is_learner.load(Ordering::Acquire)
    }

    /// Every lease, from this member's applied state.
    pub fn lease_ids(&self) -> Vec<i64> {
        self.state_machine.lessor.ids()
    }

    fn leader_client(&self) -> Result<transport::LeaderClient, StoreError> {
        let leader = self.status.leader_id.load(Ordering::Acquire);
        if leader == raft::INVALID_ID {
            return Err(StoreError::NoLeader);
        }
        let mut clients = self.peer_clients.lock();
        if let Some(client) = clients.get(&leader) {
            return Ok(client.clone());
        }
        let member = self
            .state_machine
            .member(leader)
            .ok_or(StoreError::NoLeader)?;
        let url = member.peer_ur_ls.first().ok_or(StoreError::NoLeader)?;
        let client = transport::leader_client(url)
            .map_err(|error| StoreError::Internal(format!("leader peer URL {url}: {error}")))?;
        clients.insert(leader, client.clone());
        Ok(client)
    }

    /// Proposes a request and takes its response out of the apply result, with
    /// the header completed as etcd fills it.
    async fn propose_for<T: WithHeader>(
        &self,
        request: RaftRequest,
        pick: impl FnOnce(ApplyResult) -> Result<T, ApplyResult>,
    ) -> Result<T, StoreError> {
        let mut response = pick(self.propose(request).await?).map_err(unexpected)?;
        let header = self.finish_header(response.header_slot().as_ref());
        *response.header_slot() = Some(header);
        Ok(response)
    }

    fn finish_header(&self, applied: Option<&ResponseHeader>) -> ResponseHeader {
        let revision = applied.map_or_else(
            || self.state_machine.mvcc.current_revision(),
            |header| header.revision,
        );
        self.header(revision)
    }

    /// Stops the raft loop and the peer server, and waits for both.
    pub async fn shutdown(&self) {
        let _ = self.inbox.send(NodeInput::Shutdown);
        if let Some(sender) = self.peer_shutdown.lock().take() {
            let _ = sender.send(());
        }
        let server = self.peer_server.lock().take();
        if let Some(server) = server {
            let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        }
        let thread = self.node_thread.lock().take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn advertised_peer_urls(config: &MemberConfig) -> Vec<String> {
    config
        .initial_advertise_peer_urls
        .iter()
        .map(|url| config::url_text(url).to_string())
        .collect()
}

type WaitOutcome =
    Result<Result<ApplyResult, oneshot::error::RecvError>, tokio::time::error::Elapsed>;

fn members_result(
    outcome: WaitOutcome,
) -> Result<(Option<MemberInfo>, Vec<MemberInfo>), StoreError> {
    match outcome {
        Ok(Ok(ApplyResult::Members { member, members })) => Ok((member, members)),
        Ok(Ok(ApplyResult::Error(error))) => Err(error),
        Ok(Ok(other)) => Err(unexpected(other)),
        Ok(Err(_)) => Err(StoreError::Stopped),
        Err(_) => Err(StoreError::Timeout),
    }
}

/// Asks this member's raft loop to promote a learner; `NotLeader` if it does not lead.
pub(crate) async fn promote_on_leader(
    inbox: &Sender<NodeInput>,
    proposer: u64,
    member_id: u64,
) -> Result<Vec<MemberInfo>, StoreError> {
    let id = rand::random::<u64>();
    let context = proto::shoalpb::ConfChangeContext {
        id,
        proposer,
        member: None,
    }
    .encode_to_vec();
    let (respond, result) = oneshot::channel();
    inbox
        .send(NodeInput::PromoteLearner {
            id,
            member_id,
            context,
            respond,
        })
        .map_err(|_| StoreError::Stopped)?;
    members_result(tokio::time::timeout(Duration::from_secs(10), result).await)
        .map(|(_, members)| members)
}

/// A membership change the strict reconfiguration check looks at.
#[derive(Debug, Clone, Copy)]
enum Reconfiguration {
    Add { learner: bool },
    Remove { id: u64 },
}

/// Responses whose header the member completes after applying.
trait WithHeader {
    fn header_slot(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! with_header {
    ($($response:ty),*) => {
        $(impl WithHeader for $response {
            fn header_slot(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        })*
    };
}

with_header!(
    PutResponse,
    DeleteRangeResponse,
    TxnResponse,
    CompactionResponse,
    LeaseGrantResponse,
    LeaseRevokeResponse
);

/// A forwarded call failed: the leader moved, or could not be reached in time.
fn forwarding_error(status: &tonic::Status) -> StoreError {
    match status.code() {
        tonic::Code::DeadlineExceeded => StoreError::Timeout,
        _ => StoreError::NoLeader,
    }
}

fn unexpected(result: ApplyResult) -> StoreError {
    StoreError::Internal(format!("unexpected apply result {result:?}"))
}
