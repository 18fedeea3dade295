//! The errors a store member returns, with the exact texts etcd's clients expect.

use mvcc::MvccError;

/// What can go wrong serving a request. The `Display` text of each variant is the
/// message etcd puts in its gRPC status, because client libraries match on it.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl From<MvccError> for StoreError {
    fn from(error: MvccError) -> Self {
        match error {
            MvccError::Compacted => StoreError::Compacted,
            MvccError::FutureRevision => StoreError::FutureRevision,
            MvccError::KeyNotFound => StoreError::KeyNotFound,
            MvccError::Storage(text) => StoreError::Internal(format!("storage: {text}")),
        }
    }
}

/// Errors that stop a member from starting. Each names the thing involved.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("data directory {path} is in use by another process (lock file {path}/LOCK is held)")]
    DataDirLocked { path: String },
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("database {path}: {message}")]
    Database { path: String, message: String },
    #[error("cannot listen for peers on {url}: {source}")]
    PeerListen {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(String),
    #[error("snapshot {path}: {message}")]
    Snapshot { path: String, message: String },
}
