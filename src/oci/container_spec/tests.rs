//! Golden and behaviour tests of the application-container spec.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{
    Capability as CriCapability, ContainerMetadata, HugepageLimit, ImageSpec, Int64Value, KeyValue,
    LinuxContainerConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount as CriMount,
    MountPropagation, NamespaceOption, PodSandboxMetadata, SecurityProfile,
};
use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};
use oci_spec::runtime::{Capability, LinuxDeviceType, LinuxNamespaceType, Mount};
use serde_json::Value;

use super::*;

const GOLDEN: &str = "src/oci/testdata/container_golden.json";
const POD_UID: &str = "3f5a0c1e-8d2b-4a57-9a8e-1b7f6c0d2e11";

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v.into(),
    }
}

fn ns_options() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn sandbox_config() -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "busybox-6d4f9c7b8-abcde".into(),
            uid: POD_UID.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "busybox-6d4f9c7b8-abcde".into(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/burstable/pod3f5a0c1e".into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(ns_options()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn kubelet_mount(container: &str, host: &str, ro: bool, prop: MountPropagation) -> CriMount {
    CriMount {
        container_path: container.into(),
        host_path: host.into(),
        readonly: ro,
        propagation: prop as i32,
        ..Default::default()
    }
}

/// What kubelet sends for a busybox container with env, a termination-log file, a configMap, a
/// hostPath with HostToContainer propagation, limits, and a restricted security context.
fn container_config() -> ContainerConfig {
    let pod_dir = format!("/var/lib/kubelet/pods/{POD_UID}");
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: "sha256:65ad0d468eb1c558bf7f4e64e790f586e9eda649ee9f130cd0e835b292bbc5ac".into(),
            ..Default::default()
        }),
        command: s(&["sh", "-c"]),
        args: s(&["echo hello && sleep 3600"]),
        working_dir: String::new(),
        envs: vec![
            kv("GREETING", "hello"),
            kv("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            kv("KUBERNETES_SERVICE_PORT", "443"),
        ],
        mounts: vec![
            kubelet_mount(
                "/etc/config",
                &format!("{pod_dir}/volumes/kubernetes.io~configmap/config"),
                true,
                MountPropagation::PropagationPrivate,
            ),
            kubelet_mount(
                "/var/log/host",
                "/var/log",
                true,
                MountPropagation::PropagationHostToContainer,
            ),
            kubelet_mount(
                "/etc/hosts",
                &format!("{pod_dir}/etc-hosts"),
                false,
                MountPropagation::PropagationPrivate,
            ),
            kubelet_mount(
                "/dev/termination-log",
                &format!("{pod_dir}/containers/app/1a2b3c4d"),
                false,
                MountPropagation::PropagationPrivate,
            ),
        ],
        labels: HashMap::from([
            ("io.kubernetes.container.name".into(), "app".into()),
            (
                "io.kubernetes.pod.name".into(),
                "busybox-6d4f9c7b8-abcde".into(),
            ),
        ]),
        annotations: HashMap::from([
            ("io.kubernetes.container.hash".into(), "8a3e9f1b".into()),
            (
                "io.kubernetes.container.terminationMessagePath".into(),
                "/dev/termination-log".into(),
            ),
        ]),
        log_path: "app/0.log".into(),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 102,
                memory_limit_in_bytes: 128 << 20,
                oom_score_adj: 968,
                hugepage_limits: vec![HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 0,
                }],
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                capabilities: Some(CriCapability {
                    add_capabilities: s(&["NET_BIND_SERVICE"]),
                    drop_capabilities: s(&["ALL"]),
                    add_ambient_capabilities: vec![],
                }),
                namespace_options: Some(ns_options()),
                run_as_user: Some(Int64Value { value: 1000 }),
                run_as_group: Some(Int64Value { value: 3000 }),
                supplemental_groups: vec![2000],
                no_new_privs: true,
                masked_paths: s(&[
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
                ]),
                readonly_paths: s(&[
                    "/proc/bus",
                    "/proc/fs",
                    "/proc/irq",
                    "/proc/sys",
                    "/proc/sysrq-trigger",
                ]),
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// busybox's config.
fn busybox_image() -> ImageConfiguration {
    ImageConfigurationBuilder::default()
        .config(
            ConfigBuilder::default()
                .cmd(s(&["sh"]))
                .env(s(&[
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                ]))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

const BUSYBOX_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
nobody:x:65534:65534:nobody:/home:/bin/false\n";
const BUSYBOX_GROUP: &str = "root:x:0:\ndaemon:x:1:\nwheel:x:10:root\nnobody:x:65534:\n";

const HOST: HostFeatures = HostFeatures {
    apparmor: false,
    swap: true,
    hugetlb: true,
    bounding_caps: u64::MAX,
    cgroup_v2: false,
};

struct Fixture {
    config: ContainerConfig,
    sandbox: PodSandboxConfig,
    image: ImageConfiguration,
    devices: Vec<ResolvedDevice>,
    host_devices: Vec<ResolvedDevice>,
    target_pid: Option<i32>,
    host: HostFeatures,
    can_lower: bool,
    own_score: i32,
    files: SandboxFiles<'static>,
    profile_root: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            config: container_config(),
            sandbox: sandbox_config(),
            image: busybox_image(),
            devices: vec![],
            host_devices: vec![],
            target_pid: None,
            host: HOST,
            can_lower: true,
            own_score: 0,
            files: SandboxFiles {
                resolv_conf: Some(Path::new(
                    "/var/lib/crius/sandboxes/0123456789abcdef/resolv.conf",
                )),
                hostname: Some(Path::new(
                    "/var/lib/crius/sandboxes/0123456789abcdef/hostname",
                )),
                hosts: Some(Path::new("/var/lib/crius/sandboxes/0123456789abcdef/hosts")),
                dev_shm: Some(Path::new("/run/crius/shm/0123456789abcdef")),
            },
            profile_root: PathBuf::from("/var/lib/kubelet/seccomp"),
        }
    }

    fn build(&self) -> Result<Spec, SpecError> {
        let rootfs = PathBuf::from("/var/lib/crius/containers/c0ffee/rootfs");
        container_spec(&ContainerSpecInput {
            sandbox_id: "0123456789abcdef",
            config: &self.config,
            sandbox_config: &self.sandbox,
            image_config: &self.image,
            image_name: "docker.io/library/busybox:1.36",
            rootfs: &rootfs,
            sandbox_pid: 4242,
            target_pid: self.target_pid,
            sandbox_files: self.files,
            cgroups_path: "/kubepods/burstable/pod3f5a0c1e/c0ffee",
            passwd: Some(BUSYBOX_PASSWD),
            group: Some(BUSYBOX_GROUP),
            devices: &self.devices,
            host_devices: &self.host_devices,
            seccomp_profile_root: &self.profile_root,
            node_can_lower_oom: self.can_lower,
            own_oom_score: self.own_score,
            node_hostname: "node-1",
            host: self.host,
        })
    }

    fn sc(&mut self) -> &mut LinuxContainerSecurityContext {
        self.config
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
    }

    fn res(&mut self) -> &mut LinuxContainerResources {
        self.config
            .linux
            .as_mut()
            .unwrap()
            .resources
            .as_mut()
            .unwrap()
    }

    fn set_ns(&mut self, f: impl Fn(&mut NamespaceOption)) {
        f(self.sc().namespace_options.as_mut().unwrap());
        let sb = self
            .sandbox
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap();
        f(sb.namespace_options.as_mut().unwrap());
    }
}

