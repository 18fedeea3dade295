//! A relay in front of the gRPC server that repairs one thing etcd's Go clients
//! send and Rust's HTTP/2 stack refuses: an `:authority` that is a whole URL.
//!
//! etcdctl 3.4 dials each endpoint of `endpoint status`, `hashkv` and friends as
//! `passthrough:///http://host:port`, and grpc-go then sends `http://host:port`
//! as the request's `:authority`. etcd's server ignores it; the `h2` crate resets
//! the stream as malformed. The relay reads the client's frames, decodes every
//! header block (tracking the client's HPACK table), and forwards frames
//! untouched while the authority is valid. A connection whose first request
//! carries a valid authority is then copied without looking (grpc-go keeps one
//! authority per connection). From the first malformed authority on, it
//! re-encodes each header block as plain literals (never added to the
//! server's HPACK table, so the two tables can no longer disagree) with the
//! authority cut down to `host:port`.

use std::io;

use fluke_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// HTTP/2's default SETTINGS_MAX_FRAME_SIZE, which the server keeps.
const MAX_FRAME_PAYLOAD: usize = 16_384;
/// A header block larger than this is refused rather than buffered.
const MAX_HEADER_BLOCK: usize = 1024 * 1024;

/// The host and port of a URL-shaped authority, or `None` if it is fine as it is.
pub fn repaired_authority(authority: &[u8]) -> Option<Vec<u8>> {
    if http::uri::Authority::try_from(authority).is_ok() {
        return None;
    }
    let text = std::str::from_utf8(authority).ok()?;
    let without_scheme = text.split_once("://").map_or(text, |(_, rest)| rest);
    let host_port = without_scheme.split('/').next().unwrap_or_default();
    http::uri::Authority::try_from(host_port).ok()?;
    Some(host_port.as_bytes().to_vec())
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// HPACK integer with an `n`-bit prefix (RFC 7541, 5.1).
fn encode_integer(mut value: usize, prefix_bits: u8, first_byte_flags: u8, out: &mut Vec<u8>) {
    let max_prefix = (1usize << prefix_bits) - 1;
    if value < max_prefix {
        out.push(first_byte_flags | value as u8);
        return;
    }
    out.push(first_byte_flags | max_prefix as u8);
    value -= max_prefix;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header as "literal header field without indexing, new name" (RFC 7541, 6.2.2).
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    encode_integer(name.len(), 7, 0, out);
    out.extend_from_slice(name);
    encode_integer(value.len(), 7, 0, out);
    out.extend_from_slice(value);
}

/// Rewrites the client-to-server half of one connection.
pub struct Relay {
    decoder: Decoder<'static>,
    /// Set once a block has been re-encoded: from then on every block is.
    reencoding: bool,
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            decoder: Decoder::new(),
            reencoding: false,
        }
    }
}

