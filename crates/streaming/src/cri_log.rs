//! Container logs as kubelet serves them, from CRI-format log files: one
//! line per write, `<RFC 3339 time> <stdout|stderr> <F|P> <text>`, where `P`
//! marks a fragment of a longer line that the next lines continue. The log
//! options (`tailLines`, `sinceSeconds`/`sinceTime`, `timestamps`,
//! `limitBytes`, `follow`) are applied here, so an agent only names files.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::io::AsyncReadExt as _;

use crate::StreamError;

/// How often `follow` looks for more lines once it has read to the end.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// The most output gathered before it is handed on.
const CHUNK_BYTES: usize = 32 * 1024;

/// The options of a log request (kubelet's `/containerLogs` query).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub tail_lines: Option<u64>,
    /// Lines older than this are left out (`sinceTime`, or now less
    /// `sinceSeconds`).
    pub since: Option<SystemTime>,
    pub timestamps: bool,
    pub limit_bytes: Option<u64>,
}

fn boolean(name: &str, value: &str) -> Result<bool, StreamError> {
    match value {
        "true" | "1" | "True" | "TRUE" | "t" | "T" => Ok(true),
        "false" | "0" | "False" | "FALSE" | "f" | "F" | "" => Ok(false),
        other => Err(StreamError::BadRequest(format!(
            "invalid value for {name}: {other:?} is not a boolean"
        ))),
    }
}

fn natural(name: &str, value: &str) -> Result<u64, StreamError> {
    let number: i64 = value.parse().map_err(|_| {
        StreamError::BadRequest(format!(
            "invalid value for {name}: {value:?} is not an integer"
        ))
    })?;
    u64::try_from(number).map_err(|_| {
        StreamError::BadRequest(format!("{name}: Invalid value: {number}: must be >= 0"))
    })
}

impl LogOptions {
    /// Reads the query of a `/containerLogs` (or `pods/log`) request; `now`
    /// is the time `sinceSeconds` counts back from.
    pub fn from_query(query: &str, now: SystemTime) -> Result<LogOptions, StreamError> {
        let mut options = LogOptions::default();
        let mut since_seconds = None;
        let mut since_time = None;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "follow" => options.follow = boolean("follow", &value)?,
                "previous" => options.previous = boolean("previous", &value)?,
                "timestamps" => options.timestamps = boolean("timestamps", &value)?,
                "tailLines" => options.tail_lines = Some(natural("tailLines", &value)?),
                "limitBytes" => {
                    let limit = natural("limitBytes", &value)?;
                    if limit == 0 {
                        return Err(StreamError::BadRequest(
                            "limitBytes: Invalid value: 0: must be greater than 0".to_string(),
                        ));
                    }
                    options.limit_bytes = Some(limit);
                }
                "sinceSeconds" => {
                    let seconds = natural("sinceSeconds", &value)?;
                    if seconds == 0 {
                        return Err(StreamError::BadRequest(
                            "sinceSeconds: Invalid value: 0: must be greater than 0".to_string(),
                        ));
                    }
                    since_seconds = Some(seconds);
                }
                "sinceTime" => {
                    since_time = Some(parse_time(&value).ok_or_else(|| {
                        StreamError::BadRequest(format!(
                            "invalid value for sinceTime: {value:?} is not an RFC 3339 time"
                        ))
                    })?)
                }
                _ => {}
            }
        }
        if since_seconds.is_some() && since_time.is_some() {
            return Err(StreamError::BadRequest(
                "at most one of sinceTime or sinceSeconds may be specified".to_string(),
            ));
        }
        options.since =
            since_time.or_else(|| since_seconds.map(|seconds| now - Duration::from_secs(seconds)));
        Ok(options)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_index + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Reads an RFC 3339 time (`2026-12-07T11:43:47.123456789Z`, or with an
/// offset such as `+01:00`).
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let field = text.get(range)?;
        if field.bytes().all(|byte| byte.is_ascii_digit()) {
            field.parse().ok()
        } else {
            None
        }
    };
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos: u64 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let n_digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if n_digits == 0 || n_digits > 9 {
            return None;
        }
        nanos = fraction[..n_digits].parse().ok()?;
        nanos *= 10u64.pow(9 - n_digits as u32);
        rest = &fraction[n_digits..];
    }
    let offset_seconds: i64 = match rest {
        "Z" | "z" => 0,
        zone if zone.len() == 6 && zone.as_bytes()[3] == b':' => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hours: i64 = zone[1..3].parse().ok()?;
            let minutes: i64 = zone[4..6].parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
        _ => return None,
    };
    let seconds = days_from_civil(i64::from(year), month, day) * 86_400
        + i64::from(hour) * 3600
        + i64::from(minute) * 60
        + i64::from(second)
        - offset_seconds;
    let seconds = u64::try_from(seconds).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_nanos(nanos))
}

