//! Bearer tokens at the Kubernetes API: `shoal up --token-auth-file`, driven
//! with `curl` (no client certificate) and with kubectl.

mod common;
#[path = "common/kube.rs"]
mod kube;

use std::process::Command;

use kube::Shoal;

/// `curl` to the API with `token`: the HTTP status and the body.
fn get(shoal: &Shoal, path: &str, token: Option<&str>) -> (u16, String) {
    let ca = shoal.dir.path().join("data/pki/ca.crt");
    let mut command = Command::new("curl");
    command.args([
        "-sS",
        "--max-time",
        "20",
        "-w",
        "\n%{http_code}",
        "--cacert",
    ]);
    command.arg(&ca);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    command.arg(format!("https://127.0.0.1:{}{path}", shoal.api_port));
    let output = command.output().expect("run curl");
    assert!(output.status.success(), "curl failed: {output:?}");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let (body, code) = text.rsplit_once('\n').expect("a status line");
    (code.parse().expect("a status code"), body.to_string())
}

#[test]
fn token_file_users_are_authenticated_and_others_are_not() {
    let tokens = tempfile::NamedTempFile::new().expect("a token file");
    std::fs::write(
        tokens.path(),
        "s3cr3t-admin,alice,1001,\"system:masters,ops\"\n\
         s3cr3t-plain,bob,1002\n",
    )
    .expect("write the token file");
    let flag = format!("--token-auth-file={}", tokens.path().display());
    let shoal = Shoal::start_with(&[
        "--disable-agent",
        "--disable-scheduler",
        "--disable-controllers",
        &flag,
    ]);

    let (code, body) = get(&shoal, "/api/v1/namespaces", Some("s3cr3t-admin"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"kind\":\"NamespaceList\""), "{body}");

    for token in [None, Some("wrong"), Some("")] {
        let (code, body) = get(&shoal, "/api/v1/namespaces", token);
        assert_eq!(code, 401, "token {token:?}: {body}");
        let status: serde_json::Value = serde_json::from_str(&body).expect("a Status");
        assert_eq!(status["kind"], "Status", "{body}");
        assert_eq!(status["reason"], "Unauthorized", "{body}");
        assert_eq!(status["code"], 401, "{body}");
    }
    assert!(
        !shoal.log().contains("s3cr3t"),
        "a token leaked into the log:\n{}",
        shoal.log()
    );
}

#[test]
fn a_malformed_token_file_stops_shoal_up_with_the_line() {
    let tokens = tempfile::NamedTempFile::new().expect("a token file");
    std::fs::write(tokens.path(), "t1,alice,1001\nt2,bob\n").expect("write the token file");
    let data = tempfile::tempdir().expect("a data directory");
    let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("up")
        .arg(format!("--data-dir={}", data.path().display()))
        .arg(format!("--token-auth-file={}", tokens.path().display()))
        .output()
        .expect("run shoal up");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "token file {}, line 2: expected at least 3 columns",
            tokens.path().display()
        )),
        "{stderr}"
    );
}
