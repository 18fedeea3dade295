//! The web dashboard in a real browser: a one-machine cluster (a server
//! with its own agent, real busybox pods), headless Chromium driven by
//! Playwright's core library (`tests/ui/dashboard.cjs`): log in with the
//! token `shoal up` made, see the store and the machine, a deployment
//! scaled with kubectl and a deleted pod replaced, followed live; filters,
//! an event whose text is markup, logout. Screenshots are kept under
//! `target/ui-screenshots/`.

mod common;
#[path = "common/machines.rs"]
mod machines;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use machines::Machines;

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A tool the test needs; panics, saying how to get it, when it is missing.
fn required(path: PathBuf, remedy: &str) -> PathBuf {
    assert!(path.exists(), "{} is missing: {remedy}", path.display());
    path
}

#[test]
fn the_dashboard_logs_in_and_follows_the_cluster_live() {
    let chromium = required(
        PathBuf::from("/usr/bin/chromium"),
        "run scripts/install-deps (Debian's chromium)",
    );
    let node = required(PathBuf::from("/usr/bin/node"), "install Debian's nodejs");
    let playwright = required(
        repository_root().join("target/test-tools/node/node_modules/playwright-core"),
        "run scripts/install-deps (npm's playwright-core)",
    );
    let screenshots = repository_root().join("target/ui-screenshots");
    std::fs::create_dir_all(&screenshots).expect("the screenshots directory");

    let cluster = Machines::start(0);
    let server = &cluster.machines[0];
    let token_path = server.data_dir.join("pki/dashboard-token");
    let log = std::fs::read_to_string(&server.log).expect("the server's log");
    let address = format!("https://{}:6443/ui/", server.ip);
    assert!(
        log.contains(&format!(
            "dashboard: {address} (log in with the token in {})",
            token_path.display()
        )),
        "shoal up did not print the dashboard's address:\n{log}"
    );
    let token = std::fs::read_to_string(&token_path).expect("the dashboard token");

    let created = cluster.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1",
        "--replicas=2",
        "--",
        "sleep",
        "3600",
    ]);
    assert_eq!(created.trim(), "deployment.apps/web created");
    let hostile_event = cluster.dir.path().join("hostile-event.yaml");
    std::fs::write(
        &hostile_event,
        "apiVersion: v1\nkind: Event\nmetadata: {name: hostile, namespace: default}\n\
         involvedObject: {kind: Deployment, name: web, namespace: default}\n\
         reason: Markup\ntype: Warning\n\
         message: '<img src=x onerror=\"window.pwned=1\">'\n",
    )
    .expect("write the event");

    let mut command = Command::new(node);
    command
        .arg(repository_root().join("crates/shoal/tests/ui/dashboard.cjs"))
        .env("DASHBOARD_URL", &address)
        .env("DASHBOARD_TOKEN", token.trim())
        .env("KUBECTL", "/usr/lib/google-cloud-sdk/bin/kubectl.1.32")
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("HOME", cluster.dir.path())
        .env("CHROMIUM", &chromium)
        .env("PLAYWRIGHT_CORE", &playwright)
        .env("SCREENSHOTS", &screenshots)
        .env("HOSTILE_EVENT", &hostile_event);
    let output = common::run_with_watchdog(command, None, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    println!("screenshots: {}", screenshots.display());
    assert!(
        output.status.success() && stdout.contains("dashboard: all steps passed"),
        "the browser test failed (screenshots in {}):\n{}\n{}",
        screenshots.display(),
        common::describe_output(&output),
        cluster.logs()
    );
}
