//! Several machines on one: network-namespace test hosts on a bridge, one
//! running `shoal up` (the server, with its own agent) and the others
//! `shoal up --join` (agents only), each with its own data directory.
//! The test process reaches them through a veth of its own on the bridge,
//! as an operator's laptop reaches a cluster.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::describe_output;

/// One test host: a network namespace with `eth0` on the bridge.
pub struct Machine {
    pub name: String,
    pub namespace: String,
    pub ip: String,
    /// The host's mount namespace, kept in a file (its own /sys, and the
    /// pods' pinned namespaces outlive one shoal process, as on a machine).
    pub mount_namespace: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// The host's port on the bridge (down: the host is cut off).
    port: String,
    process: Option<Child>,
    /// The flags it was last started with, for a restart.
    flags: Vec<String>,
    launches: usize,
}

/// A running test cluster. Dropping it stops every shoal and removes the
/// namespaces, veths and what the machines left in their data directories.
pub struct Machines {
    pub machines: Vec<Machine>,
    pub kubeconfig: PathBuf,
    switch: String,
    client_veth: String,
    /// A private mount holding the hosts' mount namespace files.
    mount_dir: PathBuf,
    /// The hosts' /24 (`10.x.y`), the busybox archive they import, and
    /// the flags a machine joins with (for `add_machine`).
    subnet: String,
    archive: PathBuf,
    /// The names every machine imports the busybox archive under.
    images: Vec<String>,
    join_flags: Vec<String>,
    pub dir: tempfile::TempDir,
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        describe_output(&output)
    );
}

fn in_namespace(namespace: &str, program: &str, args: &[&str]) {
    let mut full = vec!["netns", "exec", namespace, program];
    full.extend_from_slice(args);
    run("ip", &full);
}

/// The busybox image archive the machines import (made once per test).
fn busybox_archive(dir: &Path) -> PathBuf {
    let archive = dir.join("busybox.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-image");
    run(
        "python3",
        &[
            &script.display().to_string(),
            &archive.display().to_string(),
        ],
    );
    archive
}

impl Machines {
    /// A server and `agents` joined machines, all Ready, each holding the
    /// image `busybox:1`.
    pub fn start(agents: usize) -> Machines {
        Machines::start_with_images(agents, &[])
    }

    /// As `start`, with the same busybox image imported under more names
    /// too (e.g. `busybox:2`, for an image update).
    pub fn start_with_images(agents: usize, more_images: &[&str]) -> Machines {
        Machines::start_with(agents, more_images, &[])
    }

