//! The container's init: shoal re-executed as the first process of the
//! container's pid namespace. It joins the cgroups, makes the other
//! namespaces, builds the root filesystem, drops privileges, then `exec`s the
//! app, which so becomes pid 1. A failure before the exec is written to the
//! status pipe (as `CODE message`) for `shoal run` to report.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use caps::{CapSet, Capability};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::{Mode, SFlag, makedev, mknod, umask};
use nix::unistd::{Gid, Uid, chdir, pivot_root, setgid, setgroups, sethostname, setuid};

use crate::container::cgroup;
use crate::container::netlink;
use crate::container::seccomp;
use crate::container::spec::{InitSpec, NetMode, PodNamespaces};

/// Exit code (and status-pipe code) for a failure of shoal itself, as docker
/// and podman use 125.
pub const EXIT_RUNTIME_FAILURE: u8 = 125;
/// The command exists but cannot be run.
pub const EXIT_NOT_EXECUTABLE: u8 = 126;
/// The command is not in the image.
pub const EXIT_NOT_FOUND: u8 = 127;

/// The capabilities a container's root keeps: docker's default set, less
/// `CAP_MKNOD` (shoal's /dev is made for the container, and a device node
/// made inside would reach the host's devices, which no devices cgroup
/// guards here).
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Runs the init; returns only on failure, with the exit code to use.
pub fn main(spec_json: &str) -> u8 {
    let spec: InitSpec = match serde_json::from_str(spec_json) {
        Ok(spec) => spec,
        Err(error) => {
            eprintln!("shoal: invalid container init spec: {error}");
            return EXIT_RUNTIME_FAILURE;
        }
    };
    let mut status = open_status_pipe(spec.status_fd);
    let (code, message) = match setup_and_exec(&spec) {
        Ok(never) => match never {},
        Err(Failure { code, error }) => (code, format!("{error:#}")),
    };
    match status.as_mut() {
        Some(pipe) => {
            let _ = write!(pipe, "{code} {message}");
        }
        None => eprintln!("shoal: {message}"),
    }
    code
}

/// Takes the inherited status pipe: reopened through /proc (a new,
/// close-on-exec descriptor) and the inherited one marked close-on-exec, so
/// the app never holds it and `shoal run` sees end-of-file at the exec.
fn open_status_pipe(fd: i32) -> Option<File> {
    use nix::fcntl::{F_SETFD, FdFlag, fcntl};
    let pipe = File::options()
        .write(true)
        .open(format!("/proc/self/fd/{fd}"))
        .ok();
    let _ = fcntl(fd, F_SETFD(FdFlag::FD_CLOEXEC));
    pipe
}

struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Failure {
        Failure {
            code: EXIT_RUNTIME_FAILURE,
            error: error.into(),
        }
    }
}

enum Never {}

