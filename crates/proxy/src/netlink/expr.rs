//! nf_tables expressions written as netlink attributes, and the rule
//! text `nft::service_objects` renders compiled into them. The compiler
//! knows the rule shapes the proxy writes (and says which one it does not
//! know): the same text drives the `nft` program and this encoder, so the
//! two stay one table (the netns tests compare `nft list` of both).

use std::net::Ipv4Addr;

use super::message::Buffer;

// Attribute and value numbers from linux/netfilter/nf_tables.h.
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
pub const NFTA_DATA_VALUE: u16 = 1;
pub const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_REG_2: u32 = 2;
const NFT_REG32_00: u32 = 8;

pub const NF_DROP: i32 = 0;
pub const NF_ACCEPT: i32 = 1;
pub const NFT_JUMP: i32 = -3;
pub const NFT_GOTO: i32 = -4;
pub const NFT_RETURN: i32 = -5;

const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_META_MARK: u32 = 3;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CT_STATE: u32 = 0;
const NFT_NG_RANDOM: u32 = 1;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_SADDR: u32 = 1;
const NFTA_FIB_F_DADDR: u32 = 2;
/// `RTN_LOCAL` (linux/rtnetlink.h), the address type `fib … type local`.
const RTN_LOCAL: u32 = 2;
/// `IP_CT_NEW`'s bit in `ct state`.
const CT_STATE_NEW: u32 = 1 << 3;
const NFT_DYNSET_OP_UPDATE: u32 = 1;
const NFT_NAT_DNAT: u32 = 1;
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 1 << 1;
const NF_NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 1 << 4;
const NFT_REJECT_ICMP_UNREACH: u32 = 0;
const NFT_REJECT_TCP_RST: u32 = 1;
/// ICMP "port unreachable", plain `reject`'s answer for IPv4.
const ICMP_PORT_UNREACH: u8 = 3;
const NFPROTO_IPV4: u32 = 2;

/// The one thing a rule's text said that this encoder does not know.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode '{text}' as nf_tables expressions: {reason}")]
pub struct Unsupported {
    pub text: String,
    pub reason: String,
}

/// A verdict as nft writes it: `goto CHAIN`, `jump CHAIN`, `drop`,
/// `accept`, `return`.
pub fn write_verdict(buffer: &mut Buffer, text: &str) -> Result<(), Unsupported> {
    let mut words = text.split_whitespace();
    let (code, chain) = match (words.next(), words.next(), words.next()) {
        (Some("goto"), Some(chain), None) => (NFT_GOTO, Some(chain)),
        (Some("jump"), Some(chain), None) => (NFT_JUMP, Some(chain)),
        (Some("drop"), None, None) => (NF_DROP, None),
        (Some("accept"), None, None) => (NF_ACCEPT, None),
        (Some("return"), None, None) => (NFT_RETURN, None),
        _ => {
            return Err(Unsupported {
                text: text.to_string(),
                reason: "not a verdict".into(),
            });
        }
    };
    buffer.begin_nested(NFTA_DATA_VERDICT);
    buffer.u32_be(NFTA_VERDICT_CODE, code as u32);
    if let Some(chain) = chain {
        buffer.string(NFTA_VERDICT_CHAIN, chain);
    }
    buffer.end_nested();
    Ok(())
}

/// A transport protocol's number by its nft name.
pub fn protocol_number(name: &str) -> Option<u8> {
    match name {
        "tcp" => Some(6),
        "udp" => Some(17),
        "sctp" => Some(132),
        _ => None,
    }
}

/// The key of a verdict map element, `ADDRESS . PROTOCOL . PORT` or
/// `PROTOCOL . PORT`: each field in network order, padded to 4 bytes as
/// the kernel lays out concatenations.
pub fn element_key(text: &str) -> Result<Vec<u8>, Unsupported> {
    let unsupported = |reason: &str| Unsupported {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let fields: Vec<&str> = text.split(" . ").map(str::trim).collect();
    let (address, protocol, port) = match fields.as_slice() {
        [address, protocol, port] => (Some(*address), *protocol, *port),
        [protocol, port] => (None, *protocol, *port),
        _ => return Err(unsupported("not an element key the proxy writes")),
    };
    let mut key = Vec::with_capacity(12);
    if let Some(address) = address {
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| unsupported("not an IPv4 address"))?;
        key.extend_from_slice(&address.octets());
    }
    let protocol = protocol_number(protocol).ok_or_else(|| unsupported("unknown protocol"))?;
    key.extend_from_slice(&[protocol, 0, 0, 0]);
    let port: u16 = port.parse().map_err(|_| unsupported("not a port"))?;
    key.extend_from_slice(&port.to_be_bytes());
    key.extend_from_slice(&[0, 0]);
    Ok(key)
}

