//! Starting and supervising containers: `run` in the foreground (output to
//! the terminal and the log), `run --detach` (a monitor process, shoal
//! re-executed, supervises instead), `stop` and `rm`.
//!
//! How a container starts: a short-lived thread of `shoal run` unshares its
//! pid namespace and spawns `/proc/self/exe` with the init spec in
//! `SHOAL_RUNTIME_INIT`; that child is pid 1 of the new namespace and runs
//! `init::main`, which execs the app. The thread stays to wait for the child,
//! because the child's parent-death signal follows the thread that spawned it.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::fcntl::{F_SETFD, FdFlag, OFlag, fcntl};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::{Pid, pipe2};

use crate::container::cgroup;
use crate::container::init::EXIT_RUNTIME_FAILURE;
use crate::container::network::{self, Attachment};
use crate::container::spec::InitSpec;
use crate::container::state::{
    ContainerState, Containers, Status, now_unix_ms, now_unix_seconds, process_is_alive,
    process_start_ticks,
};

/// The environment variable that makes shoal act as a container's init.
pub const INIT_ENV: &str = "SHOAL_RUNTIME_INIT";
/// The environment variable that makes shoal act as a detached container's
/// monitor; its value is `DATA_DIR\nCONTAINER_ID`.
pub const MONITOR_ENV: &str = "SHOAL_RUNTIME_MONITOR";

/// A failure to start a container, with the exit code `shoal run` gives.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StartError {
    pub code: u8,
    pub message: String,
}

struct Started {
    pid: i32,
    waiter: JoinHandle<io::Result<ExitStatus>>,
}

/// Where the container's stdout and stderr go.
enum Output {
    /// Pipes that `shoal run` copies to its own stdout/stderr and the log.
    Tee,
    /// Straight into the log file (detached containers).
    Log,
    /// Pipes copied line by line into the log in the CRI format, with a
    /// timestamp and the stream's name (pods' containers).
    Cri,
}

/// The supervisor's ends of the container's streams.
struct Streams {
    stdout: File,
    /// `None` with a terminal: one stream carries both.
    stderr: Option<File>,
    /// The write end of the app's stdin (a pod container with `stdin`).
    stdin: Option<File>,
    /// The terminal's master side (a pod container with `tty`).
    terminal: Option<File>,
}

