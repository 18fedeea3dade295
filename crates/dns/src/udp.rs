//! UDP serving: one thread per socket, sockets sharing the port through
//! `SO_REUSEPORT`, queries taken and answers sent in batches
//! (`recvmmsg`/`sendmmsg`).
//!
//! Why not tokio tasks on one socket (what this replaced): under load a
//! query cost two system calls plus the runtime's readiness bookkeeping,
//! and all workers contended for one socket's queue; Knot DNS, the
//! reference of BENCHMARKS.md, answered 1.7× as many queries on the same
//! core. A thread that blocks in `recvmmsg` takes every query queued on
//! its socket in one call, answers them from its own answer cache without
//! a lock, and sends all answers in one call; the kernel spreads clients
//! over the sockets by their address and port. Queries that must be
//! forwarded upstream leave the thread: they become tasks on the tokio
//! runtime, which answer from a clone of the thread's socket.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, MsgFlags, MultiHeaders, SockFlag, SockType, SockaddrIn, SockaddrIn6,
    SockaddrStorage, recvmmsg, sendmmsg, setsockopt, socket, sockopt,
};
use tokio::sync::Semaphore;

use crate::fastpath::{self, AnswerCache};
use crate::resolve::SharedZones;
use crate::server::{Handled, ServeError, forward_udp, handle_packet, server_failure};

/// The most queries one system call takes (and answers one sends).
const BATCH: usize = 32;
/// The largest query read: EDNS payloads above this are not asked of us.
const MAX_QUERY: usize = 4096;
/// How often a thread blocked on its socket looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

/// Binds `count` UDP sockets to `address`, sharing the port (the first
/// one picks it when `address` has port 0).
pub fn bind(address: SocketAddr, count: usize) -> Result<Vec<UdpSocket>, ServeError> {
    let mut sockets: Vec<UdpSocket> = Vec::with_capacity(count.max(1));
    let mut bound = address;
    for _ in 0..count.max(1) {
        let socket = bind_one(bound).map_err(|source| ServeError::Bind {
            address: bound,
            protocol: "udp",
            source,
        })?;
        if bound.port() == 0 {
            bound = socket.local_addr().unwrap_or(bound);
        }
        sockets.push(socket);
    }
    Ok(sockets)
}

fn bind_one(address: SocketAddr) -> std::io::Result<UdpSocket> {
    let family = if address.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    match address {
        SocketAddr::V4(v4) => nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrIn::from(v4))?,
        SocketAddr::V6(v6) => nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))?,
    }
    let socket = UdpSocket::from(fd);
    socket.set_read_timeout(Some(STOP_POLL))?;
    Ok(socket)
}

/// What every UDP thread shares.
pub struct Shared {
    pub zones: SharedZones,
    pub upstreams: Arc<Vec<SocketAddr>>,
    pub forwards: Arc<Semaphore>,
    pub runtime: tokio::runtime::Handle,
    pub stop: Arc<AtomicBool>,
}

/// Serves `socket` until `shared.stop` is set.
pub fn serve(socket: UdpSocket, shared: Arc<Shared>) {
    let fd = socket.as_raw_fd();
    let mut buffers = vec![[0u8; MAX_QUERY]; BATCH];
    let mut received: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(BATCH);
    let mut receive_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut replies: Vec<Vec<u8>> = std::iter::repeat_with(|| Vec::with_capacity(512))
        .take(BATCH)
        .collect();
    let mut reply_addresses: Vec<Option<SockaddrStorage>> = Vec::with_capacity(BATCH);
    let mut cache = AnswerCache::default();
    let mut key = Vec::with_capacity(300);
    while !shared.stop.load(Ordering::Relaxed) {
        received.clear();
        {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers
                .iter_mut()
                .map(|buffer| [IoSliceMut::new(buffer)])
                .collect();
            // Blocks for the first query (up to STOP_POLL), then takes
            // whatever else is already queued.
            match recvmmsg(
                fd,
                &mut receive_headers,
                slices.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(messages) => {
                    for message in messages {
                        if let Some(address) = message.address {
                            received.push((message.bytes, address));
                        }
                    }
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                Err(error) => {
                    // ICMP errors from earlier sends surface here: they
                    // concern one peer, not the socket.
                    tracing::debug!(%error, "dns: udp receive failed");
                    continue;
                }
            }
        }
        let zones = shared.zones.current();
        cache.follow(&zones);
        reply_addresses.clear();
        for (index, (length, address)) in received.iter().enumerate() {
            let packet = &buffers[index][..(*length).min(MAX_QUERY)];
            let reply = &mut replies[reply_addresses.len()];
            let plain = fastpath::read_query(packet, true, &mut key);
            if let Some(query) = &plain
                && cache.answer(&key, query, packet, reply)
            {
                reply_addresses.push(Some(*address));
                continue;
            }
            match handle_packet(&zones, packet, true) {
                Handled::Reply(bytes) => {
                    if let Some(query) = &plain {
                        cache.keep(&key, &bytes, query);
                    }
                    *reply = bytes;
                    reply_addresses.push(Some(*address));
                }
                Handled::Drop => {}
                Handled::Forward(request) => forward(&socket, &shared, packet, *address, request),
            }
        }
        if reply_addresses.is_empty() {
            continue;
        }
        let slices: Vec<[IoSlice<'_>; 1]> = replies[..reply_addresses.len()]
            .iter()
            .map(|reply| [IoSlice::new(reply)])
            .collect();
        if let Err(error) = sendmmsg(
            fd,
            &mut send_headers,
            slices.iter(),
            &reply_addresses,
            [],
            MsgFlags::empty(),
        ) {
            tracing::debug!(%error, "dns: udp send failed");
        }
    }
}

/// Hands a query for a name outside the cluster's zones to the runtime.
fn forward(
    socket: &UdpSocket,
    shared: &Shared,
    packet: &[u8],
    address: SockaddrStorage,
    request: Box<hickory_proto::op::Message>,
) {
    let Some(peer) = socket_address(&address) else {
        return;
    };
    let reply_socket = socket.try_clone();
    let Ok(permit) = Arc::clone(&shared.forwards).try_acquire_owned() else {
        if let (Handled::Reply(bytes), Ok(reply_socket)) = (server_failure(&request), reply_socket)
        {
            let _ = reply_socket.send_to(&bytes, peer);
        }
        return;
    };
    let Ok(reply_socket) = reply_socket else {
        return;
    };
    let upstreams = Arc::clone(&shared.upstreams);
    let packet = packet.to_vec();
    shared.runtime.spawn(async move {
        let reply = match forward_udp(&upstreams, &packet).await {
            Some(reply) => reply,
            None => match server_failure(&request) {
                Handled::Reply(bytes) => bytes,
                _ => return,
            },
        };
        // A datagram to one peer: the kernel takes it or drops it at once.
        if let Err(error) = reply_socket.send_to(&reply, peer) {
            tracing::debug!(%error, %peer, "dns: udp send failed");
        }
        drop(permit);
    });
}

fn socket_address(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}
