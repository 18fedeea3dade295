//! nf_tables over netlink, without the `nft` program: a transaction is
//! encoded as one batch (`NFNL_MSG_BATCH_BEGIN`, the table's messages,
//! `NFNL_MSG_BATCH_END`) and sent with one `sendmsg`, which the kernel
//! applies atomically before the call returns. Nothing is read back from
//! the kernel to apply it (the `nft` program first fetches the whole
//! ruleset, tens of thousands of chains at 10,000 services, which is what
//! made a one-endpoint change take 0.4 s): `Proxier` knows what the table
//! holds. Errors come back as `NLMSG_ERROR`s naming the failing message's
//! sequence number, mapped to the command that made it.
//!
//! `message` builds and parses netlink messages, `expr` compiles the
//! rules' nft syntax into expressions, `socket` is the socket (in this or
//! another network namespace).

pub mod expr;
pub mod message;
mod socket;

use std::collections::BTreeSet;
use std::path::PathBuf;

use message::{
    Buffer, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES, NFPROTO_IPV4,
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST,
};
pub use socket::Socket;

use crate::nft::{Command, Map, TABLE, Transaction};

// Message types (enum nf_tables_msg_types).
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;

const NLM_F_APPEND: u16 = 0x800;

const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_SET_EVAL: u32 = 0x20;
/// `NFT_DATA_VERDICT`, a map's data type.
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
/// nft's datatype numbers (`ipv4_addr`, `inet_proto`, `inet_service`);
/// a concatenation's type is its fields' numbers 6 bits apart.
const TYPE_IPV4_ADDR: u32 = 7;
const TYPE_INET_PROTO: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;

// NF_INET_* hooks.
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_LOCAL_IN: u32 = 1;
const NF_INET_FORWARD: u32 = 2;
const NF_INET_LOCAL_OUT: u32 = 3;
const NF_INET_POST_ROUTING: u32 = 4;

/// The most bytes of elements put in one message: an attribute's length
/// is 16 bits.
const MAX_ELEMENTS_BYTES: usize = 48 * 1024;

