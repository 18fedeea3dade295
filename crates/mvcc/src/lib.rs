//! etcd's multi-version key-value data model (revisions, tombstones, compaction) as etcd 3.4
//! has it, persisted in redb.
//!
//! # Model
//! Every write transaction gets one new main revision; each change inside it a sub-revision.
//! Each change is one immutable record in the `mvcc_revisions` table; an in-memory index
//! (`index.rs`) maps each key to its changes and is rebuilt from redb at [`Mvcc::open`].
//!
//! # Writing and publishing
//! The caller (the raft driver) owns the redb write transaction: it applies a batch of entries
//! through one [`Writer`] at a time, drops the writer, writes its own tables, commits, and
//! then calls [`Mvcc::publish`]. Readers only ever see published revisions.
//!
//! **Abort contract:** a writer updates the in-memory index as it goes. If the caller drops or
//! aborts the write transaction instead of committing it, the in-memory state no longer
//! matches redb; the caller must then stop using this `Mvcc` (the store process exits and
//! `open` rebuilds from disk). Errors returned by writer methods before they changed anything
//! (`Compacted`, `FutureRevision`, `KeyNotFound`) leave everything consistent.
//!
//! # Readers during a batch
//! Readers never lock out the writer for long and never observe partial batches: they load the
//! published revision first, then begin their redb read transaction, then consult the index
//! at a revision no higher than the published one, so entries the writer is adding are
//! invisible. Two writer actions remove history, and both are made safe explicitly: a
//! compaction announces its revision (`pending_compact_revision`) before touching anything, and
//! readers check it after their read transaction began (a read of the current revision that
//! falls below it waits for the publish, which moves the current revision past it); a snapshot
//! restore swaps in an index with a new epoch, and a reader whose published state has another
//! epoch waits for the publish.
//!
//! # Rules for the caller
//! - At most one [`Writer`] at a time, dropped before the commit; `publish` and `restore` need
//!   no writer alive.
//! - `open` runs its own write transaction (to create the tables), so no other may be open.
//! - Header revisions are set; cluster_id, member_id and raft_term are the caller's to fill.

mod db;
mod hash;
mod history;
mod index;
mod range;
mod record;
mod snapshot;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use proto::etcdserverpb::{RangeRequest, RangeResponse};
use redb::{ReadableTable, WriteTransaction};

use crate::hash::Crc32c;
use crate::index::{IndexEntry, KeyIndex};
use crate::record::{META_TABLE, REVISIONS_TABLE, Record, Revision};

pub use crate::db::Db;
pub use crate::history::{History, key_in_range};
pub use crate::range::EncodedRange;
pub use crate::snapshot::{ExportedHistory, HistoryRevision, snapshot_from_history};
pub use crate::writer::Writer;

#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// A put with `ignore_value` or `ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// redb failures and corrupt records or snapshots.
    #[error("storage: {0}")]
    Storage(String),
}

macro_rules! storage_error_from {
    ($($error:ty),* $(,)?) => {
        $(impl From<$error> for MvccError {
            fn from(error: $error) -> MvccError {
                MvccError::Storage(error.to_string())
            }
        })*
    };
}

storage_error_from!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
);

/// The revision counters, either as published to readers or as a writer has advanced them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RevisionState {
    pub revision: i64,
    pub compact_revision: i64,
    pub consistent_index: u64,
    /// Which index this state belongs to; see `KeyIndex::epoch`.
    pub epoch: u64,
}

/// Approximate bytes of one stored record: its table key plus its encoding.
pub(crate) fn stored_size(record_len: usize) -> u64 {
    16 + record_len as u64
}

/// How long a reader waits for a restored snapshot to be published before giving up. Publish
/// follows the commit immediately, so reaching this means the caller broke the contract.
const PUBLISH_WAIT_LIMIT: Duration = Duration::from_secs(10);

pub struct Mvcc {
    database: Arc<Db>,
    index: RwLock<KeyIndex>,
    /// What readers may see. Only `publish` changes it.
    published: RwLock<RevisionState>,
    /// What the writers have produced so far; held by a `Writer` for its whole life, which
    /// also keeps writers from overlapping.
    writer_state: Mutex<RevisionState>,
    /// The highest compaction a writer has started, published or not; see the crate docs.
    pending_compact_revision: AtomicI64,
    stored_bytes: AtomicU64,
}

