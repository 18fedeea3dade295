//! Raft messages between members over plain TCP. Each member keeps one
//! connection to each peer and writes length-prefixed raft messages on it from
//! a thread of its own; the peer reads them on a thread of its own and hands
//! them to its raft loop. (etcd's rafthttp does the same over a long-lived HTTP
//! stream with framing of its own.) Through the gRPC stream used before, a
//! message passed through five tasks and threads between two raft loops: a
//! sender task, hyper's body task and the connection task on one side, the
//! connection task and the stream's reader task on the other. Here it passes
//! through two: the sender thread and the reader thread.
//!
//! The stream shares the peer port with the gRPC peer service (snapshots,
//! probes, lease forwarding): a connection whose first byte is [`MAGIC`]'s is
//! a raft stream, anything else goes to the gRPC server.
//!
//! On the wire: [`MAGIC`], then frames of `u32 length (little-endian) | raft
//! Message` (raft-rs' protobuf encoding). Nothing comes back: a write that
//! fails, or does not finish within [`WRITE_TIMEOUT`], makes raft treat the
//! peer as unreachable, and raft resends what was lost.

use std::io::{self, Read, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::socket::MsgFlags;
use parking_lot::{Condvar, Mutex};
use protobuf::Message as _;
use raft::eraftpb::Message;

use crate::inbox::Sender;
use crate::node::NodeInput;

/// The first bytes of a raft stream. Its first byte tells it from HTTP/2,
/// whose connection preface starts with `P`.
pub const MAGIC: &[u8; 24] = b"shoal raft stream v1\r\n\r\n";
/// A frame longer than this is damage (raft's appends are bounded by
/// `max_size_per_msg`; snapshots do not go this way).
const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;
/// Messages waiting for one peer beyond this are dropped: raft retransmits,
/// and a peer that is down must not make us hold an unbounded backlog.
const QUEUE_LEN: usize = 8192;
/// A write that takes longer than this means the peer is not reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failure, the sender waits this long before it tries again.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How often a reader blocked on an idle stream checks whether to stop.
const READ_POLL: Duration = Duration::from_millis(500);

struct State {
    /// Encoded frames not yet written, in order.
    pending: Vec<u8>,
    /// Frames in `pending`.
    pending_frames: usize,
    /// The connection, once the sender thread opened it.
    connection: Option<Arc<TcpStream>>,
    /// Someone (the raft loop or the sender thread) is writing: whoever
    /// writes takes `pending` whole, so the stream's bytes stay in order.
    writing: bool,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the sender thread.
    wake: Condvar,
}

/// The raft loop's end of the stream to one peer. Dropping it stops the
/// sender thread.
pub struct Outbox {
    shared: Arc<Shared>,
    /// The buffer a direct write swaps in for `pending` (kept for its
    /// capacity).
    spare: Vec<u8>,
    /// `etcd_network_peer_sent_bytes_total{To=peer}`, if counted.
    sent_bytes: Option<metrics::Counter>,
}

impl Outbox {
    /// Starts the sender thread for `peer_id` at `url` (a peer URL).
    /// Failures are reported to the raft loop through `feedback`.
    pub fn start(
        peer_id: u64,
        url: &str,
        feedback: Sender<NodeInput>,
        sent_bytes: Option<metrics::Counter>,
    ) -> io::Result<Outbox> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: Vec::new(),
                pending_frames: 0,
                connection: None,
                writing: false,
                closed: false,
            }),
            wake: Condvar::new(),
        });
        let address = host_port(url)?;
        let sender_shared = shared.clone();
        std::thread::Builder::new()
            .name("raft-send".into())
            .spawn(move || run_sender(peer_id, &address, &sender_shared, &feedback))?;
        Ok(Outbox {
            shared,
            spare: Vec::new(),
            sent_bytes,
        })
    }

    /// Queues a message for the next [`Outbox::flush`]; false if the queue is
    /// full (the message is dropped).
    pub fn send(&mut self, message: &Message) -> bool {
        let mut state = self.shared.state.lock();
        if state.pending_frames >= QUEUE_LEN {
            return false;
        }
        let before = state.pending.len();
        encode_frame(message, &mut state.pending);
        if let Some(sent_bytes) = &self.sent_bytes {
            sent_bytes.inc_by((state.pending.len() - before) as u64);
        }
        state.pending_frames += 1;
        true
    }

    /// Writes what is queued. The raft loop writes it itself when the
    /// connection is open and idle, as far as the socket takes it without
    /// waiting; the sender thread writes the rest, and connects.
    pub fn flush(&mut self) {
        let mut state = self.shared.state.lock();
        if state.pending.is_empty() || state.writing {
            return;
        }
        let Some(connection) = state.connection.clone() else {
            drop(state);
            self.shared.wake.notify_one();
            return;
        };
        let mut bytes = std::mem::replace(&mut state.pending, std::mem::take(&mut self.spare));
        state.pending_frames = 0;
        state.writing = true;
        drop(state);

        let taken = write_without_waiting(&connection, &bytes);
        let mut state = self.shared.state.lock();
        state.writing = false;
        if taken == bytes.len() {
            bytes.clear();
            self.spare = bytes;
            return;
        }
        // The unwritten tail goes first, before anything queued meanwhile.
        bytes.drain(..taken);
        bytes.extend_from_slice(&state.pending);
        state.pending = bytes;
        state.pending_frames += 1;
        drop(state);
        self.shared.wake.notify_one();
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

/// Writes as much of `bytes` as the socket takes at once; how much it took.
/// On an error it stops: the sender thread, writing the rest, meets the error
/// again and handles it (the bytes already taken must not be written twice).
fn write_without_waiting(connection: &TcpStream, bytes: &[u8]) -> usize {
    use std::os::fd::AsRawFd as _;
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    let mut written = 0;
    while written < bytes.len() {
        match nix::sys::socket::send(connection.as_raw_fd(), &bytes[written..], flags) {
            Ok(n) => written += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    written
}

/// `host:port` of a peer URL such as `http://10.0.0.1:2380`, as the member
/// at that URL binds it (`transport::bind`).
fn host_port(url: &str) -> io::Result<String> {
    let parsed = url::Url::parse(url).map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("peer URL {url:?}: {error}"),
        )
    })?;
    let (host, port) = crate::transport::host_and_port(&parsed);
    Ok(format!("{host}:{port}"))
}

