//! Prometheus against shoal: a real Prometheus (Debian's `prometheus`)
//! scrapes a three-member `shoal store` cluster and a `shoal up` server's
//! API port (TLS, with the admin client certificate), and answers queries
//! dashboards and alert rules make; `promtool check metrics` lints every
//! endpoint's output; the store's metric names are compared with those of a
//! real etcd 3.4 (Debian's `etcd-server`) started on loopback ports.

mod common;
#[path = "common/kube.rs"]
mod kube;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Cluster, ClusterOptions, Flavor, free_ports};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
const ETCD: &str = "/usr/bin/etcd";
/// How long Prometheus gets to scrape and answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The etcd names the etcd mixin's dashboards and alerts use, and the rest
/// of etcd's basic set that shoal serves: each must be in shoal's output.
const REQUIRED_ETCD_NAMES: &[&str] = &[
    "etcd_server_has_leader",
    "etcd_server_is_leader",
    "etcd_server_is_learner",
    "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending",
    "etcd_server_proposals_failed_total",
    "etcd_server_heartbeat_send_failures_total",
    "etcd_server_slow_apply_total",
    "etcd_server_slow_read_indexes_total",
    "etcd_server_read_indexes_failed_total",
    "etcd_server_id",
    "etcd_server_version",
    "etcd_cluster_version",
    "etcd_server_quota_backend_bytes",
    "etcd_disk_wal_fsync_duration_seconds",
    "etcd_disk_wal_write_bytes_total",
    "etcd_disk_backend_commit_duration_seconds",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_debugging_mvcc_db_total_size_in_bytes",
    "etcd_debugging_mvcc_keys_total",
    "etcd_debugging_mvcc_current_revision",
    "etcd_debugging_mvcc_compact_revision",
    "etcd_debugging_mvcc_watcher_total",
    "etcd_debugging_lease_granted_total",
    "etcd_debugging_lease_revoked_total",
    "etcd_debugging_lease_renewed_total",
    "etcd_mvcc_put_total",
    "etcd_mvcc_range_total",
    "etcd_mvcc_delete_total",
    "etcd_mvcc_txn_total",
    "etcd_network_peer_round_trip_time_seconds",
    "etcd_network_peer_sent_bytes_total",
    "etcd_network_peer_received_bytes_total",
    "etcd_network_peer_sent_failures_total",
    "etcd_network_client_grpc_sent_bytes_total",
    "etcd_network_client_grpc_received_bytes_total",
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
];

/// Names kept from etcd whose lint findings etcd has too (gauges named
/// `_total`): kept for the dashboards that query them by these names.
const INHERITED_LINT_NAMES: &[&str] = &[
    "etcd_debugging_mvcc_keys_total",
    "etcd_debugging_mvcc_watcher_total",
];

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `curl` with `args`; the body, or a panic naming the URL.
fn curl(args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("a UTF-8 body")
}

/// The metric family names declared by `# TYPE` lines.
fn family_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Runs `promtool check metrics` on `exposition`; returns the names it
/// complains about, panicking on anything that is not a lint finding.
fn promtool_findings(what: &str, exposition: &str) -> Vec<String> {
    use std::io::Write as _;
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(exposition.as_bytes())
        .expect("feed promtool");
    let output = child.wait_with_output().expect("wait for promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Exit 1 is a parse error; 3 is lint findings, one line each.
    assert!(
        output.status.success() || output.status.code() == Some(3),
        "promtool could not parse {what}'s /metrics ({}):\n{report}",
        output.status
    );
    report
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// Asks Prometheus `query` until `accept` takes the result vector (each
/// element's labels and value); panics after `QUERY_TIMEOUT`.
fn query_until(
    prometheus_port: u16,
    query: &str,
    mut accept: impl FnMut(&[serde_json::Value]) -> bool,
    meanwhile: &mut dyn FnMut(),
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + QUERY_TIMEOUT;
    let url = format!("http://127.0.0.1:{prometheus_port}/api/v1/query");
    loop {
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "5", "--get", &url])
            .args(["--data-urlencode", &format!("query={query}")])
            .output()
            .expect("run curl");
        let last = String::from_utf8_lossy(&output.stdout).into_owned();
        if let Ok(answer) = serde_json::from_str::<serde_json::Value>(&last)
            && let Some(result) = answer.pointer("/data/result").and_then(|r| r.as_array())
            && accept(result)
        {
            return result.clone();
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not answer {query:?} as expected within {QUERY_TIMEOUT:?}; last answer: {last}"
        );
        meanwhile();
        thread::sleep(Duration::from_millis(500));
    }
}

