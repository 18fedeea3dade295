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

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState};

/// Bytes before a record's payload: length, checksum, kind.
pub const HEADER_BYTES: usize = 9;
const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
/// Larger than any record raft writes (etcd caps requests at 1.5 MiB by
/// default, and shoal at `--max-request-bytes`); a length above this is damage.
const MAX_RECORD_BYTES: usize = 512 * 1024 * 1024;

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
    /// Cuts the file to `len` bytes, durably (drops a torn tail at startup).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Replaces the whole file with `contents`, atomically and durably: after a
    /// crash the file holds either the old contents or the new.
    fn replace(&mut self, contents: &[u8]) -> io::Result<()>;
}

/// The log file of a member's data directory.
pub struct FileWal {
    path: PathBuf,
    file: File,
    len: u64,
}

impl FileWal {
    /// Opens the file at `path`, creating it empty if it does not exist.
    pub fn open(path: &Path) -> io::Result<FileWal> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        Ok(FileWal {
            path: path.to_path_buf(),
            file,
            len,
        })
    }

    fn sync_directory(&self) -> io::Result<()> {
        let directory = self.path.parent().unwrap_or_else(|| Path::new("."));
        File::open(directory)?.sync_all()
    }
}

impl WalFile for FileWal {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, self.len)?;
        self.len += data.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_all()?;
        self.len = len;
        Ok(())
    }

    fn replace(&mut self, contents: &[u8]) -> io::Result<()> {
        let mut temporary_name = self.path.clone().into_os_string();
        temporary_name.push(".tmp");
        let temporary = PathBuf::from(temporary_name);
        {
            let mut file = File::create(&temporary)?;
            file.write_all(contents)?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, &self.path)?;
        self.sync_directory()?;
        *self = FileWal::open(&self.path)?;
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
    /// Where the valid records end; bytes after it are a torn last write.
    pub valid_len: u64,
}

/// Reads every record of `bytes`. A last record cut short or failing its
/// checksum is a write a crash interrupted: the scan stops before it. A bad
/// record followed by a good one is damage, not a torn write, and an error.
pub fn scan(bytes: &[u8]) -> Result<Scan, String> {
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        match record_at(bytes, offset) {
            Ok((record, next)) => {
                records.push((offset as u64, record));
                offset = next;
            }
            Err(problem) => {
                if let Some(later) = next_valid_record(bytes, offset + 1) {
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
    })
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

/// The first offset from `from` on where a whole, valid record starts, if any.
/// A torn write leaves zeros or a fragment; a valid record after it means the
/// bad bytes are in the middle of the log.
fn next_valid_record(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(HEADER_BYTES)).find(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; index as usize % 7].into(),
            ..Default::default()
        }
    }

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
            assert_eq!(scan(&zeros).unwrap().valid_len, last_start as u64);
        }
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
        assert_eq!(read_all(&file).unwrap(), bytes);
        file.truncate(offset).unwrap();
        assert_eq!(file.size().unwrap(), offset);
        file.replace(b"new").unwrap();
        assert_eq!(read_all(&FileWal::open(&path).unwrap()).unwrap(), b"new");
        assert!(!dir.path().join("raft.wal.tmp").exists());
    }
}
