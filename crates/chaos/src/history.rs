//! The recorded client history: one [`Record`] per operation a client invoked,
//! with monotonic invoke and complete times and its outcome, saved as JSON
//! lines. The checkers read nothing else (plus the final reads of [`End`]).

use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// How an operation ended, as far as the client can know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The server answered with success; the results are the server's.
    Ok,
    /// The operation certainly had no effect (a read that failed, a request
    /// that was refused before it was sent).
    Fail,
    /// The client gave up (timeout, broken connection, an error after the
    /// request was sent): the operation may or may not have taken effect, at any
    /// time after its invocation.
    Unknown,
}

/// One event delivered to a watcher (or read in the reference history).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `put` or `delete`.
    pub kind: EventKind,
    pub key: String,
    pub value: String,
    pub mod_revision: i64,
    pub create_revision: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Put,
    Delete,
}

/// What a client asked for, and what it got back when the outcome is `ok`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Operation {
    /// Put of a unique value on a register key; `revision` is the response's.
    Put {
        key: String,
        value: String,
        revision: Option<i64>,
    },
    /// Linearizable get of a register key.
    Get {
        key: String,
        value: Option<String>,
        mod_revision: Option<i64>,
    },
    /// A multi-key compare-and-swap txn: if every key holds its expected value
    /// (`None`: the key does not exist) put every new value, else read them all.
    Cas {
        keys: Vec<String>,
        expected: Vec<Option<String>>,
        new: Vec<String>,
        succeeded: Option<bool>,
        /// The values read when the compare failed.
        observed: Option<Vec<Option<String>>>,
        revision: Option<i64>,
    },
    /// v3lock Lock: `key` is the owner key the server returned, `revision` the
    /// response header's revision (when ownership was confirmed).
    LockAcquire {
        name: String,
        lease: i64,
        key: Option<String>,
        revision: Option<i64>,
    },
    /// A write to the lock-protected resource, guarded by the owner key still
    /// existing (the holder's fencing).
    FencedWrite {
        owner_key: String,
        resource_key: String,
        value: String,
        succeeded: Option<bool>,
        revision: Option<i64>,
    },
    LockRelease {
        key: String,
    },
    LeaseGrant {
        lease: i64,
        ttl_seconds: i64,
    },
    /// One keep-alive; `ttl_seconds` is the answer (0: the lease is gone).
    LeaseKeepAlive {
        lease: i64,
        ttl_seconds: Option<i64>,
    },
    LeaseRevoke {
        lease: i64,
    },
    /// A put of a key attached to a lease.
    LeasePut {
        key: String,
        value: String,
        lease: i64,
        revision: Option<i64>,
    },
    /// A watch stream (re)opened on `member` from `start_revision`.
    WatchStart {
        watcher: u32,
        member: usize,
        start_revision: i64,
    },
    /// One watch response's events, as delivered (invoke = complete = receipt).
    WatchEvents {
        watcher: u32,
        member: usize,
        events: Vec<Event>,
    },
}

/// One operation of one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub client: u32,
    /// Nanoseconds since the run started (monotonic clock).
    pub invoke_ns: u64,
    /// When the answer arrived, or when the client gave up for `unknown`.
    pub complete_ns: u64,
    pub outcome: Outcome,
    #[serde(flatten)]
    pub operation: Operation,
}

/// What the run read after healing every fault: the checkers' view of the end
/// state. Saved as the history's last line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// Every event under the workload's prefix from revision 1, read with one
    /// watch after the run (the reference history).
    pub reference: Vec<Event>,
    /// The final key-values under the prefix (linearizable range).
    pub final_state: Vec<Event>,
    /// The revision of the final marker write; the reference ends there.
    pub final_revision: i64,
    /// `HashKV` at `final_revision` per member that answered: (member, hash).
    pub member_hashes: Vec<(usize, u32)>,
}

/// The history as saved: records in completion order, then the end state.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub records: Vec<Record>,
    pub end: End,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Record(Record),
    End { end: End },
}

impl History {
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut writer = std::io::BufWriter::new(file);
        for record in &self.records {
            serde_json::to_writer(&mut writer, &Line::Record(record.clone()))?;
            writer.write_all(b"\n")?;
        }
        serde_json::to_writer(
            &mut writer,
            &Line::End {
                end: self.end.clone(),
            },
        )?;
        writer.write_all(b"\n")?;
        writer.flush()?;
        Ok(())
    }

    pub fn load(path: &Path) -> anyhow::Result<History> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut history = History::default();
        for (line_idx, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Line>(&line).with_context(|| {
                format!("{}:{}: not a history line", path.display(), line_idx + 1)
            })? {
                Line::Record(record) => history.records.push(record),
                Line::End { end } => history.end = end,
            }
        }
        Ok(history)
    }
}

/// Where clients append their records; shared by every client task.
#[derive(Clone)]
pub struct Recorder {
    started: Instant,
    records: Arc<Mutex<Vec<Record>>>,
}

impl Recorder {
    pub fn new(started: Instant) -> Recorder {
        Recorder {
            started,
            records: Arc::default(),
        }
    }

    /// Nanoseconds since the run started.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn record(&self, record: Record) {
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(record);
    }

    pub fn take(&self) -> Vec<Record> {
        std::mem::take(
            &mut *self
                .records
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}
