//! The hostile-workload suite: a static probe (tests/hostile/probe.c) run as
//! a container and as a pod tries each way out it knows (the host's
//! processes, mounts, kernel modules, /proc's triggers and memory, device
//! nodes, ptrace, new namespaces, capabilities, setuid, a fork bomb, `..`
//! and symlinks in volume paths). Every attempt must fail and the host must
//! be as it was. Controls (seccomp `unconfined`, `no-new-privileges=false`)
//! show the probe does see an attempt that works, so the suite is not
//! vacuous.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::pods::{Node, eventually, exited};
use common::{Entry, Shoal, busybox_entries, layer_tar, write_oci_layout};
use runtime::pod::{
    ContainerSpec, Ipv4Cidr, PodNetwork, PodRuntime, PodRuntimeOptions, PullPolicy, Seccomp,
};

/// Every attempt `probe all` makes; each must be reported denied.
const ATTEMPTS: &[&str] = &[
    "kill-host-process",
    "ptrace-host-process",
    "write-host-marker-via-proc-1-root",
    "write-host-marker",
    "mount-proc",
    "mount-tmpfs",
    "bind-mount-root",
    "remount-root",
    "init-module",
    "finit-module",
    "write-sysrq-trigger",
    "read-kcore",
    "write-proc-sys",
    "mknod-block-device",
    "mknod-dev-mem",
    "unshare-user",
    "unshare-mount",
    "unshare-net",
    "clone-new-pid",
    "capset-sys-admin",
    "bpf",
    "open-by-handle",
    "reboot",
    "socket-vsock",
];

/// The calls the default seccomp profile itself refuses (EPERM), whatever
/// else would have.
const REFUSED_BY_SECCOMP: &[&str] = &[
    "mount-proc",
    "init-module",
    "finit-module",
    "unshare-user",
    "unshare-net",
    "clone-new-pid",
    "bpf",
    "open-by-handle",
    "reboot",
    "socket-vsock",
];

const EPERM: &str = "1";
const EAGAIN: &str = "11";

