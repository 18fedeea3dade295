//! etcd's v3 JSON gateway, driven with `curl` against etcd 3.4 and against
//! shoal: the same session runs on both, and the HTTP statuses and JSON
//! bodies must match once ids, terms and sizes are normalised, and byte for
//! byte apart from those values (see `body_shape`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Cluster, ClusterOptions, Flavor, body_shape, run_with_watchdog};
use serde_json::Value;

/// Small, so that the size limits are cheap to reach: etcd refuses a
/// request above it, and its gRPC server one above it plus 512 KiB.
const MAX_REQUEST_BYTES: usize = 4096;
const CURL_WATCHDOG: Duration = Duration::from_secs(30);

fn start(flavor: Flavor) -> Cluster {
    let options = ClusterOptions {
        extra_args: vec![format!("--max-request-bytes={MAX_REQUEST_BYTES}")],
        ..ClusterOptions::default()
    };
    Cluster::start(flavor, 1, options)
}

/// One HTTP exchange: the status and the body.
struct Reply {
    status: u16,
    body: String,
}

/// `curl` with `data` as the body (from stdin, so large bodies fit), giving
/// up after `max_seconds` (the way to end a stream).
fn curl(method: &str, url: &str, data: Option<&str>, max_seconds: u32) -> Reply {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "-N", "-X", method, "-w", "\n%{http_code}"])
        .args(["-m", &max_seconds.to_string()])
        .arg(url);
    if data.is_some() {
        command.args(["--data-binary", "@-"]);
    }
    let output = run_with_watchdog(command, data.map(str::as_bytes), CURL_WATCHDOG);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Reply {
        status: status.trim().parse().unwrap_or(0),
        body: body.to_string(),
    }
}

