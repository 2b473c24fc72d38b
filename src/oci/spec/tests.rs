//! Golden and behaviour tests of the sandbox spec.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{
    DnsConfig, Int64Value, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PortMapping, Protocol, SecurityProfile,
    UserNamespace,
};
use oci_spec::image::{ConfigBuilder, ImageConfiguration, ImageConfigurationBuilder};
use oci_spec::runtime::{Capability, LinuxNamespaceType, Spec};
use serde_json::Value;

use super::*;

const GOLDEN: &str = "src/oci/testdata/sandbox_golden.json";

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The shape kubelet sends for an ordinary pod (ClusterFirst DNS, RuntimeDefault seccomp).
fn kubelet_config() -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "nginx-7c5ddbdf54-x2x9q".into(),
            uid: "3f5a0c1e-8d2b-4a57-9a8e-1b7f6c0d2e11".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "nginx-7c5ddbdf54-x2x9q".into(),
        log_directory: "/var/log/pods/default_nginx-7c5ddbdf54-x2x9q_3f5a0c1e".into(),
        dns_config: Some(DnsConfig {
            servers: s(&["10.96.0.10"]),
            searches: s(&[
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
            ]),
            options: s(&["ndots:5"]),
        }),
        port_mappings: vec![PortMapping {
            protocol: Protocol::Tcp as i32,
            container_port: 80,
            host_port: 8080,
            host_ip: String::new(),
        }],
        labels: HashMap::from([
            ("app".into(), "nginx".into()),
            (
                "io.kubernetes.pod.name".into(),
                "nginx-7c5ddbdf54-x2x9q".into(),
            ),
            ("io.kubernetes.pod.namespace".into(), "default".into()),
            (
                "io.kubernetes.pod.uid".into(),
                "3f5a0c1e-8d2b-4a57-9a8e-1b7f6c0d2e11".into(),
            ),
        ]),
        annotations: HashMap::from([
            (
                "kubernetes.io/config.seen".into(),
                "2024-05-01T10:00:00Z".into(),
            ),
            ("kubernetes.io/config.source".into(), "api".into()),
        ]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/besteffort/pod3f5a0c1e".into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    target_id: String::new(),
                    userns_options: Some(UserNamespace {
                        mode: NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                }),
                run_as_user: Some(Int64Value { value: 65535 }),
                supplemental_groups: vec![2000],
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            sysctls: HashMap::from([
                ("net.ipv4.ip_unprivileged_port_start".into(), "0".into()),
                ("kernel.shm_rmid_forced".into(), "1".into()),
            ]),
            ..Default::default()
        }),
        windows: None,
    }
}

