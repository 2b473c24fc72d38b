//! Pod sandbox configs shaped like the ones kubelet sends, and small readers of CRI answers.

use std::collections::HashMap;

use k8s_cri::v1::{
    DnsConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxState, PodSandboxStatusResponse,
    SecurityProfile, security_profile::ProfileType,
};

pub const DNS_SERVER: &str = "10.96.0.10";
pub const ANNOTATION_KEY: &str = "crius.test/annotation";
/// Annotations must come back byte for byte, so use one that needs care.
pub const ANNOTATION_VALUE: &str = "spaces, \"quotes\", ünïcödé and = signs";

pub fn ready() -> i32 {
    PodSandboxState::SandboxReady as i32
}

pub fn not_ready() -> i32 {
    PodSandboxState::SandboxNotready as i32
}

/// A pod on the pod network, as kubelet describes it for a v1 Pod (PID namespace per container,
/// the runtime's default seccomp profile).
pub fn pod_config(name: &str, uid: &str, namespace: &str) -> PodSandboxConfig {
    let labels = HashMap::from([
        ("io.kubernetes.pod.name".to_string(), name.to_string()),
        (
            "io.kubernetes.pod.namespace".to_string(),
            namespace.to_string(),
        ),
        ("io.kubernetes.pod.uid".to_string(), uid.to_string()),
        ("app".to_string(), name.to_string()),
    ]);
    let annotations = HashMap::from([
        ("kubernetes.io/config.source".to_string(), "api".to_string()),
        (ANNOTATION_KEY.to_string(), ANNOTATION_VALUE.to_string()),
    ]);
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.to_string(),
            namespace: namespace.to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: format!("/var/log/pods/{namespace}_{name}_{uid}"),
        dns_config: Some(DnsConfig {
            servers: vec![DNS_SERVER.to_string()],
            searches: vec![
                format!("{namespace}.svc.cluster.local"),
                "svc.cluster.local".to_string(),
                "cluster.local".to_string(),
            ],
            options: vec!["ndots:5".to_string()],
        }),
        port_mappings: Vec::new(),
        labels,
        annotations,
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A hostNetwork pod: the node's network (and so its hostname), no DNS config of its own.
pub fn host_network_pod_config(name: &str, uid: &str, namespace: &str) -> PodSandboxConfig {
    let mut c = pod_config(name, uid, namespace);
    c.hostname = host_hostname();
    c.dns_config = None;
    c.linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .expect("namespace options")
        .network = NamespaceMode::Node as i32;
    c
}

pub fn host_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("read hostname")
        .trim()
        .to_string()
}

pub fn set_sysctl(c: &mut PodSandboxConfig, key: &str, value: &str) {
    c.linux
        .as_mut()
        .expect("linux config")
        .sysctls
        .insert(key.to_string(), value.to_string());
}

/// The pod IP from a status, "" if none.
pub fn pod_ip(status: &PodSandboxStatusResponse) -> String {
    status
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .map(|n| n.ip.clone())
        .unwrap_or_default()
}

pub fn state(status: &PodSandboxStatusResponse) -> i32 {
    status.status.as_ref().expect("status").state
}

/// The network namespace mode the status reports.
pub fn network_mode(status: &PodSandboxStatusResponse) -> i32 {
    status
        .status
        .as_ref()
        .and_then(|s| s.linux.as_ref())
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .map(|o| o.network)
        .expect("status.linux.namespaces.options")
}

/// A "pid" number anywhere in the verbose info: a top-level key's JSON value or one level
/// inside it (containerd puts it in info["info"]).
pub fn pid_from_info(info: &HashMap<String, String>) -> Option<i32> {
    if let Some(pid) = info.get("pid").and_then(|v| v.trim().parse().ok()) {
        return Some(pid);
    }
    info.values()
        .filter_map(|v| serde_json::from_str::<serde_json::Value>(v).ok())
        .find_map(|v| v.get("pid").and_then(|p| p.as_i64()))
        .and_then(|p| i32::try_from(p).ok())
        .filter(|&p| p > 0)
}
