//! Containers end to end, as root: isolation (processes, files, network),
//! limits (memory, CPU), exit codes, signatures, the run flags, detached
//! containers with ps/logs/stop/rm, bad input, and that nothing is left
//! behind (mounts, cgroups, container state).

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::{
    Compression, Entry, Shoal, busybox_entries, layer_tar, require_container_support,
    write_oci_layout, write_oci_layout_compressed,
};

const INSECURE: &str = "--insecure-options=image";

fn stdout_of(shoal: &Shoal, args: &[&str]) -> String {
    shoal.ok(args)
}

/// No mount under the data directory, no network lease, and no shoal
/// cgroup of these containers, may outlive them.
fn assert_nothing_left(shoal: &Shoal) {
    let data_dir = shoal.data_dir.path().to_str().unwrap().to_string();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(&data_dir),
        "a mount under {data_dir} was left behind"
    );
    // No network lease outlives its container's run.
    if let Ok(leases) = fs::read_dir(shoal.runtime_dir().join("network/leases")) {
        let leases: Vec<_> = leases.flatten().map(|entry| entry.file_name()).collect();
        assert!(leases.is_empty(), "network leases were left: {leases:?}");
    }
    let containers = fs::read_dir(shoal.runtime_dir().join("containers")).unwrap();
    for entry in containers.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        for root in [
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/cpu",
            "/sys/fs/cgroup",
        ] {
            let found = find_dir_named(std::path::Path::new(root), &id, 4);
            assert!(!found, "cgroup {id} was left behind under {root}");
        }
    }
}

fn find_dir_named(dir: &std::path::Path, name: &str, depth: usize) -> bool {
    if depth == 0 {
        return false;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        entry.file_type().is_ok_and(|kind| kind.is_dir())
            && (entry.file_name() == name || find_dir_named(&entry.path(), name, depth - 1))
    })
}

#[test]
fn runs_the_image_command_with_its_env_and_workdir_and_exit_codes() {
    require_container_support();
    let shoal = Shoal::new();
    shoal.import_busybox("busybox");
    assert_eq!(
        stdout_of(&shoal, &["run", "--rm", INSECURE, "busybox"]),
        "default command\n"
    );
    let output = stdout_of(
        &shoal,
        &[
            "run",
            "--rm",
            INSECURE,
            "busybox",
            "--",
            "sh",
            "-c",
            "echo $GREETING; pwd; echo $$",
        ],
    );
    assert_eq!(output, "hello from the image\n/tmp\n1\n");
    let output = shoal.run(&[
        "run", "--rm", INSECURE, "busybox", "--", "sh", "-c", "exit 42",
    ]);
    assert_eq!(output.status.code(), Some(42));
    assert_nothing_left(&shoal);
}

#[test]
fn overrides_env_user_workdir_hostname_volumes_and_readonly_rootfs() {
    require_container_support();
    let shoal = Shoal::new();
    shoal.import_busybox("busybox");
    let volume = tempfile::tempdir().unwrap();
    fs::write(volume.path().join("shared"), "from the host\n").unwrap();
    let spec = format!("{}:/data:ro", volume.path().display());
    let output = stdout_of(
        &shoal,
        &[
            "run",
            "--rm",
            INSECURE,
            "-e",
            "GREETING=overridden",
            "-e",
            "EXTRA=1",
            "--user",
            "nobody",
            "--workdir",
            "/data",
            "--hostname",
            "box",
            "-v",
            &spec,
            "--readonly-rootfs",
            "busybox",
            "--",
            "sh",
            "-c",
            "echo $GREETING $EXTRA; id -u; pwd; hostname; cat shared; touch /data/x 2>&1 || echo vol-ro; touch /x 2>&1 || echo root-ro; grep CapEff /proc/self/status",
        ],
    );
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(
        lines[..5],
        ["overridden 1", "65534", "/data", "box", "from the host"],
        "{output}"
    );
    assert!(
        output.contains("vol-ro") && output.contains("root-ro"),
        "{output}"
    );
    assert!(output.contains("CapEff:\t0000000000000000"), "{output}");
    // A writable volume writes through to the host.
    let spec = format!("{}:/data", volume.path().display());
    shoal.ok(&[
        "run",
        "--rm",
        INSECURE,
        "-v",
        &spec,
        "busybox",
        "--",
        "sh",
        "-c",
        "echo hi > /data/written",
    ]);
    assert_eq!(
        fs::read_to_string(volume.path().join("written")).unwrap(),
        "hi\n"
    );
    assert_nothing_left(&shoal);
}

