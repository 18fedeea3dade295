//! Reads a snapshot taken from a real etcd 3.4 with `etcdctl snapshot save`
//! and checks it against what `etcdctl get` saw: every stored revision, each
//! key's latest value, tombstones, the compaction and the leases.
//!
//! Needs Debian's etcd-server and etcd-client (3.4) on PATH; without them the
//! test fails rather than skips, since the etcd migration path would go
//! unchecked.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bbolt::{
    BboltError, Db, EtcdBackend, EtcdCluster, EtcdMember, StoredRevision, read_etcd_backend,
    write_etcd_snapshot,
};
use serde_json::Value as Json;

const N_BULK_KEYS: usize = 2_000;
const KEYS_PER_TXN: usize = 100;
const N_OVERWRITES: usize = 240;
const VALUE_SIZE: usize = 100;

/// A running etcd, killed when dropped.
struct Etcd {
    child: Child,
    endpoint: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `version_arg` is how the tool reports its version (`etcdctl` v3 has no
/// `--version` flag).
fn require_tool(name: &str, version_arg: &str) {
    let found = Command::new(name)
        .arg(version_arg)
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "`{name}` is needed to check restores of etcd 3.4 snapshots: \
         install Debian's etcd-server and etcd-client packages"
    );
}

fn start_etcd(data_dir: &Path, log: &Path) -> Etcd {
    start_etcd_with_peer_port(data_dir, log, free_port())
}

fn start_etcd_with_peer_port(data_dir: &Path, log: &Path, peer_port: u16) -> Etcd {
    require_tool("etcd", "--version");
    require_tool("etcdctl", "version");
    let client_port = free_port();
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new("etcd")
        .args(["--name", "x", "--data-dir"])
        .arg(data_dir)
        .args([
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("x={peer_url}")])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn etcd");
    let etcd = Etcd {
        child,
        endpoint: client_url,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = etcdctl_command(&etcd.endpoint)
            .args(["endpoint", "health", "--command-timeout=2s"])
            .output()
            .unwrap();
        if health.status.success() {
            return etcd;
        }
        assert!(
            Instant::now() < deadline,
            "etcd did not become healthy within 30s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn etcdctl_command(endpoint: &str) -> Command {
    let mut command = Command::new("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["--dial-timeout=5s", "--command-timeout=30s"]);
    command
}

/// Runs etcdctl with `args` (and `stdin`), asserts success, returns stdout.
fn etcdctl(etcd: &Etcd, args: &[&str], stdin: Option<&str>) -> String {
    let mut command = etcdctl_command(&etcd.endpoint);
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = command.spawn().expect("spawn etcdctl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn value_of(tag: &str, index: usize) -> String {
    let mut value = format!("{tag}-{index:04}-");
    while value.len() < VALUE_SIZE {
        value.push((b'a' + (value.len() % 26) as u8) as char);
    }
    value
}

/// Puts a key and returns the revision of the put.
fn put(etcd: &Etcd, key: &str, value: &str, lease: Option<&str>) -> i64 {
    let lease_flag = lease.map(|lease| format!("--lease={lease}"));
    let mut args = vec!["put", key, value, "-w", "json"];
    args.extend(lease_flag.as_deref());
    header_revision(&etcdctl(etcd, &args, None))
}

fn header_revision(json_output: &str) -> i64 {
    let json: Json = serde_json::from_str(json_output).unwrap();
    json["header"]["revision"].as_i64().unwrap()
}

/// `lease grant` prints "lease 694d7c0a1e2b3c4d granted with TTL(600s)".
fn grant_lease(etcd: &Etcd, ttl_seconds: i64) -> (String, i64) {
    let output = etcdctl(etcd, &["lease", "grant", &ttl_seconds.to_string()], None);
    let hex_id = output.split_whitespace().nth(1).unwrap().to_owned();
    let id = u64::from_str_radix(&hex_id, 16).unwrap() as i64;
    (hex_id, id)
}

fn base64_decode(text: &str) -> Vec<u8> {
    let digit = |byte: u8| -> u32 {
        match byte {
            b'A'..=b'Z' => u32::from(byte - b'A'),
            b'a'..=b'z' => u32::from(byte - b'a') + 26,
            b'0'..=b'9' => u32::from(byte - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 digit {byte}"),
        }
    };
    let mut bytes = Vec::new();
    let mut accumulator = 0u32;
    let mut n_bits = 0;
    for byte in text.bytes().filter(|&byte| byte != b'=') {
        accumulator = (accumulator << 6) | digit(byte);
        n_bits += 6;
        if n_bits >= 8 {
            n_bits -= 8;
            bytes.push((accumulator >> n_bits) as u8);
        }
    }
    bytes
}

/// A live key as `etcdctl get -w json` reports it.
#[derive(Debug, PartialEq)]
struct LiveKey {
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    value: Vec<u8>,
    lease: i64,
}

fn live_keys(etcd: &Etcd) -> (i64, BTreeMap<Vec<u8>, LiveKey>) {
    let output = etcdctl(etcd, &["get", "", "--prefix", "-w", "json"], None);
    let json: Json = serde_json::from_str(&output).unwrap();
    let field = |kv: &Json, name: &str| kv[name].as_i64().unwrap_or(0);
    let keys = json["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| {
            let key = base64_decode(kv["key"].as_str().unwrap());
            let live = LiveKey {
                create_revision: field(kv, "create_revision"),
                mod_revision: field(kv, "mod_revision"),
                version: field(kv, "version"),
                value: base64_decode(kv["value"].as_str().unwrap_or("")),
                lease: field(kv, "lease"),
            };
            (key, live)
        })
        .collect();
    (json["header"]["revision"].as_i64().unwrap(), keys)
}

/// What the scenario did, to check the snapshot against.
struct Expected {
    revision: i64,
    compact_revision: i64,
    delete_prefix_revision: i64,
    live: BTreeMap<Vec<u8>, LiveKey>,
    deleted: BTreeSet<Vec<u8>>,
    leases: Vec<(i64, i64)>,
}

fn run_scenario(etcd: &Etcd) -> Expected {
    // Bulk load in transactions: one main revision each, with sub revisions
    // 0..100, and enough 100-byte values that the key bucket needs branches.
    for txn_index in 0..N_BULK_KEYS / KEYS_PER_TXN {
        let mut script = String::from("\n");
        for key_index in txn_index * KEYS_PER_TXN..(txn_index + 1) * KEYS_PER_TXN {
            script.push_str(&format!(
                "put bulk/{key_index:04} {}\n",
                value_of("v1", key_index)
            ));
        }
        script.push_str("\n\n");
        let output = etcdctl(etcd, &["txn"], Some(&script));
        assert!(output.starts_with("SUCCESS"), "txn output: {output}");
    }
    // Single puts carry the main revision past 255, so its big-endian
    // encoding uses more than its last byte.
    for overwrite_index in 0..N_OVERWRITES {
        let key_index = overwrite_index * 7 % N_BULK_KEYS;
        put(
            etcd,
            &format!("bulk/{key_index:04}"),
            &value_of("v2", overwrite_index),
            None,
        );
    }
    let compact_revision = put(etcd, "compaction-point", "here", None);
    etcdctl(
        etcd,
        &["compact", &compact_revision.to_string(), "--physical"],
        None,
    );

    let mut deleted = BTreeSet::new();
    etcdctl(etcd, &["del", "bulk/0001"], None);
    deleted.insert(b"bulk/0001".to_vec());
    let delete_output = etcdctl(etcd, &["del", "--prefix", "bulk/01", "-w", "json"], None);
    let delete_prefix_revision = header_revision(&delete_output);
    for key_index in 100..200 {
        deleted.insert(format!("bulk/{key_index:04}").into_bytes());
    }
    // A deleted key put again starts a new generation.
    put(etcd, "bulk/0105", "reborn", None);
    deleted.remove(b"bulk/0105".as_slice());

    let (first_lease_hex, first_lease) = grant_lease(etcd, 600);
    let (second_lease_hex, second_lease) = grant_lease(etcd, 900);
    let (revoked_lease_hex, _) = grant_lease(etcd, 300);
    put(etcd, "leased/a", "a", Some(&first_lease_hex));
    put(etcd, "leased/b", "b", Some(&first_lease_hex));
    put(etcd, "leased/c", "c", Some(&second_lease_hex));
    put(etcd, "leased/d", "d", Some(&revoked_lease_hex));
    etcdctl(etcd, &["lease", "revoke", &revoked_lease_hex], None);
    deleted.insert(b"leased/d".to_vec());
    put(etcd, "bulk/0000", &value_of("v3", 0), None);

    let (revision, live) = live_keys(etcd);
    let mut leases = vec![(first_lease, 600), (second_lease, 900)];
    leases.sort();
    let listed = etcdctl(etcd, &["lease", "list"], None);
    let listed: BTreeSet<i64> = listed
        .lines()
        .skip(1)
        .map(|line| u64::from_str_radix(line.trim(), 16).unwrap() as i64)
        .collect();
    assert_eq!(listed, leases.iter().map(|(id, _)| *id).collect());
    Expected {
        revision,
        compact_revision,
        delete_prefix_revision,
        live,
        deleted,
        leases,
    }
}

fn latest_by_key(revisions: &[StoredRevision]) -> BTreeMap<Vec<u8>, &StoredRevision> {
    let mut latest = BTreeMap::new();
    for stored in revisions {
        latest.insert(stored.kv.key.to_vec(), stored);
    }
    latest
}

fn check_backend(backend: &EtcdBackend, expected: &Expected) {
    let revisions = &backend.revisions;
    assert!(
        revisions
            .windows(2)
            .all(|pair| (pair[0].main, pair[0].sub) < (pair[1].main, pair[1].sub)),
        "revisions are not in ascending (main, sub) order"
    );
    assert_eq!(revisions.last().unwrap().main, expected.revision);
    assert!(backend.consistent_index > 0);

    // Each live key's newest revision is what etcdctl get returned.
    let latest = latest_by_key(revisions);
    for (key, live) in &expected.live {
        let stored = latest.get(key).unwrap_or_else(|| panic!("{key:?} missing"));
        assert!(!stored.tombstone, "{key:?} is live but ends in a tombstone");
        assert_eq!(stored.main, live.mod_revision);
        let kv = &stored.kv;
        let found = LiveKey {
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: kv.value.to_vec(),
            lease: kv.lease,
        };
        assert_eq!(&found, live, "key {}", String::from_utf8_lossy(key));
    }
    // Every other key ends in a tombstone, which stores the key alone.
    let ended_in_tombstone: BTreeSet<Vec<u8>> = latest
        .iter()
        .filter(|(_, stored)| stored.tombstone)
        .map(|(key, _)| key.clone())
        .collect();
    assert_eq!(ended_in_tombstone, expected.deleted);
    assert_eq!(latest.len(), expected.live.len() + expected.deleted.len());
    for stored in revisions.iter().filter(|stored| stored.tombstone) {
        let kv = &stored.kv;
        assert!(!kv.key.is_empty());
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.version, kv.lease),
            (0, 0, 0, 0)
        );
        assert!(kv.value.is_empty());
    }
    // The prefix delete is one main revision with a tombstone per key.
    let prefix_delete: Vec<_> = revisions
        .iter()
        .filter(|stored| stored.main == expected.delete_prefix_revision)
        .collect();
    assert_eq!(prefix_delete.len(), 100);
    assert!(
        prefix_delete
            .iter()
            .enumerate()
            .all(|(sub, stored)| stored.tombstone && stored.sub == sub as i64)
    );

    // Compaction left at most one revision per key at or below its point,
    // and every revision after it.
    assert_eq!(backend.compact_revision, expected.compact_revision);
    assert_eq!(
        backend.scheduled_compact_revision,
        expected.compact_revision
    );
    let mut compacted_per_key: BTreeMap<&[u8], usize> = BTreeMap::new();
    for stored in revisions
        .iter()
        .filter(|stored| stored.main <= expected.compact_revision)
    {
        *compacted_per_key.entry(&stored.kv.key).or_default() += 1;
    }
    assert!(compacted_per_key.values().all(|&count| count == 1));
    let mains: BTreeSet<i64> = revisions.iter().map(|stored| stored.main).collect();
    for main in expected.compact_revision..=expected.revision {
        assert!(mains.contains(&main), "revision {main} is missing");
    }

    assert_eq!(backend.leases, expected.leases);
}

#[test]
fn reads_a_real_etcd_3_4_snapshot() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("etcd-data");
    let snapshot_path = work.path().join("snapshot.db");
    let etcd = start_etcd(&data_dir, &work.path().join("etcd.log"));
    let expected = run_scenario(&etcd);
    etcdctl(
        &etcd,
        &["snapshot", "save", snapshot_path.to_str().unwrap()],
        None,
    );
    drop(etcd);

    let snapshot = std::fs::read(&snapshot_path).unwrap();
    let db = Db::open(&snapshot).unwrap();
    assert!(bbolt::is_bbolt(&snapshot));
    assert!(
        db.had_snapshot_trailer(),
        "etcd's snapshot should end in a sha256"
    );
    let key_bucket = db.bucket(b"key").unwrap().unwrap();
    assert!(
        key_bucket.depth().unwrap() >= 2,
        "the key bucket should span branch pages"
    );

    let backend = read_etcd_backend(&snapshot).unwrap();
    eprintln!(
        "snapshot: {} bytes, {} pages, key bucket depth {}, {} revisions up to {}, compacted at {}",
        snapshot.len(),
        db.n_pages(),
        key_bucket.depth().unwrap(),
        backend.revisions.len(),
        backend.revisions.last().unwrap().main,
        backend.compact_revision
    );
    check_backend(&backend, &expected);

    // The same database without its trailer reads the same.
    let without_trailer = &snapshot[..snapshot.len() - 32];
    assert_eq!(read_etcd_backend(without_trailer).unwrap(), backend);
    // A damaged snapshot is caught by its trailer.
    let mut damaged = snapshot.clone();
    damaged[5 * db.meta().page_size as usize + 100] ^= 1;
    assert_eq!(
        read_etcd_backend(&damaged).unwrap_err(),
        BboltError::Sha256Mismatch
    );

    // etcd's own database file (free pages, no trailer) holds the same history.
    let live_db = std::fs::read(data_dir.join("member/snap/db")).unwrap();
    let from_data_dir = read_etcd_backend(&live_db).unwrap();
    assert_eq!(from_data_dir.revisions, backend.revisions);
    assert_eq!(from_data_dir.leases, backend.leases);
    assert_eq!(from_data_dir.compact_revision, backend.compact_revision);
}

/// `etcdctl snapshot status -w json`: (hash, revision, total keys, size).
fn snapshot_status(path: &Path) -> (u64, i64, i64, i64) {
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "etcdctl snapshot status {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Json = serde_json::from_slice(&output.stdout).unwrap();
    let number = |name: &str| json[name].as_i64().unwrap();
    (
        json["hash"].as_u64().unwrap(),
        number("revision"),
        number("totalKey"),
        number("totalSize"),
    )
}

/// The members bucket's JSON records, as the writer takes them.
fn members_of(db: &Db<'_>) -> Vec<EtcdMember> {
    let bucket = db.bucket(b"members").unwrap().unwrap();
    bucket
        .iter()
        .map(|entry| {
            let (_, value) = entry.unwrap();
            let json: Json = serde_json::from_slice(value.as_bytes().unwrap()).unwrap();
            let urls = |name: &str| -> Vec<String> {
                json[name]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|url| url.as_str().unwrap().to_owned())
                    .collect()
            };
            EtcdMember {
                id: json["id"].as_u64().unwrap(),
                name: json["name"].as_str().unwrap_or_default().to_owned(),
                peer_urls: urls("peerURLs"),
                client_urls: urls("clientURLs"),
                is_learner: json["isLearner"].as_bool().unwrap_or(false),
            }
        })
        .collect()
}

/// etcd's snapshot, read and written again by this crate, is the same
/// database to etcd's tools: `snapshot status` (which runs bbolt's
/// consistency check first) gives the same hash, revision and key count, and
/// `snapshot restore` of the rewritten file makes a data directory etcd
/// starts from with every key, revision and lease.
#[test]
fn a_rewritten_etcd_snapshot_is_the_same_database_to_etcd() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("etcd-data");
    let original_path = work.path().join("original.db");
    let etcd = start_etcd(&data_dir, &work.path().join("etcd.log"));
    let expected = run_scenario(&etcd);
    etcdctl(
        &etcd,
        &["snapshot", "save", original_path.to_str().unwrap()],
        None,
    );
    drop(etcd);

