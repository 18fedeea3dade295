//! Seccomp: the system calls a container's processes may make. A profile is
//! either shoal's `RuntimeDefault` (the allow-list Docker and containerd
//! ship, with its argument conditions and capability-dependent additions),
//! none (`Unconfined`), or a profile file in Docker's JSON format
//! (`defaultAction`, `syscalls[{names, action, args, includes, excludes}]`).
//!
//! A profile compiles to one or more classic BPF programs (by `seccompiler`).
//! A filter has one action for the calls it matches and one for the rest,
//! so a profile with several actions becomes a stack: first the default
//! action with its allowed calls, then one filter per other action, whose
//! matches win because the kernel takes the strictest verdict of all
//! filters and, between two `ERRNO`s, the newest filter's.

use std::collections::BTreeMap;
use std::path::Path;

use caps::CapsHashSet;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::{Deserialize, Serialize};

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot read seccomp profile {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid seccomp profile {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("seccomp profile: unsupported action {0:?}")]
    UnsupportedAction(String),
    #[error("seccomp profile: unsupported comparison {0:?}")]
    UnsupportedOperator(String),
    #[error("seccomp profile: argument index {0} out of range (0-5)")]
    ArgumentIndex(u8),
    #[error("cannot compile the seccomp filter: {0}")]
    Compile(String),
    #[error("cannot install the seccomp filter: {0}")]
    Install(String),
}

/// What a container runs under.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seccomp {
    /// The Docker/containerd default allow-list.
    #[default]
    RuntimeDefault,
    /// No filter.
    Unconfined,
    /// A profile from a file, already parsed.
    Profile(Profile),
}

impl Seccomp {
    /// `unconfined` or a profile file's path, as `--security-opt seccomp=`
    /// takes it.
    pub fn from_option(value: &str) -> Result<Seccomp, SeccompError> {
        match value {
            "unconfined" => Ok(Seccomp::Unconfined),
            "runtime/default" | "builtin" => Ok(Seccomp::RuntimeDefault),
            path => Profile::read(Path::new(path)).map(Seccomp::Profile),
        }
    }
}

/// A profile in Docker's (and the OCI runtime spec's) JSON form. Fields
/// shoal does not use (`architectures`, `archMap`, `flags`, comments) are
/// accepted and ignored: the filter is built for the machine's own
/// architecture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: String,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub syscalls: Option<Vec<SyscallRule>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyscallRule {
    #[serde(default)]
    pub names: Option<Vec<String>>,
    /// The older, one-name form.
    #[serde(default)]
    pub name: Option<String>,
    pub action: String,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Option<Vec<Argument>>,
    #[serde(default)]
    pub includes: Option<Condition>,
    #[serde(default)]
    pub excludes: Option<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Argument {
    pub index: u8,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

/// When a rule applies: the container holds one of `caps`, the machine is
/// one of `arches`, its kernel at least `min_kernel`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(default)]
    pub caps: Option<Vec<String>>,
    #[serde(default)]
    pub arches: Option<Vec<String>>,
    #[serde(default)]
    pub min_kernel: Option<String>,
}

