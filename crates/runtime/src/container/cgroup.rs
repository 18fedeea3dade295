//! Resource limits as cgroups, on whichever layout the machine has: cgroup v1
//! (one hierarchy per controller, including the hybrid layout where a
//! controller-less v2 hierarchy sits at /sys/fs/cgroup/unified) or pure v2.
//!
//! Where a container's cgroup goes: under v1, beneath the cgroup shoal itself
//! runs in, per controller (`<mount><own path>/shoal/<id>`), so limits a
//! supervisor put on shoal still hold for its containers. Under v2 the "no
//! internal processes" rule forbids enabling controllers below a cgroup that
//! has processes (shoal's own), so containers go under `/sys/fs/cgroup/shoal/`.
//!
//! Only the controllers a limit needs are used: a container without limits
//! costs no cgroup at all.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The default most processes of a container (`shoal run --pids-limit`)
/// and of a pod (the agent's `--pod-pids-limit`): ample for a service,
/// low enough that a fork bomb stops long before the host's limit.
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;
/// The CFS period shoal uses; the quota is `millicores * period / 1000`.
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// The relative CPU weight under contention, as cgroup v1 `cpu.shares`
    /// (1024 a core; Kubernetes gives a container `requests.cpu * 1024`,
    /// at least 2). Written as the matching `cpu.weight` under v2.
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    /// The most processes (and threads) the container may have: past it,
    /// `fork` and `clone` fail with EAGAIN.
    #[serde(default)]
    pub pids_max: Option<u64>,
    /// Only the default devices (null, zero, full, random, urandom, tty,
    /// the pseudo-terminals) may be made or opened, whatever the
    /// capabilities: a devices cgroup under v1. cgroup v2 would need an
    /// eBPF device program, which shoal does not load: there the limit is
    /// the container's /dev, `nodev` mounts and the dropped `CAP_MKNOD`.
    #[serde(default)]
    pub restrict_devices: bool,
}

/// The devices a container may use (`type major:minor access`, as v1's
/// `devices.allow` takes them): runc's default set, less its blanket
/// `mknod` of any device.
const ALLOWED_DEVICES: &[&str] = &[
    "c 1:3 rwm",   // null
    "c 1:5 rwm",   // zero
    "c 1:7 rwm",   // full
    "c 1:8 rwm",   // random
    "c 1:9 rwm",   // urandom
    "c 5:0 rwm",   // tty
    "c 5:2 rwm",   // ptmx
    "c 136:* rwm", // the pseudo-terminals in /dev/pts
];

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.cpu_millis.is_none()
            && self.memory_bytes.is_none()
            && self.cpu_shares.is_none()
            && self.pids_max.is_none()
            && !self.restrict_devices
    }

    fn needs_cpu(&self) -> bool {
        self.cpu_millis.is_some() || self.cpu_shares.is_some()
    }
}

/// cgroup v2 `cpu.weight` (1-10000) for v1 `cpu.shares` (2-262144), as
/// runc and the kubelet convert it.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

fn is_pure_v2() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
}

/// The v1 hierarchy for `controller`: its mount point and shoal's own path in it.
fn v1_hierarchy(controller: &str) -> anyhow::Result<(PathBuf, String)> {
    let own_cgroups =
        fs::read_to_string("/proc/self/cgroup").context("cannot read /proc/self/cgroup")?;
    let own_path = own_cgroups
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            controllers
                .split(',')
                .any(|name| name == controller)
                .then(|| path.to_string())
        })
        .next()
        .with_context(|| {
            format!("the cgroup v1 {controller} controller is not available on this machine")
        })?;
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
    for line in mountinfo.lines() {
        // Fields: id parent major:minor root mount-point options [tags] - type source super-options
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let mut after_fields = after.split(' ');
        if after_fields.next() != Some("cgroup") {
            continue;
        }
        let super_options = after_fields.nth(1).unwrap_or("");
        if super_options.split(',').any(|option| option == controller) {
            let mount_point = before.split(' ').nth(4).unwrap_or("");
            return Ok((PathBuf::from(mount_point), own_path));
        }
    }
    anyhow::bail!("the cgroup v1 {controller} controller is not mounted")
}

fn write(path: &Path, value: &str) -> anyhow::Result<()> {
    fs::write(path, value).with_context(|| format!("cannot write {value:?} to {}", path.display()))
}

/// Creates the container's cgroups with `limits` applied; returns their
/// directories (empty without limits). On error, nothing is left behind.
pub fn create(container_id: &str, limits: &Limits) -> anyhow::Result<Vec<PathBuf>> {
    create_in(&Placement::default(), container_id, limits)
}

