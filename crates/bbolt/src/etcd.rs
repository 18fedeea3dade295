//! etcd 3.4's backend layout over a bbolt file: the `key` bucket of MVCC
//! revisions, the `meta` bucket's consistent index and compaction marks, the
//! `lease` bucket, and (written, not read back) the membership, cluster
//! version, alarm and auth buckets. `read_etcd_backend` is the migration path
//! from etcd; `write_etcd_snapshot` makes the file etcd's own tools take.

use prost::Message;
use proto::etcdserverpb::AlarmMember;
use proto::mvccpb::KeyValue;
use sha2::{Digest, Sha256};

use crate::db::{Bucket, Db, Value};
use crate::error::BboltError;
use crate::writer::{BucketContents, DEFAULT_PAGE_SIZE, write_db};

/// A revision key: 8-byte big-endian main, `_`, 8-byte big-endian sub.
const REVISION_KEY_SIZE: usize = 17;
/// Appended to a revision key when the revision deletes its key.
const TOMBSTONE_MARK: u8 = b't';

/// What an etcd 3.4 backend holds that a restore needs.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdBackend {
    /// Every stored revision in ascending (main, sub) order.
    pub revisions: Vec<StoredRevision>,
    /// The main revision of `finishedCompactRev`, 0 if none.
    pub compact_revision: i64,
    /// The main revision of `scheduledCompactRev`, 0 if none. Above
    /// `compact_revision` only if etcd stopped mid-compaction; etcd finishes
    /// that compaction when it next starts.
    pub scheduled_compact_revision: i64,
    pub consistent_index: u64,
    /// (lease id, granted TTL in seconds), in ascending id order.
    pub leases: Vec<(i64, i64)>,
}

/// One record of the `key` bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRevision {
    pub main: i64,
    pub sub: i64,
    /// The revision deletes its key. etcd stores only the key in a
    /// tombstone's `kv`: every other field is zero.
    pub tombstone: bool,
    pub kv: KeyValue,
}

/// etcd's leasepb.Lease, as the `lease` bucket stores it.
#[derive(Clone, PartialEq, prost::Message)]
struct Lease {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
    #[prost(int64, tag = "3")]
    remaining_ttl: i64,
}

/// Reads an etcd 3.4 backend: a bbolt file, with or without the sha256
/// trailer `etcdctl snapshot save` leaves.
pub fn read_etcd_backend(bytes: &[u8]) -> Result<EtcdBackend, BboltError> {
    let db = Db::open(bytes)?;
    let key_bucket = required_bucket(&db, "key")?;
    let meta_bucket = required_bucket(&db, "meta")?;

    let mut revisions = Vec::new();
    for entry in key_bucket.iter() {
        let (key, value) = entry?;
        let (main, sub, tombstone) = parse_revision_key(key).ok_or_else(|| {
            etcd_error(format!("key bucket entry {} is not a revision", hex(key)))
        })?;
        let value = plain_value(value, "key", key)?;
        let kv = KeyValue::decode(value).map_err(|error| {
            etcd_error(format!(
                "revision {main}_{sub} does not hold a KeyValue: {error}"
            ))
        })?;
        revisions.push(StoredRevision {
            main,
            sub,
            tombstone,
            kv,
        });
    }

    let consistent_index = match meta_bucket.get(b"consistent_index")? {
        None => 0,
        Some(value) => {
            let value = plain_value(value, "meta", b"consistent_index")?;
            let raw: [u8; 8] = value.try_into().map_err(|_| {
                etcd_error(format!("consistent_index is {} bytes, not 8", value.len()))
            })?;
            u64::from_be_bytes(raw)
        }
    };
    let compact_revision = compact_mark(&meta_bucket, "finishedCompactRev")?;
    let scheduled_compact_revision = compact_mark(&meta_bucket, "scheduledCompactRev")?;

    let mut leases = Vec::new();
    if let Some(lease_bucket) = db.bucket(b"lease")? {
        for entry in lease_bucket.iter() {
            let (key, value) = entry?;
            let raw: [u8; 8] = key.try_into().map_err(|_| {
                etcd_error(format!(
                    "lease bucket key {} is not an 8-byte lease id",
                    hex(key)
                ))
            })?;
            let id = i64::from_be_bytes(raw);
            let lease = Lease::decode(plain_value(value, "lease", key)?).map_err(|error| {
                etcd_error(format!("lease {id:x} does not hold a Lease: {error}"))
            })?;
            leases.push((id, lease.ttl));
        }
    }

    Ok(EtcdBackend {
        revisions,
        compact_revision,
        scheduled_compact_revision,
        consistent_index,
        leases,
    })
}

