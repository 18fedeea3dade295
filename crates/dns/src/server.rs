//! The DNS server's I/O: UDP and TCP on one address, answers from the
//! shared zones, other names forwarded upstream.
//!
//! Our own loop on hickory-proto's wire format rather than hickory-server:
//! hickory-server's catalog answers from zone authorities through async
//! trait objects per request, while our zones are prebuilt maps answered
//! synchronously; the loop here is small, keeps FORMERR, truncation and
//! the bounds on concurrency in plain sight, and leaves the hot path free
//! of per-request allocation beyond the message itself.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::resolve::{self, Outcome, SharedZones, Zones};

/// The most TCP connections served at once; more wait in the kernel's
/// accept queue.
const MAX_TCP_CONNECTIONS: usize = 128;
/// The most queries being forwarded at once; past it a forwarded query
/// gets SERVFAIL at once instead of piling up.
const MAX_FORWARDS_IN_FLIGHT: usize = 512;
/// A TCP connection with no query for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How long one upstream gets to answer before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the server cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen for DNS on {address} ({protocol}): {source}")]
    Bind {
        address: SocketAddr,
        protocol: &'static str,
        source: std::io::Error,
    },
}

/// What to do with one packet.
#[derive(Debug)]
pub enum Handled {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Forward the packet as it is to the upstream resolvers; `request` is
    /// it decoded, for the SERVFAIL if none answers.
    Forward(Box<Message>),
    /// Say nothing (not a query, or too short to answer).
    Drop,
}

/// Answers one packet. Never panics on any input: the fuzz test holds it
/// to that.
pub fn handle_packet(zones: &Zones, packet: &[u8], over_udp: bool) -> Handled {
    let request = match Message::from_vec(packet) {
        Ok(request) => request,
        Err(_) => return format_error(packet),
    };
    if request.metadata.message_type != MessageType::Query {
        return Handled::Drop;
    }
    let max_bytes = if over_udp {
        resolve::udp_limit(&request)
    } else {
        usize::from(u16::MAX)
    };
    match resolve::resolve(zones, &request) {
        Outcome::Answer(response) => match resolve::encode_within(&response, max_bytes) {
            Some(bytes) => Handled::Reply(bytes),
            None => server_failure(&request),
        },
        Outcome::Forward => Handled::Forward(Box::new(request)),
    }
}

/// FORMERR for a packet whose header can be read; nothing otherwise.
fn format_error(packet: &[u8]) -> Handled {
    let Some(header) = packet.get(..12) else {
        return Handled::Drop;
    };
    if header[2] & 0x80 != 0 {
        // A response: never answer one (that is how reflection loops start).
        return Handled::Drop;
    }
    let op_code = header[2] & 0x78;
    let mut reply = vec![0u8; 12];
    reply[..2].copy_from_slice(&header[..2]);
    reply[2] = 0x80 | op_code;
    reply[3] = ResponseCode::FormErr.low();
    Handled::Reply(reply)
}

pub(crate) fn server_failure(request: &Message) -> Handled {
    match resolve::error_response(request, ResponseCode::ServFail).to_vec() {
        Ok(bytes) => Handled::Reply(bytes),
        Err(_) => Handled::Drop,
    }
}

/// The bound sockets: UDP sockets sharing one port (one per serving
/// thread) and the TCP listener on the same port.
pub struct Sockets {
    pub udp: Vec<std::net::UdpSocket>,
    pub tcp: TcpListener,
}

impl Sockets {
    /// The address served (the UDP and TCP ports are the same).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Serves DNS on `address` (UDP and TCP) until `stop` completes.
pub async fn serve(
    address: SocketAddr,
    zones: SharedZones,
    upstreams: Vec<SocketAddr>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let sockets = bind(address).await?;
    run(sockets, zones, upstreams, stop).await;
    Ok(())
}

/// How many UDP threads serve: one per core the process may use, at most
/// four.
fn udp_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4)
}

/// Binds the UDP sockets and TCP listener, so a taken port is reported
/// before anything starts.
pub async fn bind(address: SocketAddr) -> Result<Sockets, ServeError> {
    let udp = crate::udp::bind(address, udp_threads())?;
    // With port 0 the TCP port follows the UDP one.
    let tcp_address = udp[0].local_addr().unwrap_or(address);
    let tcp = TcpListener::bind(tcp_address)
        .await
        .map_err(|source| ServeError::Bind {
            address: tcp_address,
            protocol: "tcp",
            source,
        })?;
    Ok(Sockets { udp, tcp })
}

