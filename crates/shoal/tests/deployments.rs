//! Deployments on a real cluster (a server and one joined machine, real
//! busybox pods), driven by kubectl as on any cluster: create, scale,
//! `set image`, `rollout status|history|undo|pause|resume|restart`, delete;
//! and failing rollouts, which stall at their progress deadline or, with
//! `shoal.io/auto-rollback`, go back to the last good revision.

mod common;
#[path = "common/machines.rs"]
mod machines;

use std::time::Duration;

use machines::Machines;

const WAIT: Duration = Duration::from_secs(90);

fn jsonpath(cluster: &Machines, object: &str, path: &str) -> String {
    cluster.kubectl_ok(&["get", object, "-o", &format!("jsonpath={path}")])
}

/// `kubectl rollout status` until it succeeds; checks every line is one
/// kubectl prints for a Deployment, and returns them.
fn rollout_status(cluster: &Machines, deployment: &str) -> Vec<String> {
    let text = cluster.kubectl_ok(&[
        "rollout",
        "status",
        &format!("deployment/{deployment}"),
        "--timeout=90s",
    ]);
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let quoted = format!("\"{deployment}\"");
    for line in &lines {
        let known = line == "Waiting for deployment spec update to be observed..."
            || (line.starts_with(&format!(
                "Waiting for deployment {quoted} rollout to finish: "
            )) && (line.ends_with(" new replicas have been updated...")
                || line.ends_with(" old replicas are pending termination...")
                || line.ends_with(" updated replicas are available...")))
            || *line == format!("deployment {quoted} successfully rolled out");
        assert!(
            known,
            "an unexpected rollout status line: {line:?} in\n{text}"
        );
    }
    assert_eq!(
        lines.last().map(String::as_str),
        Some(format!("deployment {quoted} successfully rolled out").as_str()),
        "{text}"
    );
    lines
}

/// The events about Deployment `name`, one a line: `TYPE REASON: MESSAGE`.
fn events_of(cluster: &Machines, name: &str) -> String {
    let all = cluster.kubectl_ok(&[
        "get",
        "events",
        "-o",
        r#"jsonpath={range .items[*]}{.involvedObject.kind}/{.involvedObject.name} {.type} {.reason}: {.message}{"\n"}{end}"#,
    ]);
    let prefix = format!("Deployment/{name} ");
    all.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The Deployment's ReplicaSets as (image, spec.replicas, revision).
fn replica_sets(cluster: &Machines, selector: &str) -> Vec<(String, String, String)> {
    let text = cluster.kubectl_ok(&[
        "get",
        "rs",
        "-l",
        selector,
        "-o",
        r#"jsonpath={range .items[*]}{.spec.template.spec.containers[0].image} {.spec.replicas} {.metadata.annotations.deployment\.kubernetes\.io/revision}{"\n"}{end}"#,
    ]);
    let mut sets: Vec<(String, String, String)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().map(str::to_string);
            Some((fields.next()?, fields.next()?, fields.next()?))
        })
        .collect();
    sets.sort_by(|a, b| a.2.cmp(&b.2));
    sets
}