impl Profile {
    pub fn read(path: &Path) -> Result<Profile, SeccompError> {
        let text = std::fs::read(path).map_err(|source| SeccompError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let profile: Profile =
            serde_json::from_slice(&text).map_err(|error| SeccompError::Invalid {
                path: path.display().to_string(),
                message: error.to_string(),
            })?;
        // Catch a bad action or comparison now, not in the container.
        profile
            .compile(&CapsHashSet::new())
            .map_err(|error| SeccompError::Invalid {
                path: path.display().to_string(),
                message: error.to_string(),
            })?;
        Ok(profile)
    }

    /// The BPF programs to install, in order, for a process that keeps
    /// `capabilities`.
    pub fn compile(&self, capabilities: &CapsHashSet) -> Result<Vec<BpfProgram>, SeccompError> {
        let default_action = action(&self.default_action, self.default_errno_ret)?;
        let kernel = kernel_version();
        let mut by_action: Vec<(SeccompAction, CallRules)> = Vec::new();
        for rule in self.syscalls.iter().flatten() {
            if !rule_applies(rule, capabilities, kernel) {
                continue;
            }
            let mut rule_action = action(&rule.action, rule.errno_ret)?;
            // A logged call is allowed; the log itself is not kept.
            if rule_action == SeccompAction::Log {
                rule_action = SeccompAction::Allow;
            }
            let conditions = rules_for(rule.args.as_deref().unwrap_or_default())?;
            let slot = match by_action.iter().position(|(a, _)| *a == rule_action) {
                Some(idx) => idx,
                None => {
                    by_action.push((rule_action, BTreeMap::new()));
                    by_action.len() - 1
                }
            };
            let calls = &mut by_action[slot].1;
            let names = rule.names.iter().flatten().chain(rule.name.iter());
            for name in names {
                // Calls this architecture does not have are skipped, as
                // runc and containerd skip them.
                let Some(number) = syscall_number(name) else {
                    continue;
                };
                match (calls.get_mut(&number), &conditions) {
                    (Some(None), _) => {}
                    (Some(existing @ Some(_)), None) => *existing = None,
                    (Some(Some(existing)), Some(more)) => existing.extend(more.iter().cloned()),
                    (None, conditions) => {
                        calls.insert(number, conditions.clone());
                    }
                }
            }
        }
        let to_rules = |calls: CallRules| {
            calls
                .into_iter()
                .map(|(number, rules)| (number, rules.unwrap_or_default()))
                .collect::<BTreeMap<i64, Vec<SeccompRule>>>()
        };
        let mut programs = Vec::new();
        let allowed = by_action
            .iter()
            .position(|(a, _)| *a == SeccompAction::Allow)
            .map(|idx| by_action.remove(idx).1)
            .unwrap_or_default();
        if default_action != SeccompAction::Allow {
            programs.push(build(
                to_rules(allowed),
                default_action.clone(),
                SeccompAction::Allow,
            )?);
        }
        for (rule_action, calls) in by_action {
            if rule_action == default_action || calls.is_empty() {
                continue;
            }
            programs.push(build(to_rules(calls), SeccompAction::Allow, rule_action)?);
        }
        Ok(programs)
    }
}

/// Per system call number: `None` matches every call of it, `Some(rules)`
/// only calls meeting one of the rules.
type CallRules = BTreeMap<i64, Option<Vec<SeccompRule>>>;

fn build(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(rules, mismatch, matched, target_arch()?)
        .map_err(|error| SeccompError::Compile(error.to_string()))?;
    filter
        .try_into()
        .map_err(|error: seccompiler::BackendError| SeccompError::Compile(error.to_string()))
}

fn target_arch() -> Result<TargetArch, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else {
        Err(SeccompError::Compile(
            "seccomp profiles are supported on x86_64 only".to_string(),
        ))
    }
}

fn syscall_number(name: &str) -> Option<i64> {
    crate::container::syscalls_x86_64::SYSCALLS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, number)| *number)
}

fn action(name: &str, errno: Option<u32>) -> Result<SeccompAction, SeccompError> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => SeccompAction::Allow,
        "SCMP_ACT_ERRNO" => SeccompAction::Errno(errno.unwrap_or(EPERM)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => SeccompAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => SeccompAction::KillProcess,
        "SCMP_ACT_TRAP" => SeccompAction::Trap,
        "SCMP_ACT_TRACE" => SeccompAction::Trace(errno.unwrap_or(0)),
        "SCMP_ACT_LOG" => SeccompAction::Log,
        other => return Err(SeccompError::UnsupportedAction(other.to_string())),
    })
}