#[test]
fn containers_are_isolated_from_host_processes_files_and_network() {
    require_container_support();
    let shoal = Shoal::new();
    shoal.import_busybox("busybox");
    let marker = shoal.data_dir.path().join("host-only-marker");
    fs::write(&marker, "secret").unwrap();
    let script = format!(
        "ls /proc | grep -c '^[0-9]'; test -e {} && echo sees-host-file; ip -o link | wc -l; grep -c Cap /proc/1/status; echo $$",
        marker.display()
    );
    let output = stdout_of(
        &shoal,
        &[
            "run",
            "--rm",
            INSECURE,
            "--net=none",
            "busybox",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let lines: Vec<&str> = output.lines().collect();
    // Only the shell and the `ls` it runs (and grep) are visible.
    assert!(
        lines[0].parse::<u32>().unwrap() <= 3,
        "container sees host processes: {output}"
    );
    assert!(!output.contains("sees-host-file"), "{output}");
    assert_eq!(lines[1], "1", "only loopback with --net=none: {output}");
    // The container's root capabilities exclude CAP_SYS_ADMIN (bit 21).
    let caps = stdout_of(
        &shoal,
        &[
            "run",
            "--rm",
            INSECURE,
            "busybox",
            "--",
            "sh",
            "-c",
            "grep CapEff /proc/self/status",
        ],
    );
    let mask = u64::from_str_radix(caps.trim().rsplit('\t').next().unwrap(), 16).unwrap();
    assert_eq!(mask & (1 << 21), 0, "CAP_SYS_ADMIN kept: {caps}");
    // Mounting (which needs CAP_SYS_ADMIN) is refused.
    let output = shoal.run(&[
        "run",
        "--rm",
        INSECURE,
        "busybox",
        "--",
        "sh",
        "-c",
        "mount -t tmpfs none /tmp",
    ]);
    assert_ne!(output.status.code(), Some(0));

    // A link made on the host for this test (counting the host's links
    // would race with other tests' containers coming and going).
    // (A bridge: this kernel has no dummy driver.)
    let dummy = format!("shtest{:06x}", rand::random::<u32>() & 0xff_ffff);
    let made = std::process::Command::new("ip")
        .args(["link", "add", &dummy, "type", "bridge"])
        .status()
        .unwrap();
    assert!(made.success(), "cannot make a link on the host");
    let links_seen = |net: &str| {
        shoal.ok(&[
            "run",
            "--rm",
            INSECURE,
            net,
            "busybox",
            "--",
            "sh",
            "-c",
            "ip -o link",
        ])
    };
    let host_view = links_seen("--net=host");
    let none_view = links_seen("--net=none");
    let _ = std::process::Command::new("ip")
        .args(["link", "del", &dummy])
        .status();
    assert!(
        host_view.contains(&format!(": {dummy}:")),
        "--net=host shares the host's interfaces: {host_view}"
    );
    assert!(!none_view.contains(&dummy), "{none_view}");
    assert_nothing_left(&shoal);
}

#[test]
fn overlay_honours_whiteouts_and_keeps_image_layers_untouched() {
    require_container_support();
    let shoal = Shoal::new();
    let mut base = busybox_entries();
    base.push(Entry::Dir { path: "opt".into() });
    base.push(Entry::File {
        path: "opt/old".into(),
        bytes: b"old".to_vec(),
        mode: 0o644,
    });
    base.push(Entry::File {
        path: "etc/removed".into(),
        bytes: b"x".to_vec(),
        mode: 0o644,
    });
    let top = vec![
        Entry::Dir { path: "etc".into() },
        Entry::File {
            path: "etc/.wh.removed".into(),
            bytes: Vec::new(),
            mode: 0o644,
        },
        Entry::Dir { path: "opt".into() },
        Entry::File {
            path: "opt/.wh..wh..opq".into(),
            bytes: Vec::new(),
            mode: 0o644,
        },
        Entry::File {
            path: "opt/new".into(),
            bytes: b"new".to_vec(),
            mode: 0o644,
        },
    ];
    let layout = shoal.data_dir.path().join("layout");
    write_oci_layout(&layout, "latest", &[layer_tar(&base), layer_tar(&top)]);
    shoal.ok(&[
        "image",
        "import",
        &format!("oci:{}", layout.display()),
        "--name",
        "layered",
    ]);
    let output = stdout_of(
        &shoal,
        &[
            "run",
            "--rm",
            INSECURE,
            "layered",
            "--",
            "sh",
            "-c",
            "ls /opt; test -e /etc/removed || echo removed; rm /bin/true; echo ok",
        ],
    );
    assert_eq!(output, "new\nremoved\nok\n");
    // The deletion went to the container's upper layer, not the image.
    let output = stdout_of(
        &shoal,
        &[
            "run",
            "--rm",
            INSECURE,
            "layered",
            "--",
            "sh",
            "-c",
            "test -e /bin/true && echo intact",
        ],
    );
    assert_eq!(output, "intact\n");
}

#[test]
fn memory_limit_kills_and_reports_an_allocation_over_it() {
    require_container_support();
    let shoal = Shoal::new();
    shoal.import_busybox("busybox");
    // 64 MB of 'a's held in a shell variable, against a 32Mi limit.
    let output = shoal.run(&[
        "run",
        "--rm",
        INSECURE,
        "--memory=32Mi",
        "busybox",
        "--",
        "sh",
        "-c",
        "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo survived ${#x}",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(137), "{stderr}");
    assert!(
        stderr.contains("out of memory (limit 33554432 bytes)"),
        "{stderr}"
    );
    // Under the limit, the same work succeeds.
    let output = stdout_of(
        &shoal,
        &[
            "run",
            "--rm",
            INSECURE,
            "--memory=128M",
            "busybox",
            "--",
            "sh",
            "-c",
            "x=$(head -c 4000000 /dev/zero | tr '\\0' a); echo ${#x}",
        ],
    );
    assert_eq!(output.trim(), "4000000");
    assert_nothing_left(&shoal);
}

#[test]
fn cpu_limit_throttles_a_busy_loop_to_about_the_quota() {
    require_container_support();
    let shoal = Shoal::new();
    shoal.import_busybox("busybox");
    // Spin for 2 s of wall time, then print the CPU time used, in clock
    // ticks (100 per second): about 50 at a quarter of a core.
    let script = "end=$(( $(date +%s) + 2 )); while [ $(date +%s) -lt $end ]; do :; done; \
                  set -- $(cat /proc/$$/stat); echo $(( ${14} + ${15} + ${16} + ${17} ))";
    let started = Instant::now();
    let output = stdout_of(
        &shoal,
        &[
            "run",
            "--rm",
            INSECURE,
            "--cpu=250m",
            "busybox",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let wall_ticks = started.elapsed().as_secs_f64() * 100.0;
    let cpu_ticks: f64 = output.trim().parse().unwrap();
    // The quota is 25% of one core per 100 ms period; allow for the
    // partial periods at start and end.
    assert!(
        cpu_ticks <= wall_ticks * 0.25 * 1.3 + 5.0,
        "used {cpu_ticks} ticks in {wall_ticks:.0}: not throttled"
    );
    assert!(
        cpu_ticks >= wall_ticks * 0.05,
        "used only {cpu_ticks} ticks in {wall_ticks:.0}"
    );
    assert_nothing_left(&shoal);
}

#[test]
fn signatures_are_required_and_tampered_images_refused() {
    require_container_support();
    let shoal = Shoal::new();
    let manifest_hex = shoal.import_busybox("example.com/app:1");
    let keys = tempfile::tempdir().unwrap();
    let alice = keys.path().join("alice.pem");
    let mallory = keys.path().join("mallory.pem");
    shoal.ok(&["trust", "keygen", alice.to_str().unwrap()]);
    shoal.ok(&["trust", "keygen", mallory.to_str().unwrap()]);
    let run = ["run", "--rm", "example.com/app:1", "--", "true"];

    let error = shoal.fails(&run, 1);
    assert!(error.contains("has no signature"), "{error}");
    shoal.ok(&[
        "image",
        "sign",
        "example.com/app:1",
        "--key",
        mallory.to_str().unwrap(),
    ]);
    let error = shoal.fails(&run, 1);
    assert!(
        error.contains("no key is trusted for image example.com/app"),
        "{error}"
    );
    shoal.ok(&[
        "trust",
        "add",
        "--prefix",
        "example.com/app",
        &format!("{}.pub", alice.display()),
    ]);
    let error = shoal.fails(&run, 1);
    assert!(
        error.contains("signed only by keys not trusted for it"),
        "{error}"
    );
    shoal.ok(&[
        "image",
        "sign",
        "example.com/app:1",
        "--key",
        alice.to_str().unwrap(),
    ]);
    shoal.ok(&run);
    // Under another name, Alice's signature (for example.com/app) counts for nothing.
    shoal.ok(&[
        "image",
        "import",
        &format!(
            "oci:{}/layout-example.com-app-1:latest",
            shoal.data_dir.path().display()
        ),
        "--name",
        "example.com/other:1",
    ]);
    let error = shoal.fails(&["run", "--rm", "example.com/other:1", "--", "true"], 1);
    assert!(error.contains("has no signature"), "{error}");

    // A tampered layer is refused, even with --insecure-options=image.
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(shoal.runtime_dir().join("blobs/sha256").join(&manifest_hex)).unwrap(),
    )
    .unwrap();
    let layer_hex = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let layer_path = shoal.runtime_dir().join("blobs/sha256").join(layer_hex);
    let mut bytes = fs::read(&layer_path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&layer_path, bytes).unwrap();
    for args in [
        &run[..],
        &["run", "--rm", INSECURE, "example.com/app:1", "--", "true"][..],
    ] {
        let error = shoal.fails(args, 1);
        assert!(error.contains("is corrupt"), "{error}");
    }
    assert_nothing_left(&shoal);
}

#[test]
fn detached_containers_with_ps_logs_stop_and_rm() {
    require_container_support();
    let shoal = Shoal::new();
    shoal.import_busybox("busybox");
    let id = shoal.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        INSECURE,
        "--memory=64Mi",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo started; trap 'echo stopping; exit 3' TERM; while :; do sleep 0.05; done",
    ]);
    assert_eq!(id.trim().len(), 32);
    let error = shoal.fails(&["run", "-d", "--name", "web", INSECURE, "busybox"], 1);
    assert!(
        error.contains("a container named web already exists"),
        "{error}"
    );
    let stubborn = shoal.ok(&[
        "run", "-d", "--name", "stubborn", INSECURE, "busybox", "--", "sleep", "1000",
    ]);

    let ps: serde_json::Value =
        serde_json::from_str(&shoal.ok(&["ps", "--output", "json"])).unwrap();
    let rows = ps.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|row| row["status"] == "running"), "{ps}");
    // "Normal Linux processes": the app is visible on the host.
    let pid = rows[0]["pid"].as_i64().unwrap();
    assert!(
        fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .unwrap()
            .starts_with("sh\0")
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    while !shoal.ok(&["logs", "web"]).contains("started") {
        assert!(Instant::now() < deadline, "no log output");
        std::thread::sleep(Duration::from_millis(20));
    }
    let error = shoal.fails(&["rm", "web"], 1);
    assert!(error.contains("is running"), "{error}");

    shoal.ok(&["stop", "web"]);
    assert_eq!(shoal.ok(&["logs", "web"]), "started\nstopping\n");
    // sleep ignores SIGTERM as pid 1: SIGKILL after the grace period.
    let started = Instant::now();
    shoal.ok(&["stop", "--time", "1", stubborn.trim()]);
    assert!(started.elapsed() < Duration::from_secs(5));
    let ps: serde_json::Value =
        serde_json::from_str(&shoal.ok(&["ps", "--output", "json"])).unwrap();
    let statuses: Vec<&str> = ps
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["exited (3)", "exited (137)"]);

    // Images used by a container survive gc until the container is removed.
    shoal.ok(&["image", "rm", "busybox"]);
    assert!(
        fs::read_dir(shoal.runtime_dir().join("layers"))
            .unwrap()
            .count()
            > 0
    );
    assert_nothing_left(&shoal);
    shoal.ok(&["rm", "web", "stubborn"]);
    assert_eq!(shoal.ok(&["ps", "--output", "json"]).trim(), "[]");
    assert_eq!(
        fs::read_dir(shoal.runtime_dir().join("containers"))
            .unwrap()
            .count(),
        0
    );
    shoal.ok(&["image", "gc"]);
    assert_eq!(
        fs::read_dir(shoal.runtime_dir().join("layers"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn a_container_killed_by_a_signal_exits_128_plus_the_signal() {
    require_container_support();
    let shoal = Shoal::new();
    shoal.import_busybox("busybox");
    let mut child = shoal
        .command(&[
            "run", "--name", "victim", INSECURE, "busybox", "--", "sleep", "1000",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let pid = loop {
        let ps: serde_json::Value =
            serde_json::from_str(&shoal.ok(&["ps", "--output", "json"])).unwrap();
        if let Some(pid) = ps[0]["pid"].as_i64() {
            break pid;
        }
        assert!(Instant::now() < deadline, "container did not start");
        std::thread::sleep(Duration::from_millis(10));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(137));
    let ps: serde_json::Value =
        serde_json::from_str(&shoal.ok(&["ps", "--output", "json"])).unwrap();
    assert_eq!(ps[0]["status"], "exited (137)");
    shoal.ok(&["rm", "victim"]);
    assert_nothing_left(&shoal);
}

#[test]
fn bad_input_gets_a_one_line_error_and_leaves_nothing() {
    require_container_support();
    let shoal = Shoal::new();
    shoal.import_busybox("busybox");
    let error = shoal.fails(&["run", "--memory=lots", "busybox"], 2);
    assert!(error.contains("invalid quantity \"lots\""), "{error}");
    let error = shoal.fails(&["run", "--cpu=-1", "busybox"], 2);
    assert!(error.contains("--cpu"), "{error}");
    let error = shoal.fails(&["run", "--frobnicate", "busybox"], 2);
    assert!(error.contains("--frobnicate"), "{error}");
    let error = shoal.fails(&["run", INSECURE, "missing:1"], 1);
    assert_eq!(
        error.trim(),
        "error: image missing:1 not found: import it with `shoal image import` or fetch it with `shoal image fetch`"
    );
    let error = shoal.fails(
        &[
            "run",
            INSECURE,
            "--memory=64Mi",
            "busybox",
            "--",
            "/no/such/command",
        ],
        127,
    );
    assert_eq!(
        error.trim(),
        "error: command \"/no/such/command\" not found in image busybox"
    );
    let error = shoal.fails(&["run", INSECURE, "-v", "/no/such/dir:/data", "busybox"], 1);
    assert!(error.contains("does not exist on the host"), "{error}");
    let error = shoal.fails(&["run", INSECURE, "--user", "nosuchuser", "busybox"], 125);
    assert!(error.contains("user \"nosuchuser\" not found"), "{error}");
    let error = shoal.fails(&["stop", "nosuch"], 1);
    assert_eq!(error.trim(), "error: container nosuch not found");
    // None of the failed runs left a container, mount or cgroup.
    assert_eq!(shoal.ok(&["ps", "--output", "json"]).trim(), "[]");
    assert_eq!(
        fs::read_dir(shoal.runtime_dir().join("containers"))
            .unwrap()
            .count(),
        0
    );
    assert_nothing_left(&shoal);
}

/// Runs a command line tool the test depends on, failing with its output.
fn tool(program: &str, args: &[&str]) {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run {program} ({error}): run crates/runtime/install-deps.sh")
        });
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn images_made_by_umoci_and_converted_by_skopeo_import_and_run() {
    require_container_support();
    let shoal = Shoal::new();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let bundle = work.path().join("bundle");
    let (layout_text, bundle_text) = (layout.to_str().unwrap(), bundle.to_str().unwrap());
    let image = format!("{layout_text}:1.0");
    tool("umoci", &["init", "--layout", layout_text]);
    tool("umoci", &["new", "--image", &image]);
    tool("umoci", &["unpack", "--image", &image, bundle_text]);
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy(common::BUSYBOX, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    tool("umoci", &["repack", "--image", &image, bundle_text]);
    tool(
        "umoci",
        &[
            "config",
            "--image",
            &image,
            "--config.cmd=/bin/sh",
            "--config.cmd=-c",
            "--config.cmd=echo made by umoci",
        ],
    );
    // A second layer from umoci that deletes a file: an OCI whiteout.
    tool(
        "umoci",
        &["unpack", "--image", &image, &format!("{bundle_text}2")],
    );
    fs::remove_file(work.path().join("bundle2/rootfs/bin/cat")).unwrap();
    tool(
        "umoci",
        &["repack", "--image", &image, &format!("{bundle_text}2")],
    );

    let archive = work.path().join("docker.tar");
    let oci_archive = work.path().join("oci.tar");
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &format!("oci:{image}"),
            &format!("docker-archive:{}:umoci/busybox:1.0", archive.display()),
        ],
    );
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &format!("oci:{image}"),
            &format!("oci-archive:{}:1.0", oci_archive.display()),
        ],
    );

    for (source, name) in [
        (format!("oci:{image}"), "from-layout"),
        (
            format!("docker-archive:{}", archive.display()),
            "from-docker-archive",
        ),
        (
            format!("oci-archive:{}:1.0", oci_archive.display()),
            "from-oci-archive",
        ),
    ] {
        shoal.ok(&["image", "import", &source, "--name", name]);
        assert_eq!(
            shoal.ok(&["run", "--rm", INSECURE, name]),
            "made by umoci\n",
            "{source}"
        );
        let output = shoal.ok(&[
            "run",
            "--rm",
            INSECURE,
            name,
            "--",
            "sh",
            "-c",
            "test -e /bin/cat || echo whited-out",
        ]);
        assert_eq!(output, "whited-out\n", "{source}");
    }
    // Without --name, a docker archive's own tag names the image.
    shoal.ok(&[
        "image",
        "import",
        &format!("docker-archive:{}", archive.display()),
    ]);
    shoal.ok(&["image", "inspect", "umoci/busybox:1.0"]);
}

#[test]
fn sigterm_to_a_foreground_run_reaches_the_app_and_its_exit_is_recorded() {
    require_container_support();
    let shoal = Shoal::new();
    shoal.import_busybox("busybox");
    let child = shoal
        .command(&[
            "run",
            "--name",
            "graceful",
            INSECURE,
            "busybox",
            "--",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 5' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    // `logs` fails until `run` has recorded the container.
    while !String::from_utf8_lossy(&shoal.run(&["logs", "graceful"]).stdout).contains("ready") {
        assert!(Instant::now() < deadline, "container did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(5));
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "ready\ngot TERM\n"
    );
    shoal.ok(&["rm", "graceful"]);
    assert_nothing_left(&shoal);
}

#[test]
fn zstd_layers_are_verified_unpacked_and_run() {
    require_container_support();
    let shoal = Shoal::new();
    let base = layer_tar(&busybox_entries());
    let top = layer_tar(&[
        Entry::Dir { path: "etc".into() },
        Entry::File {
            path: "etc/motd".into(),
            bytes: b"from a zstd layer\n".to_vec(),
            mode: 0o644,
        },
    ]);
    // The base layer in four frames (as pzstd writes), the top in one; both
    // made by Debian's zstd, with content checksums.
    let layout = shoal.data_dir.path().join("zstd-layout");
    write_oci_layout_compressed(
        &layout,
        "latest",
        &[
            (base.clone(), Compression::Zstd(4)),
            (top.clone(), Compression::Zstd(1)),
        ],
        None,
    );
    shoal.ok(&[
        "image",
        "import",
        &format!("oci:{}", layout.display()),
        "--name",
        "zstd-image",
    ]);
    let inspect: serde_json::Value =
        serde_json::from_str(&shoal.ok(&["image", "inspect", "zstd-image"])).unwrap();
    for layer in inspect["manifest"]["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
            "{inspect}"
        );
    }
    let output = stdout_of(
        &shoal,
        &[
            "run",
            "--rm",
            "--net=none",
            INSECURE,
            "zstd-image",
            "--",
            "sh",
            "-c",
            "cat /etc/motd; test -x /bin/busybox && echo busybox",
        ],
    );
    assert_eq!(output, "from a zstd layer\nbusybox\n");

    // Layers whose blob digest matches its descriptor but whose content is
    // wrong are refused when unpacked, and leave nothing.
    let compressed = common::zstd(&base, 1);
    let mut flipped = compressed.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    let mut trailing = compressed.clone();
    trailing.extend_from_slice(b"not a zstd frame");
    let wrong_diff_id = vec![common::sha256_hex(b"another tar")];
    for (name, layer, diff_ids, expected) in [
        (
            "wrong-diff-id",
            Compression::Zstd(1),
            Some(wrong_diff_id),
            "but the image config says",
        ),
        (
            "flipped",
            Compression::ZstdBlob(flipped),
            None,
            "cannot unpack layer",
        ),
        (
            "trailing",
            Compression::ZstdBlob(trailing),
            None,
            "not a zstd frame",
        ),
    ] {
        let layout = shoal.data_dir.path().join(name);
        write_oci_layout_compressed(&layout, "latest", &[(base.clone(), layer)], diff_ids);
        let error = shoal.fails(
            &[
                "image",
                "import",
                &format!("oci:{}", layout.display()),
                "--name",
                name,
            ],
            1,
        );
        assert!(error.contains(expected), "{name}: {error}");
    }
    let listing: serde_json::Value =
        serde_json::from_str(&shoal.ok(&["image", "list", "--output", "json"])).unwrap();
    assert_eq!(listing.as_array().unwrap().len(), 1, "{listing}");
    assert_eq!(
        fs::read_dir(shoal.runtime_dir().join("tmp"))
            .unwrap()
            .count(),
        0,
        "work in progress was left in tmp/"
    );
    assert_nothing_left(&shoal);
}