#[test]
fn a_deployment_rolls_out_scales_undoes_pauses_restarts_and_goes() {
    let cluster = Machines::start_with_images(1, &["busybox:2"]);
    let created = cluster.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1",
        "--replicas=3",
        "--",
        "sleep",
        "3600",
    ]);
    assert_eq!(created.trim(), "deployment.apps/web created");
    rollout_status(&cluster, "web");
    let sets = replica_sets(&cluster, "app=web");
    assert_eq!(
        sets,
        [("busybox:1".to_string(), "3".to_string(), "1".to_string())]
    );
    // The ReplicaSet is named by the template's hash, which labels its pods.
    let rs_name = jsonpath(&cluster, "rs", "{.items[0].metadata.name}");
    let hash = jsonpath(
        &cluster,
        &format!("rs/{rs_name}"),
        "{.metadata.labels.pod-template-hash}",
    );
    assert_eq!(rs_name, format!("web-{hash}"));
    let pod_hashes = cluster.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].metadata.labels.pod-template-hash}",
    ]);
    assert_eq!(
        pod_hashes.split_whitespace().collect::<Vec<_>>(),
        [hash.as_str(); 3]
    );
    let owner = jsonpath(
        &cluster,
        &format!("rs/{rs_name}"),
        "{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
    );
    assert_eq!(owner, "Deployment/web");
    let conditions = jsonpath(
        &cluster,
        "deploy/web",
        r#"{range .status.conditions[*]}{.type}={.reason}{" "}{end}"#,
    );
    assert!(
        conditions.contains("Available=MinimumReplicasAvailable"),
        "{conditions}"
    );
    assert!(
        conditions.contains("Progressing=NewReplicaSetAvailable"),
        "{conditions}"
    );

    // Scale.
    assert_eq!(
        cluster
            .kubectl_ok(&["scale", "deployment", "web", "--replicas=5"])
            .trim(),
        "deployment.apps/web scaled"
    );
    cluster.wait_until(
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ],
        WAIT,
        |text| text == "5",
    );
    rollout_status(&cluster, "web");

    // A new image rolls out.
    let set = cluster.kubectl_ok(&["set", "image", "deployment/web", "busybox=busybox:2"]);
    assert_eq!(set.trim(), "deployment.apps/web image updated");
    let lines = rollout_status(&cluster, "web");
    assert!(
        lines.len() > 1,
        "the rollout was seen in progress: {lines:?}"
    );
    assert_eq!(
        replica_sets(&cluster, "app=web"),
        [
            ("busybox:1".to_string(), "0".to_string(), "1".to_string()),
            ("busybox:2".to_string(), "5".to_string(), "2".to_string()),
        ]
    );
    let images = cluster.wait_until(
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ],
        WAIT,
        |text| {
            text.split_whitespace().count() == 5
                && text.split_whitespace().all(|image| image == "busybox:2")
        },
    );
    assert!(!images.contains("busybox:1"));
    let events = events_of(&cluster, "web");
    assert!(
        events.contains(&format!(
            "ScalingReplicaSet: Scaled up replica set {rs_name} from 0 to 3"
        )),
        "{events}"
    );
    assert!(
        events.contains(&format!(
            "ScalingReplicaSet: Scaled up replica set {rs_name} from 3 to 5"
        )),
        "{events}"
    );
    assert!(
        events.contains(&format!(
            "ScalingReplicaSet: Scaled down replica set {rs_name} from 5 to"
        )),
        "{events}"
    );

    // History and undo.
    let history = cluster.kubectl_ok(&["rollout", "history", "deployment/web"]);
    let rows: Vec<Vec<&str>> = history
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect())
        .filter(|row: &Vec<&str>| !row.is_empty())
        .collect();
    assert!(
        history.starts_with("deployment.apps/web \nREVISION  CHANGE-CAUSE\n"),
        "{history:?}"
    );
    assert_eq!(
        rows,
        [
            vec!["REVISION", "CHANGE-CAUSE"],
            vec!["1", "<none>"],
            vec!["2", "<none>"]
        ],
        "{history}"
    );
    let revision_one =
        cluster.kubectl_ok(&["rollout", "history", "deployment/web", "--revision=1"]);
    assert!(
        revision_one
            .lines()
            .any(|line| line.trim_start().starts_with("Image:")
                && line.trim_end().ends_with("busybox:1")),
        "{revision_one}"
    );
    assert_eq!(
        cluster
            .kubectl_ok(&["rollout", "undo", "deployment/web"])
            .trim(),
        "deployment.apps/web rolled back"
    );
    rollout_status(&cluster, "web");
    assert_eq!(
        jsonpath(
            &cluster,
            "deploy/web",
            "{.spec.template.spec.containers[0].image}"
        ),
        "busybox:1"
    );
    assert_eq!(
        replica_sets(&cluster, "app=web"),
        [
            ("busybox:2".to_string(), "0".to_string(), "2".to_string()),
            ("busybox:1".to_string(), "5".to_string(), "3".to_string()),
        ],
        "undo reuses revision 1's ReplicaSet as revision 3"
    );
    assert_eq!(
        jsonpath(
            &cluster,
            "deploy/web",
            r"{.metadata.annotations.deployment\.kubernetes\.io/revision}"
        ),
        "3"
    );
    let undo_again = cluster.kubectl(&["rollout", "undo", "deployment/web", "--to-revision=3"]);
    assert!(
        String::from_utf8_lossy(&undo_again.stdout)
            .contains("skipped rollback (current template already matches revision 3)"),
        "{undo_again:?}"
    );

    // Pause: a template change waits; resume rolls it out.
    assert_eq!(
        cluster
            .kubectl_ok(&["rollout", "pause", "deployment/web"])
            .trim(),
        "deployment.apps/web paused"
    );
    cluster.kubectl_ok(&["set", "image", "deployment/web", "busybox=busybox:2"]);
    cluster.wait_until(
        &[
            "get",
            "deploy",
            "web",
            "-o",
            r#"jsonpath={range .status.conditions[*]}{.type}={.reason}{" "}{end}"#,
        ],
        WAIT,
        |text| text.contains("Progressing=DeploymentPaused"),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        replica_sets(&cluster, "app=web")
            .iter()
            .map(|(image, replicas, _)| format!("{image}={replicas}"))
            .collect::<std::collections::BTreeSet<_>>(),
        ["busybox:1=5".to_string(), "busybox:2=0".to_string()].into(),
        "nothing rolls out while paused"
    );
    assert_eq!(
        cluster
            .kubectl_ok(&["rollout", "resume", "deployment/web"])
            .trim(),
        "deployment.apps/web resumed"
    );
    rollout_status(&cluster, "web");
    assert_eq!(
        replica_sets(&cluster, "app=web")
            .last()
            .map(|set| set.0.clone())
            .as_deref(),
        Some("busybox:2")
    );

    // Restart: the same image, new pods.
    let before = cluster.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert_eq!(
        cluster
            .kubectl_ok(&["rollout", "restart", "deployment/web"])
            .trim(),
        "deployment.apps/web restarted"
    );
    rollout_status(&cluster, "web");
    let after = cluster.wait_until(
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
        WAIT,
        |text| text.split_whitespace().count() == 5,
    );
    assert!(
        before.split_whitespace().all(|pod| !after.contains(pod)),
        "every pod replaced: {before} / {after}"
    );
    assert_eq!(replica_sets(&cluster, "app=web").len(), 3);

    // Delete: the ReplicaSets and pods go with it.
    cluster.kubectl_ok(&["delete", "deployment", "web"]);
    cluster.wait_until(
        &["get", "pods,rs", "-l", "app=web", "-o", "name"],
        WAIT,
        |text| text.trim().is_empty(),
    );
}