/// Turns on TCP keepalive, so that a connection to a member that vanished
/// without a word (a partition, a power loss) ends within about half a minute
/// rather than never: a stream may be idle for long (followers send each other
/// nothing).
fn keep_alive(stream: &TcpStream) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    setsockopt(stream, sockopt::KeepAlive, &true)?;
    setsockopt(stream, sockopt::TcpKeepIdle, &10)?;
    setsockopt(stream, sockopt::TcpKeepInterval, &5)?;
    setsockopt(stream, sockopt::TcpKeepCount, &3)?;
    Ok(())
}

fn connect(address: &str) -> io::Result<TcpStream> {
    let mut last_error = io::Error::other(format!("{address} did not resolve"));
    for socket_address in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&socket_address, CONNECT_TIMEOUT) {
            Ok(mut stream) => {
                keep_alive(&stream)?;
                stream.set_nodelay(true)?;
                stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
                stream.write_all(MAGIC)?;
                return Ok(stream);
            }
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}

/// Appends `message` to `out` as one frame.
pub fn encode_frame(message: &Message, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    message
        .write_to_vec(out)
        .expect("encoding a raft message into memory");
    let length = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
}

/// Connects, and writes what the raft loop could not write at once.
fn run_sender(peer_id: u64, address: &str, shared: &Shared, feedback: &Sender<NodeInput>) {
    let peer = format!("{peer_id:x}");
    let mut peer_was_down = false;
    let mut bytes = Vec::new();
    loop {
        let connection = {
            let mut state = shared.state.lock();
            while (state.pending.is_empty() || state.writing) && !state.closed {
                shared.wake.wait(&mut state);
            }
            if state.closed {
                return;
            }
            std::mem::swap(&mut bytes, &mut state.pending);
            state.pending_frames = 0;
            state.writing = true;
            state.connection.clone()
        };
        let written = match connection {
            Some(connection) => (&*connection).write_all(&bytes),
            None => connect(address).and_then(|stream| {
                (&stream).write_all(&bytes)?;
                shared.state.lock().connection = Some(Arc::new(stream));
                Ok(())
            }),
        };
        bytes.clear();
        let mut state = shared.state.lock();
        state.writing = false;
        match written {
            Ok(()) => {
                drop(state);
                if peer_was_down {
                    tracing::info!(%peer, %address, "raft stream to peer open again");
                    peer_was_down = false;
                }
            }
            Err(error) => {
                // What queued up meanwhile is stale; raft resends what matters.
                state.connection = None;
                state.pending.clear();
                state.pending_frames = 0;
                drop(state);
                if !peer_was_down {
                    tracing::warn!(%peer, %address, %error, "raft stream to peer failed");
                    peer_was_down = true;
                }
                if feedback.send(NodeInput::Unreachable(peer_id)).is_err() {
                    return;
                }
                std::thread::sleep(RETRY_PAUSE);
            }
        }
    }
}