/// A time as Go's RFC3339Nano writes it in UTC: the fraction without its
/// trailing zeros, none at all on a whole second.
pub fn format_time(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs() as i64;
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    );
    let nanos = since_epoch.subsec_nanos();
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

/// One line of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriLine<'a> {
    pub time: SystemTime,
    pub stderr: bool,
    /// A fragment the next line of the same stream continues.
    pub partial: bool,
    pub content: &'a [u8],
}

/// Reads one line (without its newline); `None` when it is not a CRI line.
pub fn parse_line(line: &[u8]) -> Option<CriLine<'_>> {
    let mut fields = line.splitn(4, |byte| *byte == b' ');
    let time = parse_time(std::str::from_utf8(fields.next()?).ok()?)?;
    let stderr = match fields.next()? {
        b"stdout" => false,
        b"stderr" => true,
        _ => return None,
    };
    // The tag is `F` or `P`, possibly followed by more tags after `:`.
    let tag = fields.next()?;
    let partial = match tag.split(|byte| *byte == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(CriLine {
        time,
        stderr,
        partial,
        content: fields.next().unwrap_or_default(),
    })
}

/// Turns CRI lines into the bytes a client sees, applying the options that
/// work line by line (since, timestamps, the byte limit).
struct Renderer {
    since: Option<SystemTime>,
    timestamps: bool,
    /// Whether the last line of stdout (0) and stderr (1) was a fragment:
    /// the next one continues it, without a timestamp of its own.
    in_fragment: [bool; 2],
    remaining_bytes: Option<u64>,
}

impl Renderer {
    fn new(options: &LogOptions) -> Renderer {
        Renderer {
            since: options.since,
            timestamps: options.timestamps,
            in_fragment: [false; 2],
            remaining_bytes: options.limit_bytes,
        }
    }

    fn exhausted(&self) -> bool {
        self.remaining_bytes == Some(0)
    }

