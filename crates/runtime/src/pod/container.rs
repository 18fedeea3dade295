//! A pod's containers: started detached under the runtime's monitor process
//! (shoal re-executed, as `shoal run --detach` does), so they outlive the
//! agent; recorded as `shoal run`'s containers are, with the pod they belong
//! to. The init joins the sandbox's pinned namespaces and makes its own
//! mount and pid namespaces.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use nix::sys::signal::Signal;

use crate::container::cgroup::{self, Limits, Usage};
use crate::container::init::parse_capability;
use crate::container::run::{self as launcher, StartError};
use crate::container::spec::{InitSpec, NetMode, Volume};
use crate::container::state::{ContainerState, Containers, PodMember, Status, now_unix_ms};
use crate::digest::Digest;
use crate::image::store::Store;
use crate::pod::{
    ContainerId, ContainerRecord, ContainerSpec, ContainerStatus, ExitReason, PodError, PodRuntime,
    StartOptions, check_uid,
};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn system_time(unix_ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(unix_ms)
}

/// A container's status as the agent reports it.
pub(crate) fn status_of(state: &ContainerState) -> ContainerStatus {
    // An exit the monitor has yet to record shows as running until it has.
    let status = if state.exit_pending() {
        Status::Running
    } else {
        state.live_status()
    };
    match (status, state.pid) {
        (Status::Created, _) => ContainerStatus::Created,
        (Status::Running, Some(pid)) => ContainerStatus::Running {
            pid,
            started_at: system_time(state.started_unix_ms.unwrap_or(state.created_unix_ms)),
        },
        _ => {
            let exit_code = state
                .exit_code
                .unwrap_or(i32::from(crate::container::init::EXIT_RUNTIME_FAILURE));
            let (reason, message) = if let Some(error) = &state.start_error {
                (ExitReason::ContainerCannotRun, error.clone())
            } else if state.oom_killed {
                (ExitReason::OomKilled, String::new())
            } else if state.exit_code.is_none() {
                // Recorded as running, but its monitor is gone (killed):
                // the exit was never seen.
                (
                    ExitReason::Error,
                    "the container's monitor died; its exit was not recorded".to_string(),
                )
            } else if exit_code == 0 {
                (ExitReason::Completed, String::new())
            } else {
                (ExitReason::Error, String::new())
            };
            ContainerStatus::Exited {
                exit_code,
                signal: state.exit_signal,
                reason,
                message,
                started_at: state.started_unix_ms.map(system_time),
                finished_at: system_time(
                    state
                        .finished_unix_ms
                        .or(state.finished_unix_seconds.map(|seconds| seconds * 1000))
                        .unwrap_or(state.created_unix_ms),
                ),
            }
        }
    }
}

fn record_of(state: &ContainerState, member: &PodMember) -> ContainerRecord {
    ContainerRecord {
        id: ContainerId(state.id.clone()),
        name: member.container_name.clone(),
        attempt: member.attempt,
        image: state.manifest_digest.to_string(),
        status: status_of(state),
    }
}

impl PodRuntime {
    pub(crate) fn containers(&self) -> Result<Containers, PodError> {
        Ok(Containers::open(&self.inner.runtime_root)?)
    }