/// Writes one expression: its name and its attributes.
fn expression(buffer: &mut Buffer, name: &str, data: impl FnOnce(&mut Buffer)) {
    buffer.begin_nested(NFTA_LIST_ELEM);
    buffer.string(NFTA_EXPR_NAME, name);
    buffer.begin_nested(NFTA_EXPR_DATA);
    data(buffer);
    buffer.end_nested();
    buffer.end_nested();
}

fn payload(buffer: &mut Buffer, base: u32, offset: u32, length: u32, register: u32) {
    expression(buffer, "payload", |buffer| {
        buffer.u32_be(1, register); // NFTA_PAYLOAD_DREG
        buffer.u32_be(2, base);
        buffer.u32_be(3, offset);
        buffer.u32_be(4, length);
    });
}

fn meta_load(buffer: &mut Buffer, key: u32, register: u32) {
    expression(buffer, "meta", |buffer| {
        buffer.u32_be(1, register); // NFTA_META_DREG
        buffer.u32_be(2, key);
    });
}

fn data_value(buffer: &mut Buffer, kind: u16, value: &[u8]) {
    buffer.begin_nested(kind);
    buffer.attribute(NFTA_DATA_VALUE, value);
    buffer.end_nested();
}

fn cmp(buffer: &mut Buffer, operator: u32, value: &[u8]) {
    expression(buffer, "cmp", |buffer| {
        buffer.u32_be(1, NFT_REG_1); // NFTA_CMP_SREG
        buffer.u32_be(2, operator);
        data_value(buffer, 3, value);
    });
}

/// `register = (register & mask) ^ xor` over `mask.len()` bytes.
fn bitwise(buffer: &mut Buffer, mask: &[u8], xor: &[u8]) {
    expression(buffer, "bitwise", |buffer| {
        buffer.u32_be(1, NFT_REG_1); // NFTA_BITWISE_SREG
        buffer.u32_be(2, NFT_REG_1);
        buffer.u32_be(3, mask.len() as u32);
        data_value(buffer, 4, mask);
        data_value(buffer, 5, xor);
    });
}

fn immediate_verdict(buffer: &mut Buffer, verdict: &str) -> Result<(), Unsupported> {
    let mut result = Ok(());
    expression(buffer, "immediate", |buffer| {
        buffer.u32_be(1, NFT_REG_VERDICT); // NFTA_IMMEDIATE_DREG
        buffer.begin_nested(2); // NFTA_IMMEDIATE_DATA
        result = write_verdict(buffer, verdict);
        buffer.end_nested();
    });
    result
}

fn immediate_value(buffer: &mut Buffer, register: u32, value: &[u8]) {
    expression(buffer, "immediate", |buffer| {
        buffer.u32_be(1, register);
        data_value(buffer, 2, value);
    });
}

fn lookup(buffer: &mut Buffer, set: &str, verdict_map: bool) {
    expression(buffer, "lookup", |buffer| {
        buffer.string(1, set); // NFTA_LOOKUP_SET
        buffer.u32_be(2, NFT_REG_1); // NFTA_LOOKUP_SREG
        if verdict_map {
            buffer.u32_be(3, NFT_REG_VERDICT); // NFTA_LOOKUP_DREG
        }
    });
}

fn fib_local(buffer: &mut Buffer, flags: u32) {
    expression(buffer, "fib", |buffer| {
        buffer.u32_be(1, NFT_REG_1); // NFTA_FIB_DREG
        buffer.u32_be(2, NFT_FIB_RESULT_ADDRTYPE);
        buffer.u32_be(3, flags);
    });
    cmp(buffer, NFT_CMP_EQ, &RTN_LOCAL.to_ne_bytes());
}

