//! Pods through `runtime::pod`, as the node agent drives them, with real
//! containers (busybox) as root: shared localhost and hostname, the pod's
//! address and hostPorts from the host, exit codes and OOM kills, stop's
//! grace period, exec (pipes and tty), cgroup limits, CRI logs, state that
//! outlives the runtime object, and removal that leaves nothing behind.
//!
//! Each test has its own bridge and pod range (10.231.N.0/24), removed at
//! the end, so the tests run in parallel. The network itself is tested in
//! `pod_network.rs`.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::pods::{
    Node, eventually, exec, exited, find_dir_named, free_port, http_get, iptables_rules,
    open_runtime, open_runtime_at,
};
use common::{Shoal, require_container_support};
use runtime::pod::{
    ContainerId, ContainerSpec, ContainerStatus, ExitReason, Ipv4Cidr, PodError, PortMapping,
    Protocol, PullPolicy, Resources, SandboxSpec, StartOptions,
    log::{Stream, parse_line},
};

#[test]
fn containers_of_a_pod_share_localhost_and_hostname_and_the_pod_answers_from_the_host() {
    let node = Node::new(11);
    let uid = "0a11aaaa-1111-4111-8111-000000000001";
    let host_port = free_port();
    let ip = node
        .sandbox(
            uid,
            "web",
            vec![PortMapping {
                host_port,
                container_port: 8080,
                protocol: Protocol::Tcp,
            }],
        )
        .expect("a pod on the pod network has an address");
    assert!(
        Ipv4Cidr::new(Ipv4Addr::new(10, 231, 11, 0), 24)
            .unwrap()
            .contains(ip)
    );
    assert_ne!(ip, Ipv4Addr::new(10, 231, 11, 1), "the bridge holds .1");
    // Idempotent by uid: the same sandbox, the same address.
    assert_eq!(node.sandbox(uid, "web", Vec::new()), Some(ip));

    let server = node.start(
        uid,
        &node.container(
            "server",
            "mkdir -p /www && echo hello-from-server > /www/index.html && exec httpd -f -p 8080 -h /www",
        ),
    );
    let client = node.start(uid, &node.container("client", "exec sleep 1000"));

    // The client reaches the server on localhost: one network namespace.
    let mut answer = String::new();
    eventually("the server to answer on the pod's localhost", || {
        let (code, body) = exec(
            &node,
            &client,
            &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"],
        );
        answer = body;
        code == 0
    });
    assert_eq!(answer, "hello-from-server\n");
    // One hostname, the pod's name.
    assert_eq!(
        exec(&node, &server, &["hostname"]),
        (0, "web\n".to_string())
    );
    assert_eq!(
        exec(&node, &client, &["hostname"]),
        (0, "web\n".to_string())
    );
    // The same network, IPC and UTS namespaces; each its own pid and mount
    // namespaces.
    let namespace = |id: &ContainerId, kind: &str| {
        exec(&node, id, &["readlink", &format!("/proc/self/ns/{kind}")]).1
    };
    for kind in ["net", "ipc", "uts"] {
        assert_eq!(namespace(&server, kind), namespace(&client, kind), "{kind}");
        let host = fs::read_link(format!("/proc/self/ns/{kind}")).unwrap();
        assert_ne!(
            namespace(&client, kind).trim(),
            host.to_str().unwrap(),
            "{kind}"
        );
    }
    for kind in ["pid", "mnt"] {
        assert_ne!(namespace(&server, kind), namespace(&client, kind), "{kind}");
    }
    // Own pid namespaces: each container's app is pid 1.
    assert_eq!(
        exec(
            &node,
            &client,
            &["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"]
        )
        .1,
        "sleep 1000 "
    );
    // exec's exit code.
    assert_eq!(exec(&node, &client, &["sh", "-c", "exit 3"]).0, 3);
    // exec_sync, as probes use it: both streams, more output than a pipe
    // holds, and a timeout that kills.
    let argv = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let output = node
        .runtime
        .exec_sync(
            &client,
            &argv("echo out; echo err >&2; exit 3"),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(
        (output.exit_code, output.stdout, output.stderr),
        (3, b"out\n".to_vec(), b"err\n".to_vec())
    );
    let output = node
        .runtime
        .exec_sync(
            &client,
            &argv("head -c 200000 /dev/zero"),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!((output.exit_code, output.stdout.len()), (0, 200_000));
    let started = Instant::now();
    let error = node
        .runtime
        .exec_sync(&client, &argv("exec sleep 30"), Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(error, PodError::ExecTimeout { .. }), "{error}");
    assert!(
        error.to_string().ends_with("timed out after 0.3s"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let (_, processes) = exec(&node, &client, &["ps"]);
    assert!(!processes.contains("sleep 30"), "{processes}");
    assert_eq!(exec(&node, &client, &["nosuch"]).0, 127);

    // The pod's address answers from the host, and so does its hostPort.
    let response = http_get(&format!("{ip}:8080")).unwrap();
    assert!(response.ends_with("hello-from-server\n"), "{response}");
    let response = http_get(&format!("127.0.0.1:{host_port}")).unwrap();
    assert!(response.ends_with("hello-from-server\n"), "{response}");

    // port-forward reaches a port bound to the pod's loopback only.
    let _local = node.start(
        uid,
        &node.container(
            "local",
            "mkdir -p /local && echo only-on-loopback > /local/index.html && exec httpd -f -p 127.0.0.1:9090 -h /local",
        ),
    );
    let mut forwarded = String::new();
    eventually("the loopback server through port-forward", || {
        let Ok(mut stream) = node.runtime.port_forward(uid, 9090) else {
            return false;
        };
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        forwarded.clear();
        stream.read_to_string(&mut forwarded).is_ok() && !forwarded.is_empty()
    });
    assert!(forwarded.ends_with("only-on-loopback\n"), "{forwarded}");
    assert!(
        http_get(&format!("{ip}:9090")).is_err(),
        "bound to loopback only"
    );
    let error = node.runtime.port_forward(uid, 9).unwrap_err().to_string();
    assert!(
        error.starts_with("cannot connect to port 9 of pod default/web: ")
            && error.contains("refused"),
        "{error}"
    );

    // exec with a tty: the process's stdin is a terminal.
    let mut process = node
        .runtime
        .exec(
            &client,
            &[
                "sh".into(),
                "-c".into(),
                "test -t 0 && echo on-a-terminal".into(),
            ],
            true,
        )
        .unwrap();
    process.resize(100, 40).unwrap();
    let mut terminal = process.terminal.take().unwrap();
    let mut output = Vec::new();
    let mut buffer = [0u8; 256];
    // The master reads EIO once the last slave holder has exited.
    while let Ok(n_read) = terminal.read(&mut buffer) {
        if n_read == 0 {
            break;
        }
        output.extend_from_slice(&buffer[..n_read]);
    }
    assert_eq!(process.wait().unwrap(), 0);
    assert!(String::from_utf8_lossy(&output).contains("on-a-terminal"));

    let listed = node.runtime.list().unwrap();
    let sandbox = listed.iter().find(|sandbox| sandbox.uid == uid).unwrap();
    assert_eq!(sandbox.ip, Some(ip));
    let mut names: Vec<&str> = sandbox
        .containers
        .iter()
        .map(|container| container.name.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["client", "local", "server"]);
}

#[test]
fn exit_codes_oom_kills_and_commands_that_cannot_run_are_reported() {
    let node = Node::new(12);
    let uid = "0a12aaaa-1111-4111-8111-000000000002";
    node.sandbox(uid, "jobs", Vec::new());

    let done = node.start(uid, &node.container("done", "echo finished"));
    match exited(&node, &done) {
        ContainerStatus::Exited {
            exit_code: 0,
            reason: ExitReason::Completed,
            started_at: Some(started_at),
            finished_at,
            ..
        } => assert!(finished_at >= started_at),
        other => panic!("{other:?}"),
    }
    let failed = node.start(uid, &node.container("failed", "exit 3"));
    match exited(&node, &failed) {
        ContainerStatus::Exited {
            exit_code: 3,
            signal: None,
            reason,
            ..
        } => assert_eq!(reason.as_str(), "Error"),
        other => panic!("{other:?}"),
    }

    let mut hungry = node.container(
        "hungry",
        "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo survived ${#x}",
    );
    hungry.resources.memory_limit_bytes = Some(32 << 20);
    let hungry = node.start(uid, &hungry);
    match exited(&node, &hungry) {
        ContainerStatus::Exited {
            exit_code: 137,
            signal: Some(9),
            reason,
            ..
        } => assert_eq!(reason.as_str(), "OOMKilled"),
        other => panic!("{other:?}"),
    }

    let mut missing = node.container("missing", "");
    missing.args = vec!["nosuch".into()];
    let error = node.runtime.start_container(uid, &missing).unwrap_err();
    let PodError::ContainerCannotRun {
        ref id,
        exit_code,
        ref message,
        ..
    } = error
    else {
        panic!("{error}")
    };
    assert_eq!(exit_code, 127);
    assert_eq!(
        error.to_string(),
        "container missing cannot run: command \"nosuch\" not found in image busybox:latest"
    );
    assert!(message.contains("nosuch"));
    match node.runtime.container_status(id).unwrap() {
        ContainerStatus::Exited {
            exit_code: 127,
            reason: ExitReason::ContainerCannotRun,
            message,
            ..
        } => assert!(message.contains("not found in image"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Started again under the same attempt, it replaces that record; a
    // running instance is not started twice.
    let mut fixed = missing.clone();
    fixed.args = vec!["sleep".into(), "1000".into()];
    let again = node.start(uid, &fixed);
    assert!(matches!(
        node.runtime.container_status(id),
        Err(PodError::ContainerNotFound { .. })
    ));
    let error = node
        .runtime
        .start_container(uid, &fixed)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!("invalid container: missing (attempt 0) is already running as {again}")
    );
}

#[test]
fn stop_gives_a_trapping_process_its_grace_and_kills_one_that_ignores_it() {
    let node = Node::new(13);
    let uid = "0a13aaaa-1111-4111-8111-000000000003";
    node.sandbox(uid, "stoppers", Vec::new());
    let trapping = node.start(
        uid,
        &node.container(
            "trapping",
            "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done",
        ),
    );
    let ignoring = node.start(
        uid,
        &node.container("ignoring", "echo ready; exec sleep 1000"),
    );
    for id in [&trapping, &ignoring] {
        let log = node.runtime.log_path(id);
        eventually("the container to be ready", || {
            fs::read_to_string(&log).is_ok_and(|text| text.contains("ready"))
        });
    }

    let started = Instant::now();
    node.runtime
        .stop_container(&trapping, Duration::from_secs(20))
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the trap ran at once, took {took:?}"
    );
    match node.runtime.container_status(&trapping).unwrap() {
        ContainerStatus::Exited {
            exit_code: 7,
            signal: None,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    let log = fs::read_to_string(node.runtime.log_path(&trapping)).unwrap();
    assert!(log.contains("stdout F got-term"), "{log}");

    let started = Instant::now();
    node.runtime
        .stop_container(&ignoring, Duration::from_secs(1))
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(6),
        "killed after the grace period, took {took:?}"
    );
    match node.runtime.container_status(&ignoring).unwrap() {
        ContainerStatus::Exited {
            exit_code: 137,
            signal: Some(9),
            reason: ExitReason::Error,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
}

/// The cgroup directories a container was given (its state.json).
fn cgroups_of(node: &Node, id: &ContainerId) -> Vec<String> {
    let state: serde_json::Value = serde_json::from_slice(
        &fs::read(
            node.data_dir()
                .join("runtime/containers")
                .join(&id.0)
                .join("state.json"),
        )
        .unwrap(),
    )
    .unwrap();
    state["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|dir| dir.as_str().unwrap().to_string())
        .collect()
}

fn read_cgroup_value(dirs: &[String], v1_file: &str, v2_file: &str) -> String {
    for dir in dirs {
        for file in [v1_file, v2_file] {
            if let Ok(text) = fs::read_to_string(Path::new(dir).join(file)) {
                return text.trim().to_string();
            }
        }
    }
    panic!("neither {v1_file} nor {v2_file} in {dirs:?}");
}

#[test]
fn resource_limits_land_in_the_cgroup_and_logs_are_cri_records() {
    let node = Node::new(14);
    let uid = "0a14aaaa-1111-4111-8111-000000000004";
    node.sandbox(uid, "limited", Vec::new());
    let mut spec = node.container(
        "limited",
        "echo to-stdout; echo to-stderr >&2; exec sleep 1000",
    );
    spec.resources = Resources {
        cpu_request_millis: Some(250),
        cpu_limit_millis: Some(500),
        memory_limit_bytes: Some(64 << 20),
    };
    let id = node.start(uid, &spec);
    let dirs = cgroups_of(&node, &id);
    assert!(!dirs.is_empty());
    let pure_v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if pure_v2 {
        assert_eq!(
            read_cgroup_value(&dirs, "memory.max", "memory.max"),
            "67108864"
        );
        assert_eq!(
            read_cgroup_value(&dirs, "cpu.max", "cpu.max"),
            "50000 100000"
        );
        // 256 shares as a weight.
        assert_eq!(read_cgroup_value(&dirs, "cpu.weight", "cpu.weight"), "10");
    } else {
        assert_eq!(
            read_cgroup_value(&dirs, "memory.limit_in_bytes", "memory.max"),
            "67108864"
        );
        assert_eq!(
            read_cgroup_value(&dirs, "cpu.cfs_quota_us", "cpu.max"),
            "50000"
        );
        assert_eq!(read_cgroup_value(&dirs, "cpu.shares", "cpu.weight"), "256");
    }
    // The app runs in them.
    let ContainerStatus::Running { pid, .. } = node.runtime.container_status(&id).unwrap() else {
        panic!("not running");
    };
    for dir in &dirs {
        let procs = fs::read_to_string(Path::new(dir).join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|line| line == pid.to_string()),
            "{dir}: {procs}"
        );
    }

    // Under the pod's cgroup.
    for dir in &dirs {
        assert!(dir.ends_with(&format!("shoal/pod-{uid}/{}", id.0)), "{dir}");
    }
    // Usage is read from the cgroups, the container's and the pod's; a
    // container without limits has them too.
    let plain = node.start(uid, &node.container("plain", "exec sleep 1000"));
    assert!(!cgroups_of(&node, &plain).is_empty());
    for container in [&id, &plain] {
        let usage = node.runtime.container_stats(container).unwrap();
        assert!(usage.cpu_usage_nanos.unwrap() > 0, "{usage:?}");
        assert!(usage.memory_usage_bytes.unwrap() > 0, "{usage:?}");
        assert!(usage.memory_working_set_bytes.unwrap() <= usage.memory_usage_bytes.unwrap());
    }
    let pod_usage = node.runtime.pod_stats(uid).unwrap();
    let container_usage = node.runtime.container_stats(&id).unwrap();
    assert!(pod_usage.cpu_usage_nanos.unwrap() >= container_usage.cpu_usage_nanos.unwrap());

    let log_path = node.runtime.log_path(&id);
    eventually("both streams in the log", || {
        fs::read_to_string(&log_path).is_ok_and(|text| text.lines().count() >= 2)
    });
    let log = fs::read(&log_path).unwrap();
    let mut records: Vec<(Stream, String)> = log
        .split_inclusive(|byte| *byte == b'\n')
        .map(|line| {
            let record = parse_line(line).unwrap_or_else(|| panic!("not a CRI record: {line:?}"));
            assert!(record.complete);
            assert!(record.timestamp_text.ends_with('Z'));
            (record.stream, String::from_utf8(record.text).unwrap())
        })
        .collect();
    records.sort_by_key(|(stream, _)| stream.as_str());
    assert_eq!(
        records,
        [
            (Stream::Stderr, "to-stderr".to_string()),
            (Stream::Stdout, "to-stdout".to_string())
        ]
    );
    assert!(log_path.ends_with(format!("pods/{uid}/logs/limited/0.log")));
}

#[test]
fn containers_outlive_the_runtime_object_and_previous_logs_stay() {
    let node = Node::new(15);
    let uid = "0a15aaaa-1111-4111-8111-000000000005";
    node.sandbox(uid, "durable", Vec::new());
    let first = node.start(uid, &node.container("app", "echo first-instance"));
    exited(&node, &first);
    let mut second_spec = node.container("app", "echo second-instance; exec sleep 1000");
    second_spec.attempt = 1;
    let second = node.start(uid, &second_spec);
    let ContainerStatus::Running { pid, started_at } =
        node.runtime.container_status(&second).unwrap()
    else {
        panic!("not running");
    };

    // "Agent restart": a new runtime object on the same data directory.
    let reopened = open_runtime(&node.shoal, 15);
    reopened.ensure_network().unwrap();
    let sandboxes = reopened.list().unwrap();
    let sandbox = sandboxes.iter().find(|sandbox| sandbox.uid == uid).unwrap();
    let record = sandbox
        .containers
        .iter()
        .find(|container| container.id == second)
        .unwrap();
    assert_eq!(record.attempt, 1);
    assert_eq!(
        record.status,
        ContainerStatus::Running { pid, started_at },
        "the same process, still running"
    );
    assert!(
        sandbox
            .containers
            .iter()
            .any(|container| container.id == first
                && matches!(
                    container.status,
                    ContainerStatus::Exited { exit_code: 0, .. }
                ))
    );
    // The sandbox is found again, not made anew.
    assert_eq!(
        reopened
            .create_sandbox(&SandboxSpec {
                uid: uid.to_string(),
                name: "durable".into(),
                namespace: "default".into(),
                hostname: None,
                host_network: false,
                port_mappings: Vec::new(),
            })
            .unwrap()
            .ip,
        sandbox.ip
    );
    let previous = reopened.previous_log_path(&second).unwrap().unwrap();
    assert!(
        fs::read_to_string(previous)
            .unwrap()
            .contains("stdout F first-instance")
    );
    assert_eq!(reopened.previous_log_path(&first).unwrap(), None);
    reopened.stop_container(&second, Duration::ZERO).unwrap();
    assert!(matches!(
        reopened.container_status(&second).unwrap(),
        ContainerStatus::Exited { .. }
    ));
}

#[test]
fn remove_sandbox_leaves_nothing_behind() {
    let node = Node::new(16);
    let uid = "0a16aaaa-1111-4111-8111-000000000006";
    let host_port = free_port();
    node.sandbox(
        uid,
        "doomed",
        vec![PortMapping {
            host_port,
            container_port: 80,
            protocol: Protocol::Tcp,
        }],
    );
    let mut limited = node.container("limited", "exec sleep 1000");
    limited.resources.memory_limit_bytes = Some(64 << 20);
    limited.resources.cpu_limit_millis = Some(200);
    let ids = [
        node.start(uid, &limited),
        node.start(uid, &node.container("plain", "exec sleep 1000")),
    ];
    let sandbox = node.runtime.list().unwrap().remove(0);
    let veth = sandbox.host_interface.clone().unwrap();
    assert!(Path::new("/sys/class/net").join(&veth).exists());
    let pod_dir = node.data_dir().join("runtime/pods").join(uid);
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mountinfo.contains(&pod_dir.display().to_string()),
        "namespaces pinned"
    );
    assert!(iptables_rules().contains(&format!("--dport {host_port}")));
    // The hostPort is taken: another pod asking for it is refused, and
    // leaves nothing.
    let error = node
        .runtime
        .create_sandbox(&SandboxSpec {
            uid: "0a16bbbb-1111-4111-8111-000000000006".into(),
            name: "rival".into(),
            namespace: "default".into(),
            hostname: None,
            host_network: false,
            port_mappings: vec![PortMapping {
                host_port,
                container_port: 8080,
                protocol: Protocol::Tcp,
            }],
        })
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!("pod network: host port {host_port}/tcp is already published on this node")
    );
    assert!(
        !node
            .data_dir()
            .join("runtime/pods/0a16bbbb-1111-4111-8111-000000000006")
            .exists()
    );
    assert_eq!(node.runtime.list().unwrap().len(), 1);
    let pids: Vec<i32> = ids
        .iter()
        .map(|id| match node.runtime.container_status(id).unwrap() {
            ContainerStatus::Running { pid, .. } => pid,
            other => panic!("{other:?}"),
        })
        .collect();

    node.runtime.remove_sandbox(uid).unwrap();

    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} left"
        );
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(&node.data_dir().display().to_string()),
        "a mount under the data directory was left"
    );
    assert!(!pod_dir.exists(), "the pod's directory was left");
    assert!(
        !Path::new("/sys/class/net").join(&veth).exists(),
        "veth {veth} left"
    );
    for root in [
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/cpuacct",
        "/sys/fs/cgroup",
    ] {
        assert!(
            !find_dir_named(Path::new(root), &format!("pod-{uid}"), 4),
            "the pod's cgroup was left under {root}"
        );
    }
    for id in &ids {
        assert!(
            !node
                .data_dir()
                .join("runtime/containers")
                .join(&id.0)
                .exists()
        );
        for root in [
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/cpu",
            "/sys/fs/cgroup",
        ] {
            assert!(
                !find_dir_named(Path::new(root), &id.0, 4),
                "cgroup {id} left under {root}"
            );
        }
    }
    assert!(
        !iptables_rules().contains(&format!("--dport {host_port}")),
        "DNAT rules left"
    );
    let leases: Vec<_> = fs::read_dir(node.data_dir().join("runtime/pod-network/leases"))
        .unwrap()
        .flatten()
        .collect();
    assert!(leases.is_empty(), "address leases left: {leases:?}");
    assert!(node.runtime.list().unwrap().is_empty());
    // Removing again is fine.
    node.runtime.remove_sandbox(uid).unwrap();
}

#[test]
fn images_by_pull_policy_and_signature() {
    require_container_support();
    let shoal = Shoal::new();
    shoal.import_busybox("busybox");
    let runtime = open_runtime(&shoal, 18);
    let image = runtime
        .ensure_image("busybox", PullPolicy::IfNotPresent, None, true)
        .unwrap();
    assert!(image.id.starts_with("sha256:"));
    assert_eq!(image.cmd, ["/bin/sh", "-c", "echo default command"]);
    assert_eq!(image.working_dir.as_deref(), Some("/tmp"));
    assert!(
        image
            .env
            .contains(&"GREETING=hello from the image".to_string())
    );
    let error = runtime
        .ensure_image("busybox", PullPolicy::Never, None, false)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("image busybox: signature check failed: "),
        "{error}"
    );
    let error = runtime
        .ensure_image("nothere:1", PullPolicy::Never, None, true)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "image nothere:1 is not present on this node and its pull policy is Never"
    );
    // Nothing listens on port 9 of loopback: the pull fails, and says so.
    let error = runtime
        .ensure_image("127.0.0.1:9/nothere:1", PullPolicy::Always, None, true)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("cannot pull image 127.0.0.1:9/nothere:1: "),
        "{error}"
    );
}

