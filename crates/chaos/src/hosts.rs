//! Test hosts: one network namespace per store member, each with a veth into a
//! bridge that lives in a switch namespace of its own, on a private /24
//! (10.213.S.0/24) that exists only inside these namespaces. The client (this
//! process) reaches the members through one veth from the root namespace into
//! the switch. Every namespace, link, qdisc, iptables rule, tmpfs and process
//! made here is removed on drop, panics included.

use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The namespaces' name prefix; a leftover namespace carries the pid of the run
/// that made it, so a later run can remove it once that pid is gone.
const NAMESPACE_PREFIX: &str = "shoalchaos-";
/// First octets of the test subnet: 10.213.S.0/24.
const SUBNET_PREFIX: &str = "10.213";
const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;
/// Size of the tmpfs that holds a member's data for the full-disk fault.
const SMALL_DISK_MIB: u64 = 64;

/// Raft timing for every member.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
}

/// One member's host and process.
pub struct MemberHost {
    pub name: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    /// The member's directory: its data directories and its log.
    pub dir: PathBuf,
    /// Incremented on each replacement: the data directory is `data-<generation>`.
    pub generation: u32,
    /// Flags a restart reuses: `new` for founders, `existing` after a join.
    pub initial_cluster_state: String,
    pub initial_cluster: String,
    pub child: Option<Child>,
    pub paused: bool,
    pub small_disk: bool,
    /// Removed from the cluster and not added back (a replacement whose add
    /// failed): not restarted until a later replacement adds it.
    pub removed: bool,
}

impl MemberHost {
    pub fn client_url(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", self.ip)
    }

    pub fn peer_url(&self) -> String {
        format!("http://{}:{PEER_PORT}", self.ip)
    }