/// registry.k8s.io/pause's config.
fn pause_image() -> ImageConfiguration {
    ImageConfigurationBuilder::default()
        .config(
            ConfigBuilder::default()
                .user("65535:65535".to_string())
                .entrypoint(s(&["/pause"]))
                .env(s(&[
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                ]))
                .working_dir("/".to_string())
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

fn image_with(entrypoint: &[&str], cmd: &[&str], env: &[&str]) -> ImageConfiguration {
    ImageConfigurationBuilder::default()
        .config(
            ConfigBuilder::default()
                .entrypoint(s(entrypoint))
                .cmd(s(cmd))
                .env(s(env))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

struct Fixture {
    config: PodSandboxConfig,
    image: ImageConfiguration,
    profile_root: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            config: kubelet_config(),
            image: pause_image(),
            profile_root: PathBuf::from("/var/lib/kubelet/seccomp"),
        }
    }

    fn build(&self) -> Result<Spec, SpecError> {
        sandbox_spec(&SandboxSpecInput {
            id: "0123456789abcdef",
            config: &self.config,
            image_config: &self.image,
            rootfs: Path::new("/var/lib/crius/sandboxes/0123456789abcdef/rootfs"),
            rootfs_mount: None,
            netns_path: Some(Path::new("/run/crius/netns/0123456789abcdef")),
            cgroups_path: "/kubepods/besteffort/pod3f5a0c1e/0123456789abcdef",
            oom_score_adj: -998,
            seccomp_profile_root: &self.profile_root,
            bounding_caps: u64::MAX,
        })
    }

    fn sc(&mut self) -> &mut LinuxSandboxSecurityContext {
        self.config
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
    }

    fn ns(&mut self) -> &mut NamespaceOption {
        self.sc().namespace_options.as_mut().unwrap()
    }
}

/// JSON with the set-valued capability lists sorted and the (separately tested) seccomp filter
/// summarised, so the golden file is stable and reviewable.
fn normalized(spec: &Spec) -> Value {
    let mut v = serde_json::to_value(spec).unwrap();
    if let Some(caps) = v
        .pointer_mut("/process/capabilities")
        .and_then(Value::as_object_mut)
    {
        for list in caps.values_mut() {
            if let Some(arr) = list.as_array_mut() {
                arr.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    if let Some(sec) = v.pointer_mut("/linux/seccomp") {
        let rules = sec["syscalls"].as_array().map_or(0, Vec::len);
        *sec = serde_json::json!({
            "defaultAction": sec["defaultAction"],
            "defaultErrnoRet": sec["defaultErrnoRet"],
            "rules": rules,
        });
    }
    v
}

#[test]
fn golden_kubelet_sandbox() {
    let spec = Fixture::new().build().unwrap();
    let actual = normalized(&spec);
    let pretty = serde_json::to_string_pretty(&actual).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, &pretty).unwrap();
    }
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(GOLDEN).expect("golden file (UPDATE_GOLDEN=1 writes it)"),
    )
    .unwrap();
    assert_eq!(actual, expected, "actual spec:\n{pretty}");
}

#[test]
fn typical_sandbox_details() {
    let spec = Fixture::new().build().unwrap();
    assert_eq!(spec.hostname().as_deref(), Some("nginx-7c5ddbdf54-x2x9q"));
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.args().as_ref().unwrap(), &["/pause"]);
    assert_eq!(p.user().uid(), 65535);
    assert_eq!(
        p.user().gid(),
        0,
        "run_as_user overrides the image user entirely"
    );
    // Checked, but not given to the pause (it has no /proc for setgroups and opens no files).
    assert_eq!(p.user().additional_gids(), &None);
    assert_eq!(p.oom_score_adj(), Some(-998));
    assert_eq!(p.no_new_privileges(), Some(true));
    assert!(p.rlimits().is_none());
    let caps = p.capabilities().as_ref().unwrap();
    assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
    assert!(caps.inheritable().as_ref().unwrap().is_empty());

    let linux = spec.linux().as_ref().unwrap();
    let types: Vec<_> = linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert!(!types.contains(&LinuxNamespaceType::Cgroup));
    assert!(!types.contains(&LinuxNamespaceType::User));
    let net = linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)
        .expect("a network namespace");
    assert_eq!(
        net.path().as_deref(),
        Some(Path::new("/run/crius/netns/0123456789abcdef")),
        "the sandbox joins the namespace made for it"
    );
    assert!(linux.seccomp().is_some());
    let cpu = linux.resources().as_ref().unwrap().cpu().as_ref().unwrap();
    assert_eq!(cpu.shares(), Some(2));
    assert_eq!(linux.sysctl().as_ref().unwrap().len(), 2);

    let ann = spec.annotations().as_ref().unwrap();
    assert_eq!(ann["io.kubernetes.cri.container-type"], "sandbox");
    assert_eq!(ann["io.kubernetes.cri.sandbox-id"], "0123456789abcdef");
    assert_eq!(
        ann["io.kubernetes.cri.sandbox-name"],
        "nginx-7c5ddbdf54-x2x9q"
    );
    assert_eq!(ann["io.kubernetes.cri.sandbox-namespace"], "default");
    assert_eq!(
        ann["io.kubernetes.cri.sandbox-uid"],
        "3f5a0c1e-8d2b-4a57-9a8e-1b7f6c0d2e11"
    );
    assert_eq!(ann["kubernetes.io/config.source"], "api");

    let dests = crate::oci::mount_destinations(&spec);
    assert_eq!(dests, [Path::new("/dev")], "the pause mounts only /dev");
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    assert!(linux.masked_paths().is_none() && linux.readonly_paths().is_none());
}

/// The read-only sandbox rootfs has only the skeleton's directories to mount onto.
#[test]
fn every_mount_point_is_in_the_rootfs_skeleton() {
    let mut f = Fixture::new();
    f.sc().privileged = true;
    for spec in [Fixture::new().build().unwrap(), f.build().unwrap()] {
        for m in spec.mounts().as_ref().unwrap() {
            let rel = m.destination().strip_prefix("/").unwrap();
            assert!(
                crate::snapshot::skeleton::MOUNT_POINTS
                    .iter()
                    .any(|d| Path::new(d) == rel),
                "{} is not in the skeleton",
                m.destination().display()
            );
        }
    }
}