/// Where a container's cgroups go, beyond [`create`]'s defaults.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    /// A group between shoal's cgroup and the container's (a pod's,
    /// `pod-<uid>`), made on first use and removed by [`remove_group`].
    pub group: Option<String>,
    /// Make the memory and CPU accounting cgroups even without limits, so
    /// the container's usage can be read.
    pub always: bool,
    /// The most processes the whole group may have (a pod's, kubelet's
    /// `--pod-pids-limit`), written on the group's pids cgroup.
    pub group_pids_max: Option<u64>,
}

/// [`create`], placed as `placement` says.
pub fn create_in(
    placement: &Placement,
    container_id: &str,
    limits: &Limits,
) -> anyhow::Result<Vec<PathBuf>> {
    if limits.is_empty() && !placement.always {
        return Ok(Vec::new());
    }
    let mut created = Vec::new();
    let result = create_into(placement, container_id, limits, &mut created);
    if let Err(error) = result {
        remove(&created);
        return Err(error);
    }
    Ok(created)
}

fn create_into(
    placement: &Placement,
    container_id: &str,
    limits: &Limits,
    created: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let group = placement.group.as_deref();
    if is_pure_v2() {
        let shoal = Path::new(CGROUP_ROOT).join("shoal");
        let parent = match group {
            Some(group) => shoal.join(group),
            None => shoal.clone(),
        };
        fs::create_dir_all(&parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let mut ancestors = vec![Path::new(CGROUP_ROOT), shoal.as_path()];
        if group.is_some() {
            ancestors.push(parent.as_path());
        }
        let pids = limits.pids_max.is_some() || placement.group_pids_max.is_some();
        let controllers: &[&str] = if pids {
            &["cpu", "memory", "pids"]
        } else {
            &["cpu", "memory"]
        };
        for dir in ancestors {
            let subtree = dir.join("cgroup.subtree_control");
            let current = fs::read_to_string(&subtree).unwrap_or_default();
            for controller in controllers {
                if !current.split_whitespace().any(|name| name == *controller) {
                    write(&subtree, &format!("+{controller}"))?;
                }
            }
        }
        if group.is_some()
            && let Some(max) = placement.group_pids_max
        {
            write(&parent.join("pids.max"), &max.to_string())?;
        }
        let dir = parent.join(container_id);
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        created.push(dir.clone());
        if let Some(max) = limits.pids_max {
            write(&dir.join("pids.max"), &max.to_string())?;
        }
        if let Some(millis) = limits.cpu_millis {
            write(
                &dir.join("cpu.max"),
                &format!("{} {CPU_PERIOD_US}", millis * CPU_PERIOD_US / 1000),
            )?;
        }
        if let Some(shares) = limits.cpu_shares {
            write(
                &dir.join("cpu.weight"),
                &shares_to_weight(shares).to_string(),
            )?;
        }
        if let Some(bytes) = limits.memory_bytes {
            write(&dir.join("memory.max"), &bytes.to_string())?;
            // Without this, the limit would push the container into swap
            // instead of killing it.
            let _ = write(&dir.join("memory.swap.max"), "0");
        }
        return Ok(());
    }
    if limits.needs_cpu() || placement.always {
        let dir = v1_dir("cpu", group, container_id)?;
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        created.push(dir.clone());
        if let Some(millis) = limits.cpu_millis {
            write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write(
                &dir.join("cpu.cfs_quota_us"),
                &(millis * CPU_PERIOD_US / 1000).to_string(),
            )?;
        }
        if let Some(shares) = limits.cpu_shares {
            write(
                &dir.join("cpu.shares"),
                &shares.clamp(2, 262_144).to_string(),
            )?;
        }
    }
    if limits.memory_bytes.is_some() || placement.always {
        let dir = v1_dir("memory", group, container_id)?;
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        created.push(dir.clone());
        if let Some(bytes) = limits.memory_bytes {
            write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
            // memory+swap: present only when swap accounting is on.
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &bytes.to_string())?;
            }
        }
    }
    if limits.pids_max.is_some() || placement.group_pids_max.is_some() {
        if let (Some(group), Some(max)) = (group, placement.group_pids_max) {
            let group_dir = v1_group_dir("pids", Some(group))?;
            fs::create_dir_all(&group_dir)
                .with_context(|| format!("cannot create {}", group_dir.display()))?;
            write(&group_dir.join("pids.max"), &max.to_string())?;
        }
        let dir = v1_dir("pids", group, container_id)?;
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        created.push(dir.clone());
        if let Some(max) = limits.pids_max {
            write(&dir.join("pids.max"), &max.to_string())?;
        }
    }
    if limits.restrict_devices {
        let dir = v1_dir("devices", group, container_id)?;
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        created.push(dir.clone());
        // Deny all, then allow the default set: the order matters, as a
        // new devices cgroup starts from its parent's (usually all).
        write(&dir.join("devices.deny"), "a")?;
        for rule in ALLOWED_DEVICES {
            write(&dir.join("devices.allow"), rule)?;
        }
    }
    if placement.always {
        // CPU time is counted by cpuacct, often mounted with cpu.
        let dir = v1_dir("cpuacct", group, container_id)?;
        if !created.contains(&dir) {
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            created.push(dir);
        }
    }
    Ok(())
}

