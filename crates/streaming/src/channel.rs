//! Kubernetes' remote-command WebSocket protocols: which subprotocol a
//! client and the server agree on, and the framing of each message — one
//! leading channel byte (an ASCII digit in the base64 variants), then the
//! data. Channels: 0 stdin, 1 stdout, 2 stderr, 3 error (the final
//! `Status`), 4 resize; `v5.channel.k8s.io` adds 255, whose one data byte
//! names a channel the client has closed (its stdin's end).

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::StreamError;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// A subprotocol the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `v5.channel.k8s.io`: v4 and the close message (kubectl 1.30+).
    V5,
    /// `v4.channel.k8s.io`: the error channel carries a JSON `Status`;
    /// resize on channel 4 (the Python client).
    V4,
    /// `v4.base64.channel.k8s.io`: v4 in text messages.
    V4Base64,
    /// `channel.k8s.io` (or no subprotocol): the error channel carries a
    /// failure's text only; no resize.
    V1,
    /// `base64.channel.k8s.io`: v1 in text messages.
    V1Base64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a message without a channel byte")]
    Empty,
    #[error("channel {0:?} is not a channel")]
    BadChannel(u8),
    #[error("the message's data is not valid base64")]
    Base64,
    #[error("the resize message is not a terminal size: {0}")]
    Resize(String),
}

/// A terminal's size, as the client sends it on channel 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// One message from the client, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    Stdin(Bytes),
    Resize(TerminalSize),
    /// The client closed the channel (v5): for stdin, its end of input.
    CloseChannel(u8),
    /// Data on a channel the server does not read (stdout, a ping).
    Ignored,
}

impl Protocol {
    const ALL: [Protocol; 5] = [
        Protocol::V5,
        Protocol::V4,
        Protocol::V4Base64,
        Protocol::V1,
        Protocol::V1Base64,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::V5 => "v5.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
            Protocol::V4Base64 => "v4.base64.channel.k8s.io",
            Protocol::V1 => "channel.k8s.io",
            Protocol::V1Base64 => "base64.channel.k8s.io",
        }
    }

    /// The first of the client's subprotocols (the `Sec-WebSocket-Protocol`
    /// values, in its order) the server speaks, as kubelet picks.
    pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<Protocol> {
        offered
            .into_iter()
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .find_map(|name| {
                Protocol::ALL
                    .into_iter()
                    .find(|protocol| protocol.name() == name)
            })
    }

    pub fn is_base64(self) -> bool {
        matches!(self, Protocol::V4Base64 | Protocol::V1Base64)
    }

    /// Whether the error channel carries a JSON `Status` (v4 and later).
    fn sends_status(self) -> bool {
        matches!(self, Protocol::V5 | Protocol::V4 | Protocol::V4Base64)
    }

    /// The names the server lists when nothing the client offered fits.
    pub fn supported() -> Vec<&'static str> {
        Protocol::ALL
            .iter()
            .map(|protocol| protocol.name())
            .collect()
    }

    /// A message carrying `data` on `channel`.
    pub fn encode(self, channel: u8, data: &[u8]) -> Message {
        if self.is_base64() {
            let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
            text.push(char::from(b'0' + channel));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
            return Message::text(text);
        }
        let mut frame = Vec::with_capacity(1 + data.len());
        frame.push(channel);
        frame.extend_from_slice(data);
        Message::binary(frame)
    }

    /// Reads one message from the client.
    pub fn decode(self, message: &Message) -> Result<ClientMessage, FrameError> {
        let (channel, data): (u8, Bytes) = match message {
            // Text messages count as binary ones: the Python client sends
            // stdin given as a string in text messages, channel byte first.
            Message::Binary(bytes) if !self.is_base64() => {
                let (&channel, _) = bytes.split_first().ok_or(FrameError::Empty)?;
                (channel, bytes.slice(1..))
            }
            Message::Text(text) if !self.is_base64() => {
                let bytes = Bytes::copy_from_slice(text.as_bytes());
                let (&channel, _) = bytes.split_first().ok_or(FrameError::Empty)?;
                (channel, bytes.slice(1..))
            }
            Message::Text(text) if self.is_base64() => {
                let text = text.as_bytes();
                let (&digit, rest) = text.split_first().ok_or(FrameError::Empty)?;
                let channel = digit
                    .checked_sub(b'0')
                    .filter(|channel| *channel <= RESIZE)
                    .ok_or(FrameError::BadChannel(digit))?;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .map_err(|_| FrameError::Base64)?;
                (channel, Bytes::from(data))
            }
            _ => return Ok(ClientMessage::Ignored),
        };
        match channel {
            STDIN => Ok(ClientMessage::Stdin(data)),
            RESIZE if self != Protocol::V1 && self != Protocol::V1Base64 => {
                parse_resize(&data).map(ClientMessage::Resize)
            }
            CLOSE if self == Protocol::V5 => match data.first() {
                Some(&closed) => Ok(ClientMessage::CloseChannel(closed)),
                None => Err(FrameError::Empty),
            },
            STDOUT | STDERR | ERROR | RESIZE => Ok(ClientMessage::Ignored),
            other => Err(FrameError::BadChannel(other)),
        }
    }

    /// The message on the error channel that ends a session, if the
    /// protocol sends one for `outcome`: a `Status` of Success, of
    /// NonZeroExitCode with the code as kubectl reads it, or of the error.
    pub fn exit_message(self, outcome: &Result<i32, StreamError>) -> Option<Message> {
        let status = exit_status(outcome);
        if self.sends_status() {
            let text = serde_json::to_vec(&status).unwrap_or_default();
            return Some(self.encode(ERROR, &text));
        }
        match outcome {
            Ok(0) => None,
            _ => {
                let message = status["message"].as_str().unwrap_or("").to_string();
                Some(self.encode(ERROR, message.as_bytes()))
            }
        }
    }
}

