//! Differential conformance of the store's authentication and authorization
//! (issue 20, part 1): the same etcdctl 3.4 transcript runs against a fresh
//! etcd 3.4 and a fresh shoal, and every output (stdout, stderr, exit
//! status) must be the same once the harness's normaliser (`common`) has
//! replaced member and cluster ids and ports, and this file's has replaced
//! lease ids. Users, roles, permissions over keys, prefixes and open-ended
//! ranges, `auth enable/disable`, `--user` access, wrong passwords, missing
//! users, txn, watch and lease under auth.
//!
//! Then, shoal alone: the auth state survives a restart, and a user added
//! through one member of a three-member cluster authenticates on another.
//!
//! To see what is compared:
//! `SHOAL_TEST_SHOW_OUTPUTS=1 cargo test --test conformance_auth -- --nocapture`.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{Cluster, ClusterOptions, Flavor};

/// A step of the transcript: etcdctl's arguments and what it reads on stdin.
struct Step {
    args: Vec<String>,
    stdin: Option<&'static str>,
}

fn run(args: &str) -> Step {
    Step {
        args: args.split_whitespace().map(str::to_owned).collect(),
        stdin: None,
    }
}

fn run_with_stdin(args: &str, stdin: &'static str) -> Step {
    Step {
        args: args.split_whitespace().map(str::to_owned).collect(),
        stdin: Some(stdin),
    }
}

const ROOT: &str = "--user=root:rootpw";
const ALICE: &str = "--user=alice:alicepw";

fn transcript() -> Vec<Step> {
    let root = |args: &str| run(&format!("{ROOT} {args}"));
    let alice = |args: &str| run(&format!("{ALICE} {args}"));
    vec![
        // Turning auth on needs a root user (etcdctl itself adds the root
        // role to it when only that is missing, so that error is not seen).
        run("auth enable"),
        run("user add root:rootpw"),
        run("role add root"),
        run("user grant-role root root"),
        // Roles and their permissions.
        run("role add reader"),
        run("role add reader"),
        run("role add"),
        run("role grant-permission --prefix=true reader readwrite /app/"),
        run("role grant-permission --from-key reader read m"),
        run("role grant-permission reader write /single"),
        run("role grant-permission reader read /single"),
        run("role grant-permission nosuch read /x"),
        run("role get reader"),
        run("role get nosuch"),
        run("role list"),
        run("role revoke-permission reader /nokey"),
        run("role add spare"),
        run("role grant-permission spare read /spare"),
        run("role revoke-permission spare /spare"),
        run("role get spare"),
        run("role delete spare"),
        run("role delete spare"),
        // Users.
        run("user add alice:alicepw"),
        run("user add alice:other"),
        run("user grant-role alice reader"),
        run("user grant-role alice reader"),
        run("user grant-role alice nosuch"),
        run("user grant-role nobody reader"),
        run("user revoke-role alice spare"),
        run("user get alice"),
        run("user get nobody"),
        run("user list"),
        run("user add bob:bobpw"),
        run("user delete bob"),
        run("user delete bob"),
        run("put /app/x before"),
        // Auth on: every call needs a user.
        run("auth enable"),
        run("auth enable"),
        run("get /app/x"),
        run("put /app/x v"),
        run("user list"),
        run("--user=alice:wrong get /app/x"),
        run("--user=nobody:pw get /app/x"),
        root("put /app/x 1"),
        alice("get /app/x"),
        alice("put /app/y 2"),
        alice("get --prefix /app/"),
        alice("get --prefix /"),
        alice("put /other v"),
        alice("del /app/y"),
        alice("del --prefix /"),
        alice("get zzz"),
        alice("get --from-key m"),
        alice("get --from-key a"),
        alice("put /single s"),
        alice("get /single"),
        alice("put m v"),
        // A txn needs every key it touches, on both branches, compares as reads.
        Step {
            stdin: Some("value(\"/app/x\") = \"1\"\n\nput /app/t ok\n\nput /app/t no\n\n"),
            ..alice("txn")
        },
        Step {
            stdin: Some("value(\"/app/x\") = \"1\"\n\nput /app/t ok\n\nput /elsewhere no\n\n"),
            ..alice("txn")
        },
        Step {
            stdin: Some("value(\"/other\") = \"1\"\n\nput /app/t ok\n\n\n"),
            ..alice("txn")
        },
        // Admin calls are root's.
        alice("user list"),
        alice("role list"),
        alice("user get alice"),
        alice("user get root"),
        alice("role get reader"),
        alice("role get root"),
        alice("user add eve:evepw"),
        alice("auth disable"),
        alice("defrag"),
        alice("member list -w simple"),
        // A watch needs read permission on its range.
        alice("watch /other"),
        alice("watch --prefix /"),
        root("user list"),
        root("user delete root"),
        root("role delete root"),
        root("user revoke-role root root"),
        // Leases: anyone may grant one; revoking needs write on its keys.
        alice("lease grant 600"),
        alice("put --lease={lease} /app/leased v"),
        root("put --lease={lease} /outside v"),
        alice("lease revoke {lease}"),
        root("lease revoke {lease}"),
        // A password change ends the old password.
        run_with_stdin(
            &format!("{ROOT} user passwd alice --interactive=false"),
            "newpw\n",
        ),
        alice("get /app/x"),
        run("--user=alice:newpw get /app/x"),
        // Revoking the role takes the keys away.
        root("user revoke-role alice reader"),
        run("--user=alice:newpw get /app/x"),
        run("--user=alice:newpw user get alice"),
        // Auth off again.
        run("auth disable"),
        root("auth disable"),
        run("get /app/x"),
        run("user list"),
        run("user delete alice"),
        run("role delete reader"),
        run("role list"),
    ]
}

