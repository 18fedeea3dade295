//! Watch streams served on the connection's task, like the KV write calls
//! (`grpc`): the stream's session, its request body and its response stream
//! are polled together by one future, so an event reaches the socket with
//! one wake-up of the connection task, and the events that arrived for all
//! the streams of a connection since its last write leave in one write.
//!
//! Through tonic, an event crossed three tasks (the watcher's, the response
//! encoder's, the body writer's) before the connection's. In a session with
//! a slow reader, deliveries are taken only while what waits for the peer's
//! flow control is small; past that the hub's per-watcher allowance fills
//! and the watchers fall back to history, as through tonic.
//!
//! As etcd does, the watchers of a stream outlive the end of its requests:
//! they last until the client resets the stream or closes the connection.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use proto::etcdserverpb::{WatchRequest, WatchResponse};
use store::Member;
use tonic::Status;

use crate::encoded_range::check_request_encoding;
use crate::grpc::{MESSAGE_PREFIX_LEN, check_prefix, encode_into, grpc_response};
use crate::watch::Session;

/// Encoded responses waiting for the peer's flow control beyond which no
/// more deliveries are taken.
const PENDING_LIMIT: usize = 64 * 1024;
/// Deliveries taken in one poll before the connection task gets its turn
/// (tokio's budget per task usually ends the turn sooner).
const DELIVERIES_PER_POLL: usize = 256;

/// Serves one Watch call until the client resets it or the connection ends
/// (the future is dropped then, and the session's watchers with it).
pub(crate) async fn serve(
    member: Arc<Member>,
    group: u64,
    max_message: usize,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    if let Err(status) = check_request_encoding(request.headers()) {
        let _ = respond.send_response(status.into_http::<()>(), true);
        return;
    }
    let Ok(responses) = respond.send_response(grpc_response(), false) else {
        return;
    };
    let mut session = Session::new(member, group);
    session.credentials = crate::auth::Credentials::from_parts(
        request.headers(),
        request.extensions().get::<Arc<crate::conn::ConnInfo>>(),
    );
    let mut call = WatchCall {
        session,
        requests: request.into_body(),
        requests_done: false,
        input: BytesMut::new(),
        max_message,
        responses,
        pending: BytesMut::new(),
        out: Vec::new(),
    };
    if let Some(status) = poll_fn(|context| call.poll_run(context)).await {
        // What was answered before the failure leaves first.
        let answered = call.pending.split().freeze();
        if !answered.is_empty() && call.responses.send_data(answered, false).is_err() {
            return;
        }
        let (mut parts, ()) = status.into_http::<()>().into_parts();
        parts.headers.remove(http::header::CONTENT_TYPE);
        let _ = call.responses.send_trailers(parts.headers);
    }
}

struct WatchCall {
    session: Session,
    requests: h2::RecvStream,
    requests_done: bool,
    /// Request bytes not yet decoded (at most a message and a prefix).
    input: BytesMut,
    max_message: usize,
    responses: h2::SendStream<Bytes>,
    /// Encoded responses the peer's flow control has not taken yet.
    pending: BytesMut,
    /// Responses made and not yet encoded.
    out: Vec<WatchResponse>,
}