fn setup_and_exec(spec: &InitSpec) -> Result<Never, Failure> {
    // `run` blocks the signals it forwards, and a signal mask survives
    // fork and exec: the app must start with none blocked.
    nix::sys::signal::SigSet::all()
        .thread_unblock()
        .context("cannot unblock signals")?;
    cgroup::join(&spec.cgroups)?;
    if spec.terminal {
        // The terminal on stdin becomes the session's controlling
        // terminal: the app gets SIGINT from ^C, SIGWINCH on a resize.
        rustix::process::setsid().context("cannot start a session")?;
        rustix::process::ioctl_tiocsctty(std::io::stdin()).context("cannot take the terminal")?;
    }
    let mut namespaces = CloneFlags::CLONE_NEWNS;
    match &spec.pod {
        // A pod's containers share its network, IPC and hostname: the init
        // joins the namespaces the sandbox pinned.
        Some(pod) => join_pod_namespaces(pod)?,
        None => {
            namespaces |= CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
            // With --net=default the parent started this process in the
            // network namespace it has wired up already.
            if spec.net != NetMode::Host && spec.network.is_none() {
                namespaces |= CloneFlags::CLONE_NEWNET;
            }
        }
    }
    unshare(namespaces).context("cannot create the container's namespaces")?;
    // Modes are set explicitly below; a umask would only get in the way.
    umask(Mode::empty());
    let rootfs = spec.container_dir.join("rootfs");
    mount_rootfs(spec, &rootfs).context("cannot set up the root filesystem")?;
    if spec.pod.is_none() {
        sethostname(&spec.hostname).context("cannot set the hostname")?;
    }
    enter_rootfs(&rootfs).context("cannot enter the root filesystem")?;
    if spec.net != NetMode::Host {
        netlink::loopback_up()?;
    }
    if !spec.privileged {
        mask_proc()?;
    }
    if spec.read_only_rootfs {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .context("cannot make the root filesystem read-only")?;
    }
    umask(Mode::from_bits_truncate(0o022));
    if !Path::new(&spec.workdir).is_dir() {
        fs::create_dir_all(&spec.workdir)
            .with_context(|| format!("cannot create working directory {}", spec.workdir))?;
    }
    chdir(spec.workdir.as_str())
        .with_context(|| format!("cannot enter working directory {}", spec.workdir))?;
    let mut user = resolve_user(&spec.user)?;
    user.groups.extend(&spec.supplemental_groups);
    user.groups.sort_unstable();
    user.groups.dedup();
    let keep = capabilities_to_keep(spec)?;
    let filters = seccomp::programs_for(&spec.seccomp, spec.privileged, &keep)?;
    drop_privileges(
        &user,
        &keep,
        !spec.privileged && !spec.allow_privilege_escalation,
    )?;
    // Last, so that the filter need not allow what the setup does.
    seccomp::install(&filters)?;
    let mut env = spec.env.clone();
    if !env.iter().any(|(key, _)| key == "HOME") {
        env.push(("HOME".to_string(), user.home.clone()));
    }
    let Some((program, args)) = spec.args.split_first() else {
        return Err(Failure {
            code: EXIT_RUNTIME_FAILURE,
            error: anyhow::anyhow!("no command to run: the image has none; give one after --"),
        });
    };
    let error = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env)
        .exec();
    let code = match error.kind() {
        std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
        _ => EXIT_NOT_EXECUTABLE,
    };
    let error = if code == EXIT_NOT_FOUND {
        anyhow::anyhow!("command {program:?} not found in image {}", spec.image_name)
    } else {
        anyhow::anyhow!(
            "cannot run {program:?} in image {}: {error}",
            spec.image_name
        )
    };
    Err(Failure { code, error })
}

/// Joins a pod's pinned network, IPC and UTS namespaces (those it has; a
/// host-network pod keeps the host's network and hostname).
fn join_pod_namespaces(pod: &PodNamespaces) -> anyhow::Result<()> {
    for (path, kind, name) in [
        (&pod.net, CloneFlags::CLONE_NEWNET, "network"),
        (&pod.ipc, CloneFlags::CLONE_NEWIPC, "IPC"),
        (&pod.uts, CloneFlags::CLONE_NEWUTS, "UTS"),
    ] {
        let Some(path) = path else { continue };
        let file = File::open(path)
            .with_context(|| format!("the pod's {name} namespace {} is gone", path.display()))?;
        setns(&file, kind).with_context(|| format!("cannot join the pod's {name} namespace"))?;
    }
    Ok(())
}

/// The capability set the app keeps: all of them when privileged, else the
/// default set with the spec's additions and removals (`ALL` in either).
pub(crate) fn capabilities_to_keep(spec: &InitSpec) -> anyhow::Result<caps::CapsHashSet> {
    // "All" is all this process holds: the kernel may know fewer than the
    // caps crate, and shoal itself may run with a reduced set.
    let held = caps::read(None, CapSet::Permitted).context("cannot read capabilities")?;
    if spec.privileged {
        return Ok(held);
    }
    let mut keep: caps::CapsHashSet = DEFAULT_CAPABILITIES
        .iter()
        .copied()
        .filter(|capability| held.contains(capability))
        .collect();
    for name in &spec.capabilities_drop {
        match parse_capability(name)? {
            None => keep.clear(),
            Some(capability) => {
                keep.remove(&capability);
            }
        }
    }
    for name in &spec.capabilities_add {
        match parse_capability(name)? {
            None => keep = held.clone(),
            Some(capability) if held.contains(&capability) => {
                keep.insert(capability);
            }
            Some(capability) => bail!("cannot grant {capability}: shoal itself does not hold it"),
        }
    }
    Ok(keep)
}

