//! Transcript tests of the Kubernetes API with the real kubectl: each file
//! under `tests/kube/` is a workflow of kubectl commands with what a real
//! cluster prints for them, run against a fresh `shoal up` by two kubectl
//! releases (the newest and 1.32, the first to send protobuf bodies).
//!
//! Transcript format: `$ kubectl …` runs a command (by bash, in `tests/kube/`,
//! so manifests are `manifests/…`); the lines after it are its stdout, then its
//! stderr with each line prefixed `! `, then `[exit N]` when it fails. A line
//! tagged `@1.32 ` or `@newest ` belongs to that release only. `$ kubectl … &`
//! starts a command in the background (`get -w`); `$ stop-background` stops it
//! once it has printed as many lines as the block after it expects, and
//! compares them. Lines starting with `#` are comments.
//!
//! The expected outputs are a real cluster's (kube-apiserver 1.33 without a
//! controller manager, since shoal's controllers are a later issue): upstream
//! printers' columns, kubectl's and kube-apiserver's messages. Only uids,
//! times, ages, resourceVersions and ClusterIPs are normalised (`normalise`).

mod common;
#[path = "common/kube.rs"]
mod kube;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::{Background, Kubectl, KubectlRelease, Shoal};

/// How long a background command may take to print what is expected of it.
const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(15);

fn transcripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kube")
}

/// The workflows, in the order they run against one shoal per release.
const WORKFLOWS: &[&str] = &[
    "namespaces",
    "deployment",
    "watch",
    "nodes",
    "apply",
    "delete",
    "describe",
    "explain",
    "discovery",
    "crd",
    "errors",
];

#[test]
fn transcripts_with_the_newest_kubectl() {
    run_workflows(KubectlRelease::Newest);
}

#[test]
fn transcripts_with_kubectl_1_32() {
    run_workflows(KubectlRelease::V1_32);
}

fn run_workflows(release: KubectlRelease) {
    // Fail, never skip, when a client is missing.
    release.binary();
    let shoal = Shoal::start();
    let kubectl = Kubectl::new(release, &shoal);
    let mut failures = String::new();
    let actual_dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kube-transcripts{}", release.tag()));
    std::fs::create_dir_all(&actual_dir).expect("create the directory of actual transcripts");
    for workflow in WORKFLOWS {
        let path = transcripts_dir().join(format!("{workflow}.txt"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
        let (actual, workflow_failures) = run_transcript(&kubectl, &text);
        std::fs::write(actual_dir.join(format!("{workflow}.txt")), actual)
            .expect("write the actual transcript");
        for failure in workflow_failures {
            let _ = writeln!(failures, "--- {workflow} ({:?}): {failure}", release);
        }
    }
    drop(shoal);
    assert!(
        failures.is_empty(),
        "kubectl ({release:?}) printed something other than a real cluster prints \
         (actual transcripts in {}):\n{failures}",
        actual_dir.display()
    );
}

/// One command of a transcript and what it should print.
struct Step {
    command: String,
    expected: Vec<String>,
}

/// The steps of a transcript, for one release.
fn parse_transcript(text: &str, release: KubectlRelease) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for line in text.lines() {
        let line = if let Some(rest) = line.strip_prefix('@') {
            let (tag, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            if format!("@{tag}") != release.tag() {
                continue;
            }
            rest
        } else {
            line
        };
        if line.starts_with('#') {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: command.to_string(),
                expected: Vec::new(),
            });
        } else if let Some(step) = steps.last_mut() {
            step.expected.push(line.to_string());
        } else if !line.trim().is_empty() {
            panic!("transcript text before the first command: {line:?}");
        }
    }
    for step in &mut steps {
        while step.expected.last().is_some_and(|line| line.is_empty()) {
            step.expected.pop();
        }
    }
    steps
}

