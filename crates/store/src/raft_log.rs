//! The raft log as raft-rs sees it (`raft::Storage`): entries and hard states
//! appended to the log file (`wal`), one write and at most one sync per ready;
//! the compaction point and conf state in redb with the state machine; the
//! term and file offset of every entry since the compaction point, and the
//! newest entries (up to `RECENT_BYTES`), in memory; older entries read back
//! from the file when raft asks for them (a lagging follower); snapshots built
//! on demand from the state machine.
//!
//! What is where, and why it survives a crash:
//! - redb's `raft_meta` table holds the log's base: the hard state, conf state
//!   and compaction point as of the last bootstrap, compaction or snapshot,
//!   each written by a durable commit before the file drops what it covers.
//! - The file holds every entry after the base and every later hard state. At
//!   load the newest hard state wins, and the commit index is raised to cover
//!   what redb applied (applied entries were committed; the record saying so
//!   may not have been synced).
//! - The state machine is committed to redb without a sync; after a crash it
//!   is behind, and raft hands the missing committed entries to it again.

use std::collections::VecDeque;
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use redb::{TableDefinition, WriteTransaction};

use crate::state_machine::StateMachine;
use crate::wal::{self, Record, WalFile};

/// Where shoal kept the raft log's entries before it had a file of its own.
const OLD_ENTRIES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raft_entries");
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

/// What a [`RaftLog::flush`] did, for the metrics.
#[derive(Debug, Default)]
pub struct Flushed {
    pub written_bytes: u64,
    /// How long the fsync took, if one was asked for.
    pub sync_duration: Option<std::time::Duration>,
}

pub struct RaftLog {
    hard_state: HardState,
    conf_state: ConfState,
    truncated_index: u64,
    truncated_term: u64,
    /// terms[i] is the term of the entry at index truncated_index + 1 + i.
    terms: Vec<u64>,
    /// offsets[i] is where that entry's record starts in the file.
    offsets: Vec<u64>,
    /// The newest entries, a suffix of the log: the last one is at `last()`.
    recent: VecDeque<Entry>,
    /// What `recent` holds, as counted by `entry_bytes`.
    recent_bytes: usize,
    /// Older entries beyond this many bytes are left on disk only.
    recent_budget: usize,
    wal: Box<dyn WalFile>,
    /// The file's length once `pending` is written.
    wal_len: u64,
    /// Records not yet written to the file (see `flush`).
    pending: Vec<u8>,
    /// The base moved (compaction or snapshot): the file must be rewritten to
    /// start from it once the redb commit recording it is durable.
    rewrite_pending: bool,
    state_machine: Arc<StateMachine>,
}

/// An entry's share of the memory budget: its payload and the struct around it.
fn entry_bytes(entry: &Entry) -> usize {
    entry.data.len() + entry.context.len() + std::mem::size_of::<Entry>()
}

fn storage_error(error: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(error.to_string().into()))
}

/// The base of the log as redb holds it.
struct Base {
    hard_state: HardState,
    conf_state: ConfState,
    truncated_index: u64,
    truncated_term: u64,
}

fn read_base(db: &mvcc::Db) -> Result<Option<Base>, String> {
    let rtx = db.begin_read().map_err(|error| error.to_string())?;
    let meta = match rtx.open_table(META) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(error) => return Err(error.to_string()),
    };
    let Some(hard_state) = meta.get(HARD_STATE).map_err(|error| error.to_string())? else {
        return Ok(None);
    };
    match rtx.open_table(OLD_ENTRIES) {
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Ok(_) => {
            return Err("this data directory was written by an older shoal, which kept the raft log inside the database; save a snapshot while that version serves it (etcdctl snapshot save) and restore it with shoal snapshot restore".into());
        }
        Err(error) => return Err(error.to_string()),
    }
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
    Ok(Some(Base {
        hard_state,
        conf_state,
        truncated_index,
        truncated_term,
    }))
}

