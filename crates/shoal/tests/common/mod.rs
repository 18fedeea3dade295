//! Integration-test harness: runs real etcd or real `shoal store` members on
//! loopback with the same etcd flags, drives them with the real `etcdctl`, and
//! normalises outputs so that etcd's and shoal's can be compared.

// Each test binary (`cli`, `cluster`, `conformance`) includes this module and
// uses a different part of it.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

mod normalize;
pub mod tls;
pub use normalize::{Identities, normalize};

/// The reference implementation, from Debian's `etcd-server` (installed by
/// `scripts/install-deps`).
pub const ETCD: &str = "/usr/bin/etcd";
/// The real client, from Debian's `etcd-client`.
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// How long a cluster may take from spawning its members to every member
/// answering `etcdctl endpoint health`.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// etcdctl's own bound on one request (its `--command-timeout`).
const ETCDCTL_COMMAND_TIMEOUT: &str = "5s";
/// An etcdctl still running after this long is killed and the test fails:
/// it is well past etcdctl's dial and command timeouts, so it is hung.
const ETCDCTL_WATCHDOG: Duration = Duration::from_secs(30);
/// Shared by every cluster of every flavor, so that member names and the
/// token are not a source of differences between outputs.
const INITIAL_CLUSTER_TOKEN: &str = "shoal-test";

/// Which server a cluster runs: both take the same flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Etcd,
    Shoal,
}