    /// As `start_with_images`, with more `shoal up` flags for the server.
    pub fn start_with(agents: usize, more_images: &[&str], server_flags: &[&str]) -> Machines {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        assert!(
            status
                .lines()
                .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0")),
            "the multi-machine tests make network namespaces: run them as root"
        );
        let dir = tempfile::Builder::new()
            .prefix("shoal-machines-")
            .tempdir()
            .expect("a temporary directory");
        let pid = std::process::id();
        // A /24 of its own per test process.
        let subnet = format!("10.{}.{}", 100 + (pid / 250) % 100, pid % 250);
        let switch = format!("shm{pid}sw");
        let client_veth = format!("shm{pid}c");
        run("ip", &["netns", "add", &switch]);
        let mount_dir = PathBuf::from(format!("/run/shoal-test-mnt-{pid}"));
        std::fs::create_dir_all(&mount_dir).expect("a directory under /run");
        let mount_text = mount_dir.display().to_string();
        run("mount", &["--bind", &mount_text, &mount_text]);
        run("mount", &["--make-private", &mount_text]);
        let mut machines = Machines {
            machines: Vec::new(),
            kubeconfig: dir.path().join("admin.kubeconfig"),
            switch: switch.clone(),
            client_veth: client_veth.clone(),
            mount_dir: mount_dir.clone(),
            subnet: subnet.clone(),
            archive: PathBuf::new(),
            images: std::iter::once("busybox:1")
                .chain(more_images.iter().copied())
                .map(str::to_string)
                .collect(),
            join_flags: Vec::new(),
            dir,
        };
        in_namespace(&switch, "ip", &["link", "add", "br0", "type", "bridge"]);
        in_namespace(&switch, "ip", &["link", "set", "br0", "up"]);
        run(
            "ip",
            &[
                "link",
                "add",
                &client_veth,
                "type",
                "veth",
                "peer",
                "name",
                "client",
                "netns",
                &switch,
            ],
        );
        in_namespace(&switch, "ip", &["link", "set", "client", "master", "br0"]);
        in_namespace(&switch, "ip", &["link", "set", "client", "up"]);
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{subnet}.1/24"),
                "dev",
                &client_veth,
            ],
        );
        run("ip", &["link", "set", &client_veth, "up"]);
        machines.archive = busybox_archive(machines.dir.path());
        for index in 0..=agents {
            machines.add_host(index);
        }
        let server_ip = machines.machines[0].ip.clone();
        let advertise = format!("--advertise-address={server_ip}");
        let server_launch_flags: Vec<&str> = ["--api-listen=0.0.0.0:6443", advertise.as_str()]
            .into_iter()
            .chain(server_flags.iter().copied())
            .collect();
        machines.launch(0, &server_launch_flags);
        let join_command = machines.wait_for_log(0, "shoal up --join ", Duration::from_secs(60));
        let token = join_command
            .split("--token ")
            .nth(1)
            .expect("the join command names a token")
            .trim()
            .to_string();
        std::fs::copy(
            machines.machines[0].data_dir.join("admin.kubeconfig"),
            &machines.kubeconfig,
        )
        .expect("the admin kubeconfig");
        machines.join_flags = vec![
            format!("--join=https://{server_ip}:6443"),
            format!("--token={token}"),
        ];
        let join_flags = machines.join_flags.clone();
        let join_flags: Vec<&str> = join_flags.iter().map(String::as_str).collect();
        for index in 1..=agents {
            machines.launch(index, &join_flags);
        }
        machines.wait_ready(agents + 1, Duration::from_secs(60));
        machines
    }

    /// Makes test host `index` (0 is the server, then `agent-N`): its
    /// namespaces, its veth on the bridge, its data directory with the
    /// image imported. Nothing runs on it yet.
    fn add_host(&mut self, index: usize) {
        let pid = std::process::id();
        let subnet = self.subnet.clone();
        let name = if index == 0 {
            "server".to_string()
        } else {
            format!("agent-{index}")
        };
        let namespace = format!("shm{pid}h{index}");
        let ip = format!("{subnet}.{}", 10 + index);
        run("ip", &["netns", "add", &namespace]);
        let port = format!("shm{pid}p{index}");
        run(
            "ip",
            &[
                "-n",
                &self.switch,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &namespace,
            ],
        );
        in_namespace(&self.switch, "ip", &["link", "set", &port, "master", "br0"]);
        in_namespace(&self.switch, "ip", &["link", "set", &port, "up"]);
        in_namespace(&namespace, "ip", &["link", "set", "lo", "up"]);
        in_namespace(
            &namespace,
            "ip",
            &["addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        );
        in_namespace(&namespace, "ip", &["link", "set", "eth0", "up"]);
        let mount_namespace = self.mount_dir.join(&namespace);
        std::fs::write(&mount_namespace, b"").expect("a mount namespace file");
        let mount_namespace_text = mount_namespace.display().to_string();
        run(
            "unshare",
            &[
                &format!("--mount={mount_namespace_text}"),
                "--propagation",
                "slave",
                "true",
            ],
        );
        // The host's own /sys (its network devices), with the
        // machine's cgroup hierarchies moved over from the old one.
        let keep = self.mount_dir.join(format!("{namespace}-cgroup"));
        std::fs::create_dir_all(&keep).expect("a mount point");
        let keep = keep.display().to_string();
        run(
            "nsenter",
            &[
                &format!("--mount={mount_namespace_text}"),
                &format!("--net=/run/netns/{namespace}"),
                "sh",
                "-c",
                &format!(
                    "mount --rbind /sys/fs/cgroup {keep} && mount -t sysfs sysfs /sys && mount --move {keep} /sys/fs/cgroup"
                ),
            ],
        );
        // The test veth is every host's way out, as a default gateway.
        in_namespace(
            &namespace,
            "ip",
            &["route", "add", "default", "via", &format!("{subnet}.1")],
        );
        let data_dir = self.dir.path().join(&name);
        std::fs::create_dir_all(&data_dir).expect("a data directory");
        for image in &self.images {
            run(
                env!("CARGO_BIN_EXE_shoal"),
                &[
                    "image",
                    "--data-dir",
                    &data_dir.display().to_string(),
                    "import",
                    "--name",
                    image,
                    &format!("oci-archive:{}", self.archive.display()),
                ],
            );
        }
        self.machines.push(Machine {
            log: self.dir.path().join(format!("{name}.log")),
            name,
            namespace,
            ip,
            mount_namespace,
            data_dir,
            port,
            process: None,
            flags: Vec::new(),
            launches: 0,
        });
    }

    /// Adds a machine that joins the running cluster (the next
    /// `agent-N`); returns its index once its node is Ready.
    pub fn add_machine(&mut self) -> usize {
        let index = self.machines.len();
        self.add_host(index);
        let join_flags = self.join_flags.clone();
        let join_flags: Vec<&str> = join_flags.iter().map(String::as_str).collect();
        self.launch(index, &join_flags);
        self.wait_ready(index + 1, Duration::from_secs(60));
        index
    }

    /// Stops machine `index`'s shoal (SIGTERM, then SIGKILL after 10 s),
    /// as a machine that goes away; its pods' containers stay until the
    /// cluster is dropped.
    pub fn stop_machine(&mut self, index: usize) {
        stop(&mut self.machines[index]);
    }

    /// Stops machine `index`'s shoal (SIGTERM) and starts it again with
    /// the same flags; returns once its agent is up again.
    pub fn restart(&mut self, index: usize) {
        stop(&mut self.machines[index]);
        let flags = self.machines[index].flags.clone();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        self.launch(index, &flags);
        self.wait_for_log(index, "the node agent is up", Duration::from_secs(60));
    }

    /// Kills every process of machine `index` at once (SIGKILL), as a
    /// machine that loses power: its shoal, and each container's monitor
    /// and processes (found by the monitors' environment, which names the
    /// machine's data directory, and as descendants of both). Returns how
    /// many processes it killed; panics if any survives.
    pub fn kill(&mut self, index: usize) -> usize {
        let machine = &mut self.machines[index];
        let marker = format!("SHOAL_RUNTIME_MONITOR={}\n", machine.data_dir.display());
        let mut roots: Vec<u32> = machine
            .process
            .as_ref()
            .map(Child::id)
            .into_iter()
            .collect();
        let mut parents: Vec<(u32, u32)> = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(environ) = std::fs::read(entry.path().join("environ"))
                && environ
                    .split(|byte| *byte == 0)
                    .any(|variable| variable.starts_with(marker.as_bytes()))
            {
                roots.push(pid);
            }
            if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
                && let Some((_, rest)) = stat.rsplit_once(')')
                && let Some(parent) = rest.split_whitespace().nth(1)
                && let Ok(parent) = parent.parse::<u32>()
            {
                parents.push((pid, parent));
            }
        }
        let mut doomed: std::collections::BTreeSet<u32> = roots.iter().copied().collect();
        loop {
            let more: Vec<u32> = parents
                .iter()
                .filter(|(pid, parent)| doomed.contains(parent) && !doomed.contains(pid))
                .map(|(pid, _)| *pid)
                .collect();
            if more.is_empty() {
                break;
            }
            doomed.extend(more);
        }
        let pids: Vec<String> = doomed.iter().map(u32::to_string).collect();
        if !pids.is_empty() {
            let _ = Command::new("kill").arg("-KILL").args(&pids).status();
        }
        if let Some(mut process) = machine.process.take() {
            let _ = process.wait();
        }
        let alive = |pid: &u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    stat.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
                })
                .is_some_and(|state| state != "Z" && state != "X")
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while doomed.iter().any(alive) {
            assert!(
                Instant::now() < deadline,
                "processes of {} survived SIGKILL: {:?}",
                machine.name,
                doomed.iter().filter(|pid| alive(pid)).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        doomed.len()
    }

    /// The processes of machine `index`'s containers still alive (their
    /// monitors).
    pub fn container_processes(&self, index: usize) -> usize {
        let marker = format!(
            "SHOAL_RUNTIME_MONITOR={}\n",
            self.machines[index].data_dir.display()
        );
        std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter(|entry| {
                std::fs::read(entry.path().join("environ")).is_ok_and(|environ| {
                    environ
                        .split(|byte| *byte == 0)
                        .any(|variable| variable.starts_with(marker.as_bytes()))
                })
            })
            .count()
    }

    /// The pod sandboxes machine `index`'s runtime holds (by pod uid).
    pub fn sandboxes(&self, index: usize) -> Vec<String> {
        let dir = self.machines[index].data_dir.join("runtime/pods");
        let mut uids: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        uids.sort();
        uids
    }

    /// Starts machine `index` again after `kill`, with the same flags;
    /// returns once its agent is up.
    pub fn start_again(&mut self, index: usize) {
        assert!(
            self.machines[index].process.is_none(),
            "machine {index} is running"
        );
        let flags = self.machines[index].flags.clone();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        self.launch(index, &flags);
        self.wait_for_log(index, "the node agent is up", Duration::from_secs(60));
    }

    /// Cuts machine `index` off the bridge: it reaches no other machine
    /// and none reaches it, but everything on it keeps running.
    pub fn partition(&self, index: usize) {
        in_namespace(
            &self.switch,
            "ip",
            &["link", "set", &self.machines[index].port, "down"],
        );
    }

    /// Puts machine `index` back on the bridge.
    pub fn heal(&self, index: usize) {
        in_namespace(
            &self.switch,
            "ip",
            &["link", "set", &self.machines[index].port, "up"],
        );
    }

    fn launch(&mut self, index: usize, extra: &[&str]) {
        let machine = &mut self.machines[index];
        machine.flags = extra.iter().map(|flag| flag.to_string()).collect();
        machine.launches += 1;
        if machine.launches > 1 {
            machine.log = machine
                .log
                .with_file_name(format!("{}-{}.log", machine.name, machine.launches));
        }
        let log = std::fs::File::create(&machine.log).expect("a log file");
        // The host's namespaces, kept across starts (`ip netns exec` would
        // make each start a mount namespace of its own, and the pods'
        // pinned namespaces would not outlive the process).
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--mount={}", machine.mount_namespace.display()))
            .arg(format!("--net=/run/netns/{}", machine.namespace))
            .args([env!("CARGO_BIN_EXE_shoal"), "up"])
            .arg(format!("--data-dir={}", machine.data_dir.display()))
            .arg(format!("--node-name={}", machine.name))
            .arg("--insecure-options=image")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log);
        machine.process = Some(command.spawn().expect("start shoal up"));
    }

    /// Waits for a line of machine `index`'s log containing `needle`.
    pub fn wait_for_log(&self, index: usize, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = std::fs::read_to_string(&self.machines[index].log).unwrap_or_default();
            if let Some(line) = log.lines().find(|line| line.contains(needle)) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "machine {} never logged {needle:?}:\n{log}",
                self.machines[index].name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every machine's log, for failure messages.
    pub fn logs(&self) -> String {
        self.machines
            .iter()
            .map(|machine| {
                format!(
                    "--- {} ---\n{}",
                    machine.name,
                    std::fs::read_to_string(&machine.log).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every machine's routes and NAT rules, for failure messages about
    /// the pod network.
    pub fn network_state(&self) -> String {
        let mut text = String::new();
        for machine in &self.machines {
            for args in [
                vec!["-n", machine.namespace.as_str(), "route"],
                vec!["-n", machine.namespace.as_str(), "addr"],
            ] {
                let output = Command::new("ip").args(&args).output();
                if let Ok(output) = output {
                    text.push_str(&format!(
                        "--- {}: ip {} ---\n{}",
                        machine.name,
                        args[2],
                        String::from_utf8_lossy(&output.stdout)
                    ));
                }
            }
            for probe in [
                "cat /proc/sys/net/ipv4/ip_forward",
                "for ip in $(ip -o -4 route | awk '/^10.42/ {print $1}'); do echo route $ip; done",
            ] {
                if let Ok(output) = Command::new("ip")
                    .args(["netns", "exec", &machine.namespace, "sh", "-c", probe])
                    .output()
                {
                    text.push_str(&format!(
                        "--- {}: {probe} ---\n{}{}",
                        machine.name,
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    ));
                }
            }
            if let Ok(output) = Command::new("ip")
                .args(["netns", "exec", &machine.namespace, "iptables-save"])
                .output()
            {
                text.push_str(&format!(
                    "--- {}: iptables-save ---\n{}",
                    machine.name,
                    String::from_utf8_lossy(&output.stdout)
                ));
            }
        }
        text
    }

    /// Runs kubectl 1.32 with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        let binary = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32";
        assert!(
            Path::new(binary).is_file(),
            "kubectl 1.32 is missing at {binary}: it comes with this machine image's Google Cloud SDK"
        );
        Command::new(binary)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    }

    /// kubectl that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert!(
            output.status.success(),
            "kubectl {} failed: {}\n{}",
            args.join(" "),
            describe_output(&output),
            self.logs()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Applies a manifest given as text.
    pub fn apply(&self, manifest: &str) {
        let path = self.dir.path().join(format!(
            "manifest-{}.yaml",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        std::fs::write(&path, manifest).expect("write a manifest");
        self.kubectl_ok(&["apply", "-f", &path.display().to_string()]);
    }

    /// Waits until `check` (on `kubectl get …` output) holds.
    pub fn wait_until(
        &self,
        args: &[&str],
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self.kubectl(args);
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            if output.status.success() && check(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "kubectl {} never showed what was expected; last:\n{text}{}\n{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    pub fn wait_ready(&self, count: usize, timeout: Duration) {
        self.wait_until(&["get", "nodes", "--no-headers"], timeout, |text| {
            text.lines()
                .filter(|line| line.split_whitespace().nth(1) == Some("Ready"))
                .count()
                == count
        });
    }

    /// A pod's field by JSONPath.
    pub fn pod_field(&self, name: &str, path: &str) -> String {
        self.kubectl_ok(&["get", "pod", name, "-o", &format!("jsonpath={{{path}}}")])
    }
}

/// Stops a machine's shoal: SIGTERM, then SIGKILL after 10 s.
fn stop(machine: &mut Machine) {
    if let Some(mut process) = machine.process.take() {
        let _ = Command::new("kill")
            .args(["-TERM", &process.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = process.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = process.kill();
        let _ = process.wait();
    }
}

impl Drop for Machines {
    fn drop(&mut self) {
        // The agents stop their pods when the pods go (bounded: a broken
        // agent leaves them to the runtime below).
        let _ = self.kubectl(&[
            "delete",
            "pods",
            "--all",
            "--all-namespaces",
            "--grace-period=0",
            "--force",
            "--timeout=20s",
        ]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline
            && self.machines.iter().any(|machine| {
                std::fs::read_dir(machine.data_dir.join("runtime/containers"))
                    .is_ok_and(|mut entries| entries.next().is_some())
            })
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        for machine in &mut self.machines {
            stop(machine);
        }
        // Containers outlive an agent on purpose: stop the machines' pods
        // with the runtime, then remove the namespaces.
        for machine in &self.machines {
            let runtime_pods = machine.data_dir.join("runtime/containers");
            if let Ok(entries) = std::fs::read_dir(&runtime_pods) {
                for entry in entries.flatten() {
                    let id = entry.file_name().to_string_lossy().into_owned();
                    let _ = Command::new(env!("CARGO_BIN_EXE_shoal"))
                        .args(["rm", "--force", "--data-dir"])
                        .arg(&machine.data_dir)
                        .arg(&id)
                        .output();
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "delete", &machine.namespace])
                .status();
            let _ = Command::new("umount")
                .arg(&machine.mount_namespace)
                .status();
        }
        let _ = Command::new("umount").arg(&self.mount_dir).status();
        let _ = std::fs::remove_dir_all(&self.mount_dir);
        let _ = Command::new("ip")
            .args(["link", "delete", &self.client_veth])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.switch])
            .status();
    }
}