/// The `Status` kubelet writes on the error channel for an outcome.
pub fn exit_status(outcome: &Result<i32, StreamError>) -> Value {
    match outcome {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(error) => {
            let (code, reason) = error.code_and_reason();
            json!({
                "metadata": {},
                "status": "Failure",
                "message": error.to_string(),
                "reason": reason,
                "code": code,
            })
        }
    }
}

fn parse_resize(data: &[u8]) -> Result<TerminalSize, FrameError> {
    let value: Value =
        serde_json::from_slice(data).map_err(|error| FrameError::Resize(error.to_string()))?;
    let dimension = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_u64)
            .and_then(|number| u16::try_from(number).ok())
            .ok_or_else(|| FrameError::Resize(format!("no {name}")))
    };
    Ok(TerminalSize {
        width: dimension("Width")?,
        height: dimension("Height")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_takes_the_clients_first_known_protocol() {
        assert_eq!(
            Protocol::negotiate(["v5.channel.k8s.io"]),
            Some(Protocol::V5)
        );
        // The Python client offers both in one header.
        assert_eq!(
            Protocol::negotiate(["v6.channel.k8s.io, v4.channel.k8s.io,v5.channel.k8s.io"]),
            Some(Protocol::V4)
        );
        assert_eq!(
            Protocol::negotiate(["base64.channel.k8s.io"]),
            Some(Protocol::V1Base64)
        );
        assert_eq!(Protocol::negotiate(["SPDY/3.1", "v2.channel.k8s.io"]), None);
    }

    #[test]
    fn binary_frames_lead_with_the_channel_byte() {
        let message = Protocol::V5.encode(STDOUT, b"hi\n");
        assert_eq!(message, Message::binary(b"\x01hi\n".to_vec()));
        let stdin = Message::binary(b"\x00input".to_vec());
        assert_eq!(
            Protocol::V4.decode(&stdin),
            Ok(ClientMessage::Stdin(Bytes::from_static(b"input")))
        );
        assert_eq!(
            Protocol::V4.decode(&Message::text("\u{0}typed\n")),
            Ok(ClientMessage::Stdin(Bytes::from_static(b"typed\n")))
        );
        assert_eq!(
            Protocol::V4.decode(&Message::binary(Vec::new())),
            Err(FrameError::Empty)
        );
        assert_eq!(
            Protocol::V4.decode(&Message::binary(vec![9, 1])),
            Err(FrameError::BadChannel(9))
        );
    }

    #[test]
    fn base64_frames_lead_with_a_digit() {
        let message = Protocol::V1Base64.encode(STDERR, b"foo\n");
        assert_eq!(message, Message::text("2Zm9vCg=="));
        assert_eq!(
            Protocol::V1Base64.decode(&Message::text("0Zm9vCg==")),
            Ok(ClientMessage::Stdin(Bytes::from_static(b"foo\n")))
        );
        assert_eq!(
            Protocol::V1Base64.decode(&Message::text("0!!")),
            Err(FrameError::Base64)
        );
    }

    #[test]
    fn resize_and_close_depend_on_the_version() {
        let resize = Message::binary(b"\x04{\"Width\":120,\"Height\":40}".to_vec());
        assert_eq!(
            Protocol::V5.decode(&resize),
            Ok(ClientMessage::Resize(TerminalSize {
                width: 120,
                height: 40
            }))
        );
        assert_eq!(Protocol::V1.decode(&resize), Ok(ClientMessage::Ignored));
        assert!(matches!(
            Protocol::V4.decode(&Message::binary(b"\x04{\"Width\":-1}".to_vec())),
            Err(FrameError::Resize(_))
        ));
        let close = Message::binary(vec![CLOSE, STDIN]);
        assert_eq!(
            Protocol::V5.decode(&close),
            Ok(ClientMessage::CloseChannel(STDIN))
        );
        assert_eq!(
            Protocol::V4.decode(&close),
            Err(FrameError::BadChannel(CLOSE))
        );
    }

    #[test]
    fn exit_statuses_are_what_kubectl_reads() {
        let decode = |message: Message| -> Value {
            let Message::Binary(bytes) = message else {
                panic!("not binary")
            };
            assert_eq!(bytes[0], ERROR);
            serde_json::from_slice(&bytes[1..]).expect("a JSON status")
        };
        let success = decode(Protocol::V5.exit_message(&Ok(0)).expect("a status"));
        assert_eq!(success, json!({"metadata": {}, "status": "Success"}));
        let failure = decode(Protocol::V4.exit_message(&Ok(3)).expect("a status"));
        assert_eq!(failure["reason"], "NonZeroExitCode");
        assert_eq!(
            failure["details"]["causes"],
            json!([{"reason": "ExitCode", "message": "3"}])
        );
        // v1 says nothing on success and a failure's text otherwise.
        assert_eq!(Protocol::V1.exit_message(&Ok(0)), None);
        let error = Err(StreamError::Internal("runtime gone".into()));
        assert_eq!(
            Protocol::V1.exit_message(&error),
            Some(Message::binary(b"\x03runtime gone".to_vec()))
        );
    }
}
