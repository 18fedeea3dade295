//! Differential conformance: the same etcdctl scenarios run on a fresh etcd
//! cluster and a fresh shoal cluster must print the same thing (stdout,
//! stderr, exit code), once ids, ports, terms and timings are normalised.
//! The suite is first run on two independent etcd clusters, which proves
//! the normaliser removes only what legitimately differs.

mod common;

use common::tls::TestPki;
use common::{ClientTls, Cluster, ClusterOptions, Flavor, Identities};

/// Small, so that a scenario can exceed it with a command-line argument.
const MAX_REQUEST_BYTES: usize = 4096;

/// Which members an etcdctl invocation talks to.
#[derive(Clone, Copy)]
enum Endpoints {
    /// The first member only, so that response headers name a known member.
    First,
    /// Every member, in member order (for `endpoint status`).
    All,
}

/// One etcdctl invocation.
struct Step {
    args: Vec<String>,
    /// Fed to etcdctl's stdin (`txn` reads its requests there).
    stdin: String,
    endpoints: Endpoints,
    /// etcdctl's TLS flags for this step instead of the cluster's: a client
    /// without a certificate, or with one the server must refuse.
    tls_args: Option<Vec<String>>,
}

fn run(args: &[&str]) -> Step {
    Step {
        args: args.iter().map(|arg| arg.to_string()).collect(),
        stdin: String::new(),
        endpoints: Endpoints::First,
        tls_args: None,
    }
}

fn run_on_all(args: &[&str]) -> Step {
    Step {
        endpoints: Endpoints::All,
        ..run(args)
    }
}

/// `etcdctl txn` reads compares, success requests and failure requests from
/// stdin, each block ended by a blank line.
fn txn(args: &[&str], stdin: &str) -> Step {
    Step {
        stdin: stdin.to_string(),
        ..run(args)
    }
}

