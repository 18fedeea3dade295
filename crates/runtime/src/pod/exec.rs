//! `exec`: a process in a running container, with its namespaces, root,
//! cgroups, user, capabilities, environment and working directory.
//!
//! How: a thread of the caller joins the container's network, IPC, UTS and
//! pid namespaces (the pid namespace applies to the thread's children) and
//! spawns the runtime's binary with the exec spec in `SHOAL_RUNTIME_EXEC`;
//! that helper, born in the container's pid namespace, joins its cgroups
//! and mount namespace (which puts it at the container's root), becomes the
//! container's user and execs the command. The thread stays to wait for it,
//! since the helper's parent-death signal follows the thread that spawned it.

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sched::{CloneFlags, setns};
use serde::{Deserialize, Serialize};

use crate::container::cgroup;
use crate::container::init::{
    EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_RUNTIME_FAILURE, capabilities_to_keep,
    drop_privileges, resolve_user,
};
use crate::container::spec::InitSpec;
use crate::pod::{ContainerId, PodError, PodRuntime};

/// The environment variable that makes shoal act as an exec helper.
pub const EXEC_ENV: &str = "SHOAL_RUNTIME_EXEC";

/// What the helper does, from the container's own init spec.
#[derive(Serialize, Deserialize)]
struct ExecSpec {
    /// `/proc/<app pid>/ns/mnt`.
    mount_namespace: PathBuf,
    init: InitSpec,
    args: Vec<String>,
    tty: bool,
}

/// A running exec: its streams (pipes, or one pseudo-terminal) and its end.
pub struct ExecProcess {
    pid: i32,
    /// With a tty: the terminal's master side, for input and output both.
    pub terminal: Option<File>,
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    waiter: Option<JoinHandle<std::io::Result<std::process::ExitStatus>>>,
}

impl std::fmt::Debug for ExecProcess {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ExecProcess")
            .field("pid", &self.pid)
            .field("tty", &self.terminal.is_some())
            .finish()
    }
}

impl ExecProcess {
    /// The process's pid on the host.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits for the process to end; its exit code (128+N for signal N).
    pub fn wait(&mut self) -> Result<i32, PodError> {
        let waiter = self
            .waiter
            .take()
            .ok_or_else(|| anyhow::anyhow!("the exec was already waited for"))?;
        let status = waiter
            .join()
            .map_err(|_| anyhow::anyhow!("the exec's waiter thread panicked"))?
            .context("lost track of the exec")?;
        Ok(match (status.code(), status.signal()) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => i32::from(EXIT_RUNTIME_FAILURE),
        })
    }

    /// Kills the process (SIGKILL), if it has not ended yet. Its pid is
    /// still its own: it is not reaped before `wait`'s thread sees it end.
    pub fn kill(&self) {
        if self
            .waiter
            .as_ref()
            .is_some_and(|waiter| !waiter.is_finished())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Waits up to `timeout`; `None` when the process is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<i32>, PodError> {
        let deadline = Instant::now() + timeout;
        loop {
            match &self.waiter {
                None => return Err(anyhow::anyhow!("the exec was already waited for").into()),
                Some(waiter) if waiter.is_finished() => return self.wait().map(Some),
                Some(_) if Instant::now() >= deadline => return Ok(None),
                Some(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    /// Tells the terminal its new size (with a tty; otherwise nothing).
    pub fn resize(&self, columns: u16, rows: u16) -> Result<(), PodError> {
        let Some(terminal) = &self.terminal else {
            return Ok(());
        };
        rustix::termios::tcsetwinsize(
            terminal,
            rustix::termios::Winsize {
                ws_row: rows,
                ws_col: columns,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )
        .context("cannot resize the exec's terminal")?;
        Ok(())
    }
}

/// A pseudo-terminal: the master side and the path of the slave.
pub(crate) fn open_terminal() -> anyhow::Result<(File, File)> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
        .context("cannot open a pseudo-terminal")?;
    grantpt(&master).context("cannot grant the pseudo-terminal")?;
    unlockpt(&master).context("cannot unlock the pseudo-terminal")?;
    let name = ptsname(&master, Vec::new()).context("cannot name the pseudo-terminal")?;
    let path = PathBuf::from(name.to_string_lossy().into_owned());
    let slave = File::options()
        .read(true)
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NOCTTY.bits())
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    Ok((File::from(master), slave))
}

/// What [`PodRuntime::exec_sync`] gives back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    /// At most [`EXEC_OUTPUT_LIMIT`] bytes of each stream (the rest is
    /// read and dropped, so the process never blocks on a full pipe).
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// How much of each stream `exec_sync` keeps.
pub const EXEC_OUTPUT_LIMIT: usize = 1 << 20;

/// Reads `source` to its end on a thread, keeping the first `limit` bytes.
fn drain(source: Option<File>, limit: usize) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let Some(mut source) = source else {
            return kept;
        };
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match source.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n_read) => {
                    let room = limit.saturating_sub(kept.len());
                    kept.extend_from_slice(&buffer[..n_read.min(room)]);
                }
            }
        }
        kept
    })
}