#[test]
fn rootfs_mount_comes_first() {
    let f = Fixture::new();
    let mut overlay = oci_spec::runtime::Mount::default();
    overlay.set_destination("/".into());
    overlay.set_typ(Some("overlay".into()));
    let spec = sandbox_spec(&SandboxSpecInput {
        id: "x",
        config: &f.config,
        image_config: &f.image,
        rootfs: Path::new("/r"),
        rootfs_mount: Some(&overlay),
        netns_path: None,
        cgroups_path: "/x",
        oom_score_adj: 0,
        seccomp_profile_root: Path::new("/"),
        bounding_caps: u64::MAX,
    })
    .unwrap();
    let dests = crate::oci::mount_destinations(&spec);
    assert_eq!(dests, [Path::new("/"), Path::new("/dev")]);
}

#[test]
fn host_network_has_no_hostname_and_no_net_uts() {
    let mut f = Fixture::new();
    f.ns().network = NamespaceMode::Node as i32;
    // net.* sysctls would change the node: remove the one the fixture has.
    f.config
        .linux
        .as_mut()
        .unwrap()
        .sysctls
        .remove("net.ipv4.ip_unprivileged_port_start");
    let spec = f.build().unwrap();
    assert_eq!(spec.hostname(), &None);
    let types: Vec<_> = spec
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert_eq!(
        types,
        [
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Ipc
        ]
    );
}

#[test]
fn host_network_refuses_net_sysctl() {
    let mut f = Fixture::new();
    f.ns().network = NamespaceMode::Node as i32;
    let err = f.build().unwrap_err();
    assert!(matches!(
        err,
        SpecError::SysctlNeedsNamespace {
            namespace: "network",
            ..
        }
    ));
    assert_eq!(err.grpc_code(), tonic::Code::InvalidArgument);
}

#[test]
fn host_ipc_and_pid() {
    let mut f = Fixture::new();
    f.ns().ipc = NamespaceMode::Node as i32;
    f.ns().pid = NamespaceMode::Node as i32;
    f.config
        .linux
        .as_mut()
        .unwrap()
        .sysctls
        .remove("kernel.shm_rmid_forced");
    let spec = f.build().unwrap();
    let types: Vec<_> = spec
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert_eq!(
        types,
        [
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Network
        ]
    );
}

#[test]
fn privileged_sandbox() {
    let mut f = Fixture::new();
    f.sc().privileged = true;
    let spec = f.build().unwrap();
    let p = spec.process().as_ref().unwrap();
    let caps = p.capabilities().as_ref().unwrap();
    assert!(
        caps.bounding()
            .as_ref()
            .unwrap()
            .contains(&Capability::SysAdmin)
    );
    assert_eq!(caps.effective().as_ref().unwrap().len(), 41);
    let linux = spec.linux().as_ref().unwrap();
    assert!(
        linux.seccomp().is_none(),
        "privileged ignores RuntimeDefault"
    );
    let devices = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    assert_eq!(devices.len(), 1);
    assert!(devices[0].allow());
}

#[test]
fn bad_sysctl_names_the_key() {
    let mut f = Fixture::new();
    f.config
        .linux
        .as_mut()
        .unwrap()
        .sysctls
        .insert("kernel.panic".into(), "1".into());
    let err = f.build().unwrap_err();
    assert!(matches!(err, SpecError::SysctlNotNamespaced { ref key } if key == "kernel.panic"));
    assert!(err.to_string().contains("kernel.panic"));
}

#[test]
fn bad_env_in_image() {
    let mut f = Fixture::new();
    f.image = image_with(&["/pause"], &[], &["GOOD=1", "BROKEN"]);
    let err = f.build().unwrap_err();
    assert!(matches!(err, SpecError::InvalidEnv { ref entry } if entry == "BROKEN"));
}

#[test]
fn env_gets_default_path() {
    let mut f = Fixture::new();
    f.image = image_with(&["/pause"], &[], &["A=b"]);
    let spec = f.build().unwrap();
    let env = spec.process().as_ref().unwrap().env().clone().unwrap();
    assert_eq!(
        env,
        [
            "A=b",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ]
    );
}

#[test]
fn empty_command() {
    let mut f = Fixture::new();
    f.image = image_with(&[], &[], &[]);
    let err = f.build().unwrap_err();
    assert!(matches!(err, SpecError::NoCommand));
    assert_eq!(
        err.to_string(),
        "image config has no command (both Entrypoint and Cmd are empty)"
    );
    // An image without any config section at all is the same error.
    f.image = ImageConfigurationBuilder::default().build().unwrap();
    assert!(matches!(f.build(), Err(SpecError::NoCommand)));
}

