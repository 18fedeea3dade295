//! etcd's v2 keys API, driven with `curl` and with `ETCDCTL_API=2 etcdctl`
//! against etcd 3.4 (`--enable-v2`) and against shoal (which serves v2 by
//! default). Statuses, bodies and outputs must match once indices are made
//! relative to the first v2 write and expiration times are hidden; bodies
//! match byte for byte too, apart from the values (see `body_shape`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Cluster, ClusterOptions, ETCDCTL, Flavor, body_shape, run_with_watchdog};
use serde_json::Value;

const WATCHDOG: Duration = Duration::from_secs(30);

fn start(flavor: Flavor) -> Cluster {
    let extra_args = match flavor {
        Flavor::Etcd => vec!["--enable-v2".to_string()],
        // Serves v2 by default (and accepts --enable-v2 once the binary has it).
        Flavor::Shoal => Vec::new(),
    };
    let options = ClusterOptions {
        extra_args,
        ..ClusterOptions::default()
    };
    Cluster::start(flavor, 1, options)
}

struct Reply {
    status: u16,
    index: Option<i64>,
    body: String,
}

/// `curl -X method url -d form...`, with the X-Etcd-Index header.
fn curl(method: &str, url: &str, form: &[&str], max_seconds: u32) -> Reply {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "-D", "-", "-X", method, "-w", "\n%{http_code}"])
        .args(["-m", &max_seconds.to_string()])
        .arg(url);
    for field in form {
        command.args(["--data-urlencode", field]);
    }
    let output = run_with_watchdog(command, None, WATCHDOG);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, rest) = stdout.split_once("\r\n\r\n").unwrap_or(("", &stdout));
    let index = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("x-etcd-index")
            .then(|| value.trim().parse().ok())
            .flatten()
    });
    let (body, status) = rest.rsplit_once('\n').unwrap_or(("", rest));
    Reply {
        status: status.trim().parse().unwrap_or(0),
        index,
        body: body.to_string(),
    }
}

