//! The `NETLINK_NETFILTER` socket, opened in this network namespace or in
//! a named one (a socket stays in the namespace it was made in, so a
//! short-lived thread enters the namespace to make it).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, sockopt,
};
use nix::sys::time::TimeVal;

use super::NetlinkError;
use super::message::{self, NLMSG_DONE, NLMSG_ERROR, Received};

/// How long a reply may take before a query gives up.
const RECEIVE_TIMEOUT_SECONDS: i64 = 10;
/// The receive buffer: errors for a large batch, and dumps.
const RECEIVE_BUFFER_BYTES: usize = 4 << 20;

pub struct Socket {
    fd: OwnedFd,
}

fn io_error(errno: Errno) -> io::Error {
    io::Error::from_raw_os_error(errno as i32)
}

impl Socket {
    /// A socket in the caller's network namespace.
    pub fn open() -> Result<Socket, NetlinkError> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(|errno| NetlinkError::Socket(io_error(errno)))?;
        // Forcing the size needs CAP_NET_ADMIN, which changing nf_tables
        // needs anyway; the plain option is the fallback.
        if socket::setsockopt(&fd, sockopt::RcvBufForce, &RECEIVE_BUFFER_BYTES).is_err() {
            let _ = socket::setsockopt(&fd, sockopt::RcvBuf, &RECEIVE_BUFFER_BYTES);
        }
        socket::setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &TimeVal::new(RECEIVE_TIMEOUT_SECONDS, 0),
        )
        .map_err(|errno| NetlinkError::Socket(io_error(errno)))?;
        Ok(Socket { fd })
    }

    /// A socket in the network namespace at `path` (`/run/netns/NAME`).
    pub fn open_in(path: &Path) -> Result<Socket, NetlinkError> {
        let namespace = File::open(path).map_err(|source| NetlinkError::Netns {
            path: path.to_path_buf(),
            source,
        })?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // Only this thread enters the namespace, and it ends
                    // right after making the socket.
                    nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                        |errno| NetlinkError::Netns {
                            path: path.to_path_buf(),
                            source: io_error(errno),
                        },
                    )?;
                    Socket::open()
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(NetlinkError::Netns {
                        path: path.to_path_buf(),
                        source: io::Error::other("the thread entering it panicked"),
                    })
                })
        })
    }

    /// Sends `bytes` as one datagram to the kernel. The send buffer is
    /// grown to hold it: the kernel takes a batch in one piece.
    pub fn send_batch(&self, bytes: &[u8]) -> Result<(), NetlinkError> {
        let wanted = (bytes.len() + 64 * 1024).min(i32::MAX as usize / 2);
        if socket::setsockopt(&self.fd, sockopt::SndBufForce, &wanted).is_err() {
            let _ = socket::setsockopt(&self.fd, sockopt::SndBuf, &wanted);
        }
        let kernel = NetlinkAddr::new(0, 0);
        let sent = loop {
            match socket::sendto(self.fd.as_raw_fd(), bytes, &kernel, MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                result => break result,
            }
        }
        .map_err(|errno| NetlinkError::Send(io_error(errno)))?;
        if sent != bytes.len() {
            return Err(NetlinkError::Send(io::Error::other(format!(
                "sent {sent} of {} bytes",
                bytes.len()
            ))));
        }
        Ok(())
    }

    /// One datagram; None when `nonblocking` and nothing is queued.
    fn receive(&self, buffer: &mut [u8], nonblocking: bool) -> Result<Option<usize>, NetlinkError> {
        let flags = if nonblocking {
            MsgFlags::MSG_DONTWAIT
        } else {
            MsgFlags::empty()
        };
        loop {
            match socket::recv(self.fd.as_raw_fd(), buffer, flags) {
                Ok(length) => return Ok(Some(length)),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) if nonblocking => return Ok(None),
                Err(errno) => return Err(NetlinkError::Receive(io_error(errno))),
            }
        }
    }

    /// Every message already queued (a batch's answers, which the kernel
    /// queues before `sendmsg` returns).
    pub fn receive_all(&self, mut each: impl FnMut(&Received<'_>)) -> Result<(), NetlinkError> {
        let mut buffer = vec![0u8; 256 * 1024];
        while let Some(length) = self.receive(&mut buffer, true)? {
            for message in message::parse_messages(&buffer[..length]) {
                each(&message);
            }
        }
        Ok(())
    }

    /// A dump's messages, up to its `NLMSG_DONE`; an error message ends it
    /// with that error.
    pub fn receive_dump(&self, mut each: impl FnMut(&Received<'_>)) -> Result<(), NetlinkError> {
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let length = self
                .receive(&mut buffer, false)?
                .ok_or(NetlinkError::NoAcknowledgement)?;
            for message in message::parse_messages(&buffer[..length]) {
                match message.message_type {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = message::error_code(message.payload);
                        if errno != 0 {
                            return Err(NetlinkError::Refused {
                                object: "a listing".to_string(),
                                source: io::Error::from_raw_os_error(errno),
                            });
                        }
                        return Ok(());
                    }
                    _ => each(&message),
                }
            }
        }
    }

    /// Messages until `done` says one was the last.
    pub fn receive_until(
        &self,
        mut done: impl FnMut(&Received<'_>) -> bool,
    ) -> Result<(), NetlinkError> {
        let mut buffer = vec![0u8; 64 * 1024];
        // Bounded: a reply is one or two datagrams.
        for _ in 0..64 {
            let length = self
                .receive(&mut buffer, false)?
                .ok_or(NetlinkError::NoAcknowledgement)?;
            for message in message::parse_messages(&buffer[..length]) {
                if done(&message) {
                    return Ok(());
                }
            }
        }
        Err(NetlinkError::NoAcknowledgement)
    }
}
