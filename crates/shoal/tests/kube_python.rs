//! The official Python `kubernetes` client (PyPI, installed into
//! `target/test-tools/venv` by `scripts/install-deps`) against `shoal up`:
//! `tests/python/kube_client.py` creates, lists, watches, patches (every
//! patch type) and deletes through the typed and the dynamic client, so
//! every response passes the client's strict models.

mod common;
#[path = "common/kube.rs"]
mod kube;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kube::Shoal;

/// The script's bound: it makes a few dozen requests and one 5 s watch.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn the_python_client_passes_its_models() {
    let python = kube::venv().join("bin/python");
    assert!(
        python.is_file(),
        "the Python venv is missing at {}: run scripts/install-deps",
        python.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/kube_client.py");
    let shoal = Shoal::start();
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .arg(&shoal.kubeconfig)
        .env("HOME", shoal.new_home("python"))
        .env_remove("KUBECONFIG")
        .env("PYTHONUNBUFFERED", "1");
    let output = common::run_with_watchdog(command, None, SCRIPT_TIMEOUT);
    assert!(
        output.status.success(),
        "{} failed against shoal:\n{}\nshoal's log:\n{}",
        script.display(),
        common::describe_output(&output),
        shoal.log()
    );
}
