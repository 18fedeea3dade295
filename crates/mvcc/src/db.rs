//! The redb database a member keeps everything in, behind a lock that lets
//! defragmentation (redb's `compact`, which needs the database to itself) run
//! between transactions. Beginning a transaction takes the lock only for that
//! moment: transactions do not borrow the database.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use redb::{Database, ReadTransaction, ReadableDatabase, TransactionError, WriteTransaction};

pub struct Db {
    database: RwLock<Database>,
    path: PathBuf,
}

impl Db {
    /// Opens (or creates) the database file with a `cache_bytes` page cache.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Db, redb::DatabaseError> {
        let database = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)?;
        Ok(Db {
            database: RwLock::new(database),
            path: path.to_path_buf(),
        })
    }

    /// Opens (or creates) a database on `backend` instead of a file: the
    /// deterministic simulation's disk, which can lose what was not synced.
    pub fn with_backend(
        backend: impl redb::StorageBackend,
        cache_bytes: usize,
    ) -> Result<Db, redb::DatabaseError> {
        let database = Database::builder()
            .set_cache_size(cache_bytes)
            .create_with_backend(backend)?;
        Ok(Db {
            database: RwLock::new(database),
            path: PathBuf::new(),
        })
    }

    pub fn begin_read(&self) -> Result<ReadTransaction, TransactionError> {
        self.database.read().begin_read()
    }

    pub fn begin_write(&self) -> Result<WriteTransaction, TransactionError> {
        self.database.read().begin_write()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The size of the database file in bytes.
    pub fn file_size(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |metadata| metadata.len())
    }

    /// Rewrites the file without its free pages and gives the space back to the
    /// file system. New transactions wait while it runs; one that is already open
    /// makes it retry until `patience` runs out.
    pub fn defragment(&self, patience: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let mut database = self.database.write();
            match database.compact() {
                Ok(_) => return Ok(()),
                Err(redb::CompactionError::TransactionInProgress)
                    if started.elapsed() < patience =>
                {
                    drop(database);
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(error) => return Err(error.to_string()),
            }
        }
    }
}