/// JSON with capability sets sorted and the seccomp filter summarised (tested elsewhere).
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
fn golden_kubelet_container() {
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

fn process(spec: &Spec) -> &Process {
    spec.process().as_ref().unwrap()
}

fn linux(spec: &Spec) -> &Linux {
    spec.linux().as_ref().unwrap()
}

fn mounts_at<'a>(spec: &'a Spec, dest: &str) -> Vec<&'a Mount> {
    spec.mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination() == Path::new(dest))
        .collect()
}

fn ns_types(spec: &Spec) -> Vec<LinuxNamespaceType> {
    linux(spec)
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect()
}

#[test]
fn typical_container_details() {
    let spec = Fixture::new().build().unwrap();
    assert_eq!(spec.hostname(), &None);
    let p = process(&spec);
    assert_eq!(
        p.args().as_ref().unwrap(),
        &["sh", "-c", "echo hello && sleep 3600"]
    );
    assert_eq!((p.user().uid(), p.user().gid()), (1000, 3000));
    assert_eq!(p.user().additional_gids(), &Some(vec![2000, 3000]));
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(p.terminal(), Some(false));
    assert_eq!(p.cwd(), Path::new("/"));
    let env = p.env().as_ref().unwrap();
    assert!(env.contains(&"HOSTNAME=busybox-6d4f9c7b8-abcde".to_string()));
    assert!(env.contains(&"GREETING=hello".to_string()));
    let caps = p.capabilities().as_ref().unwrap();
    let only_bind: oci_spec::runtime::Capabilities =
        [Capability::NetBindService].into_iter().collect();
    assert_eq!(caps.bounding().as_ref(), Some(&only_bind));
    assert_eq!(caps.effective().as_ref(), Some(&only_bind));
    assert!(caps.ambient().as_ref().unwrap().is_empty());
    assert_eq!(p.oom_score_adj(), Some(968));
    assert!(p.rlimits().is_none());

    let l = linux(&spec);
    assert!(l.seccomp().is_some());
    assert_eq!(
        l.cgroups_path().as_deref(),
        Some(Path::new("/kubepods/burstable/pod3f5a0c1e/c0ffee"))
    );
    let ns = l.namespaces().as_ref().unwrap();
    let net = ns
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)
        .unwrap();
    assert_eq!(net.path().as_deref(), Some(Path::new("/proc/4242/ns/net")));
    let pid = ns
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Pid)
        .unwrap();
    assert_eq!(pid.path(), &None, "pid mode CONTAINER: a new pid namespace");
    assert!(!ns_types(&spec).contains(&LinuxNamespaceType::Cgroup));

    // kubelet's /etc/hosts replaces the sandbox's; the other pod files are shared.
    let hosts = mounts_at(&spec, "/etc/hosts");
    assert_eq!(hosts.len(), 1);
    assert!(
        hosts[0]
            .source()
            .as_ref()
            .unwrap()
            .starts_with("/var/lib/kubelet")
    );
    assert_eq!(mounts_at(&spec, "/etc/resolv.conf").len(), 1);
    let shm = mounts_at(&spec, "/dev/shm");
    assert_eq!(
        shm[0].source().as_deref(),
        Some(Path::new("/run/crius/shm/0123456789abcdef"))
    );
    let log = mounts_at(&spec, "/var/log/host");
    assert_eq!(
        log[0].options().as_ref().unwrap(),
        &s(&["rbind", "rslave", "ro"])
    );
    assert_eq!(l.rootfs_propagation(), &None);

    let root = spec.root().as_ref().unwrap();
    assert_eq!(root.readonly(), Some(false));

    let ann = spec.annotations().as_ref().unwrap();
    assert_eq!(ann["io.kubernetes.cri.container-type"], "container");
    assert_eq!(ann["io.kubernetes.cri.container-name"], "app");
    assert_eq!(ann["io.kubernetes.cri.sandbox-id"], "0123456789abcdef");
    assert_eq!(
        ann["io.kubernetes.cri.sandbox-name"],
        "busybox-6d4f9c7b8-abcde"
    );
    assert_eq!(ann["io.kubernetes.cri.sandbox-namespace"], "default");
    assert_eq!(ann["io.kubernetes.cri.sandbox-uid"], POD_UID);
    assert_eq!(
        ann["io.kubernetes.cri.image-name"],
        "docker.io/library/busybox:1.36"
    );
    assert_eq!(ann["io.kubernetes.container.hash"], "8a3e9f1b");
}