impl RaftLog {
    fn with_base(base: Base, wal: Box<dyn WalFile>, state_machine: Arc<StateMachine>) -> RaftLog {
        RaftLog {
            hard_state: base.hard_state,
            conf_state: base.conf_state,
            truncated_index: base.truncated_index,
            truncated_term: base.truncated_term,
            terms: Vec::new(),
            offsets: Vec::new(),
            recent: VecDeque::new(),
            recent_bytes: 0,
            recent_budget: RECENT_BYTES,
            wal,
            wal_len: 0,
            pending: Vec::new(),
            rewrite_pending: false,
            state_machine,
        }
    }

    /// Loads the log from redb's base and the file, or reports `None` if this
    /// database holds no raft state yet.
    pub fn load(
        db: &mvcc::Db,
        state_machine: Arc<StateMachine>,
        wal: Box<dyn WalFile>,
    ) -> Result<Option<RaftLog>, String> {
        let Some(base) = read_base(db)? else {
            return Ok(None);
        };
        let bytes = wal::read_all(wal.as_ref())?;
        let scan = wal::scan(&bytes)?;

        // The file's own log, conflicting suffixes replaced: (offset, entry).
        let mut file_log: Vec<(u64, Entry)> = Vec::new();
        let mut file_hard_state = None;
        let valid_len = scan.valid_len;
        let torn = scan.torn;
        for (offset, record) in scan.records {
            match record {
                Record::Entry(entry) => {
                    if let Some(first) = file_log.first().map(|(_, entry)| entry.index) {
                        if entry.index > first + file_log.len() as u64 {
                            return Err(format!(
                                "raft log file has a gap: entry {} follows entry {}",
                                entry.index,
                                first + file_log.len() as u64 - 1
                            ));
                        }
                        file_log.truncate(entry.index.saturating_sub(first) as usize);
                    }
                    file_log.push((offset, entry));
                }
                Record::HardState(hard_state) => file_hard_state = Some(hard_state),
            }
        }

        // Keep what follows the base. If the file does not continue from the
        // base (a crash after a snapshot's redb commit, before the file was
        // rewritten), nothing in it after the base can be trusted to extend it.
        let base_index = base.truncated_index;
        let first = file_log.first().map(|(_, entry)| entry.index);
        if first.is_some_and(|first| first > base_index + 1) {
            return Err(format!(
                "raft log file starts at entry {} but the log's base is entry {base_index}: entries are missing",
                first.unwrap_or_default()
            ));
        }
        let continues = first.is_none_or(|first| {
            first == base_index + 1
                || file_log
                    .get((base_index - first) as usize)
                    .is_some_and(|(_, entry)| entry.term == base.truncated_term)
        });
        let covered = file_log
            .iter()
            .take_while(|(_, entry)| entry.index <= base_index)
            .count();
        let dropped_stale = !continues && covered < file_log.len();
        file_log.drain(..if continues { covered } else { file_log.len() });

        let base_hard_state = base.hard_state.clone();
        let mut log = RaftLog::with_base(base, wal, state_machine);
        for (offset, entry) in &file_log {
            debug_assert_eq!(entry.index, log.last() + 1);
            log.terms.push(entry.term);
            log.offsets.push(*offset);
        }
        // Keep the newest entries in memory, up to the budget.
        let mut budget = log.recent_budget;
        for (_, entry) in file_log.into_iter().rev() {
            let size = entry_bytes(&entry);
            if !log.recent.is_empty() && size > budget {
                break;
            }
            budget = budget.saturating_sub(size);
            log.recent_bytes += size;
            log.recent.push_front(entry);
        }

        // The newest hard state; never older than the base's.
        let mut hard_state = match file_hard_state {
            Some(file) if file.term >= base_hard_state.term => file,
            _ => base_hard_state.clone(),
        };
        hard_state.commit = hard_state.commit.max(base_hard_state.commit);
        let applied = log.state_machine.mvcc.consistent_index();
        hard_state.commit = hard_state.commit.max(applied).max(log.truncated_index);
        if hard_state.commit > log.last() {
            return Err(format!(
                "the state machine applied entry {} but the raft log ends at entry {}: the log file lost synced entries",
                hard_state.commit,
                log.last()
            ));
        }
        log.hard_state = hard_state;

        log.wal_len = valid_len;
        if dropped_stale {
            tracing::warn!(
                base = base_index,
                "raft log file did not continue from the installed snapshot; its stale entries were dropped"
            );
            log.rewrite()?;
        } else if torn {
            tracing::warn!(
                bytes = bytes.len() as u64 - valid_len,
                "dropped a torn write at the end of the raft log file"
            );
            log.wal
                .truncate(valid_len)
                .map_err(|error| format!("truncating the raft log file: {error}"))?;
        } else {
            log.wal.continue_at(valid_len);
        }
        Ok(Some(log))
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
        wal: Box<dyn WalFile>,
    ) -> Result<RaftLog, String> {
        let mut base = Base {
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            truncated_index: 1,
            truncated_term: 1,
        };
        base.hard_state.term = 1;
        base.hard_state.commit = 1;
        base.conf_state.voters = voters;
        Self::fresh(wtx, base, state_machine, wal)
    }