/// `ip saddr|daddr [!=] ADDRESS[/PREFIX]`: a prefix of whole bytes
/// compares those bytes, any other masks the address first (as nft does).
fn address_match(
    buffer: &mut Buffer,
    offset: u32,
    operator: u32,
    value: &str,
) -> Result<(), String> {
    let (address, prefix) = match value.split_once('/') {
        Some((address, prefix)) => (
            address,
            prefix.parse::<u32>().map_err(|_| "bad prefix length")?,
        ),
        None => (value, 32),
    };
    let address: Ipv4Addr = address.parse().map_err(|_| "not an IPv4 address")?;
    if prefix == 0 || prefix > 32 {
        return Err("prefix length out of 1..=32".into());
    }
    let mask = u32::MAX << (32 - prefix);
    let network = (u32::from(address) & mask).to_be_bytes();
    if prefix % 8 == 0 {
        let length = (prefix / 8) as usize;
        payload(
            buffer,
            NFT_PAYLOAD_NETWORK_HEADER,
            offset,
            length as u32,
            NFT_REG_1,
        );
        cmp(buffer, operator, &network[..length]);
    } else {
        payload(buffer, NFT_PAYLOAD_NETWORK_HEADER, offset, 4, NFT_REG_1);
        bitwise(buffer, &mask.to_be_bytes(), &[0; 4]);
        cmp(buffer, operator, &network);
    }
    Ok(())
}

/// One field of a concatenation: its expression, loading into `register`,
/// and its length in bytes.
fn concat_field(buffer: &mut Buffer, field: &str, register: u32) -> Result<u32, String> {
    match field {
        "ip daddr" => payload(buffer, NFT_PAYLOAD_NETWORK_HEADER, 16, 4, register),
        "ip saddr" => payload(buffer, NFT_PAYLOAD_NETWORK_HEADER, 12, 4, register),
        "meta l4proto" => {
            meta_load(buffer, NFT_META_L4PROTO, register);
            return Ok(1);
        }
        "th dport" => {
            payload(buffer, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, register);
            return Ok(2);
        }
        _ => return Err(format!("unknown concatenation field '{field}'")),
    }
    Ok(4)
}

/// Writes the expressions of one rule, as `NFTA_RULE_EXPRESSIONS`' items.
pub fn write_rule(buffer: &mut Buffer, text: &str) -> Result<(), Unsupported> {
    compile_rule(buffer, text).map_err(|reason| Unsupported {
        text: text.to_string(),
        reason,
    })
}