/// Runs the transcript against `cluster`; returns each step's normalised output.
fn play(cluster: &Cluster) -> Vec<String> {
    let mut outputs = Vec::new();
    let mut lease = String::new();
    for step in transcript() {
        let args: Vec<String> = step
            .args
            .iter()
            .map(|arg| arg.replace("{lease}", &lease))
            .collect();
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = match step.stdin {
            Some(stdin) => cluster.etcdctl_at_with_stdin(0, &arg_refs, stdin),
            None => cluster.etcdctl_at(0, &arg_refs),
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if let Some(granted) = stdout
            .strip_prefix("lease ")
            .and_then(|rest| rest.split_whitespace().next())
        {
            lease = granted.to_owned();
        }
        outputs.push(format!(
            "$ etcdctl {}\n{}",
            step.args.join(" "),
            normalize(cluster, &output, &lease)
        ));
    }
    outputs
}

fn normalize(cluster: &Cluster, output: &Output, lease: &str) -> String {
    let text = format!(
        "stdout:\n{}stderr:\n{}status: {:?}\n",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        output.status.code()
    );
    let text = if lease.is_empty() {
        text
    } else {
        text.replace(lease, "<lease>")
    };
    cluster.normalize(&text)
}

fn show(label: &str, outputs: &[String]) {
    if std::env::var_os("SHOAL_TEST_SHOW_OUTPUTS").is_some() {
        println!("==== {label}");
        for output in outputs {
            println!("{output}");
        }
    }
}

#[test]
fn auth_transcript_matches_etcd() {
    let etcd = Cluster::start(Flavor::Etcd, 1, ClusterOptions::default());
    let expected = play(&etcd);
    drop(etcd);
    let shoal = Cluster::start(Flavor::Shoal, 1, ClusterOptions::default());
    let actual = play(&shoal);
    show("etcd", &expected);
    show("shoal", &actual);
    let mismatches: Vec<String> = expected
        .iter()
        .zip(&actual)
        .filter(|(etcd, shoal)| etcd != shoal)
        .map(|(etcd, shoal)| format!("etcd:\n{etcd}\nshoal:\n{shoal}"))
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} steps differ:\n{}\nshoal's log:\n{}",
        mismatches.len(),
        expected.len(),
        mismatches.join("\n----\n"),
        shoal.logs()
    );
}

/// Sets up root and a user `carol` who may read and write `/c/`, and turns
/// auth on, through member `member_idx`.
fn set_up_auth(cluster: &Cluster, member_idx: usize) {
    for args in [
        "user add root:rootpw",
        "role add root",
        "user grant-role root root",
        "role add c",
        "role grant-permission --prefix=true c readwrite /c/",
        "user add carol:carolpw",
        "user grant-role carol c",
        "auth enable",
    ] {
        let args: Vec<&str> = args.split_whitespace().collect();
        cluster.etcdctl_ok_at(member_idx, &args);
    }
}