fn v1_dir(controller: &str, group: Option<&str>, container_id: &str) -> anyhow::Result<PathBuf> {
    Ok(v1_group_dir(controller, group)?.join(container_id))
}

fn v1_group_dir(controller: &str, group: Option<&str>) -> anyhow::Result<PathBuf> {
    let (mount_point, own_path) = v1_hierarchy(controller)?;
    let shoal = mount_point
        .join(own_path.trim_start_matches('/'))
        .join("shoal");
    Ok(match group {
        Some(group) => shoal.join(group),
        None => shoal,
    })
}

/// Removes a group's cgroups (once its containers' are gone); what is not
/// there is fine.
pub fn remove_group(group: &str) {
    remove(&group_dirs(group));
}

/// A group's cgroup directories (those of the controllers shoal uses,
/// whether or not they exist).
pub fn group_dirs(group: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if is_pure_v2() {
        dirs.push(Path::new(CGROUP_ROOT).join("shoal").join(group));
    } else {
        for controller in ["cpu", "memory", "cpuacct", "pids", "devices"] {
            if let Ok(dir) = v1_group_dir(controller, Some(group))
                && !dirs.contains(&dir)
            {
                dirs.push(dir);
            }
        }
    }
    dirs
}

/// What a container has used, from its cgroups (`None` where they do not
/// say).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_usage_nanos: Option<u64>,
    pub memory_usage_bytes: Option<u64>,
    /// Usage less inactive file pages: what the kubelet reports and
    /// evicts on.
    pub memory_working_set_bytes: Option<u64>,
}

fn read_number(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The `key value` line of a flat-keyed cgroup file.
fn read_key(path: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok())?
    })
}

/// Reads the usage in `dirs` (a container's cgroups, v1 or v2).
pub fn usage(dirs: &[PathBuf]) -> Usage {
    let mut usage = Usage::default();
    for dir in dirs {
        // v2
        if let Some(micros) = read_key(&dir.join("cpu.stat"), "usage_usec") {
            usage.cpu_usage_nanos = Some(micros * 1000);
        }
        if let Some(bytes) = read_number(&dir.join("memory.current")) {
            usage.memory_usage_bytes = Some(bytes);
            let inactive = read_key(&dir.join("memory.stat"), "inactive_file").unwrap_or(0);
            usage.memory_working_set_bytes = Some(bytes.saturating_sub(inactive));
        }
        // v1
        if let Some(nanos) = read_number(&dir.join("cpuacct.usage")) {
            usage.cpu_usage_nanos = Some(nanos);
        }
        if let Some(bytes) = read_number(&dir.join("memory.usage_in_bytes")) {
            usage.memory_usage_bytes = Some(bytes);
            let inactive = read_key(&dir.join("memory.stat"), "total_inactive_file").unwrap_or(0);
            usage.memory_working_set_bytes = Some(bytes.saturating_sub(inactive));
        }
    }
    usage
}

/// Moves the calling process into the cgroups (called by the container's
/// init, before it runs the app, so no process ever runs unlimited).
pub fn join(dirs: &[PathBuf]) -> anyhow::Result<()> {
    for dir in dirs {
        write(&dir.join("cgroup.procs"), "0")?;
    }
    Ok(())
}

/// Whether the kernel's OOM killer struck in these cgroups.
pub fn oom_killed(dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|dir| {
        // v2: memory.events; v1: memory.oom_control. Both have "oom_kill N".
        ["memory.events", "memory.oom_control"].iter().any(|file| {
            fs::read_to_string(dir.join(file)).is_ok_and(|text| {
                text.lines().any(|line| {
                    line.strip_prefix("oom_kill ")
                        .and_then(|count| count.trim().parse::<u64>().ok())
                        .is_some_and(|count| count > 0)
                })
            })
        })
    })
}

/// Removes the cgroups. Processes of a dead container may take a moment to be
/// reaped after its init exits, so removal is retried for a bounded time.
pub fn remove(dirs: &[PathBuf]) {
    for dir in dirs {
        for attempt in 0..200 {
            match fs::remove_dir(dir) {
                Ok(()) => break,
                Err(error) if error.kind() == io::ErrorKind::NotFound => break,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(if attempt < 20 { 1 } else { 10 }))
                }
            }
        }
    }
}

/// The pids of the processes in a cgroup.
pub fn processes(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| {
            text.lines()
                .filter_map(|line| line.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
