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
use std::sync::Arc;
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

/// Copies `source` (a container's stdout or stderr) into the log at `path`
/// as CRI records, until end of file; and, as it comes, to the clients
/// attached through `hub`.
pub(crate) fn copy_as_cri(
    mut source: File,
    path: PathBuf,
    stream: Stream,
    hub: Option<Arc<Hub>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut log) = File::options().create(true).append(true).open(&path) else {
            // Without a log the app's output is still drained, so it never
            // blocks on a full pipe.
            let _ = std::io::copy(&mut source, &mut std::io::sink());
            return;
        };
        let mut pending: Vec<u8> = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
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
            if !batch.is_empty() && log.write_all(&batch).is_err() {
                break;
            }
        }
        if !pending.is_empty() {
            let _ = log.write_all(&format_record(SystemTime::now(), stream, true, &pending));
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
        let copier = copy_as_cri(read, path.clone(), Stream::Stdout, None);
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
}