/// `NET_ADMIN` or `CAP_NET_ADMIN`; `None` for `ALL`.
pub fn parse_capability(name: &str) -> anyhow::Result<Option<Capability>> {
    let upper = name.to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(None);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    full.parse::<Capability>()
        .map(Some)
        .map_err(|_| anyhow::anyhow!("unknown capability {name:?}"))
}

fn mount_rootfs(spec: &InitSpec, rootfs: &Path) -> anyhow::Result<()> {
    // Nothing mounted here may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("cannot make mounts private")?;
    let upper = spec.container_dir.join("upper");
    let work = spec.container_dir.join("work");
    // Layer directories are given relative to the layers root (the init's
    // working directory while mounting), which keeps the mount options short
    // enough for images with many layers.
    chdir(&spec.layers_root)
        .with_context(|| format!("cannot enter {}", spec.layers_root.display()))?;
    let empty_layer = spec.container_dir.join("empty");
    let mut lower_dirs = spec.layers.clone();
    if let Some(layer) = &spec.mount_point_layer {
        lower_dirs.push(layer.display().to_string());
    }
    let lower = if lower_dirs.is_empty() {
        fs::create_dir_all(&empty_layer)?;
        empty_layer.display().to_string()
    } else {
        lower_dirs.join(":")
    };
    let options = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .context("cannot mount the overlay root filesystem")?;

    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_dir = mount_point(rootfs, "/proc", true)?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        nosuid_nodev_noexec,
        None::<&str>,
    )
    .context("cannot mount /proc")?;

    let dev = mount_point(rootfs, "/dev", true)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .context("cannot mount /dev")?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let path = dev.join(name);
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .with_context(|| format!("cannot create /dev/{name}"))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))?;
    }
    if spec.privileged {
        bind_host_devices(&dev)?;
    }
    let pts = dev.join("pts");
    fs::create_dir(&pts)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .context("cannot mount /dev/pts")?;
    let shm = dev.join("shm");
    fs::create_dir(&shm)?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        nosuid_nodev_noexec,
        Some("mode=1777,size=65536k"),
    )
    .context("cannot mount /dev/shm")?;
    let mqueue = dev.join("mqueue");
    fs::create_dir(&mqueue)?;
    mount(
        Some("mqueue"),
        &mqueue,
        Some("mqueue"),
        nosuid_nodev_noexec,
        None::<&str>,
    )
    .context("cannot mount /dev/mqueue")?;

    let sys = mount_point(rootfs, "/sys", true)?;
    let sys_flags = if spec.privileged {
        nosuid_nodev_noexec
    } else {
        nosuid_nodev_noexec | MsFlags::MS_RDONLY
    };
    if spec.net == NetMode::Host {
        // sysfs shows the network namespace of whoever mounts it; with the
        // host's network the host's view is the right one, read-only.
        mount(
            Some("/sys"),
            &sys,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .context("cannot mount /sys")?;
        mount(
            None::<&str>,
            &sys,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | sys_flags,
            None::<&str>,
        )
        .context("cannot make /sys read-only")?;
    } else {
        mount(Some("sysfs"), &sys, Some("sysfs"), sys_flags, None::<&str>)
            .context("cannot mount /sys")?;
    }

    for volume in &spec.volumes {
        let host_is_dir = fs::metadata(&volume.host_path)
            .with_context(|| {
                format!(
                    "volume {} does not exist on the host",
                    volume.host_path.display()
                )
            })?
            .is_dir();
        let target = mount_point(
            rootfs,
            &volume.container_path.to_string_lossy(),
            host_is_dir,
        )?;
        mount(
            Some(&volume.host_path),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("cannot mount volume {}", volume.host_path.display()))?;
        if volume.read_only {
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .with_context(|| {
                format!(
                    "cannot make volume {} read-only",
                    volume.container_path.display()
                )
            })?;
        }
    }
    Ok(())
}

