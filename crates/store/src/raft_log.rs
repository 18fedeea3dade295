//! The raft log as raft-rs sees it (`raft::Storage`): every change written to
//! redb in the caller's write transaction, the term of every entry since the
//! last compaction and the newest entries (up to `RECENT_BYTES`) held in memory,
//! older entries read back from redb when raft asks for them (a lagging
//! follower), and snapshots built on demand from the state machine.
//!
//! Invariant: what is in memory equals what the last committed transaction wrote;
//! the raft loop commits every transaction it hands to these methods before it
//! tells raft the work is done. So an entry that is only on disk was written by
//! a committed transaction, which a read transaction sees.

use std::collections::VecDeque;
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use redb::{TableDefinition, WriteTransaction};

use crate::state_machine::StateMachine;

/// Log index -> the entry, in raft-rs' protobuf encoding.
const ENTRIES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raft_entries");
/// Hard state, conf state and the compaction point.
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_meta");

const HARD_STATE: &str = "hard_state";
const CONF_STATE: &str = "conf_state";
/// Index and term of the last entry removed from the log (the "snapshot" point).
const TRUNCATED: &str = "truncated";

/// How many bytes of the newest entries stay in memory. Entries are applied
/// and sent to followers that keep up soon after they are appended, so these
/// cover the hot path; holding every entry since the last compaction (up to
/// `--snapshot-count`, 100,000 by default) cost about 45 MB with 256-byte values.
const RECENT_BYTES: usize = 8 * 1024 * 1024;

pub struct RaftLog {
    hard_state: HardState,
    /// The commit index as last written to disk; `hard_state.commit` may be ahead
    /// of it (raft reports commits it has not asked us to persist).
    persisted_commit: u64,
    conf_state: ConfState,
    truncated_index: u64,
    truncated_term: u64,
    /// terms[i] is the term of the entry at index truncated_index + 1 + i.
    terms: Vec<u64>,
    /// The newest entries, a suffix of the log: the last one is at `last()`.
    recent: VecDeque<Entry>,
    /// What `recent` holds, as counted by `entry_bytes`.
    recent_bytes: usize,
    /// Older entries beyond this many bytes are left on disk only.
    recent_budget: usize,
    db: Arc<mvcc::Db>,
    state_machine: Arc<StateMachine>,
}

/// An entry's share of the memory budget: its payload and the struct around it.
fn entry_bytes(entry: &Entry) -> usize {
    entry.data.len() + entry.context.len() + std::mem::size_of::<Entry>()
}

fn storage_error(error: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(error.to_string().into()))
}

