//! Answers one query from the zones, without I/O: a response to send, or
//! word that the name is someone else's (forward it upstream).

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::zone::{Lookup, Zone};

/// The UDP payload size we advertise and answer up to with EDNS (the
/// DNS flag day 2020 value, safe from fragmentation).
pub const EDNS_PAYLOAD: u16 = 1232;

/// The most CNAMEs followed inside our zones for one answer.
const MAX_CNAME_CHAIN: usize = 8;

/// Everything the server answers for, swapped whole when it changes.
pub struct Zones {
    /// The cluster domain (`cluster.local.`).
    pub cluster: Arc<Zone>,
    /// PTR records of service and endpoint addresses.
    pub reverse_v4: Arc<Zone>,
    pub reverse_v6: Arc<Zone>,
    /// The ranges whose reverse names we answer for (NXDOMAIN when no
    /// record): the service range and the pod range. Other reverse names
    /// with no record of ours are forwarded.
    pub reverse_authority: Vec<ipnet::IpNet>,
    /// SkyDNS's domain (`skydns.local.`).
    pub skydns: Arc<Zone>,
}

/// What to do with a query.
#[derive(Debug)]
pub enum Outcome {
    /// Send this response.
    Answer(Message),
    /// The name is not ours: ask the upstream resolvers.
    Forward,
}

/// Answers `request` (already decoded) from `zones`.
pub fn resolve(zones: &Zones, request: &Message) -> Outcome {
    if request.metadata.op_code != OpCode::Query {
        return Outcome::Answer(error_response(request, ResponseCode::NotImp));
    }
    let [query] = request.queries.as_slice() else {
        return Outcome::Answer(error_response(request, ResponseCode::FormErr));
    };
    if query.query_class() != DNSClass::IN && query.query_class() != DNSClass::ANY {
        return Outcome::Answer(error_response(request, ResponseCode::Refused));
    }
    let name = query.name();
    let Some(zone) = zone_for(zones, name) else {
        return Outcome::Forward;
    };
    let mut response = response_to(request);
    response.metadata.authoritative = true;
    let record_type = query.query_type();
    let mut current = name.clone();
    for _ in 0..MAX_CNAME_CHAIN {
        let current_zone = if zone.apex().zone_of(&current) {
            zone
        } else {
            match zone_for(zones, &current) {
                Some(other) => other,
                // A CNAME out of our zones: the client's resolver follows it.
                None => break,
            }
        };
        match current_zone.lookup(&current) {
            Lookup::NotInZone => break,
            Lookup::NoSuchName => {
                if response.answers.is_empty() {
                    response.metadata.response_code = ResponseCode::NXDomain;
                }
                response.add_authority(current_zone.soa().clone());
                break;
            }
            Lookup::Found(node) => {
                if record_type == RecordType::ANY {
                    for set in node.sets() {
                        response.add_answers(set.answers.iter().cloned());
                    }
                    break;
                }
                if let Some(set) = node.get(record_type).filter(|set| !set.answers.is_empty()) {
                    response.add_answers(set.answers.iter().cloned());
                    response.add_additionals(set.additionals.iter().cloned());
                    break;
                }
                if let Some(cname) = node
                    .get(RecordType::CNAME)
                    .and_then(|set| set.answers.first())
                    .filter(|_| record_type != RecordType::CNAME)
                {
                    response.add_answer(cname.clone());
                    let RData::CNAME(target) = &cname.data else {
                        break;
                    };
                    current = target.0.clone();
                    continue;
                }
                // The name exists without records of this type: NODATA.
                response.add_authority(current_zone.soa().clone());
                break;
            }
        }
    }
    Outcome::Answer(response)
}

/// The zone that answers for `name`, if any.
fn zone_for<'zones>(zones: &'zones Zones, name: &Name) -> Option<&'zones Zone> {
    if zones.cluster.apex().zone_of(name) {
        return Some(&*zones.cluster);
    }
    if zones.skydns.apex().zone_of(name) {
        return Some(&*zones.skydns);
    }
    for reverse in [&*zones.reverse_v4, &*zones.reverse_v6] {
        if reverse.apex().zone_of(name) {
            if let Lookup::Found(_) = reverse.lookup(name) {
                return Some(reverse);
            }
            let authoritative = reverse_address(name).is_some_and(|ip| {
                zones
                    .reverse_authority
                    .iter()
                    .any(|range| range.contains(&ip))
            });
            return authoritative.then_some(reverse);
        }
    }
    None
}

/// The address a full reverse name (`4.3.2.1.in-addr.arpa.`) stands for.
fn reverse_address(name: &Name) -> Option<IpAddr> {
    let labels: Vec<String> = name
        .iter()
        .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
        .collect();
    match labels.as_slice() {
        [d, c, b, a, in_addr, arpa] if in_addr == "in-addr" && arpa == "arpa" => {
            format!("{a}.{b}.{c}.{d}").parse().ok()
        }
        [nibbles @ .., ip6, arpa] if ip6 == "ip6" && arpa == "arpa" && nibbles.len() == 32 => {
            let mut text = String::with_capacity(39);
            for (index, nibble) in nibbles.iter().rev().enumerate() {
                if index > 0 && index % 4 == 0 {
                    text.push(':');
                }
                text.push_str(nibble);
            }
            text.parse().ok()
        }
        _ => None,
    }
}

/// A response to `request` with its question and no records yet.
pub fn response_to(request: &Message) -> Message {
    let mut response = Message::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.checking_disabled = request.metadata.checking_disabled;
    response.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        response.set_edns(edns);
    }
    response
}

/// A response carrying only `code`.
pub fn error_response(request: &Message, code: ResponseCode) -> Message {
    let mut response = response_to(request);
    response.metadata.response_code = code;
    response
}

/// The answer to `request` cut to `max_bytes`: when the whole one does
/// not fit, the question alone with TC set, so the client asks over TCP.
pub fn encode_within(response: &Message, max_bytes: usize) -> Option<Vec<u8>> {
    let bytes = response.to_vec().ok()?;
    if bytes.len() <= max_bytes {
        return Some(bytes);
    }
    let mut truncated = response.truncate();
    truncated.metadata.message_type = MessageType::Response;
    truncated.to_vec().ok()
}

/// The most a UDP response to `request` may hold: the client's EDNS size
/// (at most ours), or 512 bytes without EDNS.
pub fn udp_limit(request: &Message) -> usize {
    match &request.edns {
        Some(edns) => usize::from(edns.max_payload().clamp(512, EDNS_PAYLOAD)),
        None => 512,
    }
}

/// For tests and tools: a query message.
pub fn query(id: u16, name: &str, record_type: RecordType) -> Message {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(
        Name::from_ascii(name).expect("a valid name"),
        record_type,
    ));
    message
}

/// Shared, swappable zones: readers take an `Arc` under a brief read lock
/// and answer from it with no lock held.
#[derive(Clone)]
pub struct SharedZones(Arc<parking_lot::RwLock<Arc<Zones>>>);

impl SharedZones {
    pub fn new(zones: Zones) -> SharedZones {
        SharedZones(Arc::new(parking_lot::RwLock::new(Arc::new(zones))))
    }

    pub fn current(&self) -> Arc<Zones> {
        Arc::clone(&self.0.read())
    }

    /// Replaces the zones with what `change` makes of the current ones.
    pub fn update(&self, change: impl FnOnce(&Zones) -> Zones) {
        let mut current = self.0.write();
        *current = Arc::new(change(&current));
    }
}

/// Records as `dig` prints their data, for tests.
pub fn describe(record: &Record) -> String {
    format!("{} {} {}", record.name, record.record_type(), record.data)
}
