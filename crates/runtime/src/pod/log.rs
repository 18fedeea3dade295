//! Container logs in the CRI format the kubelet reads:
//! `2026-12-07T11:43:47.123456789Z stdout F text`, one line per line the app
//! wrote, `P` (partial) instead of `F` for a piece of a line longer than
//! [`MAX_LINE_BYTES`] (the rest follows on the next lines).
//!
//! The writer runs in the container's monitor, one thread per stream, each
//! appending whole records with one `write` to the same file.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::SystemTime;

use crate::pod::attach::Hub;

/// Lines longer than this are cut into partial records (containerd's
/// default, 16 KiB).
pub const MAX_LINE_BYTES: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed record of a CRI log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub timestamp: SystemTime,
    /// The timestamp as written (RFC 3339, nanoseconds, UTC).
    pub timestamp_text: String,
    pub stream: Stream,
    /// `false` for a `P` record: the line goes on in the next record.
    pub complete: bool,
    /// The text, without the newline.
    pub text: Vec<u8>,
}

/// Parses one line of a CRI log (with or without its newline).
pub fn parse_line(line: &[u8]) -> Option<LogLine> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut fields = line.splitn(4, |byte| *byte == b' ');
    let timestamp_text = std::str::from_utf8(fields.next()?).ok()?;
    let timestamp = humantime::parse_rfc3339(timestamp_text).ok()?;
    let stream = match fields.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let complete = match fields.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    Some(LogLine {
        timestamp,
        timestamp_text: timestamp_text.to_string(),
        stream,
        complete,
        text: fields.next().unwrap_or_default().to_vec(),
    })
}

/// One record: timestamp, stream, tag, text, newline.
pub fn format_record(
    timestamp: SystemTime,
    stream: Stream,
    complete: bool,
    text: &[u8],
) -> Vec<u8> {
    let mut record = format!(
        "{} {} {} ",
        humantime::format_rfc3339_nanos(timestamp),
        stream.as_str(),
        if complete { "F" } else { "P" }
    )
    .into_bytes();
    record.extend_from_slice(text);
    record.push(b'\n');
    record
}

/// What a container's log may grow to before it is rotated (the kubelet's
/// default `containerLogMaxSize`).
pub const DEFAULT_MAX_LOG_BYTES: u64 = 10 << 20;

/// A container's log, shared by its streams' copiers: records are appended
/// whole, and past `max_bytes` the file is renamed to `<name>.1` (replacing
/// the one before) and a new one begun, so a chatty app cannot fill the
/// disk; readers follow the current file, as the kubelet's do.
pub(crate) struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_bytes: u64,
}

impl LogFile {
    pub(crate) fn open(path: PathBuf, max_bytes: u64) -> Arc<Mutex<LogFile>> {
        let file = File::options().create(true).append(true).open(&path).ok();
        let size = file
            .as_ref()
            .and_then(|file| file.metadata().ok())
            .map_or(0, |metadata| metadata.len());
        Arc::new(Mutex::new(LogFile {
            path,
            file,
            size,
            max_bytes,
        }))
    }