    pub(crate) fn load_container(&self, id: &ContainerId) -> Result<ContainerState, PodError> {
        let containers = self.containers()?;
        let valid = id.0.len() == 32 && id.0.bytes().all(|byte| byte.is_ascii_hexdigit());
        let mut state = match valid.then(|| containers.load(&id.0)) {
            Some(Ok(state)) if state.pod.is_some() => state,
            _ => return Err(PodError::ContainerNotFound { id: id.clone() }),
        };
        // Just after an exit, the monitor is about to record it: worth a
        // short wait, so the status has the exit code. Bounded: 2 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while state.exit_pending() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            match containers.load(&id.0) {
                Ok(current) => state = current,
                Err(_) => return Err(PodError::ContainerNotFound { id: id.clone() }),
            }
        }
        Ok(state)
    }

    /// Every pod container on the machine, with its pod's uid.
    pub(crate) fn all_containers(&self) -> Result<Vec<(String, ContainerRecord)>, PodError> {
        Ok(self
            .containers()?
            .list()?
            .iter()
            .filter_map(|state| {
                let member = state.pod.as_ref()?;
                Some((member.pod_uid.clone(), record_of(state, member)))
            })
            .collect())
    }

    pub(crate) fn containers_of(&self, pod_uid: &str) -> Result<Vec<ContainerRecord>, PodError> {
        Ok(self
            .all_containers()?
            .into_iter()
            .filter(|(uid, _)| uid == pod_uid)
            .map(|(_, record)| record)
            .collect())
    }

    /// `pods/<uid>/logs/<container>/<attempt>.log`, as the kubelet lays out
    /// `/var/log/pods`.
    fn log_file(&self, pod_uid: &str, container_name: &str, attempt: u32) -> PathBuf {
        self.pod_dir(pod_uid)
            .join("logs")
            .join(container_name)
            .join(format!("{attempt}.log"))
    }

    /// Starts one container in the pod's sandbox, detached and supervised.
    pub fn start_container(
        &self,
        pod_uid: &str,
        spec: &ContainerSpec,
    ) -> Result<ContainerId, PodError> {
        self.start_container_with(pod_uid, spec, &StartOptions::default())
    }

    /// [`start_container`](Self::start_container) with `options`.
    pub fn start_container_with(
        &self,
        pod_uid: &str,
        spec: &ContainerSpec,
        options: &StartOptions,
    ) -> Result<ContainerId, PodError> {
        check_uid(pod_uid)?;
        validate(spec)?;
        let sandbox = self.load_sandbox(pod_uid)?;
        let store = Store::open(&self.inner.data_dir)?;
        let sweep_guard = store.sweep_guard(false)?;
        let not_present = || PodError::ImageNotPresent {
            image: spec.image.clone(),
        };
        let manifest_digest: Digest = store.resolve(&spec.image).map_err(|_| not_present())?;
        let image = store
            .load(&manifest_digest)
            .map_err(|error| PodError::ImageCorrupt {
                image: spec.image.clone(),
                message: format!("{error:#}"),
            })?;
        // A tampered layer is refused, as `shoal run` refuses it.
        for layer in &image.manifest.layers {
            store
                .verify_blob(&layer.digest)
                .and_then(|()| store.unpack_layer(layer, None))
                .map_err(|error| PodError::ImageCorrupt {
                    image: spec.image.clone(),
                    message: format!("{error:#}"),
                })?;
        }
        let mount_point_layer = store.mount_point_layer()?;
        let config = &image.config.config;
        let image_name = image
            .names
            .first()
            .map_or_else(|| manifest_digest.to_string(), ToString::to_string);
        let stop_signal = match config.stop_signal.as_deref() {
            Some(text) => parse_signal(text).ok_or_else(|| {
                PodError::invalid(
                    "image",
                    format!("{image_name} has an unknown StopSignal {text:?}"),
                )
            })?,
            None => Signal::SIGTERM,
        };

        let id = format!("{:032x}", rand::random::<u128>());
        let log_path = self.log_file(pod_uid, &spec.name, spec.attempt);
        if let Some(dir) = log_path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // An attempt is one instance: a retried start under the same
        // attempt number starts its log afresh.
        let _ = fs::remove_file(&log_path);
        let _ = fs::remove_file(crate::pod::log::LogFile::rotated_path(&log_path));
        if let Some(dir) = log_path.parent() {
            prune_old_logs(dir, spec.attempt);
        }

        let mut env: Vec<(String, String)> = Vec::new();
        let mut set_env = |key: &str, value: &str| {
            env.retain(|(existing, _)| existing != key);
            env.push((key.to_string(), value.to_string()));
        };
        set_env("PATH", DEFAULT_PATH);
        set_env("HOSTNAME", &sandbox.hostname);
        for entry in config.env.iter().flatten() {
            if let Some((key, value)) = entry.split_once('=') {
                set_env(key, value);
            }
        }
        for (key, value) in &spec.env {
            set_env(key, value);
        }
        let workdir = spec
            .working_dir
            .clone()
            .or_else(|| config.working_dir.clone())
            .filter(|dir| !dir.is_empty())
            .unwrap_or_else(|| "/".to_string());
        let user = {
            let base = match spec.user {
                Some(uid) => uid.to_string(),
                None => config
                    .user
                    .clone()
                    .unwrap_or_default()
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            };
            match (spec.group, spec.user, config.user.as_deref()) {
                (Some(gid), _, _) => format!("{}:{gid}", if base.is_empty() { "0" } else { &base }),
                // The image's own user:group, when the spec names no user.
                (None, None, Some(image_user)) => image_user.to_string(),
                (None, _, _) => base,
            }
        };
        let limits = Limits {
            cpu_millis: spec.resources.cpu_limit_millis,
            memory_bytes: spec.resources.memory_limit_bytes,
            // The kubelet's conversion: requests.cpu * 1024 / 1000, at least 2.
            cpu_shares: spec
                .resources
                .cpu_request_millis
                .map(|millis| (millis * 1024 / 1000).max(2)),
            pids_max: None,
            restrict_devices: !spec.privileged,
        };

        // The same instance started again (after it could not run, say)
        // replaces the record it left; a running one is an error.
        for existing in self.containers_of(pod_uid)? {
            if existing.name == spec.name && existing.attempt == spec.attempt {
                if matches!(existing.status, ContainerStatus::Running { .. }) {
                    return Err(PodError::invalid(
                        "container",
                        format!(
                            "{} (attempt {}) is already running as {}",
                            spec.name, spec.attempt, existing.id
                        ),
                    ));
                }
                self.remove_container(&existing.id)?;
            }
        }
        let containers = self.containers()?;
        let short_uid: String = pod_uid.chars().take(8).collect();
        let mut state = ContainerState {
            id: id.clone(),
            // Docker's kubelet naming: unique per pod, container and attempt.
            name: format!(
                "k8s_{}_{}_{}_{short_uid}_{}",
                spec.name, sandbox.name, sandbox.namespace, spec.attempt
            ),
            image: image_name.clone(),
            manifest_digest: manifest_digest.clone(),
            layers: image
                .manifest
                .layers
                .iter()
                .map(|layer| layer.digest.clone())
                .collect(),
            command: spec.args.clone(),
            created_unix_ms: now_unix_ms(),
            status: Status::Created,
            pid: None,
            pid_start_ticks: None,
            exit_code: None,
            oom_killed: false,
            finished_unix_seconds: None,
            cgroups: Vec::new(),
            memory_limit_bytes: spec.resources.memory_limit_bytes,
            detached: true,
            supervisor_pid: None,
            supervisor_start_ticks: None,
            network: None,
            started_unix_ms: None,
            finished_unix_ms: None,
            exit_signal: None,
            start_error: None,
            pod: Some(PodMember {
                pod_uid: pod_uid.to_string(),
                container_name: spec.name.clone(),
                attempt: spec.attempt,
                log_path: log_path.clone(),
                stop_signal: stop_signal as i32,
                log_max_bytes: self
                    .inner
                    .options
                    .log_max_bytes
                    .unwrap_or(crate::pod::log::DEFAULT_MAX_LOG_BYTES),
            }),
        };
        {
            let _lock = store.lock()?;
            containers.create(&state).map_err(|error| {
                PodError::invalid("container", format!("{}: {error:#}", spec.name))
            })?;
        }
        drop(sweep_guard);
        // Under the pod's group, and always made, so usage can be read.
        let placement = cgroup::Placement {
            group: Some(pod_cgroup_group(pod_uid)),
            always: true,
            group_pids_max: self.inner.options.pod_pids_limit,
        };
        state.cgroups = match cgroup::create_in(&placement, &id, &limits) {
            Ok(dirs) => dirs,
            Err(error) => {
                let _ = containers.delete(&id);
                return Err(error.into());
            }
        };
        if let Err(error) = containers.save(&state) {
            cgroup::remove(&state.cgroups);
            let _ = containers.delete(&id);
            return Err(error.into());
        }
        let init = InitSpec {
            image_name: image_name.clone(),
            layers_root: store.layers_root(),
            layers: image
                .manifest
                .layers
                .iter()
                .rev()
                .map(|layer| layer.digest.hex().to_string())
                .collect(),
            mount_point_layer: Some(mount_point_layer),
            container_dir: containers.dir(&id),
            hostname: sandbox.hostname.clone(),
            net: if sandbox.host_network {
                NetMode::Host
            } else {
                NetMode::Default
            },
            network: None,
            cgroups: state.cgroups.clone(),
            volumes: spec
                .mounts
                .iter()
                .map(|mount| Volume {
                    host_path: mount.host_path.clone(),
                    container_path: mount.container_path.clone(),
                    read_only: mount.read_only,
                })
                .collect(),
            read_only_rootfs: spec.read_only_rootfs,
            args: spec.args.clone(),
            env,
            workdir,
            user,
            status_fd: -1,
            pod: Some(self.pod_namespaces(&sandbox)),
            privileged: spec.privileged,
            capabilities_add: spec.capabilities_add.clone(),
            capabilities_drop: spec.capabilities_drop.clone(),
            supplemental_groups: spec.supplemental_groups.clone(),
            stdin: spec.stdin,
            stdin_once: options.stdin_once,
            terminal: spec.tty,
            seccomp: spec.seccomp.clone(),
            allow_privilege_escalation: spec.allow_privilege_escalation,
        };
        let started = launcher::run_detached_with(
            self.executable(),
            &self.inner.data_dir,
            &containers,
            &state,
            &init,
        );
        match started {
            Ok(()) => Ok(ContainerId(id)),
            Err(error) => {
                let message = match error.downcast_ref::<StartError>() {
                    Some(start) => start.message.clone(),
                    None => format!("{error:#}"),
                };
                let exit_code = containers
                    .load(&id)
                    .ok()
                    .and_then(|state| state.exit_code)
                    .unwrap_or(i32::from(crate::container::init::EXIT_RUNTIME_FAILURE));
                // The monitor may have died before it could record the
                // failure: the record says so either way.
                if let Ok(mut state) = containers.load(&id)
                    && state.start_error.is_none()
                {
                    state.status = Status::Exited;
                    state.exit_code = Some(exit_code);
                    state.start_error = Some(message.clone());
                    state.finished_unix_ms = Some(now_unix_ms());
                    let _ = containers.save(&state);
                    cgroup::remove(&state.cgroups);
                }
                Err(PodError::ContainerCannotRun {
                    id: ContainerId(id),
                    container: spec.name.clone(),
                    exit_code,
                    message,
                })
            }
        }
    }

    pub fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus, PodError> {
        Ok(status_of(&self.load_container(id)?))
    }

    /// The stop signal (SIGTERM or the image's StopSignal), up to `grace`
    /// to exit, then SIGKILL; returns once the process is gone and its exit
    /// recorded.
    pub fn stop_container(&self, id: &ContainerId, grace: Duration) -> Result<(), PodError> {
        let state = self.load_container(id)?;
        let signal = state
            .pod
            .as_ref()
            .and_then(|member| Signal::try_from(member.stop_signal).ok())
            .unwrap_or(Signal::SIGTERM);
        launcher::stop_with(&self.containers()?, &state, signal, grace)?;
        Ok(())
    }

    /// Removes a stopped container's record, cgroups and root filesystem
    /// (its log stays with the pod, for `--previous`, until the sandbox
    /// goes). A running container is killed first.
    pub fn remove_container(&self, id: &ContainerId) -> Result<(), PodError> {
        let state = match self.load_container(id) {
            Ok(state) => state,
            Err(PodError::ContainerNotFound { .. }) => return Ok(()),
            Err(error) => return Err(error),
        };
        let containers = self.containers()?;
        if state.is_running() {
            launcher::stop(&containers, &state, Duration::ZERO)?;
        }
        let state = containers.load(&state.id)?;
        launcher::remove(&containers, &state)?;
        Ok(())
    }

    /// What the running container uses now (`kubectl top`).
    pub fn container_stats(&self, id: &ContainerId) -> Result<Usage, PodError> {
        let state = self.load_container(id)?;
        if !state.is_running() {
            return Err(PodError::ContainerNotRunning { id: id.clone() });
        }
        Ok(cgroup::usage(&state.cgroups))
    }

    /// What the pod's containers use together.
    pub fn pod_stats(&self, pod_uid: &str) -> Result<Usage, PodError> {
        check_uid(pod_uid)?;
        self.load_sandbox(pod_uid)?;
        Ok(cgroup::usage(&cgroup::group_dirs(&pod_cgroup_group(
            pod_uid,
        ))))
    }

    pub(crate) fn kill_and_remove(&self, record: &ContainerRecord) -> Result<(), PodError> {
        self.remove_container(&record.id)
    }

    /// The container instance's log, in the CRI format (see [`crate::pod::log`]).
    pub fn log_path(&self, id: &ContainerId) -> PathBuf {
        match self.load_container(id) {
            Ok(ContainerState {
                pod: Some(member), ..
            }) => member.log_path,
            // An unknown container has no log; a path that does not exist
            // says so to whoever opens it.
            _ => self.pods_dir().join("unknown-container.log"),
        }
    }

    /// The log of the instance before `id` (the highest attempt below its
    /// own that left a log), for `kubectl logs --previous`.
    pub fn previous_log_path(&self, id: &ContainerId) -> Result<Option<PathBuf>, PodError> {
        let state = self.load_container(id)?;
        let Some(member) = &state.pod else {
            return Ok(None);
        };
        let dir = self
            .pod_dir(&member.pod_uid)
            .join("logs")
            .join(&member.container_name);
        let previous = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                entry
                    .file_name()
                    .to_str()?
                    .strip_suffix(".log")?
                    .parse::<u32>()
                    .ok()
            })
            .filter(|attempt| *attempt < member.attempt)
            .max();
        Ok(previous.map(|attempt| dir.join(format!("{attempt}.log"))))
    }
}

