//! Attaching to a pod container's stdio (`kubectl attach`, `kubectl run
//! -it`): the container's monitor, which holds the app's stdin (a pipe) or
//! terminal, serves a unix socket in the container's directory; every
//! client connected gets the output as it comes and may send input, close
//! stdin and resize the terminal. The monitor outlives the agent, so a
//! restarted agent attaches again.
//!
//! Frames both ways are `[kind: u8][length: u32, big-endian][payload]`.
//! Client to monitor: [`FRAME_STDIN`] data, [`FRAME_CLOSE_STDIN`],
//! [`FRAME_RESIZE`] (columns, rows: u16 each, big-endian). Monitor to
//! client: [`FRAME_STDOUT`] or [`FRAME_STDERR`] data (a terminal's output is
//! stdout).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use crate::pod::log::Stream;
use crate::pod::{ContainerId, PodError, PodRuntime};

/// The socket's name in the container's directory.
pub const SOCKET_NAME: &str = "attach.sock";

pub const FRAME_STDIN: u8 = 0;
pub const FRAME_CLOSE_STDIN: u8 = 1;
pub const FRAME_RESIZE: u8 = 2;
pub const FRAME_STDOUT: u8 = 3;
pub const FRAME_STDERR: u8 = 4;
/// A frame's payload is at most this long (a larger one ends the client).
const MAX_FRAME_BYTES: u32 = 1 << 20;

fn write_frame(writer: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(payload.len() + 5);
    frame.push(kind);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    writer.write_all(&frame)
}

/// The next frame, or `None` at a clean end of the stream.
fn read_frame(reader: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut header = [0u8; 5];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if length > MAX_FRAME_BYTES {
        return Err(io::Error::other(format!(
            "an attach frame of {length} bytes"
        )));
    }
    let mut payload = vec![0u8; length as usize];
    reader.read_exact(&mut payload)?;
    Ok(Some((header[0], payload)))
}

/// The monitor's side: the clients and the app's input.
pub(crate) struct Hub {
    clients: Mutex<Vec<UnixStream>>,
    stdin: Mutex<Option<File>>,
    terminal: Option<File>,
    /// The first client to leave closes stdin.
    stdin_once: bool,
}

impl Hub {
    /// Listens on `path` (mode 0600: root's only) in a thread of its own,
    /// for as long as the monitor lives.
    pub(crate) fn serve(
        path: &Path,
        stdin: Option<File>,
        terminal: Option<File>,
        stdin_once: bool,
    ) -> anyhow::Result<Arc<Hub>> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let hub = Arc::new(Hub {
            clients: Mutex::new(Vec::new()),
            stdin: Mutex::new(stdin),
            terminal,
            stdin_once,
        });
        let serving = Arc::clone(&hub);
        std::thread::Builder::new()
            .name("attach-listener".into())
            .spawn(move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { continue };
                    // A client that stops reading is dropped rather than
                    // let it stall the app's output.
                    let _ = client.set_write_timeout(Some(Duration::from_secs(5)));
                    let Ok(reader) = client.try_clone() else {
                        continue;
                    };
                    if let Ok(mut clients) = serving.clients.lock() {
                        clients.push(client);
                    }
                    let hub = Arc::clone(&serving);
                    let _ = std::thread::Builder::new()
                        .name("attach-client".into())
                        .spawn(move || hub.take_input(reader));
                }
            })?;
        Ok(hub)
    }

    /// Sends output to every client; those that fail are dropped.
    pub(crate) fn broadcast(&self, stream: Stream, data: &[u8]) {
        let kind = match stream {
            Stream::Stdout => FRAME_STDOUT,
            Stream::Stderr => FRAME_STDERR,
        };
        if let Ok(mut clients) = self.clients.lock() {
            clients.retain_mut(|client| write_frame(client, kind, data).is_ok());
        }
    }

    fn take_input(&self, mut reader: UnixStream) {
        while let Ok(Some((kind, payload))) = read_frame(&mut reader) {
            match kind {
                FRAME_STDIN => {
                    if let Some(terminal) = &self.terminal {
                        let mut terminal = terminal;
                        let _ = terminal.write_all(&payload);
                    } else if let Ok(mut stdin) = self.stdin.lock()
                        && let Some(pipe) = stdin.as_mut()
                        && pipe.write_all(&payload).is_err()
                    {
                        *stdin = None;
                    }
                }
                FRAME_CLOSE_STDIN => {
                    if let Ok(mut stdin) = self.stdin.lock() {
                        *stdin = None;
                    }
                }
                FRAME_RESIZE if payload.len() == 4 => {
                    if let Some(terminal) = &self.terminal {
                        let _ = rustix::termios::tcsetwinsize(
                            terminal,
                            rustix::termios::Winsize {
                                ws_col: u16::from_be_bytes([payload[0], payload[1]]),
                                ws_row: u16::from_be_bytes([payload[2], payload[3]]),
                                ws_xpixel: 0,
                                ws_ypixel: 0,
                            },
                        );
                    }
                }
                _ => {}
            }
        }
        if self.stdin_once
            && let Ok(mut stdin) = self.stdin.lock()
        {
            *stdin = None;
        }
    }
}