/// etcd's auth buckets as a backend holds them: the records stay marshalled
/// (`authpb.User`, `authpb.Role`) for the caller to decode.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcdAuth {
    pub enabled: bool,
    /// 0 when the backend has no `authRevision`.
    pub revision: u64,
    pub users: Vec<Vec<u8>>,
    pub roles: Vec<Vec<u8>>,
}

/// Reads the `auth`, `authUsers` and `authRoles` buckets of an etcd backend
/// (empty when a bucket is missing).
pub fn read_etcd_auth(bytes: &[u8]) -> Result<EtcdAuth, BboltError> {
    let db = Db::open(bytes)?;
    let mut auth = EtcdAuth::default();
    if let Some(bucket) = db.bucket(b"auth")? {
        if let Some(value) = bucket.get(b"authEnabled")? {
            auth.enabled = plain_value(value, "auth", b"authEnabled")? == [1];
        }
        if let Some(value) = bucket.get(b"authRevision")? {
            let value = plain_value(value, "auth", b"authRevision")?;
            let raw: [u8; 8] = value
                .try_into()
                .map_err(|_| etcd_error(format!("authRevision is {} bytes, not 8", value.len())))?;
            auth.revision = u64::from_be_bytes(raw);
        }
    }
    for (name, records) in [
        ("authUsers", &mut auth.users),
        ("authRoles", &mut auth.roles),
    ] {
        if let Some(bucket) = db.bucket(name.as_bytes())? {
            for entry in bucket.iter() {
                let (key, value) = entry?;
                records.push(plain_value(value, name, key)?.to_vec());
            }
        }
    }
    Ok(auth)
}

/// One cluster member as etcd's `members` bucket keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcdMember {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// The cluster side of a backend that `read_etcd_backend` leaves out (a
/// restore takes its membership from flags) but etcd's own tools expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    pub removed_member_ids: Vec<u64>,
    /// The `cluster` bucket's `clusterVersion`, such as "3.4.0".
    pub cluster_version: Option<String>,
    /// Raised alarms: (member id, `AlarmType` number).
    pub alarms: Vec<(u64, i32)>,
    /// The `auth` bucket's `authRevision`: 1 on a cluster whose auth was
    /// never changed (etcd writes it at first start).
    pub auth_revision: u64,
    /// The `auth` bucket's `authEnabled` flag: absent until auth is first
    /// turned on or off.
    pub auth_enabled: Option<bool>,
    /// `authUsers` and `authRoles`: name -> marshalled `authpb.User`/`authpb.Role`.
    pub auth_users: Vec<(Vec<u8>, Vec<u8>)>,
    pub auth_roles: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Writes `backend` and `cluster` as etcd 3.4's backend database file (a
/// bbolt file with every bucket etcd 3.4 creates), followed by the sha256
/// trailer etcd's Snapshot stream ends with: what `etcdctl snapshot save`
/// stores, and what `etcdctl snapshot status` and `snapshot restore` read.
/// Revisions must be in ascending (main, sub) order; a tombstone's record
/// holds only its key, as etcd writes it, whatever `kv` says. The backend is
/// taken by value so that each revision is freed as soon as it is encoded: a
/// large store's history is not held twice besides the file.
pub fn write_etcd_snapshot(
    backend: EtcdBackend,
    cluster: &EtcdCluster,
) -> Result<Vec<u8>, BboltError> {
    let mut file = write_etcd_backend(backend, cluster)?;
    let digest = Sha256::digest(&file);
    file.extend_from_slice(&digest);
    Ok(file)
}

