use std::collections::HashSet;

use k8s_cri::v1::SecurityProfile;
use k8s_cri::v1::security_profile::ProfileType;
use oci_spec::runtime::{Capability, LinuxSeccompAction, LinuxSeccompOperator, LinuxSyscall};

use super::*;
use crate::oci::security::capability_set;

fn sp(t: ProfileType, r: &str) -> SecurityProfile {
    SecurityProfile {
        profile_type: t as i32,
        localhost_ref: r.to_string(),
    }
}

fn rules_for<'a>(p: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
    p.syscalls()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|s| s.names().iter().any(|n| n == name))
        .collect()
}

fn allowed(p: &LinuxSeccomp) -> HashSet<String> {
    p.syscalls()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
        .flat_map(|s| s.names().iter().cloned())
        .collect()
}

#[test]
fn choose_field_wins_over_path() {
    let p = sp(ProfileType::RuntimeDefault, "");
    assert_eq!(
        choose(Some(&p), "unconfined").unwrap(),
        SeccompChoice::RuntimeDefault
    );
    let p = sp(ProfileType::Unconfined, "");
    assert_eq!(
        choose(Some(&p), "runtime/default").unwrap(),
        SeccompChoice::Unconfined
    );
    let p = sp(ProfileType::Localhost, "/var/lib/kubelet/seccomp/a.json");
    assert_eq!(
        choose(Some(&p), "").unwrap(),
        SeccompChoice::Localhost("/var/lib/kubelet/seccomp/a.json".into())
    );
    let p = sp(ProfileType::Localhost, "");
    assert!(choose(Some(&p), "").is_err());
}

#[test]
fn choose_deprecated_path() {
    assert_eq!(choose(None, "").unwrap(), SeccompChoice::Unconfined);
    assert_eq!(
        choose(None, "unconfined").unwrap(),
        SeccompChoice::Unconfined
    );
    assert_eq!(
        choose(None, "runtime/default").unwrap(),
        SeccompChoice::RuntimeDefault
    );
    assert_eq!(
        choose(None, "docker/default").unwrap(),
        SeccompChoice::RuntimeDefault
    );
    assert_eq!(
        choose(None, "localhost/profiles/a.json").unwrap(),
        SeccompChoice::Localhost("profiles/a.json".into())
    );
    assert!(choose(None, "localhost/").is_err());
    assert!(choose(None, "localhost/../../etc/x.json").is_err());
    assert!(matches!(
        choose(None, "bogus"),
        Err(SpecError::InvalidSeccompProfile { .. })
    ));
}

#[test]
fn privileged_and_unconfined_get_nothing() {
    let caps = capability_set(false, u64::MAX);
    let root = Path::new("/nonexistent");
    assert!(
        resolve(&SeccompChoice::Unconfined, false, &caps, root)
            .unwrap()
            .is_none()
    );
    assert!(
        resolve(&SeccompChoice::RuntimeDefault, true, &caps, root)
            .unwrap()
            .is_none()
    );
    // Privileged skips even a Localhost profile, so a missing file is no error.
    let local = SeccompChoice::Localhost("missing.json".into());
    assert!(resolve(&local, true, &caps, root).unwrap().is_none());
}