impl Relay {
    /// Copies `client` to `server`, repairing header blocks as described above.
    pub async fn run<R, W>(mut self, client: &mut R, server: &mut W) -> io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // Frames are read a few bytes at a time: buffer them.
        let mut client = tokio::io::BufReader::with_capacity(64 * 1024, client);
        let client = &mut client;
        let mut preface = [0u8; 24];
        client.read_exact(&mut preface).await?;
        server.write_all(&preface).await?;
        if &preface != PREFACE {
            // Not HTTP/2 with prior knowledge: nothing here to repair.
            tokio::io::copy(client, server).await?;
            return Ok(());
        }
        loop {
            let mut header = [0u8; FRAME_HEADER_LEN];
            match client.read_exact(&mut header).await {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(error) => return Err(error),
            }
            let length =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let mut payload = vec![0u8; length];
            client.read_exact(&mut payload).await?;
            if header[3] != TYPE_HEADERS {
                server.write_all(&header).await?;
                server.write_all(&payload).await?;
                continue;
            }
            // A header block: HEADERS plus any CONTINUATIONs until END_HEADERS.
            let mut frames = vec![(header, payload)];
            while frames.last().expect("not empty").0[4] & FLAG_END_HEADERS == 0 {
                let mut next = [0u8; FRAME_HEADER_LEN];
                client.read_exact(&mut next).await?;
                if next[3] != TYPE_CONTINUATION {
                    return Err(invalid("header block interrupted by another frame"));
                }
                let length =
                    usize::from(next[0]) << 16 | usize::from(next[1]) << 8 | usize::from(next[2]);
                if frames
                    .iter()
                    .map(|(_, payload)| payload.len())
                    .sum::<usize>()
                    + length
                    > MAX_HEADER_BLOCK
                {
                    return Err(invalid("header block too large"));
                }
                let mut payload = vec![0u8; length];
                client.read_exact(&mut payload).await?;
                frames.push((next, payload));
            }
            let output = self.process_block(&frames)?;
            server.write_all(&output).await?;
            if !self.reencoding {
                // grpc-go sends one authority for a connection's whole life: once
                // its first request needed no repair, none will, and decoding
                // every later header block would only cost CPU (a quarter of a
                // leader's under a put load, measured in BENCHMARKS.md).
                tokio::io::copy(client, server).await?;
                return Ok(());
            }
        }
    }

    /// Decodes one header block and returns the bytes to send for it.
    pub fn process_block(
        &mut self,
        frames: &[([u8; FRAME_HEADER_LEN], Vec<u8>)],
    ) -> io::Result<Vec<u8>> {
        let (first_header, first_payload) = &frames[0];
        let flags = first_header[4];
        let mut fragment = first_payload.as_slice();
        let mut pad_len = 0;
        if flags & FLAG_PADDED != 0 {
            pad_len = usize::from(
                *fragment
                    .first()
                    .ok_or_else(|| invalid("empty padded frame"))?,
            );
            fragment = &fragment[1..];
        }
        let mut priority = None;
        if flags & FLAG_PRIORITY != 0 {
            if fragment.len() < 5 {
                return Err(invalid("short priority fields"));
            }
            priority = Some(fragment[..5].to_vec());
            fragment = &fragment[5..];
        }
        if fragment.len() < pad_len {
            return Err(invalid("padding longer than the frame"));
        }
        let mut block = fragment[..fragment.len() - pad_len].to_vec();
        for (_, payload) in &frames[1..] {
            block.extend_from_slice(payload);
        }
        let headers = self
            .decoder
            .decode(&block)
            .map_err(|error| invalid(format!("undecodable header block: {error:?}")))?;
        let mut repaired = false;
        let headers: Vec<(Vec<u8>, Vec<u8>)> = headers
            .into_iter()
            .map(|(name, value)| {
                if name == b":authority"
                    && let Some(fixed) = repaired_authority(&value)
                {
                    repaired = true;
                    return (name, fixed);
                }
                (name, value)
            })
            .collect();
        self.reencoding |= repaired;
        if !self.reencoding {
            let mut original = Vec::new();
            for (header, payload) in frames {
                original.extend_from_slice(header);
                original.extend_from_slice(payload);
            }
            return Ok(original);
        }
        let mut encoded = priority.unwrap_or_default();
        let priority_flag = if encoded.is_empty() { 0 } else { FLAG_PRIORITY };
        for (name, value) in &headers {
            encode_literal(name, value, &mut encoded);
        }
        let stream_id = &first_header[5..9];
        let mut output = Vec::with_capacity(encoded.len() + 2 * FRAME_HEADER_LEN);
        let chunks: Vec<&[u8]> = encoded.chunks(MAX_FRAME_PAYLOAD).collect();
        let chunks = if chunks.is_empty() {
            vec![&encoded[..]]
        } else {
            chunks
        };
        let n_chunks = chunks.len();
        for (position, chunk) in chunks.into_iter().enumerate() {
            let is_first = position == 0;
            let is_last = position + 1 == n_chunks;
            let frame_type = if is_first {
                TYPE_HEADERS
            } else {
                TYPE_CONTINUATION
            };
            let mut frame_flags = if is_last { FLAG_END_HEADERS } else { 0 };
            if is_first {
                frame_flags |= (flags & FLAG_END_STREAM) | priority_flag;
            }
            let length = chunk.len();
            output.extend_from_slice(&[(length >> 16) as u8, (length >> 8) as u8, length as u8]);
            output.push(frame_type);
            output.push(frame_flags);
            output.extend_from_slice(stream_id);
            output.extend_from_slice(chunk);
        }
        Ok(output)
    }
}

/// One client connection as the gRPC server sees it: the server's end of a pipe
/// whose other end the relay tasks feed from, and drain to, the TCP socket.
pub struct RelayedConnection {
    pipe: tokio::io::DuplexStream,
}

impl AsyncRead for RelayedConnection {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().pipe).poll_read(context, buffer)
    }
}

