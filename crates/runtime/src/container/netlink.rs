//! The one netlink request a new network namespace needs: bring the loopback
//! interface up. Written by hand (a 32-byte RTM_NEWLINK message) rather than
//! with an ioctl, which would need unsafe code, or a netlink crate, which
//! would be a large dependency for one message.

use anyhow::{Context, bail};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};
use std::os::fd::AsRawFd;

const RTM_NEWLINK: u16 = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const IFF_UP: u32 = 1;
/// In a new network namespace the loopback interface is always index 1.
const LOOPBACK_INDEX: i32 = 1;

pub fn loopback_up() -> anyhow::Result<()> {
    let socket = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .context("cannot open a netlink socket")?;
    let mut message = Vec::with_capacity(32);
    // struct nlmsghdr
    message.extend_from_slice(&32u32.to_ne_bytes());
    message.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
    message.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    // struct ifinfomsg
    message.push(0); // AF_UNSPEC
    message.push(0); // padding
    message.extend_from_slice(&0u16.to_ne_bytes()); // device type
    message.extend_from_slice(&LOOPBACK_INDEX.to_ne_bytes());
    message.extend_from_slice(&IFF_UP.to_ne_bytes()); // flags
    message.extend_from_slice(&IFF_UP.to_ne_bytes()); // change mask
    debug_assert_eq!(message.len(), 32);
    sendto(
        socket.as_raw_fd(),
        &message,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .context("cannot send a netlink request")?;
    let mut reply = [0u8; 256];
    let n_read =
        recv(socket.as_raw_fd(), &mut reply, MsgFlags::empty()).context("no netlink reply")?;
    // The acknowledgement is an NLMSG_ERROR message whose error is 0.
    if n_read < 20 || u16::from_ne_bytes([reply[4], reply[5]]) != NLMSG_ERROR {
        bail!("unexpected netlink reply to bringing up loopback");
    }
    let error = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
    if error != 0 {
        bail!(
            "cannot bring up loopback: {}",
            nix::errno::Errno::from_raw(-error)
        );
    }
    Ok(())
}
