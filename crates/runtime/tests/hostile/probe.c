/* The hostile workload of tests/hostile.rs: run inside a container, it tries
 * each way out it knows and prints one line per attempt, `NAME denied ERRNO`
 * when the attempt failed or `NAME ESCAPED` when it worked. Built static by
 * the test (gcc -static), so the image needs nothing but this file.
 *
 *   probe all HOST_PID HOST_MARKER   every attempt below
 *   probe unshare-user               only that one (the Unconfined control)
 *   probe forkbomb MAX               forks until refused, prints the count
 *   probe whoami                     prints the effective uid
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/reboot.h>

static int failures_reported;

/* Reports an attempt whose success is `ok` (errno holds why it failed). */
static void report(const char *name, int ok) {
    if (ok) {
        printf("%s ESCAPED\n", name);
    } else {
        printf("%s denied %d\n", name, errno);
    }
    fflush(stdout);
    failures_reported++;
}

/* Runs `attempt` in a child (so that a namespace it enters or a mount it
 * makes does not leak into the next attempt) and reports its outcome. */
static void in_child(const char *name, int (*attempt)(void)) {
    int pipe_fds[2];
    if (pipe(pipe_fds) != 0) {
        perror("pipe");
        exit(2);
    }
    pid_t child = fork();
    if (child == 0) {
        close(pipe_fds[0]);
        int ok = attempt();
        int result[2] = {ok, errno};
        if (write(pipe_fds[1], result, sizeof result) != sizeof result) {
            _exit(3);
        }
        _exit(0);
    }
    close(pipe_fds[1]);
    int result[2] = {0, 0};
    ssize_t n = read(pipe_fds[0], result, sizeof result);
    close(pipe_fds[0]);
    waitpid(child, NULL, 0);
    if (n != sizeof result) {
        errno = EIO;
        report(name, 0);
        return;
    }
    errno = result[1];
    report(name, result[0]);
}

static int try_mount_proc(void) {
    mkdir("/tmp/probe-proc", 0755);
    return mount("proc", "/tmp/probe-proc", "proc", 0, NULL) == 0;
}

static int try_mount_tmpfs(void) {
    mkdir("/tmp/probe-tmpfs", 0755);
    return mount("tmpfs", "/tmp/probe-tmpfs", "tmpfs", 0, NULL) == 0;
}

static int try_bind_root(void) {
    mkdir("/tmp/probe-root", 0755);
    return mount("/", "/tmp/probe-root", NULL, MS_BIND | MS_REC, NULL) == 0;
}

static int try_remount_root(void) {
    return mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND, NULL) == 0;
}

static int try_unshare_user(void) { return unshare(CLONE_NEWUSER) == 0; }
static int try_unshare_mount(void) { return unshare(CLONE_NEWNS) == 0; }
static int try_unshare_net(void) { return unshare(CLONE_NEWNET) == 0; }

static int try_clone_newpid(void) {
    long pid = syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) {
        _exit(0);
    }
    if (pid > 0) {
        waitpid((pid_t)pid, NULL, 0);
        return 1;
    }
    return 0;
}

static int try_init_module(void) {
    static const char image[64] = "\177ELF";
    return syscall(SYS_init_module, image, sizeof image, "") == 0;
}