/// Run in order on a fresh one-member cluster. Revisions are in the
/// comments; a fresh cluster starts at revision 1. Steps that only read
/// (`get`, `endpoint`, `member`) and name no output format also run with
/// `-w json`. etcdctl 3.4 has no `get --count-only`: `count` is covered by
/// the JSON form of every `get`.
fn single_member_steps() -> Vec<Step> {
    // One more than etcd's limit of 128 operations per txn.
    let too_many_puts: String = (0..129)
        .map(|key_idx| format!("put many/{key_idx:03} v\n"))
        .collect();
    // Twice the --max-request-bytes of the conformance clusters.
    let too_large_value = "x".repeat(2 * MAX_REQUEST_BYTES);
    vec![
        // Puts.
        run(&["put", "foo/a", "1"]),                             // 2
        run(&["put", "foo/b", "22"]),                            // 3
        run(&["put", "foo/c", "3"]),                             // 4
        run(&["put", "foo/a", "444"]),                           // 5: foo/a version 2
        run(&["put", "bar", "x"]),                               // 6
        run(&["put", "baz", "z", "-w", "json"]),                 // 7
        run(&["put", "--prev-kv", "foo/b", "5"]),                // 8
        run(&["put", "--prev-kv", "zoo", "9", "-w", "json"]),    // 9: no previous
        run(&["put", "--prev-kv", "foo/c", "33", "-w", "json"]), // 10
        run(&["put", "", "empty-key"]),                          // etcdserver: key is not provided
        // Gets.
        run(&["get", "foo/a"]),
        run(&["get", "missing"]),
        run(&["get", "foo/", "--prefix"]),
        run(&["get", "foo/a", "--rev=2"]),
        run(&["get", "foo/", "--prefix", "--rev=4"]),
        run(&["get", "foo/", "--prefix", "--limit=2"]),
        run(&["get", "foo/", "--prefix", "--sort-by=KEY"]),
        run(&[
            "get",
            "foo/",
            "--prefix",
            "--sort-by=CREATE",
            "--order=DESCEND",
        ]),
        run(&["get", "foo/", "--prefix", "--sort-by=MODIFY"]),
        run(&[
            "get",
            "foo/",
            "--prefix",
            "--sort-by=MODIFY",
            "--order=DESCEND",
        ]),
        run(&["get", "foo/", "--prefix", "--sort-by=VALUE"]),
        run(&[
            "get",
            "foo/",
            "--prefix",
            "--sort-by=VERSION",
            "--order=DESCEND",
        ]),
        run(&["get", "foo/", "--prefix", "--order=DESCEND"]),
        run(&["get", "foo/", "--prefix", "--order=ASCEND", "--limit=1"]),
        run(&["get", "foo/", "--prefix", "--keys-only"]),
        run(&["get", "foo/b", "--from-key"]),
        run(&["get", "", "--from-key", "--keys-only", "--limit=3"]),
        run(&["get", "foo/a", "foo/c"]),
        run(&["get", "a", "foo/b", "--keys-only"]),
        run(&["get", "foo/", "--prefix", "--print-value-only"]),
        run(&["get", "foo/", "--prefix", "--consistency=s"]),
        run(&["get", "foo/a", "--rev=100"]), // a future revision
        // Deletes.
        run(&["del", "nothing"]),
        run(&["del", "foo/c"]),                          // 11
        run(&["del", "--prev-kv", "foo/b"]),             // 12
        run(&["del", "--prev-kv", "baz", "-w", "json"]), // 13
        run(&["put", "foo/x", "1"]),                     // 14
        run(&["put", "foo/y", "2"]),                     // 15
        run(&["del", "--prefix", "foo/"]),               // 16: foo/a, foo/x, foo/y
        run(&["del", "--from-key", "y", "-w", "json"]),  // 17: zoo
        run(&["get", "", "--from-key"]),
        run(&["get", "foo/a", "--rev=15"]), // before the delete
        // Transactions: every compare target, both branches.
        run(&["put", "t", "v1"]), // 18
        txn(
            &["txn"],
            "value(\"t\") = \"v1\"\nversion(\"t\") = \"1\"\ncreate(\"t\") = \"18\"\nmod(\"t\") > \"17\"\n\nput t v2\nget t\n\nput failed yes\n\n",
        ), // 19: success
        txn(
            &["txn"],
            "value(\"t\") = \"v1\"\n\nput t v3\n\nput failed yes\nget t\ndel nothing\n\n",
        ), // 20: failure
        txn(
            &["txn", "-w", "json"],
            "version(\"t\") > \"1\"\nmod(\"t\") < \"100\"\n\nput t v4\ndel failed\n\nget t\n\n",
        ), // 21: success
        txn(
            &["txn", "-w", "json"],
            "create(\"t\") != \"18\"\n\nput t v5\n\nget t --prefix\n\n",
        ), // failure, read only: no new revision
        txn(&["txn"], "value(\"t\") = \"v4\"\n\n\n\n"), // success with no requests
        run(&["get", "t", "-w", "json"]),
        // Compaction.
        run(&["compact", "5"]),
        run(&["get", "foo/a", "--rev=4"]), // compacted
        run(&["get", "foo/a", "--rev=5"]), // the compaction revision itself is kept
        run(&["compact", "5"]),            // already compacted
        run(&["compact", "3"]),
        run(&["compact", "1000"]), // a future revision
        run(&["compact", "--physical", "10"]),
        run(&["get", "", "--from-key", "--rev=10"]),
        run(&["get", "", "--from-key", "--rev=9"]),
        // Errors etcd clients match on.
        run(&["put", "--ignore-value", "t"]), // 22: keeps the value
        run(&["put", "--ignore-value", "missing"]),
        run(&["put", "--lease=1234", "leased", "v"]),
        run(&["put", "big", &too_large_value]),
        txn(&["txn"], "\n\nput twice 1\nput twice 2\n\n\n"),
        txn(&["txn"], &format!("\n{too_many_puts}\n\n")),
        run(&["get", "t", "-w", "json"]),
        // Cluster and maintenance.
        run(&["endpoint", "status"]),
        run(&["endpoint", "status", "-w", "table"]),
        run(&["endpoint", "health"]),
        run(&["endpoint", "health", "-w", "table"]),
        run(&["member", "list"]),
        run(&["member", "list", "-w", "table"]),
    ]
}