#[test]
fn image_command_when_cri_sets_none() {
    let mut f = Fixture::new();
    f.config.command.clear();
    f.config.args.clear();
    let spec = f.build().unwrap();
    assert_eq!(process(&spec).args().as_ref().unwrap(), &["sh"]);
    f.image = ImageConfigurationBuilder::default().build().unwrap();
    assert!(matches!(f.build(), Err(SpecError::NoContainerCommand)));
}

#[test]
fn env_override_and_working_dir() {
    let mut f = Fixture::new();
    f.image = ImageConfigurationBuilder::default()
        .config(
            ConfigBuilder::default()
                .cmd(s(&["sh"]))
                .env(s(&["GREETING=image", "ONLY_IMAGE=1"]))
                .working_dir("/srv".to_string())
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let spec = f.build().unwrap();
    let p = process(&spec);
    let env = p.env().as_ref().unwrap();
    assert!(env.contains(&"GREETING=hello".to_string()));
    assert!(!env.contains(&"GREETING=image".to_string()));
    assert!(env.contains(&"ONLY_IMAGE=1".to_string()));
    assert!(env.iter().any(|e| e.starts_with("PATH=")));
    assert_eq!(p.cwd(), Path::new("/srv"));
    f.config.working_dir = "/work".into();
    assert_eq!(process(&f.build().unwrap()).cwd(), Path::new("/work"));
    // No pod hostname: the node's.
    f.sandbox.hostname.clear();
    let spec = f.build().unwrap();
    assert!(
        process(&spec)
            .env()
            .as_ref()
            .unwrap()
            .contains(&"HOSTNAME=node-1".to_string())
    );
}

#[test]
fn tty_is_terminal() {
    let mut f = Fixture::new();
    f.config.tty = true;
    assert_eq!(process(&f.build().unwrap()).terminal(), Some(true));
}

#[test]
fn run_as_username_and_image_groups() {
    let mut f = Fixture::new();
    f.sc().run_as_user = None;
    f.sc().run_as_group = None;
    f.sc().run_as_username = "root".into();
    let u = process(&f.build().unwrap()).user().clone();
    assert_eq!((u.uid(), u.gid()), (0, 0));
    assert_eq!(
        u.additional_gids(),
        &Some(vec![0, 10, 2000]),
        "wheel from /etc/group"
    );
    f.sc().run_as_username = "nosuchuser".into();
    assert!(matches!(f.build(), Err(SpecError::UnknownUser { .. })));
    // Image user by name.
    f.sc().run_as_username.clear();
    f.image = ImageConfigurationBuilder::default()
        .config(
            ConfigBuilder::default()
                .cmd(s(&["sh"]))
                .user("nobody".to_string())
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let u = process(&f.build().unwrap()).user().clone();
    assert_eq!((u.uid(), u.gid()), (65534, 65534));
}

#[test]
fn privileged_container() {
    let mut f = Fixture::new();
    f.sc().privileged = true;
    // Not allowed unless the sandbox is privileged too.
    assert!(matches!(
        f.build(),
        Err(SpecError::PrivilegedInUnprivilegedSandbox { .. })
    ));
    f.sandbox
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .privileged = true;
    f.host_devices = vec![device("/dev/sda", LinuxDeviceType::B, 8, 0)];
    f.devices = vec![device("/dev/fuse", LinuxDeviceType::C, 10, 229)];
    let spec = f.build().unwrap();
    let caps = process(&spec).capabilities().as_ref().unwrap();
    assert_eq!(
        caps.bounding().as_ref().unwrap().len(),
        41,
        "add/drop ignored"
    );
    let l = linux(&spec);
    assert!(l.seccomp().is_none());
    assert!(l.masked_paths().as_ref().unwrap().is_empty());
    assert!(l.readonly_paths().as_ref().unwrap().is_empty());
    let devs = l.devices().as_ref().unwrap();
    assert_eq!(devs.len(), 2);
    let rules = l.resources().as_ref().unwrap().devices().as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].to_string(), "a *:* rwm");
    for dest in ["/sys", "/sys/fs/cgroup"] {
        let m = mounts_at(&spec, dest);
        assert!(
            m[0].options().as_ref().unwrap().contains(&"rw".to_string()),
            "{dest}"
        );
    }
}