fn start(
    spec: &mut InitSpec,
    log_path: &Path,
    output: &Output,
) -> anyhow::Result<(Started, Option<Streams>)> {
    // Not close-on-exec: the init inherits the write end (and closes it when
    // it execs the app). The read end stays here.
    let (status_read, status_write) = pipe2(OFlag::empty()).context("cannot create a pipe")?;
    fcntl(status_read.as_raw_fd(), F_SETFD(FdFlag::FD_CLOEXEC))?;
    spec.status_fd = status_write.as_raw_fd();
    let spec_json = serde_json::to_string(spec)?;
    let (stdin, stdout, stderr, pipes) = match output {
        Output::Cri if spec.terminal => {
            let (master, slave) = crate::pod::exec::open_terminal()?;
            (
                Stdio::from(slave.try_clone()?),
                Stdio::from(slave.try_clone()?),
                Stdio::from(slave),
                Some(Streams {
                    stdout: master.try_clone()?,
                    stderr: None,
                    stdin: None,
                    terminal: Some(master),
                }),
            )
        }
        Output::Tee | Output::Cri => {
            let (out_read, out_write) = pipe2(OFlag::O_CLOEXEC)?;
            let (err_read, err_write) = pipe2(OFlag::O_CLOEXEC)?;
            let (stdin, stdin_writer) = match output {
                Output::Cri if spec.stdin => {
                    let (in_read, in_write) = pipe2(OFlag::O_CLOEXEC)?;
                    (Stdio::from(in_read), Some(File::from(in_write)))
                }
                Output::Cri => (Stdio::null(), None),
                _ => (Stdio::inherit(), None),
            };
            (
                stdin,
                Stdio::from(out_write),
                Stdio::from(err_write),
                Some(Streams {
                    stdout: File::from(out_read),
                    stderr: Some(File::from(err_read)),
                    stdin: stdin_writer,
                    terminal: None,
                }),
            )
        }
        Output::Log => {
            let log = File::options().create(true).append(true).open(log_path)?;
            (
                Stdio::null(),
                Stdio::from(log.try_clone()?),
                Stdio::from(log),
                None,
            )
        }
    };
    let (pid_sender, pid_receiver) = mpsc::channel::<io::Result<i32>>();
    let attachment = spec.network.clone();
    let waiter = std::thread::Builder::new()
        .name("container-waiter".into())
        .spawn(move || {
            // With --net=default this thread makes the container's network
            // namespace and wires it up before the init starts in it, so the
            // app finds its network ready. Network setup spawns `ip`, so it
            // comes before the pid namespace (whose first child is its pid 1).
            let host_ns = match attachment.as_ref().map(enter_new_network).transpose() {
                Ok(host_ns) => host_ns,
                Err(error) => {
                    let message = format!("{error:#}");
                    let _ = pid_sender.send(Err(io::Error::other(message.clone())));
                    return Err(io::Error::other(message));
                }
            };
            let spawned = unshare(CloneFlags::CLONE_NEWPID)
                .map_err(io::Error::from)
                .and_then(|()| {
                    Command::new("/proc/self/exe")
                        .arg0("shoal-init")
                        .env(INIT_ENV, spec_json)
                        .env_remove(MONITOR_ENV)
                        .stdin(stdin)
                        .stdout(stdout)
                        .stderr(stderr)
                        .spawn()
                });
            // The thread leaves the container's network namespace, which
            // then lives exactly as long as the container's processes.
            if let Some(host_ns) = host_ns {
                let _ = nix::sched::setns(&host_ns, CloneFlags::CLONE_NEWNET);
            }
            match spawned {
                Ok(mut child) => {
                    let _ = pid_sender.send(Ok(child.id() as i32));
                    child.wait()
                }
                Err(error) => {
                    let message = error.to_string();
                    let _ = pid_sender.send(Err(error));
                    Err(io::Error::other(message))
                }
            }
        })?;
    let pid = match pid_receiver
        .recv()
        .context("the container's waiter thread died")?
    {
        Ok(pid) => pid,
        Err(error) => {
            let _ = waiter.join();
            return Err(StartError {
                code: EXIT_RUNTIME_FAILURE,
                message: format!("cannot start the container: {error}"),
            }
            .into());
        }
    };
    drop(status_write);
    let mut report = String::new();
    File::from(status_read).read_to_string(&mut report)?;
    if !report.is_empty() {
        let _ = waiter.join();
        let (code, message) = report.split_once(' ').unwrap_or(("125", &report));
        return Err(StartError {
            code: code.parse().unwrap_or(EXIT_RUNTIME_FAILURE),
            message: message.to_string(),
        }
        .into());
    }
    Ok((Started { pid, waiter }, pipes))
}

/// Moves the calling thread into a new network namespace wired to the
/// container's attachment; returns the namespace it came from.
fn enter_new_network(attachment: &Attachment) -> anyhow::Result<File> {
    let host_ns = File::open("/proc/thread-self/ns/net")
        .context("cannot open this thread's network namespace")?;
    unshare(CloneFlags::CLONE_NEWNET).context("cannot create a network namespace")?;
    let connected = File::open("/proc/thread-self/ns/net")
        .context("cannot open the new network namespace")
        .and_then(|container_ns| network::connect(attachment, &host_ns, &container_ns));
    if let Err(error) = connected {
        let _ = nix::sched::setns(&host_ns, CloneFlags::CLONE_NEWNET);
        return Err(error.context(format!(
            "cannot connect the container to network {}",
            attachment.bridge
        )));
    }
    Ok(host_ns)
}

/// Gives back a container's address and published ports; a failure is
/// reported, not fatal (`rm` tries again).
pub fn release_network(containers: &Containers, state: &ContainerState) {
    if state.network.is_some()
        && let Err(error) = network::release(containers.runtime_root(), &state.id)
    {
        eprintln!(
            "shoal: cannot release the network of container {}: {error:#}",
            state.name
        );
    }
}