impl RaftLog {
    /// Loads the log from `db`, or reports `None` if this database holds no raft state yet.
    pub fn load(
        db: &mvcc::Db,
        state_machine: Arc<StateMachine>,
    ) -> Result<Option<RaftLog>, String> {
        let rtx = db.begin_read().map_err(|error| error.to_string())?;
        let meta = match rtx.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(error.to_string()),
        };
        let Some(hard_state) = meta.get(HARD_STATE).map_err(|error| error.to_string())? else {
            return Ok(None);
        };
        let hard_state =
            HardState::parse_from_bytes(hard_state.value()).map_err(|error| error.to_string())?;
        let conf_state = match meta.get(CONF_STATE).map_err(|error| error.to_string())? {
            Some(bytes) => {
                ConfState::parse_from_bytes(bytes.value()).map_err(|error| error.to_string())?
            }
            None => ConfState::default(),
        };
        let (truncated_index, truncated_term) =
            match meta.get(TRUNCATED).map_err(|error| error.to_string())? {
                Some(bytes) => decode_pair(bytes.value())?,
                None => (0, 0),
            };
        let mut log = RaftLog {
            persisted_commit: hard_state.commit,
            hard_state,
            conf_state,
            truncated_index,
            truncated_term,
            terms: Vec::new(),
            recent: VecDeque::new(),
            recent_bytes: 0,
            recent_budget: RECENT_BYTES,
            db: state_machine.mvcc.database().clone(),
            state_machine,
        };
        let table = rtx.open_table(ENTRIES).map_err(|error| error.to_string())?;
        for item in table
            .range(truncated_index + 1..)
            .map_err(|error| error.to_string())?
        {
            let (index, bytes) = item.map_err(|error| error.to_string())?;
            let entry =
                Entry::parse_from_bytes(bytes.value()).map_err(|error| error.to_string())?;
            let expected = log.last() + 1;
            if index.value() != expected || entry.index != expected {
                return Err(format!(
                    "raft log has a gap: expected entry {expected}, found {}",
                    index.value()
                ));
            }
            log.terms.push(entry.term);
            log.push_recent(entry);
            log.trim_recent(u64::MAX);
        }
        Ok(Some(log))
    }

    /// Adds the entry after the last one to the in-memory suffix.
    fn push_recent(&mut self, entry: Entry) {
        self.recent_bytes += entry_bytes(&entry);
        self.recent.push_back(entry);
    }

    /// Drops the oldest in-memory entries beyond the budget, but none at or
    /// after `keep_from` (entries written by a transaction not yet committed).
    fn trim_recent(&mut self, keep_from: u64) {
        while self.recent_bytes > self.recent_budget
            && self.recent.len() > 1
            && self
                .recent
                .front()
                .is_some_and(|entry| entry.index < keep_from)
        {
            let entry = self.recent.pop_front().expect("checked above");
            self.recent_bytes -= entry_bytes(&entry);
        }
    }

    /// The index of the first entry held in memory (`last() + 1` if none is).
    fn first_recent(&self) -> u64 {
        self.last() + 1 - self.recent.len() as u64
    }

    /// A brand new log for a founding member: as if a snapshot at index 1, term 1
    /// had installed the initial voters. Every founding member starts from the same
    /// point, so their logs agree from the first entry on.
    pub fn bootstrap(
        wtx: &WriteTransaction,
        voters: Vec<u64>,
        state_machine: Arc<StateMachine>,
    ) -> Result<RaftLog, String> {
        let mut log = RaftLog {
            persisted_commit: 0,
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            truncated_index: 1,
            truncated_term: 1,
            terms: Vec::new(),
            recent: VecDeque::new(),
            recent_bytes: 0,
            recent_budget: RECENT_BYTES,
            db: state_machine.mvcc.database().clone(),
            state_machine,
        };
        log.hard_state.term = 1;
        log.hard_state.commit = 1;
        log.conf_state.voters = voters;
        wtx.open_table(ENTRIES).map_err(|error| error.to_string())?;
        log.persist_hard_state(wtx)
            .map_err(|error| error.to_string())?;
        log.persist_conf_state(wtx)
            .map_err(|error| error.to_string())?;
        log.persist_truncated(wtx)
            .map_err(|error| error.to_string())?;
        Ok(log)
    }

    /// An empty log for a member joining a running cluster: it learns everything
    /// from the leader, starting with a snapshot.
    pub fn empty(
        wtx: &WriteTransaction,
        state_machine: Arc<StateMachine>,
    ) -> Result<RaftLog, String> {
        let mut log = RaftLog {
            persisted_commit: 0,
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            truncated_index: 0,
            truncated_term: 0,
            terms: Vec::new(),
            recent: VecDeque::new(),
            recent_bytes: 0,
            recent_budget: RECENT_BYTES,
            db: state_machine.mvcc.database().clone(),
            state_machine,
        };
        wtx.open_table(ENTRIES).map_err(|error| error.to_string())?;
        log.persist_hard_state(wtx)
            .map_err(|error| error.to_string())?;
        log.persist_truncated(wtx)
            .map_err(|error| error.to_string())?;
        Ok(log)
    }

    pub fn truncated_index(&self) -> u64 {
        self.truncated_index
    }

    fn last(&self) -> u64 {
        self.truncated_index + self.terms.len() as u64
    }

    /// Appends entries, replacing any conflicting suffix.
    pub fn append(&mut self, wtx: &WriteTransaction, new_entries: &[Entry]) -> Result<(), String> {
        let Some(first_new) = new_entries.first() else {
            return Ok(());
        };
        let first_new_index = first_new.index;
        assert!(
            first_new_index > self.truncated_index,
            "raft appended entry {first_new_index} at or below the compacted index {}",
            self.truncated_index
        );
        assert!(
            first_new_index <= self.last() + 1,
            "raft appended entry {first_new_index} after a gap (last is {})",
            self.last()
        );
        let mut table = wtx.open_table(ENTRIES).map_err(|error| error.to_string())?;
        // Entries from first_new_index on are replaced: drop the stale suffix on disk too.
        if first_new_index <= self.last() {
            let old_last = self.last();
            for index in first_new_index..=old_last {
                table.remove(index).map_err(|error| error.to_string())?;
            }
            self.terms
                .truncate((first_new_index - self.truncated_index - 1) as usize);
            while self
                .recent
                .back()
                .is_some_and(|entry| entry.index >= first_new_index)
            {
                let entry = self.recent.pop_back().expect("checked above");
                self.recent_bytes -= entry_bytes(&entry);
            }
        }
        for entry in new_entries {
            let bytes = entry.write_to_bytes().map_err(|error| error.to_string())?;
            table
                .insert(entry.index, bytes.as_slice())
                .map_err(|error| error.to_string())?;
        }
        for entry in new_entries {
            self.terms.push(entry.term);
            self.push_recent(entry.clone());
        }
        debug_assert_eq!(
            self.recent.back().map(|entry| entry.index),
            Some(self.last())
        );
        self.trim_recent(first_new_index);
        Ok(())
    }

    pub fn set_hard_state(
        &mut self,
        wtx: &WriteTransaction,
        hard_state: HardState,
    ) -> Result<(), String> {
        self.hard_state = hard_state;
        self.persist_hard_state(wtx)
            .map_err(|error| error.to_string())
    }

    /// Records the commit index raft reported in a light ready (it is recoverable,
    /// so it is written with the next hard state, not on its own).
    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
    }

    /// Makes the persisted commit index cover `applied`, in the transaction that
    /// applies it: raft-rs refuses to restart with an applied index above the
    /// stored commit index.
    pub fn commit_at_least(&mut self, wtx: &WriteTransaction, applied: u64) -> Result<(), String> {
        if self.persisted_commit >= applied {
            return Ok(());
        }
        self.hard_state.commit = self.hard_state.commit.max(applied);
        self.persist_hard_state(wtx)
            .map_err(|error| error.to_string())
    }

    pub fn set_conf_state(
        &mut self,
        wtx: &WriteTransaction,
        conf_state: ConfState,
    ) -> Result<(), String> {
        self.conf_state = conf_state;
        self.persist_conf_state(wtx)
            .map_err(|error| error.to_string())
    }

    /// Installs a snapshot's position: the whole log is replaced by it.
    pub fn apply_snapshot(
        &mut self,
        wtx: &WriteTransaction,
        metadata: &SnapshotMetadata,
    ) -> Result<(), String> {
        let mut table = wtx.open_table(ENTRIES).map_err(|error| error.to_string())?;
        table
            .retain(|_, _| false)
            .map_err(|error| error.to_string())?;
        drop(table);
        self.terms.clear();
        self.recent.clear();
        self.recent_bytes = 0;
        self.truncated_index = metadata.index;
        self.truncated_term = metadata.term;
        self.hard_state.term = self.hard_state.term.max(metadata.term);
        self.hard_state.commit = metadata.index;
        self.conf_state = metadata.get_conf_state().clone();
        self.persist_truncated(wtx)
            .map_err(|error| error.to_string())?;
        self.persist_hard_state(wtx)
            .map_err(|error| error.to_string())?;
        self.persist_conf_state(wtx)
            .map_err(|error| error.to_string())
    }

    /// Removes every entry up to and including `index` (which must be applied).
    pub fn compact(&mut self, wtx: &WriteTransaction, index: u64) -> Result<(), String> {
        if index <= self.truncated_index {
            return Ok(());
        }
        assert!(index <= self.last(), "compacting past the end of the log");
        let term = self
            .entry_term(index)
            .expect("entry to compact is in the log");
        let mut table = wtx.open_table(ENTRIES).map_err(|error| error.to_string())?;
        table
            .retain_in(..=index, |_, _| false)
            .map_err(|error| error.to_string())?;
        drop(table);
        let n_removed = (index - self.truncated_index) as usize;
        self.terms.drain(..n_removed);
        while self
            .recent
            .front()
            .is_some_and(|entry| entry.index <= index)
        {
            let entry = self.recent.pop_front().expect("checked above");
            self.recent_bytes -= entry_bytes(&entry);
        }
        self.truncated_index = index;
        self.truncated_term = term;
        self.persist_truncated(wtx)
            .map_err(|error| error.to_string())
    }

    fn entry_term(&self, index: u64) -> Option<u64> {
        if index == self.truncated_index {
            return Some(self.truncated_term);
        }
        if index < self.truncated_index || index > self.last() {
            return None;
        }
        Some(self.terms[(index - self.truncated_index - 1) as usize])
    }

    fn persist_hard_state(&mut self, wtx: &WriteTransaction) -> Result<(), redb::Error> {
        self.persisted_commit = self.hard_state.commit;
        let bytes = self
            .hard_state
            .write_to_bytes()
            .expect("encoding a hard state");
        put_meta(wtx, HARD_STATE, &bytes)
    }

    fn persist_conf_state(&self, wtx: &WriteTransaction) -> Result<(), redb::Error> {
        let bytes = self
            .conf_state
            .write_to_bytes()
            .expect("encoding a conf state");
        put_meta(wtx, CONF_STATE, &bytes)
    }

    fn persist_truncated(&self, wtx: &WriteTransaction) -> Result<(), redb::Error> {
        put_meta(
            wtx,
            TRUNCATED,
            &encode_pair(self.truncated_index, self.truncated_term),
        )
    }
}