/// Keeps, of a container's earlier instances' logs, only the latest one
/// (what `--previous` shows), as the kubelet does: a container restarting
/// for days would otherwise leave a log per restart.
fn prune_old_logs(dir: &std::path::Path, attempt: u32) {
    let attempt_of = |name: &str| -> Option<u32> {
        name.strip_suffix(".log.1")
            .or_else(|| name.strip_suffix(".log"))?
            .parse()
            .ok()
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let logs: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let earlier = attempt_of(entry.file_name().to_str()?)?;
            Some((earlier, entry.path()))
        })
        .filter(|(earlier, _)| *earlier < attempt)
        .collect();
    let Some(previous) = logs.iter().map(|(earlier, _)| *earlier).max() else {
        return;
    };
    for (earlier, path) in logs {
        if earlier != previous {
            let _ = fs::remove_file(path);
        }
    }
}

/// The cgroup group of a pod's containers.
pub(crate) fn pod_cgroup_group(pod_uid: &str) -> String {
    format!("pod-{pod_uid}")
}

fn validate(spec: &ContainerSpec) -> Result<(), PodError> {
    let name_ok = !spec.name.is_empty()
        && spec.name.len() <= 63
        && spec
            .name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
    if !name_ok {
        return Err(PodError::invalid(
            "container name",
            format!("{:?}: use lower-case letters, digits and '-'", spec.name),
        ));
    }
    if spec.args.is_empty() {
        return Err(PodError::invalid(
            "container",
            format!(
                "{}: no command: the image has none and the pod gives none",
                spec.name
            ),
        ));
    }
    if let Some(dir) = &spec.working_dir
        && !dir.starts_with('/')
    {
        return Err(PodError::invalid(
            "working directory",
            format!("{dir:?}: it must be absolute"),
        ));
    }
    for mount in &spec.mounts {
        if !mount.container_path.is_absolute()
            || mount
                .container_path
                .components()
                .any(|part| part == std::path::Component::ParentDir)
        {
            return Err(PodError::invalid(
                "mount",
                format!(
                    "{}: the container path must be absolute, without '..'",
                    mount.container_path.display()
                ),
            ));
        }
        if !mount.host_path.exists() {
            return Err(PodError::invalid(
                "mount",
                format!("{} does not exist on the host", mount.host_path.display()),
            ));
        }
    }
    for name in spec.capabilities_add.iter().chain(&spec.capabilities_drop) {
        parse_capability(name)
            .map_err(|error| PodError::invalid("capability", error.to_string()))?;
    }
    Ok(())
}

/// `SIGTERM`, `TERM` or `15`.
fn parse_signal(text: &str) -> Option<Signal> {
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).ok();
    }
    let upper = text.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_previous_instances_log_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["0.log", "1.log", "1.log.1", "2.log", "2.log.1", "notes"] {
            fs::write(dir.path().join(name), "x").unwrap();
        }
        prune_old_logs(dir.path(), 3);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["2.log", "2.log.1", "notes"]);
    }

    #[test]
    fn stop_signals_parse_by_name_or_number() {
        assert_eq!(parse_signal("SIGQUIT"), Some(Signal::SIGQUIT));
        assert_eq!(parse_signal("int"), Some(Signal::SIGINT));
        assert_eq!(parse_signal("9"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("SIGNOPE"), None);
    }
}