/// Copies one of the container's streams to shoal's own and to the log.
fn tee(mut source: File, log_path: PathBuf, to_stderr: bool) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .ok();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n_read = match source.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n_read) => n_read,
            };
            let chunk = &buffer[..n_read];
            // The terminal going away must not stop the log.
            let _ = if to_stderr {
                io::stderr().write_all(chunk)
            } else {
                io::stdout().write_all(chunk)
            };
            if let Some(log) = log.as_mut() {
                let _ = log.write_all(chunk);
            }
        }
    })
}

pub fn exit_code_of(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => i32::from(EXIT_RUNTIME_FAILURE),
    }
}

/// Starts a prepared container and supervises it to the end: records its
/// pid, waits, records its exit, removes its cgroups (and, with
/// `remove_on_exit`, the container). `on_started` runs once the app runs.
fn supervise(
    containers: &Containers,
    state: &mut ContainerState,
    spec: &mut InitSpec,
    output: Output,
    remove_on_exit: bool,
    on_started: impl FnOnce(&ContainerState),
) -> anyhow::Result<i32> {
    let dir = containers.dir(&state.id);
    let log_path = match &state.pod {
        Some(member) => member.log_path.clone(),
        None => dir.join("log"),
    };
    let started = start(spec, &log_path, &output);
    let (started, pipes) = match started {
        Ok(started) => started,
        Err(error) if state.pod.is_some() => {
            // A pod's container keeps its record, so the node agent can
            // report why it could not run.
            release_network(containers, state);
            cgroup::remove(&state.cgroups);
            let code = error
                .downcast_ref::<StartError>()
                .map_or(EXIT_RUNTIME_FAILURE, |start| start.code);
            state.status = Status::Exited;
            state.exit_code = Some(i32::from(code));
            state.start_error = Some(format!("{error:#}"));
            state.finished_unix_ms = Some(now_unix_ms());
            state.finished_unix_seconds = Some(now_unix_seconds());
            containers.save(state)?;
            return Err(error);
        }
        Err(error) => {
            // Nothing half-made is left: the init's mounts died with its
            // mount namespace; the network, cgroups and the directory go here.
            release_network(containers, state);
            cgroup::remove(&state.cgroups);
            let _ = containers.delete(&state.id);
            return Err(error);
        }
    };
    state.status = Status::Running;
    state.pid = Some(started.pid);
    state.pid_start_ticks = process_start_ticks(started.pid);
    state.started_unix_ms = Some(now_unix_ms());
    let supervisor_pid = std::process::id() as i32;
    state.supervisor_pid = Some(supervisor_pid);
    state.supervisor_start_ticks = process_start_ticks(supervisor_pid);
    containers.save(state)?;
    let attach_path = dir.join(crate::pod::attach::SOCKET_NAME);
    let copiers: Vec<JoinHandle<()>> = match (pipes, &output) {
        (Some(streams), Output::Cri) => {
            use crate::pod::log::{Stream, copy_as_cri};
            // Attach is a convenience: a socket that cannot be made leaves
            // the container running with its log.
            let hub = crate::pod::attach::Hub::serve(
                &attach_path,
                streams.stdin,
                streams.terminal,
                spec.stdin_once,
            )
            .ok();
            let max_bytes = state
                .pod
                .as_ref()
                .map_or(crate::pod::log::DEFAULT_MAX_LOG_BYTES, |member| {
                    member.log_max_bytes
                });
            let log = crate::pod::log::LogFile::open(log_path.clone(), max_bytes);
            let mut copiers = vec![copy_as_cri(
                streams.stdout,
                Arc::clone(&log),
                Stream::Stdout,
                hub.clone(),
            )];
            if let Some(stderr) = streams.stderr {
                copiers.push(copy_as_cri(stderr, log, Stream::Stderr, hub));
            }
            copiers
        }
        (Some(streams), _) => {
            let mut copiers = vec![tee(streams.stdout, log_path.clone(), false)];
            copiers.extend(
                streams
                    .stderr
                    .map(|stderr| tee(stderr, log_path.clone(), true)),
            );
            copiers
        }
        (None, _) => Vec::new(),
    };
    // Told once the output is taken (and a pod container's attach socket
    // listens), so a caller may attach at once.
    on_started(state);
    let status = started
        .waiter
        .join()
        .map_err(|_| anyhow::anyhow!("the container's waiter thread panicked"))?;
    for copier in copiers {
        let _ = copier.join();
    }
    let _ = fs::remove_file(&attach_path);
    let (exit_code, exit_signal) = match status {
        Ok(status) => (exit_code_of(status), status.signal()),
        Err(error) => bail!("lost track of container {}: {error}", state.name),
    };
    state.oom_killed = cgroup::oom_killed(&state.cgroups);
    release_network(containers, state);
    cgroup::remove(&state.cgroups);
    state.status = Status::Exited;
    state.exit_code = Some(exit_code);
    state.exit_signal = exit_signal;
    state.finished_unix_ms = Some(now_unix_ms());
    state.finished_unix_seconds = Some(now_unix_seconds());
    if remove_on_exit {
        containers.delete(&state.id)?;
    } else {
        containers.save(state)?;
    }
    Ok(exit_code)
}