#[test]
fn runtime_default_shape() {
    // The profile for a workload with containerd's default capabilities.
    let p = runtime_default_with_caps(&capability_set(false, u64::MAX));
    assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(p.default_errno_ret(), Some(libc::ENOSYS as u32));
    let a = allowed(&p);
    for needed in [
        "read",
        "write",
        "execve",
        "exit_group",
        "rt_sigaction",
        "pause",
        "wait4",
        "openat",
        "mmap",
        "brk",
        "chroot",
        "ptrace",
    ] {
        assert!(a.contains(needed), "{needed} must be allowed");
    }
    for dangerous in [
        "mount",
        "umount2",
        "unshare",
        "setns",
        "kexec_load",
        "init_module",
        "bpf",
        "keyctl",
        "reboot",
        "pivot_root",
        "swapon",
        "perf_event_open",
        "open_by_handle_at",
        "clock_settime",
        "io_uring_setup",
        "clone",
        "clone3",
        "personality",
    ] {
        assert!(
            !a.contains(dangerous),
            "{dangerous} must not be unconditionally allowed"
        );
    }
    // Deliberate denials answer EPERM.
    let mount = rules_for(&p, "mount");
    assert_eq!(mount.len(), 1);
    assert_eq!(mount[0].action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(mount[0].errno_ret(), Some(libc::EPERM as u32));
    // clone3 answers ENOSYS so libc falls back to clone.
    let clone3 = rules_for(&p, "clone3");
    assert_eq!(clone3[0].errno_ret(), Some(libc::ENOSYS as u32));
    // clone is allowed without namespace flags (OCI order: value = mask, valueTwo = datum).
    let clone = rules_for(&p, "clone");
    let arg = clone[0].args().as_ref().unwrap()[0];
    assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
    assert_eq!((arg.value(), arg.value_two()), (0x7E02_0000, Some(0)));
    assert_eq!(rules_for(&p, "personality").len(), 5);
}

#[test]
fn caps_widen_the_profile() {
    let mut caps = capability_set(false, u64::MAX);
    caps.insert(Capability::SysAdmin);
    caps.insert(Capability::SysTime);
    let p = runtime_default_with_caps(&caps);
    let a = allowed(&p);
    for n in [
        "mount",
        "unshare",
        "setns",
        "clone",
        "clone3",
        "settimeofday",
        "syslog",
        "bpf",
    ] {
        assert!(a.contains(n), "{n}");
    }
    // Still denied: no CAP_SYS_MODULE, and the keyring never.
    let denied: Vec<_> = rules_for(&p, "init_module");
    assert_eq!(denied[0].errno_ret(), Some(libc::EPERM as u32));
    assert_eq!(
        rules_for(&p, "keyctl")[0].action(),
        LinuxSeccompAction::ScmpActErrno
    );
    // No name is both allowed and denied.
    let errno: HashSet<String> = p
        .syscalls()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|s| s.action() == LinuxSeccompAction::ScmpActErrno)
        .flat_map(|s| s.names().iter().cloned())
        .collect();
    assert!(a.is_disjoint(&errno));
}

#[test]
fn resolve_converts_masked_eq_for_libcontainer() {
    let caps = capability_set(false, u64::MAX);
    let p = resolve(&SeccompChoice::RuntimeDefault, false, &caps, Path::new("/"))
        .unwrap()
        .unwrap();
    let clone = rules_for(&p, "clone");
    let arg = clone[0].args().as_ref().unwrap()[0];
    // libcontainer 0.7 reads valueTwo as the mask.
    assert_eq!((arg.value(), arg.value_two()), (0, Some(0x7E02_0000)));
    // Non-masked comparisons are untouched.
    let pers = rules_for(&p, "personality");
    let arg = pers[0].args().as_ref().unwrap()[0];
    assert_eq!((arg.value(), arg.value_two()), (0, None));
}