fn compile_rule(buffer: &mut Buffer, text: &str) -> Result<(), String> {
    // `… vmap @MAP`: a concatenation looked up in a verdict map; what comes
    // before the concatenation are ordinary matches.
    if let Some((head, map)) = text.split_once(" vmap @") {
        let mut fields: Vec<&str> = head.split(" . ").collect();
        let first = fields.remove(0);
        // The first field is the head's last two words.
        let words: Vec<&str> = first.split_whitespace().collect();
        if words.len() < 2 {
            return Err("a vmap without a key".into());
        }
        let (matches, first_field) = words.split_at(words.len() - 2);
        compile_matches(buffer, matches)?;
        let mut register_word = 0;
        let mut fields_all = vec![first_field.join(" ")];
        fields_all.extend(fields.iter().map(|field| field.to_string()));
        for (index, field) in fields_all.iter().enumerate() {
            // The first field goes to the 128-bit register 1 (which is the
            // first four 32-bit ones), the others after it, as nft does.
            let register = if index == 0 {
                NFT_REG_1
            } else {
                NFT_REG32_00 + register_word
            };
            let length = concat_field(buffer, field.trim(), register)?;
            register_word += length.div_ceil(4);
        }
        lookup(buffer, map.trim(), true);
        return Ok(());
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    compile_matches(buffer, &words)
}

/// Matches, then the statement that ends the rule.
fn compile_matches(buffer: &mut Buffer, words: &[&str]) -> Result<(), String> {
    let mut index = 0;
    while index < words.len() {
        let rest = &words[index..];
        match rest {
            ["ip", field @ ("saddr" | "daddr"), value, ..] => {
                let offset = if *field == "saddr" { 12 } else { 16 };
                let (operator, value, used) = if *value == "!=" {
                    let value = rest.get(3).ok_or("'!=' without a value")?;
                    (NFT_CMP_NEQ, *value, 4)
                } else {
                    (NFT_CMP_EQ, *value, 3)
                };
                if let Some(set) = value.strip_prefix('@') {
                    if operator != NFT_CMP_EQ {
                        return Err("a negated set lookup".into());
                    }
                    payload(buffer, NFT_PAYLOAD_NETWORK_HEADER, offset, 4, NFT_REG_1);
                    lookup(buffer, set, false);
                } else {
                    address_match(buffer, offset, operator, value)?;
                }
                index += used;
            }
            ["meta", "l4proto", protocol, ..] => {
                let number = protocol_number(protocol)
                    .ok_or_else(|| format!("unknown protocol '{protocol}'"))?;
                meta_load(buffer, NFT_META_L4PROTO, NFT_REG_1);
                cmp(buffer, NFT_CMP_EQ, &[number]);
                index += 3;
            }
            ["meta", "mark", "&", mask, "==", value, ..] => {
                let mask = parse_u32(mask)?;
                let value = parse_u32(value)?;
                meta_load(buffer, NFT_META_MARK, NFT_REG_1);
                bitwise(buffer, &mask.to_ne_bytes(), &[0; 4]);
                cmp(buffer, NFT_CMP_EQ, &value.to_ne_bytes());
                index += 6;
            }
            ["meta", "mark", "set", "meta", "mark", operator, bits] => {
                let bits = parse_u32(bits)?;
                // `mark | bits` is `(mark & !bits) ^ bits`; `mark xor bits`
                // is `(mark & all) ^ bits`.
                let mask = match *operator {
                    "|" => !bits,
                    "xor" => u32::MAX,
                    other => return Err(format!("unknown mark operator '{other}'")),
                };
                meta_load(buffer, NFT_META_MARK, NFT_REG_1);
                bitwise(buffer, &mask.to_ne_bytes(), &bits.to_ne_bytes());
                expression(buffer, "meta", |buffer| {
                    buffer.u32_be(2, NFT_META_MARK); // NFTA_META_KEY
                    buffer.u32_be(3, NFT_REG_1); // NFTA_META_SREG
                });
                return Ok(());
            }
            ["fib", field @ ("saddr" | "daddr"), "type", "local", ..] => {
                let flags = if *field == "saddr" {
                    NFTA_FIB_F_SADDR
                } else {
                    NFTA_FIB_F_DADDR
                };
                fib_local(buffer, flags);
                index += 4;
            }
            ["ct", "state", "new", ..] => {
                expression(buffer, "ct", |buffer| {
                    buffer.u32_be(1, NFT_REG_1); // NFTA_CT_DREG
                    buffer.u32_be(2, NFT_CT_STATE);
                });
                bitwise(buffer, &CT_STATE_NEW.to_ne_bytes(), &[0; 4]);
                cmp(buffer, NFT_CMP_NEQ, &[0; 4]);
                index += 3;
            }
            ["numgen", "random", "mod", modulus, "==", value, ..] => {
                let modulus: u32 = modulus.parse().map_err(|_| "bad numgen modulus")?;
                let value: u32 = value.parse().map_err(|_| "bad numgen value")?;
                expression(buffer, "numgen", |buffer| {
                    buffer.u32_be(1, NFT_REG_1); // NFTA_NG_DREG
                    buffer.u32_be(2, modulus);
                    buffer.u32_be(3, NFT_NG_RANDOM);
                    buffer.u32_be(4, 0); // NFTA_NG_OFFSET
                });
                cmp(buffer, NFT_CMP_EQ, &value.to_ne_bytes());
                index += 6;
            }
            _ => return compile_statement(buffer, rest),
        }
    }
    Ok(())
}

fn parse_u32(text: &str) -> Result<u32, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("not a number: '{text}'"))
}