static int try_finit_module(void) {
    int fd = open("/probe", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    return syscall(SYS_finit_module, fd, "", 0) == 0;
}

static int try_sysrq(void) {
    /* `h` only prints help to the kernel log, should it get through. */
    int fd = open("/proc/sysrq-trigger", O_WRONLY);
    if (fd < 0) {
        return 0;
    }
    return write(fd, "h", 1) == 1;
}

static int try_kcore(void) {
    char byte;
    int fd = open("/proc/kcore", O_RDONLY);
    if (fd < 0) {
        return 0;
    }
    ssize_t n = read(fd, &byte, 1);
    if (n == 0) {
        errno = ENODATA; /* masked: /dev/null reads empty */
    }
    return n == 1;
}

static int try_proc_sys_write(void) {
    int fd = open("/proc/sys/kernel/hostname", O_WRONLY);
    if (fd < 0) {
        return 0;
    }
    return write(fd, "escaped", 7) == 7;
}

static int try_mknod_open(const char *path, mode_t kind, unsigned major, unsigned minor) {
    unlink(path);
    if (mknod(path, kind | 0600, makedev(major, minor)) != 0) {
        return 0;
    }
    /* Made (with CAP_MKNOD): the devices cgroup must still refuse it. */
    int fd = open(path, O_RDONLY);
    int saved = errno;
    unlink(path);
    errno = saved;
    return fd >= 0;
}

static int try_mknod_block(void) { return try_mknod_open("/tmp/probe-sda", S_IFBLK, 8, 0); }
static int try_mknod_mem(void) { return try_mknod_open("/tmp/probe-mem", S_IFCHR, 1, 1); }

static int try_capset(void) {
    struct {
        unsigned version;
        int pid;
    } header = {0x20080522, 0};
    struct {
        unsigned effective, permitted, inheritable;
    } data[2];
    if (syscall(SYS_capget, &header, data) != 0) {
        return 0;
    }
    unsigned sys_admin = 1u << 21;
    data[0].effective |= sys_admin;
    data[0].permitted |= sys_admin;
    return syscall(SYS_capset, &header, data) == 0;
}

static int try_bpf(void) { return syscall(SYS_bpf, 0, NULL, 0) >= 0 || errno == EINVAL; }

static int try_open_by_handle(void) {
    char handle[64] = {0};
    return syscall(SYS_open_by_handle_at, AT_FDCWD, handle, O_RDONLY) >= 0;
}

static int try_reboot(void) {
    /* Turning off Ctrl-Alt-Del: harmless, and refused in a pid namespace. */
    return syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
                   LINUX_REBOOT_CMD_CAD_OFF, NULL) == 0;
}

static int try_vsock(void) {
    int fd = socket(40 /* AF_VSOCK */, SOCK_STREAM, 0);
    return fd >= 0;
}

static int run_all(pid_t host_pid, const char *marker) {
    errno = 0;
    report("kill-host-process", kill(host_pid, 0) == 0);
    errno = 0;
    report("ptrace-host-process", ptrace(PTRACE_ATTACH, host_pid, NULL, NULL) == 0);

    char path[4096];
    snprintf(path, sizeof path, "/proc/1/root%s", marker);
    int fd = open(path, O_WRONLY | O_APPEND);
    report("write-host-marker-via-proc-1-root", fd >= 0 && write(fd, "x", 1) == 1);
    fd = open(marker, O_WRONLY | O_APPEND);
    report("write-host-marker", fd >= 0 && write(fd, "x", 1) == 1);

    in_child("mount-proc", try_mount_proc);
    in_child("mount-tmpfs", try_mount_tmpfs);
    in_child("bind-mount-root", try_bind_root);
    in_child("remount-root", try_remount_root);
    in_child("init-module", try_init_module);
    in_child("finit-module", try_finit_module);
    in_child("write-sysrq-trigger", try_sysrq);
    in_child("read-kcore", try_kcore);
    in_child("write-proc-sys", try_proc_sys_write);
    in_child("mknod-block-device", try_mknod_block);
    in_child("mknod-dev-mem", try_mknod_mem);
    in_child("unshare-user", try_unshare_user);
    in_child("unshare-mount", try_unshare_mount);
    in_child("unshare-net", try_unshare_net);
    in_child("clone-new-pid", try_clone_newpid);
    in_child("capset-sys-admin", try_capset);
    in_child("bpf", try_bpf);
    in_child("open-by-handle", try_open_by_handle);
    in_child("reboot", try_reboot);
    in_child("socket-vsock", try_vsock);
    return 0;
}

static int fork_bomb(long max) {
    long n_forked = 0;
    while (n_forked < max) {
        pid_t child = fork();
        if (child == 0) {
            /* Bounded: the container's end kills these sooner. */
            sleep(60);
            _exit(0);
        }
        if (child < 0) {
            printf("forkbomb stopped %ld %d\n", n_forked, errno);
            fflush(stdout);
            return 0;
        }
        n_forked++;
    }
    printf("forkbomb unstopped %ld\n", n_forked);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "all") == 0) {
        return run_all((pid_t)atoi(argv[2]), argv[3]);
    }
    if (argc == 2 && strcmp(argv[1], "unshare-user") == 0) {
        in_child("unshare-user", try_unshare_user);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "forkbomb") == 0) {
        return fork_bomb(atol(argv[2]));
    }
    if (argc == 2 && strcmp(argv[1], "whoami") == 0) {
        printf("euid %d\n", (int)geteuid());
        return 0;
    }
    fprintf(stderr, "usage: probe all HOST_PID MARKER | unshare-user | forkbomb MAX | whoami\n");
    return 2;
}