/// Reads frames from a byte stream, keeping a partial frame across reads (and
/// across read timeouts).
pub struct FrameReader {
    buffer: Vec<u8>,
    /// `buffer[start..end]` is read and not yet taken.
    start: usize,
    end: usize,
    /// The stream's [`MAGIC`] is still to come.
    expect_magic: bool,
}

/// Room a read asks for at least.
const READ_BYTES: usize = 64 * 1024;

impl Default for FrameReader {
    /// A reader of bare frames.
    fn default() -> Self {
        FrameReader {
            buffer: vec![0; READ_BYTES],
            start: 0,
            end: 0,
            expect_magic: false,
        }
    }
}

impl FrameReader {
    /// A reader of a raft stream: [`MAGIC`], then frames.
    pub fn for_stream() -> Self {
        FrameReader {
            expect_magic: true,
            ..FrameReader::default()
        }
    }

    /// Reads once from `source`; `Ok(false)` at the end of the stream. The
    /// buffer grows, by doubling, only as a long frame's bytes arrive, never
    /// to the length a header merely claims.
    pub fn fill(&mut self, source: &mut impl Read) -> io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buffer.len() > 4 * READ_BYTES {
                // A long frame has gone; give its room back.
                self.buffer = vec![0; READ_BYTES];
            }
        }
        let frame_len = self.pending_frame_len().unwrap_or(0);
        if frame_len > MAX_FRAME_BYTES + 4 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a raft frame of {} bytes", frame_len - 4),
            ));
        }
        if self.end == self.buffer.len() {
            // Full: move what is left to the front, or grow for a long frame.
            if self.start > 0 {
                self.buffer.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let grown = (self.buffer.len() * 2).min(frame_len.max(self.buffer.len() + 1));
                self.buffer.resize(grown, 0);
            }
        }
        let n = source.read(&mut self.buffer[self.end..])?;
        self.end += n;
        Ok(n > 0)
    }

    /// Bytes the frame at the front needs in all, if its header is complete.
    fn pending_frame_len(&self) -> Option<usize> {
        if self.expect_magic {
            return None;
        }
        let header = self.buffer[self.start..self.end].get(..4)?;
        Some(4 + u32::from_le_bytes(header.try_into().expect("4 bytes")) as usize)
    }

    /// The next whole frame's message, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Message>, String> {
        if self.expect_magic {
            let Some(magic) = self.buffer[self.start..self.end].get(..MAGIC.len()) else {
                return Ok(None);
            };
            if magic != MAGIC {
                return Err("not a raft stream".into());
            }
            self.start += MAGIC.len();
            self.expect_magic = false;
        }
        let Some(frame_len) = self.pending_frame_len() else {
            return Ok(None);
        };
        if frame_len - 4 > MAX_FRAME_BYTES {
            return Err(format!("a raft frame of {} bytes", frame_len - 4));
        }
        let Some(frame) = self.buffer[self.start..self.end].get(4..frame_len) else {
            return Ok(None);
        };
        let message = Message::parse_from_bytes(frame)
            .map_err(|error| format!("undecodable raft message: {error}"))?;
        self.start += frame_len;
        Ok(Some(message))
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Reads one raft stream until it ends, fails, `stopping` is set, or the raft
/// loop is gone, handing each message to `inbox`.
/// The bytes received from each peer (`From`), counted by the readers.
pub type ReceivedBytes = metrics::Family<crate::metrics::PeerLabels, metrics::Counter>;