fn device(path: &str, typ: LinuxDeviceType, major: i64, minor: i64) -> ResolvedDevice {
    ResolvedDevice {
        container_path: path.into(),
        typ,
        major,
        minor,
        file_mode: 0o660,
        uid: 0,
        gid: 6,
        permissions: "rwm".into(),
    }
}

#[test]
fn cri_devices_unprivileged() {
    let mut f = Fixture::new();
    let mut d = device("/dev/fuse", LinuxDeviceType::C, 10, 229);
    d.permissions = "rw".into();
    f.devices = vec![d];
    f.host_devices = vec![device("/dev/sda", LinuxDeviceType::B, 8, 0)];
    let spec = f.build().unwrap();
    let l = linux(&spec);
    let devs = l.devices().as_ref().unwrap();
    assert_eq!(devs.len(), 1, "host devices only for privileged");
    assert_eq!(devs[0].path(), Path::new("/dev/fuse"));
    let rules = l.resources().as_ref().unwrap().devices().as_ref().unwrap();
    assert!(!rules[0].allow(), "deny-all first");
    assert_eq!(rules.last().unwrap().to_string(), "c 10:229 rw");
    // No devices → libcontainer's standard set only.
    f.devices.clear();
    assert!(linux(&f.build().unwrap()).devices().is_none());
}

