//! The self-contained byte form of the whole MVCC state, shipped as a raft snapshot.
//!
//! Layout (integers little-endian): magic, consistent index (u64), compact revision (i64),
//! current revision (i64), record count (u64), then per record its table key (u128), length
//! (u32) and stored bytes, and finally a CRC-32C of everything before it. Records are the
//! stored records verbatim, so restoring is a copy and the format follows `record.rs`.

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata};

use crate::MvccError;
use crate::hash::Crc32c;
use crate::record::{
    META_COMPACT_REVISION, META_CONSISTENT_INDEX, META_TABLE, REVISIONS_TABLE, Record, Revision,
};

const MAGIC: &[u8; 8] = b"SHMVCC01";
const HEADER_LEN: usize = 8 + 8 + 8 + 8 + 8;
const CHECKSUM_LEN: usize = 4;

/// The persisted scalar state, read from one transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StoredMeta {
    pub consistent_index: u64,
    pub compact_revision: i64,
}

pub(crate) fn read_meta<T>(meta: &T) -> Result<StoredMeta, MvccError>
where
    T: ReadableTable<&'static str, u64>,
{
    let read = |name: &str| -> Result<u64, MvccError> {
        Ok(meta.get(name)?.map(|guard| guard.value()).unwrap_or(0))
    };
    let compact_revision = i64::try_from(read(META_COMPACT_REVISION)?).map_err(|_| {
        MvccError::Storage("corrupt meta: compact revision out of range".to_string())
    })?;
    Ok(StoredMeta {
        consistent_index: read(META_CONSISTENT_INDEX)?,
        compact_revision,
    })
}

/// etcd's current revision is derived, not stored: every revision above the compaction point
/// keeps at least one record, so it is the newest record's or the compaction point, and 1 on
/// an empty store.
pub(crate) fn derive_current_revision(last_record: Option<Revision>, compact_revision: i64) -> i64 {
    last_record
        .map_or(1, |revision| revision.main)
        .max(compact_revision)
        .max(1)
}

pub(crate) fn encode(read_txn: &ReadTransaction) -> Result<Vec<u8>, MvccError> {
    let revisions = read_txn.open_table(REVISIONS_TABLE)?;
    let meta = read_meta(&read_txn.open_table(META_TABLE)?)?;
    let record_count = revisions.len()?;
    let last_record = revisions
        .last()?
        .map(|(key, _)| Revision::from_table_key(key.value()));
    let current_revision = derive_current_revision(last_record, meta.compact_revision);

    let mut output = Vec::with_capacity(HEADER_LEN + CHECKSUM_LEN);
    output.extend_from_slice(MAGIC);
    output.extend_from_slice(&meta.consistent_index.to_le_bytes());
    output.extend_from_slice(&meta.compact_revision.to_le_bytes());
    output.extend_from_slice(&current_revision.to_le_bytes());
    output.extend_from_slice(&record_count.to_le_bytes());
    for item in revisions.iter()? {
        let (key, value) = item?;
        let value = value.value();
        let length = u32::try_from(value.len())
            .map_err(|_| MvccError::Storage("record larger than 4 GiB".to_string()))?;
        output.extend_from_slice(&key.value().to_le_bytes());
        output.extend_from_slice(&length.to_le_bytes());
        output.extend_from_slice(value);
    }
    let checksum = Crc32c::checksum(&output);
    output.extend_from_slice(&checksum.to_le_bytes());
    Ok(output)
}

/// A snapshot checked end to end: checksum, ordering, and every record decodable.
pub(crate) struct DecodedSnapshot<'a> {
    pub meta: StoredMeta,
    pub current_revision: i64,
    pub records: Vec<(Revision, Record<'a>, &'a [u8])>,
}

fn corrupt(reason: &str) -> MvccError {
    MvccError::Storage(format!("corrupt mvcc snapshot: {reason}"))
}

/// A cursor over the snapshot body that reports truncation instead of panicking.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8], MvccError> {
        if self.bytes.len() < length {
            return Err(corrupt("truncated"));
        }
        let (taken, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MvccError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }
}