/// Indices relative to `base` (the index before the first v2 write), and
/// expiration times hidden.
fn normalize(value: &mut Value, base: i64) {
    match value {
        Value::Object(object) => {
            for (name, field) in object.iter_mut() {
                match name.as_str() {
                    "modifiedIndex" | "createdIndex" | "index" => {
                        if let Some(index) = field.as_i64().filter(|index| *index > 0) {
                            *field = Value::from(index - base);
                        }
                    }
                    "expiration" => *field = Value::String("<time>".into()),
                    // `/v2/members`: the ids and URLs a cluster chose.
                    "id" | "peerURLs" | "clientURLs" => *field = Value::String(format!("<{name}>")),
                    // "[1 != 4]": a compared index against the node's.
                    "cause" => {
                        if let Some(cause) = field.as_str()
                            && let Some((given, current)) = cause
                                .strip_prefix('[')
                                .and_then(|cause| cause.strip_suffix(']'))
                                .and_then(|cause| cause.split_once(" != "))
                            && let (Ok(given), Ok(current)) =
                                (given.parse::<i64>(), current.parse::<i64>())
                        {
                            *field = Value::String(format!("[{given} != {}]", current - base));
                        }
                    }
                    "key" => {
                        // In-order keys are named by their index.
                        if let Some(key) = field.as_str()
                            && let Some((dir, name)) = key.rsplit_once('/')
                            && name.len() == 20
                            && let Ok(index) = name.parse::<i64>()
                        {
                            *field = Value::String(format!("{dir}/<{}>", index - base));
                        }
                    }
                    _ => normalize(field, base),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| normalize(item, base)),
        _ => {}
    }
}

/// The v2 session of the README and of etcd's v2 documentation: (method,
/// path and query, form fields).
fn steps() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    vec![
        ("PUT", "/v2/keys/message", vec!["value=Hello world"]),
        ("GET", "/v2/keys/message", vec![]),
        ("PUT", "/v2/keys/message?prevExist=false", vec!["value=x"]),
        ("PUT", "/v2/keys/message?prevValue=nope", vec!["value=x"]),
        ("PUT", "/v2/keys/message?prevIndex=1", vec!["value=x"]),
        (
            "PUT",
            "/v2/keys/message?prevValue=Hello%20world",
            vec!["value=Hello etcd"],
        ),
        (
            "PUT",
            "/v2/keys/message?prevExist=true",
            vec!["value=again"],
        ),
        ("PUT", "/v2/keys/nope?prevExist=true", vec!["value=3"]),
        ("DELETE", "/v2/keys/message?prevValue=x", vec![]),
        ("DELETE", "/v2/keys/message?prevValue=again", vec![]),
        ("GET", "/v2/keys/missing", vec![]),
        ("PUT", "/v2/keys/new?prevExist=false", vec!["value=created"]),
        ("PUT", "/v2/keys/dir/a/b", vec!["value=1"]),
        ("GET", "/v2/keys/dir?recursive=true", vec![]),
        ("GET", "/v2/keys/dir", vec![]),
        ("DELETE", "/v2/keys/dir", vec![]),
        ("DELETE", "/v2/keys/dir?dir=true", vec![]),
        ("PUT", "/v2/keys/dir/a/b/c", vec!["value=1"]),
        ("PUT", "/v2/keys/dir/a", vec!["value=1"]),
        ("PUT", "/v2/keys/", vec!["value=1"]),
        ("PUT", "/v2/keys/empty", vec!["dir=true"]),
        ("GET", "/v2/keys/empty", vec![]),
        ("PUT", "/v2/keys/empty", vec!["dir=true"]),
        ("DELETE", "/v2/keys/empty?dir=true", vec![]),
        ("PUT", "/v2/keys/ttl", vec!["value=1", "ttl=100"]),
        ("PUT", "/v2/keys/ttl", vec!["value=1", "ttl=abc"]),
        ("PUT", "/v2/keys/ttl", vec!["refresh=true", "value=2"]),
        ("PUT", "/v2/keys/ttl", vec!["refresh=true"]),
        ("GET", "/v2/keys/ttl?recursive=maybe", vec![]),
        ("PUT", "/v2/keys/ttl?prevIndex=x", vec!["value=1"]),
        ("PUT", "/v2/keys/ttl?prevValue=", vec!["value=1"]),
        ("POST", "/v2/keys/queue", vec!["value=Job1"]),
        ("POST", "/v2/keys/queue", vec!["value=Job2"]),
        ("GET", "/v2/keys/queue?recursive=true&sorted=true", vec![]),
        ("DELETE", "/v2/keys/queue?prevValue=x", vec![]),
        ("DELETE", "/v2/keys/queue?recursive=true", vec![]),
        ("PUT", "/v2/keys/_hidden", vec!["value=h"]),
        ("GET", "/v2/keys/?sorted=true", vec![]),
        ("GET", "/v2/keys/dir/a/b?wait=true&waitIndex=1", vec![]),
        (
            "PUT",
            "/v2/keys/html",
            vec!["value=<a href=\"x\">&amp;</a>\u{2028}"],
        ),
        ("PUT", "/v2/keys/html?prevValue=%3Cb%3E", vec!["value=1"]),
        ("GET", "/v2/members", vec![]),
        ("GET", "/v2/machines", vec![]),
        ("PATCH", "/v2/keys/new", vec![]),
        ("GET", "/v2/nothing", vec![]),
    ]
}

fn transcript(cluster: &Cluster) -> Vec<String> {
    let endpoint = cluster.endpoint(0);
    let base = curl("GET", &format!("{endpoint}/v2/keys/"), &[], 5)
        .index
        .expect("an X-Etcd-Index header");
    let mut lines = Vec::new();
    for (method, path, form) in steps() {
        let reply = curl(method, &format!("{endpoint}{path}"), &form, 5);
        let body = match serde_json::from_str::<Value>(&reply.body) {
            Ok(mut value) => {
                normalize(&mut value, base);
                value.to_string()
            }
            // Plain text (`/v2/machines`, errors): its ports hidden.
            Err(_) => body_shape(reply.body.trim()),
        };
        let index = reply.index.map(|index| (index - base).max(0));
        lines.push(format!(
            "{method} {path} {form:?}\n  -> {} index {index:?} {body}\n  bytes {:?}",
            reply.status,
            body_shape(&reply.body)
        ));
    }
    // A long poll answered by a later write.
    let waiter = {
        let url = format!("{endpoint}/v2/keys/polled?wait=true");
        std::thread::spawn(move || curl("GET", &url, &[], 10))
    };
    std::thread::sleep(Duration::from_millis(1000));
    curl(
        "PUT",
        &format!("{endpoint}/v2/keys/polled"),
        &["value=now"],
        5,
    );
    let polled = waiter.join().expect("the waiting thread");
    let mut value: Value = serde_json::from_str(&polled.body).unwrap_or(Value::Null);
    normalize(&mut value, base);
    lines.push(format!(
        "wait -> {} {value}\n  bytes {:?}",
        polled.status,
        body_shape(&polled.body)
    ));
    lines
}

/// Asserts two transcripts are equal, showing every step that differs. The
/// sessions avoid the documented difference (a plain `set` over an existing
/// key: etcd 2 gives the node a new createdIndex, shoal keeps the v3 create
/// revision).
fn compare(expected: &[String], actual: &[String]) {
    let mismatches: Vec<String> = expected
        .iter()
        .zip(actual)
        .filter(|(etcd, shoal)| etcd != shoal)
        .map(|(etcd, shoal)| format!("etcd:  {etcd}\nshoal: {shoal}"))
        .collect();
    assert!(
        mismatches.is_empty() && expected.len() == actual.len(),
        "shoal's v2 API differs from etcd's:\n{}",
        mismatches.join("\n\n")
    );
}

#[test]
fn the_v2_keys_api_answers_as_etcd_does() {
    let etcd = start(Flavor::Etcd);
    let expected = transcript(&etcd);
    drop(etcd);
    let shoal = start(Flavor::Shoal);
    let actual = transcript(&shoal);
    compare(&expected, &actual);
}

/// `ETCDCTL_API=2 etcdctl` with its output, indices in error texts made
/// relative to `base`.
fn etcdctl_v2(endpoint: &str, args: &[&str], base: i64) -> String {
    let mut command = Command::new(ETCDCTL);
    command
        .env("ETCDCTL_API", "2")
        .env_remove("ETCDCTL_ENDPOINTS")
        .arg(format!("--endpoints={endpoint}"))
        .args(args);
    let output = run_with_watchdog(command, None, WATCHDOG);
    let text = format!(
        "{}{}exit {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        output.status.code().unwrap_or(-1)
    );
    // "Error:  105: Key already exists (/k) [12]": the trailing index.
    match text.rsplit_once('[') {
        Some((before, after)) if after.contains(']') => {
            let (index, rest) = after.split_once(']').expect("checked");
            match index.parse::<i64>() {
                Ok(index) => format!("{before}[{}]{rest}", index - base),
                Err(_) => text,
            }
        }
        _ => text,
    }
}

fn etcdctl_transcript(cluster: &Cluster) -> Vec<String> {
    let endpoint = cluster.endpoint(0);
    let base = curl("GET", &format!("{endpoint}/v2/keys/"), &[], 5)
        .index
        .expect("an X-Etcd-Index header");
    let sessions: &[&[&str]] = &[
        &["set", "/tool/a", "1"],
        &["get", "/tool/a"],
        &["mk", "/tool/a", "2"],
        &["mk", "/tool/b", "2"],
        &["mkdir", "/tool/d"],
        &["mkdir", "/tool/d"],
        // etcd 2 lists children in Go map order, so an unsorted listing
        // differs from run to run on etcd itself: ask for sorted output.
        &["ls", "--sort", "-r", "/tool"],
        &["ls", "--sort", "-p", "/tool"],
        &["update", "/tool/a", "3"],
        &["update", "/tool/nope", "3"],
        &["updatedir", "/tool/d", "--ttl", "100"],
        &["set", "--swap-with-value", "3", "/tool/a", "4"],
        &["set", "--swap-with-value", "3", "/tool/a", "5"],
        &["rm", "/tool/a"],
        &["rm", "/tool/nope"],
        &["rm", "/tool/d"],
        &["rmdir", "/tool/d"],
        &["get", "/tool"],
        &["watch", "--index", "1", "/tool/b"],
        &["rm", "--recursive", "/tool"],
    ];
    let mut lines: Vec<String> = sessions
        .iter()
        .map(|args| format!("{args:?}\n  -> {}", etcdctl_v2(&endpoint, args, base)))
        .collect();
    // exec-watch runs a command for each change until killed.
    let marker = cluster.dir().join("exec-watch.out");
    let mut command = Command::new(ETCDCTL);
    command
        .env("ETCDCTL_API", "2")
        .arg(format!("--endpoints={endpoint}"))
        .args(["exec-watch", "/exec", "--", "sh", "-c"])
        .arg(format!(
            "echo \"$ETCD_WATCH_KEY=$ETCD_WATCH_VALUE\" >> {}",
            marker.display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = command.spawn().expect("start etcdctl exec-watch");
    std::thread::sleep(Duration::from_millis(1000));
    etcdctl_v2(&endpoint, &["set", "/exec", "fired"], base);
    std::thread::sleep(Duration::from_millis(1000));
    let _ = child.kill();
    let _ = child.wait();
    lines.push(format!(
        "exec-watch -> {}",
        std::fs::read_to_string(&marker).unwrap_or_default().trim()
    ));
    lines
}

#[test]
fn etcdctl_v2_works_as_against_etcd() {
    let etcd = start(Flavor::Etcd);
    let expected = etcdctl_transcript(&etcd);
    drop(etcd);
    let shoal = start(Flavor::Shoal);
    let actual = etcdctl_transcript(&shoal);
    compare(&expected, &actual);
}

#[test]
fn v2_and_v3_share_one_store() {
    let shoal = start(Flavor::Shoal);
    let endpoint = shoal.endpoint(0);
    let put = curl(
        "PUT",
        &format!("{endpoint}/v2/keys/shared/k"),
        &["value=v2"],
        5,
    );
    assert_eq!(put.status, 201, "{}", put.body);
    let got = shoal.etcdctl_ok_at(0, &["get", "/shared/k", "--print-value-only"]);
    assert_eq!(got.trim(), "v2");
    shoal.etcdctl_ok_at(0, &["put", "/shared/k", "v3"]);
    let reply = curl("GET", &format!("{endpoint}/v2/keys/shared/k"), &[], 5);
    let value: Value = serde_json::from_str(&reply.body).expect("JSON");
    assert_eq!(value["node"]["value"], "v3");
    let revision = shoal.etcdctl_ok_at(0, &["get", "/shared/k", "-w", "json"]);
    let revision: Value = serde_json::from_str(&revision).expect("JSON");
    assert_eq!(
        Some(value["node"]["modifiedIndex"].as_i64().unwrap()),
        revision["kvs"][0]["mod_revision"].as_i64(),
        "one revision sequence"
    );
}
