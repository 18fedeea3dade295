//! Containers on disk: one directory per container under
//! `DATA_DIR/runtime/containers/<id>/` holding `state.json` (what `ps`
//! shows), `spec.json` (what its init was told), `log` (its output), and the
//! overlay's `upper/`, `work/` and `rootfs/`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::container::network::Attachment;
use crate::digest::Digest;
use crate::image::store::{remove_tree, write_ephemeral};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub name: String,
    pub image: String,
    pub manifest_digest: Digest,
    /// The layer blobs the container's root filesystem is made of; `image
    /// gc` keeps them while the container exists.
    pub layers: Vec<Digest>,
    pub command: Vec<String>,
    pub created_unix_ms: u64,
    pub status: Status,
    /// The app's pid on the host, and its start time (clock ticks after
    /// boot), which tells it apart from a later process given the same pid.
    pub pid: Option<i32>,
    pub pid_start_ticks: Option<u64>,
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    pub finished_unix_seconds: Option<u64>,
    pub cgroups: Vec<PathBuf>,
    pub memory_limit_bytes: Option<u64>,
    pub detached: bool,
    /// Its address and published ports with `--net=default`.
    #[serde(default)]
    pub network: Option<Attachment>,
    /// When the app started and ended, in milliseconds (pods report both).
    #[serde(default)]
    pub started_unix_ms: Option<u64>,
    #[serde(default)]
    pub finished_unix_ms: Option<u64>,
    /// The signal that killed the app, when one did.
    #[serde(default)]
    pub exit_signal: Option<i32>,
    /// Why the app never ran (its command missing, the root filesystem
    /// impossible to build): a pod's container keeps this record.
    #[serde(default)]
    pub start_error: Option<String>,
    /// Set for a container of a pod (`runtime::pod`).
    #[serde(default)]
    pub pod: Option<PodMember>,
    /// The process that waits for the app and records its exit (`shoal
    /// run`, or a detached container's monitor), and its start time.
    #[serde(default)]
    pub supervisor_pid: Option<i32>,
    #[serde(default)]
    pub supervisor_start_ticks: Option<u64>,
}

/// A pod's container: which pod, which of its containers, which attempt,
/// and where its CRI-format log goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodMember {
    pub pod_uid: String,
    pub container_name: String,
    pub attempt: u32,
    pub log_path: PathBuf,
    /// The signal `stop` sends first (the image's StopSignal, else SIGTERM).
    pub stop_signal: i32,
    /// The log is rotated past this size.
    #[serde(default = "default_log_max_bytes")]
    pub log_max_bytes: u64,
}

fn default_log_max_bytes() -> u64 {
    crate::pod::log::DEFAULT_MAX_LOG_BYTES
}

impl ContainerState {
    /// The status as it really is: a container recorded as running whose
    /// process is gone (its supervisor was killed) shows as exited.
    pub fn live_status(&self) -> Status {
        match (self.status, self.pid, self.pid_start_ticks) {
            (Status::Running, Some(pid), Some(start)) if !process_is_alive(pid, start) => {
                Status::Exited
            }
            (status, _, _) => status,
        }
    }

    pub fn is_running(&self) -> bool {
        self.live_status() == Status::Running
    }

    /// Whether the app is gone but its supervisor, still alive, has yet to
    /// record the exit (a moment's window after every exit).
    pub fn exit_pending(&self) -> bool {
        self.status == Status::Running
            && !self.is_running()
            && matches!(
                (self.supervisor_pid, self.supervisor_start_ticks),
                (Some(pid), Some(start)) if process_is_alive(pid, start)
            )
    }

    pub fn status_text(&self) -> String {
        match (self.live_status(), self.exit_code) {
            (Status::Created, _) => "created".to_string(),
            (Status::Running, _) => "running".to_string(),
            (Status::Exited, Some(code)) if self.oom_killed => {
                format!("exited ({code}, out of memory)")
            }
            (Status::Exited, Some(code)) => format!("exited ({code})"),
            (Status::Exited, None) => "exited (unknown)".to_string(),
        }
    }
}

