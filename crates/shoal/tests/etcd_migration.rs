//! Migration from etcd: data written to a running etcd 3.4, saved with
//! `etcdctl snapshot save` (a bbolt file) and restored with
//! `shoal snapshot restore`, must come back in shoal with the same keys,
//! values, revisions (create, mod, version), compaction point and leases,
//! on one member and on a three-member cluster restored from the same file.
//! The same scenario restored with `etcdctl snapshot restore` into etcd is the
//! twin that validates the test itself.
//!
//! And back: shoal's snapshot is etcd's file. After the same history,
//! `etcdctl snapshot status` reports the same revision and key count for
//! etcd's snapshot and shoal's, and etcd restores shoal's (with its own
//! `etcdctl snapshot restore`) and serves every key, revision and lease.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::{Cluster, ClusterOptions, Flavor};
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::lease_client::LeaseClient;
use proto::etcdserverpb::{LeaseGrantRequest, PutRequest};
use serde_json::Value;

/// The error etcd gives for a read below the compaction point.
const COMPACTED_ERROR: &str = "etcdserver: mvcc: required revision has been compacted";
/// Keys written by `put_many` at the start, then partly overwritten and
/// deleted.
const N_KEYS: usize = 300;
const N_OVERWRITTEN: usize = 100;
/// The lease the snapshot carries, with a TTL long enough to outlive the test.
const LEASE_TTL_SECONDS: i64 = 3600;
/// A bound on `shoal snapshot restore` and `etcdctl snapshot restore`.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(30);

/// The clusters of one test binary run one at a time (see `.config/nextest.toml`
/// for nextest; this is for plain `cargo test`).
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What the etcd that wrote the data answered, to compare the restored
/// cluster with.
struct Reference {
    /// The snapshot `etcdctl snapshot save` wrote, in `_dir`.
    snapshot: PathBuf,
    /// `get "" --prefix -w json`: its kvs and header revision.
    kvs: Value,
    revision: i64,
    compact_revision: i64,
    /// `get "" --prefix -w json --rev history_revision` kvs: a revision
    /// between the compaction and the end, whose history must be preserved.
    history_revision: i64,
    history_kvs: Value,
    lease_id: i64,
    lease_keys: Vec<String>,
    _dir: tempfile::TempDir,
}

/// Writes the scenario's data to a one-member etcd and saves a snapshot.
fn write_to_etcd_and_save_snapshot() -> Reference {
    write_and_save_snapshot(Flavor::Etcd)
}

/// Writes the scenario's data to a one-member `flavor` cluster and saves a
/// snapshot with `etcdctl snapshot save`.
fn write_and_save_snapshot(flavor: Flavor) -> Reference {
    let etcd = Cluster::start(flavor, 1, ClusterOptions::default());
    let endpoint = etcd.endpoint(0);

    // A few hundred keys, a few requests in flight at once.
    common::put_many(std::slice::from_ref(&endpoint), "mig/a/", N_KEYS);
    let runtime = common::tokio_runtime();
    let lease_id = runtime.block_on(async {
        let mut kv = bounded("connect", KvClient::connect(endpoint.clone()))
            .await
            .expect("connect to etcd");
        // Overwrites: each a revision of its own, bumping the key's version.
        for key_idx in 0..N_OVERWRITTEN {
            bounded(
                "put",
                kv.put(PutRequest {
                    key: format!("mig/a/{key_idx:05}").into_bytes().into(),
                    value: format!("overwritten-{key_idx}").into_bytes().into(),
                    ..Default::default()
                }),
            )
            .await
            .expect("overwrite a key");
        }
        let lease_id = {
            let mut lease = bounded("connect", LeaseClient::connect(endpoint.clone()))
                .await
                .expect("connect to etcd");
            bounded(
                "lease grant",
                lease.lease_grant(LeaseGrantRequest {
                    ttl: LEASE_TTL_SECONDS,
                    id: 0,
                }),
            )
            .await
            .expect("lease grant")
            .into_inner()
            .id
        };
        for key in ["mig/lease/1", "mig/lease/2"] {
            bounded(
                "put",
                kv.put(PutRequest {
                    key: key.as_bytes().to_vec().into(),
                    value: b"leased".to_vec().into(),
                    lease: lease_id,
                    ..Default::default()
                }),
            )
            .await
            .expect("put a key with the lease");
        }
        lease_id
    });

    // Compact in the middle of the overwrites: revisions below stay
    // compacted, the rest of the history must survive the migration.
    let revision_now = header_revision(&get_all_json(&etcd, &[]));
    let compact_revision = revision_now - N_OVERWRITTEN as i64 / 2;
    etcd.etcdctl_ok_at(
        0,
        &["compaction", "--physical", &compact_revision.to_string()],
    );

    // Deletes after the compaction: a range in one revision, and a single key.
    etcd.etcdctl_ok_at(0, &["del", "mig/a/00200", "mig/a/00250"]);
    etcd.etcdctl_ok_at(0, &["del", "mig/a/00001"]);
    common::put_many(std::slice::from_ref(&endpoint), "mig/b/", 20);

    let all = get_all_json(&etcd, &[]);
    let revision = header_revision(&all);
    let history_revision = compact_revision + 10;
    let history = get_all_json(&etcd, &["--rev", &history_revision.to_string()]);
    assert_compacted_below(&etcd, 0, compact_revision);
    let (lease_ttl, lease_keys) = lease_time_to_live(&etcd, 0, lease_id);
    assert!(lease_ttl > 0, "etcd's lease is not alive: ttl {lease_ttl}");
    assert_eq!(lease_keys, ["mig/lease/1", "mig/lease/2"]);

    let dir = tempfile::Builder::new()
        .prefix("shoal-migration-")
        .tempdir()
        .expect("create a temporary directory");
    let snapshot = dir.path().join(format!("{flavor:?}.snapshot"));
    etcd.etcdctl_ok_at(0, &["snapshot", "save", &snapshot.display().to_string()]);
    Reference {
        snapshot,
        kvs: all["kvs"].clone(),
        revision,
        compact_revision,
        history_revision,
        history_kvs: history["kvs"].clone(),
        lease_id,
        lease_keys,
        _dir: dir,
    }
}

