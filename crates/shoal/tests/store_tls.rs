//! The store's client TLS beyond the etcdctl transcripts of `conformance`:
//! the start-up errors for inconsistent flags and bad files, `--auto-tls`,
//! the v3 JSON gateway over https with curl, and shoal's own clients
//! (`shoal bench --cacert/--cert/--key`, `client::Remote`) over TLS. Where
//! etcd 3.4 is the reference, both run the same check.

mod common;

use std::process::Command;
use std::time::Duration;

use client::tls::ClientTlsFiles;
use client::{Kv, Remote};
use common::tls::TestPki;
use common::{ClientTls, Cluster, ClusterOptions, Flavor};
use serde_json::Value;

const START_TIMEOUT: Duration = Duration::from_secs(20);

fn mutual_tls(pki: &TestPki) -> ClusterOptions {
    ClusterOptions {
        client_tls: Some(ClientTls {
            server_args: pki.server_args(true),
            etcdctl_args: pki.etcdctl_args(),
        }),
        ..ClusterOptions::default()
    }
}

/// Starts a lone member with `args` after the usual ones and returns its
/// exit status and stderr; it must exit by itself (a refused start).
fn refused_start(flavor: Flavor, dir: &std::path::Path, args: &[String]) -> String {
    let ports = common::free_ports(2);
    let mut command = match flavor {
        Flavor::Etcd => Command::new(common::ETCD),
        Flavor::Shoal => {
            let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
            command.arg("store");
            command
        }
    };
    command
        .arg(format!(
            "--data-dir={}",
            dir.join(format!("{flavor:?}")).display()
        ))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{}", ports[1]))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{}",
            ports[1]
        ))
        .arg(format!(
            "--initial-cluster=default=http://127.0.0.1:{}",
            ports[1]
        ))
        .args(
            args.iter()
                .map(|arg| arg.replace("PORT", &ports[0].to_string())),
        );
    let output = common::run_with_watchdog(command, None, START_TIMEOUT);
    assert!(
        !output.status.success(),
        "{flavor:?} started with {args:?}:\n{}",
        common::describe_output(&output)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_https_url_without_a_certificate_is_refused_with_etcds_words() {
    let dir = tempfile::tempdir().unwrap();
    let args = vec![
        "--listen-client-urls=https://127.0.0.1:PORT".to_string(),
        "--advertise-client-urls=https://127.0.0.1:PORT".to_string(),
    ];
    let words =
        "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:";
    for flavor in [Flavor::Etcd, Flavor::Shoal] {
        let stderr = refused_start(flavor, dir.path(), &args);
        assert!(stderr.contains(words), "{flavor:?}: {stderr}");
        assert!(stderr.contains("with HTTPS scheme"), "{flavor:?}: {stderr}");
    }
}

#[test]
fn a_malformed_certificate_or_key_stops_the_start_with_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let base = [
        "--listen-client-urls=https://127.0.0.1:PORT".to_string(),
        "--advertise-client-urls=https://127.0.0.1:PORT".to_string(),
    ];
    let cases = [
        (
            format!("--cert-file={}", garbage.display()),
            format!("--key-file={}", pki.server_key.display()),
        ),
        (
            format!("--cert-file={}", pki.server_cert.display()),
            format!("--key-file={}", garbage.display()),
        ),
        (
            format!("--cert-file={}", pki.server_cert.display()),
            format!("--key-file={}", pki.client_key.display()),
        ),
    ];
    let named = [&garbage, &garbage, &pki.client_key];
    for ((cert, key), file) in cases.into_iter().zip(named) {
        let mut args = base.to_vec();
        args.push(cert);
        args.push(key);
        let stderr = refused_start(Flavor::Shoal, dir.path(), &args);
        let error_lines: Vec<&str> = stderr
            .lines()
            .filter(|line| line.starts_with("error:"))
            .collect();
        assert_eq!(error_lines.len(), 1, "{stderr}");
        assert!(
            error_lines[0].contains(&file.display().to_string()),
            "{stderr}"
        );
    }
}

#[test]
fn auto_tls_serves_a_certificate_made_under_the_data_dir() {
    let options = ClusterOptions {
        client_tls: Some(ClientTls {
            server_args: vec!["--auto-tls".to_string()],
            // etcdctl 3.4 skips verification only with both flags.
            etcdctl_args: vec![
                "--insecure-transport=false".to_string(),
                "--insecure-skip-tls-verify".to_string(),
            ],
        }),
        ..ClusterOptions::default()
    };
    for flavor in [Flavor::Etcd, Flavor::Shoal] {
        let cluster = Cluster::start(flavor, 1, options.clone());
        cluster.etcdctl_ok_at(0, &["put", "k", "auto"]);
        assert_eq!(
            cluster.etcdctl_ok_at(0, &["get", "k", "--print-value-only"]),
            "auto\n"
        );
        let fixtures = cluster.data_dir(0).join("fixtures/client");
        let cert = fixtures.join("cert.pem");
        assert!(
            cert.exists() && fixtures.join("key.pem").exists(),
            "{flavor:?}"
        );
        // The made certificate is its own CA.
        let output = cluster.etcdctl_at_with_tls(
            0,
            &[format!("--cacert={}", cert.display())],
            &["get", "k", "--print-value-only"],
        );
        assert!(
            output.status.success(),
            "{flavor:?}: {}",
            common::describe_output(&output)
        );
    }
}