/// Like `write_etcd_snapshot`, without the trailer: the `member/snap/db`
/// file of an etcd data directory.
pub fn write_etcd_backend(
    backend: EtcdBackend,
    cluster: &EtcdCluster,
) -> Result<Vec<u8>, BboltError> {
    let EtcdBackend {
        revisions,
        compact_revision,
        scheduled_compact_revision,
        consistent_index,
        leases,
    } = backend;
    // A tombstone's key sorts after its revision's plain key, so the
    // writer's check of the keys would let a revision given twice through:
    // compare the revisions themselves.
    if revisions
        .windows(2)
        .any(|pair| (pair[0].main, pair[0].sub) >= (pair[1].main, pair[1].sub))
    {
        return Err(etcd_error(
            "revisions are not in strictly ascending order".to_owned(),
        ));
    }
    let mut key_entries = Vec::with_capacity(revisions.len());
    for stored in revisions {
        if stored.main < 0 || stored.sub < 0 {
            return Err(etcd_error(format!(
                "revision {}_{} is negative",
                stored.main, stored.sub
            )));
        }
        let value = if stored.tombstone {
            KeyValue {
                key: stored.kv.key,
                ..KeyValue::default()
            }
            .encode_to_vec()
        } else {
            stored.kv.encode_to_vec()
        };
        key_entries.push((
            revision_key(stored.main, stored.sub, stored.tombstone),
            value,
        ));
    }

    let mut meta_entries = vec![(
        b"consistent_index".to_vec(),
        consistent_index.to_be_bytes().to_vec(),
    )];
    let scheduled = scheduled_compact_revision.max(compact_revision);
    if compact_revision > 0 {
        meta_entries.push((
            b"finishedCompactRev".to_vec(),
            revision_key(compact_revision, 0, false),
        ));
    }
    if scheduled > 0 {
        meta_entries.push((
            b"scheduledCompactRev".to_vec(),
            revision_key(scheduled, 0, false),
        ));
    }

    let mut leases = leases;
    leases.sort_unstable();
    let lease_entries = leases
        .iter()
        .map(|&(id, ttl)| {
            let record = Lease {
                id,
                ttl,
                remaining_ttl: 0,
            };
            (id.to_be_bytes().to_vec(), record.encode_to_vec())
        })
        .collect();

    // etcd names members by their id in lower-case hex, so the bucket's
    // order is the order of those strings.
    let mut member_entries: Vec<(Vec<u8>, Vec<u8>)> = cluster
        .members
        .iter()
        .map(|member| {
            (
                format!("{:x}", member.id).into_bytes(),
                member_json(member).into_bytes(),
            )
        })
        .collect();
    member_entries.sort();
    let mut removed_entries: Vec<(Vec<u8>, Vec<u8>)> = cluster
        .removed_member_ids
        .iter()
        .map(|id| (format!("{id:x}").into_bytes(), b"removed".to_vec()))
        .collect();
    removed_entries.sort();
    removed_entries.dedup();
    let mut alarm_entries: Vec<(Vec<u8>, Vec<u8>)> = cluster
        .alarms
        .iter()
        .map(|&(member_id, alarm)| {
            let key = AlarmMember { member_id, alarm }.encode_to_vec();
            (key, Vec::new())
        })
        .collect();
    alarm_entries.sort();
    alarm_entries.dedup();
    let cluster_entries = cluster
        .cluster_version
        .iter()
        .map(|version| (b"clusterVersion".to_vec(), version.clone().into_bytes()))
        .collect();

    let bucket = |name: &str, entries: Vec<(Vec<u8>, Vec<u8>)>| BucketContents {
        name: name.as_bytes().to_vec(),
        entries,
    };
    write_db(
        DEFAULT_PAGE_SIZE,
        &[
            bucket("alarm", alarm_entries),
            bucket(
                "auth",
                cluster
                    .auth_enabled
                    .map(|enabled| (b"authEnabled".to_vec(), vec![u8::from(enabled)]))
                    .into_iter()
                    .chain([(
                        b"authRevision".to_vec(),
                        cluster.auth_revision.to_be_bytes().to_vec(),
                    )])
                    .collect(),
            ),
            bucket("authRoles", sorted(cluster.auth_roles.clone())),
            bucket("authUsers", sorted(cluster.auth_users.clone())),
            bucket("cluster", cluster_entries),
            bucket("key", key_entries),
            bucket("lease", lease_entries),
            bucket("members", member_entries),
            bucket("members_removed", removed_entries),
            bucket("meta", meta_entries),
        ],
    )
}

