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
    let caps = capability_set(false);
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
    let p = runtime_default();
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
    let mut caps = capability_set(false);
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
    let caps = capability_set(false);
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
    let caps = capability_set(false);

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
