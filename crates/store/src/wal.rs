//! The raft log's write-ahead file: entries and hard states appended as
//! checksummed records, one write and at most one `fdatasync` per raft ready.
//!
//! This is etcd's split: the log is a plain append-only file, so persisting a
//! ready costs one small sequential write and one sync, while the state machine
//! in redb is committed without a sync and made durable only now and then.
//! After a crash the member replays, from this file, every entry past the
//! applied index redb kept.
//!
//! Record layout, little-endian:
//!
//! ```text
//! u32 payload length | u32 CRC-32 of kind and payload | u8 kind | payload
//! ```
//!
//! Kinds: 1, a raft `Entry`; 2, a raft `HardState` (both in raft-rs' protobuf
//! encoding). A later entry with an index at or below an earlier one replaces
//! it and everything after it (raft overwrote a conflicting suffix). The file
//! is rewritten whole, atomically, when the log is compacted or replaced by a
//! snapshot, so it holds only the log since the last compaction point.
//!
//! Zeros are written ahead of the appends, [`FILL_BYTES`] at a time, by a
//! thread of their own: an append over them neither allocates blocks nor
//! changes the file's size, so its `fdatasync` writes the data and nothing
//! else (but while a fill runs: its zeros not yet synced and the size it
//! grows go with the next sync). etcd preallocates its WAL segments with
//! `fallocate` instead, and shoal did too; but ext4 leaves such blocks
//! "unwritten", and every sync after an append into them must also write
//! the change that marks them written, which cost about 90 of 250 µs per
//! sync with three members on one disk (BENCHMARKS.md). The valid records
//! end where a header of zeros begins: zeros written ahead, or space an
//! earlier shoal allocated, read alike.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState};

/// Bytes before a record's payload: length, checksum, kind.
pub const HEADER_BYTES: usize = 9;
const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
/// Larger than any record raft writes (etcd caps requests at 1.5 MiB by
/// default, and shoal at `--max-request-bytes`); a length above this is damage.
const MAX_RECORD_BYTES: usize = 512 * 1024 * 1024;
/// Zeros are written ahead of the appends this many bytes at a time, by a
/// thread of their own, once less than half of that is left.
pub const FILL_BYTES: u64 = 16 * 1024 * 1024;
/// A fill writes and syncs this much at a time; appends waiting on a fill
/// (after the file was created, cut or replaced) wait for one step.
const FILL_STEP_BYTES: u64 = 256 * 1024;

/// Where the log's bytes live: a file on disk for a member, memory that
/// forgets unsynced writes for the simulation.
pub trait WalFile: Send + Sync {
    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; fails if the file ends before.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `data` at the end of the file.
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far survive a crash.
    fn sync(&mut self) -> io::Result<()>;
    /// Appends go on at `len`, where the valid records end: what the file
    /// holds from there on is zeros (written or allocated ahead), nothing else.
    fn continue_at(&mut self, len: u64);
    /// Drops everything from `len` on, durably (a torn tail at startup);
    /// appends go on at `len`.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Replaces the whole file with `contents`, atomically and durably: after a
    /// crash the file holds either the old contents or the new.
    fn replace(&mut self, contents: &[u8]) -> io::Result<()>;
}

/// The log file of a member's data directory.
pub struct FileWal {
    path: PathBuf,
    file: File,
    /// Where the next append goes.
    len: u64,
    /// The file's size as far as this handle knows: at least `len`, and
    /// zeros from `len` on. A fill running on its own thread may have made
    /// the file longer.
    allocated: u64,
    /// A zero fill past `allocated`, on a thread of its own.
    fill: Option<Fill>,
    /// No new fill is started before appends reach this offset: the last
    /// one failed (a full disk, most likely), and appends still work
    /// without one.
    fill_after: u64,
}