impl Mvcc {
    /// Opens the MVCC state in `db` (creating its tables if missing) and rebuilds the in-memory
    /// key index. Must not be called while the caller holds a write transaction on `db`.
    pub fn open(db: Arc<Db>) -> Result<Mvcc, MvccError> {
        let create_tables = db.begin_write()?;
        create_tables.open_table(REVISIONS_TABLE)?;
        create_tables.open_table(META_TABLE)?;
        create_tables.commit()?;

        let read_txn = db.begin_read()?;
        let meta = snapshot::read_meta(&read_txn.open_table(META_TABLE)?)?;
        let revisions = read_txn.open_table(REVISIONS_TABLE)?;
        let mut index = KeyIndex::new(0);
        let mut stored_bytes = 0;
        let mut last_record = None;
        for item in revisions.iter()? {
            let (key, stored) = item?;
            let revision = Revision::from_table_key(key.value());
            let record = Record::decode(stored.value())?;
            index.push(record.key, IndexEntry::from_record(revision, &record));
            stored_bytes += stored_size(stored.value().len());
            last_record = Some(revision);
        }
        let state = RevisionState {
            revision: snapshot::derive_current_revision(last_record, meta.compact_revision),
            compact_revision: meta.compact_revision,
            consistent_index: meta.consistent_index,
            epoch: 0,
        };
        Ok(Mvcc {
            database: db,
            index: RwLock::new(index),
            published: RwLock::new(state),
            writer_state: Mutex::new(state),
            pending_compact_revision: AtomicI64::new(state.compact_revision),
            stored_bytes: AtomicU64::new(stored_bytes),
        })
    }

    /// The database this state lives in (the raft log shares it).
    pub fn database(&self) -> &Arc<Db> {
        &self.database
    }

    /// The last published revision; 1 on an empty store, as in etcd.
    pub fn current_revision(&self) -> i64 {
        self.published.read().revision
    }

    /// The published compaction point; 0 if never compacted.
    pub fn compact_revision(&self) -> i64 {
        self.published.read().compact_revision
    }

    /// The last applied raft index as of the last publish (after `open`: as persisted).
    pub fn consistent_index(&self) -> u64 {
        self.published.read().consistent_index
    }