pub fn read_stream(
    mut stream: TcpStream,
    inbox: &Sender<NodeInput>,
    stopping: &AtomicBool,
    received_bytes: Option<&ReceivedBytes>,
) {
    // The counter of the peer the stream comes from, looked up once.
    let mut from_counter: Option<(u64, metrics::Counter)> = None;
    let remote = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |address| address.to_string());
    let outcome = (|| -> Result<(), String> {
        keep_alive(&stream).map_err(|error| error.to_string())?;
        stream
            .set_read_timeout(Some(READ_POLL))
            .map_err(|error| error.to_string())?;
        let mut reader = FrameReader::for_stream();
        loop {
            if stopping.load(Ordering::Relaxed) {
                return Ok(());
            }
            match reader.fill(&mut stream) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(error) if is_timeout(&error) => continue,
                Err(error) => return Err(error.to_string()),
            }
            while let Some(message) = reader.next_message()? {
                if let Some(received_bytes) = received_bytes {
                    let counter = match &from_counter {
                        Some((from, counter)) if *from == message.from => counter,
                        _ => {
                            let labels = crate::metrics::PeerMetrics::from(message.from);
                            let counter = received_bytes.get_or_create_owned(&labels);
                            &from_counter.insert((message.from, counter)).1
                        }
                    };
                    // The frame: a 4-byte length and the encoded message.
                    counter.inc_by(4 + u64::from(message.compute_size()));
                }
                if inbox.send(NodeInput::Raft(message)).is_err() {
                    return Ok(());
                }
            }
        }
    })();
    if let Err(error) = outcome {
        tracing::warn!(%remote, %error, "raft stream from a peer dropped");
    }
}

/// At most this many raft streams are read at once through one listener
/// (a member needs one per peer, and one more for a while after a peer
/// reconnects); more are refused rather than given a thread each.
pub const MAX_READERS: usize = 256;