/// A zero fill of `[from, to)` running on its own thread. Appends stay below
/// `done` until the thread has finished.
struct Fill {
    from: u64,
    /// Bytes from `from` on are zeros written and synced up to here.
    done: Arc<AtomicU64>,
    /// Asks the thread to stop after the step it is on.
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<io::Result<()>>,
}

impl FileWal {
    /// Opens the file at `path`, creating it empty if it does not exist.
    /// Appends go at the file's end until [`WalFile::continue_at`] says where
    /// its records end.
    pub fn open(path: &Path) -> io::Result<FileWal> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(FileWal {
            path: path.to_path_buf(),
            file,
            len: size,
            allocated: size,
            fill: None,
            fill_after: 0,
        })
    }

    fn sync_directory(&self) -> io::Result<()> {
        let directory = self.path.parent().unwrap_or_else(|| Path::new("."));
        File::open(directory)?.sync_all()
    }

    /// Makes sure no running fill covers bytes below `end`: a fill's bytes
    /// are the appends' once they are synced zeros, or once the fill ended.
    fn claim(&mut self, end: u64) {
        let Some(fill) = &self.fill else {
            return;
        };
        if end <= fill.from {
            return;
        }
        loop {
            let done = fill.done.load(Ordering::Acquire);
            self.allocated = self.allocated.max(done);
            if end <= done {
                return;
            }
            if fill.thread.is_finished() {
                self.finish_fill();
                return;
            }
            // Only when appends outrun the fill, or right after the file was
            // created or replaced: the first step takes a few milliseconds.
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    }

    /// Stops the running fill after its current step, if there is one, and
    /// takes note of how far it got: before the file is cut or replaced, and
    /// when the handle goes.
    fn stop_fill(&mut self) {
        if let Some(fill) = &self.fill {
            fill.stop.store(true, Ordering::Release);
        }
        self.finish_fill();
    }

    /// Waits for the running fill, if any, and takes note of how far it got.
    fn finish_fill(&mut self) {
        let Some(fill) = self.fill.take() else {
            return;
        };
        let outcome = fill
            .thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the zero-fill thread panicked")));
        self.allocated = self.allocated.max(fill.done.load(Ordering::Acquire));
        if let Err(error) = outcome {
            tracing::warn!(%error, "could not write zeros ahead of the raft log; appends go on without them");
            self.fill_after = self.len + FILL_BYTES;
        }
    }

    /// Starts a fill when fewer than half a step of zeros is left ahead of
    /// the appends, and collects one that has finished. The zeros are an
    /// optimisation: a fill that cannot start leaves appends to grow the
    /// file, as they would on a file system without room to spare.
    fn fill_ahead(&mut self) {
        if self
            .fill
            .as_ref()
            .is_some_and(|fill| fill.thread.is_finished())
        {
            self.finish_fill();
        }
        if self.fill.is_some()
            || self.len < self.fill_after
            || self.allocated >= self.len + FILL_BYTES / 2
        {
            return;
        }
        let from = self.allocated;
        let to = from + FILL_BYTES;
        // An open file description of its own, not a duplicate of the
        // appends' one: Linux reports a failed write-back once per
        // description, and the fill's syncs must not take the report that
        // an append's sync is owed.
        let started = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .and_then(|file| {
                let done = Arc::new(AtomicU64::new(from));
                let stop = Arc::new(AtomicBool::new(false));
                let (progress, stopped) = (done.clone(), stop.clone());
                let thread = std::thread::Builder::new()
                    .name("wal-fill".into())
                    .spawn(move || write_zeros(&file, from, to, &progress, &stopped))?;
                Ok(Fill {
                    from,
                    done,
                    stop,
                    thread,
                })
            });
        match started {
            Ok(fill) => self.fill = Some(fill),
            Err(error) => {
                tracing::warn!(%error, "could not start writing zeros ahead of the raft log; appends go on without them");
                self.fill_after = self.len + FILL_BYTES;
            }
        }
    }
}

