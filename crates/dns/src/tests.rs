//! The resolver against the specification's cases and SkyDNS's layout,
//! from objects to answers with no I/O.

use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proptest::prelude::*;

use crate::resolve::{self, Outcome, Zones, describe};
use crate::server::{Handled, handle_packet};
use crate::{cluster, domain, skydns};

fn service(json: serde_json::Value) -> Service {
    serde_json::from_value(json).unwrap()
}

fn slice(json: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(json).unwrap()
}

/// A cluster with a ClusterIP service, a headless one with two ready
/// endpoints and one not ready, an ExternalName one, and an empty
/// namespace; SkyDNS entries from `skydns_values`.
fn zones(skydns_values: &[(&str, &str)]) -> Zones {
    let web = service(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.43.0.7", "clusterIPs": ["10.43.0.7"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                           {"port": 81}]}
    }));
    let db = service(serde_json::json!({
        "metadata": {"name": "db", "namespace": "prod"},
        "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}
    }));
    let db_slice = slice(serde_json::json!({
        "metadata": {"name": "db-abc", "namespace": "prod",
                     "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.42.1.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.42.2.6"], "conditions": {"ready": true}},
            {"addresses": ["10.42.3.7"], "conditions": {"ready": false}}
        ]
    }));
    let external = service(serde_json::json!({
        "metadata": {"name": "search", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "www.example.com"}
    }));
    let state = cluster::ClusterState {
        services: vec![&web, &db, &external],
        endpoint_slices: vec![&db_slice],
        namespaces: vec!["default", "prod", "empty"],
    };
    let built = cluster::build(&domain("cluster.local").unwrap(), &state, 1);
    let mut entries = skydns::Entries::new();
    for (key, value) in skydns_values {
        if let Ok(name) = skydns::key_to_name(key)
            && let Ok(entry) = skydns::parse_entry(key, value.as_bytes())
        {
            entries.insert(key.to_string(), (name, entry));
        }
    }
    Zones {
        cluster: Arc::new(built.forward),
        reverse_v4: Arc::new(built.reverse_v4),
        reverse_v6: Arc::new(built.reverse_v6),
        reverse_authority: vec![
            "10.43.0.0/16".parse().unwrap(),
            "10.42.0.0/16".parse().unwrap(),
        ],
        skydns: Arc::new(skydns::build(&domain("skydns.local").unwrap(), &entries, 1)),
    }
}

fn ask(zones: &Zones, name: &str, record_type: RecordType) -> Message {
    match resolve::resolve(zones, &resolve::query(7, name, record_type)) {
        Outcome::Answer(message) => message,
        Outcome::Forward => panic!("{name} {record_type} was forwarded"),
    }
}

fn answers(message: &Message) -> Vec<String> {
    let mut answers: Vec<String> = message.answers.iter().map(describe).collect();
    answers.sort();
    answers
}

fn assert_nodata(message: &Message) {
    assert_eq!(message.metadata.response_code, ResponseCode::NoError);
    assert!(message.answers.is_empty(), "{:?}", answers(message));
    assert_eq!(message.authorities[0].record_type(), RecordType::SOA);
}

fn assert_nxdomain(message: &Message) {
    assert_eq!(message.metadata.response_code, ResponseCode::NXDomain);
    assert!(message.answers.is_empty());
    assert_eq!(message.authorities[0].record_type(), RecordType::SOA);
}