    /// The rotated file's path: `<path>.1`.
    pub fn rotated_path(path: &std::path::Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    /// Appends `records`; a failure (a full disk) loses them, never the
    /// app's progress.
    fn append(&mut self, records: &[u8]) {
        if self.size > 0 && self.size + records.len() as u64 > self.max_bytes {
            let _ = std::fs::rename(&self.path, Self::rotated_path(&self.path));
            self.file = File::options()
                .create(true)
                .append(true)
                .open(&self.path)
                .ok();
            self.size = 0;
        }
        if let Some(file) = self.file.as_mut()
            && file.write_all(records).is_ok()
        {
            self.size += records.len() as u64;
        }
    }
}

/// Copies `source` (a container's stdout or stderr) into `log` as CRI
/// records, until end of file; and, as it comes, to the clients attached
/// through `hub`.
pub(crate) fn copy_as_cri(
    mut source: File,
    log: Arc<Mutex<LogFile>>,
    stream: Stream,
    hub: Option<Arc<Hub>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let append = |batch: &[u8]| {
            if let Ok(mut log) = log.lock() {
                log.append(batch);
            }
        };
        let mut pending: Vec<u8> = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            // Drained to the end whatever happens to the log, so the app
            // never blocks on a full pipe.
            let n_read = match source.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n_read) => n_read,
            };
            if let Some(hub) = &hub {
                hub.broadcast(stream, &buffer[..n_read]);
            }
            pending.extend_from_slice(&buffer[..n_read]);
            let now = SystemTime::now();
            let mut batch = Vec::new();
            let mut start = 0;
            while let Some(offset) = pending[start..].iter().position(|byte| *byte == b'\n') {
                let end = start + offset;
                for (index, piece) in pending[start..end].chunks(MAX_LINE_BYTES).enumerate() {
                    let last = start + (index + 1) * MAX_LINE_BYTES >= end;
                    batch.extend(format_record(now, stream, last, piece));
                }
                if start == end {
                    batch.extend(format_record(now, stream, true, b""));
                }
                start = end + 1;
            }
            pending.drain(..start);
            while pending.len() >= MAX_LINE_BYTES {
                batch.extend(format_record(
                    now,
                    stream,
                    false,
                    &pending[..MAX_LINE_BYTES],
                ));
                pending.drain(..MAX_LINE_BYTES);
            }
            if !batch.is_empty() {
                append(&batch);
            }
        }
        if !pending.is_empty() {
            append(&format_record(SystemTime::now(), stream, true, &pending));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let time = humantime::parse_rfc3339("2026-12-07T11:43:47.123456789Z").unwrap();
        let record = format_record(time, Stream::Stderr, false, b"half a line");
        assert_eq!(
            record,
            b"2026-12-07T11:43:47.123456789Z stderr P half a line\n"
        );
        let parsed = parse_line(&record).unwrap();
        assert_eq!(parsed.timestamp, time);
        assert_eq!(parsed.stream, Stream::Stderr);
        assert!(!parsed.complete);
        assert_eq!(parsed.text, b"half a line");
        let empty = parse_line(b"2026-12-07T11:43:47.000000001Z stdout F ").unwrap();
        assert!(empty.complete);
        assert!(empty.text.is_empty());
        assert_eq!(parse_line(b"garbage"), None);
        assert_eq!(parse_line(b"2026-12-07T11:43:47Z stdin F x"), None);
    }

    #[test]
    fn the_writer_splits_lines_and_cuts_long_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let (read, write) = std::io::pipe().unwrap();
        let read = File::from(std::os::fd::OwnedFd::from(read));
        let log = LogFile::open(path.clone(), DEFAULT_MAX_LOG_BYTES);
        let copier = copy_as_cri(read, log, Stream::Stdout, None);
        let mut write = write;
        let long = vec![b'x'; MAX_LINE_BYTES + 10];
        write.write_all(b"one\n\ntwo").unwrap();
        write.write_all(b" halves\n").unwrap();
        write.write_all(&long).unwrap();
        write.write_all(b"\nno newline").unwrap();
        drop(write);
        copier.join().unwrap();
        let log = std::fs::read(&path).unwrap();
        let lines: Vec<LogLine> = log
            .split_inclusive(|byte| *byte == b'\n')
            .map(|line| parse_line(line).unwrap())
            .collect();
        let texts: Vec<(&[u8], bool)> = lines
            .iter()
            .map(|line| (line.text.as_slice(), line.complete))
            .collect();
        assert_eq!(texts[0], (&b"one"[..], true));
        assert_eq!(texts[1], (&b""[..], true));
        assert_eq!(texts[2], (&b"two halves"[..], true));
        assert_eq!(texts[3], (&long[..MAX_LINE_BYTES], false));
        assert_eq!(texts[4], (&b"xxxxxxxxxx"[..], true));
        assert_eq!(texts[5], (&b"no newline"[..], true));
        assert_eq!(texts.len(), 6);
    }

    #[test]
    fn a_log_past_its_size_is_rotated_and_every_record_stays_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let log = LogFile::open(path.clone(), 1000);
        let (read, write) = std::io::pipe().unwrap();
        let read = File::from(std::os::fd::OwnedFd::from(read));
        let copier = copy_as_cri(read, log, Stream::Stderr, None);
        let mut write = write;
        // Ten batches, each waited for, so the writer sees them apart.
        let logged = |text: &str| {
            [path.clone(), LogFile::rotated_path(&path)]
                .iter()
                .any(|file| std::fs::read_to_string(file).is_ok_and(|log| log.contains(text)))
        };
        for batch in 0..10 {
            for line in batch * 20..(batch + 1) * 20 {
                writeln!(write, "line {line}").unwrap();
            }
            let last = format!("line {}\n", (batch + 1) * 20 - 1);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !logged(&last) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert!(logged(&last), "{last:?} never logged");
        }
        drop(write);
        copier.join().unwrap();
        let current = std::fs::read(&path).unwrap();
        let rotated = std::fs::read(LogFile::rotated_path(&path)).unwrap();
        assert!(current.len() <= 1000 + 64 * 1024, "{}", current.len());
        assert!(!rotated.is_empty());
        for file in [&current, &rotated] {
            for line in file.split_inclusive(|byte| *byte == b'\n') {
                assert!(parse_line(line).is_some(), "{line:?}");
            }
        }
        let last = current
            .split_inclusive(|byte| *byte == b'\n')
            .next_back()
            .and_then(parse_line)
            .unwrap();
        assert_eq!(last.text, b"line 199");
        assert_eq!(last.stream, Stream::Stderr);
    }
}