/// Runs a transcript; returns what was printed (as a transcript) and a
/// description of every step whose output differed.
fn run_transcript(kubectl: &Kubectl, text: &str) -> (String, Vec<String>) {
    let cwd = transcripts_dir();
    let mut actual_transcript = String::new();
    let mut failures = Vec::new();
    let mut background: Option<(String, Background)> = None;
    for step in parse_transcript(text, kubectl.release) {
        let _ = writeln!(actual_transcript, "$ {}", step.command);
        let actual = if let Some(command) = step.command.strip_suffix(" &") {
            background = Some((
                command.to_string(),
                Background::spawn(kubectl.command(command, &cwd)),
            ));
            // Give it time to list and start watching before what follows.
            std::thread::sleep(Duration::from_millis(1500));
            Vec::new()
        } else if step.command == "stop-background" {
            let (command, running) = background
                .take()
                .expect("stop-background without a background command");
            running.wait_for_lines(step.expected.len(), BACKGROUND_TIMEOUT);
            // Anything printed past what is expected shows up as a difference.
            std::thread::sleep(Duration::from_millis(300));
            let (stdout, early_exit) = running.stop();
            let mut lines = normalise(&command, &stdout);
            if let Some(early_exit) = early_exit {
                lines.push(format!("! (background command {early_exit})"));
            }
            lines
        } else {
            let output = kubectl.run(&step.command, &cwd);
            let mut lines = normalise(&step.command, &String::from_utf8_lossy(&output.stdout));
            lines.extend(
                normalise(&step.command, &String::from_utf8_lossy(&output.stderr))
                    .into_iter()
                    .map(|line| format!("! {line}")),
            );
            if !output.status.success() {
                lines.push(format!("[exit {}]", output.status.code().unwrap_or(-1)));
            }
            lines
        };
        for line in &actual {
            let _ = writeln!(actual_transcript, "{line}");
        }
        if actual != step.expected {
            failures.push(format!(
                "$ {}\n{}",
                step.command,
                line_diff(&step.expected, &actual)
            ));
        }
    }
    (actual_transcript, failures)
}

/// A minimal diff: the expected and the actual lines, marked `-` and `+`
/// from the first line that differs.
fn line_diff(expected: &[String], actual: &[String]) -> String {
    let common = expected
        .iter()
        .zip(actual)
        .take_while(|(expected, actual)| expected == actual)
        .count();
    let mut text = String::new();
    for line in &expected[..common] {
        let _ = writeln!(text, "  {line}");
    }
    for line in &expected[common..] {
        let _ = writeln!(text, "- {line}");
    }
    for line in &actual[common..] {
        let _ = writeln!(text, "+ {line}");
    }
    text
}

/// Normalises what varies between runs and nothing else: uids, times,
/// resourceVersions, and in tables the AGE and CLUSTER-IP cells (tables are
/// laid out again, since those cells' widths vary).
fn normalise(command: &str, output: &str) -> Vec<String> {
    let is_diff = command.starts_with("kubectl diff ");
    let lines: Vec<String> = output
        .lines()
        .map(|line| {
            let line = if is_diff {
                normalise_diff_paths(line)
            } else {
                line.to_string()
            };
            normalise_resource_version(&normalise_times(&normalise_uids(&line)))
        })
        .collect();
    let mut normalised = Vec::new();
    let mut block = Vec::new();
    for line in lines {
        if line.is_empty() {
            normalised.extend(normalise_table(std::mem::take(&mut block)));
            normalised.push(line);
        } else {
            block.push(line);
        }
    }
    normalised.extend(normalise_table(block));
    while normalised.last().is_some_and(|line| line.is_empty()) {
        normalised.pop();
    }
    normalised
}

/// `kubectl diff` compares temporary directories (`/tmp/LIVE-123…`,
/// `/tmp/MERGED-456…`), and diff's file headers carry their times.
fn normalise_diff_paths(line: &str) -> String {
    let mut result = String::new();
    for (index, word) in line.split(' ').enumerate() {
        if index > 0 {
            result.push(' ');
        }
        let word = if let Some(start) = word.find("/LIVE-").or_else(|| word.find("/MERGED-")) {
            let kind_end = start + word[start..].find('-').expect("a dash");
            let rest = &word[kind_end + 1..];
            let name_start = rest.find('/').unwrap_or(rest.len());
            format!("<tmp>{}-<n>{}", &word[start..kind_end], &rest[name_start..])
        } else {
            word.to_string()
        };
        result.push_str(&word);
    }
    if (result.starts_with("--- ") || result.starts_with("+++ ")) && result.contains('\t') {
        let end = result.find('\t').expect("a tab");
        result.truncate(end);
        result.push_str("\t<time>");
    }
    result
}

fn normalise_uids(line: &str) -> String {
    let bytes = line.as_bytes();
    let mut result = String::new();
    let mut index = 0;
    while index < bytes.len() {
        if index + 36 <= bytes.len() && is_uid(&bytes[index..index + 36]) {
            result.push_str("<uid>");
            index += 36;
        } else {
            let ch = line[index..].chars().next().expect("a character");
            result.push(ch);
            index += ch.len_utf8();
        }
    }
    result
}

