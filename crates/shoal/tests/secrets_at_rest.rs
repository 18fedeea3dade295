//! Encryption at rest: `shoal up --encryption-provider-config`. kubectl
//! reads Secrets back as written, `etcdctl` sees only ciphertext, and keys
//! rotate as kube-apiserver's documented procedure rotates them.

mod common;
#[path = "common/kube.rs"]
mod kube;

use std::process::Command;

use kube::{Kubectl, KubectlRelease, Shoal};

const KEY_ONE: &str = "c2hvYWwtdGVzdC1rZXktb25lLTMyLWJ5dGVzLWxvbmc="; // 32 bytes
const KEY_TWO: &str = "c2hvYWwtdGVzdC1rZXktdHdvLTMyLWJ5dGVzLWxvbmc="; // 32 bytes
const SECRET_KEY: &str = "/registry/secrets/default/db";

fn config(providers: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{providers}"
    )
}

/// The raw value of a store key, as etcdctl prints it.
fn stored(shoal: &Shoal, key: &str) -> Vec<u8> {
    let output = Command::new(common::ETCDCTL)
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &shoal.client_url(),
            "get",
            key,
            "--print-value-only",
        ])
        .output()
        .expect("run etcdctl");
    assert!(output.status.success(), "etcdctl: {output:?}");
    output.stdout
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[test]
fn secrets_are_ciphertext_in_the_store_and_keys_rotate() {
    let dir = tempfile::tempdir().expect("a directory");
    let config_path = dir.path().join("encryption.yaml");
    std::fs::write(
        &config_path,
        config(&format!(
            "      - aescbc:\n          keys:\n            - name: one\n              secret: {KEY_ONE}\n      - identity: {{}}\n"
        )),
    )
    .expect("write the configuration");
    let flag = format!("--encryption-provider-config={}", config_path.display());
    let mut shoal = Shoal::start_with(&[
        "--disable-agent",
        "--disable-scheduler",
        "--disable-controllers",
        &flag,
    ]);
    let kubectl = Kubectl::new(KubectlRelease::Newest, &shoal);
    let cwd = dir.path();
    kubectl.ok(
        "kubectl create secret generic db --from-literal=password=hunter2-very-secret",
        cwd,
    );
    kubectl.ok(
        "kubectl create configmap plain --from-literal=colour=blue",
        cwd,
    );

    let raw = stored(&shoal, SECRET_KEY);
    assert!(raw.starts_with(b"k8s:enc:aescbc:v1:one:"), "{raw:?}");
    // Neither the value nor its base64 form nor the names inside it.
    for plain in [&b"hunter2"[..], b"aHVudGVyMi", b"password", b"\"kind\""] {
        assert!(!contains(&raw, plain), "{plain:?} is readable in the store");
    }
    // Other resources are not encrypted.
    assert!(contains(
        &stored(&shoal, "/registry/configmaps/default/plain"),
        b"blue"
    ));
    let read = |kubectl: &Kubectl| {
        kubectl.ok(
            "kubectl get secret db -o jsonpath={.data.password} | base64 -d",
            cwd,
        )
    };
    assert_eq!(read(&kubectl), "hunter2-very-secret");

    // Rotation, step 1: the new key is added second (every server can read
    // it before any writes with it).
    std::fs::write(
        &config_path,
        config(&format!(
            "      - aescbc:\n          keys:\n            - name: one\n              secret: {KEY_ONE}\n            - name: two\n              secret: {KEY_TWO}\n      - identity: {{}}\n"
        )),
    )
    .expect("rewrite the configuration");
    shoal.restart();
    assert_eq!(read(&kubectl), "hunter2-very-secret");
    // Step 2: the new key first; old values still read; rewriting every
    // Secret moves it to the new key.
    std::fs::write(
        &config_path,
        config(&format!(
            "      - aescbc:\n          keys:\n            - name: two\n              secret: {KEY_TWO}\n            - name: one\n              secret: {KEY_ONE}\n      - identity: {{}}\n"
        )),
    )
    .expect("rewrite the configuration");
    shoal.restart();
    assert_eq!(read(&kubectl), "hunter2-very-secret");
    assert!(stored(&shoal, SECRET_KEY).starts_with(b"k8s:enc:aescbc:v1:one:"));
    // The documented `get -o json | replace -f -`, through a file (each
    // command here is one kubectl).
    let all = kubectl.ok("kubectl get secrets --all-namespaces -o json", cwd);
    std::fs::write(cwd.join("secrets.json"), all).expect("write the secrets");
    kubectl.ok("kubectl replace -f secrets.json", cwd);
    assert!(stored(&shoal, SECRET_KEY).starts_with(b"k8s:enc:aescbc:v1:two:"));
    // Step 3: the old key is gone; everything still reads.
    std::fs::write(
        &config_path,
        config(&format!(
            "      - aescbc:\n          keys:\n            - name: two\n              secret: {KEY_TWO}\n"
        )),
    )
    .expect("rewrite the configuration");
    shoal.restart();
    assert_eq!(read(&kubectl), "hunter2-very-secret");
    assert!(
        !shoal.log().contains("hunter2"),
        "a secret leaked into the log:\n{}",
        shoal.log()
    );
}

#[test]
fn a_bad_configuration_stops_shoal_up_with_the_field() {
    let dir = tempfile::tempdir().expect("a directory");
    let config_path = dir.path().join("encryption.yaml");
    std::fs::write(
        &config_path,
        config("      - aesgcm:\n          keys:\n            - name: k\n              secret: c2hvcnQ=\n"),
    )
    .expect("write the configuration");
    let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("up")
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .arg(format!(
            "--encryption-provider-config={}",
            config_path.display()
        ))
        .output()
        .expect("run shoal up");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        format!(
            "error: encryption configuration {}: resources[0].providers[0].aesgcm.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 5, expected one of [16 24 32]",
            config_path.display()
        )
    );
}