    let original = std::fs::read(&original_path).unwrap();
    let backend = read_etcd_backend(&original).unwrap();
    let db = Db::open(&original).unwrap();
    let version = db.bucket(b"cluster").unwrap().unwrap();
    let cluster_version = version
        .get(b"clusterVersion")
        .unwrap()
        .and_then(|value| value.as_bytes())
        .map(|bytes| String::from_utf8(bytes.to_vec()).unwrap());
    let auth = db.bucket(b"auth").unwrap().unwrap();
    let auth_revision = u64::from_be_bytes(
        auth.get(b"authRevision")
            .unwrap()
            .unwrap()
            .as_bytes()
            .unwrap()
            .try_into()
            .unwrap(),
    );
    let cluster = EtcdCluster {
        members: members_of(&db),
        removed_member_ids: Vec::new(),
        cluster_version,
        alarms: Vec::new(),
        auth_revision,
        auth_enabled: auth
            .get(b"authEnabled")
            .unwrap()
            .and_then(|value| value.as_bytes())
            .map(|bytes| bytes == [1]),
        auth_users: Vec::new(),
        auth_roles: Vec::new(),
    };
    let rewritten = write_etcd_snapshot(backend.clone(), &cluster).unwrap();
    let rewritten_path = work.path().join("rewritten.db");
    std::fs::write(&rewritten_path, &rewritten).unwrap();