/// A revision key: 8-byte big-endian main, `_`, 8-byte big-endian sub, and
/// the tombstone mark.
fn revision_key(main: i64, sub: i64, tombstone: bool) -> Vec<u8> {
    let mut key = Vec::with_capacity(REVISION_KEY_SIZE + 1);
    key.extend_from_slice(&main.to_be_bytes());
    key.push(b'_');
    key.extend_from_slice(&sub.to_be_bytes());
    if tombstone {
        key.push(TOMBSTONE_MARK);
    }
    key
}

/// A member as Go's encoding/json writes etcd's `membership.Member`: `id`,
/// then `peerURLs` and `isLearner` (omitted when false), then `name` and
/// `clientURLs` (each omitted when empty).
fn member_json(member: &EtcdMember) -> String {
    let list = |urls: &[String]| {
        let items: Vec<String> = urls.iter().map(|url| go_json_string(url)).collect();
        format!("[{}]", items.join(","))
    };
    let mut json = format!(
        "{{\"id\":{},\"peerURLs\":{}",
        member.id,
        list(&member.peer_urls)
    );
    if member.is_learner {
        json.push_str(",\"isLearner\":true");
    }
    if !member.name.is_empty() {
        json.push_str(",\"name\":");
        json.push_str(&go_json_string(&member.name));
    }
    if !member.client_urls.is_empty() {
        json.push_str(",\"clientURLs\":");
        json.push_str(&list(&member.client_urls));
    }
    json.push('}');
    json
}

/// A JSON string as Go's encoder writes it: besides quotes, backslashes and
/// control characters it escapes `<`, `>`, `&` and the two line separators.
fn go_json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\u{0}'..='\u{1f}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(character)));
            }
            other => out.push(other),
        }
    }
    out.push('"');
    out
}

/// Splits a `key` bucket key into (main, sub, tombstone).
fn parse_revision_key(key: &[u8]) -> Option<(i64, i64, bool)> {
    let tombstone = match key.len() {
        REVISION_KEY_SIZE => false,
        length if length == REVISION_KEY_SIZE + 1 && key[REVISION_KEY_SIZE] == TOMBSTONE_MARK => {
            true
        }
        _ => return None,
    };
    if key[8] != b'_' {
        return None;
    }
    let main = i64::from_be_bytes(key[0..8].try_into().ok()?);
    let sub = i64::from_be_bytes(key[9..17].try_into().ok()?);
    Some((main, sub, tombstone))
}

/// The main revision of a compaction mark in the `meta` bucket, 0 if unset.
fn compact_mark(meta_bucket: &Bucket<'_>, name: &str) -> Result<i64, BboltError> {
    let Some(value) = meta_bucket.get(name.as_bytes())? else {
        return Ok(0);
    };
    let value = plain_value(value, "meta", name.as_bytes())?;
    match parse_revision_key(value) {
        Some((main, _, false)) => Ok(main),
        _ => Err(etcd_error(format!(
            "{name} {} is not a revision",
            hex(value)
        ))),
    }
}

fn required_bucket<'a>(db: &Db<'a>, name: &str) -> Result<Bucket<'a>, BboltError> {
    db.bucket(name.as_bytes())?
        .ok_or_else(|| etcd_error(format!("no \"{name}\" bucket (not an etcd 3.4 database?)")))
}

fn plain_value<'a>(value: Value<'a>, bucket: &str, key: &[u8]) -> Result<&'a [u8], BboltError> {
    value.as_bytes().ok_or_else(|| {
        etcd_error(format!(
            "{bucket} bucket entry {} is a nested bucket",
            hex(key)
        ))
    })
}

