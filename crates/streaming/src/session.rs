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