fn is_uid(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(index, byte)| match index {
        8 | 13 | 18 | 23 => *byte == b'-',
        _ => byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase(),
    })
}

/// Replaces RFC 3339 times (`2026-12-07T09:14:35Z`, with or without a
/// fraction) and describe's times (`Mon, 07 Dec 2026 09:14:35 +0000`).
fn normalise_times(line: &str) -> String {
    let mut result = String::new();
    let mut rest = line;
    'scan: while !rest.is_empty() {
        for (matcher, replacement) in [
            (rfc3339_length as fn(&str) -> Option<usize>, "<time>"),
            (describe_time_length, "<time>"),
        ] {
            if let Some(length) = matcher(rest) {
                result.push_str(replacement);
                rest = &rest[length..];
                continue 'scan;
            }
        }
        let ch = rest.chars().next().expect("a character");
        result.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    result
}

/// Matches `pattern` at the start of `text`, where `9` is any digit, `A`
/// any ASCII letter and every other character itself.
fn matches_pattern(text: &str, pattern: &str) -> bool {
    text.len() >= pattern.len()
        && text
            .bytes()
            .zip(pattern.bytes())
            .all(|(byte, expected)| match expected {
                b'9' => byte.is_ascii_digit(),
                b'A' => byte.is_ascii_alphabetic(),
                _ => byte == expected,
            })
}

fn rfc3339_length(text: &str) -> Option<usize> {
    if !matches_pattern(text, "9999-99-99T99:99:99") {
        return None;
    }
    let mut length = 19;
    let bytes = text.as_bytes();
    if bytes.get(length) == Some(&b'.') {
        length += 1;
        while bytes.get(length).is_some_and(u8::is_ascii_digit) {
            length += 1;
        }
    }
    if bytes.get(length) == Some(&b'Z') {
        Some(length + 1)
    } else if matches_pattern(&text[length..], "+99:99")
        || matches_pattern(&text[length..], "-99:99")
    {
        Some(length + 6)
    } else {
        None
    }
}

fn describe_time_length(text: &str) -> Option<usize> {
    const PATTERN: &str = "AAA, 99 AAA 9999 99:99:99 +9999";
    matches_pattern(text, PATTERN).then_some(PATTERN.len())
}

/// `resourceVersion: "7"` (YAML) and `"resourceVersion": "7"` (JSON).
fn normalise_resource_version(line: &str) -> String {
    for key in ["resourceVersion: \"", "\"resourceVersion\": \""] {
        if let Some(start) = line.find(key) {
            let value_start = start + key.len();
            if let Some(value_length) = line[value_start..].find('"') {
                let value = &line[value_start..value_start + value_length];
                if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
                    return format!(
                        "{}<rv>{}",
                        &line[..value_start],
                        &line[value_start + value_length..]
                    );
                }
            }
        }
    }
    line.to_string()
}

fn is_table_header(line: &str) -> bool {
    (line.starts_with("NAME ") || line.starts_with("NAMESPACE ") || line == "NAME")
        && line.bytes().all(|byte| {
            byte.is_ascii_uppercase() || byte.is_ascii_digit() || b" -_()/.".contains(&byte)
        })
}

/// A table (a block whose first line is kubectl's header) laid out again
/// with its AGE durations and CLUSTER-IP addresses replaced.
fn normalise_table(block: Vec<String>) -> Vec<String> {
    let Some(header) = block.first() else {
        return block;
    };
    if !is_table_header(header) {
        return block;
    }
    let starts = column_starts(header);
    let rows: Vec<Vec<String>> = block.iter().map(|line| split_row(line, &starts)).collect();
    let header_cells = rows[0].clone();
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .enumerate()
        .map(|(row_idx, cells)| {
            cells
                .into_iter()
                .enumerate()
                .map(|(column_idx, cell)| {
                    let column = header_cells.get(column_idx).map(String::as_str);
                    if row_idx == 0 {
                        cell
                    } else if column == Some("AGE") && is_duration(&cell) {
                        "<age>".to_string()
                    } else if column == Some("CLUSTER-IP") && cell.contains('.') {
                        "<cluster-ip>".to_string()
                    } else {
                        cell
                    }
                })
                .collect()
        })
        .collect();
    let n_columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n_columns)
        .map(|column_idx| {
            rows.iter()
                .filter_map(|row| row.get(column_idx))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (column_idx, cell) in row.iter().enumerate() {
                if column_idx + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}   ", width = widths[column_idx]);
                }
            }
            line.trim_end().to_string()
        })
        .collect()
}

