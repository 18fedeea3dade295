//! Netlink message building: a batch is one byte buffer of messages, each
//! a `nlmsghdr`, an `nfgenmsg` and attributes, nested ones written in place
//! and their length filled in when they close.

/// `NLMSG_ERROR`, `NLMSG_DONE` (linux/netlink.h).
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
/// Set on an attribute that holds attributes.
const NLA_F_NESTED: u16 = 0x8000;

/// `NFNL_MSG_BATCH_BEGIN` / `_END` and the nf_tables subsystem
/// (linux/netfilter/nfnetlink.h).
pub const NFNL_MSG_BATCH_BEGIN: u16 = 16;
pub const NFNL_MSG_BATCH_END: u16 = 17;
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// `NFPROTO_IPV4`: the table's family.
pub const NFPROTO_IPV4: u8 = 2;

fn align4(length: usize) -> usize {
    (length + 3) & !3
}

/// Messages laid end to end, ready for one `send`.
#[derive(Debug, Default)]
pub struct Buffer {
    bytes: Vec<u8>,
    /// Where the open message and the open nested attributes start.
    message_start: usize,
    nests: Vec<usize>,
}

impl Buffer {
    pub fn with_capacity(capacity: usize) -> Buffer {
        Buffer {
            bytes: Vec::with_capacity(capacity),
            ..Buffer::default()
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Opens a message: its header (length filled in by `end_message`)
    /// and the `nfgenmsg` with `family` and `resource_id` (big-endian, as
    /// nfnetlink reads it).
    pub fn begin_message(
        &mut self,
        message_type: u16,
        flags: u16,
        sequence: u32,
        family: u8,
        resource_id: u16,
    ) {
        debug_assert!(self.nests.is_empty(), "a message opened inside another");
        self.message_start = self.bytes.len();
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        self.bytes.extend_from_slice(&message_type.to_ne_bytes());
        self.bytes.extend_from_slice(&flags.to_ne_bytes());
        self.bytes.extend_from_slice(&sequence.to_ne_bytes());
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        self.bytes.push(family);
        self.bytes.push(0);
        self.bytes.extend_from_slice(&resource_id.to_be_bytes());
    }

    pub fn end_message(&mut self) {
        debug_assert!(self.nests.is_empty(), "a nested attribute left open");
        let length = (self.bytes.len() - self.message_start) as u32;
        self.bytes[self.message_start..self.message_start + 4]
            .copy_from_slice(&length.to_ne_bytes());
    }

    pub fn attribute(&mut self, kind: u16, value: &[u8]) {
        let length = 4 + value.len();
        self.bytes.extend_from_slice(&(length as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(value);
        self.bytes.resize(align4(self.bytes.len()), 0);
    }

    /// A NUL-terminated string, as the kernel's `NLA_STRING`s are sent.
    pub fn string(&mut self, kind: u16, value: &str) {
        let length = 4 + value.len() + 1;
        self.bytes.extend_from_slice(&(length as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(value.as_bytes());
        self.bytes.push(0);
        self.bytes.resize(align4(self.bytes.len()), 0);
    }

    /// nf_tables' 32-bit numbers are big-endian.
    pub fn u32_be(&mut self, kind: u16, value: u32) {
        self.attribute(kind, &value.to_be_bytes());
    }

    pub fn u64_be(&mut self, kind: u16, value: u64) {
        self.attribute(kind, &value.to_be_bytes());
    }

    /// Overwrites bytes already written (a message's flags).
    pub fn patch(&mut self, offset: usize, bytes: &[u8]) {
        self.bytes[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    pub fn begin_nested(&mut self, kind: u16) {
        self.nests.push(self.bytes.len());
        self.bytes.extend_from_slice(&0u16.to_ne_bytes());
        self.bytes
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    }

    pub fn end_nested(&mut self) {
        let start = self
            .nests
            .pop()
            .expect("end_nested pairs with begin_nested");
        let length = (self.bytes.len() - start) as u16;
        self.bytes[start..start + 2].copy_from_slice(&length.to_ne_bytes());
    }
}

/// One received message: its type, flags, sequence number and payload
/// (what follows the header).
#[derive(Debug)]
pub struct Received<'a> {
    pub message_type: u16,
    pub sequence: u32,
    pub payload: &'a [u8],
}

/// The messages in one datagram; a truncated tail is dropped.
pub fn parse_messages(mut bytes: &[u8]) -> Vec<Received<'_>> {
    let mut messages = Vec::new();
    while bytes.len() >= 16 {
        let length = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if length < 16 || length > bytes.len() {
            break;
        }
        messages.push(Received {
            message_type: u16::from_ne_bytes([bytes[4], bytes[5]]),
            sequence: u32::from_ne_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            payload: &bytes[16..length],
        });
        bytes = &bytes[align4(length).min(bytes.len())..];
    }
    messages
}

/// The attributes in `bytes` as (kind without flags, value).
pub fn parse_attributes(mut bytes: &[u8]) -> Vec<(u16, &[u8])> {
    let mut attributes = Vec::new();
    while bytes.len() >= 4 {
        let length = u16::from_ne_bytes([bytes[0], bytes[1]]) as usize;
        let kind = u16::from_ne_bytes([bytes[2], bytes[3]]) & 0x3fff;
        if length < 4 || length > bytes.len() {
            break;
        }
        attributes.push((kind, &bytes[4..length]));
        bytes = &bytes[align4(length).min(bytes.len())..];
    }
    attributes
}

/// An `NLMSG_ERROR`'s errno, positive (0 for an acknowledgement).
pub fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map(|bytes| -i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        .unwrap_or(0)
}

/// A NUL-terminated string attribute's text.
pub fn attribute_string(value: &[u8]) -> String {
    let end = value
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_carry_their_length_and_round_trip() {
        let mut buffer = Buffer::default();
        buffer.begin_message(0x0a06, NLM_F_REQUEST, 7, NFPROTO_IPV4, 0);
        buffer.string(1, "shoal");
        buffer.begin_nested(4);
        buffer.u32_be(1, 0x0102_0304);
        buffer.end_nested();
        buffer.end_message();
        let messages = parse_messages(buffer.bytes());
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].message_type, 0x0a06);
        assert_eq!(messages[0].sequence, 7);
        assert_eq!(&messages[0].payload[..4], &[NFPROTO_IPV4, 0, 0, 0]);
        let attributes = parse_attributes(&messages[0].payload[4..]);
        assert_eq!(attributes.len(), 2);
        assert_eq!(attribute_string(attributes[0].1), "shoal");
        assert_eq!(attributes[1].0, 4);
        assert_eq!(
            parse_attributes(attributes[1].1),
            vec![(1, &[1u8, 2, 3, 4][..])]
        );
        assert_eq!(buffer.len() % 4, 0);
    }

    #[test]
    fn truncated_input_is_dropped_not_read_past() {
        let mut buffer = Buffer::default();
        buffer.begin_message(1, 0, 1, 0, 0);
        buffer.string(1, "x");
        buffer.end_message();
        let bytes = buffer.bytes();
        assert!(parse_messages(&bytes[..bytes.len() - 1]).is_empty());
        assert!(parse_attributes(&[8, 0, 1, 0, 1]).is_empty());
    }
}
