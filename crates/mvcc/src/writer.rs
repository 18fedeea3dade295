//! Applying writes inside the caller's redb write transaction: put, delete_range, txn and
//! compaction, each with etcd 3.4's revision, header and event semantics.

use std::slice;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::MutexGuard;
use proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use proto::etcdserverpb::request_op::Request;
use proto::etcdserverpb::response_op::Response;
use proto::etcdserverpb::{
    CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use proto::mvccpb::event::EventType;
use proto::mvccpb::{Event, KeyValue};
use redb::{Table, WriteTransaction};

use crate::index::{IndexEntry, KeyIndex, KeySpan};
use crate::range::{self, load_value};
use crate::record::{
    META_COMPACT_REVISION, META_CONSISTENT_INDEX, META_TABLE, REVISIONS_TABLE, Record, Revision,
};
use crate::{Mvcc, MvccError, RevisionState, stored_size};

type RevisionsTable<'t> = Table<'t, u128, &'static [u8]>;
type MetaTable<'t> = Table<'t, &'static str, u64>;

struct WriterTables<'t> {
    revisions: RevisionsTable<'t>,
    meta: MetaTable<'t>,
}

/// Applies etcd write transactions inside one redb write transaction. Drop it before
/// committing (the borrow of the transaction enforces this), then call `Mvcc::publish`.
pub struct Writer<'t> {
    mvcc: &'t Mvcc,
    /// Held for the writer's whole life: it serialises writers, and publish reads it.
    state: MutexGuard<'t, RevisionState>,
    /// Opened once per writer. An open failure is kept and reported by the first call that
    /// needs the tables, since `Mvcc::writer` cannot fail.
    tables: Result<WriterTables<'t>, String>,
    events: Vec<Event>,
    record_buffer: Vec<u8>,
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