fn assert_denied(output: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("etcdserver: permission denied"),
        "{what}: expected permission denied, got:\n{}",
        common::describe_output(output)
    );
}

#[test]
fn auth_state_survives_a_restart() {
    let mut shoal = Cluster::start(Flavor::Shoal, 1, ClusterOptions::default());
    set_up_auth(&shoal, 0);
    shoal.etcdctl_ok_at(0, &["--user=carol:carolpw", "put", "/c/k", "v"]);
    shoal.kill(0);
    shoal.restart(0);
    assert_eq!(wait_for_carol(&shoal, 0), "/c/k\nv\n");
    assert_denied(
        &shoal.etcdctl_at(0, &["--user=carol:carolpw", "put", "/d", "v"]),
        "carol outside her role after a restart",
    );
    let unauthenticated = shoal.etcdctl_at(0, &["get", "/c/k"]);
    assert!(
        String::from_utf8_lossy(&unauthenticated.stderr).contains("user name is empty"),
        "auth is still on after a restart: {}",
        common::describe_output(&unauthenticated)
    );
    let roles = shoal.etcdctl_ok_at(0, &["--user=root:rootpw", "user", "get", "carol"]);
    assert_eq!(roles, "User: carol\nRoles: c\n");
}

#[test]
fn a_user_added_on_one_member_authenticates_on_another() {
    let shoal = Cluster::start(Flavor::Shoal, 3, ClusterOptions::default());
    set_up_auth(&shoal, 0);
    // Every member applies the change; the others may lag a moment behind.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for member_idx in 1..3 {
        loop {
            let output = shoal.etcdctl_at(
                member_idx,
                &[
                    "--user=carol:carolpw",
                    "put",
                    "/c/from",
                    &member_idx.to_string(),
                ],
            );
            if output.status.success() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "carol cannot write through member {member_idx}:\n{}",
                common::describe_output(&output)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_denied(
            &shoal.etcdctl_at(member_idx, &["--user=carol:carolpw", "get", "/elsewhere"]),
            "carol outside her role on another member",
        );
    }
    // A token issued by one member is good on another (the JSON gateway
    // takes it in `Authorization`).
    let token = authenticate_over_gateway(&shoal.endpoint(0), "carol", "carolpw");
    let answer = curl_json(
        &shoal.endpoint(2),
        "/v3/kv/range",
        r#"{"key":"L2MvZnJvbQ=="}"#,
        Some(&token),
    );
    assert!(
        answer.contains(r#""count":"1""#),
        "range with a token from another member: {answer}"
    );
    let refused = curl_json(
        &shoal.endpoint(2),
        "/v3/kv/range",
        r#"{"key":"L2MvZnJvbQ=="}"#,
        Some("not-a-token.1"),
    );
    assert!(
        refused.contains("etcdserver: invalid auth token"),
        "a made-up token: {refused}"
    );
}

/// Waits (bounded) until carol can read `/c/k` through `member_idx` (a
/// member with auth on is not `endpoint health`y to a caller without a
/// user, so the harness's health wait does not apply); returns what she read.
fn wait_for_carol(cluster: &Cluster, member_idx: usize) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        cluster.assert_members_alive();
        let output = cluster.etcdctl_at(member_idx, &["--user=carol:carolpw", "get", "/c/k"]);
        if output.status.success() {
            return String::from_utf8_lossy(&output.stdout).into_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "carol cannot read through member {member_idx}:\n{}",
            common::describe_output(&output)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Saves a snapshot of `from` (auth set up, carol's key written) and
/// restores it into a fresh one-member cluster of `into`.
fn snapshot_carries_auth(from: Flavor, into: Flavor) {
    let source = Cluster::start(from, 1, ClusterOptions::default());
    set_up_auth(&source, 0);
    source.etcdctl_ok_at(0, &["--user=carol:carolpw", "put", "/c/k", "v"]);
    let snapshot = source.dir().join("auth.db");
    source.etcdctl_ok_at(
        0,
        &[
            "--user=root:rootpw",
            "snapshot",
            "save",
            snapshot.to_str().expect("a UTF-8 path"),
        ],
    );
    let mut target = Cluster::start(into, 1, ClusterOptions::default());
    target.kill_all();
    let args = target.member_args(0);
    let flag = |name: &str| -> String {
        let prefix = format!("--{name}=");
        args.iter()
            .find_map(|arg| arg.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("the harness gives no --{name}: {args:?}"))
            .to_string()
    };
    let data_dir = target.data_dir(0).to_path_buf();
    std::fs::remove_dir_all(&data_dir).expect("remove the first data dir");
    let mut command = match into {
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
        .arg(&snapshot)
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
    let output = common::run_with_watchdog(command, None, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "{into:?} snapshot restore failed:\n{}",
        common::describe_output(&output)
    );
    target.restart(0);
    assert_eq!(wait_for_carol(&target, 0), "/c/k\nv\n");
    assert_denied(
        &target.etcdctl_at(0, &["--user=carol:carolpw", "get", "/elsewhere"]),
        "carol outside her role after a restore",
    );
    let users = target.etcdctl_ok_at(0, &["--user=root:rootpw", "user", "list"]);
    assert_eq!(users, "carol\nroot\n");
}

#[test]
fn shoal_restores_users_and_roles_from_an_etcd_snapshot() {
    snapshot_carries_auth(Flavor::Etcd, Flavor::Shoal);
}

#[test]
fn etcd_restores_users_and_roles_from_a_shoal_snapshot() {
    snapshot_carries_auth(Flavor::Shoal, Flavor::Etcd);
}

fn curl_json(endpoint: &str, path: &str, body: &str, token: Option<&str>) -> String {
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "10", "-X", "POST", "-d", body]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: {token}")]);
    }
    command.arg(format!("{endpoint}{path}"));
    let output = command.output().expect("run curl");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn authenticate_over_gateway(endpoint: &str, name: &str, password: &str) -> String {
    let answer = curl_json(
        endpoint,
        "/v3/auth/authenticate",
        &format!(r#"{{"name":"{name}","password":"{password}"}}"#),
        None,
    );
    let parsed: serde_json::Value =
        serde_json::from_str(&answer).unwrap_or_else(|_| panic!("authenticate: {answer}"));
    parsed["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {answer}"))
        .to_owned()
}

#[test]
fn the_remote_client_calls_as_a_user_and_authenticates_again_when_its_token_ends() {
    use client::Kv as _;
    let shoal = Cluster::start(Flavor::Shoal, 1, ClusterOptions::default());
    set_up_auth(&shoal, 0);
    let runtime = common::tokio_runtime();
    // The client's channel is made inside the runtime.
    let _in_runtime = runtime.enter();
    let endpoint = shoal.endpoint(0);
    let carol = client::Remote::new(std::slice::from_ref(&endpoint))
        .expect("a valid endpoint")
        .with_user("carol", "carolpw");
    let put = |key: &str| proto::etcdserverpb::PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: b"v".to_vec().into(),
        ..Default::default()
    };
    runtime
        .block_on(carol.put(put("/c/one")))
        .expect("carol writes under /c/");
    let refused = runtime
        .block_on(carol.put(put("/d")))
        .expect_err("carol may not write /d");
    assert!(
        refused
            .to_string()
            .contains("etcdserver: permission denied"),
        "{refused}"
    );
    // Turning auth off and on forgets every token; the client notices and
    // authenticates again.
    shoal.etcdctl_ok_at(0, &["--user=root:rootpw", "auth", "disable"]);
    shoal.etcdctl_ok_at(0, &["auth", "enable"]);
    runtime
        .block_on(carol.put(put("/c/two")))
        .expect("carol writes again with a new token");
    let nobody = client::Remote::new(std::slice::from_ref(&endpoint))
        .expect("a valid endpoint")
        .with_user("carol", "wrong");
    let failed = runtime
        .block_on(nobody.put(put("/c/three")))
        .expect_err("a wrong password");
    assert!(
        failed
            .to_string()
            .contains("etcdserver: authentication failed, invalid user ID or password"),
        "{failed}"
    );
}