fn report_oom(state: &ContainerState) {
    if state.oom_killed {
        let limit = state
            .memory_limit_bytes
            .map(|bytes| format!(" (limit {bytes} bytes)"))
            .unwrap_or_default();
        eprintln!(
            "shoal: container {} was killed: out of memory{limit}",
            state.name
        );
    }
}

/// Runs a prepared container in the foreground; returns its exit code.
pub fn run_foreground(
    containers: &Containers,
    state: &mut ContainerState,
    spec: &mut InitSpec,
    remove_on_exit: bool,
) -> anyhow::Result<ExitCode> {
    // `run` must outlive its container to record the exit: the signals that
    // would kill it are blocked (its children start with an empty mask).
    // The terminal delivers SIGINT and SIGQUIT to the container directly (it
    // is in the foreground process group); SIGTERM and SIGHUP, sent to `run`
    // by a supervisor, are forwarded to the app.
    let mut blocked = SigSet::empty();
    for signal in [
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTERM,
        Signal::SIGHUP,
    ] {
        blocked.add(signal);
    }
    blocked.thread_block().context("cannot block signals")?;
    let exit_code = supervise(
        containers,
        state,
        spec,
        Output::Tee,
        remove_on_exit,
        |started| {
            let Some(pid) = started.pid else { return };
            std::thread::spawn(move || {
                while let Ok(signal) = blocked.wait() {
                    if matches!(signal, Signal::SIGTERM | Signal::SIGHUP) {
                        let _ = kill(Pid::from_raw(pid), signal);
                    }
                }
            });
        },
    )?;
    report_oom(state);
    Ok(ExitCode::from(exit_code.clamp(0, 255) as u8))
}

/// Starts a prepared container under a monitor process and returns once the
/// app runs (or failed to start).
pub fn run_detached(
    data_dir: &Path,
    containers: &Containers,
    state: &ContainerState,
    spec: &InitSpec,
) -> anyhow::Result<()> {
    run_detached_with(
        Path::new("/proc/self/exe"),
        data_dir,
        containers,
        state,
        spec,
    )
}

/// [`run_detached`] with the monitor started from `executable` (a binary
/// whose `main` calls `reexec_dispatch` first). A pod's container that
/// fails to start keeps its record (as exited, with the reason).
pub fn run_detached_with(
    executable: &Path,
    data_dir: &Path,
    containers: &Containers,
    state: &ContainerState,
    spec: &InitSpec,
) -> anyhow::Result<()> {
    let dir = containers.dir(&state.id);
    fs::write(dir.join("spec.json"), serde_json::to_vec(spec)?)?;
    let mut monitor = Command::new(executable)
        .arg0("shoal-monitor")
        .env(MONITOR_ENV, format!("{}\n{}", data_dir.display(), state.id))
        .env_remove(INIT_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C meant for the terminal's
        // foreground job does not reach detached containers.
        .process_group(0)
        .spawn()
        .context("cannot start the container's monitor")?;
    let mut report = String::new();
    // The monitor writes one line and keeps running; read only that line.
    let mut stdout = monitor.stdout.take().context("monitor without stdout")?;
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte)? == 1 && byte[0] != b'\n' {
        report.push(byte[0] as char);
    }
    if report == "started" {
        // Reaped when it ends, so a long-lived caller (the node agent)
        // collects no zombies.
        std::thread::spawn(move || monitor.wait());
        return Ok(());
    }
    let _ = monitor.wait();
    if state.pod.is_none() {
        release_network(containers, state);
        cgroup::remove(&state.cgroups);
        let _ = containers.delete(&state.id);
    }
    match report.split_once(' ') {
        Some((code, message)) => Err(StartError {
            code: code.parse().unwrap_or(EXIT_RUNTIME_FAILURE),
            message: message.to_string(),
        }
        .into()),
        None => bail!("the container's monitor failed to start it"),
    }
}

