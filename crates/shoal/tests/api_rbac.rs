//! Authorization at the Kubernetes API, driven with kubectl as different
//! users (kubeconfigs from `shoal kubeconfig`): RBAC's forbidden messages
//! as kube-apiserver prints them, `kubectl auth can-i` and `whoami`, role
//! aggregation, and the Node rule refusing an agent's certificate on
//! another node's pods.

mod common;
#[path = "common/kube.rs"]
mod kube;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kube::{KubectlRelease, Shoal};

/// Issues a kubeconfig with `shoal kubeconfig` for `user` in `groups`.
fn kubeconfig_for(shoal: &Shoal, user: &str, groups: &[&str]) -> PathBuf {
    let path = shoal
        .dir
        .path()
        .join(format!("{}.kubeconfig", user.replace(':', "_")));
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command
        .arg("kubeconfig")
        .arg(format!(
            "--data-dir={}",
            shoal.dir.path().join("data").display()
        ))
        .arg(format!("--user={user}"))
        .arg("-o")
        .arg(&path);
    for group in groups {
        command.arg(format!("--group={group}"));
    }
    let output = command.output().expect("run shoal kubeconfig");
    assert!(
        output.status.success(),
        "shoal kubeconfig failed: {output:?}"
    );
    path
}

/// Runs kubectl (the newest release) with `kubeconfig` and `args` (split
/// on spaces).
fn kubectl(shoal: &Shoal, kubeconfig: &Path, args: &str) -> Output {
    let mut command = Command::new(KubectlRelease::Newest.binary());
    command
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args.split(' '))
        .env("HOME", shoal.new_home("rbac"))
        .env_remove("KUBECONFIG");
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kubectl");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait for kubectl").is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("kubectl's output")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs a kubectl command that must succeed; returns its stdout.
fn ok(shoal: &Shoal, kubeconfig: &Path, args: &str) -> String {
    let output = kubectl(shoal, kubeconfig, args);
    assert!(
        output.status.success(),
        "kubectl {args} failed: {}{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Runs a kubectl command that must fail with `message` on stderr.
fn refused(shoal: &Shoal, kubeconfig: &Path, args: &str, message: &str) {
    let output = kubectl(shoal, kubeconfig, args);
    assert!(
        !output.status.success(),
        "kubectl {args} succeeded: {}",
        stdout(&output)
    );
    assert_eq!(stderr(&output).trim_end(), message, "kubectl {args}");
}

/// `kubectl auth can-i ARGS` as `kubeconfig`: yes or no, polled until it is
/// `expected` (bindings reach the authorizer through a watch).
fn can_i(shoal: &Shoal, kubeconfig: &Path, args: &str, expected: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = kubectl(shoal, kubeconfig, &format!("auth can-i {args}"));
        let answer = stdout(&output).trim().to_string();
        let wanted = if expected { "yes" } else { "no" };
        // A refusal may carry the authorizer's reason: `no - REASON`.
        let word = answer.split(" - ").next().unwrap_or("");
        if word == wanted && output.status.success() == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "auth can-i {args}: {answer:?} (wanted {wanted}) {}",
            stderr(&output)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn users_get_what_their_roles_allow_and_kube_apiservers_refusals() {
    let shoal = Shoal::start();
    let admin = shoal.kubeconfig.clone();
    let bob = kubeconfig_for(&shoal, "bob", &[]);
    let carol = kubeconfig_for(&shoal, "carol", &["devs"]);

    // Nobody bound bob anything: discovery only.
    ok(&shoal, &bob, "api-versions");
    refused(
        &shoal,
        &bob,
        "get pods -n default",
        r#"Error from server (Forbidden): pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default""#,
    );
    refused(
        &shoal,
        &bob,
        "get nodes",
        r#"Error from server (Forbidden): nodes is forbidden: User "bob" cannot list resource "nodes" in API group "" at the cluster scope"#,
    );
    can_i(&shoal, &bob, "list pods -n default", false);
    can_i(&shoal, &admin, "delete nodes", true);

    // view in default: read pods there, not elsewhere, not secrets, no writes.
    ok(
        &shoal,
        &admin,
        "create rolebinding bob-view --clusterrole=view --user=bob -n default",
    );
    can_i(&shoal, &bob, "list pods -n default", true);
    ok(&shoal, &bob, "get pods -n default");
    can_i(&shoal, &bob, "list pods -n kube-system", false);
    can_i(&shoal, &bob, "get secrets -n default", false);
    can_i(&shoal, &bob, "create deployments.apps -n default", false);
    refused(
        &shoal,
        &bob,
        "create configmap c -n default",
        r#"error: failed to create configmap: configmaps is forbidden: User "bob" cannot create resource "configmaps" in API group "" in the namespace "default""#,
    );
    let rules = ok(&shoal, &bob, "auth can-i --list -n default");
    assert!(
        rules
            .lines()
            .any(|line| line.starts_with("pods ") && line.contains("[get list watch]")),
        "{rules}"
    );

    // A group's Role: pods but not their logs.
    ok(
        &shoal,
        &admin,
        "create role pod-reader --verb=get --resource=pods -n default",
    );
    ok(
        &shoal,
        &admin,
        "create rolebinding devs-pods --role=pod-reader --group=devs -n default",
    );
    ok(
        &shoal,
        &admin,
        "run web --image=busybox -n default --restart=Never",
    );
    can_i(&shoal, &carol, "get pods -n default", true);
    can_i(
        &shoal,
        &carol,
        "get pods --subresource=log -n default",
        false,
    );
    refused(
        &shoal,
        &carol,
        "logs web -n default",
        r#"Error from server (Forbidden): pods "web" is forbidden: User "carol" cannot get resource "pods/log" in API group "" in the namespace "default""#,
    );
    let whoami = ok(&shoal, &carol, "auth whoami");
    assert!(whoami.contains("Username    carol"), "{whoami}");
    assert!(whoami.contains("[devs system:authenticated]"), "{whoami}");

    // A binding to a role that does not exist says so.
    ok(
        &shoal,
        &admin,
        "create rolebinding bob-gone --clusterrole=gone --user=bob -n kube-system",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = kubectl(&shoal, &bob, "get pods -n kube-system");
        if stderr(&output).trim_end()
            == r#"Error from server (Forbidden): pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "kube-system": RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found"#
        {
            break;
        }
        assert!(Instant::now() < deadline, "{}", stderr(&output));
        std::thread::sleep(Duration::from_millis(200));
    }

    // Aggregation: a role labelled to aggregate to view shows up in view,
    // edit and admin.
    let role = shoal.dir.path().join("crontab-reader.yaml");
    std::fs::write(
        &role,
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: crontab-reader
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules:
- {apiGroups: [example.com], resources: [crontabs], verbs: [get, list]}
"#,
    )
    .expect("write the role");
    ok(&shoal, &admin, &format!("apply -f {}", role.display()));
    for role in ["view", "edit", "admin"] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let json = ok(&shoal, &admin, &format!("get clusterrole {role} -o json"));
            let object: serde_json::Value = serde_json::from_str(&json).expect("JSON");
            let has = object["rules"].as_array().is_some_and(|rules| {
                rules
                    .iter()
                    .any(|rule| rule["resources"] == serde_json::json!(["crontabs"]))
            });
            if has {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{role} did not aggregate crontab-reader: {json}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn an_agents_certificate_reaches_only_its_own_node_and_pods() {
    let shoal = Shoal::start();
    let admin = shoal.kubeconfig.clone();
    let node = kubeconfig_for(&shoal, "system:node:n1", &["system:nodes"]);
    let manifest = shoal.dir.path().join("pods.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: v1
kind: Secret
metadata: {name: mine, namespace: default}
stringData: {k: v}
---
apiVersion: v1
kind: Secret
metadata: {name: theirs, namespace: default}
stringData: {k: v}
---
apiVersion: v1
kind: Pod
metadata: {name: on-n1, namespace: default}
spec:
  nodeName: n1
  containers: [{name: c, image: busybox}]
  volumes: [{name: s, secret: {secretName: mine}}]
---
apiVersion: v1
kind: Pod
metadata: {name: on-n2, namespace: default}
spec:
  nodeName: n2
  containers: [{name: c, image: busybox}]
  volumes: [{name: s, secret: {secretName: theirs}}]
"#,
    )
    .expect("write the manifest");
    ok(&shoal, &admin, &format!("apply -f {}", manifest.display()));

    ok(&shoal, &node, "get pods -A");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kubectl(&shoal, &node, "get secret mine -n default")
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "n1 cannot read its pod's secret");
        std::thread::sleep(Duration::from_millis(200));
    }
    refused(
        &shoal,
        &node,
        "get secret theirs -n default",
        r#"Error from server (Forbidden): secrets "theirs" is forbidden: User "system:node:n1" cannot get resource "secrets" in API group "" in the namespace "default": no relationship found between node 'n1' and this object"#,
    );
    ok(
        &shoal,
        &node,
        r#"patch pod on-n1 -n default --subresource=status --type=merge -p {"status":{"message":"mine"}}"#,
    );
    refused(
        &shoal,
        &node,
        r#"patch pod on-n2 -n default --subresource=status --type=merge -p {"status":{"message":"theirs"}}"#,
        r#"Error from server (Forbidden): pods "on-n2" is forbidden: node "n1" can only update pod status for pods with spec.nodeName set to itself"#,
    );
    refused(
        &shoal,
        &node,
        "delete pod on-n2 -n default",
        r#"Error from server (Forbidden): pods "on-n2" is forbidden: node "n1" can only delete pods with spec.nodeName set to itself"#,
    );
    refused(
        &shoal,
        &node,
        "create deployment d --image=busybox -n default",
        r#"error: failed to create deployment: deployments.apps is forbidden: User "system:node:n1" cannot create resource "deployments" in API group "apps" in the namespace "default""#,
    );
    can_i(&shoal, &node, "list services", true);
    can_i(&shoal, &node, "list secrets -n default", false);
}