fn sample_value(element: &serde_json::Value) -> f64 {
    element
        .pointer("/value/1")
        .and_then(|value| value.as_str())
        .and_then(|value| value.parse().ok())
        .unwrap_or(f64::NAN)
}

fn host_port(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// etcd 3.4 on loopback ports: its `/metrics`, for the name comparison.
fn etcd_metrics(dir: &Path) -> String {
    let ports = free_ports(2);
    let client = format!("http://127.0.0.1:{}", ports[0]);
    let peer = format!("http://127.0.0.1:{}", ports[1]);
    let _etcd = Process(
        Command::new(ETCD)
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = Command::new("curl")
            .args([
                "-sS",
                "--fail",
                "--max-time",
                "2",
                &format!("{client}/metrics"),
            ])
            .output()
            .expect("run curl");
        let body = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success()
            && body.contains("etcd_server_has_leader 1")
            && body.contains("etcd_cluster_version{")
        {
            return body;
        }
        assert!(Instant::now() < deadline, "etcd did not serve /metrics");
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn prometheus_scrapes_the_store_and_the_api() {
    let dir = tempfile::Builder::new()
        .prefix("shoal-prometheus-test-")
        .tempdir()
        .expect("create a temporary directory");
    let mut cluster = Cluster::start(Flavor::Shoal, 3, ClusterOptions::default());
    cluster.wait_until_healthy();
    let server = kube::Shoal::start();
    let pki = server.dir.path().join("data/pki");
    let (ca, cert, key) = (
        pki.join("ca.crt"),
        pki.join("admin.crt"),
        pki.join("admin.key"),
    );

    let store_targets: Vec<String> = cluster
        .endpoints()
        .iter()
        .map(|url| format!("'{}'", host_port(url)))
        .collect();
    let prometheus_port = free_ports(1)[0];
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n\
         \x20 - job_name: store\n    static_configs:\n      - targets: [{}]\n\
         \x20 - job_name: api\n    scheme: https\n    tls_config:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        store_targets.join(", "),
        ca.display(),
        cert.display(),
        key.display(),
        server.api_port,
    );
    let config_path = dir.path().join("prometheus.yml");
    fs::write(&config_path, config).expect("write prometheus.yml");
    let _prometheus = Process(
        Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("prometheus.log")).expect("a log file"))
            .spawn()
            .expect("start prometheus"),
    );

    // Writes keep the WAL fsyncing while Prometheus takes its samples.
    let mut n_puts = 0;
    let mut write_some = || {
        n_puts += 1;
        cluster.etcdctl_ok_at(0, &["put", &format!("/prometheus/{n_puts}"), "value"]);
    };

    let has_leader = query_until(
        prometheus_port,
        "etcd_server_has_leader{job=\"store\"}",
        |result| result.len() == 3,
        &mut write_some,
    );
    for element in &has_leader {
        assert_eq!(
            sample_value(element),
            1.0,
            "a member without a leader: {element}"
        );
    }
    let fsync_p99 = query_until(
        prometheus_port,
        "histogram_quantile(0.99, rate(etcd_disk_wal_fsync_duration_seconds_bucket{job=\"store\"}[1m]))",
        |result| {
            result.len() == 3
                && result
                    .iter()
                    .all(|element| sample_value(element).is_finite())
        },
        &mut write_some,
    );
    for element in &fsync_p99 {
        let seconds = sample_value(element);
        assert!(
            seconds > 0.0 && seconds <= 8.192,
            "fsync p99 {seconds}: {element}"
        );
    }
    query_until(
        prometheus_port,
        "up{job=\"api\"}",
        |result| result.len() == 1 && sample_value(&result[0]) == 1.0,
        &mut write_some,
    );
    query_until(
        prometheus_port,
        "sum(apiserver_request_total{job=\"api\"})",
        |result| result.len() == 1 && sample_value(&result[0]) >= 1.0,
        &mut write_some,
    );
    // The mixin's "active watch streams" and failed-RPC expressions work.
    query_until(
        prometheus_port,
        "sum(grpc_server_handled_total{job=\"store\",grpc_method=\"Put\",grpc_code=\"OK\"})",
        |result| result.len() == 1 && sample_value(&result[0]) >= 1.0,
        &mut write_some,
    );

    // promtool on every endpoint, in the text format.
    let store_metrics = curl(&[&format!("{}/metrics", cluster.endpoint(0))]);
    let api_url = format!("https://127.0.0.1:{}/metrics", server.api_port);
    let tls_args = [
        "--cacert",
        ca.to_str().expect("a UTF-8 path"),
        "--cert",
        cert.to_str().expect("a UTF-8 path"),
        "--key",
        key.to_str().expect("a UTF-8 path"),
    ];
    let mut api_args: Vec<&str> = tls_args.to_vec();
    api_args.push(&api_url);
    let api_metrics = curl(&api_args);
    let server_store_metrics = curl(&[&format!("{}/metrics", server.client_url())]);
    for (what, exposition) in [
        ("a store member", &store_metrics),
        ("the API server", &api_metrics),
        ("shoal up's store", &server_store_metrics),
    ] {
        let unexpected: Vec<String> = promtool_findings(what, exposition)
            .into_iter()
            .filter(|name| !INHERITED_LINT_NAMES.contains(&name.as_str()))
            .collect();
        assert!(
            unexpected.is_empty(),
            "promtool finds in {what}'s /metrics: {unexpected:?}"
        );
    }
    assert!(
        api_metrics.contains("shoal_pods{phase=\"Running\"}"),
        "{api_metrics}"
    );
    assert!(api_metrics.contains("shoal_nodes "), "{api_metrics}");

    // Without the client certificate the API's metrics are refused.
    let anonymous = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(&ca)
        .arg(&api_url)
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");

    // OpenMetrics when asked for.
    let openmetrics = curl(&[
        "-H",
        "Accept: application/openmetrics-text; version=1.0.0",
        &format!("{}/metrics", cluster.endpoint(1)),
    ]);
    assert!(openmetrics.ends_with("# EOF\n"));
    assert!(openmetrics.contains("# TYPE etcd_server_leader_changes_seen counter\n"));

    // The names, against etcd 3.4's own /metrics.
    let shoal_names = family_names(&store_metrics);
    let missing: Vec<&&str> = REQUIRED_ETCD_NAMES
        .iter()
        .filter(|name| !shoal_names.contains(**name))
        .collect();
    assert!(missing.is_empty(), "shoal's store lacks {missing:?}");
    let etcd_names = family_names(&etcd_metrics(dir.path()));
    let lacking: Vec<&String> = etcd_names
        .iter()
        .filter(|name| !name.starts_with("go_") && !shoal_names.contains(*name))
        .collect();
    let extra: Vec<&String> = shoal_names
        .iter()
        .filter(|name| !etcd_names.contains(*name))
        .collect();
    println!(
        "etcd 3.4 serves and shoal does not ({}): {lacking:#?}",
        lacking.len()
    );
    println!(
        "shoal serves and etcd 3.4 does not ({}): {extra:#?}",
        extra.len()
    );
    // The list itself is checked against etcd: every required name is one
    // etcd serves (a lone etcd member has no peers, so no peer series: those
    // names are etcd's once it has peers, and the alerts use them then).
    let not_etcds: Vec<&&str> = REQUIRED_ETCD_NAMES
        .iter()
        .filter(|name| !name.starts_with("etcd_network_peer_") && !etcd_names.contains(**name))
        .collect();
    assert!(
        not_etcds.is_empty(),
        "a required name is not etcd's: {not_etcds:?}"
    );

    // With a member down the others still answer, and still have a leader.
    let leader = cluster.leader_idx().expect("a leader");
    let survivor = (leader + 1) % 3;
    let down = (leader + 2) % 3;
    cluster.kill(down);
    let during = curl(&[&format!("{}/metrics", cluster.endpoint(survivor))]);
    assert!(during.contains("etcd_server_has_leader 1\n"), "{during}");
}