fn compile_statement(buffer: &mut Buffer, words: &[&str]) -> Result<(), String> {
    match words {
        [verdict @ ("goto" | "jump"), chain] => {
            immediate_verdict(buffer, &format!("{verdict} {chain}")).map_err(|error| error.reason)
        }
        [verdict @ ("drop" | "accept" | "return")] => {
            immediate_verdict(buffer, verdict).map_err(|error| error.reason)
        }
        ["dnat", "to", target] => {
            let (address, port) = target.split_once(':').ok_or("dnat without a port")?;
            let address: Ipv4Addr = address.parse().map_err(|_| "not an IPv4 address")?;
            let port: u16 = port.parse().map_err(|_| "not a port")?;
            immediate_value(buffer, NFT_REG_1, &address.octets());
            immediate_value(buffer, NFT_REG_2, &port.to_be_bytes());
            expression(buffer, "nat", |buffer| {
                buffer.u32_be(1, NFT_NAT_DNAT); // NFTA_NAT_TYPE
                buffer.u32_be(2, NFPROTO_IPV4);
                buffer.u32_be(3, NFT_REG_1); // NFTA_NAT_REG_ADDR_MIN
                buffer.u32_be(5, NFT_REG_2); // NFTA_NAT_REG_PROTO_MIN
                buffer.u32_be(7, NF_NAT_RANGE_PROTO_SPECIFIED); // NFTA_NAT_FLAGS
            });
            Ok(())
        }
        ["update", set, "{", "ip", "saddr", "}"] => {
            let set = set.strip_prefix('@').ok_or("update without a set")?;
            payload(buffer, NFT_PAYLOAD_NETWORK_HEADER, 12, 4, NFT_REG_1);
            expression(buffer, "dynset", |buffer| {
                buffer.string(1, set); // NFTA_DYNSET_SET_NAME
                buffer.u32_be(3, NFT_DYNSET_OP_UPDATE);
                buffer.u32_be(4, NFT_REG_1); // NFTA_DYNSET_SREG_KEY
            });
            Ok(())
        }
        ["masquerade", "fully-random"] => {
            expression(buffer, "masq", |buffer| {
                buffer.u32_be(1, NF_NAT_RANGE_PROTO_RANDOM_FULLY); // NFTA_MASQ_FLAGS
            });
            Ok(())
        }
        ["reject", "with", "tcp", "reset"] => {
            expression(buffer, "reject", |buffer| {
                buffer.u32_be(1, NFT_REJECT_TCP_RST); // NFTA_REJECT_TYPE
                buffer.attribute(2, &[0]); // NFTA_REJECT_ICMP_CODE
            });
            Ok(())
        }
        ["reject"] => {
            expression(buffer, "reject", |buffer| {
                buffer.u32_be(1, NFT_REJECT_ICMP_UNREACH);
                buffer.attribute(2, &[ICMP_PORT_UNREACH]);
            });
            Ok(())
        }
        [] => Ok(()),
        _ => Err(format!("unknown statement '{}'", words.join(" "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_shape_the_proxy_writes_compiles() {
        for rule in [
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
            "ct state new jump service-endpoints-check",
            "meta mark set meta mark | 0x4000",
            "meta mark & 0x4000 == 0 return",
            "meta mark set meta mark xor 0x4000",
            "masquerade fully-random",
            "meta l4proto tcp reject with tcp reset",
            "reject",
            "ip saddr 10.42.0.6 jump mark-for-masquerade",
            "update @aff-30-x { ip saddr }",
            "meta l4proto udp dnat to 10.42.0.6:53",
            "ip daddr 10.43.0.5 ip saddr != 10.40.0.0/13 jump mark-for-masquerade",
            "ip saddr @aff-30-x goto ep-x",
            "numgen random mod 2 == 0 goto ep-x",
            "fib saddr type local goto ep-x",
            "drop",
        ] {
            let mut buffer = Buffer::default();
            write_rule(&mut buffer, rule).unwrap_or_else(|error| panic!("{error}"));
            assert!(!buffer.is_empty(), "{rule}");
        }
    }

    #[test]
    fn an_unknown_shape_is_an_error_naming_it() {
        for rule in [
            "ip saddr 300.1.1.1 drop",
            "meta l4proto icmp drop",
            "log prefix x",
            "ip saddr != @set drop",
        ] {
            let error = write_rule(&mut Buffer::default(), rule).unwrap_err();
            assert_eq!(error.text, rule);
        }
    }

    #[test]
    fn element_keys_pad_each_field_to_four_bytes() {
        assert_eq!(
            element_key("10.43.0.5 . tcp . 80").unwrap(),
            vec![10, 43, 0, 5, 6, 0, 0, 0, 0, 80, 0, 0]
        );
        assert_eq!(
            element_key("udp . 30053").unwrap(),
            vec![17, 0, 0, 0, 0x75, 0x65, 0, 0]
        );
        assert!(element_key("tcp").is_err());
    }
}