    /// Where the data directories live: the small tmpfs for the member with
    /// the full-disk fault (its log stays outside, so it survives teardown).
    pub fn disk_dir(&self) -> PathBuf {
        self.dir.join("disk")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.disk_dir().join(format!("data-{}", self.generation))
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("member.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

pub struct Hosts {
    shoal: PathBuf,
    timing: Timing,
    switch_namespace: String,
    client_veth: String,
    pub subnet: u8,
    pub members: Vec<MemberHost>,
    /// `tc netem` is missing from some kernels; then loss is an iptables
    /// `statistic` rule and delay a `tbf` rate limit.
    pub has_netem: bool,
    mounted: Vec<PathBuf>,
}

/// Runs a command to completion; an error names the command and its stderr.
pub fn run_command(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a command inside a namespace.
fn in_namespace(namespace: &str, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut full = vec!["netns", "exec", namespace, program];
    full.extend_from_slice(args);
    run_command("ip", &full)
}

/// Whether the current process runs as root (namespaces and iptables need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// Removes namespaces left by chaos runs whose process is gone (a run killed
/// with SIGKILL cannot clean up), and the processes still inside them.
pub fn remove_leftovers() {
    let Ok(list) = run_command("ip", &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NAMESPACE_PREFIX) else {
            continue;
        };
        let Some(owner_pid) = rest.split('-').next() else {
            continue;
        };
        if Path::new(&format!("/proc/{owner_pid}")).exists() {
            continue;
        }
        if let Ok(pids) = run_command("ip", &["netns", "pids", name]) {
            for pid in pids.split_whitespace() {
                let _ = run_command("kill", &["-CONT", pid]);
                let _ = run_command("kill", &["-KILL", pid]);
            }
        }
        let _ = run_command("ip", &["netns", "del", name]);
        let _ = run_command("ip", &["link", "del", &format!("sc{owner_pid}c")]);
    }
}

impl Hosts {
    /// Makes the namespaces and links for `n_members` members (no process yet).
    /// `small_disk_member` gets its directory on a small tmpfs.
    pub fn create(
        shoal: &Path,
        dir: &Path,
        n_members: usize,
        timing: Timing,
        small_disk_member: Option<usize>,
    ) -> anyhow::Result<Hosts> {
        anyhow::ensure!((1..=9).contains(&n_members), "--members must be 1 to 9");
        remove_leftovers();
        let pid = std::process::id();
        let subnet = free_subnet(pid)?;
        let switch_namespace = format!("{NAMESPACE_PREFIX}{pid}-sw");
        let client_veth = format!("sc{pid}c");
        let mut hosts = Hosts {
            shoal: shoal.to_path_buf(),
            timing,
            switch_namespace: switch_namespace.clone(),
            client_veth: client_veth.clone(),
            subnet,
            members: Vec::new(),
            has_netem: false,
            mounted: Vec::new(),
        };
        // From here on, a failure drops `hosts`, which removes what exists.
        run_command("ip", &["netns", "add", &switch_namespace])?;
        in_namespace(&switch_namespace, "ip", &["link", "set", "lo", "up"])?;
        in_namespace(
            &switch_namespace,
            "ip",
            &["link", "add", "br0", "type", "bridge"],
        )?;
        in_namespace(&switch_namespace, "ip", &["link", "set", "br0", "up"])?;
        run_command(
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
                &switch_namespace,
            ],
        )?;
        in_namespace(
            &switch_namespace,
            "ip",
            &["link", "set", "client", "master", "br0"],
        )?;
        in_namespace(&switch_namespace, "ip", &["link", "set", "client", "up"])?;
        run_command(
            "ip",
            &[
                "addr",
                "add",
                &format!("{SUBNET_PREFIX}.{subnet}.1/24"),
                "dev",
                &client_veth,
            ],
        )?;
        run_command("ip", &["link", "set", &client_veth, "up"])?;

        for member_idx in 0..n_members {
            let name = format!("m{member_idx}");
            let namespace = format!("{NAMESPACE_PREFIX}{pid}-{name}");
            let ip: Ipv4Addr = format!("{SUBNET_PREFIX}.{subnet}.{}", 10 + member_idx).parse()?;
            let member_dir = dir.join(&name);
            std::fs::create_dir_all(&member_dir)?;
            let small_disk = small_disk_member == Some(member_idx);
            hosts.members.push(MemberHost {
                name,
                namespace: namespace.clone(),
                ip,
                dir: member_dir.clone(),
                generation: 0,
                initial_cluster_state: "new".to_string(),
                initial_cluster: String::new(),
                child: None,
                paused: false,
                small_disk,
                removed: false,
            });
            if small_disk {
                let disk_dir = member_dir.join("disk");
                std::fs::create_dir_all(&disk_dir)?;
                let dir_text = disk_dir.to_string_lossy().into_owned();
                run_command(
                    "mount",
                    &[
                        "-t",
                        "tmpfs",
                        "-o",
                        &format!("size={SMALL_DISK_MIB}m"),
                        "tmpfs",
                        &dir_text,
                    ],
                )?;
                hosts.mounted.push(disk_dir);
            }
            run_command("ip", &["netns", "add", &namespace])?;
            let switch_port = format!("sc{pid}h{member_idx}");
            run_command(
                "ip",
                &[
                    "-n",
                    &switch_namespace,
                    "link",
                    "add",
                    &switch_port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    &namespace,
                ],
            )?;
            in_namespace(
                &switch_namespace,
                "ip",
                &["link", "set", &switch_port, "master", "br0"],
            )?;
            in_namespace(
                &switch_namespace,
                "ip",
                &["link", "set", &switch_port, "up"],
            )?;
            in_namespace(&namespace, "ip", &["link", "set", "lo", "up"])?;
            in_namespace(
                &namespace,
                "ip",
                &["addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            )?;
            in_namespace(&namespace, "ip", &["link", "set", "eth0", "up"])?;
        }
        let initial_cluster = hosts.founding_cluster();
        for member in &mut hosts.members {
            member.initial_cluster = initial_cluster.clone();
        }
        if let Some(first) = hosts.members.first() {
            let namespace = first.namespace.clone();
            hosts.has_netem = in_namespace(
                &namespace,
                "tc",
                &[
                    "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "1ms",
                ],
            )
            .is_ok();
            let _ = in_namespace(&namespace, "tc", &["qdisc", "del", "dev", "eth0", "root"]);
        }
        Ok(hosts)
    }

    fn founding_cluster(&self) -> String {
        self.members
            .iter()
            .map(|member| format!("{}={}", member.name, member.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(MemberHost::client_url).collect()
    }

    /// Starts member `member_idx`'s process with its current data directory.
    pub fn start(&mut self, member_idx: usize) -> anyhow::Result<()> {
        let shoal = self.shoal.to_string_lossy().into_owned();
        let timing = self.timing;
        let member = &mut self.members[member_idx];
        if member.child.is_some() || member.removed {
            return Ok(());
        }
        std::fs::create_dir_all(member.data_dir())?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(member.log_path())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &member.namespace, &shoal, "store"])
            .arg(format!("--name={}", member.name))
            .arg(format!("--data-dir={}", member.data_dir().display()))
            .arg(format!("--listen-client-urls={}", member.client_url()))
            .arg(format!("--advertise-client-urls={}", member.client_url()))
            .arg(format!("--listen-peer-urls={}", member.peer_url()))
            .arg(format!(
                "--initial-advertise-peer-urls={}",
                member.peer_url()
            ))
            .arg(format!("--initial-cluster={}", member.initial_cluster))
            .arg(format!(
                "--initial-cluster-state={}",
                member.initial_cluster_state
            ))
            .arg("--initial-cluster-token=shoal-chaos")
            .arg(format!(
                "--heartbeat-interval={}",
                timing.heartbeat_interval_ms
            ))
            .arg(format!("--election-timeout={}", timing.election_timeout_ms))
            .arg("--log-level=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {shoal} in {}", member.namespace))?;
        member.child = Some(child);
        member.paused = false;
        Ok(())
    }

    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for member_idx in 0..self.members.len() {
            self.start(member_idx)?;
        }
        Ok(())
    }

    /// SIGKILL (after SIGCONT, so a paused process dies at once) and reap.
    pub fn kill(&mut self, member_idx: usize) {
        let member = &mut self.members[member_idx];
        if let Some(mut child) = member.child.take() {
            if member.paused {
                let _ = run_command("kill", &["-CONT", &child.id().to_string()]);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        member.paused = false;
    }

    pub fn pause(&mut self, member_idx: usize) -> anyhow::Result<()> {
        let member = &mut self.members[member_idx];
        if let Some(pid) = member.pid() {
            run_command("kill", &["-STOP", &pid.to_string()])?;
            member.paused = true;
        }
        Ok(())
    }

    pub fn resume(&mut self, member_idx: usize) -> anyhow::Result<()> {
        let member = &mut self.members[member_idx];
        if let Some(pid) = member.pid()
            && member.paused
        {
            run_command("kill", &["-CONT", &pid.to_string()])?;
        }
        member.paused = false;
        Ok(())
    }

    /// Members whose process exited on its own since the last call, with the
    /// exit status; they are marked stopped.
    pub fn reap_exited(&mut self) -> Vec<(usize, String)> {
        let mut exited = Vec::new();
        for (member_idx, member) in self.members.iter_mut().enumerate() {
            if let Some(child) = &mut member.child
                && let Ok(Some(status)) = child.try_wait()
            {
                exited.push((member_idx, status.to_string()));
                member.child = None;
            }
        }
        exited
    }

    /// Drops traffic between `member_idx` and every other member: both ways,
    /// or only what arrives at `member_idx` (an asymmetric partition). Clients
    /// still reach it.
    pub fn partition(&self, member_idx: usize, both_ways: bool) -> anyhow::Result<()> {
        let namespace = &self.members[member_idx].namespace;
        for (other_idx, other) in self.members.iter().enumerate() {
            if other_idx == member_idx {
                continue;
            }
            let ip = other.ip.to_string();
            in_namespace(
                namespace,
                "iptables",
                &["-A", "INPUT", "-s", &ip, "-j", "DROP"],
            )?;
            if both_ways {
                in_namespace(
                    namespace,
                    "iptables",
                    &["-A", "OUTPUT", "-d", &ip, "-j", "DROP"],
                )?;
            }
        }
        Ok(())
    }

    /// Loses `loss_percent` of the packets arriving at and leaving `member_idx`
    /// and delays them by `delay_ms` (netem), or, without netem, drops with an
    /// iptables `statistic` rule and slows the link with a `tbf` rate limit.
    pub fn degrade(
        &self,
        member_idx: usize,
        loss_percent: u32,
        delay_ms: u32,
    ) -> anyhow::Result<()> {
        let namespace = &self.members[member_idx].namespace;
        if self.has_netem {
            in_namespace(
                namespace,
                "tc",
                &[
                    "qdisc",
                    "add",
                    "dev",
                    "eth0",
                    "root",
                    "netem",
                    "loss",
                    &format!("{loss_percent}%"),
                    "delay",
                    &format!("{delay_ms}ms"),
                ],
            )?;
        } else {
            let probability = format!("{:.2}", f64::from(loss_percent) / 100.0);
            for chain in ["INPUT", "OUTPUT"] {
                in_namespace(
                    namespace,
                    "iptables",
                    &[
                        "-A",
                        chain,
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        &probability,
                        "-j",
                        "DROP",
                    ],
                )?;
            }
            in_namespace(
                namespace,
                "tc",
                &[
                    "qdisc",
                    "add",
                    "dev",
                    "eth0",
                    "root",
                    "tbf",
                    "rate",
                    "2mbit",
                    "burst",
                    "16kb",
                    "latency",
                    &format!("{}ms", delay_ms.max(1) * 4),
                ],
            )?;
        }
        Ok(())
    }

    /// Removes every iptables rule and qdisc from member `member_idx`'s
    /// namespace (all of them are ours).
    pub fn heal_network(&self, member_idx: usize) {
        let namespace = &self.members[member_idx].namespace;
        let _ = in_namespace(namespace, "iptables", &["-F", "INPUT"]);
        let _ = in_namespace(namespace, "iptables", &["-F", "OUTPUT"]);
        let _ = in_namespace(namespace, "tc", &["qdisc", "del", "dev", "eth0", "root"]);
    }

    /// Fills member `member_idx`'s small disk (tmpfs) with a filler file.
    pub fn fill_disk(&self, member_idx: usize) -> anyhow::Result<u64> {
        use std::io::Write as _;
        let member = &self.members[member_idx];
        anyhow::ensure!(member.small_disk, "{} has no small disk", member.name);
        let mut filler = std::fs::File::create(member.disk_dir().join("filler"))?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        // Bounded by the tmpfs size; the first short write means it is full.
        for _ in 0..=SMALL_DISK_MIB {
            match filler.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(n_bytes) => written += n_bytes as u64,
            }
        }
        // Top up the last partial chunk's worth, byte ranges smaller than 1 MiB.
        let small = vec![0u8; 4096];
        for _ in 0..256 {
            if !matches!(filler.write(&small), Ok(n) if n > 0) {
                break;
            }
        }
        Ok(written)
    }

    /// Removes the filler of a member's small disk, if it has one.
    pub fn free_disk_if_small(&self, member_idx: usize) {
        let member = &self.members[member_idx];
        if member.small_disk {
            let _ = std::fs::remove_file(member.disk_dir().join("filler"));
        }
    }

    /// Stops member `member_idx` and gives it a fresh empty data directory; its
    /// next start joins `initial_cluster` as an existing cluster's new member.
    pub fn wipe_for_replacement(&mut self, member_idx: usize, initial_cluster: String) {
        self.kill(member_idx);
        let member = &mut self.members[member_idx];
        let _ = std::fs::remove_dir_all(member.data_dir());
        member.generation += 1;
        member.removed = false;
        member.initial_cluster_state = "existing".to_string();
        member.initial_cluster = initial_cluster;
    }

    /// Waits (bounded) until a TCP connection to every running member's client
    /// port succeeds.
    pub fn wait_until_listening(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for member in self.members.iter().filter(|member| member.child.is_some()) {
            let address = std::net::SocketAddr::from((member.ip, CLIENT_PORT));
            loop {
                if std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200))
                    .is_ok()
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "member {} ({address}) did not listen within {timeout:?}; see {}",
                        member.name,
                        member.log_path().display()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for member_idx in 0..self.members.len() {
            self.kill(member_idx);
        }
        for member in &self.members {
            let _ = run_command("ip", &["netns", "del", &member.namespace]);
        }
        let _ = run_command("ip", &["netns", "del", &self.switch_namespace]);
        // Deleting the switch namespace deletes the client veth's peer and so
        // the veth; this is for the case where the namespace never existed.
        let _ = run_command("ip", &["link", "del", &self.client_veth]);
        for mount in &self.mounted {
            let _ = run_command("umount", &[&mount.to_string_lossy()]);
        }
    }
}

/// A third octet S whose 10.213.S.0/24 no interface of the root namespace uses.
fn free_subnet(pid: u32) -> anyhow::Result<u8> {
    let addresses = run_command("ip", &["-4", "-o", "addr", "show"])?;
    let start = pid % 250;
    for offset in 0..250 {
        let subnet = 1 + (start + offset) % 250;
        if !addresses.contains(&format!("{SUBNET_PREFIX}.{subnet}.")) {
            return Ok(u8::try_from(subnet)?);
        }
    }
    bail!("no free {SUBNET_PREFIX}.S.0/24 subnet")
}
