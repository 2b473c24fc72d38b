//! The RuntimeDefault seccomp profile: an allowlist modelled on Docker's/containerd's default.
//!
//! Why an allowlist and not a denylist of dangerous calls: new kernel syscalls appear every few
//! releases and a denylist silently lets each one through; an allowlist fails closed.
//!
//! Why the default action returns ENOSYS rather than EPERM: a syscall this list does not know
//! (typically one newer than the list, e.g. `fchmodat2` or `clone3`) then looks "not implemented"
//! and libc falls back to the older call, as it does on older kernels. With EPERM, glibc treats
//! the failure as final and ordinary programs break. Calls we deny *on purpose* (the
//! [`PRIVILEGED_GROUPS`] a workload lacks the capability for, plus [`ALWAYS_DENIED`]) get an
//! explicit EPERM rule so they fail the way Docker's profile makes them fail.
//!
//! Names the linked libseccomp does not know are skipped by libcontainer (with a warning), so
//! listing 32-bit variants is harmless on 64-bit hosts and lets 32-bit binaries run where the
//! compat architecture is enabled.

use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg,
    LinuxSeccompArgBuilder, LinuxSeccompOperator, LinuxSyscall,
};

const EPERM: u32 = libc::EPERM as u32;
const ENOSYS: u32 = libc::ENOSYS as u32;

/// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
/// CLONE_NEWNET: a process without CAP_SYS_ADMIN may not create namespaces (notably an
/// unprivileged user namespace, the usual first step of a kernel exploit).
const CLONE_NEW_MASK: u64 = 0x7E02_0000;

/// personality(2) values programs legitimately use: PER_LINUX, PER_LINUX32, UNAME26,
/// PER_LINUX32|UNAME26 and the 0xffffffff query. Others (e.g. READ_IMPLIES_EXEC) weaken ASLR/NX.
const PERSONALITY_ALLOWED: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Allowed for every workload.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
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
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
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
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
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
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
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
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "pselect6_time64",
    "ptrace",
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
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
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
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
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
    "setsid",
    "setsockopt",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigpending",
    "sigprocmask",
    "sigreturn",
    "sigsuspend",
    "socket",
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
];

/// Architecture-specific calls every workload may use.
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
const ALLOWED_ARCH: &[&str] = &["arch_prctl"];
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const ALLOWED_ARCH: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "breakpoint",
    "cacheflush",
    "set_tls",
    "sync_file_range2",
];
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm"
)))]
const ALLOWED_ARCH: &[&str] = &[];

/// Calls unlocked by a capability (Docker's grouping). A workload without the capability gets
/// EPERM for them.
pub const PRIVILEGED_GROUPS: &[(Capability, &[&str])] = &[
    (
        Capability::SysAdmin,
        &[
            "bpf",
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
            "pivot_root",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "swapoff",
            "swapon",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (
        Capability::SysBoot,
        &["kexec_file_load", "kexec_load", "reboot"],
    ),
    (Capability::SysChroot, &["chroot"]),
    (
        Capability::SysModule,
        &["delete_module", "finit_module", "init_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysPtrace,
        &["kcmp", "pidfd_getfd", "process_madvise", "userfaultfd"],
    ),
    (Capability::SysRawio, &["ioperm", "iopl"]),
    (
        Capability::SysTime,
        &["clock_settime", "clock_settime64", "settimeofday", "stime"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &["get_mempolicy", "mbind", "set_mempolicy"],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
    (Capability::DacReadSearch, &["open_by_handle_at"]),
];

/// Denied to every confined workload whatever its capabilities: the kernel keyring is not
/// namespaced, and io_uring bypasses syscall filtering altogether (Docker and ChromeOS block it
/// for the same reason).
const ALWAYS_DENIED: &[&str] = &[
    "add_key",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "keyctl",
    "request_key",
];

/// Architectures the filter covers: the native one plus its 32-bit compat ABIs.
fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

fn rule(names: Vec<String>, action: LinuxSeccompAction, errno: Option<u32>) -> LinuxSyscall {
    let mut r = LinuxSyscall::default();
    r.set_names(names);
    r.set_action(action);
    r.set_errno_ret(errno);
    r.set_args(None);
    r
}

fn arg0(op: LinuxSeccompOperator, value: u64, value_two: Option<u64>) -> LinuxSeccompArg {
    seccomp_arg(0, op, value, value_two)
}

/// LinuxSeccompArg has no setters, only a builder whose fields all have defaults.
pub(super) fn seccomp_arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> LinuxSeccompArg {
    let b = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    let b = match value_two {
        Some(v) => b.value_two(v),
        None => b,
    };
    b.build()
        .expect("every LinuxSeccompArg field has a default")
}

fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The profile for a workload holding `caps`: [`ALLOWED`], plus each group of
/// [`PRIVILEGED_GROUPS`] whose capability is held; other groups and [`ALWAYS_DENIED`] get EPERM.
///
/// The profile is in OCI argument order; `seccomp::resolve` converts it for libcontainer.
pub fn runtime_default_with_caps(caps: &Capabilities) -> LinuxSeccomp {
    let allow = LinuxSeccompAction::ScmpActAllow;
    let errno = LinuxSeccompAction::ScmpActErrno;

    let mut allowed = owned(ALLOWED);
    allowed.extend(owned(ALLOWED_ARCH));
    let mut denied = owned(ALWAYS_DENIED);
    for (cap, names) in PRIVILEGED_GROUPS {
        if caps.contains(cap) {
            allowed.extend(owned(names));
        }
    }
    for (cap, names) in PRIVILEGED_GROUPS {
        if !caps.contains(cap) {
            // A call in two groups (syslog, bpf, perf_event_open) is allowed if either cap is held.
            denied.extend(owned(names).into_iter().filter(|n| !allowed.contains(n)));
        }
    }
    allowed.sort();
    allowed.dedup();
    denied.sort();
    denied.dedup();

    let mut syscalls = vec![rule(allowed, allow, None)];

    if caps.contains(&Capability::SysAdmin) {
        syscalls.push(rule(owned(&["clone", "clone3"]), allow, None));
    } else {
        // clone: only without namespace flags. clone3 passes its flags in a struct seccomp cannot
        // read, so it gets ENOSYS and libc falls back to clone.
        let mut clone = rule(owned(&["clone"]), allow, None);
        clone.set_args(Some(vec![arg0(
            LinuxSeccompOperator::ScmpCmpMaskedEq,
            CLONE_NEW_MASK,
            Some(0),
        )]));
        syscalls.push(clone);
        syscalls.push(rule(owned(&["clone3"]), errno, Some(ENOSYS)));
    }

    for &value in PERSONALITY_ALLOWED {
        let mut p = rule(owned(&["personality"]), allow, None);
        p.set_args(Some(vec![arg0(
            LinuxSeccompOperator::ScmpCmpEq,
            value,
            None,
        )]));
        syscalls.push(p);
    }

    syscalls.push(rule(denied, errno, Some(EPERM)));

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(errno);
    profile.set_default_errno_ret(Some(ENOSYS));
    profile.set_architectures(Some(architectures()));
    profile.set_flags(None);
    profile.set_listener_path(None);
    profile.set_listener_metadata(None);
    profile.set_syscalls(Some(syscalls));
    profile
}