fn etcd_error(message: String) -> BboltError {
    BboltError::Etcd(message)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Bucket entries in key order, as bbolt keeps them.
fn sorted(mut entries: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    entries.sort();
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_pages::{FileBuilder, LeafEntry};

    fn revision_key(main: i64, sub: i64, tombstone: bool) -> Vec<u8> {
        let mut key = main.to_be_bytes().to_vec();
        key.push(b'_');
        key.extend_from_slice(&sub.to_be_bytes());
        if tombstone {
            key.push(b't');
        }
        key
    }

    #[test]
    fn revision_keys_parse_and_reject_garbage() {
        assert_eq!(
            parse_revision_key(&revision_key(300, 2, false)),
            Some((300, 2, false))
        );
        assert_eq!(
            parse_revision_key(&revision_key(7, 0, true)),
            Some((7, 0, true))
        );
        let mut wrong_separator = revision_key(7, 0, false);
        wrong_separator[8] = b'-';
        assert_eq!(parse_revision_key(&wrong_separator), None);
        let mut wrong_mark = revision_key(7, 0, false);
        wrong_mark.push(b'x');
        assert_eq!(parse_revision_key(&wrong_mark), None);
        assert_eq!(parse_revision_key(b"consistent_index"), None);
    }

    /// A hand-built etcd-shaped file: key, meta and lease buckets, the
    /// first two inline, the key bucket in its own page.
    #[test]
    fn decodes_a_hand_built_backend() {
        let put = KeyValue {
            key: "foo".into(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            value: "bar".into(),
            lease: 0x1234,
        };
        let tombstone = KeyValue {
            key: "foo".into(),
            ..KeyValue::default()
        };
        let lease = Lease {
            id: 0x1234,
            ttl: 60,
            remaining_ttl: 0,
        };
        let mut file = FileBuilder::new(4096);
        file.leaf(
            3,
            &[
                LeafEntry::plain(&revision_key(2, 0, false), &put.encode_to_vec()),
                LeafEntry::plain(&revision_key(3, 0, true), &tombstone.encode_to_vec()),
            ],
        );
        let meta = FileBuilder::inline_bucket(&[
            LeafEntry::plain(b"consistent_index", &9u64.to_be_bytes()),
            LeafEntry::plain(b"finishedCompactRev", &revision_key(2, 0, false)),
            LeafEntry::plain(b"scheduledCompactRev", &revision_key(2, 0, false)),
        ]);
        let leases = FileBuilder::inline_bucket(&[LeafEntry::plain(
            &0x1234i64.to_be_bytes(),
            &lease.encode_to_vec(),
        )]);
        file.leaf(
            2,
            &[
                LeafEntry::bucket(b"key", &FileBuilder::bucket_header(3, 0)),
                LeafEntry::bucket(b"lease", &leases),
                LeafEntry::bucket(b"meta", &meta),
            ],
        );
        let bytes = file.build(2, 5);

        let backend = read_etcd_backend(&bytes).unwrap();
        assert_eq!(
            backend.revisions,
            vec![
                StoredRevision {
                    main: 2,
                    sub: 0,
                    tombstone: false,
                    kv: put
                },
                StoredRevision {
                    main: 3,
                    sub: 0,
                    tombstone: true,
                    kv: tombstone
                },
            ]
        );
        assert_eq!(backend.consistent_index, 9);
        assert_eq!(backend.compact_revision, 2);
        assert_eq!(backend.scheduled_compact_revision, 2);
        assert_eq!(backend.leases, vec![(0x1234, 60)]);
    }

    #[test]
    fn a_bbolt_file_without_etcd_buckets_is_rejected() {
        let mut file = FileBuilder::new(4096);
        file.leaf(
            2,
            &[LeafEntry::bucket(
                b"other",
                &FileBuilder::inline_bucket(&[]),
            )],
        );
        let error = read_etcd_backend(&file.build(2, 3)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "etcd backend: no \"key\" bucket (not an etcd 3.4 database?)"
        );
    }
}