pub fn now_unix_seconds() -> u64 {
    now_unix_ms() / 1000
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// A process's start time in clock ticks after boot (field 22 of
/// /proc/PID/stat), or `None` when it is gone or a zombie.
pub fn process_start_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

pub fn process_is_alive(pid: i32, start_ticks: u64) -> bool {
    process_start_ticks(pid) == Some(start_ticks)
}

pub struct Containers {
    root: PathBuf,
}

impl Containers {
    pub fn open(runtime_root: &Path) -> anyhow::Result<Containers> {
        let root = runtime_root.join("containers");
        fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
        Ok(Containers { root })
    }

    /// `DATA_DIR/runtime/`.
    pub fn runtime_root(&self) -> &Path {
        self.root.parent().unwrap_or(&self.root)
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    pub fn save(&self, state: &ContainerState) -> anyhow::Result<()> {
        write_ephemeral(
            &self.dir(&state.id).join("state.json"),
            &serde_json::to_vec_pretty(state)?,
        )
    }

    pub fn load(&self, id: &str) -> anyhow::Result<ContainerState> {
        let path = self.dir(id).join("state.json");
        let bytes = fs::read(&path).with_context(|| format!("container {id} not found"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))
    }

    /// Every container, oldest first. Directories without a readable state
    /// (a `run` that is still creating one) are skipped.
    pub fn list(&self) -> anyhow::Result<Vec<ContainerState>> {
        let mut states = Vec::new();
        for entry in fs::read_dir(&self.root)?.flatten() {
            if let Some(id) = entry.file_name().to_str()
                && let Ok(state) = self.load(id)
            {
                states.push(state);
            }
        }
        states.sort_by(|left, right| {
            (left.created_unix_ms, &left.id).cmp(&(right.created_unix_ms, &right.id))
        });
        Ok(states)
    }

    /// Finds a container by name, full id or unique id prefix.
    pub fn find(&self, text: &str) -> anyhow::Result<ContainerState> {
        let states = self.list()?;
        if let Some(state) = states
            .iter()
            .find(|state| state.name == text || state.id == text)
        {
            return Ok(state.clone());
        }
        let matches: Vec<&ContainerState> = states
            .iter()
            .filter(|state| text.len() >= 4 && state.id.starts_with(text))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => bail!("container {text} not found"),
            many => bail!(
                "container id {text} is ambiguous: it matches {} containers",
                many.len()
            ),
        }
    }

    /// Creates a container's directory with its first state; fails if the
    /// name is taken. The caller holds the store lock.
    pub fn create(&self, state: &ContainerState) -> anyhow::Result<()> {
        if self
            .list()?
            .iter()
            .any(|existing| existing.name == state.name)
        {
            bail!(
                "a container named {} already exists: remove it with `shoal rm {}`",
                state.name,
                state.name
            );
        }
        let dir = self.dir(&state.id);
        for sub in ["upper", "work", "rootfs"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        self.save(state)
    }

    /// Removes a container's directory (its upper layer, log and state).
    pub fn delete(&self, id: &str) -> anyhow::Result<()> {
        let dir = self.dir(id);
        // Renamed first so that a half-removed container never shows in `ps`.
        let doomed = self.root.join(format!(".removing-{id}"));
        match fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot remove {}", dir.display()));
            }
        }
        remove_tree(&doomed);
        Ok(())
    }
}

/// Formats unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_utc(unix_seconds: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_seconds);
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn own_process_is_alive_and_start_time_is_checked() {
        let pid = std::process::id() as i32;
        let start = process_start_ticks(pid).unwrap();
        assert!(process_is_alive(pid, start));
        assert!(!process_is_alive(pid, start + 1));
    }
}