impl PodRuntime {
    /// Runs `argv` in the container to its end, as CRI's ExecSync (exec
    /// probes): no stdin, both streams read as they come, the process
    /// killed after `timeout` (an error naming the timeout).
    pub fn exec_sync(
        &self,
        id: &ContainerId,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, PodError> {
        let mut process = self.exec(id, argv, false)?;
        drop(process.stdin.take());
        let stdout = drain(process.stdout.take(), EXEC_OUTPUT_LIMIT);
        let stderr = drain(process.stderr.take(), EXEC_OUTPUT_LIMIT);
        let exit_code = match process.wait_timeout(timeout)? {
            Some(code) => code,
            None => {
                process.kill();
                let _ = process.wait();
                return Err(PodError::ExecTimeout {
                    id: id.clone(),
                    seconds: timeout.as_secs_f64(),
                });
            }
        };
        // The streams end when the last holder of their write ends does: a
        // background child of the command may keep them open, so they are
        // not waited for past the process's end.
        let collect = |reader: JoinHandle<Vec<u8>>| {
            let deadline = Instant::now() + Duration::from_secs(1);
            while !reader.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if reader.is_finished() {
                reader.join().unwrap_or_default()
            } else {
                Vec::new()
            }
        };
        Ok(ExecOutput {
            exit_code,
            stdout: collect(stdout),
            stderr: collect(stderr),
        })
    }

    /// Runs `argv` in the running container `id`.
    pub fn exec(
        &self,
        id: &ContainerId,
        argv: &[String],
        tty: bool,
    ) -> Result<ExecProcess, PodError> {
        if argv.is_empty() {
            return Err(PodError::invalid("exec", "no command given"));
        }
        let state = self.load_container(id)?;
        let pid = match (state.is_running(), state.pid) {
            (true, Some(pid)) => pid,
            _ => return Err(PodError::ContainerNotRunning { id: id.clone() }),
        };
        let spec_path = self.containers()?.dir(&state.id).join("spec.json");
        let init: InitSpec = serde_json::from_slice(
            &fs::read(&spec_path)
                .with_context(|| format!("cannot read {}", spec_path.display()))?,
        )
        .with_context(|| format!("{} is corrupt", spec_path.display()))?;
        let exec_spec = ExecSpec {
            mount_namespace: PathBuf::from(format!("/proc/{pid}/ns/mnt")),
            init,
            args: argv.to_vec(),
            tty,
        };
        let spec_json = serde_json::to_string(&exec_spec).context("cannot encode an exec")?;
        // Opened here, while the app is known to be alive: the namespaces
        // are then the app's even if its pid is reused later.
        let mut namespaces = Vec::new();
        for (name, kind) in [
            ("net", CloneFlags::CLONE_NEWNET),
            ("ipc", CloneFlags::CLONE_NEWIPC),
            ("uts", CloneFlags::CLONE_NEWUTS),
            ("pid", CloneFlags::CLONE_NEWPID),
        ] {
            let path = format!("/proc/{pid}/ns/{name}");
            let file =
                File::open(&path).map_err(|_| PodError::ContainerNotRunning { id: id.clone() })?;
            namespaces.push((file, kind, name));
        }
        if !state.is_running() {
            return Err(PodError::ContainerNotRunning { id: id.clone() });
        }

        let (terminal, stdin, stdout, stderr, mine) = if tty {
            let (master, slave) = open_terminal()?;
            let share = |slave: &File| slave.try_clone().context("cannot share the terminal");
            (
                Some(master),
                Stdio::from(share(&slave)?),
                Stdio::from(share(&slave)?),
                Stdio::from(slave),
                (None, None, None),
            )
        } else {
            let (stdin_read, stdin_write) = std::io::pipe().context("cannot create a pipe")?;
            let (stdout_read, stdout_write) = std::io::pipe().context("cannot create a pipe")?;
            let (stderr_read, stderr_write) = std::io::pipe().context("cannot create a pipe")?;
            (
                None,
                Stdio::from(stdin_read),
                Stdio::from(stdout_write),
                Stdio::from(stderr_write),
                (
                    Some(File::from(OwnedFd::from(stdin_write))),
                    Some(File::from(OwnedFd::from(stdout_read))),
                    Some(File::from(OwnedFd::from(stderr_read))),
                ),
            )
        };
        let executable = self.executable().to_path_buf();
        let (pid_sender, pid_receiver) = mpsc::channel::<std::io::Result<i32>>();
        let waiter = std::thread::Builder::new()
            .name("container-exec".into())
            .spawn(move || {
                let spawned = (|| -> std::io::Result<std::process::Child> {
                    for (file, kind, name) in &namespaces {
                        setns(file, *kind).map_err(|errno| {
                            std::io::Error::other(format!(
                                "cannot join the container's {name} namespace: {errno}"
                            ))
                        })?;
                    }
                    Command::new(&executable)
                        .arg0("shoal-exec")
                        .env(EXEC_ENV, spec_json)
                        .env_remove(crate::container::run::INIT_ENV)
                        .env_remove(crate::container::run::MONITOR_ENV)
                        .stdin(stdin)
                        .stdout(stdout)
                        .stderr(stderr)
                        .spawn()
                })();
                match spawned {
                    Ok(mut child) => {
                        let _ = pid_sender.send(Ok(child.id() as i32));
                        child.wait()
                    }
                    Err(error) => {
                        let message = error.to_string();
                        let _ = pid_sender.send(Err(error));
                        Err(std::io::Error::other(message))
                    }
                }
            })
            .context("cannot start a thread")?;
        let pid = pid_receiver
            .recv()
            .context("the exec's thread died")?
            .map_err(|error| anyhow::anyhow!("cannot start the exec: {error}"))?;
        let (stdin, stdout, stderr) = mine;
        Ok(ExecProcess {
            pid,
            terminal,
            stdin,
            stdout,
            stderr,
            waiter: Some(waiter),
        })
    }
}

/// The exec helper (shoal re-executed in the container's pid namespace);
/// returns only on failure, with the exit code to use.
pub fn main(spec_json: &str) -> u8 {
    let spec: ExecSpec = match serde_json::from_str(spec_json) {
        Ok(spec) => spec,
        Err(error) => {
            eprintln!("shoal: invalid exec spec: {error}");
            return EXIT_RUNTIME_FAILURE;
        }
    };
    let (code, error) = match enter_and_exec(&spec) {
        Ok(never) => match never {},
        Err(failure) => failure,
    };
    // The helper's stderr is the exec's: the caller reads this line.
    eprintln!("shoal: {error:#}");
    code
}

enum Never {}

fn enter_and_exec(spec: &ExecSpec) -> Result<Never, (u8, anyhow::Error)> {
    let failed = |error: anyhow::Error| (EXIT_RUNTIME_FAILURE, error);
    let init = &spec.init;
    cgroup::join(&init.cgroups).map_err(failed)?;
    let mount_namespace = File::open(&spec.mount_namespace)
        .context("the container has exited")
        .map_err(failed)?;
    setns(&mount_namespace, CloneFlags::CLONE_NEWNS)
        .context("cannot join the container's mount namespace")
        .map_err(failed)?;
    if spec.tty {
        rustix::process::setsid()
            .context("cannot start a session")
            .map_err(failed)?;
        rustix::process::ioctl_tiocsctty(std::io::stdin())
            .context("cannot take the terminal")
            .map_err(failed)?;
    }
    nix::unistd::chdir(init.workdir.as_str())
        .with_context(|| format!("cannot enter working directory {}", init.workdir))
        .map_err(failed)?;
    let mut user = resolve_user(&init.user).map_err(failed)?;
    user.groups.extend(&init.supplemental_groups);
    user.groups.sort_unstable();
    user.groups.dedup();
    let keep = capabilities_to_keep(init).map_err(failed)?;
    // An exec'd process is held to the container's seccomp profile too.
    let filters = crate::container::seccomp::programs_for(&init.seccomp, init.privileged, &keep)
        .map_err(|error| failed(error.into()))?;
    drop_privileges(
        &user,
        &keep,
        !init.privileged && !init.allow_privilege_escalation,
    )
    .map_err(failed)?;
    crate::container::seccomp::install(&filters).map_err(|error| failed(error.into()))?;
    let mut env = init.env.clone();
    if !env.iter().any(|(key, _)| key == "HOME") {
        env.push(("HOME".to_string(), user.home.clone()));
    }
    let (program, args) = spec
        .args
        .split_first()
        .ok_or_else(|| failed(anyhow::anyhow!("no command given")))?;
    let error = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env)
        .exec();
    Err(match error.kind() {
        std::io::ErrorKind::NotFound => (
            EXIT_NOT_FOUND,
            anyhow::anyhow!(
                "executable {program:?} not found in image {}",
                init.image_name
            ),
        ),
        _ => (
            EXIT_NOT_EXECUTABLE,
            anyhow::anyhow!(
                "cannot run {program:?} in image {}: {error}",
                init.image_name
            ),
        ),
    })
}