/// Where the header's columns start (names are separated by 3+ spaces and
/// may hold single spaces, as `NOMINATED NODE`).
fn column_starts(header: &str) -> Vec<usize> {
    let bytes = header.as_bytes();
    let mut starts = vec![0];
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b' ' {
            let run_start = index;
            while index < bytes.len() && bytes[index] == b' ' {
                index += 1;
            }
            if index - run_start >= 2 && index < bytes.len() {
                starts.push(index);
            }
        } else {
            index += 1;
        }
    }
    starts
}

/// The cells of a row: by the header's column positions when the row fits
/// them (an aligned table), else split on runs of 3+ spaces (watch rows,
/// which kubectl aligns one by one).
fn split_row(line: &str, starts: &[usize]) -> Vec<String> {
    let bytes = line.as_bytes();
    // Aligned when every cell ends before the next column starts; a cell
    // may be empty (spaces at its column).
    let aligned = line.is_ascii()
        && starts
            .iter()
            .skip(1)
            .all(|&start| start >= bytes.len() || bytes[start - 1] == b' ');
    if aligned {
        starts
            .iter()
            .enumerate()
            .map(|(column_idx, &start)| {
                let end = starts.get(column_idx + 1).copied().unwrap_or(bytes.len());
                line.get(start.min(line.len())..end.min(line.len()))
                    .unwrap_or("")
                    .trim_end()
                    .to_string()
            })
            .collect()
    } else {
        line.split("   ")
            .map(str::trim)
            .filter(|cell| !cell.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// kubectl's HumanDuration texts: `0s`, `59s`, `2m30s`, `5h`, `3d`, `2y100d`.
fn is_duration(cell: &str) -> bool {
    !cell.is_empty()
        && cell.chars().next().is_some_and(|ch| ch.is_ascii_digit())
        && cell
            .chars()
            .all(|ch| ch.is_ascii_digit() || "smhdy".contains(ch))
        && cell.chars().last().is_some_and(|ch| "smhdy".contains(ch))
}

/// `shoal up` again on its data directory: the objects, the certificates
/// and so the admin kubeconfig, and the `kubernetes` Service survive, and a
/// second start does not trip over what the first one made.
#[test]
fn a_restart_keeps_the_objects_and_the_credentials() {
    let mut shoal = Shoal::start();
    let kubectl = Kubectl::new(KubectlRelease::Newest, &shoal);
    let cwd = transcripts_dir();
    kubectl.ok("kubectl create configmap kept --from-literal=a=b", &cwd);
    let before = kubectl.ok(
        "kubectl get service kubernetes -o jsonpath={.spec.clusterIP}",
        &cwd,
    );
    assert_eq!(before, "10.43.0.1");
    shoal.restart();
    assert_eq!(
        kubectl.ok("kubectl get configmap kept -o jsonpath={.data.a}", &cwd),
        "b"
    );
    assert_eq!(
        kubectl.ok(
            "kubectl get service kubernetes -o jsonpath={.spec.clusterIP}",
            &cwd
        ),
        before
    );
    assert_eq!(
        kubectl.ok("kubectl get namespaces -o name", &cwd),
        "namespace/default\nnamespace/kube-node-lease\nnamespace/kube-public\nnamespace/kube-system\n"
    );
}

#[test]
fn the_normaliser_replaces_only_what_varies() {
    let table = "NAME   READY   UP-TO-DATE   AVAILABLE   AGE\ndex    0/3     0            0           12s\n";
    assert_eq!(
        normalise("kubectl get deployments", table),
        vec![
            "NAME   READY   UP-TO-DATE   AVAILABLE   AGE",
            "dex    0/3     0            0           <age>",
        ]
    );
    assert_eq!(
        normalise(
            "kubectl get deployment dex -o yaml",
            "  creationTimestamp: \"2026-12-07T09:14:35Z\"\n  resourceVersion: \"7\"\n  uid: 350a1c82-136d-45c9-8356-c627b006a5f3\n"
        ),
        vec![
            "  creationTimestamp: \"<time>\"",
            "  resourceVersion: \"<rv>\"",
            "  uid: <uid>",
        ]
    );
    // An AGE that is not a duration is a server bug, and stays.
    assert_eq!(
        normalise("kubectl get ns", "NAME   AGE\na      <invalid>\n"),
        vec!["NAME   AGE", "a      <invalid>"]
    );
}