/// A connection to a running container's stdio. Clone it with
/// [`try_clone`](Self::try_clone) to read and write from two threads.
#[derive(Debug)]
pub struct AttachSession {
    socket: UnixStream,
}

impl AttachSession {
    pub fn write_stdin(&mut self, data: &[u8]) -> Result<(), PodError> {
        self.send(FRAME_STDIN, data)
    }

    /// The app reads end of file (without a terminal).
    pub fn close_stdin(&mut self) -> Result<(), PodError> {
        self.send(FRAME_CLOSE_STDIN, &[])
    }

    /// Tells the terminal its new size (the app gets SIGWINCH).
    pub fn resize(&mut self, columns: u16, rows: u16) -> Result<(), PodError> {
        let mut payload = columns.to_be_bytes().to_vec();
        payload.extend_from_slice(&rows.to_be_bytes());
        self.send(FRAME_RESIZE, &payload)
    }

    /// The next piece of output, or `None` once the container has exited.
    pub fn read_output(&mut self) -> Result<Option<(Stream, Vec<u8>)>, PodError> {
        loop {
            let frame = read_frame(&mut self.socket).context("cannot read from the container")?;
            return Ok(match frame {
                None => None,
                Some((FRAME_STDOUT, data)) => Some((Stream::Stdout, data)),
                Some((FRAME_STDERR, data)) => Some((Stream::Stderr, data)),
                // Kinds this side does not know are skipped.
                Some(_) => continue,
            });
        }
    }

    pub fn try_clone(&self) -> Result<AttachSession, PodError> {
        Ok(AttachSession {
            socket: self
                .socket
                .try_clone()
                .context("cannot share the attach connection")?,
        })
    }

    fn send(&mut self, kind: u8, payload: &[u8]) -> Result<(), PodError> {
        write_frame(&mut self.socket, kind, payload)
            .context("cannot write to the container")
            .map_err(Into::into)
    }
}

impl PodRuntime {
    /// Attaches to the running container's stdio: output from now on, and
    /// input when the container has `stdin` or `tty`.
    pub fn attach(&self, id: &ContainerId) -> Result<AttachSession, PodError> {
        let state = self.load_container(id)?;
        if !state.is_running() {
            return Err(PodError::ContainerNotRunning { id: id.clone() });
        }
        let path = self.containers()?.dir(&state.id).join(SOCKET_NAME);
        let socket = UnixStream::connect(&path)
            .with_context(|| format!("cannot attach to container {id} at {}", path.display()))?;
        Ok(AttachSession { socket })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, FRAME_STDOUT, b"hello").unwrap();
        write_frame(&mut buffer, FRAME_CLOSE_STDIN, b"").unwrap();
        let mut reader = &buffer[..];
        assert_eq!(
            read_frame(&mut reader).unwrap(),
            Some((FRAME_STDOUT, b"hello".to_vec()))
        );
        assert_eq!(
            read_frame(&mut reader).unwrap(),
            Some((FRAME_CLOSE_STDIN, Vec::new()))
        );
        assert_eq!(read_frame(&mut reader).unwrap(), None);
        let huge = [FRAME_STDIN, 0xff, 0xff, 0xff, 0xff];
        assert!(read_frame(&mut &huge[..]).is_err());
    }
}