/// A privileged container's device access: every device node at the top of
/// the host's /dev bound into the container's (those made above aside).
fn bind_host_devices(dev: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    for entry in fs::read_dir("/dev").context("cannot list the host's /dev")? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if !(kind.is_char_device() || kind.is_block_device()) {
            continue;
        }
        let target = dev.join(entry.file_name());
        // Not `exists`, which follows links: /dev/ptmx is one already.
        if fs::symlink_metadata(&target).is_ok() {
            continue;
        }
        File::create(&target).with_context(|| format!("cannot create {}", target.display()))?;
        mount(
            Some(&entry.path()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("cannot bind {}", entry.path().display()))?;
    }
    Ok(())
}

/// Resolves `path` inside `rootfs` the way the container will see it
/// (symlinks followed relative to the container's root, never out of it),
/// and creates it (a directory, or an empty file) when missing. Without
/// this, an image with `/data -> /etc` would have shoal create files in the
/// host's /etc.
fn mount_point(rootfs: &Path, path: &str, is_dir: bool) -> anyhow::Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|part| !part.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut n_links_followed = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = resolved.join(&part);
        let host_path = rootfs.join(&candidate);
        match fs::symlink_metadata(&host_path) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                n_links_followed += 1;
                if n_links_followed > 40 {
                    bail!("too many symbolic links in {path}");
                }
                let target = fs::read_link(&host_path)?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                let mut target_parts: Vec<String> = target
                    .components()
                    .filter_map(|component| match component {
                        Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
                        Component::ParentDir => Some("..".to_string()),
                        _ => None,
                    })
                    .collect();
                target_parts.reverse();
                pending.extend(target_parts);
            }
            _ => resolved = candidate,
        }
    }
    let target = rootfs.join(&resolved);
    if !target.exists() {
        if is_dir {
            fs::create_dir_all(&target)
                .with_context(|| format!("cannot create {path} in the container"))?;
        } else {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)?;
            }
            File::create(&target)
                .with_context(|| format!("cannot create {path} in the container"))?;
        }
    }
    Ok(target)
}

fn enter_rootfs(rootfs: &Path) -> anyhow::Result<()> {
    // pivot_root(".", ".") stacks the old root under the new one; unmounting
    // it lazily then leaves only the container's tree.
    chdir(rootfs)?;
    pivot_root(".", ".").context("pivot_root failed")?;
    umount2(".", MntFlags::MNT_DETACH).context("cannot detach the host's root")?;
    chdir("/")?;
    Ok(())
}