fn put_meta(wtx: &WriteTransaction, name: &str, bytes: &[u8]) -> Result<(), redb::Error> {
    wtx.open_table(META)?.insert(name, bytes)?;
    Ok(())
}

fn encode_pair(first: u64, second: u64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&first.to_be_bytes());
    bytes[8..].copy_from_slice(&second.to_be_bytes());
    bytes
}

fn decode_pair(bytes: &[u8]) -> Result<(u64, u64), String> {
    if bytes.len() != 16 {
        return Err(format!(
            "corrupt raft metadata record of {} bytes",
            bytes.len()
        ));
    }
    let first = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    let second = u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes"));
    Ok((first, second))
}

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut size = 0u64;
        let mut result = Vec::with_capacity((high - low).min(1024) as usize);
        // Always return at least one entry, as raft-rs requires.
        let mut take = |entry: Entry, result: &mut Vec<Entry>| {
            size += u64::from(entry.compute_size());
            if !result.is_empty() && size > max_size {
                return false;
            }
            result.push(entry);
            true
        };
        let first_recent = self.first_recent();
        if low < first_recent {
            // Older than what is kept in memory: read back what an earlier,
            // committed transaction wrote.
            let on_disk_end = high.min(first_recent);
            let rtx = self.db.begin_read().map_err(storage_error)?;
            let table = rtx.open_table(ENTRIES).map_err(storage_error)?;
            for item in table.range(low..on_disk_end).map_err(storage_error)? {
                let (index, bytes) = item.map_err(storage_error)?;
                let entry = Entry::parse_from_bytes(bytes.value()).map_err(storage_error)?;
                let expected = low + result.len() as u64;
                if index.value() != expected || entry.index != expected {
                    return Err(storage_error(format!(
                        "raft log has a gap: expected entry {expected}, found {}",
                        index.value()
                    )));
                }
                if !take(entry, &mut result) {
                    return Ok(result);
                }
            }
            if result.len() as u64 != on_disk_end - low {
                return Err(storage_error(format!(
                    "raft log entries {low}..{on_disk_end} are missing from disk"
                )));
            }
        }
        let start = low.max(first_recent);
        for index in start..high {
            let entry = self.recent[(index - first_recent) as usize].clone();
            if !take(entry, &mut result) {
                break;
            }
        }
        Ok(result)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index < self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.entry_term(index)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // Everything applied is committed to redb between readies, so the state
        // machine's current state is exactly the state at its applied index.
        let (applied_index, data) = self.state_machine.snapshot().map_err(storage_error)?;
        if applied_index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let term = self
            .entry_term(applied_index)
            .ok_or_else(|| storage_error(format!("no term for applied index {applied_index}")))?;
        let mut snapshot = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = applied_index;
        metadata.term = term;
        metadata.set_conf_state(self.conf_state.clone());
        Ok(snapshot)
    }
}