/// Run in order on a fresh three-member cluster whose first member leads.
/// `endpoint health` is left out: etcdctl prints its rows in the order the
/// answers arrive.
fn three_member_steps() -> Vec<Step> {
    vec![
        run(&["put", "k", "v"]),
        run(&["get", "k"]),
        run(&["member", "list"]),
        run(&["member", "list", "-w", "table"]),
        run_on_all(&["endpoint", "status"]),
        run_on_all(&["endpoint", "status", "-w", "table"]),
    ]
}

/// Run with TLS on the client port and `--client-cert-auth`: the good
/// client's certificate works for reads, writes, health and status; a
/// client without one, with one from another CA or with an expired one is
/// refused at the handshake; a client that does not trust the server's CA
/// refuses the server.
fn tls_steps(pki: &TestPki) -> Vec<Step> {
    let cacert = format!("--cacert={}", pki.ca.display());
    let as_client = |tls_args: Vec<String>, args: &[&str]| Step {
        tls_args: Some(tls_args),
        ..run(args)
    };
    vec![
        run(&["put", "k", "v"]),
        run(&["get", "k"]),
        run(&["put", "--prev-kv", "k", "w", "-w", "json"]),
        run(&["endpoint", "health"]),
        run(&["endpoint", "status"]),
        run(&["member", "list"]),
        // `-w simple`, so each refusal (a command timeout long) runs once.
        as_client(vec![cacert.clone()], &["get", "k", "-w", "simple"]),
        as_client(
            vec![
                cacert.clone(),
                format!("--cert={}", pki.other_client_cert.display()),
                format!("--key={}", pki.other_client_key.display()),
            ],
            &["get", "k", "-w", "simple"],
        ),
        as_client(
            vec![
                cacert,
                format!("--cert={}", pki.expired_client_cert.display()),
                format!("--key={}", pki.expired_client_key.display()),
            ],
            &["get", "k", "-w", "simple"],
        ),
        as_client(
            vec![
                format!("--cert={}", pki.client_cert.display()),
                format!("--key={}", pki.client_key.display()),
            ],
            &["get", "k", "-w", "simple"],
        ),
    ]
}

/// The normalised output of one etcdctl invocation.
#[derive(PartialEq, Eq)]
struct Transcript {
    command: String,
    stdout: String,
    stderr: String,
    exit_code: Option<i32>,
}

impl std::fmt::Display for Transcript {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "exit code {:?}\n  stdout:\n{}  stderr:\n{}",
            self.exit_code,
            indent(&self.stdout),
            indent(&self.stderr)
        )
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("    {line}\n")).collect()
}

/// Whether a command only reads, so it can be run twice (simple and JSON).
fn is_read_only(args: &[&str]) -> bool {
    matches!(args.first(), Some(&"get" | &"endpoint" | &"member"))
}

