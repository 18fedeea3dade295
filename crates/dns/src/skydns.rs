//! SkyDNS's records: keys under `/skydns/` holding JSON service entries,
//! named by their key's labels reversed (`/skydns/local/skydns/east/rails`
//! is `rails.east.skydns.local.`). A name answers with the entries at it
//! and below it, as SkyDNS does.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::zone::{Zone, ZoneBuilder};

/// Where SkyDNS keeps its entries.
pub const KEY_PREFIX: &str = "/skydns/";

/// SkyDNS's TTL when an entry gives none.
const DEFAULT_TTL_SECONDS: u32 = 3600;
/// SkyDNS's priority when an entry gives none.
const DEFAULT_PRIORITY: u16 = 10;

/// One entry, as SkyDNS's `msg.Service` spells it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Entry {
    pub host: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub priority: Option<u16>,
    #[serde(default)]
    pub weight: Option<u16>,
    #[serde(default)]
    pub ttl: Option<u32>,
    #[serde(default)]
    pub text: Option<String>,
}

/// Why a key under `/skydns/` gives no record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("key {key} is not a domain name: {reason}")]
    BadKey { key: String, reason: String },
    #[error("value of {key} is not a SkyDNS entry: {reason}")]
    BadValue { key: String, reason: String },
}

/// The name a key stands for: its labels after `/skydns/`, reversed.
pub fn key_to_name(key: &str) -> Result<Name, EntryError> {
    let bad = |reason: &str| EntryError::BadKey {
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let path = key
        .strip_prefix(KEY_PREFIX)
        .ok_or_else(|| bad("not under /skydns/"))?;
    let labels: Vec<&str> = path
        .split('/')
        .filter(|label| !label.is_empty())
        .rev()
        .collect();
    if labels.is_empty() {
        return Err(bad("no labels"));
    }
    let mut name = Name::from_labels(labels.iter().map(|label| label.as_bytes()))
        .map_err(|error| bad(&error.to_string()))?;
    name.set_fqdn(true);
    Ok(name)
}

/// Parses one stored value.
pub fn parse_entry(key: &str, value: &[u8]) -> Result<Entry, EntryError> {
    let entry: Entry = serde_json::from_slice(value).map_err(|error| EntryError::BadValue {
        key: key.to_string(),
        reason: error.to_string(),
    })?;
    if entry.host.is_empty() {
        return Err(EntryError::BadValue {
            key: key.to_string(),
            reason: "host is empty".to_string(),
        });
    }
    if entry.host.parse::<IpAddr>().is_err() && Name::from_ascii(&entry.host).is_err() {
        return Err(EntryError::BadValue {
            key: key.to_string(),
            reason: format!("host {:?} is neither an address nor a name", entry.host),
        });
    }
    Ok(entry)
}

/// The entries under `/skydns/` that parsed, by key.
pub type Entries = BTreeMap<String, (Name, Entry)>;

/// Builds the zone at `domain` (e.g. `skydns.local.`) from `entries`;
/// entries named outside it are left out, as SkyDNS serves one domain.
pub fn build(domain: &Name, entries: &Entries, serial: u32) -> Zone {
    let mut zone = ZoneBuilder::new(domain.clone(), serial, 60);
    // The entries that count at each name: their own and their
    // descendants'. Weights split among equal priorities per name.
    let mut by_name: BTreeMap<Name, Vec<(&Name, &Entry)>> = BTreeMap::new();
    for (name, entry) in entries.values() {
        if !domain.zone_of(name) {
            continue;
        }
        zone.ensure_exists(name);
        let mut at = name.clone();
        loop {
            by_name.entry(at.clone()).or_default().push((name, entry));
            if at.num_labels() <= domain.num_labels() {
                break;
            }
            at = at.base_name();
        }
    }
    for (at, found) in &by_name {
        let mut n_per_priority: BTreeMap<u16, u16> = BTreeMap::new();
        for (_, entry) in found {
            *n_per_priority
                .entry(entry.priority.unwrap_or(DEFAULT_PRIORITY))
                .or_default() += 1;
        }
        for (own_name, entry) in found {
            let ttl = entry.ttl.unwrap_or(DEFAULT_TTL_SECONDS);
            let priority = entry.priority.unwrap_or(DEFAULT_PRIORITY);
            let weight = entry.weight.unwrap_or_else(|| {
                100 / n_per_priority.get(&priority).copied().unwrap_or(1).max(1)
            });
            let address = entry.host.parse::<IpAddr>().ok();
            let target = match address {
                // An address has no name of its own: the SRV target is the
                // entry's name, whose address goes in the additional section.
                Some(_) => (*own_name).clone(),
                None => {
                    let mut target = Name::from_ascii(&entry.host).expect("checked when parsed");
                    target.set_fqdn(true);
                    target
                }
            };
            zone.add_at(
                at,
                Record::from_rdata(
                    at.clone(),
                    ttl,
                    RData::SRV(SRV::new(priority, weight, entry.port, target.clone())),
                ),
            );
            match address {
                Some(ip) => {
                    let data = match ip {
                        IpAddr::V4(ip) => RData::A(A(ip)),
                        IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
                    };
                    zone.add_at(at, Record::from_rdata(at.clone(), ttl, data.clone()));
                    zone.add_additional(
                        at,
                        RecordType::SRV,
                        Record::from_rdata(target.clone(), ttl, data),
                    );
                }
                None if *own_name == at => {
                    // A name standing for another: SkyDNS answers its
                    // address questions with a CNAME.
                    zone.add_at(
                        at,
                        Record::from_rdata(at.clone(), ttl, RData::CNAME(CNAME(target))),
                    );
                }
                None => {}
            }
            if let Some(text) = entry.text.as_ref().filter(|text| !text.is_empty()) {
                zone.add_at(
                    at,
                    Record::from_rdata(at.clone(), ttl, RData::TXT(TXT::new(vec![text.clone()]))),
                );
            }
        }
    }
    zone.finish()
}