/// Whether `db` already holds a member's raft state (a restart rather than a first start).
pub fn has_state(db: &mvcc::Db) -> Result<bool, String> {
    let rtx = db.begin_read().map_err(|error| error.to_string())?;
    match rtx.open_table(META) {
        Ok(table) => Ok(table
            .get(HARD_STATE)
            .map_err(|error| error.to_string())?
            .is_some()),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
        Err(error) => Err(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: format!("e{index}t{term}").into_bytes().into(),
            ..Default::default()
        }
    }

    fn open(dir: &tempfile::TempDir) -> (Arc<mvcc::Db>, Arc<StateMachine>) {
        let db = Arc::new(mvcc::Db::open(&dir.path().join("db"), 1 << 20).unwrap());
        let state_machine =
            Arc::new(StateMachine::open(db.clone(), 2, crate::clock::Clock::system()).unwrap());
        (db, state_machine)
    }

    /// A fresh database holding a bootstrapped log with these voters.
    fn bootstrapped(
        voters: Vec<u64>,
    ) -> (tempfile::TempDir, Arc<mvcc::Db>, Arc<StateMachine>, RaftLog) {
        let dir = tempfile::tempdir().unwrap();
        let (db, state_machine) = open(&dir);
        let wtx = db.begin_write().unwrap();
        let log = RaftLog::bootstrap(&wtx, voters, state_machine.clone()).unwrap();
        wtx.commit().unwrap();
        (dir, db, state_machine, log)
    }

    fn commit(db: &mvcc::Db, change: impl FnOnce(&WriteTransaction)) {
        let wtx = db.begin_write().unwrap();
        change(&wtx);
        wtx.commit().unwrap();
    }

    #[test]
    fn bootstrap_then_reload_gives_the_same_log() {
        let dir = tempfile::tempdir().unwrap();
        let (db, state_machine) = open(&dir);
        let wtx = db.begin_write().unwrap();
        let mut log = RaftLog::bootstrap(&wtx, vec![1, 2, 3], state_machine.clone()).unwrap();
        wtx.commit().unwrap();
        assert_eq!(log.first_index().unwrap(), 2);
        assert_eq!(log.term(1).unwrap(), 1);
        commit(&db, |wtx| {
            log.append(wtx, &[entry(2, 1), entry(3, 1), entry(4, 2)])
                .unwrap()
        });

        let reloaded = RaftLog::load(&db, state_machine)
            .unwrap()
            .expect("state exists");
        assert_eq!(reloaded.last_index().unwrap(), 4);
        assert_eq!(reloaded.term(4).unwrap(), 2);
        assert_eq!(
            reloaded.initial_state().unwrap().conf_state.voters,
            vec![1, 2, 3]
        );
        let entries = reloaded
            .entries(2, 5, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(entries, vec![entry(2, 1), entry(3, 1), entry(4, 2)]);
    }

    /// Entries beyond the memory budget are read back from redb: every range
    /// raft may ask for gives what an unbounded log would, across the edge
    /// between disk and memory, after a conflicting append and a compaction,
    /// with and without a size limit.
    #[test]
    fn entries_beyond_the_memory_budget_are_read_from_disk() {
        let (_dir, db, state_machine, mut log) = bootstrapped(vec![1]);
        // Room for about three of these entries.
        log.recent_budget = 3 * (std::mem::size_of::<Entry>() + 8);
        let mut expected: Vec<Entry> = (2..=40).map(|index| entry(index, 1)).collect();
        for chunk in expected.chunks(7) {
            commit(&db, |wtx| log.append(wtx, chunk).unwrap());
        }
        assert!(log.recent.len() < 10, "old entries left memory");
        // A conflicting suffix from index 30 on, in two appends.
        let replacement: Vec<Entry> = (30..=45).map(|index| entry(index, 2)).collect();
        commit(&db, |wtx| log.append(wtx, &replacement[..3]).unwrap());
        commit(&db, |wtx| log.append(wtx, &replacement[3..]).unwrap());
        expected.truncate(28);
        expected.extend(replacement);
        let check = |log: &RaftLog, expected: &[Entry], first: u64| {
            let last = first + expected.len() as u64 - 1;
            for low in first..=last {
                for high in low + 1..=last + 1 {
                    let got = log
                        .entries(low, high, None, GetEntriesContext::empty(false))
                        .unwrap();
                    let want = &expected[(low - first) as usize..(high - first) as usize];
                    assert_eq!(got, want, "entries {low}..{high}");
                    assert_eq!(log.term(high - 1).unwrap(), want.last().unwrap().term);
                }
                // A size limit of one byte still returns one entry; a limit of
                // two entries' size returns two, wherever they are.
                let one = log
                    .entries(low, last + 1, Some(1), GetEntriesContext::empty(false))
                    .unwrap();
                assert_eq!(one, expected[(low - first) as usize..][..1]);
                let two_size: u64 = expected[(low - first) as usize..]
                    .iter()
                    .take(2)
                    .map(|entry| u64::from(entry.compute_size()))
                    .sum();
                let two = log
                    .entries(
                        low,
                        last + 1,
                        Some(two_size),
                        GetEntriesContext::empty(false),
                    )
                    .unwrap();
                let n = 2.min(last + 1 - low) as usize;
                assert_eq!(two, expected[(low - first) as usize..][..n]);
            }
        };
        check(&log, &expected, 2);
        commit(&db, |wtx| log.compact(wtx, 20).unwrap());
        check(&log, &expected[19..], 21);
        let mut reloaded = RaftLog::load(&db, state_machine).unwrap().unwrap();
        reloaded.recent_budget = log.recent_budget;
        check(&reloaded, &expected[19..], 21);
    }

    #[test]
    fn a_conflicting_append_replaces_the_suffix_on_disk_too() {
        let (_dir, db, state_machine, mut log) = bootstrapped(vec![1]);
        commit(&db, |wtx| {
            log.append(wtx, &[entry(2, 1), entry(3, 1), entry(4, 1)])
                .unwrap()
        });
        commit(&db, |wtx| log.append(wtx, &[entry(3, 2)]).unwrap());
        assert_eq!(log.last_index().unwrap(), 3);
        let reloaded = RaftLog::load(&db, state_machine).unwrap().unwrap();
        assert_eq!(reloaded.last_index().unwrap(), 3);
        assert_eq!(reloaded.term(3).unwrap(), 2);
        assert!(reloaded.term(4).is_err());
    }

    #[test]
    fn compaction_keeps_the_term_of_the_last_removed_entry() {
        let (_dir, db, state_machine, mut log) = bootstrapped(vec![1]);
        let entries: Vec<Entry> = (2..=10).map(|index| entry(index, 1 + index / 5)).collect();
        commit(&db, |wtx| log.append(wtx, &entries).unwrap());
        commit(&db, |wtx| log.compact(wtx, 6).unwrap());
        assert_eq!(log.first_index().unwrap(), 7);
        assert_eq!(log.term(6).unwrap(), 2);
        assert!(matches!(
            log.term(5),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            log.entries(5, 8, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let reloaded = RaftLog::load(&db, state_machine).unwrap().unwrap();
        assert_eq!(reloaded.first_index().unwrap(), 7);
        assert_eq!(reloaded.last_index().unwrap(), 10);
        assert_eq!(reloaded.term(6).unwrap(), 2);
    }

    /// Regression: raft reports a single member's commits through `set_commit`,
    /// without asking to persist them; the apply that follows must still write
    /// the commit index, or the member panics in raft-rs at its next start
    /// (applied above committed).
    #[test]
    fn commit_reported_in_memory_is_still_persisted_when_applied() {
        let (_dir, db, state_machine, mut log) = bootstrapped(vec![1]);
        commit(&db, |wtx| {
            log.append(wtx, &[entry(2, 1), entry(3, 1), entry(4, 1)])
                .unwrap()
        });
        log.set_commit(4);
        commit(&db, |wtx| log.commit_at_least(wtx, 4).unwrap());
        let reloaded = RaftLog::load(&db, state_machine).unwrap().unwrap();
        assert_eq!(reloaded.initial_state().unwrap().hard_state.commit, 4);
    }

    #[test]
    fn commit_index_covers_what_was_applied() {
        let (_dir, db, state_machine, mut log) = bootstrapped(vec![1]);
        commit(&db, |wtx| {
            log.append(wtx, &[entry(2, 1), entry(3, 1)]).unwrap()
        });
        commit(&db, |wtx| log.commit_at_least(wtx, 3).unwrap());
        let reloaded = RaftLog::load(&db, state_machine).unwrap().unwrap();
        assert_eq!(reloaded.initial_state().unwrap().hard_state.commit, 3);
    }
}
