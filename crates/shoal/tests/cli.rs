//! The `shoal` command line: help texts, one-line errors for bad flag
//! values, and the data directory lock.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{Cluster, ClusterOptions, Flavor};

/// A `shoal` that does not exit within this long has ignored a bad flag and
/// started serving.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The flags `shoal store` shares with etcd, with etcd's meanings.
const STORE_FLAGS: &[&str] = &[
    "--name",
    "--data-dir",
    "--listen-client-urls",
    "--advertise-client-urls",
    "--listen-peer-urls",
    "--initial-advertise-peer-urls",
    "--initial-cluster",
    "--initial-cluster-state",
    "--initial-cluster-token",
    "--snapshot-count",
    "--heartbeat-interval",
    "--election-timeout",
    "--log-level",
    "--max-request-bytes",
    "--quota-backend-bytes",
];

fn shoal(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command.args(args);
    common::run_with_watchdog(command, None, EXIT_TIMEOUT)
}

/// Asserts that `shoal args` fails with exactly one line on stderr that
/// names each of `mentions`.
fn assert_one_line_error(args: &[&str], mentions: &[&str]) {
    let output = shoal(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "`shoal {}` should fail\n{}",
        args.join(" "),
        common::describe_output(&output)
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "`shoal {}` should print a one-line error, got:\n{stderr}",
        args.join(" ")
    );
    for mention in mentions {
        assert!(
            lines[0].contains(mention),
            "the error of `shoal {}` should name {mention:?}: {}",
            args.join(" "),
            lines[0]
        );
    }
}

#[test]
fn help_lists_the_subcommands() {
    let output = shoal(&["--help"]);
    assert!(
        output.status.success(),
        "{}",
        common::describe_output(&output)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    for subcommand in ["store", "up"] {
        assert!(
            stdout.contains(subcommand),
            "`shoal --help` does not mention `{subcommand}`:\n{stdout}"
        );
    }
}

#[test]
fn store_help_lists_etcds_flags() {
    let output = shoal(&["store", "--help"]);
    assert!(
        output.status.success(),
        "{}",
        common::describe_output(&output)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let missing: Vec<&&str> = STORE_FLAGS
        .iter()
        .filter(|flag| !stdout.contains(**flag))
        .collect();
    assert!(
        missing.is_empty(),
        "`shoal store --help` does not mention {missing:?}:\n{stdout}"
    );
}

#[test]
fn bad_initial_cluster_state_is_a_one_line_error() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    assert_one_line_error(
        &[
            "store",
            "--data-dir",
            &data_dir.path().display().to_string(),
            "--initial-cluster-state",
            "maybe",
        ],
        &["--initial-cluster-state", "maybe"],
    );
}

#[test]
fn bad_listen_client_url_is_a_one_line_error() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    assert_one_line_error(
        &[
            "store",
            "--data-dir",
            &data_dir.path().display().to_string(),
            "--listen-client-urls",
            "notaurl",
        ],
        &["notaurl"],
    );
}

#[test]
fn second_store_on_the_same_data_dir_is_refused() {
    let cluster = Cluster::start(Flavor::Shoal, 1, ClusterOptions::default());
    let data_dir = cluster.data_dir(0).display().to_string();
    // Other ports, so that only the data directory is shared.
    let ports = common::free_ports(2);
    let client_url = format!("http://127.0.0.1:{}", ports[0]);
    let peer_url = format!("http://127.0.0.1:{}", ports[1]);
    let output = shoal(&[
        "store",
        "--name=m0",
        &format!("--data-dir={data_dir}"),
        &format!("--listen-client-urls={client_url}"),
        &format!("--advertise-client-urls={client_url}"),
        &format!("--listen-peer-urls={peer_url}"),
        &format!("--initial-advertise-peer-urls={peer_url}"),
        &format!("--initial-cluster=m0={peer_url}"),
    ]);
    assert!(
        !output.status.success(),
        "a second `shoal store` on {data_dir} should be refused\n{}",
        common::describe_output(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&data_dir),
        "the refusal should name the data directory {data_dir}:\n{stderr}"
    );
    assert!(
        ["lock", "in use"]
            .iter()
            .any(|word| stderr.to_lowercase().contains(word)),
        "the refusal should say the data directory is locked:\n{stderr}"
    );
    // The first member is unharmed.
    cluster.etcdctl_ok_at(0, &["put", "still", "serving"]);
}

#[test]
fn sigterm_stops_the_member_cleanly_and_frees_the_data_directory() {
    let data = tempfile::tempdir().expect("temporary directory");
    let data_dir = data.path().join("member").display().to_string();
    let ports = common::free_ports(2);
    let client_url = format!("http://127.0.0.1:{}", ports[0]);
    let peer_url = format!("http://127.0.0.1:{}", ports[1]);
    let args = [
        "store".to_string(),
        "--name=m0".to_string(),
        format!("--data-dir={data_dir}"),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=m0={peer_url}"),
    ];
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start shoal store")
    };
    let put = |value: &str| {
        common::etcdctl_command(&client_url, "3s", &["put", "k", value], None)
            .status
            .success()
    };
    let wait_for_put = |value: &str| {
        let deadline = std::time::Instant::now() + EXIT_TIMEOUT;
        while std::time::Instant::now() < deadline {
            if put(value) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the member at {client_url} never accepted a put");
    };

    let mut member = start();
    wait_for_put("before");
    // A watch stays open over the stop: it must not hold the member up (the
    // server closes its connections a moment after it stops taking calls).
    let mut watcher = Command::new("etcdctl")
        .args(["--endpoints", &client_url, "watch", "k"])
        .env("ETCDCTL_API", "3")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start etcdctl watch");
    std::thread::sleep(Duration::from_millis(500));
    let signalled = std::time::Instant::now();
    let pid = member.id().to_string();
    let signal = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(signal.success());
    let deadline = std::time::Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(status) = member.try_wait().expect("wait for the member") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the member did not stop within {EXIT_TIMEOUT:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "a SIGTERM stop exits 0, got {status}");
    let stop_time = signalled.elapsed();
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(
        stop_time < Duration::from_secs(4),
        "with a watch open, the member took {stop_time:?} to stop"
    );

    // The lock is gone with the process, and the data is still there.
    let mut member = start();
    wait_for_put("after");
    let output = common::etcdctl_command(&client_url, "3s", &["get", "k", "--rev=2"], None);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("before"),
        "the write before the stop survives it\n{}",
        common::describe_output(&output)
    );
    let _ = member.kill();
    let _ = member.wait();
}

#[test]
fn machine_failure_flags_are_checked() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = data_dir.path().display().to_string();
    assert_one_line_error(
        &[
            "up",
            "--data-dir",
            &data_dir,
            "--node-lease-renew-interval",
            "10s",
            "--node-monitor-grace-period",
            "8s",
        ],
        &["--node-monitor-grace-period", "--node-lease-renew-interval"],
    );
    assert_one_line_error(
        &[
            "up",
            "--data-dir",
            &data_dir,
            "--default-unreachable-toleration-seconds=-1",
        ],
        &["--default-unreachable-toleration-seconds", "-1"],
    );
    assert_one_line_error(
        &["up", "--data-dir", &data_dir, "--node-eviction-rate=-0.5"],
        &["--node-eviction-rate"],
    );
}