#[test]
fn capabilities_add_all_drop_one_and_unknown() {
    let mut f = Fixture::new();
    f.sc().capabilities = Some(CriCapability {
        add_capabilities: s(&["ALL"]),
        drop_capabilities: s(&["sys_admin"]),
        add_ambient_capabilities: vec![],
    });
    let spec = f.build().unwrap();
    let caps = process(&spec).capabilities().as_ref().unwrap();
    let b = caps.bounding().as_ref().unwrap();
    assert_eq!(b.len(), 40);
    assert!(!b.contains(&Capability::SysAdmin));
    f.sc().capabilities.as_mut().unwrap().drop_capabilities = s(&["NOT_A_CAP"]);
    assert!(matches!(
        f.build(),
        Err(SpecError::UnknownCapability { .. })
    ));
}

#[test]
fn readonly_rootfs_makes_pod_files_ro() {
    let mut f = Fixture::new();
    f.sc().readonly_rootfs = true;
    let spec = f.build().unwrap();
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    let resolv = mounts_at(&spec, "/etc/resolv.conf");
    assert!(
        resolv[0]
            .options()
            .as_ref()
            .unwrap()
            .contains(&"ro".to_string())
    );
    // CRI mounts keep their own mode.
    let term = mounts_at(&spec, "/dev/termination-log");
    assert!(
        term[0]
            .options()
            .as_ref()
            .unwrap()
            .contains(&"rw".to_string())
    );
}

#[test]
fn bidirectional_mount_shares_rootfs() {
    let mut f = Fixture::new();
    f.config.mounts.push(kubelet_mount(
        "/var/lib/kubelet",
        "/var/lib/kubelet",
        false,
        MountPropagation::PropagationBidirectional,
    ));
    let spec = f.build().unwrap();
    assert_eq!(linux(&spec).rootfs_propagation().as_deref(), Some("shared"));
    let m = mounts_at(&spec, "/var/lib/kubelet");
    assert_eq!(
        m[0].options().as_ref().unwrap(),
        &s(&["rbind", "rshared", "rw"])
    );
}

#[test]
fn mounts_are_ordered_parents_first() {
    let mut f = Fixture::new();
    f.config.mounts = vec![
        kubelet_mount(
            "/data/cache/x",
            "/h/x",
            false,
            MountPropagation::PropagationPrivate,
        ),
        kubelet_mount(
            "/data",
            "/h/data",
            false,
            MountPropagation::PropagationPrivate,
        ),
    ];
    let spec = f.build().unwrap();
    let dests = crate::oci::mount_destinations(&spec);
    let pos = |d: &str| dests.iter().position(|x| x == Path::new(d)).unwrap();
    assert!(pos("/data") < pos("/data/cache/x"));
}