/// Why a netlink transaction or query failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open an nf_tables netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("cannot enter network namespace {path}: {source}")]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot send to nf_tables: {0}")]
    Send(#[source] std::io::Error),
    #[error("cannot read nf_tables' answer: {0}")]
    Receive(#[source] std::io::Error),
    #[error(transparent)]
    Unsupported(#[from] expr::Unsupported),
    #[error("nf_tables refused {object}: {source}")]
    Refused {
        object: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nf_tables did not acknowledge the transaction")]
    NoAcknowledgement,
}

impl NetlinkError {
    /// The errno the kernel answered with, if it refused something.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Refused { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

fn message_type(nft_message: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | nft_message
}

/// What a command is called in an error.
fn describe(command: &Command) -> String {
    match command {
        Command::AddTable => format!("add table ip {TABLE}"),
        Command::FlushTable => format!("flush table ip {TABLE}"),
        Command::DeleteTable => format!("delete table ip {TABLE}"),
        Command::AddMap(map) => format!("add map {}", map.name()),
        Command::FlushMap(map) => format!("flush map {}", map.name()),
        Command::AddChain { name, .. } => format!("add chain {name}"),
        Command::AddSet { name, .. } => format!("add set {name}"),
        Command::AddRule { chain, rule } => format!("add rule {chain} {rule}"),
        Command::AddElements { map, elements } => format!(
            "add element {} ({} elements, the first {})",
            map.name(),
            elements.len(),
            elements.first().map(|(key, _)| key.as_str()).unwrap_or("")
        ),
        Command::DeleteElements { map, keys } => format!(
            "delete element {} ({} elements, the first {})",
            map.name(),
            keys.len(),
            keys.first().map(String::as_str).unwrap_or("")
        ),
        Command::FlushChain(name) => format!("flush chain {name}"),
        Command::DeleteChain(name) => format!("delete chain {name}"),
        Command::DeleteSet(name) => format!("delete set {name}"),
    }
}

/// A transaction's messages and, per sequence number from `first_sequence`,
/// the command each came from.
pub struct Batch {
    buffer: Buffer,
    first_sequence: u32,
    next_sequence: u32,
    command_of_message: Vec<usize>,
    next_set_id: u32,
}

impl Batch {
    fn new(capacity: usize) -> Batch {
        let mut batch = Batch {
            buffer: Buffer::with_capacity(capacity),
            first_sequence: 1,
            next_sequence: 1,
            command_of_message: Vec::new(),
            next_set_id: 1,
        };
        batch.buffer.begin_message(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            0,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        batch.buffer.end_message();
        batch
    }

    /// Opens the next message of the transaction, for command
    /// `command_index`.
    fn begin(&mut self, nft_message: u16, flags: u16, command_index: usize) {
        self.buffer.begin_message(
            message_type(nft_message),
            NLM_F_REQUEST | flags,
            self.next_sequence,
            NFPROTO_IPV4,
            0,
        );
        self.next_sequence += 1;
        self.command_of_message.push(command_index);
    }

    /// The batch's bytes (for the tests and the benchmark's sizes).
    pub fn bytes(&self) -> &[u8] {
        self.buffer.bytes()
    }

    pub fn n_messages(&self) -> usize {
        self.command_of_message.len()
    }
}

/// Encodes `transaction` as one batch. The last message asks for an
/// acknowledgement, so success is seen, not inferred from silence.
pub fn encode(transaction: &Transaction) -> Result<Batch, NetlinkError> {
    let commands = transaction.commands();
    let mut batch = Batch::new(commands.len() * 160 + 64);
    for (index, command) in commands.iter().enumerate() {
        encode_command(&mut batch, index, command)?;
    }
    if batch.n_messages() > 0 {
        // Patch the last message's flags to ask for an acknowledgement.
        let last_start = last_message_start(batch.buffer.bytes());
        let bytes = &batch.buffer.bytes()[last_start + 6..last_start + 8];
        let flags = u16::from_ne_bytes([bytes[0], bytes[1]]) | NLM_F_ACK;
        set_flags(&mut batch.buffer, last_start, flags);
    }
    batch.buffer.begin_message(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        batch.next_sequence,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    batch.buffer.end_message();
    Ok(batch)
}

fn last_message_start(bytes: &[u8]) -> usize {
    let mut start = 0;
    let mut last = 0;
    while start + 4 <= bytes.len() {
        let length = u32::from_ne_bytes([
            bytes[start],
            bytes[start + 1],
            bytes[start + 2],
            bytes[start + 3],
        ]) as usize;
        last = start;
        start += (length + 3) & !3;
    }
    last
}

fn set_flags(buffer: &mut Buffer, message_start: usize, flags: u16) {
    buffer.patch(message_start + 6, &flags.to_ne_bytes());
}

fn map_key(map: Map) -> (u32, u32) {
    match map {
        Map::ServiceIps | Map::NoEndpointServices => (
            (TYPE_IPV4_ADDR << 12) | (TYPE_INET_PROTO << 6) | TYPE_INET_SERVICE,
            12,
        ),
        Map::NodePorts | Map::NoEndpointNodePorts => {
            ((TYPE_INET_PROTO << 6) | TYPE_INET_SERVICE, 8)
        }
    }
}

/// A base chain's declaration, `type T hook H priority P ; policy accept ;`.
fn parse_hook(text: &str) -> Result<(String, u32, i32), expr::Unsupported> {
    let unsupported = |reason: &str| expr::Unsupported {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    let (chain_type, hook, priority) = match words.as_slice() {
        [
            "type",
            chain_type,
            "hook",
            hook,
            "priority",
            priority,
            ";",
            "policy",
            "accept",
            ";",
        ] => (*chain_type, *hook, *priority),
        _ => return Err(unsupported("not a base chain declaration the proxy writes")),
    };
    let hook = match hook {
        "prerouting" => NF_INET_PRE_ROUTING,
        "input" => NF_INET_LOCAL_IN,
        "forward" => NF_INET_FORWARD,
        "output" => NF_INET_LOCAL_OUT,
        "postrouting" => NF_INET_POST_ROUTING,
        _ => return Err(unsupported("unknown hook")),
    };
    let priority = match priority {
        "dstnat" => -100,
        "srcnat" => 100,
        "filter" => 0,
        number => number
            .parse()
            .map_err(|_| unsupported("unknown priority"))?,
    };
    Ok((chain_type.to_string(), hook, priority))
}

/// An affinity set's declaration, `type ipv4_addr ; flags dynamic,timeout ;
/// timeout Ns ;`: its timeout.
fn parse_set(text: &str) -> Result<u64, expr::Unsupported> {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        [
            "type",
            "ipv4_addr",
            ";",
            "flags",
            "dynamic,timeout",
            ";",
            "timeout",
            timeout,
            ";",
        ] => timeout
            .strip_suffix('s')
            .and_then(|seconds| seconds.parse::<u64>().ok())
            .map(|seconds| seconds * 1000)
            .ok_or_else(|| expr::Unsupported {
                text: text.to_string(),
                reason: "bad timeout".into(),
            }),
        _ => Err(expr::Unsupported {
            text: text.to_string(),
            reason: "not a set declaration the proxy writes".into(),
        }),
    }
}

fn encode_command(batch: &mut Batch, index: usize, command: &Command) -> Result<(), NetlinkError> {
    match command {
        Command::AddTable => {
            batch.begin(NFT_MSG_NEWTABLE, NLM_F_CREATE, index);
            batch.buffer.string(1, TABLE); // NFTA_TABLE_NAME
            batch.buffer.u32_be(2, 0); // NFTA_TABLE_FLAGS
            batch.buffer.end_message();
        }
        Command::DeleteTable => {
            batch.begin(NFT_MSG_DELTABLE, 0, index);
            batch.buffer.string(1, TABLE);
            batch.buffer.end_message();
        }
        Command::FlushTable => {
            // A rule deletion naming only the table deletes all its rules.
            batch.begin(NFT_MSG_DELRULE, 0, index);
            batch.buffer.string(1, TABLE); // NFTA_RULE_TABLE
            batch.buffer.end_message();
        }
        Command::AddMap(map) => {
            let (key_type, key_length) = map_key(*map);
            let id = batch.next_set_id;
            batch.next_set_id += 1;
            batch.begin(NFT_MSG_NEWSET, NLM_F_CREATE, index);
            let buffer = &mut batch.buffer;
            buffer.string(1, TABLE); // NFTA_SET_TABLE
            buffer.string(2, map.name());
            buffer.u32_be(3, NFT_SET_MAP); // NFTA_SET_FLAGS
            buffer.u32_be(4, key_type);
            buffer.u32_be(5, key_length);
            buffer.u32_be(6, NFT_DATA_VERDICT);
            buffer.u32_be(7, 0); // NFTA_SET_DATA_LEN
            buffer.u32_be(10, id); // NFTA_SET_ID
            buffer.end_message();
        }
        Command::FlushMap(map) => {
            // An element deletion without elements empties the set.
            batch.begin(NFT_MSG_DELSETELEM, 0, index);
            batch.buffer.string(1, TABLE); // NFTA_SET_ELEM_LIST_TABLE
            batch.buffer.string(2, map.name());
            batch.buffer.end_message();
        }
        Command::AddChain { name, hook } => {
            let hook = hook.map(parse_hook).transpose()?;
            batch.begin(NFT_MSG_NEWCHAIN, NLM_F_CREATE, index);
            let buffer = &mut batch.buffer;
            buffer.string(1, TABLE); // NFTA_CHAIN_TABLE
            buffer.string(3, name); // NFTA_CHAIN_NAME
            if let Some((chain_type, hook, priority)) = hook {
                buffer.begin_nested(4); // NFTA_CHAIN_HOOK
                buffer.u32_be(1, hook); // NFTA_HOOK_HOOKNUM
                buffer.u32_be(2, priority as u32);
                buffer.end_nested();
                buffer.u32_be(5, expr::NF_ACCEPT as u32); // NFTA_CHAIN_POLICY
                buffer.string(7, &chain_type); // NFTA_CHAIN_TYPE
            }
            buffer.end_message();
        }
        Command::AddSet { name, declaration } => {
            let timeout_ms = parse_set(declaration)?;
            let id = batch.next_set_id;
            batch.next_set_id += 1;
            batch.begin(NFT_MSG_NEWSET, NLM_F_CREATE, index);
            let buffer = &mut batch.buffer;
            buffer.string(1, TABLE);
            buffer.string(2, name);
            buffer.u32_be(3, NFT_SET_TIMEOUT | NFT_SET_EVAL);
            buffer.u32_be(4, TYPE_IPV4_ADDR);
            buffer.u32_be(5, 4);
            buffer.u32_be(10, id);
            buffer.u64_be(11, timeout_ms); // NFTA_SET_TIMEOUT
            buffer.end_message();
        }
        Command::AddRule { chain, rule } => {
            batch.begin(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, index);
            let buffer = &mut batch.buffer;
            buffer.string(1, TABLE); // NFTA_RULE_TABLE
            buffer.string(2, chain); // NFTA_RULE_CHAIN
            buffer.begin_nested(4); // NFTA_RULE_EXPRESSIONS
            let result = expr::write_rule(buffer, rule);
            buffer.end_nested();
            buffer.end_message();
            result?;
        }
        Command::AddElements { map, elements } => {
            let mut elements = elements.iter().peekable();
            while elements.peek().is_some() {
                batch.begin(NFT_MSG_NEWSETELEM, NLM_F_CREATE, index);
                let start = batch.buffer.len();
                let buffer = &mut batch.buffer;
                buffer.string(1, TABLE);
                buffer.string(2, map.name());
                buffer.begin_nested(3); // NFTA_SET_ELEM_LIST_ELEMENTS
                while let Some((key, verdict)) =
                    elements.next_if(|_| buffer.len() - start < MAX_ELEMENTS_BYTES)
                {
                    buffer.begin_nested(1); // NFTA_LIST_ELEM
                    buffer.begin_nested(1); // NFTA_SET_ELEM_KEY
                    buffer.attribute(expr::NFTA_DATA_VALUE, &expr::element_key(key)?);
                    buffer.end_nested();
                    buffer.begin_nested(2); // NFTA_SET_ELEM_DATA
                    expr::write_verdict(buffer, verdict)?;
                    buffer.end_nested();
                    buffer.end_nested();
                }
                buffer.end_nested();
                buffer.end_message();
            }
        }
        Command::DeleteElements { map, keys } => {
            let mut keys = keys.iter().peekable();
            while keys.peek().is_some() {
                batch.begin(NFT_MSG_DELSETELEM, 0, index);
                let start = batch.buffer.len();
                let buffer = &mut batch.buffer;
                buffer.string(1, TABLE);
                buffer.string(2, map.name());
                buffer.begin_nested(3);
                while let Some(key) = keys.next_if(|_| buffer.len() - start < MAX_ELEMENTS_BYTES) {
                    buffer.begin_nested(1);
                    buffer.begin_nested(1);
                    buffer.attribute(expr::NFTA_DATA_VALUE, &expr::element_key(key)?);
                    buffer.end_nested();
                    buffer.end_nested();
                }
                buffer.end_nested();
                buffer.end_message();
            }
        }
        Command::FlushChain(name) => {
            batch.begin(NFT_MSG_DELRULE, 0, index);
            batch.buffer.string(1, TABLE);
            batch.buffer.string(2, name); // NFTA_RULE_CHAIN
            batch.buffer.end_message();
        }
        Command::DeleteChain(name) => {
            batch.begin(NFT_MSG_DELCHAIN, 0, index);
            batch.buffer.string(1, TABLE);
            batch.buffer.string(3, name);
            batch.buffer.end_message();
        }
        Command::DeleteSet(name) => {
            batch.begin(NFT_MSG_DELSET, 0, index);
            batch.buffer.string(1, TABLE);
            batch.buffer.string(2, name);
            batch.buffer.end_message();
        }
    }
    Ok(())
}

/// Sends `transaction` as one batch; it is in the kernel when this returns
/// Ok (with the batch's size in bytes), and nothing of it is when it
/// returns an error.
pub fn apply(socket: &Socket, transaction: &Transaction) -> Result<usize, NetlinkError> {
    if transaction.is_empty() {
        return Ok(0);
    }
    let batch = encode(transaction)?;
    let last_sequence = batch.first_sequence + batch.n_messages() as u32 - 1;
    socket.send_batch(batch.bytes())?;
    // The kernel has run the batch within `sendmsg`: its answers are queued.
    let mut acknowledged = false;
    let mut first_error: Option<NetlinkError> = None;
    socket.receive_all(|message| {
        if message.message_type != message::NLMSG_ERROR || message.payload.len() < 4 {
            return;
        }
        let errno = message::error_code(message.payload);
        // The refused message's header follows the errno.
        let sequence = message
            .payload
            .get(12..16)
            .map(|bytes| u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            .unwrap_or(message.sequence);
        if errno == 0 {
            if sequence == last_sequence {
                acknowledged = true;
            }
            return;
        }
        if first_error.is_none() {
            let object = sequence
                .checked_sub(batch.first_sequence)
                .and_then(|offset| batch.command_of_message.get(offset as usize))
                .map(|&index| describe(&transaction.commands()[index]))
                .unwrap_or_else(|| "the transaction".to_string());
            first_error = Some(NetlinkError::Refused {
                object,
                source: std::io::Error::from_raw_os_error(errno),
            });
        }
    })?;
    match first_error {
        Some(error) => Err(error),
        None if acknowledged => Ok(batch.bytes().len()),
        None => Err(NetlinkError::NoAcknowledgement),
    }
}

/// Deletes the table; whether there was one.
pub fn delete_table(socket: &Socket) -> Result<bool, NetlinkError> {
    let mut transaction = Transaction::default();
    transaction.push_command(Command::DeleteTable);
    match apply(socket, &transaction) {
        Ok(_) => Ok(true),
        Err(error) if error.errno() == Some(nix::errno::Errno::ENOENT as i32) => Ok(false),
        Err(error) => Err(error),
    }
}

/// The chains and sets the table has now (none when there is no table): a
/// dump of names only, no rules.
pub fn table_names(socket: &Socket) -> Result<(BTreeSet<String>, BTreeSet<String>), NetlinkError> {
    let mut chains = BTreeSet::new();
    let mut sets = BTreeSet::new();
    for (request, reply, name_attribute, out) in [
        (NFT_MSG_GETCHAIN, NFT_MSG_NEWCHAIN, 3u16, &mut chains),
        (NFT_MSG_GETSET, NFT_MSG_NEWSET, 2u16, &mut sets),
    ] {
        let mut buffer = Buffer::default();
        buffer.begin_message(
            message_type(request),
            NLM_F_REQUEST | NLM_F_DUMP,
            1,
            NFPROTO_IPV4,
            0,
        );
        buffer.string(1, TABLE); // NFTA_{CHAIN,SET}_TABLE, a filter
        buffer.end_message();
        socket.send_batch(buffer.bytes())?;
        let dumped = socket.receive_dump(|message| {
            if message.message_type != message_type(reply) || message.payload.len() < 4 {
                return;
            }
            let mut table = None;
            let mut name = None;
            for (kind, value) in message::parse_attributes(&message.payload[4..]) {
                if kind == 1 {
                    table = Some(message::attribute_string(value));
                } else if kind == name_attribute {
                    name = Some(message::attribute_string(value));
                }
            }
            if let (Some(table), Some(name)) = (table, name)
                && table == TABLE
            {
                out.insert(name);
            }
        });
        match dumped {
            // A dump filtered by a table that does not exist.
            Err(error) if error.errno() == Some(nix::errno::Errno::ENOENT as i32) => {}
            other => other?,
        }
    }
    Ok((chains, sets))
}

/// The ruleset's generation: it changes with every committed transaction
/// in the network namespace, whoever makes it.
pub fn generation(socket: &Socket) -> Result<u32, NetlinkError> {
    let mut buffer = Buffer::default();
    buffer.begin_message(message_type(NFT_MSG_GETGEN), NLM_F_REQUEST, 1, 0, 0);
    buffer.end_message();
    socket.send_batch(buffer.bytes())?;
    let mut generation = None;
    socket.receive_until(|message| {
        if message.message_type == message_type(NFT_MSG_NEWGEN) && message.payload.len() >= 4 {
            for (kind, value) in message::parse_attributes(&message.payload[4..]) {
                if kind == 1
                    && let Ok(bytes) = <[u8; 4]>::try_from(value)
                {
                    generation = Some(u32::from_be_bytes(bytes));
                }
            }
            return true;
        }
        message.message_type == message::NLMSG_ERROR
    })?;
    generation.ok_or(NetlinkError::NoAcknowledgement)
}