    let (original_hash, original_revision, original_keys, _) = snapshot_status(&original_path);
    let (rewritten_hash, rewritten_revision, rewritten_keys, rewritten_size) =
        snapshot_status(&rewritten_path);
    assert_eq!(
        (rewritten_hash, rewritten_revision, rewritten_keys),
        (original_hash, original_revision, original_keys),
        "snapshot status of the rewritten file (left) and etcd's (right)"
    );
    assert_eq!(rewritten_size as usize, rewritten.len() - 32);
    assert_eq!(read_etcd_backend(&rewritten).unwrap(), backend);

    let restored_dir = work.path().join("restored");
    let peer_port = free_port();
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let restore = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(&rewritten_path)
        .arg("--data-dir")
        .arg(&restored_dir)
        .args(["--name", "x", "--initial-cluster", &format!("x={peer_url}")])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .output()
        .unwrap();
    assert!(
        restore.status.success(),
        "etcdctl snapshot restore failed: {}",
        String::from_utf8_lossy(&restore.stderr)
    );
    let etcd =
        start_etcd_with_peer_port(&restored_dir, &work.path().join("restored.log"), peer_port);
    let (revision, live) = live_keys(&etcd);
    assert_eq!(revision, expected.revision);
    assert_eq!(live, expected.live);
    let listed = etcdctl(&etcd, &["lease", "list"], None);
    let listed: BTreeSet<i64> = listed
        .lines()
        .skip(1)
        .map(|line| u64::from_str_radix(line.trim(), 16).unwrap() as i64)
        .collect();
    assert_eq!(
        listed,
        expected.leases.iter().map(|(id, _)| *id).collect(),
        "the leases etcd restored"
    );
}