#[test]
fn a_host_network_pod_has_the_hosts_network_and_hostname_and_its_own_ipc() {
    let node = Node::new(19);
    let uid = "0a19aaaa-1111-4111-8111-000000000009";
    let info = node
        .runtime
        .create_sandbox(&SandboxSpec {
            uid: uid.to_string(),
            name: "on-the-host".into(),
            namespace: "kube-system".into(),
            hostname: None,
            host_network: true,
            port_mappings: Vec::new(),
        })
        .unwrap();
    assert_eq!(info.ip, None);
    let id = node.start(uid, &node.container("agent", "exec sleep 1000"));
    let host_name = nix::unistd::gethostname().unwrap();
    assert_eq!(
        exec(&node, &id, &["hostname"]).1.trim(),
        host_name.to_str().unwrap()
    );
    let namespace =
        |kind: &str| exec(&node, &id, &["readlink", &format!("/proc/self/ns/{kind}")]).1;
    let host = |kind: &str| {
        fs::read_link(format!("/proc/self/ns/{kind}"))
            .unwrap()
            .display()
            .to_string()
    };
    assert_eq!(namespace("net").trim(), host("net"));
    assert_eq!(namespace("uts").trim(), host("uts"));
    assert_ne!(namespace("ipc").trim(), host("ipc"));
    let sandbox = node.runtime.list().unwrap().remove(0);
    assert!(sandbox.host_network);
    assert_eq!(sandbox.host_interface, None);
    node.runtime.remove_sandbox(uid).unwrap();
    assert!(!node.data_dir().join("runtime/pods").join(uid).exists());
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&node.data_dir().display().to_string()));
}