impl<'t> Writer<'t> {
    pub(crate) fn new(mvcc: &'t Mvcc, wtx: &'t WriteTransaction) -> Writer<'t> {
        let state = mvcc.writer_state.lock();
        let open = || -> Result<WriterTables<'t>, MvccError> {
            Ok(WriterTables {
                revisions: wtx.open_table(REVISIONS_TABLE)?,
                meta: wtx.open_table(META_TABLE)?,
            })
        };
        Writer {
            mvcc,
            state,
            tables: open().map_err(|error| error.to_string()),
            events: Vec::new(),
            record_buffer: Vec::new(),
        }
    }

    /// Runs `body` as one etcd write transaction: it starts at the latest revision and, if it
    /// changed anything, ends one main revision later.
    fn run_etcd_txn<R>(
        &mut self,
        body: impl FnOnce(&mut EtcdTxn<'_, 't>) -> Result<R, MvccError>,
    ) -> Result<R, MvccError> {
        let tables = self
            .tables
            .as_mut()
            .map_err(|error| MvccError::Storage(error.clone()))?;
        let mut index = self.mvcc.index.write();
        let mut etcd_txn = EtcdTxn {
            index: &mut index,
            revisions: &mut tables.revisions,
            events: &mut self.events,
            record_buffer: &mut self.record_buffer,
            stored_bytes: &self.mvcc.stored_bytes,
            compact_revision: self.state.compact_revision,
            begin_revision: self.state.revision,
            changes: 0,
        };
        let result = body(&mut etcd_txn);
        // Even on an error the records already written stay in the write transaction, so the
        // revision must account for them to keep memory and redb in step.
        if etcd_txn.changes > 0 {
            self.state.revision = etcd_txn.begin_revision + 1;
        }
        result
    }

    /// etcd's Put as its own write transaction: one new revision. `KeyNotFound` (and nothing
    /// written) for ignore_value/ignore_lease on a missing key. Lease existence is not checked.
    pub fn put(&mut self, request: &PutRequest) -> Result<PutResponse, MvccError> {
        self.run_etcd_txn(|etcd_txn| etcd_txn.put(request))
    }

    /// etcd's DeleteRange as its own write transaction: one new revision with a sub-revision
    /// per deleted key, or no new revision if nothing was live in the range.
    pub fn delete_range(
        &mut self,
        request: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        self.run_etcd_txn(|etcd_txn| etcd_txn.delete_range(request))
    }

    /// etcd's Txn. Nested transactions' compares are evaluated up front against the state at
    /// the start, as etcd 3.4's `compareToPath` does, and nested `TxnResponse`s carry an empty
    /// header, as in etcd.
    pub fn txn(&mut self, request: &TxnRequest) -> Result<TxnResponse, MvccError> {
        self.run_etcd_txn(|etcd_txn| {
            let mut path = Vec::new();
            etcd_txn.evaluate_path(request, &mut path)?;
            etcd_txn.check_puts(request, &mut path.iter())?;
            etcd_txn.check_ranges(request, &mut path.iter())?;
            let mut response = etcd_txn.apply_txn(request, &mut path.iter())?;
            response.header = header(etcd_txn.view_revision());
            Ok(response)
        })
    }

    /// The non-zero leases of the puts `request` would run if applied now, with the compares of
    /// its chosen path evaluated exactly as `txn` will. etcd refuses such a txn up front if one
    /// of these leases does not exist; the lease table lives in the store, so it checks them.
    pub fn txn_put_leases(&mut self, request: &TxnRequest) -> Result<Vec<i64>, MvccError> {
        self.run_etcd_txn(|etcd_txn| {
            let mut path = Vec::new();
            etcd_txn.evaluate_path(request, &mut path)?;
            let mut leases = Vec::new();
            collect_put_leases(request, &mut path.iter(), &mut leases);
            Ok(leases)
        })
    }

    /// Physical compaction at `revision`: of every key's revisions at or below it only the
    /// newest survives, unless that is a tombstone. Does not bump the revision.
    pub fn compact(&mut self, revision: i64) -> Result<CompactionResponse, MvccError> {
        if revision <= self.state.compact_revision {
            return Err(MvccError::Compacted);
        }
        if revision > self.state.revision {
            return Err(MvccError::FutureRevision);
        }
        let tables = self
            .tables
            .as_mut()
            .map_err(|error| MvccError::Storage(error.clone()))?;
        // Announce first: a reader that can see any effect of this compaction must also see
        // this value and refuse revisions below it.
        self.mvcc
            .pending_compact_revision
            .fetch_max(revision, Ordering::SeqCst);
        let mut removed = Vec::new();
        self.mvcc.index.write().compact(revision, &mut removed);
        removed.sort_unstable();
        let mut freed_bytes = 0;
        for removed_revision in removed {
            if let Some(stored) = tables.revisions.remove(removed_revision.to_table_key())? {
                freed_bytes += stored_size(stored.value().len());
            }
        }
        self.mvcc
            .stored_bytes
            .fetch_sub(freed_bytes, Ordering::Relaxed);
        tables.meta.insert(META_COMPACT_REVISION, revision as u64)?;
        self.state.compact_revision = revision;
        Ok(CompactionResponse {
            header: header(self.state.revision),
        })
    }

    /// Records the applied raft index in the same transaction as the data it produced.
    ///
    /// # Panics
    /// If redb cannot write it. Committing without it would make a restart apply entries twice,
    /// so continuing is never the right answer.
    pub fn set_consistent_index(&mut self, index: u64) {
        let tables = self
            .tables
            .as_mut()
            .expect("mvcc: cannot open tables to record the consistent index");
        tables
            .meta
            .insert(META_CONSISTENT_INDEX, index)
            .expect("mvcc: cannot record the consistent index");
        self.state.consistent_index = index;
    }

    /// The latest revision written so far (the current revision if nothing was written).
    pub fn revision(&self) -> i64 {
        self.state.revision
    }

    /// Takes the events produced so far, in revision order.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

