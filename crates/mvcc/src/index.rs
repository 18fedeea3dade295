//! The in-memory key index (etcd's `keyIndex` tree): for every key, the revisions at which it
//! changed, with enough metadata that ranges, counts, filters and sorts need no disk reads.
//!
//! The index is rebuilt from redb at open; redb stays the only source of truth.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use crate::record::{Record, Revision};

/// One change of one key. Tombstones carry zero metadata, as etcd's deleted key-values do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub revision: Revision,
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
    pub tombstone: bool,
}

impl IndexEntry {
    pub fn from_record(revision: Revision, record: &Record<'_>) -> IndexEntry {
        IndexEntry {
            revision,
            create_revision: record.create_revision,
            version: record.version,
            lease: record.lease,
            tombstone: record.tombstone,
        }
    }
}

/// Which keys a request addresses, decoded once from etcd's `key`/`range_end` convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeySpan<'a> {
    /// `range_end` empty: exactly `key`.
    Single(&'a [u8]),
    /// `range_end` is `"\0"`: every key >= `key`.
    From(&'a [u8]),
    /// `[key, range_end)`.
    Between(&'a [u8], &'a [u8]),
}

impl<'a> KeySpan<'a> {
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> KeySpan<'a> {
        match range_end {
            [] => KeySpan::Single(key),
            [0] => KeySpan::From(key),
            end => KeySpan::Between(key, end),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    /// Per key, its entries in ascending revision order.
    keys: BTreeMap<Bytes, Vec<IndexEntry>>,
    /// Bumped when a snapshot replaces the whole index, so a reader can tell that the index it
    /// locked does not belong to the state it read the published revision of.
    pub epoch: u64,
}

/// The entry of `history` visible at `revision`, if the key is live there.
fn live_entry_at(history: &[IndexEntry], revision: i64) -> Option<&IndexEntry> {
    let visible = history.partition_point(|entry| entry.revision.main <= revision);
    let entry = history[..visible].last()?;
    (!entry.tombstone).then_some(entry)
}

impl KeyIndex {
    pub fn new(epoch: u64) -> KeyIndex {
        KeyIndex {
            keys: BTreeMap::new(),
            epoch,
        }
    }

    /// Records a change. Entries must arrive in ascending revision order per key, which holds
    /// both when replaying the revisions table and when applying new writes.
    pub fn n_keys(&self) -> usize {
        self.keys.len()
    }

    pub fn push(&mut self, key: &[u8], entry: IndexEntry) {
        if let Some(history) = self.keys.get_mut(key) {
            debug_assert!(
                history
                    .last()
                    .is_none_or(|last| last.revision < entry.revision),
                "index entries must be pushed in revision order"
            );
            history.push(entry);
        } else {
            // Copy rather than keep the caller's `Bytes`: a decoded request's key may share a
            // much larger buffer that the index would otherwise keep alive.
            self.keys.insert(Bytes::copy_from_slice(key), vec![entry]);
        }
    }

    /// The newest entry of `key` if the key is live in the latest state (written or not yet
    /// published); writers use this, readers use `visit_live` with their revision.
    pub fn latest_live(&self, key: &[u8]) -> Option<&IndexEntry> {
        let entry = self.keys.get(key)?.last()?;
        (!entry.tombstone).then_some(entry)
    }

    /// Calls `visit` for every key in `span` that is live at `revision`, in ascending key order.
    pub fn visit_live<'s>(
        &'s self,
        span: KeySpan<'_>,
        revision: i64,
        mut visit: impl FnMut(&'s Bytes, &'s IndexEntry),
    ) {
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) = match span {
            KeySpan::Single(key) => {
                if let Some((stored_key, history)) = self.keys.get_key_value(key)
                    && let Some(entry) = live_entry_at(history, revision)
                {
                    visit(stored_key, entry);
                }
                return;
            }
            KeySpan::From(start) => (Bound::Included(start), Bound::Unbounded),
            // BTreeMap::range panics on an inverted range; etcd answers it with nothing.
            KeySpan::Between(start, end) if start >= end => return,
            KeySpan::Between(start, end) => (Bound::Included(start), Bound::Excluded(end)),
        };
        for (key, history) in self.keys.range::<[u8], _>(bounds) {
            if let Some(entry) = live_entry_at(history, revision) {
                visit(key, entry);
            }
        }
    }

    /// The change of `key` just before `revision`, if the index still holds it.
    pub fn previous(&self, key: &[u8], revision: Revision) -> Option<&IndexEntry> {
        let history = self.keys.get(key)?;
        let before = history.partition_point(|entry| entry.revision < revision);
        before.checked_sub(1).map(|position| &history[position])
    }

    /// etcd's compaction of the index at `revision`: of each key's entries at or below it only
    /// the newest survives, and not even that one if it is a tombstone. Appends the revisions
    /// that no longer belong to any key to `removed`.
    pub fn compact(&mut self, revision: i64, removed: &mut Vec<Revision>) {
        self.keys.retain(|_, history| {
            let at_or_below = history.partition_point(|entry| entry.revision.main <= revision);
            if at_or_below == 0 {
                return true;
            }
            let newest_below = &history[at_or_below - 1];
            let drop_count = if newest_below.tombstone {
                at_or_below
            } else {
                at_or_below - 1
            };
            removed.extend(history.drain(..drop_count).map(|entry| entry.revision));
            !history.is_empty()
        });
    }

    /// Every entry in revision order per key; used by tests to compare indexes.
    #[cfg(test)]
    pub fn entries(&self) -> impl Iterator<Item = (&Bytes, &[IndexEntry])> {
        self.keys
            .iter()
            .map(|(key, history)| (key, history.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(main: i64, sub: i64, create_revision: i64, version: i64) -> IndexEntry {
        IndexEntry {
            revision: Revision { main, sub },
            create_revision,
            version,
            lease: 0,
            tombstone: false,
        }
    }

    fn tombstone(main: i64, sub: i64) -> IndexEntry {
        IndexEntry {
            revision: Revision { main, sub },
            create_revision: 0,
            version: 0,
            lease: 0,
            tombstone: true,
        }
    }

    fn live_keys(index: &KeyIndex, span: KeySpan<'_>, revision: i64) -> Vec<(Vec<u8>, i64)> {
        let mut found = Vec::new();
        index.visit_live(span, revision, |key, entry| {
            found.push((key.to_vec(), entry.revision.main))
        });
        found
    }

    #[test]
    fn key_spans_follow_etcd_conventions() {
        assert_eq!(KeySpan::new(b"a", b""), KeySpan::Single(b"a"));
        assert_eq!(KeySpan::new(b"a", b"\0"), KeySpan::From(b"a"));
        assert_eq!(KeySpan::new(b"a", b"b"), KeySpan::Between(b"a", b"b"));
    }

    #[test]
    fn visibility_follows_revisions_and_tombstones() {
        let mut index = KeyIndex::new(0);
        index.push(b"a", put(2, 0, 2, 1));
        index.push(b"b", put(3, 0, 3, 1));
        index.push(b"a", tombstone(4, 0));
        index.push(b"a", put(5, 0, 5, 1));

        assert_eq!(live_keys(&index, KeySpan::From(b""), 1), vec![]);
        assert_eq!(
            live_keys(&index, KeySpan::From(b""), 3),
            vec![(b"a".to_vec(), 2), (b"b".to_vec(), 3)]
        );
        assert_eq!(
            live_keys(&index, KeySpan::From(b""), 4),
            vec![(b"b".to_vec(), 3)]
        );
        assert_eq!(
            live_keys(&index, KeySpan::Single(b"a"), 5),
            vec![(b"a".to_vec(), 5)]
        );
        assert_eq!(live_keys(&index, KeySpan::Between(b"b", b"a"), 5), vec![]);
        assert_eq!(live_keys(&index, KeySpan::Between(b"a", b"a"), 5), vec![]);
        assert_eq!(
            live_keys(&index, KeySpan::Between(b"a", b"b"), 5),
            vec![(b"a".to_vec(), 5)]
        );
    }

    #[test]
    fn compaction_keeps_newest_non_tombstone_at_or_below() {
        let mut index = KeyIndex::new(0);
        index.push(b"a", put(2, 0, 2, 1));
        index.push(b"a", put(3, 0, 2, 2));
        index.push(b"b", put(3, 1, 3, 1));
        index.push(b"b", tombstone(4, 0));
        index.push(b"c", put(5, 0, 5, 1));
        index.push(b"b", put(6, 0, 6, 1));

        let mut removed = Vec::new();
        index.compact(4, &mut removed);
        removed.sort();
        assert_eq!(
            removed,
            vec![
                Revision { main: 2, sub: 0 },
                Revision { main: 3, sub: 1 },
                Revision { main: 4, sub: 0 }
            ]
        );
        let remaining: Vec<_> = index
            .entries()
            .map(|(key, history)| {
                (
                    key.to_vec(),
                    history.iter().map(|e| e.revision.main).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            remaining,
            vec![
                (b"a".to_vec(), vec![3]),
                (b"b".to_vec(), vec![6]),
                (b"c".to_vec(), vec![5])
            ]
        );

        // A key whose last change at or below the compaction point is a tombstone vanishes.
        let mut index = KeyIndex::new(0);
        index.push(b"gone", put(2, 0, 2, 1));
        index.push(b"gone", tombstone(3, 0));
        let mut removed = Vec::new();
        index.compact(3, &mut removed);
        assert_eq!(removed.len(), 2);
        assert_eq!(index.entries().count(), 0);
    }
}