impl AsyncWrite for RelayedConnection {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().pipe).poll_write(context, buffer)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().pipe).poll_flush(context)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().pipe).poll_shutdown(context)
    }
}

/// Bytes buffered in each direction of the pipe.
const PIPE_BYTES: usize = 256 * 1024;

/// Starts relaying an accepted client socket and returns the server's end.
/// A connection that does not open with the HTTP/2 preface is HTTP/1.1 (the
/// JSON gateway, the v2 API, `/health`): it goes to `http` instead, and the
/// gRPC server sees its end of the pipe close at once.
/// The socket is a TCP stream or a TLS stream over one; the caller sets
/// `TCP_NODELAY`.
pub fn relay<S>(
    socket: S,
    http: std::sync::Arc<crate::gateway::HttpApi>,
    info: std::sync::Arc<crate::conn::ConnInfo>,
) -> RelayedConnection
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (server_end, relay_end) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(async move {
        let mut socket = socket;
        let prefix = match read_protocol_prefix(&mut socket).await {
            Ok(prefix) => prefix,
            Err(error) => {
                tracing::debug!(%error, "client connection closed before its first request");
                return;
            }
        };
        if prefix.as_slice() != PREFACE {
            drop(relay_end);
            http.serve_connection(crate::gateway::Prefixed::new(prefix, socket), info)
                .await;
            return;
        }
        let (socket_read, mut socket_write) = tokio::io::split(socket);
        let (mut pipe_read, mut pipe_write) = tokio::io::split(relay_end);
        tokio::spawn(async move {
            let _ = copy_gathering(&mut pipe_read, &mut socket_write).await;
            let _ = socket_write.shutdown().await;
        });
        let mut client = std::io::Cursor::new(prefix).chain(socket_read);
        if let Err(error) = Relay::default().run(&mut client, &mut pipe_write).await {
            tracing::debug!(%error, "client connection closed by the relay");
        }
        let _ = pipe_write.shutdown().await;
    });
    RelayedConnection { pipe: server_end }
}

/// Copies the server's side of a connection to the client's socket. After a
/// read, tasks that are ready to run go first (one yield), and what they
/// added to the pipe goes out in the same write: a put's events for the ten
/// watch streams of a connection then leave in one socket write rather than
/// ten.
async fn copy_gathering<R, W>(from: &mut R, to: &mut W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use futures::FutureExt as _;
    let mut buffer = vec![0u8; GATHER_BYTES];
    loop {
        let mut filled = from.read(&mut buffer).await?;
        if filled == 0 {
            return Ok(());
        }
        let mut at_end = false;
        if filled < buffer.len() {
            tokio::task::yield_now().await;
            while filled < buffer.len() {
                match from.read(&mut buffer[filled..]).now_or_never() {
                    Some(Ok(0)) => {
                        at_end = true;
                        break;
                    }
                    Some(Ok(n)) => filled += n,
                    Some(Err(error)) => return Err(error),
                    None => break,
                }
            }
        }
        to.write_all(&buffer[..filled]).await?;
        if at_end {
            return Ok(());
        }
    }
}

/// The most one socket write of `copy_gathering` carries.
const GATHER_BYTES: usize = 64 * 1024;