/// Runs every step (and the JSON form of read-only ones) on `cluster`.
fn run_steps(cluster: &Cluster, steps: &[Step]) -> Vec<Transcript> {
    let mut transcripts = Vec::new();
    for step in steps {
        let args: Vec<&str> = step.args.iter().map(String::as_str).collect();
        let mut forms = vec![args.clone()];
        if is_read_only(&args) && !args.contains(&"-w") {
            forms.push([&args[..], &["-w", "json"]].concat());
        }
        for args in forms {
            let output = match (step.endpoints, step.stdin.as_str()) {
                _ if step.tls_args.is_some() => cluster.etcdctl_at_with_tls(
                    0,
                    step.tls_args.as_deref().unwrap_or_default(),
                    &args,
                ),
                (Endpoints::All, "") => cluster.etcdctl(&args),
                (Endpoints::All, stdin) => cluster.etcdctl_with_stdin(&args, stdin),
                (Endpoints::First, "") => cluster.etcdctl_at(0, &args),
                (Endpoints::First, stdin) => cluster.etcdctl_at_with_stdin(0, &args, stdin),
            };
            let shown_args: Vec<String> = args
                .iter()
                .map(|arg| match arg.len() {
                    0 => "''".to_string(),
                    1..=40 => arg.to_string(),
                    len => format!("<{len} bytes>"),
                })
                .collect();
            transcripts.push(Transcript {
                command: format!("etcdctl {}", shown_args.join(" ")),
                stdout: cluster.normalize(&String::from_utf8_lossy(&output.stdout)),
                stderr: cluster.normalize(&String::from_utf8_lossy(&output.stderr)),
                exit_code: output.status.code(),
            });
        }
    }
    transcripts
}

/// A fresh cluster whose first member leads: outputs say which member leads.
fn start(flavor: Flavor, n_members: usize, client_tls: Option<ClientTls>) -> Cluster {
    let options = ClusterOptions {
        preferred_leader: Some(0),
        extra_args: vec![format!("--max-request-bytes={MAX_REQUEST_BYTES}")],
        client_tls,
        ..ClusterOptions::default()
    };
    Cluster::start_led_by_first(flavor, n_members, options)
}

/// Runs `steps` on a fresh cluster of each flavor and panics with every
/// difference, `expected` being the reference.
fn assert_same_outputs(expected: Flavor, actual: Flavor, n_members: usize, steps: &[Step]) {
    assert_same_outputs_with(expected, actual, n_members, steps, None);
}

/// [`assert_same_outputs`] on clusters that serve clients as `client_tls` says.
fn assert_same_outputs_with(
    expected: Flavor,
    actual: Flavor,
    n_members: usize,
    steps: &[Step],
    client_tls: Option<ClientTls>,
) {
    let expected_transcripts = {
        let cluster = start(expected, n_members, client_tls.clone());
        run_steps(&cluster, steps)
    };
    let actual_transcripts = {
        let cluster = start(actual, n_members, client_tls);
        run_steps(&cluster, steps)
    };
    // To see what is compared: `SHOAL_TEST_SHOW_OUTPUTS=1 cargo test --test conformance -- --nocapture`.
    if std::env::var_os("SHOAL_TEST_SHOW_OUTPUTS").is_some() {
        for transcript in &expected_transcripts {
            println!("$ {}\n{transcript}", transcript.command);
        }
    }
    assert_eq!(expected_transcripts.len(), actual_transcripts.len());
    let mut report = String::new();
    let mut n_differences = 0;
    for (step_idx, (expected_transcript, actual_transcript)) in expected_transcripts
        .iter()
        .zip(&actual_transcripts)
        .enumerate()
    {
        if expected_transcript != actual_transcript {
            n_differences += 1;
            report.push_str(&format!(
                "\n#{step_idx} `{}`\n  {expected:?} (expected): {expected_transcript}  {actual:?} (actual): {actual_transcript}",
                expected_transcript.command
            ));
        }
    }
    assert!(
        n_differences == 0,
        "{n_differences} of {} etcdctl outputs differ between {expected:?} and {actual:?} ({n_members} members):{report}",
        expected_transcripts.len()
    );
}

#[test]
fn single_member_etcd_matches_etcd() {
    assert_same_outputs(Flavor::Etcd, Flavor::Etcd, 1, &single_member_steps());
}

#[test]
fn single_member_shoal_matches_etcd() {
    assert_same_outputs(Flavor::Etcd, Flavor::Shoal, 1, &single_member_steps());
}

#[test]
fn three_members_etcd_matches_etcd() {
    assert_same_outputs(Flavor::Etcd, Flavor::Etcd, 3, &three_member_steps());
}