#[test]
fn localhost_relative_absolute_missing_and_bad() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
        "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
        {"names":["clone"],"action":"SCMP_ACT_ALLOW",
         "args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#;
    std::fs::write(dir.path().join("good.json"), good).unwrap();
    std::fs::write(dir.path().join("bad.json"), "{not json").unwrap();
    let caps = capability_set(false, u64::MAX);

    let rel = resolve(
        &SeccompChoice::Localhost("good.json".into()),
        false,
        &caps,
        dir.path(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(rel.default_action(), LinuxSeccompAction::ScmpActErrno);
    let arg = rules_for(&rel, "clone")[0].args().as_ref().unwrap()[0];
    assert_eq!((arg.value(), arg.value_two()), (0, Some(2114060288)));

    let abs = resolve(
        &SeccompChoice::Localhost(dir.path().join("good.json")),
        false,
        &caps,
        Path::new("/elsewhere"),
    )
    .unwrap();
    assert!(abs.is_some());

    let missing = resolve(
        &SeccompChoice::Localhost("nope.json".into()),
        false,
        &caps,
        dir.path(),
    )
    .unwrap_err();
    assert!(
        matches!(missing, SpecError::SeccompProfileRead { ref path, .. } if path == &dir.path().join("nope.json"))
    );
    assert!(missing.to_string().contains("nope.json"));

    let bad = resolve(
        &SeccompChoice::Localhost("bad.json".into()),
        false,
        &caps,
        dir.path(),
    )
    .unwrap_err();
    assert!(matches!(bad, SpecError::SeccompProfileParse { .. }));
    assert!(bad.to_string().contains("bad.json"));
}

/// Run `script` under `sh` with `profile` loaded through libcontainer (the code path the runtime
/// uses), returning (exit code, stdout+stderr).
fn run_confined(profile: &LinuxSeccomp, program: &str, args: &[&str]) -> (i32, String) {
    use std::os::unix::process::CommandExt;
    let profile = profile.clone();
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    // SAFETY: the closure runs in the forked child before exec; it only sets no_new_privs and
    // loads the filter (libseccomp allocates, which glibc's fork handlers make safe here).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libcontainer::seccomp::initialize_seccomp(&profile)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok(())
        });
    }
    let out = cmd.output().expect("spawn confined child");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// The runtime default profile, as libcontainer loads it, lets a shell fork, exec and do I/O,
/// and stops namespace creation and mounts.
#[test]
fn live_runtime_default_runs_a_shell() {
    let caps = capability_set(false, u64::MAX);
    let profile = resolve(&SeccompChoice::RuntimeDefault, false, &caps, Path::new("/"))
        .unwrap()
        .unwrap();
    let script = r#"
        set -e
        ls / >/dev/null
        cat /proc/self/status >/dev/null
        x=$(echo sub); test "$x" = sub
        sleep 0 & wait
        if command -v busybox >/dev/null; then busybox sh -c 'busybox true'; fi
        if unshare -U true 2>/dev/null; then echo "unshare allowed"; exit 10; fi
        if unshare -n true 2>/dev/null; then echo "unshare -n allowed"; exit 11; fi
        if mount -t tmpfs none /mnt 2>/dev/null; then echo "mount allowed"; exit 12; fi
        echo confined-ok
    "#;
    let (code, out) = run_confined(&profile, "/bin/sh", &["-c", script]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("confined-ok"), "{out}");
}

/// clone(2) with CLONE_NEWUSER is refused while a plain fork-style clone works: this is the
/// MASKED_EQ rule, so it also proves the operand order handed to libcontainer is right.
#[test]
#[cfg(target_arch = "x86_64")]
fn live_clone_namespace_flags_refused() {
    if std::process::Command::new("python3")
        .arg("-c")
        .arg("1")
        .output()
        .is_err()
    {
        eprintln!("python3 missing; skipping");
        return;
    }
    let caps = capability_set(false, u64::MAX);
    let profile = resolve(&SeccompChoice::RuntimeDefault, false, &caps, Path::new("/"))
        .unwrap()
        .unwrap();
    // SYS_clone = 56 on x86_64; SIGCHLD = 17; CLONE_NEWUSER = 0x10000000.
    let py = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def clone(flags):
    r = libc.syscall(56, flags, 0, 0, 0, 0)
    if r == 0:
        os._exit(0)
    if r > 0:
        os.waitpid(r, 0)
        return 0
    return ctypes.get_errno()
plain = clone(17)
userns = clone(0x10000000 | 17)
print("plain", plain, "userns", userns)
sys.exit(0 if plain == 0 and userns != 0 else 1)
"#;
    let (code, out) = run_confined(&profile, "python3", &["-c", py]);
    assert_eq!(code, 0, "{out}");
}