/// The monitor process: starts the container described in its directory,
/// tells `run --detach` (one line on stdout), then waits and records the exit.
pub fn monitor_main(argument: &str) -> ExitCode {
    let Some((data_dir, id)) = argument.split_once('\n') else {
        return ExitCode::from(EXIT_RUNTIME_FAILURE);
    };
    let result = (|| -> anyhow::Result<()> {
        let store = crate::image::store::Store::open(Path::new(data_dir))?;
        let containers = Containers::open(store.root())?;
        let mut state = containers.load(id)?;
        let spec_bytes = fs::read(containers.dir(id).join("spec.json"))?;
        let mut spec: InitSpec = serde_json::from_slice(&spec_bytes)?;
        let output = if state.pod.is_some() {
            Output::Cri
        } else {
            Output::Log
        };
        let outcome = supervise(&containers, &mut state, &mut spec, output, false, |_| {
            // The reader may be gone by any later line: a write error is
            // not the monitor's to die of (println! would panic).
            let mut stdout = io::stdout();
            let _ = writeln!(stdout, "started");
            let _ = stdout.flush();
        });
        match outcome {
            Ok(_) => Ok(()),
            Err(error) => {
                let code = error
                    .downcast_ref::<StartError>()
                    .map_or(EXIT_RUNTIME_FAILURE, |start| start.code);
                let _ = writeln!(io::stdout(), "{code} {error:#}");
                Ok(())
            }
        }
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(io::stdout(), "{EXIT_RUNTIME_FAILURE} {error:#}");
            ExitCode::from(EXIT_RUNTIME_FAILURE)
        }
    }
}

/// Stops a running container: SIGTERM, then SIGKILL once `grace` has passed.
/// Returns once its supervisor has recorded the exit (or the wait times out).
pub fn stop(
    containers: &Containers,
    state: &ContainerState,
    grace: Duration,
) -> anyhow::Result<()> {
    stop_with(containers, state, Signal::SIGTERM, grace)
}

/// [`stop`], sending `signal` first instead of SIGTERM.
pub fn stop_with(
    containers: &Containers,
    state: &ContainerState,
    signal: Signal,
    grace: Duration,
) -> anyhow::Result<()> {
    let (Some(pid), Some(start_ticks)) = (state.pid, state.pid_start_ticks) else {
        return Ok(());
    };
    if !process_is_alive(pid, start_ticks) {
        return Ok(());
    }
    let _ = kill(Pid::from_raw(pid), signal);
    let deadline = Instant::now() + grace;
    while process_is_alive(pid, start_ticks) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if process_is_alive(pid, start_ticks) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    // The supervisor records the exit just after the process is reaped.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match containers.load(&state.id) {
            Ok(current) if current.status == Status::Running && current.pid == Some(pid) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// Removes a container that is not running: its cgroups (normally gone
/// already), network lease and rules (normally released already), upper
/// layer, log and state.
pub fn remove(containers: &Containers, state: &ContainerState) -> anyhow::Result<()> {
    if state.is_running() {
        bail!(
            "container {} is running: stop it first, or use --force",
            state.name
        );
    }
    if state.network.is_some() {
        network::release(containers.runtime_root(), &state.id)
            .with_context(|| format!("cannot release the network of container {}", state.name))?;
    }
    cgroup::remove(&state.cgroups);
    containers.delete(&state.id)
}
