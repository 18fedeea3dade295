//! `shoal bench` end to end, on etcd 3.4 and on shoal alike: every KV workload
//! completes each request it counts and writes the keys it says it wrote, and
//! a request the server refuses is counted under the server's own error.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{Cluster, ClusterOptions, Flavor};
use serde_json::Value;

const BENCH_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_REQUEST_BYTES: usize = 4096;

fn bench(cluster: &Cluster, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command
        .args(["bench", "--endpoints", &cluster.endpoints().join(",")])
        .args(["--output", "json"])
        .args(args);
    common::run_with_watchdog(command, None, BENCH_TIMEOUT)
}

/// The JSON summary of a run that must succeed.
fn bench_ok(cluster: &Cluster, args: &[&str]) -> Value {
    let output = bench(cluster, args);
    assert!(
        output.status.success(),
        "shoal bench {args:?} failed: {}",
        common::describe_output(&output)
    );
    serde_json::from_slice(&output.stdout).expect("bench prints one JSON summary")
}

/// Asserts that a section counted `requests` successes and no error.
fn assert_section(summary: &Value, section_idx: usize, requests: u64) {
    let section = &summary["sections"][section_idx];
    assert_eq!(section["errors"], 0, "{summary}");
    assert_eq!(section["requests"], requests, "{summary}");
    assert!(
        section["latency_ms"]["p99"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
}

fn key_count(cluster: &Cluster) -> u64 {
    let stdout = cluster.etcdctl_ok_at(0, &["get", "", "--prefix", "--keys-only", "-w", "json"]);
    let response: Value = serde_json::from_str(&stdout).expect("etcdctl prints JSON");
    response["count"].as_u64().unwrap_or(0)
}

fn kv_workloads(flavor: Flavor) {
    let options = ClusterOptions {
        extra_args: vec!["--max-request-bytes".into(), MAX_REQUEST_BYTES.to_string()],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(flavor, 3, options);

    // Sequential keys over a key space of 40: exactly 40 keys afterwards.
    let summary = bench_ok(
        &cluster,
        &[
            "--conns",
            "2",
            "--clients",
            "8",
            "put",
            "--total",
            "300",
            "--key-space-size",
            "40",
            "--sequential-keys",
        ],
    );
    assert_eq!(summary["workload"], "put");
    assert_section(&summary, 0, 300);
    assert_eq!(key_count(&cluster), 40);

    // Key number 0 is eight zero bytes; a range over all keys reads the 40.
    for consistency in ["l", "s"] {
        let summary = bench_ok(
            &cluster,
            &[
                "--conns",
                "2",
                "--clients",
                "4",
                "range",
                "",
                "--prefix",
                "--total",
                "50",
                "--consistency",
                consistency,
            ],
        );
        assert_section(&summary, 0, 50);
        assert_eq!(summary["details"]["keys_per_range"], 40, "{summary}");
    }

    // Two puts per txn over a larger key space: new keys appear.
    let summary = bench_ok(
        &cluster,
        &[
            "--target-leader",
            "--conns",
            "2",
            "--clients",
            "8",
            "txn-put",
            "--total",
            "100",
            "--txn-ops",
            "2",
            "--key-space-size",
            "1000",
        ],
    );
    assert_section(&summary, 0, 100);
    assert!(key_count(&cluster) > 40);

    let summary = bench_ok(
        &cluster,
        &[
            "--conns",
            "2",
            "--clients",
            "4",
            "txn-mixed",
            "a",
            "--total",
            "100",
            "--key-space-size",
            "20",
        ],
    );
    let reads = summary["sections"][0]["requests"].as_u64().unwrap();
    let writes = summary["sections"][1]["requests"].as_u64().unwrap();
    assert_eq!(reads + writes, 100, "{summary}");
    assert_eq!(summary["sections"][0]["errors"], 0, "{summary}");
    assert_eq!(summary["sections"][1]["errors"], 0, "{summary}");

    // Puts larger than --max-request-bytes: the server's error, one line.
    let output = bench(
        &cluster,
        &[
            "put",
            "--total",
            "5",
            "--val-size",
            &(2 * MAX_REQUEST_BYTES).to_string(),
        ],
    );
    assert!(
        !output.status.success(),
        "{}",
        common::describe_output(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("every request failed") && stderr.contains("request is too large"),
        "{stderr}"
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");
    assert_eq!(summary["sections"][0]["errors"], 5, "{summary}");
}

#[test]
fn kv_workloads_on_etcd() {
    kv_workloads(Flavor::Etcd);
}

#[test]
fn kv_workloads_on_shoal() {
    kv_workloads(Flavor::Shoal);
}

/// A member restarted in the middle of a run: the calls made while it is down
/// fail, and the connection is reopened once it is back (as grpc-go does),
/// so the run goes on instead of failing every call after the restart.
#[test]
fn a_run_reconnects_to_a_restarted_member() {
    let mut cluster = Cluster::start(Flavor::Shoal, 1, ClusterOptions::default());
    // 600 ranges at 100 a second: about six seconds.
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command
        .args(["bench", "--endpoints", &cluster.endpoints().join(",")])
        .args(["--output", "json", "--conns", "1", "--clients", "2"])
        .args(["range", "k", "--total", "600", "--rate", "100"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let run = command.spawn().expect("start shoal bench");
    std::thread::sleep(Duration::from_millis(1500));
    cluster.kill(0);
    std::thread::sleep(Duration::from_millis(500));
    cluster.restart(0);
    cluster.wait_until_healthy();
    let output = run.wait_with_output().expect("wait for shoal bench");
    let summary: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("a JSON summary: {}", common::describe_output(&output)));
    let section = &summary["sections"][0];
    let ok = section["requests"].as_u64().unwrap();
    let errors = section["errors"].as_u64().unwrap();
    assert_eq!(ok + errors, 600, "{summary}");
    assert!(
        errors > 0,
        "calls made while the member was down failed: {summary}"
    );
    // About 150 ranges before the kill; without reconnecting, none after it.
    assert!(ok > 300, "ranges succeeded after the restart: {summary}");
}

#[test]
fn an_endpoint_that_is_not_listening_is_a_one_line_error() {
    let port = common::free_ports(1)[0];
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command.args([
        "bench",
        "--endpoints",
        &format!("127.0.0.1:{port}"),
        "put",
        "--total",
        "1",
    ]);
    let output = common::run_with_watchdog(command, None, BENCH_TIMEOUT);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to http://127.0.0.1:{port}")),
        "{stderr}"
    );
}