#[test]
fn three_members_shoal_matches_etcd() {
    assert_same_outputs(Flavor::Etcd, Flavor::Shoal, 3, &three_member_steps());
}

/// Both flavors with TLS on the client port and `--client-cert-auth`.
fn assert_same_tls_outputs(expected: Flavor, actual: Flavor) {
    let dir = tempfile::tempdir().expect("a directory for the certificates");
    let pki = TestPki::new(dir.path());
    let client_tls = ClientTls {
        server_args: pki.server_args(true),
        etcdctl_args: pki.etcdctl_args(),
    };
    assert_same_outputs_with(expected, actual, 1, &tls_steps(&pki), Some(client_tls));
}

#[test]
fn client_tls_etcd_matches_etcd() {
    assert_same_tls_outputs(Flavor::Etcd, Flavor::Etcd);
}

#[test]
fn client_tls_shoal_matches_etcd() {
    assert_same_tls_outputs(Flavor::Etcd, Flavor::Shoal);
}

/// The normaliser must leave no trace of the cluster's own ids and ports,
/// or two clusters could never compare equal; and the scenarios must really
/// exercise the server (a normaliser that blanked everything would pass the
/// etcd-against-etcd tests).
#[test]
fn normalized_etcd_outputs_hide_ids_and_keep_data() {
    let cluster = start(Flavor::Etcd, 1, None);
    let transcripts = run_steps(&cluster, &single_member_steps());
    let identities = cluster.identities().clone();
    let all_output: String = transcripts
        .iter()
        .map(|transcript| format!("{}{}", transcript.stdout, transcript.stderr))
        .collect();
    for raw in [
        identities.cluster_id.to_string(),
        identities.member_ids[0].to_string(),
        format!("{:x}", identities.member_ids[0]),
        format!("127.0.0.1:{}", identities.client_ports[0]),
    ] {
        assert!(
            !all_output.contains(&raw),
            "normalised output still contains {raw}"
        );
    }
    for expected in [
        "\"revision\":21",
        "\"create_revision\":18",
        "required revision has been compacted",
        "required revision is a future revision",
        "key is not provided",
        "request is too large",
        "too many operations in txn request",
        "duplicate key given in txn request",
        "SUCCESS",
        "FAILURE",
        "compacted revision 5",
        "<member0>, started, m0, http://<peer0>, http://<client0>, false",
    ] {
        assert!(
            all_output.contains(expected),
            "no etcdctl output contains {expected:?}:\n{all_output}"
        );
    }
}

/// What the normaliser keeps: a different revision or value is still a
/// difference.
#[test]
fn normalizer_keeps_revisions_and_values() {
    let identities = Identities {
        cluster_id: 17448609010643035951,
        member_ids: vec![15101859335780327642],
        client_ports: vec![23790],
        peer_ports: vec![23800],
    };
    let header = |revision: u64, raft_term: u64| {
        format!(
            "{{\"header\":{{\"cluster_id\":17448609010643035951,\"member_id\":15101859335780327642,\"revision\":{revision},\"raft_term\":{raft_term}}}}}\n"
        )
    };
    assert_eq!(
        common::normalize(&header(3, 2), &identities),
        common::normalize(&header(3, 7), &identities),
        "raft terms differ legitimately"
    );
    assert_ne!(
        common::normalize(&header(3, 2), &identities),
        common::normalize(&header(4, 2), &identities),
        "revisions must be compared"
    );
    assert_eq!(
        common::normalize(
            "d194950d851a60da, started, m0, http://127.0.0.1:23800, http://127.0.0.1:23790, false\n",
            &identities
        ),
        "<member0>, started, m0, http://<peer0>, http://<client0>, false\n"
    );
    assert_ne!(
        common::normalize("foo\n1\n", &identities),
        common::normalize("foo\n2\n", &identities)
    );
}