fn curl(args: &[String]) -> std::process::Output {
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "5"]).args(args);
    common::run_with_watchdog(command, None, Duration::from_secs(20))
}

#[test]
fn the_json_gateway_answers_over_https_with_curl() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    for flavor in [Flavor::Etcd, Flavor::Shoal] {
        let cluster = Cluster::start(flavor, 1, mutual_tls(&pki));
        let endpoint = cluster.endpoint(0);
        let with_certificate = |path: &str, body: &str| {
            curl(&[
                "--cacert".into(),
                pki.ca.display().to_string(),
                "--cert".into(),
                pki.client_cert.display().to_string(),
                "--key".into(),
                pki.client_key.display().to_string(),
                format!("{endpoint}{path}"),
                "-d".into(),
                body.into(),
            ])
        };
        // "a" and "dg==" ("v") in base64, as the gateway takes bytes.
        let put = with_certificate("/v3/kv/put", r#"{"key":"YQ==","value":"dg=="}"#);
        assert!(
            put.status.success(),
            "{flavor:?}: {}",
            common::describe_output(&put)
        );
        let range = with_certificate("/v3/kv/range", r#"{"key":"YQ=="}"#);
        assert!(
            range.status.success(),
            "{flavor:?}: {}",
            common::describe_output(&range)
        );
        let body: Value = serde_json::from_slice(&range.stdout).expect("the gateway answers JSON");
        assert_eq!(body["kvs"][0]["value"], "dg==", "{flavor:?}: {body}");
        // Without a client certificate the handshake fails: no answer at all.
        let refused = curl(&[
            "--cacert".into(),
            pki.ca.display().to_string(),
            format!("{endpoint}/v3/kv/range"),
            "-d".into(),
            r#"{"key":"YQ=="}"#.into(),
        ]);
        assert!(
            !refused.status.success(),
            "{flavor:?}: {}",
            common::describe_output(&refused)
        );
        assert!(
            refused.stdout.is_empty(),
            "{flavor:?}: {}",
            common::describe_output(&refused)
        );
    }
}

#[test]
fn bench_and_the_remote_client_work_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let cluster = Cluster::start(Flavor::Shoal, 1, mutual_tls(&pki));
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command
        .args([
            "bench",
            "--endpoints",
            &cluster.endpoint(0),
            "--output",
            "json",
        ])
        .arg(format!("--cacert={}", pki.ca.display()))
        .arg(format!("--cert={}", pki.client_cert.display()))
        .arg(format!("--key={}", pki.client_key.display()))
        .args([
            "--clients",
            "4",
            "put",
            "--total",
            "200",
            "--key-space-size",
            "20",
            "--sequential-keys",
        ]);
    let output = common::run_with_watchdog(command, None, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "{}",
        common::describe_output(&output)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("bench prints JSON");
    assert_eq!(summary["sections"][0]["requests"], 200, "{summary}");
    assert_eq!(summary["sections"][0]["errors"], 0, "{summary}");

    let runtime = common::tokio_runtime();
    let files = ClientTlsFiles {
        ca_file: Some(pki.ca.clone()),
        cert_file: Some(pki.client_cert.clone()),
        key_file: Some(pki.client_key.clone()),
    };
    let count = runtime.block_on(async {
        // tonic's channels start their tasks on the runtime they are made in.
        let remote = Remote::with_tls(&[cluster.endpoint(0)], &files).expect("TLS settings");
        let request = proto::etcdserverpb::RangeRequest {
            key: vec![0].into(),
            range_end: vec![0].into(),
            count_only: true,
            ..Default::default()
        };
        tokio::time::timeout(Duration::from_secs(10), remote.range(request))
            .await
            .expect("the range answers in time")
            .expect("the range succeeds")
            .count
    });
    assert_eq!(count, 20);
    // Without the client certificate the server refuses the connection.
    let without_certificate = ClientTlsFiles {
        ca_file: Some(pki.ca.clone()),
        ..ClientTlsFiles::default()
    };
    let outcome = runtime.block_on(async {
        let remote =
            Remote::with_tls(&[cluster.endpoint(0)], &without_certificate).expect("TLS settings");
        tokio::time::timeout(
            Duration::from_secs(10),
            remote.range(proto::etcdserverpb::RangeRequest {
                key: b"k".to_vec().into(),
                ..Default::default()
            }),
        )
        .await
        .expect("the refusal comes in time")
    });
    assert!(outcome.is_err(), "{outcome:?}");
}