/// Reads a raft stream handed over by the peer listener on a thread of its
/// own, until it ends or `stopping` is set. `readers` counts the listener's
/// streams being read; past [`MAX_READERS`] the connection is closed.
pub fn spawn_reader(
    stream: TcpStream,
    inbox: Sender<NodeInput>,
    stopping: Arc<AtomicBool>,
    readers: Arc<AtomicUsize>,
    received_bytes: Option<ReceivedBytes>,
) {
    if readers.fetch_add(1, Ordering::Relaxed) >= MAX_READERS {
        readers.fetch_sub(1, Ordering::Relaxed);
        tracing::warn!(
            limit = MAX_READERS,
            "too many raft streams open; a new one was refused"
        );
        return;
    }
    let counted = readers.clone();
    let spawned = std::thread::Builder::new()
        .name("raft-recv".into())
        .spawn(move || {
            read_stream(stream, &inbox, &stopping, received_bytes.as_ref());
            counted.fetch_sub(1, Ordering::Relaxed);
        });
    if let Err(error) = spawned {
        readers.fetch_sub(1, Ordering::Relaxed);
        tracing::error!(%error, "cannot start a thread for a raft stream");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::TcpListener;
    use std::time::Instant;

    use raft::eraftpb::{Entry, MessageType};

    use super::*;
    use crate::inbox::{self, Receiver};

    fn message(index: u64) -> Message {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgAppend);
        message.from = 1;
        message.to = 2;
        message.index = index;
        let entry = Entry {
            index,
            term: 3,
            data: vec![index as u8; (index as usize * 37) % 3000].into(),
            ..Default::default()
        };
        message.set_entries(vec![entry].into());
        message
    }

    /// Collects what arrives in `inbox` until `n` messages came or 10 s passed.
    fn receive(inbox: &Receiver<NodeInput>, n: usize) -> Vec<NodeInput> {
        receive_within(inbox, n, Duration::from_secs(10))
    }

    fn receive_within(inbox: &Receiver<NodeInput>, n: usize, wait: Duration) -> Vec<NodeInput> {
        let deadline = Instant::now() + wait;
        let mut got = VecDeque::new();
        while got.len() < n && Instant::now() < deadline {
            let _ = inbox.wait_take(&mut got, usize::MAX, Duration::from_millis(100));
        }
        got.into_iter().collect()
    }

    fn indexes(inputs: &[NodeInput]) -> Vec<u64> {
        inputs
            .iter()
            .filter_map(|input| match input {
                NodeInput::Raft(message) => Some(message.index),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn frames_come_out_whole_however_the_bytes_are_cut() {
        let mut bytes = Vec::new();
        for index in 1..=20 {
            encode_frame(&message(index), &mut bytes);
        }
        for chunk in [1, 3, 7, 100, 4096, bytes.len()] {
            let mut reader = FrameReader::default();
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                let mut source = piece;
                assert!(reader.fill(&mut source).unwrap());
                while let Some(message) = reader.next_message().unwrap() {
                    got.push(message);
                }
            }
            let expected: Vec<Message> = (1..=20).map(message).collect();
            assert_eq!(got, expected, "chunks of {chunk} bytes");
        }
    }

    /// The magic and a long frame arriving a byte or a few at a time: no
    /// header is read out of the magic, and the buffer grows only with what
    /// arrived.
    #[test]
    fn a_stream_cut_anywhere_reads_back_without_reserving_claimed_lengths() {
        let mut bytes = MAGIC.to_vec();
        let mut long = message(1);
        long.mut_entries()[0].data = vec![9u8; 300_000].into();
        encode_frame(&long, &mut bytes);
        encode_frame(&message(2), &mut bytes);
        for chunk in [1, 5, 23, 4096] {
            let mut reader = FrameReader::for_stream();
            let mut got = Vec::new();
            for (idx, piece) in bytes.chunks(chunk).enumerate() {
                let mut source = piece;
                while !source.is_empty() {
                    reader.fill(&mut source).unwrap();
                }
                while let Some(message) = reader.next_message().unwrap() {
                    got.push(message);
                }
                let arrived = (idx + 1) * chunk;
                assert!(
                    reader.buffer.len() <= (2 * arrived).max(READ_BYTES),
                    "{} bytes reserved after {arrived} arrived",
                    reader.buffer.len()
                );
            }
            assert_eq!(got, vec![long.clone(), message(2)], "chunks of {chunk}");
        }

        // A header that claims the most a frame may be reserves nothing.
        let mut reader = FrameReader::for_stream();
        let mut claim = MAGIC.to_vec();
        claim.extend_from_slice(&(MAX_FRAME_BYTES as u32).to_le_bytes());
        reader.fill(&mut claim.as_slice()).unwrap();
        assert_eq!(reader.next_message().unwrap(), None);
        reader.fill(&mut [7u8; 100].as_slice()).unwrap();
        assert_eq!(reader.buffer.len(), READ_BYTES);
    }

    #[test]
    fn a_bad_frame_is_an_error_not_a_message() {
        let mut reader = FrameReader::default();
        let mut huge = (MAX_FRAME_BYTES as u32 + 1).to_le_bytes().to_vec();
        huge.extend_from_slice(b"xx");
        reader.fill(&mut huge.as_slice()).unwrap();
        let error = reader.next_message().unwrap_err();
        assert!(error.contains("raft frame of"), "{error}");

        let mut reader = FrameReader::default();
        let mut garbage = 4u32.to_le_bytes().to_vec();
        garbage.extend_from_slice(&[0xff; 4]);
        reader.fill(&mut garbage.as_slice()).unwrap();
        let error = reader.next_message().unwrap_err();
        assert!(error.contains("undecodable raft message"), "{error}");
    }

    #[test]
    fn peer_urls_give_the_address_to_dial() {
        let dial = |url: &str| host_port(url).unwrap();
        assert_eq!(dial("http://127.0.0.1:2380"), "127.0.0.1:2380");
        assert_eq!(dial("https://node-1:12380/"), "node-1:12380");
        assert_eq!(dial("http://[::1]:2380"), "[::1]:2380");
        // Without a port, the scheme's, as the member binds it.
        assert_eq!(dial("http://node-1"), "node-1:80");
        assert_eq!(dial("http://[::1]"), "[::1]:80");
        assert!(host_port("not a url").is_err());
    }

    /// A receiving end like a member's: accepts connections and reads each
    /// as a raft stream into `inbox`.
    fn serve(listener: TcpListener, inbox: Sender<NodeInput>, stopping: Arc<AtomicBool>) {
        let readers = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for connection in listener.incoming() {
                let Ok(connection) = connection else { return };
                spawn_reader(
                    connection,
                    inbox.clone(),
                    stopping.clone(),
                    readers.clone(),
                    None,
                );
            }
        });
    }

    /// Messages arrive in order, written by the raft loop directly or by the
    /// sender thread; a peer that is not there is reported unreachable, and
    /// the stream opens again once it is back.
    #[test]
    fn messages_arrive_in_order_and_a_missing_peer_is_reported() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (peer_inbox, peer_received) = inbox::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        serve(listener, peer_inbox, stopping.clone());

        let (feedback, feedback_received) = inbox::channel();
        let mut outbox = Outbox::start(2, &format!("http://{address}"), feedback, None).unwrap();
        let mut sent = 0;
        for _ in 0..50 {
            for _ in 0..(sent % 7 + 1) {
                sent += 1;
                assert!(outbox.send(&message(sent)));
            }
            outbox.flush();
        }
        let got = receive(&peer_received, sent as usize);
        assert_eq!(indexes(&got), (1..=sent).collect::<Vec<_>>());

        // A peer that is down: the sender reports it to raft.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let down_address = closed.local_addr().unwrap();
        drop(closed);
        let (feedback, feedback_received_down) = inbox::channel();
        let mut to_nowhere =
            Outbox::start(3, &format!("http://{down_address}"), feedback, None).unwrap();
        assert!(to_nowhere.send(&message(1)));
        to_nowhere.flush();
        let reports = receive(&feedback_received_down, 1);
        assert!(
            matches!(reports.as_slice(), [NodeInput::Unreachable(3)]),
            "{} reports",
            reports.len()
        );

        // Back: the next messages go through.
        let back = TcpListener::bind(down_address).unwrap();
        let (back_inbox, back_received) = inbox::channel();
        serve(back, back_inbox, stopping.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut arrived = Vec::new();
        while arrived.is_empty() && Instant::now() < deadline {
            assert!(to_nowhere.send(&message(9)));
            to_nowhere.flush();
            arrived = receive(&back_received, 1);
        }
        assert_eq!(indexes(&arrived)[..1], [9]);
        assert!(
            receive_within(&feedback_received, 1, Duration::from_millis(300)).is_empty(),
            "no failure on the open stream"
        );
        stopping.store(true, Ordering::Relaxed);
    }

    /// A peer that does not read for a while: the raft loop's direct writes
    /// stop part-way (the socket is full), the sender thread writes the rest,
    /// and every message still arrives once, in order.
    #[test]
    fn writes_cut_short_by_a_full_socket_keep_their_order() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (peer_inbox, peer_received) = inbox::channel();
        std::thread::spawn(move || {
            let (connection, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(500));
            read_stream(connection, &peer_inbox, &AtomicBool::new(false), None);
        });
        let (feedback, feedback_received) = inbox::channel();
        let mut outbox = Outbox::start(2, &format!("http://{address}"), feedback, None).unwrap();
        let big = |index: u64| {
            let mut message = message(index);
            message.mut_entries()[0].data = vec![index as u8; 20_000].into();
            message
        };
        // The first message opens the connection; the rest go by direct
        // writes once it is open.
        assert!(outbox.send(&big(1)));
        outbox.flush();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let state = outbox.shared.state.lock();
            if state.connection.is_some() && !state.writing {
                break;
            }
            drop(state);
            std::thread::sleep(Duration::from_millis(5));
        }
        // About 16 MB: more than loopback's socket buffers hold.
        let total = 800;
        for index in 2..=total {
            assert!(outbox.send(&big(index)), "queue full at {index}");
            if index % 10 == 0 {
                outbox.flush();
            }
        }
        let got = receive(&peer_received, total as usize);
        assert_eq!(indexes(&got), (1..=total).collect::<Vec<_>>());
        assert!(got.iter().all(|input| matches!(
            input,
            NodeInput::Raft(message) if message.get_entries()[0].data.len() == 20_000
        )));
        assert!(receive_within(&feedback_received, 1, Duration::from_millis(100)).is_empty());
    }

    /// Waits (up to 10 s) for the other end to close `connection`.
    fn assert_closed(connection: &mut TcpStream) {
        connection
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buffer = [0u8; 1];
        match connection.read(&mut buffer) {
            Ok(0) => {}
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("the connection should be closed: {other:?}"),
        }
    }

    /// A connection that does not start with the magic bytes is dropped
    /// without a message reaching raft.
    #[test]
    fn a_stream_without_the_magic_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (peer_inbox, peer_received) = inbox::channel();
        serve(listener, peer_inbox, Arc::new(AtomicBool::new(false)));
        let mut connection = TcpStream::connect(address).unwrap();
        let mut bytes = b"shoal raft stream v0\r\n\r\n".to_vec();
        encode_frame(&message(1), &mut bytes);
        connection.write_all(&bytes).unwrap();
        assert_closed(&mut connection);
        assert!(receive_within(&peer_received, 1, Duration::from_millis(300)).is_empty());
    }

    /// Past the limit of streams read at once, a new one is closed at once.
    #[test]
    fn streams_past_the_limit_are_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (peer_inbox, _peer_received) = inbox::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        serve(listener, peer_inbox, stopping.clone());
        let mut open = Vec::new();
        for _ in 0..MAX_READERS {
            let mut connection = TcpStream::connect(address).unwrap();
            connection.write_all(MAGIC).unwrap();
            open.push(connection);
        }
        let mut one_more = TcpStream::connect(address).unwrap();
        one_more.write_all(MAGIC).unwrap();
        assert_closed(&mut one_more);
        // Those within the limit stay open.
        let mut buffer = [0u8; 1];
        let first = &mut open[0];
        first
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let error = first.read(&mut buffer).unwrap_err();
        assert!(is_timeout(&error), "{error}");
        stopping.store(true, Ordering::Relaxed);
    }
}