/// Replaces what legitimately differs between two clusters (ids, terms,
/// URLs, sizes, versions) with placeholders, everywhere in a JSON value.
fn normalize_json(value: &mut Value) {
    const VARYING: &[&str] = &[
        "cluster_id",
        "member_id",
        "raft_term",
        "dbSize",
        "dbSizeInUse",
        "leader",
        "raftIndex",
        "raftTerm",
        "raftAppliedIndex",
        "peerURLs",
        "clientURLs",
        "etcdserver",
    ];
    match value {
        Value::Object(object) => {
            let is_member = object.contains_key("peerURLs");
            for (name, field) in object.iter_mut() {
                let is_version =
                    name == "version" && field.as_str().is_some_and(|v| v.contains('.'));
                if VARYING.contains(&name.as_str()) || is_version || (is_member && name == "ID") {
                    *field = Value::String(format!("<{name}>"));
                } else {
                    normalize_json(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_json),
        _ => {}
    }
}

/// A body as normalised JSON lines (a stream has one value per line), or as
/// it is if it is not JSON.
fn normalize_body(body: &str) -> String {
    body.lines()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(mut value) => {
                normalize_json(&mut value);
                value.to_string()
            }
            Err(_) => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut encoded = String::new();
    for chunk in bytes.chunks(3) {
        let buffer = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let bits = u32::from(buffer[0]) << 16 | u32::from(buffer[1]) << 8 | u32::from(buffer[2]);
        for position in 0..4 {
            if position <= chunk.len() {
                encoded.push(char::from(
                    ALPHABET[(bits >> (18 - 6 * position)) as usize & 63],
                ));
            } else {
                encoded.push('=');
            }
        }
    }
    encoded
}

/// The session: (method, path, body, drop) where `drop` names a field whose
/// value depends on timing (a lease's remaining TTL) and is not compared.
fn steps() -> Vec<(&'static str, &'static str, String, Option<&'static str>)> {
    let key_foo = base64("foo");
    let value_bar = base64("bar");
    let value_baz = base64("baz");
    let big = "x".repeat(MAX_REQUEST_BYTES * 2);
    let huge = "x".repeat(600 * 1024);
    vec![
        ("GET", "/health", String::new(), None),
        ("GET", "/version", String::new(), None),
        (
            "POST",
            "/v3/kv/put",
            format!(r#"{{"key":"{key_foo}","value":"{value_bar}"}}"#),
            None,
        ),
        (
            "POST",
            "/v3/kv/range",
            format!(r#"{{"key":"{key_foo}"}}"#),
            None,
        ),
        (
            "POST",
            "/v3/kv/put",
            format!(r#"{{"key":"{key_foo}","value":"{value_baz}","prev_kv":true}}"#),
            None,
        ),
        (
            "POST",
            "/v3/kv/put",
            format!(
                r#"{{"key":"{}","value":"{value_bar}","lease":"0"}}"#,
                base64("fop")
            ),
            None,
        ),
        (
            "POST",
            "/v3/kv/range",
            format!(
                r#"{{"key":"{}","range_end":"{}","sort_order":"DESCEND","limit":1}}"#,
                base64("f"),
                base64("g")
            ),
            None,
        ),
        (
            "POST",
            "/v3/kv/txn",
            format!(
                r#"{{"compare":[{{"key":"{key_foo}","result":"EQUAL","target":"VALUE","value":"{value_baz}"}}],"success":[{{"request_put":{{"key":"{key_foo}","value":"{value_bar}"}}}},{{"request_range":{{"key":"{key_foo}"}}}}],"failure":[{{"request_delete_range":{{"key":"{key_foo}"}}}}]}}"#
            ),
            None,
        ),
        (
            "POST",
            "/v3/kv/txn",
            format!(
                r#"{{"compare":[{{"key":"{key_foo}","target":"CREATE","create_revision":"1"}}],"failure":[{{"request_delete_range":{{"key":"{key_foo}","prev_kv":true}}}}]}}"#
            ),
            None,
        ),
        (
            "POST",
            "/v3/kv/deleterange",
            format!(r#"{{"key":"{}","prev_kv":true}}"#, base64("fop")),
            None,
        ),
        (
            "POST",
            "/v3/kv/compaction",
            r#"{"revision":"3"}"#.into(),
            None,
        ),
        (
            "POST",
            "/v3/kv/compaction",
            r#"{"revision":"3"}"#.into(),
            None,
        ),
        (
            "POST",
            "/v3/kv/range",
            format!(r#"{{"key":"{key_foo}","revision":"2"}}"#),
            None,
        ),
        (
            "POST",
            "/v3/kv/range",
            format!(r#"{{"key":"{key_foo}","revision":"100"}}"#),
            None,
        ),
        (
            "POST",
            "/v3/lease/grant",
            r#"{"TTL":"60","ID":"77"}"#.into(),
            None,
        ),
        (
            "POST",
            "/v3/lease/grant",
            r#"{"TTL":"60","ID":"77"}"#.into(),
            None,
        ),
        (
            "POST",
            "/v3/kv/put",
            format!(r#"{{"key":"{key_foo}","value":"{value_bar}","lease":"77"}}"#),
            None,
        ),
        ("POST", "/v3/lease/keepalive", r#"{"ID":"77"}"#.into(), None),
        (
            "POST",
            "/v3/lease/timetolive",
            r#"{"ID":"77","keys":true}"#.into(),
            Some("TTL"),
        ),
        ("POST", "/v3/lease/leases", "{}".into(), None),
        ("POST", "/v3/kv/lease/revoke", r#"{"ID":"77"}"#.into(), None),
        ("POST", "/v3/lease/revoke", r#"{"ID":"77"}"#.into(), None),
        (
            "POST",
            "/v3/lease/timetolive",
            r#"{"ID":"77"}"#.into(),
            None,
        ),
        (
            "POST",
            "/v3/lease/grant",
            r#"{"TTL":"60","ID":"78"}"#.into(),
            None,
        ),
        (
            "POST",
            "/v3/lock/lock",
            format!(r#"{{"name":"{}","lease":"78"}}"#, base64("my")),
            None,
        ),
        (
            "POST",
            "/v3/lock/unlock",
            format!(r#"{{"key":"{}"}}"#, base64("my/4e")),
            None,
        ),
        (
            "POST",
            "/v3/lock/lock",
            format!(r#"{{"name":"{}","lease":"5"}}"#, base64("my")),
            None,
        ),
        (
            "POST",
            "/v3/election/campaign",
            format!(
                r#"{{"name":"{}","value":"{}","lease":"78"}}"#,
                base64("e"),
                base64("v")
            ),
            None,
        ),
        (
            "POST",
            "/v3/election/leader",
            format!(r#"{{"name":"{}"}}"#, base64("e")),
            None,
        ),
        (
            "POST",
            "/v3/election/leader",
            format!(r#"{{"name":"{}"}}"#, base64("none")),
            None,
        ),
        ("POST", "/v3/cluster/member/list", "{}".into(), None),
        ("POST", "/v3/maintenance/status", "{}".into(), None),
        // Bad input.
        (
            "POST",
            "/v3/kv/range",
            format!(r#"{{"key":"{key_foo}"#),
            None,
        ),
        ("POST", "/v3/kv/range", r#"{"key":"Zm9"}"#.into(), None),
        ("POST", "/v3/kv/range", r#"{"kex":"Zm9v"}"#.into(), None),
        ("POST", "/v3/kv/range", String::new(), None),
        (
            "POST",
            "/v3/kv/range",
            format!(r#"{{"key":"{key_foo}","limit":"x"}}"#),
            None,
        ),
        ("POST", "/v3/kv/range", "[]".into(), None),
        ("GET", "/v3/kv/range", String::new(), None),
        ("POST", "/v3/kv/nothing", "{}".into(), None),
        ("GET", "/nothing", String::new(), None),
        ("PUT", "/health", String::new(), None),
        (
            "POST",
            "/v3/watch",
            r#"{"create_request":{"key":"Zm9v"}"#.into(),
            None,
        ),
        (
            "POST",
            "/v3/kv/put",
            format!(r#"{{"key":"{key_foo}","value":"{}"}}"#, base64(&big)),
            None,
        ),
        (
            "POST",
            "/v3/kv/put",
            format!(r#"{{"key":"{key_foo}","value":"{}"}}"#, base64(&huge)),
            None,
        ),
    ]
}

/// Runs the session on one cluster and returns its transcript.
fn transcript(cluster: &Cluster) -> Vec<String> {
    let endpoint = cluster.endpoint(0);
    let mut lines = Vec::new();
    for (method, path, body, drop) in steps() {
        let data = (method != "GET").then_some(body.as_str());
        let reply = curl(method, &format!("{endpoint}{path}"), data, 5);
        let mut normalized = normalize_body(&reply.body);
        if let Some(field) = drop
            && let Ok(mut value) = serde_json::from_str::<Value>(&normalized)
        {
            value.as_object_mut().map(|object| object.remove(field));
            normalized = value.to_string();
        }
        let shown_body: String = body.chars().take(120).collect();
        lines.push(format!(
            "{method} {path} {shown_body}\n  -> {} {normalized}\n  bytes {:?}",
            reply.status,
            body_shape(&reply.body)
        ));
    }
    // A watch from after the compaction replays the history since then;
    // curl's time limit ends the stream.
    let watch = curl(
        "POST",
        &format!("{endpoint}/v3/watch"),
        Some(&format!(
            r#"{{"create_request":{{"key":"{}","range_end":"{}","start_revision":"4","prev_kv":true}}}}"#,
            base64("f"),
            base64("g")
        )),
        2,
    );
    lines.push(format!(
        "watch\n  -> {}\n  bytes {:?}",
        normalize_body(&watch.body),
        body_shape(&watch.body)
    ));
    lines
}

#[test]
fn the_json_gateway_answers_as_etcd_does() {
    let etcd = start(Flavor::Etcd);
    let expected = transcript(&etcd);
    drop(etcd);
    let shoal = start(Flavor::Shoal);
    let actual = transcript(&shoal);
    let mismatches: Vec<String> = expected
        .iter()
        .zip(&actual)
        .filter(|(etcd, shoal)| etcd != shoal)
        .map(|(etcd, shoal)| format!("etcd:  {etcd}\nshoal: {shoal}"))
        .collect();
    assert!(
        mismatches.is_empty() && expected.len() == actual.len(),
        "shoal's gateway differs from etcd's:\n{}",
        mismatches.join("\n\n")
    );
}

#[test]
fn a_watch_streams_events_as_they_happen() {
    let shoal = start(Flavor::Shoal);
    let endpoint = shoal.endpoint(0);
    let watcher = {
        let endpoint = endpoint.clone();
        std::thread::spawn(move || {
            curl(
                "POST",
                &format!("{endpoint}/v3/watch"),
                Some(r#"{"create_request":{"key":"Zm9v"}}"#),
                3,
            )
        })
    };
    std::thread::sleep(Duration::from_millis(1000));
    let put = curl(
        "POST",
        &format!("{endpoint}/v3/kv/put"),
        Some(r#"{"key":"Zm9v","value":"YmFy"}"#),
        5,
    );
    assert_eq!(put.status, 200, "{}", put.body);
    let watch = watcher.join().expect("the watcher thread");
    let lines: Vec<Value> = watch
        .body
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "created, then the put: {}", watch.body);
    assert_eq!(lines[0]["result"]["created"], true);
    assert_eq!(
        lines[1]["result"]["events"][0]["kv"]["value"], "YmFy",
        "{}",
        watch.body
    );
}
