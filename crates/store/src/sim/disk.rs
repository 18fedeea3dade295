//! The simulation's disk: a redb storage backend and a raft log file held in
//! memory that know which bytes were synced. A crash keeps only what the last
//! sync covered (and, of the log file, a torn part of the unsynced tail), so a
//! member that acknowledged something it never fsynced loses it on restart, as
//! it would on a real machine losing power.

use std::fmt;
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;
use redb::StorageBackend;

/// Pages are tracked at this size to sync only what changed.
const PAGE: usize = 4096;

#[derive(Default)]
struct Platter {
    /// What reads see: every write so far.
    current: Vec<u8>,
    /// What survives a crash: the state at the last sync.
    durable: Vec<u8>,
    /// Pages of `current` written since the last sync.
    dirty: std::collections::BTreeSet<usize>,
    /// Bumped by a crash; a backend from an earlier life is ignored after it.
    life: u64,
    syncs: u64,
}

/// The raft log file: appended to, synced, replaced whole. Reads see it
/// padded with zeros to a multiple of [`SIM_LOG_ALLOCATION`] bytes, as a
/// member's preallocated file is.
#[derive(Default)]
struct LogPlatter {
    current: Vec<u8>,
    /// `current[..durable]` survives a crash.
    durable: usize,
    life: u64,
}

/// One member's disk, shared by the databases the member opens on it over
/// its lives (one per start).
#[derive(Clone, Default)]
pub struct SimDisk {
    platter: Arc<Mutex<Platter>>,
    log: Arc<Mutex<LogPlatter>>,
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    /// A backend for the member's next life.
    pub fn backend(&self) -> SimBackend {
        let life = self.platter.lock().life;
        SimBackend {
            platter: self.platter.clone(),
            life,
        }
    }

    /// The raft log file for the member's next life.
    pub fn log_file(&self) -> SimLogFile {
        let life = self.log.lock().life;
        SimLogFile {
            log: self.log.clone(),
            life,
        }
    }

    /// Power loss: everything written since the last sync is gone, but for
    /// the first half of the log file's unsynced tail, which the crash tears
    /// (it may cut a record); the files of the life that ends here write into
    /// the void.
    pub fn crash(&self) {
        let mut platter = self.platter.lock();
        platter.current = platter.durable.clone();
        platter.dirty.clear();
        platter.life += 1;
        let mut log = self.log.lock();
        let torn = log.durable + (log.current.len() - log.durable) / 2;
        log.current.truncate(torn);
        log.durable = torn;
        log.life += 1;
    }

    pub fn syncs(&self) -> u64 {
        self.platter.lock().syncs
    }
}

pub struct SimBackend {
    platter: Arc<Mutex<Platter>>,
    life: u64,
}

impl fmt::Debug for SimBackend {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SimBackend")
            .field("life", &self.life)
            .finish()
    }
}

impl SimBackend {
    /// The platter, if this backend's life has not ended in a crash.
    fn alive(&self) -> Option<parking_lot::MutexGuard<'_, Platter>> {
        let platter = self.platter.lock();
        (platter.life == self.life).then_some(platter)
    }
}

impl StorageBackend for SimBackend {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.platter.lock().current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let platter = self.platter.lock();
        let start = offset as usize;
        let end = start + out.len();
        if end > platter.current.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read {start}..{end} past the end ({})",
                    platter.current.len()
                ),
            ));
        }
        out.copy_from_slice(&platter.current[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        if let Some(mut platter) = self.alive() {
            let len = len as usize;
            let old = platter.current.len();
            platter.current.resize(len, 0);
            // The length changes with the pages it touches.
            for page in old.min(len) / PAGE..=old.max(len) / PAGE {
                platter.dirty.insert(page);
            }
        }
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        if let Some(mut platter) = self.alive() {
            let platter = &mut *platter;
            let len = platter.current.len();
            platter.durable.resize(len, 0);
            for page in std::mem::take(&mut platter.dirty) {
                let start = page * PAGE;
                if start >= len {
                    continue;
                }
                let end = (start + PAGE).min(len);
                platter.durable[start..end].copy_from_slice(&platter.current[start..end]);
            }
            platter.syncs += 1;
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        if let Some(mut platter) = self.alive() {
            let start = offset as usize;
            let end = start + data.len();
            if end > platter.current.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "write {start}..{end} past the end ({})",
                        platter.current.len()
                    ),
                ));
            }
            platter.current[start..end].copy_from_slice(data);
            if !data.is_empty() {
                for page in start / PAGE..=(end - 1) / PAGE {
                    platter.dirty.insert(page);
                }
            }
        }
        Ok(())
    }
}