/// The rules a profile's `args` make: `None` for no conditions. Conditions
/// on distinct arguments must all hold; several on the same argument are
/// alternatives (as Docker reads them: `personality` is allowed for any of
/// its listed values).
fn rules_for(args: &[Argument]) -> Result<Option<Vec<SeccompRule>>, SeccompError> {
    if args.is_empty() {
        return Ok(None);
    }
    let mut conditions = Vec::new();
    for arg in args {
        if arg.index > 5 {
            return Err(SeccompError::ArgumentIndex(arg.index));
        }
        let (operator, value) = match arg.op.as_str() {
            "SCMP_CMP_NE" => (SeccompCmpOp::Ne, arg.value),
            "SCMP_CMP_LT" => (SeccompCmpOp::Lt, arg.value),
            "SCMP_CMP_LE" => (SeccompCmpOp::Le, arg.value),
            "SCMP_CMP_EQ" => (SeccompCmpOp::Eq, arg.value),
            "SCMP_CMP_GE" => (SeccompCmpOp::Ge, arg.value),
            "SCMP_CMP_GT" => (SeccompCmpOp::Gt, arg.value),
            "SCMP_CMP_MASKED_EQ" => (SeccompCmpOp::MaskedEq(arg.value), arg.value_two),
            other => return Err(SeccompError::UnsupportedOperator(other.to_string())),
        };
        let condition = SeccompCondition::new(arg.index, SeccompCmpArgLen::Qword, operator, value)
            .map_err(|error| SeccompError::Compile(error.to_string()))?;
        conditions.push((arg.index, condition));
    }
    let mut indexes: Vec<u8> = conditions.iter().map(|(index, _)| *index).collect();
    indexes.sort_unstable();
    indexes.dedup();
    let make = |conditions: Vec<SeccompCondition>| {
        SeccompRule::new(conditions).map_err(|error| SeccompError::Compile(error.to_string()))
    };
    if indexes.len() == conditions.len() {
        let all = conditions.into_iter().map(|(_, c)| c).collect();
        Ok(Some(vec![make(all)?]))
    } else {
        conditions
            .into_iter()
            .map(|(_, condition)| make(vec![condition]))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

fn rule_applies(rule: &SyscallRule, capabilities: &CapsHashSet, kernel: (u32, u32)) -> bool {
    let holds = |caps: &Option<Vec<String>>| {
        caps.iter()
            .flatten()
            .any(|name| capabilities.iter().any(|held| held.to_string() == *name))
    };
    let arch_matches = |arches: &Option<Vec<String>>| {
        arches
            .iter()
            .flatten()
            .any(|arch| matches!(arch.as_str(), "amd64" | "x86_64" | "x32"))
    };
    if let Some(includes) = &rule.includes {
        if includes.caps.as_ref().is_some_and(|caps| !caps.is_empty()) && !holds(&includes.caps) {
            return false;
        }
        if includes
            .arches
            .as_ref()
            .is_some_and(|arches| !arches.is_empty())
            && !arch_matches(&includes.arches)
        {
            return false;
        }
        if let Some(min) = &includes.min_kernel
            && parse_kernel_version(min).is_some_and(|min| kernel < min)
        {
            return false;
        }
    }
    if let Some(excludes) = &rule.excludes {
        if holds(&excludes.caps) || arch_matches(&excludes.arches) {
            return false;
        }
        if let Some(min) = &excludes.min_kernel
            && parse_kernel_version(min).is_some_and(|min| kernel >= min)
        {
            return false;
        }
    }
    true
}

fn parse_kernel_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()
        .and_then(|minor| {
            minor
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .unwrap_or(0);
    Some((major, minor))
}

fn kernel_version() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|release| parse_kernel_version(release.trim()))
        .unwrap_or((0, 0))
}

/// Installs `programs` on the calling thread, in order (each also sets
/// `no_new_privs`, which an unprivileged process needs to install a
/// filter). The last step before the app's `exec`.
pub fn install(programs: &[BpfProgram]) -> Result<(), SeccompError> {
    for program in programs {
        seccompiler::apply_filter(program)
            .map_err(|error| SeccompError::Install(error.to_string()))?;
    }
    Ok(())
}

/// The programs for a container: none when privileged or unconfined.
pub fn programs_for(
    seccomp: &Seccomp,
    privileged: bool,
    capabilities: &CapsHashSet,
) -> Result<Vec<BpfProgram>, SeccompError> {
    if privileged {
        return Ok(Vec::new());
    }
    match seccomp {
        Seccomp::Unconfined => Ok(Vec::new()),
        Seccomp::RuntimeDefault => {
            if !cfg!(target_arch = "x86_64") {
                // Documented: the default profile is built for x86_64 only.
                return Ok(Vec::new());
            }
            runtime_default().compile(capabilities)
        }
        Seccomp::Profile(profile) => profile.compile(capabilities),
    }
}

/// The calls every container may make: Docker's and containerd's default
/// allow-list (those of other architectures' names are skipped at compile).
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // Inspecting processes of one's own pid namespace: safe since Linux
    // 4.8, where seccomp is checked again after a tracer's changes.
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    // x86's own.
    "arch_prctl",
    "modify_ldt",
];

/// The calls a capability adds, when the container keeps it.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// The namespace flags of `clone`: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
/// NEWUSER, NEWPID and NEWNET.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
/// AF_VSOCK: the host's hypervisor sockets.
const AF_VSOCK: u64 = 40;

fn allow(names: &[&str]) -> SyscallRule {
    SyscallRule {
        names: Some(names.iter().map(|name| name.to_string()).collect()),
        action: "SCMP_ACT_ALLOW".to_string(),
        ..SyscallRule::default()
    }
}

fn argument(index: u8, op: &str, value: u64, value_two: u64) -> Argument {
    Argument {
        index,
        value,
        value_two,
        op: op.to_string(),
    }
}

