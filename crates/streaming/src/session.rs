//! One remote-command session: a WebSocket joined to a process. The
//! process's stdout and stderr go out on channels 1 and 2, the client's
//! stdin and terminal sizes come in on 0 and 4; when the process has exited
//! and its output is sent, its exit status goes out on channel 3 and the
//! socket closes. A client that goes away ends the session, and dropping
//! the process tells the backend.

use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::channel::{self, ClientMessage, Protocol};
use crate::{Process, ProcessOutput, StreamOptions};

/// The most a single output message carries.
const MESSAGE_BYTES: usize = 32 * 1024;

/// Runs a session to its end.
pub async fn run<S>(
    socket: WebSocketStream<S>,
    protocol: Protocol,
    options: StreamOptions,
    process: Process,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut incoming) = socket.split();
    let (outgoing, mut to_send) = tokio::sync::mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        while let Some(message) = to_send.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
        // A normal closure: client-go takes any other (even one without a
        // code) as the streams failing.
        let normal = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(normal))).await;
        let _ = sink.close().await;
    });

    let Process {
        stdin,
        stdout,
        stderr,
        resize,
        exit,
    } = process;

    // kubelet's first message, empty, on the lowest channel the client
    // reads: it tells the client the stream is set up.
    let first_channel = if options.stdout {
        Some(channel::STDOUT)
    } else if options.stderr {
        Some(channel::STDERR)
    } else {
        None
    };
    if let Some(first_channel) = first_channel {
        let _ = outgoing.send(protocol.encode(first_channel, &[])).await;
    }

    let pump = |output: Option<ProcessOutput>, channel: u8| {
        let outgoing = outgoing.clone();
        async move {
            let Some(mut output) = output else { return };
            let mut buffer = vec![0u8; MESSAGE_BYTES];
            loop {
                match output.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => {
                        if outgoing
                            .send(protocol.encode(channel, &buffer[..read]))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }
    };
    let stdout_done = pump(stdout, channel::STDOUT);
    let stderr_done = pump(stderr, channel::STDERR);
    let finished = async {
        let (_, _, outcome) = tokio::join!(stdout_done, stderr_done, exit);
        outcome
    };

    // The client's side: stdin and resizes, until it closes the socket.
    let client = async move {
        let mut stdin = stdin;
        while let Some(Ok(message)) = incoming.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
            match protocol.decode(&message) {
                Ok(ClientMessage::Stdin(data)) => {
                    if let Some(input) = stdin.as_mut()
                        && (input.write_all(&data).await.is_err() || input.flush().await.is_err())
                    {
                        stdin = None;
                    }
                }
                Ok(ClientMessage::Resize(size)) => {
                    if let Some(resize) = &resize {
                        let _ = resize.send(size);
                    }
                }
                Ok(ClientMessage::CloseChannel(channel::STDIN)) => {
                    if let Some(mut input) = stdin.take() {
                        let _ = input.shutdown().await;
                    }
                }
                Ok(ClientMessage::CloseChannel(_) | ClientMessage::Ignored) => {}
                Err(error) => tracing::debug!(%error, "ignoring a bad remote-command message"),
            }
        }
    };

    tokio::pin!(finished, client);
    let outcome = tokio::select! {
        outcome = &mut finished => outcome,
        () = &mut client => {
            // The client went away: the process is dropped, and the backend
            // ends it.
            writer.abort();
            return;
        }
    };
    if let Some(message) = protocol.exit_message(&outcome) {
        let _ = outgoing.send(message).await;
    }
    drop(outgoing);
    // Keep reading the client until the close is sent, so pings are
    // answered; then the connection ends.
    tokio::select! {
        _ = writer => {}
        () = &mut client => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::{SinkExt as _, StreamExt as _};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;
    use crate::TerminalSize;

    /// A process made of pipes the test holds the other ends of.
    struct FakeProcess {
        stdin: tokio::io::DuplexStream,
        stdout: tokio::io::DuplexStream,
        stderr: tokio::io::DuplexStream,
        sizes: tokio::sync::mpsc::UnboundedReceiver<TerminalSize>,
        exit: tokio::sync::oneshot::Sender<i32>,
    }

    fn fake_process() -> (Process, FakeProcess) {
        let (stdin_ours, stdin_theirs) = tokio::io::duplex(1024);
        let (stdout_ours, stdout_theirs) = tokio::io::duplex(1024);
        let (stderr_ours, stderr_theirs) = tokio::io::duplex(1024);
        let (resize, sizes) = tokio::sync::mpsc::unbounded_channel();
        let (exit, exited) = tokio::sync::oneshot::channel::<i32>();
        let process = Process {
            stdin: Some(Box::pin(stdin_ours)),
            stdout: Some(Box::pin(stdout_ours)),
            stderr: Some(Box::pin(stderr_ours)),
            resize: Some(resize),
            exit: Box::pin(async move {
                exited
                    .await
                    .map_err(|_| crate::StreamError::Internal("no exit code".into()))
            }),
        };
        let fake = FakeProcess {
            stdin: stdin_theirs,
            stdout: stdout_theirs,
            stderr: stderr_theirs,
            sizes,
            exit,
        };
        (process, fake)
    }

    async fn next_data(client: &mut WebSocketStream<tokio::io::DuplexStream>) -> Message {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(5), client.next())
                .await
                .expect("a message in time")
                .expect("the socket is open")
                .expect("a valid message");
            if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
                return message;
            }
        }
    }

    #[tokio::test]
    async fn a_v5_session_carries_streams_resizes_close_and_the_exit_status() {
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let (process, mut fake) = fake_process();
        let options = StreamOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        };
        let server = tokio::spawn(async move {
            let socket = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
            run(socket, Protocol::V5, options, process).await;
        });
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;

        // The empty first message on stdout says the streams are ready.
        assert_eq!(next_data(&mut client).await, Message::binary(vec![1u8]));

        fake.stdout.write_all(b"out").await.expect("write stdout");
        assert_eq!(
            next_data(&mut client).await,
            Message::binary(b"\x01out".to_vec())
        );
        fake.stderr.write_all(b"err").await.expect("write stderr");
        assert_eq!(
            next_data(&mut client).await,
            Message::binary(b"\x02err".to_vec())
        );

        client
            .send(Message::binary(b"\x00typed".to_vec()))
            .await
            .expect("send stdin");
        client
            .send(Message::binary(
                b"\x04{\"Width\":100,\"Height\":30}".to_vec(),
            ))
            .await
            .expect("send a resize");
        client
            .send(Message::binary(vec![channel::CLOSE, channel::STDIN]))
            .await
            .expect("close stdin");
        let mut input = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), fake.stdin.read_to_end(&mut input))
            .await
            .expect("stdin ends in time")
            .expect("read stdin");
        assert_eq!(input, b"typed");
        assert_eq!(
            fake.sizes.recv().await,
            Some(TerminalSize {
                width: 100,
                height: 30
            })
        );

        drop(fake.stdout);
        drop(fake.stderr);
        fake.exit.send(7).expect("the session waits for the exit");
        let Message::Binary(status) = next_data(&mut client).await else {
            panic!("the status is a binary message");
        };
        assert_eq!(status[0], channel::ERROR);
        let status: serde_json::Value =
            serde_json::from_slice(&status[1..]).expect("a JSON status");
        assert_eq!(status["details"]["causes"][0]["message"], "7");
        let Message::Close(Some(close)) = next_data(&mut client).await else {
            panic!("the session closes the socket");
        };
        assert_eq!(close.code, CloseCode::Normal);
        let _ = client.close(None).await;
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the session ends")
            .expect("the session does not panic");
    }

    #[tokio::test]
    async fn a_client_that_goes_away_drops_the_process() {
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let (process, fake) = fake_process();
        let options = StreamOptions {
            stdout: true,
            ..StreamOptions::default()
        };
        let server = tokio::spawn(async move {
            let socket = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
            run(socket, Protocol::V4, options, process).await;
        });
        drop(client_io);
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the session ends without its client")
            .expect("the session does not panic");
        // The session dropped the process: its exit future is gone.
        assert!(fake.exit.is_closed());
    }
}
