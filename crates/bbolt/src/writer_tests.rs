//! The writer checked against this crate's reader: what `write_db` and
//! `write_etcd_snapshot` lay out reads back entry for entry, across inline
//! buckets, multi-level trees and overflow pages. (etcd's own reader checks
//! the same files in shoal's `etcd_snapshot` test.)

use proto::mvccpb::KeyValue;

use crate::db::{Bucket, Db, Value};
use crate::error::BboltError;
use crate::etcd::{
    EtcdBackend, EtcdCluster, EtcdMember, StoredRevision, read_etcd_backend, write_etcd_snapshot,
};
use crate::writer::{BucketContents, write_db};

fn plain_entries(bucket: &Bucket<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    bucket
        .iter()
        .map(|entry| {
            let (key, value) = entry.unwrap();
            (key.to_vec(), value.as_bytes().unwrap().to_vec())
        })
        .collect()
}

fn numbered_entries(n_entries: usize, value_size: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n_entries)
        .map(|index| {
            (
                format!("key/{index:08}").into_bytes(),
                vec![(index % 251) as u8; value_size],
            )
        })
        .collect()
}

#[test]
fn every_bucket_reads_back_entry_for_entry() {
    let buckets = vec![
        BucketContents {
            name: b"small".to_vec(),
            entries: numbered_entries(3, 10),
        },
        BucketContents {
            name: b"empty".to_vec(),
            entries: Vec::new(),
        },
        // Thousands of entries: leaves under two levels of branches.
        BucketContents {
            name: b"many".to_vec(),
            entries: numbered_entries(40_000, 20),
        },
        // Values larger than a page, between small ones.
        BucketContents {
            name: b"large".to_vec(),
            entries: numbered_entries(5, 9_000),
        },
    ];
    let file = write_db(4096, &buckets).unwrap();
    assert_eq!(file.len() % 4096, 0, "a bbolt file is whole pages");

    let db = Db::open(&file).unwrap();
    assert_eq!(db.n_pages(), db.meta().high_water_pgid);
    assert_eq!(db.meta().freelist_pgid, u64::MAX);
    let names: Vec<Vec<u8>> = db
        .root()
        .iter()
        .map(|entry| entry.unwrap().0.to_vec())
        .collect();
    assert_eq!(
        names,
        [&b"empty"[..], b"large", b"many", b"small"],
        "buckets in byte order"
    );
    for bucket in &buckets {
        let stored = db.bucket(&bucket.name).unwrap().unwrap();
        assert_eq!(plain_entries(&stored), bucket.entries);
    }
    assert!(db.bucket(b"small").unwrap().unwrap().is_inline());
    assert!(db.bucket(b"empty").unwrap().unwrap().is_inline());
    let many = db.bucket(b"many").unwrap().unwrap();
    assert!(!many.is_inline());
    assert_eq!(many.depth().unwrap(), 3);
    let found = many.get(b"key/00031337").unwrap().unwrap();
    assert_eq!(found.as_bytes().unwrap(), vec![(31337 % 251) as u8; 20]);
}

/// Every page below the high-water mark is the meta pages or reachable from
/// the root exactly once: what bbolt's consistency check demands of a file
/// without a persisted freelist.
#[test]
fn every_page_is_reachable_once() {
    let buckets = vec![
        BucketContents {
            name: b"a".to_vec(),
            entries: numbered_entries(5_000, 30),
        },
        BucketContents {
            name: b"b".to_vec(),
            entries: numbered_entries(3, 5_000),
        },
    ];
    let file = write_db(4096, &buckets).unwrap();
    let db = Db::open(&file).unwrap();
    let mut seen = vec![0u32; db.n_pages() as usize];
    seen[0] = 1;
    seen[1] = 1;
    let mut pending = vec![db.meta().root_pgid];
    while let Some(pgid) = pending.pop() {
        let start = pgid as usize * 4096;
        let flags = u16::from_le_bytes([file[start + 8], file[start + 9]]);
        let count = usize::from(u16::from_le_bytes([file[start + 10], file[start + 11]]));
        let overflow = u32::from_le_bytes(file[start + 12..start + 16].try_into().unwrap());
        for page in pgid..=pgid + u64::from(overflow) {
            seen[page as usize] += 1;
        }
        for index in 0..count {
            let element = start + 16 + index * 16;
            if flags & 0x01 != 0 {
                let child = u64::from_le_bytes(file[element + 8..element + 16].try_into().unwrap());
                pending.push(child);
            } else if u32::from_le_bytes(file[element..element + 4].try_into().unwrap()) & 1 != 0 {
                let position =
                    u32::from_le_bytes(file[element + 4..element + 8].try_into().unwrap()) as usize;
                let key_size =
                    u32::from_le_bytes(file[element + 8..element + 12].try_into().unwrap())
                        as usize;
                let value = element + position + key_size;
                let root = u64::from_le_bytes(file[value..value + 8].try_into().unwrap());
                if root != 0 {
                    pending.push(root);
                }
            }
        }
    }
    assert!(
        seen.iter().all(|&count| count == 1),
        "pages seen other than once: {:?}",
        seen.iter()
            .enumerate()
            .filter(|(_, count)| **count != 1)
            .collect::<Vec<_>>()
    );
}