#[test]
fn named_image_user_needs_run_as_user() {
    let mut f = Fixture::new();
    f.image = ImageConfigurationBuilder::default()
        .config(
            ConfigBuilder::default()
                .user("nobody".to_string())
                .entrypoint(s(&["/pause"]))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    // The fixture sets run_as_user, so the name never matters.
    assert!(f.build().is_ok());
    f.sc().run_as_user = None;
    assert!(matches!(
        f.build(),
        Err(SpecError::NonNumericImageUser { .. })
    ));
}

#[test]
fn localhost_profile_missing() {
    let mut f = Fixture::new();
    f.profile_root = PathBuf::from("/nonexistent-crius-profiles");
    f.sc().seccomp = Some(SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: "audit.json".into(),
    });
    let err = f.build().unwrap_err();
    assert!(matches!(err, SpecError::SeccompProfileRead { .. }));
    assert!(
        err.to_string()
            .contains("/nonexistent-crius-profiles/audit.json"),
        "{err}"
    );
}

#[test]
fn localhost_profile_loaded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("log.json"),
        r#"{"defaultAction":"SCMP_ACT_LOG"}"#,
    )
    .unwrap();
    let mut f = Fixture::new();
    f.profile_root = dir.path().to_path_buf();
    #[allow(deprecated)]
    {
        f.sc().seccomp = None;
        f.sc().seccomp_profile_path = "localhost/log.json".into();
    }
    let spec = f.build().unwrap();
    let sec = spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
    assert_eq!(
        sec.default_action(),
        oci_spec::runtime::LinuxSeccompAction::ScmpActLog
    );
}

#[test]
fn no_seccomp_field_and_empty_path_is_unconfined() {
    let mut f = Fixture::new();
    f.sc().seccomp = None;
    let spec = f.build().unwrap();
    assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
}

#[test]
fn pod_user_namespace_is_unimplemented() {
    let mut f = Fixture::new();
    f.ns().userns_options = Some(UserNamespace {
        mode: NamespaceMode::Pod as i32,
        ..Default::default()
    });
    let err = f.build().unwrap_err();
    assert_eq!(err.grpc_code(), tonic::Code::Unimplemented);
}

#[test]
fn annotations_cannot_be_spoofed() {
    let mut f = Fixture::new();
    f.config
        .annotations
        .insert("io.kubernetes.cri.sandbox-id".into(), "evil".into());
    let spec = f.build().unwrap();
    assert_eq!(
        spec.annotations().as_ref().unwrap()["io.kubernetes.cri.sandbox-id"],
        "0123456789abcdef"
    );
}

#[test]
fn bad_hostname() {
    let mut f = Fixture::new();
    f.config.hostname = "a".repeat(65);
    assert!(matches!(f.build(), Err(SpecError::InvalidHostname { .. })));
}

#[test]
fn minimal_config_defaults() {
    // No linux section at all: own namespaces, unconfined, root user from the pause image.
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "p".into(),
            uid: "u".into(),
            namespace: "n".into(),
            attempt: 1,
        }),
        ..Default::default()
    };
    let image = pause_image();
    let spec = sandbox_spec(&SandboxSpecInput {
        id: "id",
        config: &config,
        image_config: &image,
        rootfs: Path::new("/r"),
        rootfs_mount: None,
        netns_path: None,
        cgroups_path: "/crius/id",
        oom_score_adj: 0,
        seccomp_profile_root: Path::new("/"),
        bounding_caps: u64::MAX,
    })
    .unwrap();
    assert_eq!(spec.hostname(), &None);
    let p = spec.process().as_ref().unwrap();
    assert_eq!((p.user().uid(), p.user().gid()), (65535, 65535));
    assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
    assert!(spec.linux().as_ref().unwrap().sysctl().is_none());
}

#[test]
fn json_round_trip_and_bundle_load() {
    let spec = Fixture::new().build().unwrap();
    let json = serde_json::to_string_pretty(&spec).unwrap();
    let back: Spec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, spec);
    // What libcontainer does with a bundle: Spec::load(config.json).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    spec.save(&path).unwrap();
    assert_eq!(Spec::load(&path).unwrap(), spec);
    // Nothing of oci-spec's example defaults leaked in.
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_ne!(v["hostname"], "youki");
    assert!(v["process"].get("rlimits").is_none());
    assert_eq!(v["ociVersion"], "1.1.0");
}