    /// Reads at `request.revision` (0 = current published), applying every option as etcd
    /// 3.4 does. Like etcd, the header revision is the current revision of the store, not the
    /// revision read at; the caller fills cluster_id, member_id and raft_term.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.read_range(request, range::build_response)
    }

    /// `range`, with the response already encoded (see [`EncodedRange`]): for
    /// the gRPC API, which sends it as it is.
    pub fn range_encoded(&self, request: &RangeRequest) -> Result<EncodedRange, MvccError> {
        self.read_range(request, range::encode_response)
    }

    fn read_range<R>(
        &self,
        request: &RangeRequest,
        respond: impl Fn(
            &redb::ReadOnlyTable<u128, &'static [u8]>,
            &RangeRequest,
            range::Candidates,
            i64,
        ) -> Result<R, MvccError>,
    ) -> Result<R, MvccError> {
        let started = Instant::now();
        loop {
            // Order matters: published state first, then the read transaction, then the index.
            let published = *self.published.read();
            if request.revision > published.revision {
                return Err(MvccError::FutureRevision);
            }
            let read_revision = if request.revision <= 0 {
                published.revision
            } else {
                request.revision
            };
            let read_txn = self.database.begin_read()?;
            let revisions = read_txn.open_table(REVISIONS_TABLE)?;
            let candidates = {
                let index = self.index.read();
                if index.epoch != published.epoch {
                    drop(index);
                    wait_for_publish(started)?;
                    continue;
                }
                let compact_revision = published
                    .compact_revision
                    .max(self.pending_compact_revision.load(Ordering::SeqCst));
                if read_revision < compact_revision {
                    if request.revision <= 0 {
                        // A batch that is committing compacted above the published revision;
                        // once it is published the current revision is past the compaction.
                        drop(index);
                        wait_for_publish(started)?;
                        continue;
                    }
                    return Err(MvccError::Compacted);
                }
                range::collect_candidates(&index, request, read_revision)
            };
            // The read transaction holds every record the index pointed at, so the index lock
            // can be released before the disk reads.
            return respond(&revisions, request, candidates, published.revision);
        }
    }

    /// Starts applying inside `wtx`, which the caller owns, commits, and then publishes.
    /// Only one writer may be alive at a time; a second call waits for the first to drop.
    pub fn writer<'t>(&'t self, wtx: &'t WriteTransaction) -> Writer<'t> {
        Writer::new(self, wtx)
    }

    /// Makes everything written and committed so far visible to readers. Call it right after a
    /// successful commit, with no writer alive.
    pub fn publish(&self) {
        let state = *self
            .writer_state
            .try_lock()
            .expect("mvcc: publish() called while a Writer is alive; drop it and commit first");
        *self.published.write() = state;
    }

    /// A self-contained serialization of the whole MVCC state from one read transaction.
    pub fn snapshot(&self) -> Result<Vec<u8>, MvccError> {
        let read_txn = self.database.begin_read()?;
        snapshot::encode(&read_txn)
    }

    /// The whole stored history and its meta, from one read transaction (what an etcd
    /// backend's `key` and `meta` buckets hold).
    pub fn export_history(&self) -> Result<ExportedHistory, MvccError> {
        let read_txn = self.database.begin_read()?;
        snapshot::export(&read_txn)
    }

    /// Replaces the whole MVCC state with a snapshot's inside `wtx`; the caller commits and
    /// then calls `publish`. No writer may be alive. Readers keep seeing the old state until
    /// the publish. The snapshot is validated completely before anything is changed.
    pub fn restore(&self, wtx: &WriteTransaction, snapshot: &[u8]) -> Result<(), MvccError> {
        let decoded = snapshot::decode(snapshot)?;
        let mut state = self.writer_state.try_lock().ok_or_else(|| {
            MvccError::Storage("restore called while a Writer is alive".to_string())
        })?;
        wtx.delete_table(REVISIONS_TABLE)?;
        let mut revisions = wtx.open_table(REVISIONS_TABLE)?;
        let mut meta = wtx.open_table(META_TABLE)?;
        let epoch = state.epoch + 1;
        let mut index = KeyIndex::new(epoch);
        let mut stored_bytes = 0;
        for (revision, record, stored) in &decoded.records {
            revisions.insert(revision.to_table_key(), *stored)?;
            index.push(record.key, IndexEntry::from_record(*revision, record));
            stored_bytes += stored_size(stored.len());
        }
        meta.insert(
            record::META_COMPACT_REVISION,
            decoded.meta.compact_revision as u64,
        )?;
        meta.insert(record::META_CONSISTENT_INDEX, decoded.meta.consistent_index)?;
        {
            // Under the index lock, so no reader can pair the old index with the new point.
            let mut live_index = self.index.write();
            *live_index = index;
            self.pending_compact_revision
                .store(decoded.meta.compact_revision, Ordering::SeqCst);
        }
        *state = RevisionState {
            revision: decoded.current_revision,
            compact_revision: decoded.meta.compact_revision,
            consistent_index: decoded.meta.consistent_index,
            epoch,
        };
        self.stored_bytes.store(stored_bytes, Ordering::Relaxed);
        Ok(())
    }

    /// etcd's HashKV: a CRC-32C over every stored revision <= `revision` (0 = current). Since
    /// compaction deletes records in the same transaction, what is stored is exactly what
    /// survives compaction. Returns the compaction point read in the same transaction.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64), MvccError> {
        let started = Instant::now();
        loop {
            let published = *self.published.read();
            if revision > published.revision {
                return Err(MvccError::FutureRevision);
            }
            let hash_revision = if revision <= 0 {
                published.revision
            } else {
                revision
            };
            let read_txn = self.database.begin_read()?;
            let meta = snapshot::read_meta(&read_txn.open_table(META_TABLE)?)?;
            if hash_revision < meta.compact_revision {
                if revision <= 0 {
                    // As in `range`: a committed compaction is not yet published.
                    wait_for_publish(started)?;
                    continue;
                }
                return Err(MvccError::Compacted);
            }
            let revisions = read_txn.open_table(REVISIONS_TABLE)?;
            let mut hasher = Crc32c::new();
            hasher.update(b"mvcc_revisions");
            for item in revisions.range(..=Revision::last_table_key_of(hash_revision))? {
                let (key, stored) = item?;
                hasher.update(&key.value().to_be_bytes());
                hasher.update(stored.value());
            }
            return Ok((hasher.finish(), meta.compact_revision));
        }
    }

    /// How many keys the index holds: live ones, and deleted ones until a
    /// compaction drops their history (etcd's `keys_total` counts the same).
    pub fn n_keys_indexed(&self) -> usize {
        self.index.read().n_keys()
    }

    /// An estimate of the bytes the MVCC state occupies: the sum of its stored records.
    pub fn db_size_in_use(&self) -> u64 {
        self.stored_bytes.load(Ordering::Relaxed)
    }
}

/// Backs off while a reader waits for a committed batch (a restore or a compaction above the
/// published revision) to be published.
fn wait_for_publish(started: Instant) -> Result<(), MvccError> {
    if started.elapsed() > PUBLISH_WAIT_LIMIT {
        return Err(MvccError::Storage(
            "a committed batch was never published".to_string(),
        ));
    }
    std::thread::sleep(Duration::from_micros(50));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mvcc_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Mvcc>();
    }
}