impl Drop for FileWal {
    /// A fill must not outlive its handle: a handle opened on the same file
    /// next would append where the fill still writes zeros.
    fn drop(&mut self) {
        self.stop_fill();
    }
}

/// Writes zeros over `[from, to)` of `file`, a step at a time, syncing each
/// step before `done` says it is there; stops early once `stop` is set.
fn write_zeros(
    file: &File,
    from: u64,
    to: u64,
    done: &AtomicU64,
    stop: &AtomicBool,
) -> io::Result<()> {
    let zeros = vec![0u8; FILL_STEP_BYTES as usize];
    let mut at = from;
    while at < to && !stop.load(Ordering::Acquire) {
        let step = (to - at).min(FILL_STEP_BYTES);
        file.write_all_at(&zeros[..step as usize], at)?;
        file.sync_data()?;
        at += step;
        done.store(at, Ordering::Release);
    }
    Ok(())
}

impl WalFile for FileWal {
    fn size(&self) -> io::Result<u64> {
        Ok(self.allocated)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let end = self.len + data.len() as u64;
        self.claim(end);
        self.file.write_all_at(data, self.len)?;
        self.len = end;
        self.allocated = self.allocated.max(end);
        self.fill_ahead();
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn continue_at(&mut self, len: u64) {
        self.len = len;
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.stop_fill();
        self.file.set_len(len)?;
        self.file.sync_all()?;
        self.len = len;
        self.allocated = len;
        self.fill_after = 0;
        self.fill_ahead();
        Ok(())
    }

    fn replace(&mut self, contents: &[u8]) -> io::Result<()> {
        self.stop_fill();
        let mut temporary_name = self.path.clone().into_os_string();
        temporary_name.push(".tmp");
        let temporary = PathBuf::from(temporary_name);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &self.path)?;
        self.sync_directory()?;
        let len = contents.len() as u64;
        self.file = file;
        self.len = len;
        self.allocated = len;
        self.fill_after = 0;
        self.fill_ahead();
        Ok(())
    }
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Entry(Entry),
    HardState(HardState),
}

/// Appends an entry record to `out`.
pub fn encode_entry(entry: &Entry, out: &mut Vec<u8>) {
    encode(KIND_ENTRY, out, |out| {
        entry
            .write_to_vec(out)
            .expect("encoding a raft entry into memory")
    });
}

/// Appends a hard-state record to `out`.
pub fn encode_hard_state(hard_state: &HardState, out: &mut Vec<u8>) {
    encode(KIND_HARD_STATE, out, |out| {
        hard_state
            .write_to_vec(out)
            .expect("encoding a raft hard state into memory")
    });
}