impl WatchCall {
    /// Runs until the stream is gone (`None`) or fails with a status.
    ///
    /// The stream's send side keeps one waker (for a reset and for flow
    /// control capacity), registered at the end of each poll: h2 wakes it
    /// when a `reserve_capacity` below is granted at once, and such a wake
    /// during the poll would count as the call waking itself, after two of
    /// which `FuturesUnordered` ends its turn and the connection writes
    /// what two streams made instead of all of them.
    fn poll_run(&mut self, context: &mut Context<'_>) -> Poll<Option<Status>> {
        let mut quiet = Context::from_waker(std::task::Waker::noop());
        if self.responses.poll_reset(&mut quiet).is_ready() {
            return Poll::Ready(None);
        }
        let mut deliveries = 0;
        loop {
            let mut progressed = false;
            // Requests are read only while their answers can leave: a client
            // that sends but does not read is held back by flow control.
            if !self.requests_done && self.pending.len() < PENDING_LIMIT {
                match self.requests.poll_data(context) {
                    Poll::Ready(Some(Ok(chunk))) => {
                        let _ = self.requests.flow_control().release_capacity(chunk.len());
                        self.input.extend_from_slice(&chunk);
                        if let Err(status) = self.handle_requests() {
                            return Poll::Ready(Some(status));
                        }
                        progressed = true;
                    }
                    Poll::Ready(Some(Err(_))) => return Poll::Ready(None),
                    Poll::Ready(None) => {
                        self.requests_done = true;
                        if !self.input.is_empty() {
                            return Poll::Ready(Some(Status::internal(
                                "Unexpected EOF decoding stream.",
                            )));
                        }
                    }
                    Poll::Pending => {}
                }
            }
            while self.pending.len() < PENDING_LIMIT && deliveries < DELIVERIES_PER_POLL {
                let Poll::Ready(taken) = self.session.poll_deliveries(
                    context,
                    &mut self.out,
                    DELIVERIES_PER_POLL - deliveries,
                    PENDING_LIMIT - self.pending.len(),
                ) else {
                    break;
                };
                deliveries += taken;
                progressed = true;
                if let Err(status) = self.encode_out() {
                    return Poll::Ready(Some(status));
                }
            }
            match self.flush(&mut quiet) {
                Ok(sent) => progressed |= sent,
                Err(()) => return Poll::Ready(None),
            }
            if deliveries >= DELIVERIES_PER_POLL {
                // More may be waiting: come back after the connection's turn.
                context.waker().wake_by_ref();
                break;
            }
            if !progressed {
                break;
            }
        }
        if self.responses.poll_reset(context).is_ready() {
            return Poll::Ready(None);
        }
        // Capacity granted since `flush` looked, by a call on another thread
        // giving back its own (a tonic-served call reset or finished), woke
        // the no-op waker: nothing else would wake this call for it.
        if !self.pending.is_empty() && self.responses.capacity() > 0 {
            context.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// Handles every whole request message received so far; the answers to
    /// the requests before a bad one still leave.
    fn handle_requests(&mut self) -> Result<(), Status> {
        let handled = self.decode_requests();
        self.encode_out()?;
        handled
    }

    fn decode_requests(&mut self) -> Result<(), Status> {
        while self.input.len() >= MESSAGE_PREFIX_LEN {
            let length = check_prefix(&self.input, self.max_message)?;
            if self.input.len() < MESSAGE_PREFIX_LEN + length {
                break;
            }
            let message = self.input.split_to(MESSAGE_PREFIX_LEN + length);
            let request = <WatchRequest as prost::Message>::decode(&message[MESSAGE_PREFIX_LEN..])
                .map_err(|error| Status::internal(error.to_string()))?;
            self.session.handle(request, &mut self.out);
        }
        Ok(())
    }

    /// Appends the responses made so far to what waits for the peer.
    fn encode_out(&mut self) -> Result<(), Status> {
        for response in self.out.drain(..) {
            encode_into(&response, &mut self.pending)?;
        }
        Ok(())
    }

    /// Hands the peer as much of `pending` as its flow control takes; true
    /// if anything was handed. Err if the stream is gone. `quiet` is a
    /// context whose waker does nothing: the waker that hears of more
    /// capacity is registered at the end of `poll_run`.
    fn flush(&mut self, quiet: &mut Context<'_>) -> Result<bool, ()> {
        let mut sent = false;
        while !self.pending.is_empty() {
            self.responses.reserve_capacity(self.pending.len());
            let capacity = self.responses.capacity();
            if capacity == 0 {
                // Only to learn whether the stream is gone.
                if let Poll::Ready(Some(Err(_)) | None) = self.responses.poll_capacity(quiet) {
                    return Err(());
                }
                break;
            }
            let piece = self
                .pending
                .split_to(capacity.min(self.pending.len()))
                .freeze();
            self.responses.send_data(piece, false).map_err(|_| ())?;
            sent = true;
        }
        Ok(sent)
    }
}