/// Starts a `flavor` cluster of `n_members` whose every member's data dir
/// is restored from the reference snapshot, with the flavor's own restore
/// command and the cluster's own flags.
fn restore_cluster(flavor: Flavor, n_members: usize, reference: &Reference) -> Cluster {
    // The harness picks the ports, names and data dirs; the members it
    // starts are killed and their data dirs replaced by restored ones.
    let mut cluster = Cluster::start(flavor, n_members, ClusterOptions::default());
    cluster.kill_all();
    for member_idx in 0..n_members {
        let args = cluster.member_args(member_idx);
        let flag = |name: &str| -> String {
            let prefix = format!("--{name}=");
            args.iter()
                .find_map(|arg| arg.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("the harness gives no --{name}: {args:?}"))
                .to_string()
        };
        let data_dir = cluster.data_dir(member_idx).to_path_buf();
        std::fs::remove_dir_all(&data_dir).expect("remove the member's first data dir");
        let mut command = match flavor {
            Flavor::Shoal => {
                let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
                command.args(["snapshot", "restore"]);
                command
            }
            Flavor::Etcd => {
                let mut command = Command::new(common::ETCDCTL);
                command
                    .env("ETCDCTL_API", "3")
                    .args(["snapshot", "restore"]);
                command
            }
        };
        command
            .arg(&reference.snapshot)
            .arg(format!("--name={}", flag("name")))
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--initial-cluster={}", flag("initial-cluster")))
            .arg(format!(
                "--initial-cluster-token={}",
                flag("initial-cluster-token")
            ))
            .arg(format!(
                "--initial-advertise-peer-urls={}",
                flag("initial-advertise-peer-urls")
            ));
        let output = common::run_with_watchdog(command, None, RESTORE_TIMEOUT);
        assert!(
            output.status.success(),
            "{flavor:?} snapshot restore for member {member_idx} failed:\n{}",
            common::describe_output(&output)
        );
        assert!(
            is_non_empty_dir(&data_dir),
            "{flavor:?} snapshot restore left no data dir at {}",
            data_dir.display()
        );
    }
    for member_idx in 0..n_members {
        cluster.restart(member_idx);
    }
    cluster.wait_until_healthy();
    cluster
}

/// Restores the snapshot into a one-member cluster and checks it serves
/// exactly what etcd served, then takes a new write at the next revision.
fn restored_member_serves_etcds_data(flavor: Flavor) {
    let _one_at_a_time = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let reference = write_to_etcd_and_save_snapshot();
    restored_member_serves(flavor, &reference);
}

/// Restores `reference`'s snapshot into a one-member `flavor` cluster and
/// checks it serves exactly what the cluster that saved it served, then
/// takes a new write at the next revision.
fn restored_member_serves(flavor: Flavor, reference: &Reference) {
    let cluster = restore_cluster(flavor, 1, reference);

    assert_serves_reference(&cluster, 0, reference, &[]);
    let history = get_all_json(
        &cluster,
        &["--rev", &reference.history_revision.to_string()],
    );
    assert_eq!(
        history["kvs"], reference.history_kvs,
        "{flavor:?}: the restored history at revision {} (left) differs from etcd's (right)",
        reference.history_revision
    );
    assert_compacted_below(&cluster, 0, reference.compact_revision);

    let (lease_ttl, lease_keys) = lease_time_to_live(&cluster, 0, reference.lease_id);
    assert!(
        lease_ttl > 0 && lease_ttl <= LEASE_TTL_SECONDS,
        "{flavor:?}: restored lease {:x} has ttl {lease_ttl}, expected 1..={LEASE_TTL_SECONDS}",
        reference.lease_id
    );
    assert_eq!(
        lease_keys, reference.lease_keys,
        "{flavor:?}: the lease's keys"
    );

    let put: Value = serde_json::from_str(
        &cluster.etcdctl_ok_at(0, &["put", "mig/after-restore", "new", "-w", "json"]),
    )
    .expect("`put -w json` is JSON");
    assert_eq!(
        header_revision(&put),
        reference.revision + 1,
        "{flavor:?}: the first write after the restore must take the next revision"
    );
}

