//! The dashboard's server side, driven with `curl` as a browser would reach
//! it: the page served to anyone, with its security headers; its data
//! (`/ui/api/store`) only with a token; the token `shoal up` makes and
//! prints the path of; and `remainingItemCount`, which lets the page count a
//! list without reading every page of it.

mod common;
#[path = "common/kube.rs"]
mod kube;

use std::process::Command;

use kube::Shoal;

/// `curl` to the API: the HTTP status, the headers and the body.
fn curl(
    shoal: &Shoal,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String, String) {
    let ca = shoal.dir.path().join("data/pki/ca.crt");
    let headers = shoal.dir.path().join("headers.txt");
    let mut command = Command::new("curl");
    command
        .args([
            "-sS",
            "--max-time",
            "20",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
            "-D",
        ])
        .arg(&headers)
        .arg("--cacert")
        .arg(&ca);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    if let Some(body) = body {
        command.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    command.arg(format!("https://127.0.0.1:{}{path}", shoal.api_port));
    let output = command.output().expect("run curl");
    assert!(output.status.success(), "curl failed: {output:?}");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let (body, code) = text.rsplit_once('\n').expect("a status line");
    let headers = std::fs::read_to_string(&headers).expect("the headers");
    (
        code.parse().expect("a status code"),
        headers.to_lowercase(),
        body.to_string(),
    )
}

#[test]
fn the_page_is_public_its_data_needs_the_token_shoal_up_made() {
    let shoal = Shoal::start();
    let token_path = shoal.dir.path().join("data/pki/dashboard-token");
    let log = shoal.log();
    let line = log
        .lines()
        .find(|line| line.contains("dashboard: https://"))
        .unwrap_or_else(|| panic!("no dashboard line in:\n{log}"));
    assert_eq!(
        line.trim(),
        format!(
            "dashboard: https://127.0.0.1:{}/ui/ (log in with the token in {})",
            shoal.api_port,
            token_path.display()
        )
    );
    let token = std::fs::read_to_string(&token_path).expect("the dashboard token");
    let token = token.trim();
    assert!(!log.contains(token), "the token leaked into the log");

    let (code, headers, body) = curl(&shoal, "GET", "/ui/", None, None);
    assert_eq!(code, 200, "{body}");
    assert!(headers.contains("content-type: text/html"), "{headers}");
    assert!(
        headers.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{headers}"
    );
    assert!(body.contains("<script src=\"app.js\""), "{body}");
    let (code, headers, _) = curl(&shoal, "GET", "/ui/app.js", None, None);
    assert_eq!(code, 200);
    assert!(
        headers.contains("content-type: text/javascript"),
        "{headers}"
    );
    let (code, headers, _) = curl(&shoal, "GET", "/ui", None, None);
    assert_eq!(code, 301);
    assert!(headers.contains("location: /ui/"), "{headers}");

    for wrong in [None, Some("not-the-token")] {
        let (code, _, body) = curl(&shoal, "GET", "/ui/api/store", wrong, None);
        assert_eq!(code, 401, "token {wrong:?}: {body}");
        assert!(!body.contains("members"), "{body}");
    }
    let (code, _, body) = curl(&shoal, "GET", "/ui/api/store", Some(token), None);
    assert_eq!(code, 200, "{body}");
    let store: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(store["members"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(store["members"][0]["isLeader"], true, "{body}");
    assert_eq!(store["members"][0]["name"], "default", "{body}");
    assert_eq!(store["hasLeader"], true, "{body}");
    assert!(store["revision"].as_i64().unwrap_or(0) > 1, "{body}");
    assert!(store["dbSizeBytes"].as_i64().unwrap_or(0) > 0, "{body}");
    assert!(store.get("error").is_none(), "{body}");

    // The dashboard token is an administrator: it may write.
    let (code, _, body) = curl(
        &shoal,
        "POST",
        "/api/v1/namespaces",
        Some(token),
        Some(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"counted"}}"#),
    );
    assert_eq!(code, 201, "{body}");
    for index in 0..5 {
        let object = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"c{index}","labels":{{"odd":"{}"}}}}}}"#,
            index % 2 == 1
        );
        let (code, _, body) = curl(
            &shoal,
            "POST",
            "/api/v1/namespaces/counted/configmaps",
            Some(token),
            Some(&object),
        );
        assert_eq!(code, 201, "{body}");
    }
    let list = |path: &str| -> serde_json::Value {
        let (code, _, body) = curl(&shoal, "GET", path, Some(token), None);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("a list")
    };
    let first = list("/api/v1/namespaces/counted/configmaps?limit=2");
    assert_eq!(first["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(first["metadata"]["remainingItemCount"], 3, "{first}");
    let next = first["metadata"]["continue"]
        .as_str()
        .expect("a continue token");
    let second = list(&format!(
        "/api/v1/namespaces/counted/configmaps?limit=2&continue={next}"
    ));
    assert_eq!(second["metadata"]["remainingItemCount"], 1, "{second}");
    let last = list(&format!(
        "/api/v1/namespaces/counted/configmaps?limit=2&continue={}",
        second["metadata"]["continue"]
            .as_str()
            .expect("a continue token")
    ));
    assert_eq!(last["items"].as_array().map(Vec::len), Some(1));
    assert!(
        last["metadata"].get("remainingItemCount").is_none(),
        "{last}"
    );
    // A selector's matches cannot be counted from the keys: no count.
    let selected = list("/api/v1/namespaces/counted/configmaps?limit=1&labelSelector=odd%3Dfalse");
    assert!(selected["metadata"]["continue"].is_string(), "{selected}");
    assert!(
        selected["metadata"].get("remainingItemCount").is_none(),
        "{selected}"
    );
}