/// Reads attach output until `wanted` shows (or the stream ends); returns
/// all of it.
fn read_attached_until(session: &mut runtime::pod::AttachSession, wanted: &str) -> String {
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains(wanted) && Instant::now() < deadline {
        match session.read_output().unwrap() {
            Some((_, data)) => seen.push_str(&String::from_utf8_lossy(&data)),
            None => break,
        }
    }
    seen
}

#[test]
fn attach_feeds_stdin_and_drives_a_terminal() {
    let node = Node::new(20);
    let uid = "0a20aaaa-1111-4111-8111-000000000010";
    node.sandbox(uid, "interactive", Vec::new());

    // stdin without a terminal: cat echoes what it is sent, and ends when
    // stdin is closed.
    let mut spec = node.container("cat", "");
    spec.args = vec!["cat".into()];
    spec.stdin = true;
    let cat = node.start(uid, &spec);
    let mut session = node.runtime.attach(&cat).unwrap();
    session.write_stdin(b"ping\n").unwrap();
    let seen = read_attached_until(&mut session, "ping\n");
    assert_eq!(seen, "ping\n");
    session.close_stdin().unwrap();
    match exited(&node, &cat) {
        ContainerStatus::Exited {
            exit_code: 0,
            reason: ExitReason::Completed,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    assert!(
        session.read_output().unwrap().is_none(),
        "the stream ends with the container"
    );
    let log = fs::read_to_string(node.runtime.log_path(&cat)).unwrap();
    assert!(log.contains(" stdout F ping"), "{log}");
    assert!(matches!(
        node.runtime.attach(&cat),
        Err(PodError::ContainerNotRunning { .. })
    ));

    // stdinOnce: the first session to end closes stdin.
    let mut spec = node.container("once", "");
    spec.args = vec!["cat".into()];
    spec.stdin = true;
    let once = node
        .runtime
        .start_container_with(uid, &spec, &StartOptions { stdin_once: true })
        .unwrap();
    let mut session = node.runtime.attach(&once).unwrap();
    session.write_stdin(b"only\n").unwrap();
    assert_eq!(read_attached_until(&mut session, "only\n"), "only\n");
    drop(session);
    match exited(&node, &once) {
        ContainerStatus::Exited { exit_code: 0, .. } => {}
        other => panic!("{other:?}"),
    }

    // A terminal: an interactive shell, its size set by resize.
    let mut spec = node.container("shell", "");
    spec.args = vec!["sh".into()];
    spec.stdin = true;
    spec.tty = true;
    let shell = node.start(uid, &spec);
    let mut session = node.runtime.attach(&shell).unwrap();
    session.resize(100, 40).unwrap();
    // The resize is applied by the monitor's reader of this connection;
    // the command goes after it on the same connection, so in order.
    session
        .write_stdin(b"busybox stty size; test -t 0 && echo marker-$((40+2))\n")
        .unwrap();
    let seen = read_attached_until(&mut session, "marker-42");
    assert!(seen.contains("40 100"), "{seen:?}");
    assert!(seen.contains("marker-42"), "{seen:?}");
    session.write_stdin(b"exit 4\n").unwrap();
    match exited(&node, &shell) {
        ContainerStatus::Exited { exit_code: 4, .. } => {}
        other => panic!("{other:?}"),
    }
    let log = fs::read_to_string(node.runtime.log_path(&shell)).unwrap();
    assert!(log.contains("marker-42"), "{log}");
}

/// Set in the child process of the next test: the data directory and image
/// the child, playing the agent, uses.
const AGENT_ROLE_ENV: &str = "SHOAL_POD_TEST_AGENT";

const AGENT_TEST: &str = "containers_outlive_the_agent_process_that_started_them";

/// The agent's part: create a sandbox and a container, print their ids,
/// and exit (the process ends with the test).
fn play_the_agent(setting: &str) {
    let (data_dir, image_id) = setting.split_once('\n').unwrap();
    let runtime = open_runtime_at(Path::new(data_dir), 21);
    let uid = "0a21aaaa-1111-4111-8111-000000000011";
    runtime
        .create_sandbox(&SandboxSpec {
            uid: uid.into(),
            name: "survivor".into(),
            namespace: "default".into(),
            hostname: None,
            host_network: false,
            port_mappings: Vec::new(),
        })
        .unwrap();
    let id = runtime
        .start_container(
            uid,
            &ContainerSpec {
                name: "app".into(),
                image: image_id.into(),
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    "trap 'echo bye; exit 5' TERM; echo ready; while true; do sleep 0.1; done"
                        .into(),
                ],
                ..ContainerSpec::default()
            },
        )
        .unwrap();
    // Ready once the trap is set, so the SIGTERM to come is the app's.
    let log = runtime.log_path(&id);
    eventually("the app to be ready", || {
        fs::read_to_string(&log).is_ok_and(|text| text.contains("ready"))
    });
    let ContainerStatus::Running { pid, .. } = runtime.container_status(&id).unwrap() else {
        panic!("not running");
    };
    println!("agent-started {id} {pid}");
}

#[test]
fn containers_outlive_the_agent_process_that_started_them() {
    if let Ok(setting) = std::env::var(AGENT_ROLE_ENV) {
        play_the_agent(&setting);
        return;
    }
    let node = Node::new(21);
    // The agent: this test binary again, running only this test in the
    // agent's role; it has exited when `output` returns.
    let agent = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", AGENT_TEST, "--nocapture", "--test-threads=1"])
        .env(
            AGENT_ROLE_ENV,
            format!("{}\n{}", node.data_dir().display(), node.image_id),
        )
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&agent.stdout);
    assert!(
        agent.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&agent.stderr)
    );
    let line = stdout
        .lines()
        // libtest may print its "test … ... " before the line.
        .find_map(|line| line.split_once("agent-started ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("{stdout}"));
    let (id, pid) = line.split_once(' ').unwrap();
    let (id, pid) = (ContainerId(id.to_string()), pid.parse::<i32>().unwrap());

    // A new agent finds the container running, the same process, and its
    // monitor, which outlived the old agent, records its exit.
    let sandboxes = node.runtime.list().unwrap();
    let container = sandboxes[0]
        .containers
        .iter()
        .find(|container| container.id == id)
        .unwrap();
    assert!(
        matches!(container.status, ContainerStatus::Running { pid: running, .. } if running == pid),
        "{:?}",
        container.status
    );
    node.runtime
        .stop_container(&id, Duration::from_secs(10))
        .unwrap();
    match node.runtime.container_status(&id).unwrap() {
        ContainerStatus::Exited {
            exit_code: 5,
            reason: ExitReason::Error,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    let log = fs::read_to_string(node.runtime.log_path(&id)).unwrap();
    assert!(log.contains("stdout F bye"), "{log}");
}

/// A `Key:\tvalue` line of /proc/PID/status.
fn proc_status(pid: i32, key: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn running_pid(node: &Node, id: &ContainerId) -> i32 {
    match node.runtime.container_status(id).unwrap() {
        ContainerStatus::Running { pid, .. } => pid,
        other => panic!("{other:?}"),
    }
}

fn effective_capabilities(pid: i32) -> u64 {
    u64::from_str_radix(&proc_status(pid, "CapEff"), 16).unwrap()
}

#[test]
fn security_context_users_capabilities_privileged_and_mounts() {
    let node = Node::new(22);
    let uid = "0a22aaaa-1111-4111-8111-000000000012";
    node.sandbox(uid, "secured", Vec::new());
    const CAP_CHOWN: u64 = 1 << 0;
    const CAP_NET_ADMIN: u64 = 1 << 12;
    const CAP_SYS_ADMIN: u64 = 1 << 21;

    // Root with one capability added and one dropped.
    let mut spec = node.container("caps", "exec sleep 1000");
    spec.capabilities_add = vec!["NET_ADMIN".into()];
    spec.capabilities_drop = vec!["CAP_CHOWN".into()];
    let caps = node.start(uid, &spec);
    let effective = effective_capabilities(running_pid(&node, &caps));
    assert_ne!(effective & CAP_NET_ADMIN, 0, "{effective:x}");
    assert_eq!(effective & CAP_CHOWN, 0, "{effective:x}");
    assert_eq!(effective & CAP_SYS_ADMIN, 0, "{effective:x}");
    let mut bad = node.container("bad-caps", "true");
    bad.capabilities_add = vec!["CAP_FLY".into()];
    let error = node
        .runtime
        .start_container(uid, &bad)
        .unwrap_err()
        .to_string();
    assert_eq!(error, "invalid capability: unknown capability \"CAP_FLY\"");

    // A user, a group and supplemental groups by number; non-root keeps
    // no capabilities.
    let mut spec = node.container("user", "exec sleep 1000");
    spec.user = Some(1000);
    spec.group = Some(2000);
    spec.supplemental_groups = vec![3000];
    let user = node.start(uid, &spec);
    let pid = running_pid(&node, &user);
    assert!(proc_status(pid, "Uid").starts_with("1000\t1000"));
    assert!(proc_status(pid, "Gid").starts_with("2000\t2000"));
    assert_eq!(proc_status(pid, "Groups"), "2000 3000");
    assert_eq!(effective_capabilities(pid), 0);

    // Privileged: every capability and the host's devices.
    let mut spec = node.container("privileged", "exec sleep 1000");
    spec.privileged = true;
    let privileged = node.start(uid, &spec);
    let effective = effective_capabilities(running_pid(&node, &privileged));
    assert_ne!(effective & CAP_SYS_ADMIN, 0, "{effective:x}");
    assert!(
        Path::new("/dev/kmsg").exists(),
        "the test looks for the host's /dev/kmsg"
    );
    assert_eq!(exec(&node, &privileged, &["test", "-c", "/dev/kmsg"]).0, 0);
    assert_eq!(exec(&node, &caps, &["test", "-e", "/dev/kmsg"]).0, 1);

    // A read-only host path mount and a read-only root.
    let volume = tempfile::tempdir().unwrap();
    fs::write(volume.path().join("config"), "from-the-agent\n").unwrap();
    let mut spec = node.container("mounts", "exec sleep 1000");
    spec.read_only_rootfs = true;
    spec.mounts = vec![runtime::pod::Mount {
        host_path: volume.path().to_path_buf(),
        container_path: "/etc/config".into(),
        read_only: true,
    }];
    spec.working_dir = Some("/etc/config".into());
    spec.env = vec![("GREETING".into(), "from-the-pod".into())];
    let mounts = node.start(uid, &spec);
    assert_eq!(
        exec(&node, &mounts, &["cat", "config"]),
        (0, "from-the-agent\n".to_string())
    );
    assert_eq!(exec(&node, &mounts, &["touch", "/etc/config/new"]).0, 1);
    assert_eq!(exec(&node, &mounts, &["touch", "/new"]).0, 1);
    // The spec's env over the image's.
    assert_eq!(
        exec(&node, &mounts, &["sh", "-c", "echo $GREETING $HOSTNAME"]).1,
        "from-the-pod secured\n"
    );
    assert!(!volume.path().join("new").exists());
}