impl Flavor {
    /// The command that starts one member, before the flags.
    fn command(self) -> Command {
        match self {
            Flavor::Etcd => Command::new(ETCD),
            Flavor::Shoal => {
                let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
                command.arg("store");
                command
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    /// `--snapshot-count`; the server's default when `None`.
    pub snapshot_count: Option<u64>,
    /// Makes this member likely to win the first election: every other
    /// member gets ten times its election timeout, so it usually campaigns
    /// first (etcd advances election ticks at startup, so this is not a
    /// certainty). For tests whose expected output depends on which member
    /// leads; they check, and start again if another member won.
    pub preferred_leader: Option<usize>,
    /// More flags, given to every member after the standard ones.
    pub extra_args: Vec<String>,
    /// TLS on the client URLs (`https://`), and the flags etcdctl needs.
    pub client_tls: Option<ClientTls>,
}

/// A cluster's client TLS: the flags each member gets and those etcdctl
/// gets (`--cacert`, `--cert`, `--key`).
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    pub server_args: Vec<String>,
    pub etcdctl_args: Vec<String>,
}

impl Default for ClusterOptions {
    /// etcd's default timing.
    fn default() -> Self {
        ClusterOptions {
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            snapshot_count: None,
            preferred_leader: None,
            extra_args: Vec::new(),
            client_tls: None,
        }
    }
}

struct Member {
    name: String,
    /// `https` when the cluster serves clients over TLS.
    client_scheme: &'static str,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// `None` while the member is killed.
    process: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.client_scheme, self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// What one member reports in `etcdctl endpoint status`.
#[derive(Clone, Debug)]
pub struct EndpointStatus {
    pub member_id: u64,
    /// 0 when the member knows no leader.
    pub leader: u64,
    pub raft_term: u64,
    pub raft_index: u64,
}

/// A running etcd or shoal cluster on loopback, in a temporary directory.
/// Dropping it SIGKILLs every member.
pub struct Cluster {
    pub flavor: Flavor,
    options: ClusterOptions,
    members: Vec<Member>,
    identities: OnceLock<Identities>,
    /// Declared last so it is deleted after the members are killed.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n_members` members and waits until each answers
    /// `endpoint health`; panics (printing the members' logs) otherwise.
    pub fn start(flavor: Flavor, n_members: usize, options: ClusterOptions) -> Cluster {
        let cluster = Cluster::spawn(flavor, n_members, options);
        cluster.wait_until_healthy();
        cluster
    }

    /// Spawns the members without waiting for them to become healthy.
    pub fn spawn(flavor: Flavor, n_members: usize, options: ClusterOptions) -> Cluster {
        assert!(n_members > 0, "a cluster needs at least one member");
        let dir = tempfile::Builder::new()
            .prefix("shoal-test-")
            .tempdir()
            .expect("create a temporary directory for the cluster");
        let ports = free_ports(2 * n_members);
        let client_scheme = if options.client_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let members = (0..n_members)
            .map(|member_idx| {
                let name = format!("m{member_idx}");
                Member {
                    data_dir: dir.path().join(format!("{name}.data")),
                    log_path: dir.path().join(format!("{name}.log")),
                    name,
                    client_scheme,
                    client_port: ports[2 * member_idx],
                    peer_port: ports[2 * member_idx + 1],
                    process: None,
                }
            })
            .collect();
        let mut cluster = Cluster {
            flavor,
            options,
            members,
            identities: OnceLock::new(),
            dir,
        };
        for member_idx in 0..n_members {
            cluster.spawn_member(member_idx);
        }
        cluster
    }

    pub fn n_members(&self) -> usize {
        self.members.len()
    }

    /// The temporary directory holding the members' data dirs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self, member_idx: usize) -> &Path {
        &self.members[member_idx].data_dir
    }

    /// Every member's client URL, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    pub fn endpoint(&self, member_idx: usize) -> String {
        self.members[member_idx].client_url()
    }

    pub fn is_running(&self, member_idx: usize) -> bool {
        self.members[member_idx].process.is_some()
    }

    /// The flags a member is started with: etcd's names and meanings, so the
    /// same list starts either flavor.
    pub fn member_args(&self, member_idx: usize) -> Vec<String> {
        let member = &self.members[member_idx];
        let initial_cluster = self
            .members
            .iter()
            .map(|member| format!("{}={}", member.name, member.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let election_timeout_ms = match self.options.preferred_leader {
            Some(leader_idx) if leader_idx != member_idx => 10 * self.options.election_timeout_ms,
            _ => self.options.election_timeout_ms,
        };
        let mut args = vec![
            format!("--name={}", member.name),
            format!("--data-dir={}", member.data_dir.display()),
            format!("--listen-client-urls={}", member.client_url()),
            format!("--advertise-client-urls={}", member.client_url()),
            format!("--listen-peer-urls={}", member.peer_url()),
            format!("--initial-advertise-peer-urls={}", member.peer_url()),
            format!("--initial-cluster={initial_cluster}"),
            // Also on restart, as etcd's own deployments do: a member with an
            // existing data dir ignores the initial-cluster flags.
            "--initial-cluster-state=new".to_string(),
            format!("--initial-cluster-token={INITIAL_CLUSTER_TOKEN}"),
            format!(
                "--heartbeat-interval={}",
                self.options.heartbeat_interval_ms
            ),
            format!("--election-timeout={election_timeout_ms}"),
            "--log-level=info".to_string(),
        ];
        if let Some(snapshot_count) = self.options.snapshot_count {
            args.push(format!("--snapshot-count={snapshot_count}"));
        }
        if let Some(tls) = &self.options.client_tls {
            args.extend(tls.server_args.iter().cloned());
        }
        args.extend(self.options.extra_args.iter().cloned());
        args
    }

    /// The TLS flags every etcdctl invocation of this cluster gets.
    pub fn etcdctl_tls_args(&self) -> &[String] {
        self.options
            .client_tls
            .as_ref()
            .map_or(&[], |tls| tls.etcdctl_args.as_slice())
    }

    /// etcdctl at one member with `tls_args` instead of the cluster's own
    /// TLS flags (a client without a certificate, or with a foreign one).
    pub fn etcdctl_at_with_tls(
        &self,
        member_idx: usize,
        tls_args: &[String],
        args: &[&str],
    ) -> Output {
        etcdctl_command_with(
            &self.endpoint(member_idx),
            ETCDCTL_COMMAND_TIMEOUT,
            tls_args,
            args,
            None,
        )
    }

    fn spawn_member(&mut self, member_idx: usize) {
        let args = self.member_args(member_idx);
        let mut command = self.flavor.command();
        command.args(&args);
        let member = &mut self.members[member_idx];
        assert!(
            member.process.is_none(),
            "member {} is already running",
            member.name
        );
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log_path)
            .expect("open the member's log file");
        writeln!(log, "==> harness: starting {command:?}").expect("write the member's log");
        let stderr_log = log.try_clone().expect("clone the member's log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr_log))
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
        member.process = Some(child);
    }

    /// SIGKILLs one member and reaps it.
    pub fn kill(&mut self, member_idx: usize) {
        let member = &mut self.members[member_idx];
        let mut child = member
            .process
            .take()
            .unwrap_or_else(|| panic!("member {} is not running", member.name));
        // `Child::kill` sends SIGKILL on Unix.
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILLs every running member, one right after the other.
    pub fn kill_all(&mut self) {
        let mut children: Vec<Child> = self
            .members
            .iter_mut()
            .filter_map(|member| member.process.take())
            .collect();
        for child in &mut children {
            let _ = child.kill();
        }
        for child in &mut children {
            let _ = child.wait();
        }
    }

    /// Starts a killed member again with the same flags. Does not wait for
    /// it: a lone restarted member of a three-member cluster cannot become
    /// healthy before a second one is back; see [`Cluster::wait_until_healthy`].
    pub fn restart(&mut self, member_idx: usize) {
        self.spawn_member(member_idx);
    }

    /// Waits until every running member answers `endpoint health` (which
    /// needs a leader and a quorum); panics with the members' logs after
    /// [`STARTUP_TIMEOUT`].
    pub fn wait_until_healthy(&self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let endpoints = self.running_endpoints().join(",");
        loop {
            self.assert_members_alive();
            let output = etcdctl_command_with(
                &endpoints,
                "2s",
                self.etcdctl_tls_args(),
                &["endpoint", "health"],
                None,
            );
            if output.status.success() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{:?} cluster not healthy after {STARTUP_TIMEOUT:?}: `etcdctl endpoint health` says:\n{}",
                    self.flavor,
                    describe_output(&output)
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Panics (with the logs) if a member that should be running has exited.
    pub fn assert_members_alive(&self) {
        for member in &self.members {
            // `try_wait` needs `&mut`; `Child` has no interior mutability, so
            // look the process up in /proc instead.
            if let Some(child) = &member.process {
                let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id()));
                let exited = match &stat {
                    Ok(stat) => stat_state(stat) == Some('Z'),
                    Err(_) => true,
                };
                if exited {
                    panic!(
                        "{:?} member {} exited unexpectedly",
                        self.flavor, member.name
                    );
                }
            }
        }
    }

    fn running_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|member| member.process.is_some())
            .map(Member::client_url)
            .collect()
    }

    /// `ETCDCTL_API=3 etcdctl --endpoints <every running member> args`.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        etcdctl_command_with(
            &self.running_endpoints().join(","),
            ETCDCTL_COMMAND_TIMEOUT,
            self.etcdctl_tls_args(),
            args,
            None,
        )
    }