/// Compiles the probe, static, into `dir`.
fn build_probe(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/probe.c");
    let binary = dir.join("probe");
    let output = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("cannot run gcc: run scripts/install-deps (gcc and libc6-dev)");
    assert!(
        output.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    binary
}

/// The busybox image with the probe at /probe, a setuid-root copy at
/// /probe-setuid, and `/escape`, a link that climbs out of the root.
fn hostile_layer(probe: &Path, escape_target: &str) -> Vec<u8> {
    let bytes = fs::read(probe).unwrap();
    let mut entries = busybox_entries();
    entries.push(Entry::File {
        path: "probe".into(),
        bytes: bytes.clone(),
        mode: 0o755,
    });
    entries.push(Entry::File {
        path: "probe-setuid".into(),
        bytes,
        mode: 0o4755,
    });
    entries.push(Entry::Symlink {
        path: "escape".into(),
        target: escape_target.into(),
    });
    entries.push(Entry::Dir { path: "mnt".into() });
    layer_tar(&entries)
}

fn import_hostile(shoal: &Shoal, probe: &Path, escape_target: &str) {
    let layout = shoal.data_dir.path().join("layout-hostile");
    write_oci_layout(&layout, "latest", &[hostile_layer(probe, escape_target)]);
    shoal.ok(&[
        "image",
        "import",
        &format!("oci:{}:latest", layout.display()),
        "--name",
        "hostile",
    ]);
}

/// What of the host an escape would change: the marker file, the mounts
/// at the places the probe mounts, the kernel's modules and sysrq state.
#[derive(Debug, PartialEq, Eq)]
struct HostState {
    marker: String,
    marker_modified: std::time::SystemTime,
    root_mounts: Vec<String>,
    modules: Option<String>,
    sysrq: Option<String>,
}

fn host_state(marker: &Path) -> HostState {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root_mounts = mountinfo
        .lines()
        .filter(|line| {
            let mount_point = line.split(' ').nth(4).unwrap_or("");
            matches!(mount_point, "/" | "/mnt" | "/proc" | "/sys" | "/dev")
        })
        .map(str::to_string)
        .collect();
    HostState {
        marker: fs::read_to_string(marker).unwrap(),
        marker_modified: fs::metadata(marker).unwrap().modified().unwrap(),
        root_mounts,
        modules: fs::read_to_string("/proc/modules").ok(),
        sysrq: fs::read_to_string("/proc/sys/kernel/sysrq").ok(),
    }
}

/// Checks the probe's report: every attempt there, every one denied, the
/// seccomp-refused ones with EPERM.
fn assert_all_denied(report: &str) {
    for attempt in ATTEMPTS {
        let line = report
            .lines()
            .find(|line| line.split_whitespace().any(|word| word == *attempt))
            .unwrap_or_else(|| panic!("no report of {attempt} in:\n{report}"));
        assert!(
            line.contains(&format!("{attempt} denied")),
            "{attempt} got through: {line}\n{report}"
        );
    }
    for attempt in REFUSED_BY_SECCOMP {
        assert!(
            report.contains(&format!("{attempt} denied {EPERM}")),
            "{attempt} not refused with EPERM:\n{report}"
        );
    }
    assert!(!report.contains("ESCAPED"), "{report}");
}

/// `run --rm --net none FLAGS hostile -- COMMAND`'s output; it must succeed.
fn run_output(shoal: &Shoal, flags: &[&str], command: &[&str]) -> String {
    let mut args = vec!["run", "--rm", "--insecure-options=image", "--net", "none"];
    args.extend(flags);
    args.push("hostile");
    args.push("--");
    args.extend(command);
    let output = shoal.run(&args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "shoal-runtime {args:?} failed ({:?}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn a_container_fails_every_escape_and_leaves_the_host_unchanged() {
    common::require_container_support();
    let shoal = Shoal::new();
    let work = tempfile::tempdir().unwrap();
    let probe = build_probe(work.path());
    let marker = work.path().join("marker");
    fs::write(&marker, "host marker\n").unwrap();
    let outside = work.path().join("outside");
    fs::create_dir(&outside).unwrap();
    // A link that climbs far above the root, then down to a host directory.
    let escape_target = format!("../../../../../../../..{}", outside.display());
    import_hostile(&shoal, &probe, &escape_target);
    let before = host_state(&marker);
    let host_pid = std::process::id().to_string();
    let marker_text = marker.display().to_string();

    let report = run_output(&shoal, &[], &["/probe", "all", &host_pid, &marker_text]);
    assert_all_denied(&report);

    // Masked paths read empty; read-only ones refuse writes.
    let masked = run_output(
        &shoal,
        &[],
        &[
            "sh",
            "-c",
            "ls -A /sys/firmware | wc -l; cat /proc/keys | wc -c; \
             (echo 1 > /proc/sys/kernel/ns_last_pid) 2>/dev/null && echo writable || echo read-only",
        ],
    );
    assert_eq!(masked, "0\n0\nread-only\n");

    // A fork bomb stops at the pids limit, with EAGAIN.
    let bomb = run_output(
        &shoal,
        &["--pids-limit", "64"],
        &["/probe", "forkbomb", "100000"],
    );
    let fields: Vec<&str> = bomb.split_whitespace().collect();
    assert!(
        matches!(fields.as_slice(), ["forkbomb", "stopped", n, errno] if n.parse::<u32>().unwrap() < 64 && *errno == EAGAIN),
        "{bomb}"
    );

    // setuid gains nothing under no_new_privs; the control (no_new_privs
    // off, no filter) shows the probe would see it.
    let setuid = run_output(&shoal, &["--user", "65534"], &["/probe-setuid", "whoami"]);
    assert_eq!(setuid, "euid 65534\n");
    let control = run_output(
        &shoal,
        &[
            "--user",
            "65534",
            "--security-opt",
            "no-new-privileges=false",
            "--security-opt",
            "seccomp=unconfined",
        ],
        &["/probe-setuid", "whoami"],
    );
    assert_eq!(control, "euid 0\n");

    // Unconfined, the one call that needs no capability gets through: the
    // default profile is what refuses it above.
    let unconfined = run_output(
        &shoal,
        &["--security-opt", "seccomp=unconfined"],
        &["/probe", "unshare-user"],
    );
    assert_eq!(unconfined, "unshare-user ESCAPED\n");

    // `..` in a volume's container path is refused; a link in the image
    // that climbs out lands inside the container's root, not the host's.
    let volume = work.path().join("volume");
    fs::create_dir(&volume).unwrap();
    let refused = shoal.run(&[
        "run",
        "--rm",
        "--insecure-options=image",
        "-v",
        &format!("{}:/mnt/../../etc", volume.display()),
        "hostile",
        "--",
        "true",
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("'..'"), "{stderr}");
    let planted = format!("{}:/escape/planted", volume.display());
    run_output(&shoal, &["-v", &planted], &["true"]);
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

    // A profile file: mkdir refused with EACCES, the rest allowed.
    let profile = work.path().join("profile.json");
    fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .unwrap();
    let seccomp_option = format!("seccomp={}", profile.display());
    let custom = run_output(
        &shoal,
        &["--security-opt", &seccomp_option],
        &["sh", "-c", "mkdir /tmp/d 2>&1; echo done"],
    );
    assert!(
        custom.contains("Permission denied") && custom.ends_with("done\n"),
        "{custom}"
    );

    assert_eq!(host_state(&marker), before);
}

#[test]
fn a_pod_fails_every_escape_and_its_fork_bomb_stops_at_the_pod_limit() {
    let mut node = Node::new(30);
    // The pod's limit: the agent's --pod-pids-limit.
    node.runtime = PodRuntime::open_with(
        node.data_dir(),
        PodNetwork {
            bridge: "shpt30".to_string(),
            pod_cidr: Ipv4Cidr::new(std::net::Ipv4Addr::new(10, 231, 30, 0), 24).unwrap(),
            cluster_cidr: "10.231.0.0/16".parse().unwrap(),
            mtu: None,
        },
        PodRuntimeOptions {
            executable: Some(env!("CARGO_BIN_EXE_shoal-runtime").into()),
            insecure_registries: Vec::new(),
            log_max_bytes: None,
            pod_pids_limit: Some(48),
        },
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let probe = build_probe(work.path());
    let marker = work.path().join("marker");
    fs::write(&marker, "host marker\n").unwrap();
    import_hostile(&node.shoal, &probe, "/");
    let image = node
        .runtime
        .ensure_image("hostile", PullPolicy::Never, None, true)
        .unwrap();
    let before = host_state(&marker);
    node.sandbox("hostile-pod", "hostile", Vec::new());
    let host_pid = std::process::id().to_string();

    let run = |name: &str, args: &[&str], seccomp: Seccomp, capabilities_add: &[&str]| {
        let spec = ContainerSpec {
            name: name.to_string(),
            image: image.id.clone(),
            args: args.iter().map(|arg| arg.to_string()).collect(),
            seccomp,
            capabilities_add: capabilities_add.iter().map(|cap| cap.to_string()).collect(),
            ..ContainerSpec::default()
        };
        let id = node.start("hostile-pod", &spec);
        exited(&node, &id);
        let log_path = node.runtime.log_path(&id);
        let mut log = String::new();
        eventually("the probe's log", || {
            log = fs::read_to_string(&log_path).unwrap_or_default();
            !log.is_empty()
        });
        // CRI records: `TIME STREAM TAG TEXT`; the text is what counts.
        log.lines()
            .filter_map(|line| line.splitn(4, ' ').nth(3))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let marker_text = marker.display().to_string();
    let report = run(
        "probe",
        &["/probe", "all", &host_pid, &marker_text],
        Seccomp::RuntimeDefault,
        &[],
    );
    assert_all_denied(&report);
    // With CAP_MKNOD granted, the devices cgroup is what refuses the nodes.
    let report = run(
        "probe-mknod",
        &["/probe", "all", &host_pid, &marker_text],
        Seccomp::RuntimeDefault,
        &["MKNOD"],
    );
    assert_all_denied(&report);
    let bomb = run(
        "bomb",
        &["/probe", "forkbomb", "100000"],
        Seccomp::RuntimeDefault,
        &[],
    );
    let fields: Vec<&str> = bomb.split_whitespace().collect();
    assert!(
        matches!(fields.as_slice(), ["forkbomb", "stopped", n, errno] if n.parse::<u32>().unwrap() < 48 && *errno == EAGAIN),
        "{bomb}"
    );
    let control = run(
        "control",
        &["/probe", "unshare-user"],
        Seccomp::Unconfined,
        &[],
    );
    assert_eq!(control, "unshare-user ESCAPED");
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(host_state(&marker), before);
}