fn encode(kind: u8, out: &mut Vec<u8>, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    payload(out);
    let length = (out.len() - start - HEADER_BYTES) as u32;
    let checksum = checksum_of(kind, &out[start + HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&checksum.to_le_bytes());
    out[start + 8] = kind;
}

/// A record's header: payload length, checksum, kind.
fn parse_header(header: &[u8]) -> (usize, u32, u8) {
    let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let checksum = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    (length, checksum, header[8])
}

/// The record a header and its payload make, if the checksum holds.
fn checked_record(header: &[u8], payload: &[u8]) -> Result<Record, String> {
    let (_, checksum, kind) = parse_header(header);
    if checksum_of(kind, payload) != checksum {
        return Err("a checksum mismatch".into());
    }
    decode_payload(kind, payload)
}

fn decode_payload(kind: u8, payload: &[u8]) -> Result<Record, String> {
    match kind {
        KIND_ENTRY => Entry::parse_from_bytes(payload)
            .map(Record::Entry)
            .map_err(|error| format!("undecodable entry: {error}")),
        KIND_HARD_STATE => HardState::parse_from_bytes(payload)
            .map(Record::HardState)
            .map_err(|error| format!("undecodable hard state: {error}")),
        other => Err(format!("unknown record kind {other}")),
    }
}

fn checksum_of(kind: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(payload);
    hasher.finalize()
}

/// What a scan of the file found.
pub struct Scan {
    /// Every whole, valid record with the offset it starts at, in file order.
    pub records: Vec<(u64, Record)>,
    /// Where the valid records end.
    pub valid_len: u64,
    /// Whether anything but zeros follows them: a torn last write.
    pub torn: bool,
}

/// Reads every record of `bytes`. Zeros where a header should be are the end
/// of the records (zeros ahead). A last record cut short or failing
/// its checksum is a write a crash interrupted: the scan stops before it. A bad
/// record followed by a good one is damage, and an error, unless a whole
/// sector of zeros lies between them: a hole the crash left in the unsynced
/// tail, which the scan stops before too.
pub fn scan(bytes: &[u8]) -> Result<Scan, String> {
    let mut records = Vec::new();
    let mut offset = 0usize;
    let mut torn = false;
    while offset < bytes.len() {
        match record_at(bytes, offset) {
            Ok((record, next)) => {
                records.push((offset as u64, record));
                offset = next;
            }
            Err(problem) => {
                // A whole record has a non-zero kind, so none starts past the
                // last non-zero byte's header position.
                let Some(last_nonzero) = bytes[offset..].iter().rposition(|&byte| byte != 0) else {
                    break;
                };
                torn = true;
                if let Some(later) = next_valid_record(bytes, offset + 1, offset + last_nonzero)
                    && !has_zero_sector(bytes, offset, later)
                {
                    return Err(format!(
                        "raft log file damaged at byte {offset} ({problem}), with valid records after it (at byte {later})"
                    ));
                }
                break;
            }
        }
    }
    Ok(Scan {
        records,
        valid_len: offset as u64,
        torn,
    })
}

/// The unit a disk writes whole: a crash loses or keeps each such sector.
const SECTOR_BYTES: usize = 512;

/// Whether `bytes[from..to]` holds a whole sector of zeros. Pages of the
/// unsynced tail reach the disk in any order, so a crash can keep a later one
/// and lose an earlier one, which then reads as zeros (allocated, never
/// written): everything from such a hole on was never synced, and is a torn
/// write, not damage. (etcd's WAL decoder draws the same line.)
fn has_zero_sector(bytes: &[u8], from: usize, to: usize) -> bool {
    let mut sector = from.next_multiple_of(SECTOR_BYTES);
    while sector + SECTOR_BYTES <= to {
        if bytes[sector..sector + SECTOR_BYTES]
            .iter()
            .all(|&byte| byte == 0)
        {
            return true;
        }
        sector += SECTOR_BYTES;
    }
    false
}

/// The record at `offset` and the offset after it.
fn record_at(bytes: &[u8], offset: usize) -> Result<(Record, usize), String> {
    let Some(header) = bytes.get(offset..offset + HEADER_BYTES) else {
        return Err("a header cut short".into());
    };
    let (length, _, _) = parse_header(header);
    if length > MAX_RECORD_BYTES {
        return Err(format!("a record length of {length} bytes"));
    }
    let start = offset + HEADER_BYTES;
    let Some(payload) = bytes.get(start..start + length) else {
        return Err("a record cut short".into());
    };
    Ok((checked_record(header, payload)?, start + length))
}

/// The first offset from `from` on where a whole, valid record starts, if
/// any, looking no further than a record whose header would end at
/// `last_nonzero` (a record's kind byte is not zero). A torn write leaves
/// zeros or a fragment; a valid record after it means the bad bytes are in the
/// middle of the log.
fn next_valid_record(bytes: &[u8], from: usize, last_nonzero: usize) -> Option<usize> {
    let end = (last_nonzero + 1)
        .saturating_sub(HEADER_BYTES - 1)
        .min(bytes.len().saturating_sub(HEADER_BYTES));
    (from..end).find(
        |&offset| matches!(record_at(bytes, offset), Ok((_, next)) if next > offset + HEADER_BYTES),
    )
}

/// Reads the entry record at `offset` of `file`.
pub fn read_entry(file: &dyn WalFile, offset: u64) -> Result<Entry, String> {
    let mut header = [0u8; HEADER_BYTES];
    file.read_at(offset, &mut header)
        .map_err(|error| format!("reading the raft log at byte {offset}: {error}"))?;
    let (length, _, _) = parse_header(&header);
    if length > MAX_RECORD_BYTES {
        return Err(format!(
            "raft log record at byte {offset} claims {length} bytes"
        ));
    }
    let mut payload = vec![0u8; length];
    file.read_at(offset + HEADER_BYTES as u64, &mut payload)
        .map_err(|error| format!("reading the raft log at byte {offset}: {error}"))?;
    let record = checked_record(&header, &payload)
        .map_err(|problem| format!("raft log record at byte {offset}: {problem}"))?;
    match record {
        Record::Entry(entry) => Ok(entry),
        Record::HardState(_) => Err(format!(
            "raft log record at byte {offset} is a hard state, not an entry"
        )),
    }
}

/// Reads the whole file.
pub fn read_all(file: &dyn WalFile) -> Result<Vec<u8>, String> {
    let len = file
        .size()
        .map_err(|error| format!("reading the raft log: {error}"))?;
    let mut bytes = vec![0u8; len as usize];
    file.read_at(0, &mut bytes)
        .map_err(|error| format!("reading the raft log: {error}"))?;
    Ok(bytes)
}

/// An entry for tests of the log: its payload names its index and term, so
/// payloads differ in content and length.
#[cfg(test)]
pub(crate) fn test_entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("e{index}t{term}").into_bytes().into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::test_entry as entry;
    use super::*;

    fn some_records() -> (Vec<u8>, Vec<Record>) {
        let mut bytes = Vec::new();
        let mut records = Vec::new();
        for index in 1..=5 {
            encode_entry(&entry(index, 2), &mut bytes);
            records.push(Record::Entry(entry(index, 2)));
        }
        let hard_state = HardState {
            term: 2,
            vote: 3,
            commit: 4,
            ..Default::default()
        };
        encode_hard_state(&hard_state, &mut bytes);
        records.push(Record::HardState(hard_state));
        (bytes, records)
    }

    #[test]
    fn records_read_back_as_written() {
        let (bytes, records) = some_records();
        let scan = scan(&bytes).unwrap();
        assert_eq!(scan.valid_len, bytes.len() as u64);
        let got: Vec<Record> = scan.records.into_iter().map(|(_, record)| record).collect();
        assert_eq!(got, records);
    }

    /// However a crash cuts the last write, or whatever it leaves after it
    /// (zeros, a fragment of the record), the scan keeps every whole record
    /// before it and stops there.
    #[test]
    fn a_torn_last_write_is_dropped_and_everything_before_it_kept() {
        let (bytes, _) = some_records();
        let whole = scan(&bytes).unwrap().records;
        let last_start = whole.last().unwrap().0 as usize;
        for cut in last_start..bytes.len() {
            let cut_scan = scan(&bytes[..cut]).unwrap();
            assert_eq!(cut_scan.valid_len, last_start as u64, "cut at {cut}");
            assert_eq!(cut_scan.records.len(), whole.len() - 1);
            let mut zeros = bytes[..cut].to_vec();
            zeros.resize(bytes.len() + 100, 0);
            let zeros_scan = scan(&zeros).unwrap();
            assert_eq!(zeros_scan.valid_len, last_start as u64);
            let fragment = bytes[last_start..cut].iter().any(|&byte| byte != 0);
            assert_eq!(zeros_scan.torn, fragment, "cut at {cut}");
        }
        let mut whole_then_zeros = bytes.clone();
        whole_then_zeros.resize(bytes.len() + 1000, 0);
        let end_scan = scan(&whole_then_zeros).unwrap();
        assert_eq!(end_scan.valid_len, bytes.len() as u64);
        assert!(
            !end_scan.torn,
            "zeros after the records are allocated space"
        );
    }

    /// A crash kept a later page of the unsynced tail and lost an earlier one
    /// (zeros): the records from the hole on are a torn write, not damage.
    #[test]
    fn a_hole_of_zeros_in_the_tail_is_a_torn_write() {
        let mut bytes = Vec::new();
        for index in 1..=400 {
            encode_entry(&entry(index, 2), &mut bytes);
        }
        let records = scan(&bytes).unwrap().records;
        let hole_start = 1024;
        let hole_end = 2048;
        bytes[hole_start..hole_end].fill(0);
        let found = scan(&bytes).unwrap();
        assert!(found.torn);
        let first_bad = records
            .iter()
            .rev()
            .find(|(offset, _)| *offset as usize <= hole_start)
            .unwrap()
            .0;
        assert_eq!(found.valid_len, first_bad);
        assert_eq!(
            found.records.len(),
            records
                .iter()
                .filter(|(offset, _)| *offset < first_bad)
                .count()
        );
    }

    #[test]
    fn a_damaged_record_in_the_middle_is_an_error() {
        let (mut bytes, _) = some_records();
        let second = scan(&bytes).unwrap().records[1].0 as usize;
        bytes[second + HEADER_BYTES + 1] ^= 0xff;
        let error = scan(&bytes).err().expect("damage is reported");
        assert!(
            error.contains(&format!("damaged at byte {second}")),
            "{error}"
        );
        // Followed by allocated zeros, the damage is still found.
        bytes.resize(bytes.len() + 4096, 0);
        assert!(scan(&bytes).is_err());
        // A record whose header was zeroed, with records after it, too.
        let (mut bytes, _) = some_records();
        bytes[second..second + HEADER_BYTES].fill(0);
        let error = scan(&bytes).err().expect("damage is reported");
        assert!(
            error.contains(&format!("damaged at byte {second}")),
            "{error}"
        );
    }

    #[test]
    fn the_file_appends_reads_truncates_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.wal");
        let mut file = FileWal::open(&path).unwrap();
        let (bytes, _) = some_records();
        file.append(&bytes).unwrap();
        file.sync().unwrap();
        let offset = scan(&bytes).unwrap().records[2].0;
        assert_eq!(read_entry(&file, offset).unwrap(), entry(3, 2));
        drop(file);
        let mut file = FileWal::open(&path).unwrap();
        let on_disk = read_all(&file).unwrap();
        assert_eq!(&on_disk[..bytes.len()], bytes.as_slice());
        assert!(on_disk[bytes.len()..].iter().all(|&byte| byte == 0));
        file.truncate(offset).unwrap();
        let on_disk = read_all(&file).unwrap();
        assert_eq!(&on_disk[..offset as usize], &bytes[..offset as usize]);
        assert!(on_disk[offset as usize..].iter().all(|&byte| byte == 0));
        file.replace(b"new").unwrap();
        file.finish_fill();
        assert_eq!(
            &read_all(&FileWal::open(&path).unwrap()).unwrap()[..4],
            b"new\0"
        );
        assert!(!dir.path().join("raft.wal.tmp").exists());
    }

    /// A new log file in `dir` holding `some_records`: the file, its path,
    /// the records' bytes and the records.
    fn new_file_with_records(dir: &tempfile::TempDir) -> (FileWal, PathBuf, Vec<u8>, Vec<Record>) {
        let path = dir.path().join("raft.wal");
        let mut file = FileWal::open(&path).unwrap();
        file.replace(&[]).unwrap();
        let (bytes, records) = some_records();
        file.append(&bytes).unwrap();
        (file, path, bytes, records)
    }

    /// Appends go over zeros written ahead, so the file's size changes once
    /// per fill, not per append; a reopened file's records end where the
    /// zeros begin.
    #[test]
    fn appends_fill_the_zeros_ahead_and_resume_after_the_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, path, bytes, records) = new_file_with_records(&dir);
        file.sync().unwrap();
        file.finish_fill();
        let size = std::fs::metadata(&path).unwrap().len();
        assert_eq!(size, FILL_BYTES);
        for _ in 0..100 {
            file.append(&bytes).unwrap();
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);

        // Reopened: the scan ends at the last record; appends go on there.
        drop(file);
        let mut file = FileWal::open(&path).unwrap();
        let found = scan(&read_all(&file).unwrap()).unwrap();
        assert!(!found.torn);
        assert_eq!(found.valid_len, 101 * bytes.len() as u64);
        file.continue_at(found.valid_len);
        file.append(&bytes).unwrap();
        let found = scan(&read_all(&file).unwrap()).unwrap();
        assert_eq!(found.records.len(), 102 * records.len());

        // An append past the zeros grows the file, and zeros are written
        // ahead of its new end.
        let big = vec![7u8; FILL_BYTES as usize];
        let mut record = Vec::new();
        encode_entry(
            &Entry {
                index: 9,
                term: 9,
                data: big.into(),
                ..Default::default()
            },
            &mut record,
        );
        file.append(&record).unwrap();
        file.finish_fill();
        let found = scan(&read_all(&file).unwrap()).unwrap();
        assert_eq!(found.records.len(), 102 * records.len() + 1);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            found.valid_len + FILL_BYTES
        );
    }

    /// Appends made while a fill writes zeros ahead of them, right after the
    /// file was replaced, are all there once the fill is done: the fill never
    /// writes where an append went.
    #[test]
    fn appends_during_a_fill_survive_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, path, _, records) = new_file_with_records(&dir);
        assert!(file.fill.is_some(), "replace starts a fill");
        // Records of 64 KiB outrun a fill that syncs each step, and three
        // steps' worth make appends wait on its progress more than once.
        let mut record = Vec::new();
        encode_entry(
            &Entry {
                index: 6,
                term: 2,
                data: vec![3u8; 64 * 1024].into(),
                ..Default::default()
            },
            &mut record,
        );
        let rounds = 3 * FILL_STEP_BYTES as usize / record.len() + 1;
        for _ in 0..rounds {
            file.append(&record).unwrap();
        }
        file.sync().unwrap();
        file.finish_fill();
        drop(file);
        let file = FileWal::open(&path).unwrap();
        let found = scan(&read_all(&file).unwrap()).unwrap();
        assert!(!found.torn);
        assert_eq!(found.records.len(), records.len() + rounds);
    }

    /// A torn write cut off at startup is zeroed, so a shorter record written
    /// over it later is not followed by the torn bytes' leftovers.
    #[test]
    fn a_truncated_torn_write_leaves_zeros_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, path, bytes, records) = new_file_with_records(&dir);
        let mut torn = Vec::new();
        encode_entry(
            &Entry {
                index: 6,
                term: 2,
                data: vec![5u8; 500].into(),
                ..Default::default()
            },
            &mut torn,
        );
        file.append(&torn[..torn.len() - 10]).unwrap();
        drop(file);

        let mut file = FileWal::open(&path).unwrap();
        let found = scan(&read_all(&file).unwrap()).unwrap();
        assert!(found.torn);
        assert_eq!(found.valid_len, bytes.len() as u64);
        file.truncate(found.valid_len).unwrap();
        let mut short = Vec::new();
        encode_entry(&entry(6, 2), &mut short);
        file.append(&short).unwrap();
        drop(file);

        let file = FileWal::open(&path).unwrap();
        let found = scan(&read_all(&file).unwrap()).unwrap();
        assert!(!found.torn);
        assert_eq!(found.records.len(), records.len() + 1);
        assert_eq!(found.valid_len, (bytes.len() + short.len()) as u64);
    }
}