#[test]
fn unsorted_or_duplicate_input_is_refused() {
    let unsorted = BucketContents {
        name: b"x".to_vec(),
        entries: vec![(b"b".to_vec(), Vec::new()), (b"a".to_vec(), Vec::new())],
    };
    assert_eq!(
        write_db(4096, &[unsorted]).unwrap_err(),
        BboltError::Write("bucket \"x\"'s keys are not strictly ascending".to_owned())
    );
    let twice = BucketContents {
        name: b"x".to_vec(),
        entries: Vec::new(),
    };
    assert_eq!(
        write_db(4096, &[twice.clone(), twice]).unwrap_err(),
        BboltError::Write("bucket \"x\" is given twice".to_owned())
    );
    assert!(matches!(
        write_db(1000, &[]).unwrap_err(),
        BboltError::Write(_)
    ));
}

#[test]
fn an_etcd_snapshot_reads_back_with_its_trailer_checked() {
    let put = |main: i64, key: &str, value: &str, lease: i64| StoredRevision {
        main,
        sub: 0,
        tombstone: false,
        kv: KeyValue {
            key: key.as_bytes().to_vec().into(),
            create_revision: main,
            mod_revision: main,
            version: 1,
            value: value.as_bytes().to_vec().into(),
            lease,
        },
    };
    let mut revisions: Vec<StoredRevision> = (2..2_000)
        .map(|main| put(main, &format!("k/{main:05}"), "v", 0))
        .collect();
    revisions.push(put(2_000, "leased", "v", 0x77));
    // A tombstone handed over with a full record is stored as etcd stores
    // one: the key alone.
    let mut tombstone = put(2_001, "k/00002", "ignored", 5);
    tombstone.tombstone = true;
    revisions.push(tombstone);
    let backend = EtcdBackend {
        revisions,
        compact_revision: 10,
        scheduled_compact_revision: 10,
        consistent_index: 4_321,
        leases: vec![(0x77, 600)],
    };
    let cluster = EtcdCluster {
        members: vec![EtcdMember {
            id: 0xbdae_9bbc_11dd_390d,
            name: "e1".to_owned(),
            peer_urls: vec!["http://127.0.0.1:23801".to_owned()],
            client_urls: vec!["http://127.0.0.1:23791".to_owned()],
            is_learner: false,
        }],
        removed_member_ids: vec![0x10],
        cluster_version: Some("3.4.0".to_owned()),
        alarms: Vec::new(),
        auth_revision: 1,
        auth_enabled: None,
        auth_users: Vec::new(),
        auth_roles: Vec::new(),
    };
    let file = write_etcd_snapshot(backend.clone(), &cluster).unwrap();
    assert_eq!(file.len() % 4096, 32, "whole pages and the sha256 trailer");

    let read = read_etcd_backend(&file).unwrap();
    let mut expected = backend.clone();
    let last = expected.revisions.last_mut().unwrap();
    last.kv = KeyValue {
        key: last.kv.key.clone(),
        ..KeyValue::default()
    };
    assert_eq!(read, expected);

    let db = Db::open(&file).unwrap();
    assert!(db.had_snapshot_trailer());
    let members = db.bucket(b"members").unwrap().unwrap();
    assert_eq!(
        plain_entries(&members),
        [(
            b"bdae9bbc11dd390d".to_vec(),
            br#"{"id":13668033151171901709,"peerURLs":["http://127.0.0.1:23801"],"name":"e1","clientURLs":["http://127.0.0.1:23791"]}"#.to_vec()
        )],
        "the member as etcd 3.4 stores it"
    );
    let removed = db.bucket(b"members_removed").unwrap().unwrap();
    assert_eq!(
        plain_entries(&removed),
        [(b"10".to_vec(), b"removed".to_vec())]
    );
    let names: Vec<String> = db
        .root()
        .iter()
        .map(|entry| String::from_utf8(entry.unwrap().0.to_vec()).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "alarm",
            "auth",
            "authRoles",
            "authUsers",
            "cluster",
            "key",
            "lease",
            "members",
            "members_removed",
            "meta"
        ]
    );
    match db
        .bucket(b"cluster")
        .unwrap()
        .unwrap()
        .get(b"clusterVersion")
    {
        Ok(Some(Value::Bytes(version))) => assert_eq!(version, b"3.4.0"),
        other => panic!("clusterVersion: {other:?}"),
    }

    let mut damaged = file.clone();
    damaged[4096 * 2 + 100] ^= 1;
    assert_eq!(
        read_etcd_backend(&damaged).unwrap_err(),
        BboltError::Sha256Mismatch
    );
}

#[test]
fn revisions_out_of_order_are_refused() {
    let revision = |main: i64| StoredRevision {
        main,
        sub: 0,
        tombstone: false,
        kv: KeyValue::default(),
    };
    let backend = EtcdBackend {
        revisions: vec![revision(3), revision(2)],
        compact_revision: 0,
        scheduled_compact_revision: 0,
        consistent_index: 0,
        leases: Vec::new(),
    };
    let cluster = EtcdCluster {
        members: Vec::new(),
        removed_member_ids: Vec::new(),
        cluster_version: None,
        alarms: Vec::new(),
        auth_revision: 1,
        auth_enabled: None,
        auth_users: Vec::new(),
        auth_roles: Vec::new(),
    };
    assert_eq!(
        write_etcd_snapshot(backend, &cluster).unwrap_err(),
        BboltError::Etcd("revisions are not in strictly ascending order".to_owned())
    );
}