#[test]
fn relative_host_path_is_refused() {
    let mut f = Fixture::new();
    f.config.mounts.push(kubelet_mount(
        "/x",
        "relative/dir",
        false,
        MountPropagation::PropagationPrivate,
    ));
    let err = f.build().unwrap_err();
    assert!(matches!(
        err,
        SpecError::InvalidMount {
            field: "host_path",
            ..
        }
    ));
    assert!(err.to_string().contains("relative/dir"));
}

#[test]
fn target_pid_namespace() {
    let mut f = Fixture::new();
    f.set_ns(|o| {
        o.pid = NamespaceMode::Target as i32;
        o.target_id = "target-ctr".into();
    });
    assert!(matches!(f.build(), Err(SpecError::MissingTargetPid { .. })));
    f.target_pid = Some(5151);
    let spec = f.build().unwrap();
    let pid = linux(&spec)
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Pid)
        .cloned()
        .unwrap();
    assert_eq!(pid.path().as_deref(), Some(Path::new("/proc/5151/ns/pid")));
}

#[test]
fn pod_pid_namespace_joins_sandbox() {
    let mut f = Fixture::new();
    f.set_ns(|o| o.pid = NamespaceMode::Pod as i32);
    let spec = f.build().unwrap();
    let pid = linux(&spec)
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Pid)
        .cloned()
        .unwrap();
    assert_eq!(pid.path().as_deref(), Some(Path::new("/proc/4242/ns/pid")));
}

#[test]
fn host_network_ipc_pid() {
    let mut f = Fixture::new();
    f.set_ns(|o| {
        o.network = NamespaceMode::Node as i32;
        o.ipc = NamespaceMode::Node as i32;
        o.pid = NamespaceMode::Node as i32;
    });
    let spec = f.build().unwrap();
    assert_eq!(ns_types(&spec), [LinuxNamespaceType::Mount]);
    let shm = mounts_at(&spec, "/dev/shm");
    assert_eq!(shm[0].source().as_deref(), Some(Path::new("/dev/shm")));
    assert_eq!(spec.hostname(), &None);
}

