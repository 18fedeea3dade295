//! The node agent against real containers, on a one-machine cluster in a
//! network-namespace test host: restart policies and back-off, probes,
//! graceful termination, init containers, environment and volumes from
//! ConfigMaps and Secrets, resource limits, exit codes, bad images and
//! commands, and adoption of running containers after the agent restarts.
//! Every pod is bound to the server's node by `spec.nodeName`; what it
//! proves it proves by its own exit code or by files on the machine.

mod common;
#[path = "common/machines.rs"]
mod machines;

use std::time::{Duration, Instant};

use machines::Machines;

const NODE: &str = "server";

fn pod(name: &str, restart: &str, body: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {NODE}\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 10\n{body}"
    )
}

fn phase(cluster: &Machines, name: &str) -> String {
    cluster.pod_field(name, ".status.phase")
}

fn wait_phase(cluster: &Machines, name: &str, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while phase(cluster, name) != wanted {
        assert!(
            Instant::now() < deadline,
            "pod {name} never reached {wanted}:\n{}\n{}",
            cluster.kubectl_ok(&["describe", "pod", name]),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_agent_runs_pods_as_kubelet_does() {
    let mut cluster = Machines::start(0);
    let shared = cluster.dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let shared = shared.display().to_string();
    cluster.kubectl_ok(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=greeting=hello",
        "--from-literal=file.txt=from-a-configmap",
    ]);
    cluster.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "credentials",
        "--from-literal=password=s3cret",
    ]);

    // Exit codes and restart policies.
    cluster.apply(&pod("exits-zero", "Never", "  containers:\n  - {name: main, image: busybox:1, imagePullPolicy: Never, command: [sh, -c, 'exit 0']}\n"));
    cluster.apply(&pod("exits-two", "Never", "  containers:\n  - {name: main, image: busybox:1, imagePullPolicy: Never, command: [sh, -c, 'exit 2']}\n"));
    cluster.apply(&pod("crashes", "OnFailure", "  containers:\n  - {name: main, image: busybox:1, imagePullPolicy: Never, command: [sh, -c, 'exit 3']}\n"));
    // Init containers in order, sharing an emptyDir with the app.
    cluster.apply(&pod("inits", "Never", "  initContainers:\n  - {name: first, image: busybox:1, imagePullPolicy: Never, command: [sh, -c, 'echo 1 >> /work/order'], volumeMounts: [{name: work, mountPath: /work}]}\n  - {name: second, image: busybox:1, imagePullPolicy: Never, command: [sh, -c, 'echo 2 >> /work/order'], volumeMounts: [{name: work, mountPath: /work}]}\n  containers:\n  - {name: main, image: busybox:1, imagePullPolicy: Never, command: [sh, -c, 'test \"$(cat /work/order | tr \"\\n\" \" \")\" = \"1 2 \"'], volumeMounts: [{name: work, mountPath: /work}]}\n  volumes: [{name: work, emptyDir: {}}]\n"));
    // Environment and volumes from a ConfigMap and a Secret, and the
    // downward API.
    cluster.apply(&pod("configured", "Never", "  containers:\n  - name: main\n    image: busybox:1\n    imagePullPolicy: Never\n    command: [sh, -c, 'test \"$GREETING\" = hello && test \"$PASSWORD\" = s3cret && test \"$POD\" = configured && test \"$(cat /config/file.txt)\" = from-a-configmap && test \"$(cat /secret/password)\" = s3cret']\n    env:\n    - {name: GREETING, valueFrom: {configMapKeyRef: {name: settings, key: greeting}}}\n    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: credentials, key: password}}}\n    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}\n    volumeMounts: [{name: config, mountPath: /config}, {name: secret, mountPath: /secret}]\n  volumes:\n  - {name: config, configMap: {name: settings}}\n  - {name: secret, secret: {secretName: credentials}}\n"));
    // Names: the cluster DNS in resolv.conf, the pod's own name (with its
    // subdomain) and its host aliases in /etc/hosts.
    cluster.apply(&pod("names", "Never", "  hostname: db-0\n  subdomain: db\n  hostAliases: [{ip: 192.0.2.4, hostnames: [foo.local]}]\n  containers:\n  - name: main\n    image: busybox:1\n    imagePullPolicy: Never\n    command: [sh, -c, 'grep -q \"^search default.svc.cluster.local svc.cluster.local cluster.local\" /etc/resolv.conf && grep -qx \"nameserver 10.43.0.10\" /etc/resolv.conf && grep -qx \"options ndots:5\" /etc/resolv.conf && grep -q \"db-0.db.default.svc.cluster.local\" /etc/hosts && grep -q \"^192.0.2.4.foo.local\" /etc/hosts && test \"$(hostname)\" = db-0']\n"));
    // A memory limit the kernel enforces.
    cluster.apply(&pod("greedy", "Never", "  containers:\n  - {name: main, image: busybox:1, imagePullPolicy: Never, command: [sh, -c, 'dd if=/dev/zero of=/dev/null bs=64M count=1'], resources: {limits: {memory: 16Mi}}}\n"));
    // Probes: a liveness probe that starts failing, a readiness probe that
    // never passes.
    cluster.apply(&pod("unhealthy", "Always", "  containers:\n  - name: main\n    image: busybox:1\n    imagePullPolicy: Never\n    command: [sh, -c, 'touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600']\n    livenessProbe: {exec: {command: [test, -f, /tmp/healthy]}, periodSeconds: 1, failureThreshold: 2}\n"));
    cluster.apply(&pod("never-ready", "Always", "  containers:\n  - name: main\n    image: busybox:1\n    imagePullPolicy: Never\n    command: [sleep, '3600']\n    readinessProbe: {tcpSocket: {port: 9}, periodSeconds: 1}\n"));
    // Bad input: an image that is not there, a command not in the image.
    cluster.apply(&pod(
        "no-image",
        "Never",
        "  containers:\n  - {name: main, image: 'nosuch:1', imagePullPolicy: Never}\n",
    ));
    cluster.apply(&pod("no-command", "Never", "  containers:\n  - {name: main, image: busybox:1, imagePullPolicy: Never, command: [/bin/nosuch]}\n"));
    // Graceful termination: one process traps SIGTERM and says so in a
    // host directory; one ignores it (pid 1 without a handler).
    cluster.apply(&pod("graceful", "Always", &format!("  containers:\n  - name: main\n    image: busybox:1\n    imagePullPolicy: Never\n    command: [sh, -c, 'trap \"echo got TERM > /shared/graceful; exit 0\" TERM; while true; do sleep 0.2; done']\n    volumeMounts: [{{name: shared, mountPath: /shared}}]\n  volumes: [{{name: shared, hostPath: {{path: {shared}, type: Directory}}}}]\n")));
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stubborn\nspec:\n  nodeName: {NODE}\n  terminationGracePeriodSeconds: 2\n  containers:\n  - {{name: main, image: busybox:1, imagePullPolicy: Never, command: [sleep, '3600']}}\n"
    ));
    cluster.apply(&pod("survivor", "Always", "  containers:\n  - {name: main, image: busybox:1, imagePullPolicy: Never, command: [sleep, '3600']}\n"));

    wait_phase(&cluster, "exits-zero", "Succeeded");
    wait_phase(&cluster, "exits-two", "Failed");
    assert_eq!(
        cluster.pod_field(
            "exits-two",
            ".status.containerStatuses[0].state.terminated.exitCode"
        ),
        "2"
    );
    assert_eq!(
        cluster.pod_field(
            "exits-two",
            ".status.containerStatuses[0].state.terminated.reason"
        ),
        "Error"
    );
    wait_phase(&cluster, "inits", "Succeeded");
    wait_phase(&cluster, "configured", "Succeeded");
    wait_phase(&cluster, "names", "Succeeded");
    wait_phase(&cluster, "greedy", "Failed");
    assert_eq!(
        cluster.pod_field(
            "greedy",
            ".status.containerStatuses[0].state.terminated.reason"
        ),
        "OOMKilled"
    );

    // OnFailure restarts with back-off: CrashLoopBackOff, the last exit
    // kept in lastState.
    cluster.wait_until(
        &[
            "get",
            "pod",
            "crashes",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ],
        Duration::from_secs(30),
        |reason| reason == "CrashLoopBackOff",
    );
    assert_eq!(
        cluster.pod_field(
            "crashes",
            ".status.containerStatuses[0].lastState.terminated.exitCode"
        ),
        "3"
    );
    assert_eq!(phase(&cluster, "crashes"), "Running");

    // The liveness probe fails, the container is restarted.
    cluster.wait_until(
        &[
            "get",
            "pod",
            "unhealthy",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ],
        Duration::from_secs(40),
        |count| count.parse::<u32>().is_ok_and(|count| count >= 1),
    );
    let events = cluster.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=unhealthy",
    ]);
    assert!(
        events.contains("Unhealthy") && events.contains("Liveness probe failed"),
        "{events}"
    );
    // The readiness probe never passes: running, not ready.
    assert_eq!(phase(&cluster, "never-ready"), "Running");
    assert_eq!(
        cluster.pod_field("never-ready", ".status.containerStatuses[0].ready"),
        "false"
    );

    // Bad input is a waiting reason or a terminated state that says why.
    cluster.wait_until(
        &[
            "get",
            "pod",
            "no-image",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ],
        Duration::from_secs(30),
        |reason| reason == "ErrImageNeverPull",
    );
    wait_phase(&cluster, "no-command", "Failed");
    let message = cluster.pod_field(
        "no-command",
        ".status.containerStatuses[0].state.terminated.message",
    );
    assert!(message.contains("nosuch"), "{message}");

    // Adoption: the agent restarts; running containers keep running, with
    // the same id and no restart.
    wait_phase(&cluster, "survivor", "Running");
    let before = cluster.pod_field("survivor", ".status.containerStatuses[0].containerID");
    cluster.restart(0);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        cluster.pod_field("survivor", ".status.containerStatuses[0].containerID"),
        before
    );
    assert_eq!(
        cluster.pod_field("survivor", ".status.containerStatuses[0].restartCount"),
        "0"
    );
    assert_eq!(phase(&cluster, "survivor"), "Running");

    // Graceful termination: the trapping process gets its SIGTERM and
    // exits; the one that ignores it is killed after its 2 s grace.
    wait_phase(&cluster, "graceful", "Running");
    wait_phase(&cluster, "stubborn", "Running");
    cluster.kubectl_ok(&["delete", "pod", "graceful"]);
    assert_eq!(
        std::fs::read_to_string(format!("{shared}/graceful"))
            .unwrap_or_default()
            .trim(),
        "got TERM"
    );
    let before_delete = cluster.kubectl_ok(&["get", "pod", "stubborn", "-o", "yaml"]);
    let begun = Instant::now();
    cluster.kubectl_ok(&["delete", "pod", "stubborn"]);
    let took = begun.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(9),
        "the stubborn pod took {took:?} to go with a 2 s grace period:\n{before_delete}\n{}",
        cluster.logs()
    );
    drop(cluster);
}
