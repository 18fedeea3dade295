//! The raft log as raft-rs sees it (`raft::Storage`): entries since the last
//! compaction held in memory, every change mirrored to redb in the caller's write
//! transaction, and snapshots built on demand from the state machine.
//!
//! Invariant: what is in memory equals what the last committed transaction wrote;
//! the raft loop commits every transaction it hands to these methods before it
//! tells raft the work is done.

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

pub struct RaftLog {
    hard_state: HardState,
    /// The commit index as last written to disk; `hard_state.commit` may be ahead
    /// of it (raft reports commits it has not asked us to persist).
    persisted_commit: u64,
    conf_state: ConfState,
    truncated_index: u64,
    truncated_term: u64,
    /// entries[i] has index truncated_index + 1 + i.
    entries: Vec<Entry>,
    state_machine: Arc<StateMachine>,
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
        let mut entries = Vec::new();
        let table = rtx.open_table(ENTRIES).map_err(|error| error.to_string())?;
        for item in table
            .range(truncated_index + 1..)
            .map_err(|error| error.to_string())?
        {
            let (index, bytes) = item.map_err(|error| error.to_string())?;
            let entry =
                Entry::parse_from_bytes(bytes.value()).map_err(|error| error.to_string())?;
            let expected = truncated_index + 1 + entries.len() as u64;
            if index.value() != expected || entry.index != expected {
                return Err(format!(
                    "raft log has a gap: expected entry {expected}, found {}",
                    index.value()
                ));
            }
            entries.push(entry);
        }
        Ok(Some(RaftLog {
            persisted_commit: hard_state.commit,
            hard_state,
            conf_state,
            truncated_index,
            truncated_term,
            entries,
            state_machine,
        }))
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
            entries: Vec::new(),
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
            entries: Vec::new(),
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
        self.truncated_index + self.entries.len() as u64
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
            self.entries
                .truncate((first_new_index - self.truncated_index - 1) as usize);
        }
        for entry in new_entries {
            let bytes = entry.write_to_bytes().map_err(|error| error.to_string())?;
            table
                .insert(entry.index, bytes.as_slice())
                .map_err(|error| error.to_string())?;
        }
        self.entries.extend_from_slice(new_entries);
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
        self.entries.clear();
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
        self.entries.drain(..n_removed);
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
        Some(self.entries[(index - self.truncated_index - 1) as usize].term)
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
        let start = (low - self.truncated_index - 1) as usize;
        let end = (high - self.truncated_index - 1) as usize;
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut size = 0u64;
        let mut result = Vec::with_capacity(end - start);
        for entry in &self.entries[start..end] {
            size += u64::from(entry.compute_size());
            // Always return at least one entry, as raft-rs requires.
            if !result.is_empty() && size > max_size {
                break;
            }
            result.push(entry.clone());
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