/// Reads the start of a connection until it either is the whole HTTP/2
/// preface or cannot be (an HTTP/1.1 request line), and returns what was read.
async fn read_protocol_prefix<S: AsyncRead + Unpin>(socket: &mut S) -> io::Result<Vec<u8>> {
    let mut prefix = Vec::with_capacity(PREFACE.len());
    let mut chunk = [0u8; PREFACE.len()];
    while prefix.len() < PREFACE.len() && PREFACE.starts_with(&prefix) {
        let wanted = PREFACE.len() - prefix.len();
        let n = socket.read(&mut chunk[..wanted]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        prefix.extend_from_slice(&chunk[..n]);
    }
    Ok(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(frame_type: u8, flags: u8, stream: u32, payload: &[u8]) -> ([u8; 9], Vec<u8>) {
        let length = payload.len();
        let mut header = [0u8; 9];
        header[0] = (length >> 16) as u8;
        header[1] = (length >> 8) as u8;
        header[2] = length as u8;
        header[3] = frame_type;
        header[4] = flags;
        header[5..9].copy_from_slice(&stream.to_be_bytes());
        (header, payload.to_vec())
    }

    fn request_headers(authority: &str) -> Vec<(&'static [u8], Vec<u8>)> {
        vec![
            (b":method", b"POST".to_vec()),
            (b":scheme", b"http".to_vec()),
            (b":path", b"/etcdserverpb.Maintenance/Status".to_vec()),
            (b":authority", authority.as_bytes().to_vec()),
            (b"content-type", b"application/grpc".to_vec()),
        ]
    }

    type HeaderList = Vec<(Vec<u8>, Vec<u8>)>;

    fn decode_output(decoder: &mut Decoder<'_>, output: &[u8]) -> (u8, HeaderList) {
        let length =
            usize::from(output[0]) << 16 | usize::from(output[1]) << 8 | usize::from(output[2]);
        assert_eq!(output[3], TYPE_HEADERS);
        assert_eq!(output.len(), 9 + length, "one frame");
        (output[4], decoder.decode(&output[9..]).unwrap())
    }

    #[test]
    fn url_authorities_are_cut_to_host_and_port() {
        assert_eq!(repaired_authority(b"127.0.0.1:2379"), None);
        assert_eq!(
            repaired_authority(b"http://127.0.0.1:2379").unwrap(),
            b"127.0.0.1:2379"
        );
        assert_eq!(
            repaired_authority(b"https://example.com:2379/").unwrap(),
            b"example.com:2379"
        );
    }

    #[test]
    fn valid_blocks_pass_untouched_and_bad_ones_are_reencoded_from_then_on() {
        // The client's encoder indexes headers, so later blocks refer to its table.
        let mut client = fluke_hpack::Encoder::new();
        let mut server = Decoder::new();
        let mut relay = Relay::default();

        let good = client.encode(
            request_headers("127.0.0.1:2379")
                .iter()
                .map(|(n, v)| (*n, v.as_slice())),
        );
        let frames = [frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &good)];
        let output = relay.process_block(&frames).unwrap();
        assert_eq!(
            output[9..],
            good[..],
            "a valid block is forwarded byte for byte"
        );
        server.decode(&output[9..]).unwrap();

        for stream in [3u32, 5, 7] {
            let bad = client.encode(
                request_headers("http://127.0.0.1:2379")
                    .iter()
                    .map(|(n, v)| (*n, v.as_slice())),
            );
            let frames = [frame(
                TYPE_HEADERS,
                FLAG_END_HEADERS | FLAG_END_STREAM,
                stream,
                &bad,
            )];
            let output = relay.process_block(&frames).unwrap();
            let (flags, headers) = decode_output(&mut server, &output);
            assert_eq!(flags & FLAG_END_STREAM, FLAG_END_STREAM, "END_STREAM kept");
            let authority = headers
                .iter()
                .find(|(name, _)| name == b":authority")
                .unwrap();
            assert_eq!(authority.1, b"127.0.0.1:2379");
            assert_eq!(headers.len(), 5);
        }
        // After re-encoding began, even a valid block is re-encoded (the server's
        // table no longer matches the client's).
        let good = client.encode(
            request_headers("127.0.0.1:2379")
                .iter()
                .map(|(n, v)| (*n, v.as_slice())),
        );
        let output = relay
            .process_block(&[frame(TYPE_HEADERS, FLAG_END_HEADERS, 9, &good)])
            .unwrap();
        let (_, headers) = decode_output(&mut server, &output);
        assert_eq!(headers[2].1, b"/etcdserverpb.Maintenance/Status");
    }

    #[test]
    fn continuation_frames_are_joined() {
        let mut client = fluke_hpack::Encoder::new();
        let block = client.encode(
            request_headers("http://h:1")
                .iter()
                .map(|(n, v)| (*n, v.as_slice())),
        );
        let (first, second) = block.split_at(block.len() / 2);
        let frames = [
            frame(TYPE_HEADERS, 0, 1, first),
            frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, second),
        ];
        let output = Relay::default().process_block(&frames).unwrap();
        let (_, headers) = decode_output(&mut Decoder::new(), &output);
        assert!(headers.contains(&(b":authority".to_vec(), b"h:1".to_vec())));
    }

    #[test]
    fn large_integers_use_continuation_bytes() {
        let mut out = Vec::new();
        encode_integer(1337, 5, 0, &mut out);
        assert_eq!(out, vec![31, 154, 10], "RFC 7541 C.1.2");
    }
}