fn failing_deployment(name: &str, auto_rollback: bool, deadline_seconds: u32) -> String {
    let annotations = if auto_rollback {
        "\n  annotations: {shoal.io/auto-rollback: \"true\"}"
    } else {
        ""
    };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}{annotations}
spec:
  replicas: 2
  progressDeadlineSeconds: {deadline_seconds}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: main, image: busybox:1, command: [sleep, "3600"]}}
"#
    )
}

fn conditions(cluster: &Machines, name: &str) -> String {
    jsonpath(
        cluster,
        &format!("deploy/{name}"),
        r#"{range .status.conditions[*]}{.type}={.status}/{.reason}{" "}{end}"#,
    )
}

#[test]
fn a_failing_rollout_stalls_at_its_deadline_or_rolls_back() {
    let cluster = Machines::start(1);
    cluster.apply(&failing_deployment("stalls", false, 10));
    cluster.apply(&failing_deployment("pulls", true, 10));
    cluster.apply(&failing_deployment("crashes", true, 600));
    for name in ["stalls", "pulls", "crashes"] {
        rollout_status(&cluster, name);
    }
    let good_hash = jsonpath(
        &cluster,
        "rs",
        "{.items[?(@.metadata.labels.app==\"pulls\")].metadata.labels.pod-template-hash}",
    );
    // An image that cannot be pulled, and a command that exits at once.
    cluster.kubectl_ok(&["set", "image", "deployment/stalls", "main=busybox:nosuch"]);
    cluster.kubectl_ok(&["set", "image", "deployment/pulls", "main=busybox:nosuch"]);
    cluster.kubectl_ok(&["patch", "deployment", "crashes", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/template/spec/containers/0/command","value":["sh","-c","exit 1"]}]"#]);

    // Without auto-rollback: stalled, as on any cluster.
    cluster.wait_until(
        &[
            "get",
            "deploy",
            "stalls",
            "-o",
            r#"jsonpath={range .status.conditions[*]}{.type}={.status}/{.reason}{" "}{end}"#,
        ],
        WAIT,
        |text| text.contains("Progressing=False/ProgressDeadlineExceeded"),
    );
    let status = cluster.kubectl(&["rollout", "status", "deployment/stalls", "--timeout=20s"]);
    assert!(!status.status.success());
    assert!(
        String::from_utf8_lossy(&status.stderr)
            .contains("error: deployment \"stalls\" exceeded its progress deadline"),
        "{status:?}"
    );
    assert_eq!(
        jsonpath(
            &cluster,
            "deploy/stalls",
            "{.spec.template.spec.containers[0].image}"
        ),
        "busybox:nosuch"
    );
    assert_eq!(
        jsonpath(&cluster, "deploy/stalls", "{.status.availableReplicas}"),
        "2",
        "the old pods still serve"
    );

    // With it: back on the last good template, with the reason told.
    for (name, reason) in [("pulls", "ProgressDeadlineExceeded"), ("crashes", "")] {
        cluster.wait_until(
            &[
                "get",
                "deploy",
                name,
                "-o",
                r#"jsonpath={range .status.conditions[*]}{.type}={.status}/{.reason}{" "}{end}"#,
            ],
            WAIT,
            |text| text.contains(&format!("RolledBack=True/{reason}")),
        );
        rollout_status(&cluster, name);
        let text = conditions(&cluster, name);
        assert!(
            text.contains("Available=True/MinimumReplicasAvailable"),
            "{text}"
        );
        let template = jsonpath(
            &cluster,
            &format!("deploy/{name}"),
            "{.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].command}",
        );
        assert_eq!(template, r#"busybox:1 ["sleep","3600"]"#);
        let failed = jsonpath(
            &cluster,
            &format!("deploy/{name}"),
            r"{.metadata.annotations.shoal\.io/failed-revision-hash}",
        );
        assert!(!failed.is_empty());
        let failed_rs = jsonpath(&cluster, &format!("rs/{name}-{failed}"), "{.spec.replicas}");
        assert_eq!(failed_rs, "0", "the failed revision is scaled away");
        let events = events_of(&cluster, name);
        assert!(
            events.contains("Warning RolledBack: Rolled back from revision 2 (replica set "),
            "{events}"
        );
        assert!(events.contains("to revision 1 (replica set"), "{events}");
    }
    let text = conditions(&cluster, "crashes");
    assert!(
        text.contains("RolledBack=True/CrashLoopBackOff")
            || text.contains("RolledBack=True/TooManyRestarts"),
        "{text}"
    );
    let good_after = jsonpath(
        &cluster,
        "deploy/pulls",
        r"{.metadata.annotations.deployment\.kubernetes\.io/revision}",
    );
    assert_eq!(
        good_after, "3",
        "the good revision comes back as the newest"
    );
    assert!(!good_hash.is_empty());

    // The failed template applied again is not rolled out.
    cluster.kubectl_ok(&["set", "image", "deployment/pulls", "main=busybox:nosuch"]);
    cluster.wait_until(
        &[
            "get",
            "deploy",
            "pulls",
            "-o",
            r#"jsonpath={range .status.conditions[*]}{.type}={.status}/{.reason}{" "}{end}"#,
        ],
        WAIT,
        |text| text.contains("Progressing=False/RolloutBlocked"),
    );
    assert_eq!(
        jsonpath(&cluster, "deploy/pulls", "{.status.availableReplicas}"),
        "2"
    );
}