/// The step the simulated log file is allocated in (small, so that a
/// simulated run crosses many steps).
const SIM_LOG_ALLOCATION: usize = 4096;

/// The raft log file on a [`SimDisk`].
pub struct SimLogFile {
    log: Arc<Mutex<LogPlatter>>,
    life: u64,
}

impl SimLogFile {
    fn alive(&self) -> Option<parking_lot::MutexGuard<'_, LogPlatter>> {
        let log = self.log.lock();
        (log.life == self.life).then_some(log)
    }
}

impl crate::wal::WalFile for SimLogFile {
    fn size(&self) -> io::Result<u64> {
        let written = self.log.lock().current.len();
        Ok(written.next_multiple_of(SIM_LOG_ALLOCATION) as u64)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let size = self.size()? as usize;
        let log = self.log.lock();
        let start = offset as usize;
        if start + buf.len() > size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read past the end of the log file ({size})"),
            ));
        }
        buf.fill(0);
        let written = log.current.len().clamp(start, start + buf.len());
        buf[..written - start].copy_from_slice(&log.current[start..written]);
        Ok(())
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        if let Some(mut log) = self.alive() {
            log.current.extend_from_slice(data);
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        if let Some(mut log) = self.alive() {
            log.durable = log.current.len();
        }
        Ok(())
    }

    fn continue_at(&mut self, len: u64) {
        // What follows `len` reads as zeros: the padding, or a torn write
        // that happened to be zeros.
        if let Some(mut log) = self.alive() {
            log.current.truncate(len as usize);
            log.durable = log.durable.min(log.current.len());
        }
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        if let Some(mut log) = self.alive() {
            log.current.truncate(len as usize);
            log.durable = log.current.len();
        }
        Ok(())
    }

    fn replace(&mut self, contents: &[u8]) -> io::Result<()> {
        if let Some(mut log) = self.alive() {
            log.current = contents.to_vec();
            log.durable = contents.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Durability, ReadableDatabase, TableDefinition};

    const TABLE: TableDefinition<'static, u64, u64> = TableDefinition::new("t");

    fn write(db: &redb::Database, key: u64, durable: bool) {
        let mut wtx = db.begin_write().unwrap();
        if !durable {
            wtx.set_durability(Durability::None).unwrap();
        }
        wtx.open_table(TABLE).unwrap().insert(key, key).unwrap();
        wtx.commit().unwrap();
    }

    fn keys(db: &redb::Database) -> Vec<u64> {
        let rtx = db.begin_read().unwrap();
        let table = rtx.open_table(TABLE).unwrap();
        redb::ReadableTable::iter(&table)
            .unwrap()
            .map(|item| item.unwrap().0.value())
            .collect()
    }

    #[test]
    fn a_crash_keeps_what_was_synced_and_loses_the_rest() {
        let disk = SimDisk::new();
        let db = redb::Database::builder()
            .create_with_backend(disk.backend())
            .unwrap();
        write(&db, 1, true);
        write(&db, 2, false);
        assert_eq!(keys(&db), vec![1, 2], "reads see unsynced writes");
        disk.crash();
        drop(db);
        let db = redb::Database::builder()
            .create_with_backend(disk.backend())
            .unwrap();
        assert_eq!(keys(&db), vec![1], "only the synced commit survives");
        write(&db, 3, true);
        disk.crash();
        drop(db);
        let db = redb::Database::builder()
            .create_with_backend(disk.backend())
            .unwrap();
        assert_eq!(keys(&db), vec![1, 3]);
    }
}