#[test]
fn apparmor_refused_without_apparmor() {
    let mut f = Fixture::new();
    f.sc().apparmor = Some(SecurityProfile {
        profile_type: ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    let err = f.build().unwrap_err();
    assert!(matches!(err, SpecError::AppArmorUnavailable { .. }));
    assert!(
        err.to_string()
            .contains("AppArmor is not available on this node")
    );
    f.sc().apparmor = Some(SecurityProfile {
        profile_type: ProfileType::Unconfined as i32,
        localhost_ref: String::new(),
    });
    assert!(f.build().is_ok());
    // With AppArmor on the node, a Localhost profile is applied.
    f.host.apparmor = true;
    f.sc().apparmor = Some(SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: "localhost/k8s-deny-write".into(),
    });
    let spec = f.build().unwrap();
    assert_eq!(
        process(&spec).apparmor_profile().as_deref(),
        Some("k8s-deny-write")
    );
}

#[test]
fn oom_score_clamped() {
    let mut f = Fixture::new();
    f.res().oom_score_adj = -999;
    f.can_lower = false;
    f.own_score = -500;
    assert_eq!(process(&f.build().unwrap()).oom_score_adj(), Some(-500));
    f.can_lower = true;
    assert_eq!(process(&f.build().unwrap()).oom_score_adj(), Some(-999));
    f.res().oom_score_adj = 5000;
    assert_eq!(process(&f.build().unwrap()).oom_score_adj(), Some(1000));
    f.config.linux.as_mut().unwrap().resources = None;
    assert_eq!(process(&f.build().unwrap()).oom_score_adj(), None);
}

#[test]
fn resources_mapping() {
    let mut f = Fixture::new();
    f.res().unified = HashMap::from([("memory.high".into(), "1000000".into())]);
    f.res().cpuset_cpus = "1".into();
    let spec = f.build().unwrap();
    let r = linux(&spec).resources().as_ref().unwrap();
    let cpu = r.cpu().as_ref().unwrap();
    assert_eq!(
        (cpu.shares(), cpu.quota(), cpu.period()),
        (Some(102), Some(50_000), Some(100_000))
    );
    assert_eq!(cpu.cpus().as_deref(), Some("1"));
    assert_eq!(r.memory().as_ref().unwrap().limit(), Some(128 << 20));
    assert_eq!(r.hugepage_limits().as_ref().unwrap()[0].page_size(), "2MB");
    assert_eq!(r.unified().as_ref().unwrap()["memory.high"], "1000000");
    f.host.hugetlb = false;
    let spec = f.build().unwrap();
    assert!(
        linux(&spec)
            .resources()
            .as_ref()
            .unwrap()
            .hugepage_limits()
            .is_none()
    );
}

#[test]
fn masked_paths_default_when_cri_sends_none() {
    let mut f = Fixture::new();
    f.sc().masked_paths.clear();
    f.sc().readonly_paths.clear();
    let spec = f.build().unwrap();
    let l = linux(&spec);
    assert_eq!(
        l.masked_paths().as_ref().unwrap(),
        &security::masked_paths(false)
    );
    assert_eq!(
        l.readonly_paths().as_ref().unwrap(),
        &security::readonly_paths(false)
    );
}

#[test]
fn unsupported_features() {
    let mut f = Fixture::new();
    f.config.cdi_devices = vec![k8s_cri::v1::CdiDevice {
        name: "vendor.com/gpu=0".into(),
    }];
    assert_eq!(
        f.build().unwrap_err().grpc_code(),
        tonic::Code::Unimplemented
    );
    let mut f = Fixture::new();
    f.config.mounts[0].recursive_read_only = true;
    assert_eq!(
        f.build().unwrap_err().grpc_code(),
        tonic::Code::Unimplemented
    );
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
fn json_round_trip() {
    let spec = Fixture::new().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    spec.save(&path).unwrap();
    assert_eq!(Spec::load(&path).unwrap(), spec);
    let v: Value = serde_json::to_value(&spec).unwrap();
    assert!(v.get("hostname").is_none());
    assert!(v["process"].get("rlimits").is_none());
}

#[test]
fn cgroup_v2_host_private_cgroup_namespace_and_one_cgroup_mount() {
    use oci_spec::runtime::LinuxNamespaceType;
    let has_cgroupns = |spec: &Spec| {
        linux(spec)
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Cgroup)
    };
    let cgroup_ro_paths = |spec: &Spec| {
        linux(spec)
            .readonly_paths()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|p| p.starts_with("/sys/fs/cgroup"))
            .count()
    };

    let mut f = Fixture::new();
    let v1 = f.build().unwrap();
    assert!(!has_cgroupns(&v1), "no cgroup namespace on v1");
    assert!(
        cgroup_ro_paths(&v1) > 0,
        "v1 controllers re-bound read-only"
    );

    f.host.cgroup_v2 = true;
    let v2 = f.build().unwrap();
    assert!(has_cgroupns(&v2));
    assert_eq!(
        cgroup_ro_paths(&v2),
        0,
        "no bind stacked on the cgroup2 mount"
    );
    let m = mounts_at(&v2, "/sys/fs/cgroup");
    assert_eq!(m.len(), 1);
    assert!(m[0].options().as_ref().unwrap().contains(&"ro".to_string()));
    // The container's own /proc paths stay read-only.
    assert!(
        linux(&v2)
            .readonly_paths()
            .as_ref()
            .unwrap()
            .iter()
            .any(|p| p.starts_with("/proc"))
    );

    // Privileged: the node's cgroup namespace, a writable hierarchy.
    f.sc().privileged = true;
    f.sandbox
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .privileged = true;
    let privileged = f.build().unwrap();
    assert!(!has_cgroupns(&privileged));
}
