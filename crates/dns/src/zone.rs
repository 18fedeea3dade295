//! A zone answered from memory: every name that exists, with its records
//! grouped by type and the additional records each answer carries. Built
//! once per change of what it mirrors, then only read.

use std::collections::HashMap;

use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The records of one type at one name, and what goes in the additional
/// section when they are the answer (the addresses of SRV targets).
#[derive(Debug, Clone, Default)]
pub struct RecordSet {
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// A name that exists. Without record sets it is an empty non-terminal
/// (a parent of names that have records): asked about it, the answer is
/// NODATA, not NXDOMAIN.
#[derive(Debug, Clone, Default)]
pub struct Node {
    sets: Vec<(RecordType, RecordSet)>,
}

impl Node {
    pub fn get(&self, record_type: RecordType) -> Option<&RecordSet> {
        self.sets
            .iter()
            .find(|(set_type, _)| *set_type == record_type)
            .map(|(_, set)| set)
    }

    pub fn sets(&self) -> impl Iterator<Item = &RecordSet> {
        self.sets.iter().map(|(_, set)| set)
    }

    fn get_or_insert(&mut self, record_type: RecordType) -> &mut RecordSet {
        let index = match self
            .sets
            .iter()
            .position(|(set_type, _)| *set_type == record_type)
        {
            Some(index) => index,
            None => {
                self.sets.push((record_type, RecordSet::default()));
                self.sets.len() - 1
            }
        };
        &mut self.sets[index].1
    }
}

/// What a zone says about a name.
#[derive(Debug)]
pub enum Lookup<'zone> {
    /// The name is outside the zone.
    NotInZone,
    /// The name is in the zone and does not exist (NXDOMAIN).
    NoSuchName,
    /// The name exists; its records (possibly none of the type asked).
    Found(&'zone Node),
}

/// One zone: its apex, its SOA and its names (case-insensitive: hickory's
/// `Name` compares and hashes without case).
#[derive(Debug, Clone)]
pub struct Zone {
    apex: Name,
    soa: Record,
    nodes: HashMap<Name, Node>,
}

impl Zone {
    pub fn apex(&self) -> &Name {
        &self.apex
    }

    /// The SOA record, for the authority section of negative answers.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    pub fn lookup(&self, name: &Name) -> Lookup<'_> {
        if !self.apex.zone_of(name) {
            return Lookup::NotInZone;
        }
        match self.nodes.get(name) {
            Some(node) => Lookup::Found(node),
            None => Lookup::NoSuchName,
        }
    }

    /// Every name of the zone, for tests and for writing the zone out.
    pub fn names(&self) -> impl Iterator<Item = (&Name, &Node)> {
        self.nodes.iter()
    }
}

/// Builds a [`Zone`]: records are added at names, then `finish` makes
/// every name between a record's name and the apex exist.
pub struct ZoneBuilder {
    apex: Name,
    soa: Record,
    nodes: HashMap<Name, Node>,
}

impl ZoneBuilder {
    /// A zone at `apex` whose negative answers are cached for
    /// `negative_ttl_seconds` (the SOA's minimum and its own TTL).
    pub fn new(apex: Name, serial: u32, negative_ttl_seconds: u32) -> ZoneBuilder {
        let mname = Name::from_ascii("ns.dns")
            .and_then(|name| name.append_domain(&apex))
            .unwrap_or_else(|_| apex.clone());
        let rname = Name::from_ascii("hostmaster")
            .and_then(|name| name.append_domain(&apex))
            .unwrap_or_else(|_| apex.clone());
        // Refresh, retry and expire as CoreDNS's kubernetes plugin sets
        // them; nothing transfers this zone, they are for show.
        let soa = Record::from_rdata(
            apex.clone(),
            negative_ttl_seconds,
            RData::SOA(SOA::new(
                mname,
                rname,
                serial,
                7200,
                1800,
                86400,
                negative_ttl_seconds,
            )),
        );
        let mut nodes = HashMap::new();
        nodes
            .entry(apex.clone())
            .or_insert_with(Node::default)
            .get_or_insert(RecordType::SOA)
            .answers
            .push(soa.clone());
        ZoneBuilder { apex, soa, nodes }
    }

    pub fn apex(&self) -> &Name {
        &self.apex
    }

    /// Makes `name` exist with no records of its own (a namespace). A name
    /// outside the zone is ignored.
    pub fn ensure_exists(&mut self, name: &Name) {
        if self.apex.zone_of(name) {
            self.nodes.entry(name.clone()).or_default();
        }
    }

    /// Adds `record` at its own name, once (a record already there is not
    /// repeated). A record outside the zone is ignored.
    pub fn add(&mut self, record: Record) {
        let name = record.name.clone();
        self.add_at(&name, record);
    }

    /// Adds `record` to the answers for `at` (SkyDNS answers a name with
    /// the records below it too).
    pub fn add_at(&mut self, at: &Name, record: Record) {
        if !self.apex.zone_of(at) {
            return;
        }
        let set = self
            .nodes
            .entry(at.clone())
            .or_default()
            .get_or_insert(record.record_type());
        if !set.answers.contains(&record) {
            set.answers.push(record);
        }
    }

    /// Adds `record` to the additional section of answers of
    /// `answer_type` at `at`.
    pub fn add_additional(&mut self, at: &Name, answer_type: RecordType, record: Record) {
        if !self.apex.zone_of(at) {
            return;
        }
        let set = self
            .nodes
            .entry(at.clone())
            .or_default()
            .get_or_insert(answer_type);
        if !set.additionals.contains(&record) {
            set.additionals.push(record);
        }
    }

    pub fn finish(mut self) -> Zone {
        let names: Vec<Name> = self.nodes.keys().cloned().collect();
        let apex_labels = self.apex.num_labels();
        for name in names {
            let mut parent = name.base_name();
            while parent.num_labels() > apex_labels {
                if self.nodes.contains_key(&parent) {
                    // Its parents were made when it was.
                    break;
                }
                self.nodes.insert(parent.clone(), Node::default());
                parent = parent.base_name();
            }
        }
        Zone {
            apex: self.apex,
            soa: self.soa,
            nodes: self.nodes,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::rr::rdata::A;

    use super::*;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    #[test]
    fn parents_of_records_exist_and_other_names_do_not() {
        let mut builder = ZoneBuilder::new(name("cluster.local."), 1, 5);
        builder.add(Record::from_rdata(
            name("web.default.svc.cluster.local."),
            5,
            RData::A(A(Ipv4Addr::new(10, 43, 0, 7))),
        ));
        let zone = builder.finish();
        for existing in ["default.svc.cluster.local.", "svc.cluster.local."] {
            match zone.lookup(&name(existing)) {
                Lookup::Found(node) => assert!(node.get(RecordType::A).is_none()),
                other => panic!("{existing}: {other:?}"),
            }
        }
        match zone.lookup(&name("WEB.Default.svc.cluster.local.")) {
            Lookup::Found(node) => assert_eq!(node.get(RecordType::A).unwrap().answers.len(), 1),
            other => panic!("case-insensitive lookup: {other:?}"),
        }
        assert!(matches!(
            zone.lookup(&name("db.default.svc.cluster.local.")),
            Lookup::NoSuchName
        ));
        assert!(matches!(
            zone.lookup(&name("example.com.")),
            Lookup::NotInZone
        ));
    }
}
