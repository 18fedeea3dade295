//! Shared by the pod tests: a node's runtime on a throwaway data directory
//! with the busybox image and a network of its own, machines (threads in
//! network namespaces of their own), and small helpers.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use runtime::pod::{
    ContainerId, ContainerSpec, ContainerStatus, Ipv4Cidr, PodNetwork, PodRuntime,
    PodRuntimeOptions, PortMapping, PullPolicy, SandboxSpec,
};

use super::{Shoal, require_container_support};

/// A runtime on a throwaway data directory with the busybox image, its own
/// network, and cleanup of all of it (sandboxes, bridge, rules) on drop.
pub struct Node {
    pub shoal: Shoal,
    pub runtime: PodRuntime,
    pub image_id: String,
}

impl Node {
    pub fn new(network_index: u8) -> Node {
        require_container_support();
        let shoal = Shoal::new();
        shoal.import_busybox("busybox");
        let runtime = open_runtime(&shoal, network_index);
        runtime.ensure_network().unwrap();
        let image = runtime
            .ensure_image("busybox", PullPolicy::Never, None, true)
            .unwrap();
        Node {
            shoal,
            runtime,
            image_id: image.id,
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.shoal.data_dir.path()
    }

    pub fn sandbox(&self, uid: &str, name: &str, ports: Vec<PortMapping>) -> Option<Ipv4Addr> {
        self.runtime
            .create_sandbox(&SandboxSpec {
                uid: uid.to_string(),
                name: name.to_string(),
                namespace: "default".to_string(),
                hostname: None,
                host_network: false,
                port_mappings: ports,
            })
            .unwrap()
            .ip
    }

    pub fn container(&self, name: &str, script: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.to_string(),
            image: self.image_id.clone(),
            args: vec!["sh".into(), "-c".into(), script.to_string()],
            ..ContainerSpec::default()
        }
    }

    pub fn start(&self, uid: &str, spec: &ContainerSpec) -> ContainerId {
        self.runtime.start_container(uid, spec).unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(sandboxes) = self.runtime.list() {
            for sandbox in sandboxes {
                let _ = self.runtime.remove_sandbox(&sandbox.uid);
            }
        }
        let _ = self.runtime.teardown_network();
    }
}

pub fn open_runtime(shoal: &Shoal, network_index: u8) -> PodRuntime {
    open_runtime_at(shoal.data_dir.path(), network_index)
}

pub fn open_runtime_at(data_dir: &Path, network_index: u8) -> PodRuntime {
    PodRuntime::open_with(
        data_dir,
        PodNetwork {
            bridge: format!("shpt{network_index}"),
            pod_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 231, network_index, 0), 24).unwrap(),
            cluster_cidr: "10.231.0.0/16".parse().unwrap(),
            mtu: None,
        },
        PodRuntimeOptions {
            executable: Some(env!("CARGO_BIN_EXE_shoal-runtime").into()),
            insecure_registries: Vec::new(),
            log_max_bytes: None,
            pod_pids_limit: None,
        },
    )
    .unwrap()
}

/// Polls `check` every 20 ms for up to 10 s.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

pub fn exited(node: &Node, id: &ContainerId) -> ContainerStatus {
    let mut status = None;
    eventually("the container to exit", || {
        let current = node.runtime.container_status(id).unwrap();
        let done = matches!(current, ContainerStatus::Exited { .. });
        status = Some(current);
        done
    });
    status.unwrap()
}

pub fn http_get(address: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// Runs `argv` in the container with pipes; returns (exit code, stdout).
pub fn exec(node: &Node, id: &ContainerId, argv: &[&str]) -> (i32, String) {
    let argv: Vec<String> = argv.iter().map(|arg| arg.to_string()).collect();
    let mut process = node.runtime.exec(id, &argv, false).unwrap();
    drop(process.stdin.take());
    let mut stdout = String::new();
    process
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    process
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let code = process.wait().unwrap();
    assert!(code != 125, "exec {argv:?} failed in shoal: {stderr}");
    (code, stdout)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every directory under `root` (to `depth`) named `name`.
pub fn find_dir_named(dir: &Path, name: &str, depth: usize) -> bool {
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

pub fn iptables_rules() -> String {
    let output = std::process::Command::new("iptables-save")
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap()
}

type Job = Box<dyn FnOnce() + Send>;

/// A network namespace of its own standing for a machine: a thread that
/// entered it and runs the calls it is given there (a runtime's `ip`,
/// `iptables`, monitors and sandboxes all start from the calling thread,
/// so they land in its namespace).
pub struct Machine {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The namespace, for `ip … netns`.
    namespace: fs::File,
}

impl Machine {
    pub fn new() -> Machine {
        let (jobs, receiver) = std::sync::mpsc::channel::<Job>();
        let (namespace_sender, namespace_receiver) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            run_tool("ip", &["link", "set", "lo", "up"]);
            namespace_sender
                .send(fs::File::open("/proc/thread-self/ns/net").unwrap())
                .unwrap();
            for job in receiver {
                job();
            }
        });
        Machine {
            jobs: Some(jobs),
            thread: Some(thread),
            namespace: namespace_receiver.recv().unwrap(),
        }
    }

    pub fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> T {
        let (sender, receiver) = std::sync::mpsc::channel();
        self.jobs
            .as_ref()
            .unwrap()
            .send(Box::new(move || {
                let _ = sender.send(job());
            }))
            .unwrap();
        receiver.recv().expect("the machine's job panicked")
    }

    /// `/proc/PID/fd/N` naming this machine's namespace to `ip`.
    pub fn namespace_path(&self) -> String {
        use std::os::fd::AsRawFd;
        format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.namespace.as_raw_fd()
        )
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn run_tool(program: &str, args: &[&str]) {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A process killed when dropped (a failing test leaves none behind).
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