/// The branch of a txn that its compares selected.
fn chosen_ops(request: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &request.success
    } else {
        &request.failure
    }
}

fn collect_put_leases(
    request: &TxnRequest,
    path: &mut slice::Iter<'_, bool>,
    leases: &mut Vec<i64>,
) {
    let succeeded = *path
        .next()
        .expect("path covers every txn on the chosen branch");
    for op in chosen_ops(request, succeeded) {
        match &op.request {
            Some(Request::RequestTxn(nested)) => collect_put_leases(nested, path, leases),
            Some(Request::RequestPut(put)) if put.lease != 0 => leases.push(put.lease),
            _ => {}
        }
    }
}

/// The fields of a key-value that a compare can look at.
struct ComparedFields<'a> {
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: i64,
    value: &'a [u8],
}

/// etcd's `compareKV`: a missing target value in the union compares as 0 or empty.
fn compare_holds(compare: &Compare, fields: &ComparedFields<'_>) -> bool {
    let wanted_integer = |pick: fn(&TargetUnion) -> Option<i64>| {
        compare.target_union.as_ref().and_then(pick).unwrap_or(0)
    };
    let ordering = match CompareTarget::try_from(compare.target) {
        Ok(CompareTarget::Value) => {
            let wanted: &[u8] = match &compare.target_union {
                Some(TargetUnion::Value(value)) => value,
                _ => &[],
            };
            fields.value.cmp(wanted)
        }
        Ok(CompareTarget::Create) => fields.create_revision.cmp(&wanted_integer(|t| match t {
            TargetUnion::CreateRevision(revision) => Some(*revision),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => fields.mod_revision.cmp(&wanted_integer(|t| match t {
            TargetUnion::ModRevision(revision) => Some(*revision),
            _ => None,
        })),
        Ok(CompareTarget::Version) => fields.version.cmp(&wanted_integer(|t| match t {
            TargetUnion::Version(version) => Some(*version),
            _ => None,
        })),
        Ok(CompareTarget::Lease) => fields.lease.cmp(&wanted_integer(|t| match t {
            TargetUnion::Lease(lease) => Some(*lease),
            _ => None,
        })),
        // etcd leaves the comparison at "equal" for a target it does not know.
        Err(_) => std::cmp::Ordering::Equal,
    };
    match CompareResult::try_from(compare.result) {
        Ok(CompareResult::Equal) => ordering.is_eq(),
        Ok(CompareResult::NotEqual) => ordering.is_ne(),
        Ok(CompareResult::Greater) => ordering.is_gt(),
        Ok(CompareResult::Less) => ordering.is_lt(),
        // etcd treats an unknown result as satisfied.
        Err(_) => true,
    }
}

/// One etcd write transaction in progress: etcd's `storeTxnWrite`.
struct EtcdTxn<'w, 't> {
    index: &'w mut KeyIndex,
    revisions: &'w mut RevisionsTable<'t>,
    events: &'w mut Vec<Event>,
    record_buffer: &'w mut Vec<u8>,
    stored_bytes: &'w AtomicU64,
    compact_revision: i64,
    begin_revision: i64,
    /// Changes made so far; the next change's sub-revision.
    changes: i64,
}

impl EtcdTxn<'_, '_> {
    /// The revision this transaction reads at: its own writes become visible once it has made
    /// any, as in etcd.
    fn view_revision(&self) -> i64 {
        if self.changes > 0 {
            self.begin_revision + 1
        } else {
            self.begin_revision
        }
    }

    fn write_record(&mut self, record: &Record<'_>) -> Result<Revision, MvccError> {
        let revision = Revision {
            main: self.begin_revision + 1,
            sub: self.changes,
        };
        self.record_buffer.clear();
        record.encode_into(self.record_buffer);
        self.revisions
            .insert(revision.to_table_key(), self.record_buffer.as_slice())?;
        self.stored_bytes
            .fetch_add(stored_size(self.record_buffer.len()), Ordering::Relaxed);
        self.index
            .push(record.key, IndexEntry::from_record(revision, record));
        self.changes += 1;
        Ok(revision)
    }

    fn key_value(&self, key: &Bytes, entry: &IndexEntry) -> Result<KeyValue, MvccError> {
        Ok(KeyValue {
            key: key.clone(),
            create_revision: entry.create_revision,
            mod_revision: entry.revision.main,
            version: entry.version,
            value: load_value(&*self.revisions, key, entry.revision)?,
            lease: entry.lease,
        })
    }

    /// The live keys of a span at this transaction's view, in key order.
    fn live_in_span(&self, key: &[u8], range_end: &[u8]) -> Vec<(Bytes, IndexEntry)> {
        let mut live = Vec::new();
        self.index.visit_live(
            KeySpan::new(key, range_end),
            self.view_revision(),
            |key, entry| live.push((key.clone(), *entry)),
        );
        live
    }

    fn put(&mut self, request: &PutRequest) -> Result<PutResponse, MvccError> {
        let previous_entry = self.index.latest_live(&request.key).copied();
        if (request.ignore_value || request.ignore_lease) && previous_entry.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        // The previous key-value is needed for the event even when the request does not ask.
        let previous = previous_entry
            .map(|entry| self.key_value(&request.key, &entry))
            .transpose()?;
        let value = match &previous {
            Some(previous) if request.ignore_value => previous.value.clone(),
            _ => request.value.clone(),
        };
        let lease = match &previous {
            Some(previous) if request.ignore_lease => previous.lease,
            _ => request.lease,
        };
        let main_revision = self.begin_revision + 1;
        let record = Record {
            key: &request.key,
            value: &value,
            create_revision: previous
                .as_ref()
                .map_or(main_revision, |p| p.create_revision),
            version: previous.as_ref().map_or(0, |p| p.version) + 1,
            lease,
            tombstone: false,
        };
        let revision = self.write_record(&record)?;
        let kv = KeyValue {
            key: request.key.clone(),
            create_revision: record.create_revision,
            mod_revision: revision.main,
            version: record.version,
            value,
            lease,
        };
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: previous.clone(),
        });
        Ok(PutResponse {
            header: header(revision.main),
            prev_kv: if request.prev_kv { previous } else { None },
        })
    }

    fn delete_range(
        &mut self,
        request: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        let doomed = self.live_in_span(&request.key, &request.range_end);
        let mut prev_kvs = Vec::new();
        for (key, entry) in &doomed {
            let previous = self.key_value(key, entry)?;
            let revision = self.write_record(&Record {
                key,
                value: &[],
                create_revision: 0,
                version: 0,
                lease: 0,
                tombstone: true,
            })?;
            self.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: key.clone(),
                    mod_revision: revision.main,
                    ..Default::default()
                }),
                prev_kv: Some(previous.clone()),
            });
            if request.prev_kv {
                prev_kvs.push(previous);
            }
        }
        Ok(DeleteRangeResponse {
            // etcd reports the new revision if this transaction changed anything at all,
            // including through earlier operations of the same txn.
            header: header(self.view_revision()),
            deleted: doomed.len() as i64,
            prev_kvs,
        })
    }

    fn range(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        let view_revision = self.view_revision();
        if request.revision > view_revision {
            return Err(MvccError::FutureRevision);
        }
        let read_revision = if request.revision <= 0 {
            view_revision
        } else {
            request.revision
        };
        if read_revision < self.compact_revision {
            return Err(MvccError::Compacted);
        }
        let candidates = range::collect_candidates(self.index, request, read_revision);
        range::build_response(&*self.revisions, request, candidates, view_revision)
    }

    /// etcd's `applyCompare`: every live key in the span must satisfy the compare; with none,
    /// a value compare fails and the others compare against zero.
    fn compare(&self, compare: &Compare) -> Result<bool, MvccError> {
        let live = self.live_in_span(&compare.key, &compare.range_end);
        if live.is_empty() {
            return Ok(compare.target != CompareTarget::Value as i32
                && compare_holds(
                    compare,
                    &ComparedFields {
                        create_revision: 0,
                        mod_revision: 0,
                        version: 0,
                        lease: 0,
                        value: &[],
                    },
                ));
        }
        let needs_value = compare.target == CompareTarget::Value as i32;
        for (key, entry) in &live {
            let value = if needs_value {
                load_value(&*self.revisions, key, entry.revision)?
            } else {
                Bytes::new()
            };
            let fields = ComparedFields {
                create_revision: entry.create_revision,
                mod_revision: entry.revision.main,
                version: entry.version,
                lease: entry.lease,
                value: &value,
            };
            if !compare_holds(compare, &fields) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// etcd's `compareToPath`: the outcome of this txn's compares, then of every nested txn on
    /// the chosen branch, depth first, all against the state before any op runs.
    fn evaluate_path(&self, request: &TxnRequest, path: &mut Vec<bool>) -> Result<(), MvccError> {
        let mut succeeded = true;
        for compare in &request.compare {
            if !self.compare(compare)? {
                succeeded = false;
                break;
            }
        }
        path.push(succeeded);
        for op in chosen_ops(request, succeeded) {
            if let Some(Request::RequestTxn(nested)) = &op.request {
                self.evaluate_path(nested, path)?;
            }
        }
        Ok(())
    }

    /// etcd's up-front `checkPut`: ignore_value/ignore_lease need the key to exist at the start.
    fn check_puts(
        &self,
        request: &TxnRequest,
        path: &mut slice::Iter<'_, bool>,
    ) -> Result<(), MvccError> {
        let succeeded = *path
            .next()
            .expect("path covers every txn on the chosen branch");
        for op in chosen_ops(request, succeeded) {
            match &op.request {
                Some(Request::RequestTxn(nested)) => self.check_puts(nested, path)?,
                Some(Request::RequestPut(put))
                    if (put.ignore_value || put.ignore_lease)
                        && self.index.latest_live(&put.key).is_none() =>
                {
                    return Err(MvccError::KeyNotFound);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// etcd's up-front `checkRange`: revisions are judged against the state at the start.
    fn check_ranges(
        &self,
        request: &TxnRequest,
        path: &mut slice::Iter<'_, bool>,
    ) -> Result<(), MvccError> {
        let succeeded = *path
            .next()
            .expect("path covers every txn on the chosen branch");
        for op in chosen_ops(request, succeeded) {
            match &op.request {
                Some(Request::RequestTxn(nested)) => self.check_ranges(nested, path)?,
                Some(Request::RequestRange(range)) if range.revision != 0 => {
                    if range.revision > self.begin_revision {
                        return Err(MvccError::FutureRevision);
                    }
                    if range.revision < self.compact_revision {
                        return Err(MvccError::Compacted);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn apply_txn(
        &mut self,
        request: &TxnRequest,
        path: &mut slice::Iter<'_, bool>,
    ) -> Result<TxnResponse, MvccError> {
        let succeeded = *path
            .next()
            .expect("path covers every txn on the chosen branch");
        let ops = chosen_ops(request, succeeded);
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(range)) => {
                    Some(Response::ResponseRange(self.range(range)?))
                }
                Some(Request::RequestPut(put)) => Some(Response::ResponsePut(self.put(put)?)),
                Some(Request::RequestDeleteRange(delete)) => {
                    Some(Response::ResponseDeleteRange(self.delete_range(delete)?))
                }
                Some(Request::RequestTxn(nested)) => {
                    Some(Response::ResponseTxn(self.apply_txn(nested, path)?))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        Ok(TxnResponse {
            // etcd fills only the outermost header; nested ones stay empty.
            header: Some(ResponseHeader::default()),
            succeeded,
            responses,
        })
    }
}