    /// An empty log for a member joining a running cluster: it learns everything
    /// from the leader, starting with a snapshot.
    pub fn empty(
        wtx: &WriteTransaction,
        state_machine: Arc<StateMachine>,
        wal: Box<dyn WalFile>,
    ) -> Result<RaftLog, String> {
        let base = Base {
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            truncated_index: 0,
            truncated_term: 0,
        };
        Self::fresh(wtx, base, state_machine, wal)
    }

    /// A log that is only its base; whatever the file held (a start that failed
    /// before its first commit) is discarded.
    fn fresh(
        wtx: &WriteTransaction,
        base: Base,
        state_machine: Arc<StateMachine>,
        mut wal: Box<dyn WalFile>,
    ) -> Result<RaftLog, String> {
        wal.replace(&[])
            .map_err(|error| format!("creating the raft log file: {error}"))?;
        let log = RaftLog::with_base(base, wal, state_machine);
        log.persist_base(wtx).map_err(|error| error.to_string())?;
        Ok(log)
    }

    pub fn truncated_index(&self) -> u64 {
        self.truncated_index
    }

    fn last(&self) -> u64 {
        self.truncated_index + self.terms.len() as u64
    }

    /// Appends entries, replacing any conflicting suffix. They reach the file
    /// with the next `flush`.
    pub fn append(&mut self, new_entries: &[Entry]) {
        let Some(first_new) = new_entries.first() else {
            return;
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
        // Entries from first_new_index on are replaced; the file keeps the stale
        // records, and a load replays the replacement over them as here.
        if first_new_index <= self.last() {
            let keep = (first_new_index - self.truncated_index - 1) as usize;
            self.terms.truncate(keep);
            self.offsets.truncate(keep);
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
            self.offsets.push(self.wal_len + self.pending.len() as u64);
            wal::encode_entry(entry, &mut self.pending);
            self.terms.push(entry.term);
            self.recent_bytes += entry_bytes(entry);
            self.recent.push_back(entry.clone());
        }
        debug_assert_eq!(
            self.recent.back().map(|entry| entry.index),
            Some(self.last())
        );
    }

    pub fn set_hard_state(&mut self, hard_state: HardState) {
        wal::encode_hard_state(&hard_state, &mut self.pending);
        self.hard_state = hard_state;
    }

    /// Records the commit index raft reported in a light ready (it is
    /// recoverable, so it is written with the next hard state, not on its own).
    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
    }