    /// Renders one line into `out`; lines that are not CRI lines are
    /// skipped, as kubelet skips them.
    fn line(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let Some(line) = parse_line(raw) else {
            return;
        };
        if self.since.is_some_and(|since| line.time < since) {
            return;
        }
        let stream = usize::from(line.stderr);
        let start = out.len();
        if self.timestamps && !self.in_fragment[stream] {
            out.extend_from_slice(format_time(line.time).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(line.content);
        if !line.partial {
            out.push(b'\n');
        }
        self.in_fragment[stream] = line.partial;
        if let Some(remaining) = &mut self.remaining_bytes {
            let written = (out.len() - start) as u64;
            if written > *remaining {
                out.truncate(start + *remaining as usize);
                *remaining = 0;
            } else {
                *remaining -= written;
            }
        }
    }
}

/// Where the last `n_lines` complete lines of `data` start.
fn tail_start(data: &[u8], n_lines: u64) -> usize {
    if n_lines == 0 {
        return data.len();
    }
    // The newline that ends the last complete line does not start a line.
    let complete = data
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(0, |end| end);
    let mut seen = 0;
    for (index, byte) in data[..complete].iter().enumerate().rev() {
        if *byte == b'\n' {
            seen += 1;
            if seen == n_lines {
                return index + 1;
            }
        }
    }
    0
}

/// Renders the complete lines of `data`; returns how many bytes it used
/// (an unfinished last line is left for later).
fn render_lines(renderer: &mut Renderer, data: &[u8], out: &mut Vec<u8>) -> usize {
    let mut used = 0;
    while let Some(end) = data[used..].iter().position(|byte| *byte == b'\n') {
        if renderer.exhausted() {
            break;
        }
        renderer.line(&data[used..used + end], out);
        used += end + 1;
    }
    used
}

/// Renders a whole log file's text under `options`, without following:
/// what a log request answers for a stopped container.
pub fn render(data: &[u8], options: &LogOptions) -> Vec<u8> {
    let mut renderer = Renderer::new(options);
    let start = options
        .tail_lines
        .map_or(0, |n_lines| tail_start(data, n_lines));
    let mut out = Vec::new();
    render_lines(&mut renderer, &data[start..], &mut out);
    out
}

/// The log file a request reads: the current instance's, or the
/// previous one's for `previous`.
pub fn choose_file(
    files: &crate::LogFiles,
    options: &LogOptions,
    container: &crate::ContainerRef,
) -> Result<PathBuf, StreamError> {
    if options.previous {
        return files.previous.clone().ok_or_else(|| {
            StreamError::BadRequest(format!(
                "previous terminated container \"{}\" in pod \"{}\" not found",
                container.container, container.pod
            ))
        });
    }
    Ok(files.current.clone())
}

fn identity(metadata: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (metadata.dev(), metadata.ino())
}

/// Streams a log file's lines under `options` into the returned channel,
/// from a task of its own; with `follow`, it keeps reading as the file
/// grows (and across a rotation, which puts a new file at `path`) until
/// `running` resolves and the rest is read. The task ends when the
/// receiver is dropped.
pub async fn stream_file(
    path: &Path,
    options: &LogOptions,
    running: Option<BoxFuture<'static, ()>>,
) -> Result<tokio::sync::mpsc::Receiver<Bytes>, StreamError> {
    let open = |path: &Path| {
        let path = path.to_path_buf();
        async move {
            tokio::fs::File::open(&path).await.map_err(|error| {
                if error.kind() == std::io::ErrorKind::NotFound {
                    StreamError::NotFound(format!("log file {} not found", path.display()))
                } else {
                    StreamError::io(format!("opening log file {}", path.display()), error)
                }
            })
        }
    };
    let mut file = open(path).await?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .await
        .map_err(|error| StreamError::io(format!("reading {}", path.display()), error))?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(8);
    let options = options.clone();
    let path = path.to_path_buf();
    tokio::spawn(async move {
        let mut renderer = Renderer::new(&options);
        let start = options
            .tail_lines
            .map_or(0, |n_lines| tail_start(&data, n_lines));
        let mut pending = data.split_off(start);
        let mut out = Vec::new();
        let used = render_lines(&mut renderer, &pending, &mut out);
        pending.drain(..used);
        for chunk in out.chunks(CHUNK_BYTES) {
            if sender.send(Bytes::copy_from_slice(chunk)).await.is_err() {
                return;
            }
        }
        let Some(mut running) = running.filter(|_| options.follow) else {
            return;
        };
        let mut exited = false;
        let mut identity_now = file
            .metadata()
            .await
            .ok()
            .map(|metadata| identity(&metadata));
        let mut buffer = vec![0u8; CHUNK_BYTES];
        loop {
            if renderer.exhausted() {
                return;
            }
            let read = match file.read(&mut buffer).await {
                Ok(read) => read,
                Err(_) => return,
            };
            if read > 0 {
                pending.extend_from_slice(&buffer[..read]);
                let mut out = Vec::new();
                let used = render_lines(&mut renderer, &pending, &mut out);
                pending.drain(..used);
                if !out.is_empty() && sender.send(Bytes::from(out)).await.is_err() {
                    return;
                }
                continue;
            }
            // At the end: a rotation leaves a new file at the path.
            let at_path = tokio::fs::metadata(&path).await.ok().map(|m| identity(&m));
            if at_path.is_some() && at_path != identity_now {
                match open(&path).await {
                    Ok(next) => {
                        file = next;
                        identity_now = at_path;
                        pending.clear();
                        continue;
                    }
                    Err(_) => return,
                }
            }
            if exited {
                return;
            }
            tokio::select! {
                () = &mut running => exited = true,
                () = tokio::time::sleep(FOLLOW_POLL) => {}
                () = sender.closed() => return,
            }
        }
    });
    Ok(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-12-07T11:43:47.123456789Z stdout F one
2026-12-07T11:43:48Z stderr F two
2026-12-07T11:43:49.5Z stdout P thr
2026-12-07T11:43:49.6Z stdout F ee
not a cri line
2026-12-07T11:43:50.000000100+00:00 stdout F four
";

    fn at(text: &str) -> SystemTime {
        parse_time(text).expect("a valid time")
    }

    #[test]
    fn times_round_trip_as_go_writes_them() {
        assert_eq!(
            format_time(at("2026-12-07T11:43:47.123456789Z")),
            "2026-12-07T11:43:47.123456789Z"
        );
        assert_eq!(
            format_time(at("2026-12-07T11:43:47.500Z")),
            "2026-12-07T11:43:47.5Z"
        );
        assert_eq!(
            format_time(at("2000-02-29T00:00:00Z")),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(at("2026-12-07T12:43:47+01:00"), at("2026-12-07T11:43:47Z"));
        assert_eq!(
            at("1970-01-02T00:00:00Z"),
            UNIX_EPOCH + Duration::from_secs(86_400)
        );
        assert_eq!(parse_time("2026-12-07 11:43:47Z"), None);
        assert_eq!(parse_time("2026-13-07T11:43:47Z"), None);
        assert_eq!(parse_time("2026-12-07T11:43:47.1234567891Z"), None);
    }

    #[test]
    fn cri_lines_split_into_their_fields() {
        let line = parse_line(b"2026-12-07T11:43:47Z stderr P a b ").expect("a CRI line");
        assert!(line.stderr && line.partial);
        assert_eq!(line.content, b"a b ");
        let empty = parse_line(b"2026-12-07T11:43:47Z stdout F").expect("an empty line");
        assert_eq!(empty.content, b"");
        assert!(parse_line(b"2026-12-07T11:43:47Z stdin F x").is_none());
        assert!(parse_line(b"hello").is_none());
    }

    fn rendered(options: LogOptions) -> String {
        String::from_utf8(render(LOG.as_bytes(), &options)).expect("UTF-8")
    }

    #[test]
    fn plain_logs_join_fragments_and_skip_bad_lines() {
        assert_eq!(rendered(LogOptions::default()), "one\ntwo\nthree\nfour\n");
    }

    #[test]
    fn timestamps_prefix_each_whole_line_once() {
        let options = LogOptions {
            timestamps: true,
            ..LogOptions::default()
        };
        assert_eq!(
            rendered(options),
            "2026-12-07T11:43:47.123456789Z one\n2026-12-07T11:43:48Z two\n\
             2026-12-07T11:43:49.5Z three\n2026-12-07T11:43:50.0000001Z four\n"
        );
    }

    #[test]
    fn tail_counts_the_files_lines() {
        let tail = |n_lines| {
            rendered(LogOptions {
                tail_lines: Some(n_lines),
                ..LogOptions::default()
            })
        };
        assert_eq!(tail(1), "four\n");
        // The bad line counts as a line of the file, as kubelet counts.
        assert_eq!(tail(3), "ee\nfour\n");
        assert_eq!(tail(0), "");
        assert_eq!(tail(100), "one\ntwo\nthree\nfour\n");
    }

    #[test]
    fn since_leaves_older_lines_out() {
        let options = LogOptions {
            since: Some(at("2026-12-07T11:43:48Z")),
            ..LogOptions::default()
        };
        assert_eq!(rendered(options), "two\nthree\nfour\n");
    }

    #[test]
    fn limit_bytes_cuts_the_output() {
        let options = LogOptions {
            limit_bytes: Some(6),
            ..LogOptions::default()
        };
        assert_eq!(rendered(options), "one\ntw");
    }

    #[test]
    fn query_options_are_read_and_checked() {
        let now = at("2026-12-07T12:00:00Z");
        let options = LogOptions::from_query(
            "follow=true&tailLines=5&timestamps=true&limitBytes=10&sinceSeconds=60",
            now,
        )
        .expect("valid options");
        assert_eq!(
            options,
            LogOptions {
                follow: true,
                previous: false,
                tail_lines: Some(5),
                since: Some(at("2026-12-07T11:59:00Z")),
                timestamps: true,
                limit_bytes: Some(10),
            }
        );
        let since_time = LogOptions::from_query("sinceTime=2026-12-07T11%3A00%3A00Z", now)
            .expect("valid options");
        assert_eq!(since_time.since, Some(at("2026-12-07T11:00:00Z")));
        for bad in [
            "tailLines=-1",
            "limitBytes=0",
            "follow=maybe",
            "sinceTime=yesterday",
            "sinceSeconds=5&sinceTime=2026-12-07T11:00:00Z",
        ] {
            assert!(
                matches!(
                    LogOptions::from_query(bad, now),
                    Err(StreamError::BadRequest(_))
                ),
                "{bad} was taken"
            );
        }
    }

    #[tokio::test]
    async fn follow_reads_growth_and_ends_when_the_container_exits() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("0.log");
        std::fs::write(&path, "2026-12-07T11:43:47Z stdout F first\n").expect("write the log");
        let (exit, exited) = tokio::sync::oneshot::channel::<()>();
        let running: BoxFuture<'static, ()> = Box::pin(async move {
            let _ = exited.await;
        });
        let options = LogOptions {
            follow: true,
            ..LogOptions::default()
        };
        let mut receiver = stream_file(&path, &options, Some(running))
            .await
            .expect("the log opens");
        let first = receiver.recv().await.expect("the first line");
        assert_eq!(&first[..], b"first\n");
        {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open the log");
            file.write_all(b"2026-12-07T11:43:48Z stdout P sec")
                .expect("append");
            file.write_all(b"\n2026-12-07T11:43:48Z stdout F ond\n")
                .expect("append");
        }
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while seen != b"second\n" && tokio::time::Instant::now() < deadline {
            if let Ok(Some(chunk)) =
                tokio::time::timeout(Duration::from_millis(200), receiver.recv()).await
            {
                seen.extend_from_slice(&chunk);
            }
        }
        assert_eq!(String::from_utf8_lossy(&seen), "second\n");
        exit.send(()).expect("the follower waits");
        let end = tokio::time::timeout(Duration::from_secs(5), receiver.recv())
            .await
            .expect("the stream ends after the exit");
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn a_missing_file_is_not_found() {
        let result = stream_file(
            Path::new("/nonexistent/0.log"),
            &LogOptions::default(),
            None,
        )
        .await;
        assert!(matches!(result, Err(StreamError::NotFound(_))));
    }
}