pub(crate) fn decode(snapshot: &[u8]) -> Result<DecodedSnapshot<'_>, MvccError> {
    if snapshot.len() < HEADER_LEN + CHECKSUM_LEN {
        return Err(corrupt("shorter than its header"));
    }
    let (body, checksum) = snapshot.split_at(snapshot.len() - CHECKSUM_LEN);
    if Crc32c::checksum(body) != u32::from_le_bytes(checksum.try_into().expect("4 bytes")) {
        return Err(corrupt("checksum mismatch"));
    }
    let mut cursor = Cursor { bytes: body };
    if cursor.take(MAGIC.len())? != MAGIC {
        return Err(corrupt("unknown format"));
    }
    let consistent_index = u64::from_le_bytes(cursor.array()?);
    let compact_revision = i64::from_le_bytes(cursor.array()?);
    let current_revision = i64::from_le_bytes(cursor.array()?);
    let record_count = u64::from_le_bytes(cursor.array()?);

    // Each record takes at least 20 bytes, which bounds the allocation a corrupt count can ask for.
    let capacity = usize::try_from(record_count)
        .unwrap_or(usize::MAX)
        .min(body.len() / 20);
    let mut records = Vec::with_capacity(capacity);
    let mut previous: Option<Revision> = None;
    for _ in 0..record_count {
        let revision = Revision::from_table_key(u128::from_le_bytes(cursor.array()?));
        let length = u32::from_le_bytes(cursor.array()?) as usize;
        let stored = cursor.take(length)?;
        if previous.is_some_and(|previous| previous >= revision) {
            return Err(corrupt("records out of revision order"));
        }
        if revision.main < 0 || revision.sub < 0 || revision.main > current_revision {
            return Err(corrupt("record revision outside the snapshot's history"));
        }
        previous = Some(revision);
        records.push((revision, Record::decode(stored)?, stored));
    }
    if !cursor.bytes.is_empty() {
        return Err(corrupt("trailing bytes after the last record"));
    }
    if compact_revision < 0
        || current_revision != derive_current_revision(previous, compact_revision)
    {
        return Err(corrupt("inconsistent revisions"));
    }
    Ok(DecodedSnapshot {
        meta: StoredMeta {
            consistent_index,
            compact_revision,
        },
        current_revision,
        records,
    })
}

/// One stored revision in a form another store shares (an etcd backend
/// being imported, or the etcd-format snapshot being written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRevision {
    pub main: i64,
    pub sub: i64,
    pub tombstone: bool,
    pub key: bytes::Bytes,
    pub value: bytes::Bytes,
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
}

/// The whole stored history, read in one transaction: what an etcd backend
/// holds of the MVCC state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedHistory {
    pub consistent_index: u64,
    pub compact_revision: i64,
    /// Every stored revision in ascending (main, sub) order.
    pub revisions: Vec<HistoryRevision>,
}

pub(crate) fn export(read_txn: &ReadTransaction) -> Result<ExportedHistory, MvccError> {
    let revisions_table = read_txn.open_table(REVISIONS_TABLE)?;
    let meta = read_meta(&read_txn.open_table(META_TABLE)?)?;
    let mut revisions = Vec::with_capacity(usize::try_from(revisions_table.len()?).unwrap_or(0));
    for item in revisions_table.iter()? {
        let (key, value) = item?;
        let revision = Revision::from_table_key(key.value());
        let record = Record::decode(value.value())?;
        revisions.push(HistoryRevision {
            main: revision.main,
            sub: revision.sub,
            tombstone: record.tombstone,
            key: bytes::Bytes::copy_from_slice(record.key),
            value: bytes::Bytes::copy_from_slice(record.value),
            create_revision: record.create_revision,
            version: record.version,
            lease: record.lease,
        });
    }
    Ok(ExportedHistory {
        consistent_index: meta.consistent_index,
        compact_revision: meta.compact_revision,
        revisions,
    })
}

/// Builds a snapshot (the format `Mvcc::restore` takes) from another store's
/// history. Revisions must be in ascending (main, sub) order; the result is
/// checked by the same decoder a restore uses, so a bad import fails here.
pub fn snapshot_from_history(
    consistent_index: u64,
    compact_revision: i64,
    revisions: &[HistoryRevision],
) -> Result<Vec<u8>, MvccError> {
    let last = revisions.last().map(|revision| Revision {
        main: revision.main,
        sub: revision.sub,
    });
    let current_revision = derive_current_revision(last, compact_revision);
    let mut output = Vec::new();
    output.extend_from_slice(MAGIC);
    output.extend_from_slice(&consistent_index.to_le_bytes());
    output.extend_from_slice(&compact_revision.to_le_bytes());
    output.extend_from_slice(&current_revision.to_le_bytes());
    output.extend_from_slice(&(revisions.len() as u64).to_le_bytes());
    let mut record_bytes = Vec::new();
    for imported in revisions {
        if imported.main < 0 || imported.sub < 0 {
            return Err(corrupt("negative revision in imported history"));
        }
        record_bytes.clear();
        Record {
            key: &imported.key,
            value: if imported.tombstone {
                &[]
            } else {
                &imported.value
            },
            create_revision: if imported.tombstone {
                0
            } else {
                imported.create_revision
            },
            version: if imported.tombstone {
                0
            } else {
                imported.version
            },
            lease: if imported.tombstone {
                0
            } else {
                imported.lease
            },
            tombstone: imported.tombstone,
        }
        .encode_into(&mut record_bytes);
        let revision = Revision {
            main: imported.main,
            sub: imported.sub,
        };
        let length = u32::try_from(record_bytes.len())
            .map_err(|_| MvccError::Storage("record larger than 4 GiB".to_string()))?;
        output.extend_from_slice(&revision.to_table_key().to_le_bytes());
        output.extend_from_slice(&length.to_le_bytes());
        output.extend_from_slice(&record_bytes);
    }
    let checksum = Crc32c::checksum(&output);
    output.extend_from_slice(&checksum.to_le_bytes());
    decode(&output)?;
    Ok(output)
}