    /// Writes what `append` and `set_hard_state` gathered to the file, syncing
    /// it if `sync`; then drops the oldest entries beyond the memory budget
    /// from memory (they are in the file now).
    pub fn flush(&mut self, sync: bool) -> Result<Flushed, String> {
        let mut flushed = Flushed::default();
        if !self.pending.is_empty() {
            flushed.written_bytes = self.pending.len() as u64;
            self.wal
                .append(&self.pending)
                .map_err(|error| format!("writing the raft log file: {error}"))?;
            self.wal_len += self.pending.len() as u64;
            self.pending.clear();
        }
        if sync {
            let started = std::time::Instant::now();
            self.wal
                .sync()
                .map_err(|error| format!("syncing the raft log file: {error}"))?;
            flushed.sync_duration = Some(started.elapsed());
        }
        while self.recent_bytes > self.recent_budget && self.recent.len() > 1 {
            let entry = self.recent.pop_front().expect("checked above");
            self.recent_bytes -= entry_bytes(&entry);
        }
        Ok(flushed)
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

    /// Installs a snapshot's position: the whole log is replaced by it. The
    /// caller commits `wtx` durably, then calls `finish_rewrite`.
    pub fn apply_snapshot(
        &mut self,
        wtx: &WriteTransaction,
        metadata: &SnapshotMetadata,
    ) -> Result<(), String> {
        self.terms.clear();
        self.offsets.clear();
        self.recent.clear();
        self.recent_bytes = 0;
        self.truncated_index = metadata.index;
        self.truncated_term = metadata.term;
        self.hard_state.term = self.hard_state.term.max(metadata.term);
        self.hard_state.commit = metadata.index;
        self.conf_state = metadata.get_conf_state().clone();
        self.rewrite_pending = true;
        self.persist_base(wtx).map_err(|error| error.to_string())
    }

    /// Removes every entry up to and including `index` (which must be applied).
    /// The caller commits `wtx` durably, then calls `finish_rewrite`.
    pub fn compact(&mut self, wtx: &WriteTransaction, index: u64) -> Result<(), String> {
        if index <= self.truncated_index {
            return Ok(());
        }
        assert!(index <= self.last(), "compacting past the end of the log");
        let term = self
            .entry_term(index)
            .expect("entry to compact is in the log");
        let n_removed = (index - self.truncated_index) as usize;
        self.terms.drain(..n_removed);
        self.offsets.drain(..n_removed);
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
        self.rewrite_pending = true;
        self.persist_base(wtx).map_err(|error| error.to_string())
    }

    /// After the durable commit of a compaction or snapshot: rewrites the file
    /// to hold only the log after the new base.
    pub fn finish_rewrite(&mut self) -> Result<(), String> {
        if std::mem::take(&mut self.rewrite_pending) {
            self.rewrite()?;
        }
        Ok(())
    }

    fn rewrite(&mut self) -> Result<(), String> {
        self.flush(false)?;
        let mut contents = Vec::new();
        wal::encode_hard_state(&self.hard_state, &mut contents);
        let mut offsets = Vec::with_capacity(self.offsets.len());
        let first_recent = self.first_recent();
        for index in self.truncated_index + 1..=self.last() {
            offsets.push(contents.len() as u64);
            if index >= first_recent {
                wal::encode_entry(&self.recent[(index - first_recent) as usize], &mut contents);
            } else {
                let entry = wal::read_entry(self.wal.as_ref(), self.offset_of(index))?;
                wal::encode_entry(&entry, &mut contents);
            }
        }
        self.wal
            .replace(&contents)
            .map_err(|error| format!("rewriting the raft log file: {error}"))?;
        self.offsets = offsets;
        self.wal_len = contents.len() as u64;
        Ok(())
    }

    fn offset_of(&self, index: u64) -> u64 {
        self.offsets[(index - self.truncated_index - 1) as usize]
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

    /// Writes the base: hard state, conf state and compaction point.
    fn persist_base(&self, wtx: &WriteTransaction) -> Result<(), redb::Error> {
        let hard_state = self
            .hard_state
            .write_to_bytes()
            .expect("encoding a hard state");
        put_meta(wtx, HARD_STATE, &hard_state)?;
        self.persist_conf_state(wtx)?;
        put_meta(
            wtx,
            TRUNCATED,
            &encode_pair(self.truncated_index, self.truncated_term),
        )
    }

    fn persist_conf_state(&self, wtx: &WriteTransaction) -> Result<(), redb::Error> {
        let bytes = self
            .conf_state
            .write_to_bytes()
            .expect("encoding a conf state");
        put_meta(wtx, CONF_STATE, &bytes)
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
            // Older than what is kept in memory: read back from the file.
            for index in low..high.min(first_recent) {
                let entry = wal::read_entry(self.wal.as_ref(), self.offset_of(index))
                    .map_err(storage_error)?;
                if entry.index != index {
                    return Err(storage_error(format!(
                        "raft log file holds entry {} where entry {index} should be",
                        entry.index
                    )));
                }
                if !take(entry, &mut result) {
                    return Ok(result);
                }
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
    Ok(read_base(db)?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::FileWal;
    use crate::wal::test_entry as entry;
    use raft::Storage as _;

    struct Fixture {
        dir: tempfile::TempDir,
        db: Arc<mvcc::Db>,
        state_machine: Arc<StateMachine>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let db = Arc::new(mvcc::Db::open(&dir.path().join("db"), 1 << 20).unwrap());
            let state_machine =
                Arc::new(StateMachine::open(db.clone(), 2, crate::clock::Clock::system()).unwrap());
            Fixture {
                dir,
                db,
                state_machine,
            }
        }

        fn wal(&self) -> Box<dyn WalFile> {
            Box::new(FileWal::open(&self.dir.path().join("raft.wal")).unwrap())
        }

        /// A bootstrapped log with these voters.
        fn bootstrap(&self, voters: Vec<u64>) -> RaftLog {
            let wtx = self.db.begin_write().unwrap();
            let log =
                RaftLog::bootstrap(&wtx, voters, self.state_machine.clone(), self.wal()).unwrap();
            wtx.commit().unwrap();
            log
        }

        fn reload(&self) -> RaftLog {
            RaftLog::load(&self.db, self.state_machine.clone(), self.wal())
                .unwrap()
                .expect("state exists")
        }

        fn commit(&self, change: impl FnOnce(&WriteTransaction)) {
            let wtx = self.db.begin_write().unwrap();
            change(&wtx);
            wtx.commit().unwrap();
        }

        fn set_applied(&self, index: u64) {
            self.commit(|wtx| {
                self.state_machine
                    .mvcc
                    .writer(wtx)
                    .set_consistent_index(index)
            });
            self.state_machine.mvcc.publish();
        }
    }

    fn append(log: &mut RaftLog, entries: &[Entry]) {
        log.append(entries);
        log.flush(true).unwrap();
    }

    #[test]
    fn bootstrap_then_reload_gives_the_same_log() {
        let fixture = Fixture::new();
        let mut log = fixture.bootstrap(vec![1, 2, 3]);
        assert_eq!(log.first_index().unwrap(), 2);
        assert_eq!(log.term(1).unwrap(), 1);
        append(&mut log, &[entry(2, 1), entry(3, 1), entry(4, 2)]);
        let hard_state = HardState {
            term: 2,
            vote: 3,
            commit: 3,
            ..Default::default()
        };
        log.set_hard_state(hard_state.clone());
        log.flush(true).unwrap();

        let reloaded = fixture.reload();
        assert_eq!(reloaded.last_index().unwrap(), 4);
        assert_eq!(reloaded.term(4).unwrap(), 2);
        let state = reloaded.initial_state().unwrap();
        assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(state.hard_state, hard_state);
        let entries = reloaded
            .entries(2, 5, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(entries, vec![entry(2, 1), entry(3, 1), entry(4, 2)]);
    }

    /// Entries beyond the memory budget are read back from the file: every
    /// range raft may ask for gives what an unbounded log would, across the
    /// edge between disk and memory, after a conflicting append and a
    /// compaction, with and without a size limit, and after a reload.
    #[test]
    fn entries_beyond_the_memory_budget_are_read_from_disk() {
        let fixture = Fixture::new();
        let mut log = fixture.bootstrap(vec![1]);
        // Room for about three of these entries.
        log.recent_budget = 3 * (std::mem::size_of::<Entry>() + 8);
        let mut expected: Vec<Entry> = (2..=40).map(|index| entry(index, 1)).collect();
        for chunk in expected.chunks(7) {
            append(&mut log, chunk);
        }
        assert!(log.recent.len() < 10, "old entries left memory");
        // A conflicting suffix from index 30 on, in two appends.
        let replacement: Vec<Entry> = (30..=45).map(|index| entry(index, 2)).collect();
        append(&mut log, &replacement[..3]);
        append(&mut log, &replacement[3..]);
        expected.truncate(28);
        expected.extend(replacement);
        let check = |log: &RaftLog, expected: &[Entry], first: u64| {
            let last = first + expected.len() as u64 - 1;
            assert_eq!(log.first_index().unwrap(), first);
            assert_eq!(log.last_index().unwrap(), last);
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
        let mut reloaded = fixture.reload();
        reloaded.recent_budget = log.recent_budget;
        check(&reloaded, &expected, 2);
        fixture.set_applied(20);
        fixture.commit(|wtx| log.compact(wtx, 20).unwrap());
        log.finish_rewrite().unwrap();
        check(&log, &expected[19..], 21);
        let mut reloaded = fixture.reload();
        reloaded.recent_budget = log.recent_budget;
        check(&reloaded, &expected[19..], 21);
        // The rewritten file holds only the entries after the compaction point.
        let scan = wal::scan(&wal::read_all(fixture.wal().as_ref()).unwrap()).unwrap();
        let indexes: Vec<u64> = scan
            .records
            .iter()
            .filter_map(|(_, record)| match record {
                Record::Entry(entry) => Some(entry.index),
                Record::HardState(_) => None,
            })
            .collect();
        assert_eq!(indexes, (21..=45).collect::<Vec<u64>>());
    }

    #[test]
    fn a_conflicting_append_replaces_the_suffix_on_reload_too() {
        let fixture = Fixture::new();
        let mut log = fixture.bootstrap(vec![1]);
        append(&mut log, &[entry(2, 1), entry(3, 1), entry(4, 1)]);
        append(&mut log, &[entry(3, 2)]);
        assert_eq!(log.last_index().unwrap(), 3);
        let reloaded = fixture.reload();
        assert_eq!(reloaded.last_index().unwrap(), 3);
        assert_eq!(reloaded.term(3).unwrap(), 2);
        assert!(reloaded.term(4).is_err());
    }

    #[test]
    fn compaction_keeps_the_term_of_the_last_removed_entry() {
        let fixture = Fixture::new();
        let mut log = fixture.bootstrap(vec![1]);
        let entries: Vec<Entry> = (2..=10).map(|index| entry(index, 1 + index / 5)).collect();
        append(&mut log, &entries);
        fixture.set_applied(6);
        fixture.commit(|wtx| log.compact(wtx, 6).unwrap());
        log.finish_rewrite().unwrap();
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
        let reloaded = fixture.reload();
        assert_eq!(reloaded.first_index().unwrap(), 7);
        assert_eq!(reloaded.last_index().unwrap(), 10);
        assert_eq!(reloaded.term(6).unwrap(), 2);
    }

    /// A crash between a compaction's redb commit and the file's rewrite: the
    /// file still starts before the new base, and the load skips what the base
    /// covers.
    #[test]
    fn a_crash_before_the_rewrite_of_a_compaction_loses_nothing() {
        let fixture = Fixture::new();
        let mut log = fixture.bootstrap(vec![1]);
        let entries: Vec<Entry> = (2..=10).map(|index| entry(index, 1)).collect();
        append(&mut log, &entries);
        fixture.set_applied(6);
        fixture.commit(|wtx| log.compact(wtx, 6).unwrap());
        drop(log); // no finish_rewrite
        let reloaded = fixture.reload();
        assert_eq!(reloaded.first_index().unwrap(), 7);
        assert_eq!(
            reloaded
                .entries(7, 11, None, GetEntriesContext::empty(false))
                .unwrap(),
            entries[5..]
        );
    }

    /// A crash between installing a snapshot in redb and rewriting the file:
    /// entries left in the file after the snapshot's index came from a log that
    /// does not lead to the snapshot (another term at its index), so they are
    /// dropped, not grafted onto it.
    #[test]
    fn a_crash_before_the_rewrite_of_a_snapshot_drops_the_stale_log() {
        let fixture = Fixture::new();
        let mut log = fixture.bootstrap(vec![1]);
        append(
            &mut log,
            &(2..=10).map(|index| entry(index, 1)).collect::<Vec<_>>(),
        );
        let mut metadata = SnapshotMetadata {
            index: 8,
            term: 3,
            ..Default::default()
        };
        metadata.mut_conf_state().voters = vec![1];
        fixture.set_applied(8);
        fixture.commit(|wtx| log.apply_snapshot(wtx, &metadata).unwrap());
        drop(log); // no finish_rewrite
        let mut reloaded = fixture.reload();
        assert_eq!(reloaded.first_index().unwrap(), 9);
        assert_eq!(reloaded.last_index().unwrap(), 8);
        assert_eq!(reloaded.term(8).unwrap(), 3);
        append(&mut reloaded, &[entry(9, 3)]);
        let reloaded = fixture.reload();
        assert_eq!(reloaded.last_index().unwrap(), 9);
        assert_eq!(reloaded.term(9).unwrap(), 3);
    }

    /// Raft does not ask to persist every commit index; a restart takes the
    /// commit index up to what the state machine applied, or raft-rs would
    /// refuse to start (applied above committed).
    #[test]
    fn the_commit_index_at_load_covers_what_was_applied() {
        let fixture = Fixture::new();
        let mut log = fixture.bootstrap(vec![1]);
        append(&mut log, &[entry(2, 1), entry(3, 1), entry(4, 1)]);
        log.set_commit(4);
        fixture.set_applied(4);
        let reloaded = fixture.reload();
        assert_eq!(reloaded.initial_state().unwrap().hard_state.commit, 4);
    }

    /// The state machine cannot have applied entries the log lost: that means
    /// a sync lied, and starting would diverge from the cluster.
    #[test]
    fn a_log_shorter_than_what_was_applied_refuses_to_load() {
        let fixture = Fixture::new();
        let mut log = fixture.bootstrap(vec![1]);
        append(&mut log, &[entry(2, 1), entry(3, 1)]);
        fixture.set_applied(5);
        let error = RaftLog::load(&fixture.db, fixture.state_machine.clone(), fixture.wal())
            .err()
            .expect("refused");
        assert!(error.contains("applied entry 5"), "{error}");
    }

    #[test]
    fn a_data_directory_with_the_old_log_layout_is_refused_by_name() {
        let fixture = Fixture::new();
        let _log = fixture.bootstrap(vec![1]);
        fixture.commit(|wtx| {
            wtx.open_table(OLD_ENTRIES)
                .unwrap()
                .insert(2, b"old".as_slice())
                .unwrap();
        });
        let error = RaftLog::load(&fixture.db, fixture.state_machine.clone(), fixture.wal())
            .err()
            .expect("refused");
        assert!(error.contains("older shoal"), "{error}");
    }

    /// A torn last write is cut off at load; the log continues after it.
    #[test]
    fn a_torn_tail_is_dropped_and_the_log_goes_on() {
        let fixture = Fixture::new();
        let mut log = fixture.bootstrap(vec![1]);
        append(&mut log, &[entry(2, 1), entry(3, 1)]);
        drop(log);
        let mut file = fixture.wal();
        let mut torn = Vec::new();
        wal::encode_entry(&entry(4, 1), &mut torn);
        file.append(&torn[..torn.len() / 2]).unwrap();
        drop(file);
        let mut reloaded = fixture.reload();
        assert_eq!(reloaded.last_index().unwrap(), 3);
        append(&mut reloaded, &[entry(4, 2)]);
        let reloaded = fixture.reload();
        assert_eq!(reloaded.last_index().unwrap(), 4);
        assert_eq!(reloaded.term(4).unwrap(), 2);
    }
}
