//! Reading history as watch events: every change to a key range between two
//! revisions, in revision order, as a watcher that fell behind needs them.

use std::time::Instant;

use bytes::Bytes;
use proto::mvccpb::event::EventType;
use proto::mvccpb::{Event, KeyValue};
use std::sync::atomic::Ordering;

use crate::index::KeySpan;
use crate::record::{REVISIONS_TABLE, Record, Revision};
use crate::{Mvcc, MvccError, wait_for_publish};

/// A batch of history read for a watcher.
#[derive(Debug, Default)]
pub struct History {
    pub events: Vec<Event>,
    /// The last main revision the read covered; the watcher continues after it.
    pub scanned_through: i64,
}

/// Whether `key` falls in the range etcd's `key`/`range_end` pair names.
pub fn key_in_range(key: &[u8], range_key: &[u8], range_end: &[u8]) -> bool {
    in_span(KeySpan::new(range_key, range_end), key)
}

fn in_span(span: KeySpan<'_>, key: &[u8]) -> bool {
    match span {
        KeySpan::Single(single) => key == single,
        KeySpan::From(start) => key >= start,
        KeySpan::Between(start, end) => key >= start && key < end,
    }
}

impl Mvcc {
    /// The changes to keys in `[key, range_end)` (etcd's range conventions) at main
    /// revisions from `from` on, up to the published revision, stopping after
    /// `max_revisions` main revisions. Each event carries its previous key-value when
    /// history still has it. A `from` below the compaction point is `Compacted`.
    pub fn history(
        &self,
        key: &[u8],
        range_end: &[u8],
        from: i64,
        max_revisions: i64,
    ) -> Result<History, MvccError> {
        let started = Instant::now();
        loop {
            let published = *self.published.read();
            if from < published.compact_revision {
                return Err(MvccError::Compacted);
            }
            let through = published
                .revision
                .min(from.saturating_add(max_revisions.max(1) - 1));
            if from > through {
                return Ok(History {
                    events: Vec::new(),
                    scanned_through: published.revision,
                });
            }
            let read_txn = self.database.begin_read()?;
            let revisions = read_txn.open_table(REVISIONS_TABLE)?;
            let index = self.index.read();
            // A compaction committed but not yet published may already have removed
            // records this read needs: wait for it, then answer `Compacted`.
            let pending_compaction = self.pending_compact_revision.load(Ordering::SeqCst);
            if index.epoch != published.epoch || from < pending_compaction {
                drop(index);
                wait_for_publish(started)?;
                continue;
            }
            let span = KeySpan::new(key, range_end);
            let start = Revision { main: from, sub: 0 }.to_table_key();
            let end = Revision::last_table_key_of(through);
            let mut events = Vec::new();
            for item in revisions.range(start..=end)? {
                let (table_key, bytes) = item?;
                let revision = Revision::from_table_key(table_key.value());
                let record = Record::decode(bytes.value())?;
                if !in_span(span, record.key) {
                    continue;
                }
                let prev_kv = match index.previous(record.key, revision) {
                    Some(previous) if !previous.tombstone => {
                        match revisions.get(previous.revision.to_table_key())? {
                            Some(previous_bytes) => {
                                let previous_record = Record::decode(previous_bytes.value())?;
                                Some(key_value(previous.revision, &previous_record))
                            }
                            None => None,
                        }
                    }
                    _ => None,
                };
                let (event_type, kv) = if record.tombstone {
                    // etcd's deleted key-value: the key and the deleting revision only.
                    let kv = KeyValue {
                        key: Bytes::copy_from_slice(record.key),
                        mod_revision: revision.main,
                        ..Default::default()
                    };
                    (EventType::Delete, kv)
                } else {
                    (EventType::Put, key_value(revision, &record))
                };
                events.push(Event {
                    r#type: event_type as i32,
                    kv: Some(kv),
                    prev_kv,
                });
            }
            return Ok(History {
                events,
                scanned_through: through,
            });
        }
    }
}

fn key_value(revision: Revision, record: &Record<'_>) -> KeyValue {
    KeyValue {
        key: Bytes::copy_from_slice(record.key),
        create_revision: record.create_revision,
        mod_revision: revision.main,
        version: record.version,
        value: Bytes::copy_from_slice(record.value),
        lease: record.lease,
    }
}