/// shoal's `RuntimeDefault`, as a profile: default `ERRNO(EPERM)`.
pub fn runtime_default() -> Profile {
    let mut syscalls = vec![allow(ALLOWED)];
    // personality: only the plain Linux personalities (and the query).
    let mut personality = allow(&["personality"]);
    personality.args = Some(
        [0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff]
            .into_iter()
            .map(|value| argument(0, "SCMP_CMP_EQ", value, 0))
            .collect(),
    );
    syscalls.push(personality);
    // socket: any family but AF_VSOCK.
    let mut socket = allow(&["socket"]);
    socket.args = Some(vec![argument(0, "SCMP_CMP_NE", AF_VSOCK, 0)]);
    syscalls.push(socket);
    // clone: without namespace flags, unless CAP_SYS_ADMIN (below).
    let mut clone = allow(&["clone"]);
    clone.args = Some(vec![argument(
        0,
        "SCMP_CMP_MASKED_EQ",
        CLONE_NAMESPACE_FLAGS,
        0,
    )]);
    clone.excludes = Some(Condition {
        caps: Some(vec!["CAP_SYS_ADMIN".to_string()]),
        ..Condition::default()
    });
    syscalls.push(clone);
    // clone3 passes its flags in memory, out of a filter's reach: refused
    // as "not implemented", so that libc falls back to clone.
    syscalls.push(SyscallRule {
        names: Some(vec!["clone3".to_string()]),
        action: "SCMP_ACT_ERRNO".to_string(),
        errno_ret: Some(ENOSYS),
        excludes: Some(Condition {
            caps: Some(vec!["CAP_SYS_ADMIN".to_string()]),
            ..Condition::default()
        }),
        ..SyscallRule::default()
    });
    for (capability, names) in BY_CAPABILITY {
        let mut rule = allow(names);
        rule.includes = Some(Condition {
            caps: Some(vec![capability.to_string()]),
            ..Condition::default()
        });
        syscalls.push(rule);
    }
    Profile {
        default_action: "SCMP_ACT_ERRNO".to_string(),
        default_errno_ret: Some(EPERM),
        syscalls: Some(syscalls),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caps::Capability;

    #[test]
    fn the_default_profile_compiles_to_an_errno_filter_and_a_clone3_filter() {
        let programs = runtime_default().compile(&CapsHashSet::new()).unwrap();
        assert_eq!(programs.len(), 2);
        // A filter longer than the kernel's 4096 instructions is refused.
        assert!(programs.iter().all(|program| program.len() < 4096));
        // With CAP_SYS_ADMIN, clone3 is allowed: one filter only.
        let admin = CapsHashSet::from([Capability::CAP_SYS_ADMIN]);
        assert_eq!(runtime_default().compile(&admin).unwrap().len(), 1);
    }

    #[test]
    fn capability_rules_follow_the_kept_capabilities() {
        let profile = runtime_default();
        let rule = profile
            .syscalls
            .iter()
            .flatten()
            .find(|rule| {
                rule.names
                    .as_ref()
                    .is_some_and(|names| names.contains(&"init_module".to_string()))
            })
            .unwrap();
        let kernel = (6, 1);
        assert!(!rule_applies(rule, &CapsHashSet::new(), kernel));
        let module = CapsHashSet::from([Capability::CAP_SYS_MODULE]);
        assert!(rule_applies(rule, &module, kernel));
    }

    #[test]
    fn docker_profiles_parse_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        std::fs::write(
            &good,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
               "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13,"args":null},
                           {"name":"personality","action":"SCMP_ACT_KILL",
                            "args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                           {"names":["no_such_call"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let profile = Profile::read(&good).unwrap();
        // Allow by default: one filter per other action, none for the default.
        assert_eq!(profile.compile(&CapsHashSet::new()).unwrap().len(), 2);
        for (name, text) in [
            ("action.json", r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#),
            (
                "op.json",
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_SOMETIMES"}]}]}"#,
            ),
            (
                "index.json",
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":7,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
            ),
            ("syntax.json", "{"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let error = Profile::read(&path).unwrap_err().to_string();
            assert!(error.contains(name), "{name}: {error}");
        }
        assert!(Seccomp::from_option("/nonexistent/profile.json").is_err());
        assert_eq!(
            Seccomp::from_option("unconfined").unwrap(),
            Seccomp::Unconfined
        );
    }

    #[test]
    fn every_default_call_of_x86_64_is_in_the_table() {
        for name in [
            "read",
            "write",
            "execve",
            "clone",
            "clone3",
            "openat",
            "fchmodat2",
        ] {
            assert!(syscall_number(name).is_some(), "{name}");
        }
        assert_eq!(syscall_number("read"), Some(0));
        assert_eq!(syscall_number("clone3"), Some(435));
        assert_eq!(syscall_number("chown32"), None);
    }
}