/// Restores the snapshot into each member of a three-member cluster: every
/// member serves the same data as etcd, and their HashKV agree.
fn restored_cluster_serves_etcds_data_on_every_member(flavor: Flavor) {
    let _one_at_a_time = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let reference = write_to_etcd_and_save_snapshot();
    let cluster = restore_cluster(flavor, 3, &reference);

    for member_idx in 0..3 {
        assert_serves_reference(&cluster, member_idx, &reference, &["--consistency=s"]);
        assert_compacted_below(&cluster, member_idx, reference.compact_revision);
    }
    let hashes: Vec<(i64, u64)> = (0..3)
        .map(|member_idx| {
            let stdout = cluster.etcdctl_ok_at(member_idx, &["endpoint", "hashkv", "-w", "json"]);
            let json: Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|error| panic!("`endpoint hashkv -w json` ({error}): {stdout}"));
            let status = &json[0]["HashKV"];
            (
                status["header"]["revision"].as_i64().unwrap_or(0),
                status["hash"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(
        hashes
            .iter()
            .all(|&(revision, hash)| revision == reference.revision && hash == hashes[0].1),
        "{flavor:?}: (revision, hashkv) per member {hashes:?}; expected revision {} and one hash",
        reference.revision
    );

    // A write through one member reaches the others at the next revision.
    cluster.etcdctl_ok_at(0, &["put", "mig/after-restore", "new"]);
    for member_idx in 0..3 {
        let revision = wait_for_revision(&cluster, member_idx, reference.revision + 1);
        assert_eq!(
            revision,
            reference.revision + 1,
            "{flavor:?} member {member_idx}"
        );
    }
}

/// `etcdctl snapshot status -w json` of a snapshot file: (revision, total
/// keys). The command runs bbolt's consistency check on the file first.
fn snapshot_status(path: &Path) -> (i64, i64) {
    let mut command = Command::new(common::ETCDCTL);
    command
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(path);
    let output = common::run_with_watchdog(command, None, RESTORE_TIMEOUT);
    assert!(
        output.status.success(),
        "etcdctl snapshot status {} failed:\n{}",
        path.display(),
        common::describe_output(&output)
    );
    let json: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "`snapshot status -w json` ({error}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    (
        json["revision"].as_i64().unwrap_or(-1),
        json["totalKey"].as_i64().unwrap_or(-1),
    )
}

/// The same history written to etcd and to shoal: both snapshots are etcd
/// backends with the same revision and key count to `etcdctl snapshot
/// status` (every bucket etcd keeps, the key bucket's revisions after the
/// same compaction), and etcd restores shoal's and serves every key with
/// its revisions, the compaction point and the lease.
#[test]
fn etcd_restores_a_shoal_snapshot_with_the_same_keys_revisions_and_leases() {
    let _one_at_a_time = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let from_etcd = write_and_save_snapshot(Flavor::Etcd);
    let from_shoal = write_and_save_snapshot(Flavor::Shoal);
    assert_eq!(
        (from_shoal.revision, from_shoal.compact_revision),
        (from_etcd.revision, from_etcd.compact_revision),
        "the same history ends at the same revision on both"
    );
    assert_eq!(
        snapshot_status(&from_shoal.snapshot),
        snapshot_status(&from_etcd.snapshot),
        "snapshot status (revision, total keys) of shoal's snapshot (left) and etcd's (right)"
    );
    restored_member_serves(Flavor::Etcd, &from_shoal);
}

#[test]
fn shoal_restores_an_etcd_snapshot_with_the_same_keys_and_revisions() {
    restored_member_serves_etcds_data(Flavor::Shoal);
}

#[test]
fn shoal_restores_an_etcd_snapshot_into_a_three_member_cluster() {
    restored_cluster_serves_etcds_data_on_every_member(Flavor::Shoal);
}

#[test]
fn etcd_restores_an_etcd_snapshot_with_the_same_keys_and_revisions() {
    restored_member_serves_etcds_data(Flavor::Etcd);
}

#[test]
fn etcd_restores_an_etcd_snapshot_into_a_three_member_cluster() {
    restored_cluster_serves_etcds_data_on_every_member(Flavor::Etcd);
}

/// Every key of `member_idx` equals etcd's, with the same header revision.
fn assert_serves_reference(
    cluster: &Cluster,
    member_idx: usize,
    reference: &Reference,
    extra_args: &[&str],
) {
    let mut args = vec!["get", "", "--prefix", "-w", "json"];
    args.extend_from_slice(extra_args);
    let stdout = cluster.etcdctl_ok_at(member_idx, &args);
    let all: Value = serde_json::from_str(&stdout).expect("`get -w json` is JSON");
    let restored = all["kvs"].as_array().cloned().unwrap_or_default();
    let expected = reference.kvs.as_array().cloned().unwrap_or_default();
    assert_eq!(
        restored.len(),
        expected.len(),
        "{:?} member {member_idx}: the number of keys after the restore",
        cluster.flavor
    );
    for (restored, expected) in restored.iter().zip(&expected) {
        assert_eq!(
            restored, expected,
            "{:?} member {member_idx}: a restored key (left) differs from etcd's (right)",
            cluster.flavor
        );
    }
    assert_eq!(
        header_revision(&all),
        reference.revision,
        "{:?} member {member_idx}: the header revision after the restore",
        cluster.flavor
    );
}

/// A read one revision below the compaction point fails with etcd's error;
/// one at the compaction point succeeds.
fn assert_compacted_below(cluster: &Cluster, member_idx: usize, compact_revision: i64) {
    let below = (compact_revision - 1).to_string();
    let output = cluster.etcdctl_at(member_idx, &["get", "mig/a/00000", "--rev", &below]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains(COMPACTED_ERROR),
        "{:?} member {member_idx}: `get --rev {below}` should fail with {COMPACTED_ERROR:?}:\n{}",
        cluster.flavor,
        common::describe_output(&output)
    );
    cluster.etcdctl_ok_at(
        member_idx,
        &["get", "mig/a/00000", "--rev", &compact_revision.to_string()],
    );
}

/// `get "" --prefix -w json` with more flags, through the first member.
fn get_all_json(cluster: &Cluster, extra_args: &[&str]) -> Value {
    let mut args = vec!["get", "", "--prefix", "-w", "json"];
    args.extend_from_slice(extra_args);
    let stdout = cluster.etcdctl_ok_at(0, &args);
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}"))
}

fn header_revision(json: &Value) -> i64 {
    json["header"]["revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("no header revision in {json}"))
}

/// The lease's remaining TTL and its keys, sorted (`lease timetolive --keys`).
fn lease_time_to_live(cluster: &Cluster, member_idx: usize, lease_id: i64) -> (i64, Vec<String>) {
    let stdout = cluster.etcdctl_ok_at(
        member_idx,
        &[
            "lease",
            "timetolive",
            &format!("{lease_id:x}"),
            "--keys",
            "-w",
            "json",
        ],
    );
    let json: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("`lease timetolive -w json` ({error}): {stdout}"));
    // etcd lists a lease's keys in no particular order.
    let mut keys: Vec<String> = json["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|key| decode_base64(key.as_str().unwrap_or_default()))
        .collect();
    keys.sort();
    (json["ttl"].as_i64().unwrap_or(-1), keys)
}

/// Waits (bounded) until `member_idx` serves `revision` in a serializable
/// read, and returns the revision it last saw.
fn wait_for_revision(cluster: &Cluster, member_idx: usize, revision: i64) -> i64 {
    let mut seen = 0;
    for _ in 0..50 {
        let stdout = cluster.etcdctl_ok_at(
            member_idx,
            &["get", "mig/after-restore", "--consistency=s", "-w", "json"],
        );
        let json: Value = serde_json::from_str(&stdout).expect("`get -w json` is JSON");
        seen = header_revision(&json);
        if seen >= revision {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    seen
}

fn is_non_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_some())
}

/// Bounds one gRPC call.
async fn bounded<T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(common::GRPC_REQUEST_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| panic!("{what} took more than {:?}", common::GRPC_REQUEST_TIMEOUT))
}

/// Standard base64 (etcdctl's JSON encoding of bytes), decoded to text.
fn decode_base64(encoded: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n_bits = 0;
    let mut bytes = Vec::new();
    for symbol in encoded.bytes().take_while(|&symbol| symbol != b'=') {
        let value = ALPHABET
            .iter()
            .position(|&candidate| candidate == symbol)
            .unwrap_or_else(|| panic!("not base64: {encoded}")) as u32;
        bits = (bits << 6) | value;
        n_bits += 6;
        if n_bits >= 8 {
            n_bits -= 8;
            bytes.push((bits >> n_bits) as u8);
            bits &= (1 << n_bits) - 1;
        }
    }
    String::from_utf8(bytes).expect("a text key")
}
