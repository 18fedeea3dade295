//! How shoal's platform parts (the API server, and later the scheduler,
//! controllers and node agent) reach the store: one interface, [`Kv`], with
//! two implementations. [`Local`] serves it from a member in the same process;
//! [`Remote`] speaks etcd's v3 gRPC API to a store elsewhere (a machine that
//! runs no member, or etcd itself).
//!
//! The vocabulary is etcd's own messages (`RangeRequest`, `TxnRequest`, …):
//! they are what the store speaks, and a client that needs less simply sets
//! less. Only the watch is reshaped, into one stream per watcher.

mod local;
mod remote;
pub mod tls;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use futures::future::BoxFuture;
use proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, MemberListResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, StatusResponse, TxnRequest, TxnResponse,
};
use proto::mvccpb::Event;

pub use local::Local;
pub use remote::Remote;

/// What a store call can fail with, as the platform parts need to tell it apart.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    /// The revision asked for has been compacted away.
    #[error("required revision has been compacted (compacted at {compact_revision})")]
    Compacted { compact_revision: i64 },
    /// The revision asked for is newer than the store's.
    #[error("required revision is a future revision")]
    FutureRevision,
    /// The store cannot answer now (no leader, timed out, stopped, unreachable).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store refused the request (too large, out of space, invalid).
    #[error("store refused the request: {0}")]
    Refused(String),
}

/// What a watcher receives, in revision order.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchUpdate {
    /// Changes; `revision` is the store revision they bring the watcher to.
    Events { revision: i64, events: Vec<Event> },
    /// Nothing changed under the watched range up to `revision`.
    Progress { revision: i64 },
}

/// One watcher: its updates until the store compacts past it (then one
/// `Err(Compacted)` ends it) or it is dropped (which cancels it).
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchUpdate, ClientError>> + Send>>;

/// What a watcher asks for: the keys `[key, range_end)` (an empty `range_end`
/// is the one key), from `start_revision` on (0: from now).
#[derive(Debug, Clone, Default)]
pub struct WatchRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub start_revision: i64,
    pub prev_kv: bool,
}

/// The store, as the platform parts use it.
pub trait Kv: Send + Sync {
    fn range(&self, request: RangeRequest) -> BoxFuture<'_, Result<RangeResponse, ClientError>>;
    fn put(&self, request: PutRequest) -> BoxFuture<'_, Result<PutResponse, ClientError>>;
    fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> BoxFuture<'_, Result<DeleteRangeResponse, ClientError>>;
    fn txn(&self, request: TxnRequest) -> BoxFuture<'_, Result<TxnResponse, ClientError>>;
    /// Starts a watcher; it is registered by the time the future resolves, so
    /// a write made after that is seen.
    fn watch(&self, request: WatchRequest) -> BoxFuture<'_, Result<WatchStream, ClientError>>;
    /// The store's members (etcd's `MemberList`), for the dashboard's
    /// store page.
    fn member_list(&self) -> BoxFuture<'_, Result<MemberListResponse, ClientError>>;
    /// The status of the member this client talks to (etcd's
    /// `Maintenance.Status`): leader, raft term and index, revision, DB size.
    fn status(&self) -> BoxFuture<'_, Result<StatusResponse, ClientError>>;
}

/// A store shared by the parts of one process.
pub type SharedKv = Arc<dyn Kv>;

/// The end of the key range that holds every key starting with `prefix`
/// (etcd's `--prefix`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the keyspace.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_key_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