/// Serves on bound sockets until `stop` completes.
pub async fn run(
    sockets: Sockets,
    zones: SharedZones,
    upstreams: Vec<SocketAddr>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let upstreams = Arc::new(upstreams);
    let forwards = Arc::new(Semaphore::new(MAX_FORWARDS_IN_FLIGHT));
    let shared = Arc::new(crate::udp::Shared {
        zones: zones.clone(),
        upstreams: Arc::clone(&upstreams),
        forwards: Arc::clone(&forwards),
        runtime: tokio::runtime::Handle::current(),
        stop: Arc::default(),
    });
    let mut threads = Vec::new();
    for (index, socket) in sockets.udp.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        match std::thread::Builder::new()
            .name(format!("dns-udp-{index}"))
            .spawn(move || crate::udp::serve(socket, shared))
        {
            Ok(thread) => threads.push(thread),
            Err(error) => tracing::warn!(%error, "dns: cannot start a udp thread"),
        }
    }
    let tcp = tokio::spawn(serve_tcp(sockets.tcp, zones, upstreams, forwards));
    stop.await;
    tcp.abort();
    shared
        .stop
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // The threads notice within their poll interval.
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
}

async fn serve_tcp(
    listener: TcpListener,
    zones: SharedZones,
    upstreams: Arc<Vec<SocketAddr>>,
    forwards: Arc<Semaphore>,
) {
    let connections = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&connections).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "dns: tcp accept failed");
                // Out of descriptors, say: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let zones = zones.clone();
        let upstreams = Arc::clone(&upstreams);
        let forwards = Arc::clone(&forwards);
        tokio::spawn(async move {
            if let Err(error) = serve_connection(stream, &zones, &upstreams, &forwards).await {
                tracing::debug!(%error, %peer, "dns: tcp connection ended");
            }
            drop(permit);
        });
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    zones: &SharedZones,
    upstreams: &[SocketAddr],
    forwards: &Semaphore,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 65535];
    loop {
        let mut length = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut length)).await {
            Ok(Ok(_)) => {}
            // Closed, or idle too long.
            Ok(Err(_)) | Err(_) => return Ok(()),
        }
        let length = usize::from(u16::from_be_bytes(length));
        let packet = &mut buffer[..length];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(packet))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let handled = handle_packet(&zones.current(), packet, false);
        let reply = match handled {
            Handled::Reply(bytes) => bytes,
            Handled::Drop => return Ok(()),
            Handled::Forward(request) => {
                let forwarded = match forwards.try_acquire() {
                    Ok(_permit) => forward_tcp(upstreams, packet).await,
                    Err(_) => None,
                };
                match forwarded {
                    Some(reply) => reply,
                    None => match server_failure(&request) {
                        Handled::Reply(bytes) => bytes,
                        _ => return Ok(()),
                    },
                }
            }
        };
        let Ok(reply_length) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        stream.write_all(&reply_length.to_be_bytes()).await?;
        stream.write_all(&reply).await?;
    }
}

/// Asks each upstream in turn over UDP; the first answer with the query's
/// id wins.
pub(crate) async fn forward_udp(upstreams: &[SocketAddr], packet: &[u8]) -> Option<Vec<u8>> {
    let id = packet.get(..2)?;
    for upstream in upstreams {
        let local: SocketAddr = if upstream.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let Ok(socket) = UdpSocket::bind(local).await else {
            continue;
        };
        if socket.connect(upstream).await.is_err() || socket.send(packet).await.is_err() {
            continue;
        }
        let mut buffer = vec![0u8; 65535];
        let answered = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            // A stray datagram with another id is skipped, a few at most.
            for _ in 0..8 {
                let length = socket.recv(&mut buffer).await.ok()?;
                if buffer.get(..2) == Some(id) {
                    return Some(length);
                }
            }
            None
        })
        .await;
        if let Ok(Some(length)) = answered {
            buffer.truncate(length);
            return Some(buffer);
        }
        tracing::debug!(%upstream, "dns: upstream did not answer");
    }
    None
}

/// Asks each upstream in turn over TCP.
async fn forward_tcp(upstreams: &[SocketAddr], packet: &[u8]) -> Option<Vec<u8>> {
    let length = u16::try_from(packet.len()).ok()?;
    for upstream in upstreams {
        let exchange = async {
            let mut stream = TcpStream::connect(upstream).await.ok()?;
            stream.write_all(&length.to_be_bytes()).await.ok()?;
            stream.write_all(packet).await.ok()?;
            let mut reply_length = [0u8; 2];
            stream.read_exact(&mut reply_length).await.ok()?;
            let mut reply = vec![0u8; usize::from(u16::from_be_bytes(reply_length))];
            stream.read_exact(&mut reply).await.ok()?;
            Some(reply)
        };
        if let Ok(Some(reply)) = tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await {
            return Some(reply);
        }
        tracing::debug!(%upstream, "dns: upstream did not answer over tcp");
    }
    None
}

/// The upstream resolvers of `resolv_conf` (the text of
/// `/etc/resolv.conf`), port 53, without loopback ones: on a server those
/// are usually a local stub (or this very server) and would loop.
pub fn upstreams_from_resolv_conf(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let address: std::net::IpAddr = words.next()?.split('%').next()?.parse().ok()?;
            (!address.is_loopback()).then_some(SocketAddr::new(address, 53))
        })
        .collect()
}