/// The paths runc masks: files hidden behind /dev/null, directories behind
/// an empty read-only tmpfs. They expose or control the host's kernel
/// (memory, keys, timers, firmware, power capping).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The paths runc makes read-only: the kernel's tunables and triggers.
pub const READ_ONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Masks [`MASKED_PATHS`] and protects [`READ_ONLY_PATHS`] (those the
/// kernel has), as runc does for every unprivileged container.
fn mask_proc() -> anyhow::Result<()> {
    for path in MASKED_PATHS {
        let Ok(metadata) = fs::symlink_metadata(path) else {
            continue;
        };
        if metadata.is_dir() {
            mount(
                Some("tmpfs"),
                *path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0,mode=555"),
            )
        } else {
            mount(
                Some("/dev/null"),
                *path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        }
        .with_context(|| format!("cannot mask {path}"))?;
    }
    for path in READ_ONLY_PATHS {
        if Path::new(path).exists() {
            mount(
                Some(*path),
                *path,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .with_context(|| format!("cannot protect {path}"))?;
            mount(
                None::<&str>,
                *path,
                None::<&str>,
                MsFlags::MS_REMOUNT
                    | MsFlags::MS_BIND
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .with_context(|| format!("cannot make {path} read-only"))?;
        }
    }
    Ok(())
}

pub(crate) struct User {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) groups: Vec<u32>,
    pub(crate) home: String,
}

/// Resolves `uid[:gid]` or `name[:group]` against the container's own
/// /etc/passwd and /etc/group.
pub(crate) fn resolve_user(text: &str) -> anyhow::Result<User> {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group_file = fs::read_to_string("/etc/group").unwrap_or_default();
    let (user_part, group_part) = match text.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (text, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    // Fields: name:password:uid:gid:gecos:home:shell
    let entry = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() >= 7 && (fields[0] == user_part || fields[2] == user_part));
    let (uid, mut gid, home, name) = match (&entry, user_part.parse::<u32>()) {
        (Some(fields), _) => (
            fields[2]
                .parse()
                .with_context(|| format!("bad uid for {} in /etc/passwd", fields[0]))?,
            fields[3]
                .parse()
                .with_context(|| format!("bad gid for {} in /etc/passwd", fields[0]))?,
            fields[5].to_string(),
            Some(fields[0].to_string()),
        ),
        (None, Ok(uid)) => (uid, uid, "/".to_string(), None),
        (None, Err(_)) => bail!("user {user_part:?} not found in the image's /etc/passwd"),
    };
    let group_entries: Vec<Vec<&str>> = group_file
        .lines()
        .map(|line| line.split(':').collect())
        .filter(|fields: &Vec<&str>| fields.len() >= 4)
        .collect();
    if let Some(group) = group_part {
        gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries
                .iter()
                .find(|fields| fields[0] == group)
                .and_then(|fields| fields[2].parse().ok())
                .with_context(|| format!("group {group:?} not found in the image's /etc/group"))?,
        };
    }
    let mut groups: BTreeSet<u32> = BTreeSet::from([gid]);
    if let Some(name) = &name {
        for fields in &group_entries {
            if fields[3].split(',').any(|member| member == name)
                && let Ok(member_gid) = fields[2].parse()
            {
                groups.insert(member_gid);
            }
        }
    }
    Ok(User {
        uid,
        gid,
        groups: groups.into_iter().collect(),
        home,
    })
}

pub(crate) fn drop_privileges(
    user: &User,
    keep: &caps::CapsHashSet,
    no_new_privileges: bool,
) -> anyhow::Result<()> {
    for capability in caps::all() {
        if !keep.contains(&capability) {
            caps::drop(None, CapSet::Bounding, capability)
                .with_context(|| format!("cannot drop {capability}"))?;
        }
    }
    let groups: Vec<Gid> = user.groups.iter().map(|gid| Gid::from_raw(*gid)).collect();
    setgroups(&groups).context("cannot set supplementary groups")?;
    setgid(Gid::from_raw(user.gid)).context("cannot set the group id")?;
    // For a non-root user this also empties the permitted and effective sets.
    setuid(Uid::from_raw(user.uid)).context("cannot set the user id")?;
    let retained = if user.uid == 0 {
        keep.clone()
    } else {
        caps::CapsHashSet::new()
    };
    caps::set(None, CapSet::Effective, &retained).context("cannot set effective capabilities")?;
    caps::set(None, CapSet::Permitted, &retained).context("cannot set permitted capabilities")?;
    caps::set(None, CapSet::Inheritable, &caps::CapsHashSet::new())
        .context("cannot set inheritable capabilities")?;
    caps::clear(None, CapSet::Ambient).context("cannot clear ambient capabilities")?;
    if no_new_privileges {
        nix::sys::prctl::set_no_new_privs().context("cannot set no_new_privs")?;
    }
    // The container dies with `shoal run` (or its monitor). Set last: a
    // change of credentials clears it.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .context("cannot set the parent-death signal")?;
    Ok(())
}