    /// Like [`Cluster::etcdctl`], with `stdin` fed to etcdctl (for `txn`).
    pub fn etcdctl_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        etcdctl_command_with(
            &self.running_endpoints().join(","),
            ETCDCTL_COMMAND_TIMEOUT,
            self.etcdctl_tls_args(),
            args,
            Some(stdin.as_bytes()),
        )
    }

    /// etcdctl talking to one member only.
    pub fn etcdctl_at(&self, member_idx: usize, args: &[&str]) -> Output {
        etcdctl_command_with(
            &self.endpoint(member_idx),
            ETCDCTL_COMMAND_TIMEOUT,
            self.etcdctl_tls_args(),
            args,
            None,
        )
    }

    /// etcdctl talking to one member only, with `stdin` fed to it.
    pub fn etcdctl_at_with_stdin(&self, member_idx: usize, args: &[&str], stdin: &str) -> Output {
        etcdctl_command_with(
            &self.endpoint(member_idx),
            ETCDCTL_COMMAND_TIMEOUT,
            self.etcdctl_tls_args(),
            args,
            Some(stdin.as_bytes()),
        )
    }

    /// Like [`Cluster::etcdctl_at`], and panics with the output and logs
    /// unless etcdctl succeeds; returns its stdout.
    pub fn etcdctl_ok_at(&self, member_idx: usize, args: &[&str]) -> String {
        let output = self.etcdctl_at(member_idx, args);
        if !output.status.success() {
            panic!(
                "`etcdctl {}` at member {member_idx} failed:\n{}",
                args.join(" "),
                describe_output(&output)
            );
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// What one member says in `endpoint status -w json`, or `None` if it
    /// does not answer within a second.
    pub fn status(&self, member_idx: usize) -> Option<EndpointStatus> {
        self.try_status(member_idx).ok()
    }

    /// Like [`Cluster::status`], with what went wrong.
    pub fn try_status(&self, member_idx: usize) -> Result<EndpointStatus, String> {
        let output = etcdctl_command_with(
            &self.endpoint(member_idx),
            "1s",
            self.etcdctl_tls_args(),
            &["endpoint", "status", "-w", "json"],
            None,
        );
        let unexpected = || {
            format!(
                "`etcdctl endpoint status -w json` at member {member_idx}: {}",
                describe_output(&output)
            )
        };
        if !output.status.success() {
            return Err(unexpected());
        }
        let json: Value = serde_json::from_slice(&output.stdout).map_err(|_| unexpected())?;
        let status = &json[0]["Status"];
        Ok(EndpointStatus {
            member_id: status["header"]["member_id"]
                .as_u64()
                .ok_or_else(unexpected)?,
            leader: status["leader"].as_u64().unwrap_or(0),
            raft_term: status["header"]["raft_term"].as_u64().unwrap_or(0),
            raft_index: status["raftIndex"].as_u64().unwrap_or(0),
        })
    }

    /// The index of a running member that reports itself as leader (its
    /// `header.member_id` equals its `leader`), if any.
    pub fn leader_idx(&self) -> Option<usize> {
        self.find_leader().ok()
    }

    /// Like [`Cluster::leader_idx`]; the error says what each member answered.
    fn find_leader(&self) -> Result<usize, String> {
        let mut answers = Vec::new();
        for member_idx in (0..self.n_members()).filter(|&member_idx| self.is_running(member_idx)) {
            match self.try_status(member_idx) {
                Ok(status) if status.leader != 0 && status.member_id == status.leader => {
                    return Ok(member_idx);
                }
                Ok(status) => answers.push(format!("member {member_idx}: {status:?}")),
                Err(error) => answers.push(error),
            }
        }
        Err(answers.join("\n"))
    }

    /// A fresh cluster whose first member leads, so that outputs which say
    /// who leads are comparable between flavors: clusters are started afresh
    /// (up to five times) until member 0 wins the first election.
    pub fn start_led_by_first(
        flavor: Flavor,
        n_members: usize,
        options: ClusterOptions,
    ) -> Cluster {
        const MAX_ATTEMPTS: usize = 5;
        let mut leaders = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            let cluster = Cluster::start(flavor, n_members, options.clone());
            if n_members == 1 {
                return cluster;
            }
            let leader_idx = cluster.wait_for_leader(STARTUP_TIMEOUT);
            if leader_idx == 0 {
                return cluster;
            }
            leaders.push(leader_idx);
        }
        panic!(
            "{flavor:?}: member 0 never led in {MAX_ATTEMPTS} fresh clusters (leaders: {leaders:?})"
        );
    }

    /// Waits up to `timeout` for a member to report itself leader.
    pub fn wait_for_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let answers = match self.find_leader() {
                Ok(leader_idx) => return leader_idx,
                Err(answers) => answers,
            };
            if Instant::now() >= deadline {
                panic!(
                    "{:?} cluster: no member reports itself leader in `endpoint status` after {timeout:?}; last answers:\n{answers}",
                    self.flavor,
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The cluster's and members' ids (learnt once, from `member list`) and
    /// the ports the harness picked.
    pub fn identities(&self) -> &Identities {
        self.identities.get_or_init(|| {
            let first_running = (0..self.n_members())
                .find(|&member_idx| self.is_running(member_idx))
                .expect("a running member to ask for the member list");
            let stdout = self.etcdctl_ok_at(first_running, &["member", "list", "-w", "json"]);
            let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|error| {
                panic!("`member list -w json` is not JSON ({error}): {stdout}")
            });
            let cluster_id = json["header"]["cluster_id"]
                .as_u64()
                .unwrap_or_else(|| panic!("`member list -w json` has no cluster_id: {stdout}"));
            let member_ids = self
                .members
                .iter()
                .map(|member| {
                    json["members"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|listed| listed["name"] == member.name.as_str())
                        .and_then(|listed| listed["ID"].as_u64())
                        .unwrap_or_else(|| {
                            panic!(
                                "`member list -w json` lacks member {}: {stdout}",
                                member.name
                            )
                        })
                })
                .collect();
            Identities {
                cluster_id,
                member_ids,
                client_ports: self
                    .members
                    .iter()
                    .map(|member| member.client_port)
                    .collect(),
                peer_ports: self.members.iter().map(|member| member.peer_port).collect(),
            }
        })
    }

    /// [`normalize`] with this cluster's identities.
    pub fn normalize(&self, text: &str) -> String {
        normalize(text, self.identities())
    }

    /// The last lines of every member's log, for failure messages.
    pub fn logs(&self) -> String {
        const TAIL_LINES: usize = 60;
        let mut logs = String::new();
        for member in &self.members {
            let log = std::fs::read_to_string(&member.log_path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
            logs.push_str(&format!(
                "---- {:?} member {} log ({}), last {} lines ----\n{}\n",
                self.flavor,
                member.name,
                member.log_path.display(),
                tail.len(),
                tail.join("\n")
            ));
        }
        logs
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
        // Every failure message is followed by the members' logs.
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// The state letter of a `/proc/<pid>/stat` line ("1234 (etcd) S ...").
fn stat_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Ports the kernel reports free on 127.0.0.1. All listeners are held until
/// every port is chosen so that no port is handed out twice.
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("local address").port())
        .collect()
}

/// Runs `ETCDCTL_API=3 etcdctl --endpoints=... --command-timeout=...`,
/// killing it (and failing the test) if it hangs.
pub fn etcdctl_command(
    endpoints: &str,
    command_timeout: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Output {
    etcdctl_command_with(endpoints, command_timeout, &[], args, stdin)
}

/// [`etcdctl_command`] with TLS flags (`--cacert`, `--cert`, `--key`).
pub fn etcdctl_command_with(
    endpoints: &str,
    command_timeout: &str,
    tls_args: &[String],
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Output {
    let mut command = Command::new(ETCDCTL);
    command
        .env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_ENDPOINTS")
        .arg(format!("--endpoints={endpoints}"))
        .arg(format!("--command-timeout={command_timeout}"))
        .arg("--dial-timeout=2s")
        .args(tls_args)
        .args(args);
    run_with_watchdog(command, stdin, ETCDCTL_WATCHDOG)
}

/// Runs a command to completion, capturing its output; kills it and panics
/// if it runs longer than `timeout`.
pub fn run_with_watchdog(mut command: Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    if let Some(stdin) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let stdin = stdin.to_vec();
        // A separate thread, so a child that does not read cannot block us.
        thread::spawn(move || pipe.write_all(&stdin));
    }
    let stdout_reader = read_in_background(child.stdout.take().expect("piped stdout"));
    let stderr_reader = read_in_background(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still running after {timeout:?}; killed it");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: stdout_reader.join().expect("stdout reader"),
        stderr: stderr_reader.join().expect("stderr reader"),
    }
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// An output as text for failure messages.
pub fn describe_output(output: &Output) -> String {
    format!(
        "exit: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A tokio runtime for tests that talk gRPC directly (through the `proto`
/// crate's tonic clients) where etcdctl would be too slow.
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a tokio runtime")
}

/// A bound on every gRPC request of the tests, so that a request to a
/// killed or stuck member fails instead of hanging.
pub const GRPC_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Puts `count` keys `{prefix}{i:05}` = `value-{i}` through gRPC, spread over
/// the given endpoints, with a few requests in flight at once. Panics on the
/// first failure.
pub fn put_many(endpoints: &[String], prefix: &str, count: usize) {
    const IN_FLIGHT: usize = 8;
    let runtime = tokio_runtime();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for worker_idx in 0..IN_FLIGHT {
            let endpoint = endpoints[worker_idx % endpoints.len()].clone();
            let prefix = prefix.to_string();
            tasks.push(tokio::spawn(async move {
                let mut client = proto::etcdserverpb::kv_client::KvClient::connect(endpoint.clone())
                    .await
                    .unwrap_or_else(|error| panic!("cannot connect to {endpoint}: {error}"));
                for key_idx in (worker_idx..count).step_by(IN_FLIGHT) {
                    let request = proto::etcdserverpb::PutRequest {
                        key: format!("{prefix}{key_idx:05}").into_bytes().into(),
                        value: format!("value-{key_idx}").into_bytes().into(),
                        ..Default::default()
                    };
                    match tokio::time::timeout(GRPC_REQUEST_TIMEOUT, client.put(request)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(status)) => {
                            panic!("put {prefix}{key_idx:05} through {endpoint} failed: {status}")
                        }
                        Err(_) => panic!(
                            "put {prefix}{key_idx:05} through {endpoint} took more than {GRPC_REQUEST_TIMEOUT:?}"
                        ),
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("a put worker panicked");
        }
    });
}

/// Parses `etcdctl get` simple output (key and value lines alternating) into
/// pairs. Only for keys and values without newlines.
pub fn parse_simple_get(stdout: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.len().is_multiple_of(2),
        "`etcdctl get` printed an odd number of lines:\n{stdout}"
    );
    lines
        .chunks(2)
        .map(|pair| (pair[0].to_string(), pair[1].to_string()))
        .collect()
}

/// An HTTP body's bytes with every run of letters and digits that holds a
/// digit (indices, ids, ports, times, base64) replaced by `#`: what is left
/// is the body's shape, byte for byte — field order, punctuation, escapes
/// and the final newline — which must match between etcd and shoal even
/// where the values legitimately differ (they are compared separately,
/// normalised).
pub fn body_shape(body: &str) -> String {
    let mut shape = String::with_capacity(body.len());
    let mut run = String::new();
    let flush = |run: &mut String, shape: &mut String| {
        if run.chars().any(|character| character.is_ascii_digit()) {
            shape.push('#');
        } else {
            shape.push_str(run);
        }
        run.clear();
    };
    for character in body.chars() {
        if character.is_ascii_alphanumeric() {
            run.push(character);
        } else {
            flush(&mut run, &mut shape);
            shape.push(character);
        }
    }
    flush(&mut run, &mut shape);
    shape
}