#[test]
fn cluster_ip_service_has_a_srv_and_ptr_records() {
    let zones = zones(&[]);
    let reply = ask(&zones, "web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(
        answers(&reply),
        ["web.default.svc.cluster.local. A 10.43.0.7"]
    );
    assert!(reply.metadata.authoritative);
    assert_eq!(reply.answers[0].ttl, 5);
    let reply = ask(
        &zones,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        answers(&reply),
        ["_http._tcp.web.default.svc.cluster.local. SRV 0 100 80 web.default.svc.cluster.local."]
    );
    assert_eq!(
        describe(&reply.additionals[0]),
        "web.default.svc.cluster.local. A 10.43.0.7"
    );
    let reply = ask(&zones, "7.0.43.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        answers(&reply),
        ["7.0.43.10.in-addr.arpa. PTR web.default.svc.cluster.local."]
    );
    // The unnamed port has no SRV record.
    assert_nxdomain(&ask(
        &zones,
        "_81._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    ));
}

#[test]
fn headless_service_answers_with_its_ready_endpoints() {
    let zones = zones(&[]);
    let reply = ask(&zones, "db.prod.svc.cluster.local.", RecordType::A);
    assert_eq!(
        answers(&reply),
        [
            "db.prod.svc.cluster.local. A 10.42.1.5",
            "db.prod.svc.cluster.local. A 10.42.2.6"
        ]
    );
    let reply = ask(&zones, "db-0.db.prod.svc.cluster.local.", RecordType::A);
    assert_eq!(
        answers(&reply),
        ["db-0.db.prod.svc.cluster.local. A 10.42.1.5"]
    );
    let reply = ask(
        &zones,
        "_pg._tcp.db.prod.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        answers(&reply),
        [
            "_pg._tcp.db.prod.svc.cluster.local. SRV 0 50 5432 10-42-2-6.db.prod.svc.cluster.local.",
            "_pg._tcp.db.prod.svc.cluster.local. SRV 0 50 5432 db-0.db.prod.svc.cluster.local."
        ]
    );
    assert_eq!(reply.additionals.len(), 2);
    let reply = ask(&zones, "5.1.42.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        answers(&reply),
        ["5.1.42.10.in-addr.arpa. PTR db-0.db.prod.svc.cluster.local."]
    );
    // The endpoint that is not ready has no records.
    assert_nxdomain(&ask(
        &zones,
        "10-42-3-7.db.prod.svc.cluster.local.",
        RecordType::A,
    ));
    assert_nxdomain(&ask(&zones, "7.3.42.10.in-addr.arpa.", RecordType::PTR));
}

#[test]
fn existing_names_without_the_type_are_nodata_and_others_nxdomain() {
    let zones = zones(&[]);
    // An IPv4 cluster: AAAA is NODATA.
    assert_nodata(&ask(
        &zones,
        "web.default.svc.cluster.local.",
        RecordType::AAAA,
    ));
    // Namespaces, even without services, and the parents of names.
    assert_nodata(&ask(&zones, "empty.svc.cluster.local.", RecordType::A));
    assert_nodata(&ask(&zones, "default.svc.cluster.local.", RecordType::A));
    assert_nodata(&ask(&zones, "svc.cluster.local.", RecordType::A));
    assert_nodata(&ask(
        &zones,
        "_tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    ));
    assert_nxdomain(&ask(
        &zones,
        "nothere.default.svc.cluster.local.",
        RecordType::A,
    ));
    assert_nxdomain(&ask(&zones, "nothere.svc.cluster.local.", RecordType::A));
    assert_nxdomain(&ask(&zones, "99.0.43.10.in-addr.arpa.", RecordType::PTR));
    let soa = ask(&zones, "cluster.local.", RecordType::SOA);
    assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
}

#[test]
fn external_name_is_a_cname_and_version_a_txt() {
    let zones = zones(&[]);
    let reply = ask(&zones, "search.default.svc.cluster.local.", RecordType::A);
    assert_eq!(
        answers(&reply),
        ["search.default.svc.cluster.local. CNAME www.example.com."]
    );
    let reply = ask(&zones, "dns-version.cluster.local.", RecordType::TXT);
    assert_eq!(answers(&reply), ["dns-version.cluster.local. TXT 1.1.0"]);
}

#[test]
fn names_outside_our_zones_are_forwarded() {
    let zones = zones(&[]);
    for (name, record_type) in [
        ("example.com.", RecordType::A),
        ("4.3.2.1.in-addr.arpa.", RecordType::PTR),
    ] {
        assert!(matches!(
            resolve::resolve(&zones, &resolve::query(1, name, record_type)),
            Outcome::Forward
        ));
    }
}

#[test]
fn skydns_names_answer_with_the_records_at_and_below_them() {
    let zones = zones(&[
        (
            "/skydns/local/skydns/east/production/rails",
            r#"{"host":"service5.example.com","port":8080}"#,
        ),
        (
            "/skydns/local/skydns/east/production/web/1",
            r#"{"host":"10.0.0.1","port":80,"priority":5,"weight":7,"ttl":30}"#,
        ),
        (
            "/skydns/local/skydns/east/production/broken",
            r#"{"host": 12"#,
        ),
    ]);
    let reply = ask(&zones, "production.east.skydns.local.", RecordType::SRV);
    assert_eq!(
        answers(&reply),
        [
            "production.east.skydns.local. SRV 10 100 8080 service5.example.com.",
            "production.east.skydns.local. SRV 5 7 80 1.web.production.east.skydns.local."
        ]
    );
    assert_eq!(
        reply.additionals.iter().map(describe).collect::<Vec<_>>(),
        ["1.web.production.east.skydns.local. A 10.0.0.1"]
    );
    assert_eq!(reply.answers[1].ttl, 30);
    assert_eq!(reply.answers[0].ttl, 3600);
    let reply = ask(&zones, "rails.production.east.skydns.local.", RecordType::A);
    assert_eq!(
        answers(&reply),
        ["rails.production.east.skydns.local. CNAME service5.example.com."]
    );
    let reply = ask(&zones, "web.production.east.skydns.local.", RecordType::A);
    assert_eq!(
        answers(&reply),
        ["web.production.east.skydns.local. A 10.0.0.1"]
    );
    // The malformed entry is skipped, the rest answered.
    assert_nxdomain(&ask(
        &zones,
        "broken.production.east.skydns.local.",
        RecordType::SRV,
    ));
    assert_nxdomain(&ask(&zones, "west.skydns.local.", RecordType::SRV));
    assert_nodata(&ask(
        &zones,
        "web.production.east.skydns.local.",
        RecordType::TXT,
    ));
}

#[test]
fn skydns_keys_and_values_are_checked() {
    assert_eq!(
        skydns::key_to_name("/skydns/local/skydns/east/production/rails")
            .unwrap()
            .to_string(),
        "rails.production.east.skydns.local."
    );
    assert!(skydns::key_to_name("/other/key").is_err());
    assert!(skydns::parse_entry("k", br#"{"port":80}"#).is_err());
    assert!(skydns::parse_entry("k", br#"{"host":""}"#).is_err());
    assert!(skydns::parse_entry("k", b"not json").is_err());
    let entry = skydns::parse_entry("k", br#"{"host":"10.0.0.2","text":"hi"}"#).unwrap();
    assert_eq!(entry.host, "10.0.0.2");
    assert_eq!(entry.text.as_deref(), Some("hi"));
}

#[test]
fn malformed_packets_get_formerr_and_short_ones_nothing() {
    let zones = zones(&[]);
    // A header claiming one question that is not there.
    let packet = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    match handle_packet(&zones, &packet, true) {
        Handled::Reply(bytes) => {
            let reply = Message::from_vec(&bytes).unwrap();
            assert_eq!(reply.metadata.id, 0x1234);
            assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        handle_packet(&zones, &[1, 2, 3], true),
        Handled::Drop
    ));
}

#[test]
fn large_udp_answers_are_truncated() {
    let values: Vec<(String, String)> = (0..60)
        .map(|index| {
            (
                format!("/skydns/local/skydns/big/host{index}"),
                format!(r#"{{"host":"10.1.0.{index}","port":80}}"#),
            )
        })
        .collect();
    let borrowed: Vec<(&str, &str)> = values
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    let zones = zones(&borrowed);
    let packet = resolve::query(9, "big.skydns.local.", RecordType::SRV)
        .to_vec()
        .unwrap();
    let Handled::Reply(bytes) = handle_packet(&zones, &packet, true) else {
        panic!("no reply");
    };
    assert!(bytes.len() <= 512);
    let reply = Message::from_vec(&bytes).unwrap();
    assert!(reply.metadata.truncation);
    let Handled::Reply(bytes) = handle_packet(&zones, &packet, false) else {
        panic!("no reply over tcp");
    };
    assert_eq!(Message::from_vec(&bytes).unwrap().answers.len(), 60);
}

#[test]
fn resolv_conf_upstreams_skip_loopback() {
    let upstreams = crate::server::upstreams_from_resolv_conf(
        "# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch x\nnameserver ::1\nnameserver 2001:db8::1\n",
    );
    assert_eq!(
        upstreams,
        [
            "192.0.2.1:53".parse().unwrap(),
            "[2001:db8::1]:53".parse().unwrap()
        ]
    );
}

#[test]
fn cached_answers_are_the_full_paths_with_the_new_id_and_letters() {
    let zones = Arc::new(zones(&[]));
    let mut cache = crate::fastpath::AnswerCache::default();
    cache.follow(&zones);
    let mut key = Vec::new();
    let mut reply = Vec::new();
    let first = resolve::query(1, "web.default.svc.cluster.local.", RecordType::A)
        .to_vec()
        .unwrap();
    let query = crate::fastpath::read_query(&first, true, &mut key).expect("a plain query");
    assert!(!cache.answer(&key, &query, &first, &mut reply));
    let Handled::Reply(full) = handle_packet(&zones, &first, true) else {
        panic!("no reply");
    };
    cache.keep(&key, &full, &query);
    for (id, name, record_type) in [
        (2, "WEB.default.svc.Cluster.Local.", RecordType::A),
        (3, "nothere.default.svc.cluster.local.", RecordType::A),
        (4, "web.default.svc.cluster.local.", RecordType::AAAA),
    ] {
        let packet = resolve::query(id, name, record_type).to_vec().unwrap();
        let query = crate::fastpath::read_query(&packet, true, &mut key).unwrap();
        let Handled::Reply(full) = handle_packet(&zones, &packet, true) else {
            panic!("no reply");
        };
        if !cache.answer(&key, &query, &packet, &mut reply) {
            cache.keep(&key, &full, &query);
            assert!(cache.answer(&key, &query, &packet, &mut reply));
        }
        // The same message; names may be compressed differently, as
        // hickory compresses only names of the same letters.
        assert_eq!(
            Message::from_vec(&reply).unwrap(),
            Message::from_vec(&full).unwrap(),
            "{name} {record_type}"
        );
        assert_eq!(
            &reply[12..query_name_end(&packet)],
            &packet[12..query_name_end(&packet)]
        );
    }
    // New zones: the cache starts over.
    cache.follow(&Arc::new(zones_clone(&zones)));
    assert!(!cache.answer(&key, &query, &first, &mut reply));
}

fn query_name_end(packet: &[u8]) -> usize {
    let mut offset = 12;
    while packet[offset] != 0 {
        offset += 1 + usize::from(packet[offset]);
    }
    offset + 1
}

fn zones_clone(zones: &Zones) -> Zones {
    Zones {
        cluster: Arc::clone(&zones.cluster),
        reverse_v4: Arc::clone(&zones.reverse_v4),
        reverse_v6: Arc::clone(&zones.reverse_v6),
        reverse_authority: zones.reverse_authority.clone(),
        skydns: Arc::clone(&zones.skydns),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// No packet, however made, panics the handler; a reply it gives is a
    /// response with the packet's id.
    #[test]
    fn random_packets_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..600)) {
        let zones = zones(&[]);
        if let Handled::Reply(bytes) = handle_packet(&zones, &packet, true) {
            prop_assert!(bytes.len() >= 12);
            prop_assert_eq!(&bytes[..2], &packet[..2]);
            prop_assert!(bytes[2] & 0x80 != 0);
        }
    }

    /// Valid queries with random bits flipped never panic either.
    #[test]
    fn mangled_queries_never_panic(flips in proptest::collection::vec((0usize..64, any::<u8>()), 1..6)) {
        let zones = zones(&[]);
        let mut packet = resolve::query(3, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV)
            .to_vec()
            .unwrap();
        for (index, bits) in flips {
            let index = index % packet.len();
            packet[index] ^= bits;
        }
        let _ = handle_packet(&zones, &packet, true);
    }
}
