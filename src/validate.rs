//! The rules a RunPodSandbox or CreateContainer request must pass before anything is created.
//!
//! Names, ids and paths from a request end up in file paths, cgroup paths, CNI_ARGS, iptables
//! rules and resolv.conf. Each rule here keeps one of them inside crius's own directories or
//! inside the format it is written into. Pure functions of the request (plus the node's
//! hostname), so they are unit-tested without a daemon; the verbs call them first.
//!
//! Where Kubernetes has a rule for a field, kubelet only ever sends values that pass it, and
//! the rule here is that rule or a looser one: names follow DNS-1123 but letters may be upper
//! case, because critest sends names such as `create-PodSandbox-for-container-<uuid>`, and
//! container names may be as long as pod names, because critest's run past 63 characters.

use crate::error::CriError;
use k8s_cri::v1::{ContainerConfig, DnsConfig, NamespaceMode, PodSandboxConfig, PortMapping};
use std::path::{Component, Path};

/// DNS-1123 subdomain length: the longest pod name the API server accepts.
pub const MAX_NAME: usize = 253;
/// DNS-1123 label length: the longest namespace the API server accepts.
pub const MAX_LABEL: usize = 63;
/// Pod UIDs are UUIDs (36) or, for static pods, a hash (32); leave room for other clients.
pub const MAX_UID: usize = 128;
/// The kernel's HOST_NAME_MAX.
pub const MAX_HOSTNAME: usize = 64;
/// PATH_MAX: longer paths fail in the kernel anyway, later and with a less clear error.
pub const MAX_PATH: usize = 4096;

/// A refused field: its name as CRI spells it and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl From<Invalid> for CriError {
    fn from(e: Invalid) -> CriError {
        CriError::InvalidArgument(e.to_string())
    }
}

type Checked = Result<(), Invalid>;

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// What the node contributes to the pod rules.
pub struct Node<'a> {
    /// The node's hostname: the only one a pod in the node's UTS namespace can have.
    pub hostname: &'a str,
}

/// Every rule of a RunPodSandbox request.
pub fn pod_sandbox(config: &PodSandboxConfig, node: &Node) -> Checked {
    let meta = config
        .metadata
        .as_ref()
        .ok_or_else(|| invalid("metadata", "the sandbox config has no metadata"))?;
    dns_name("metadata.name", &meta.name, MAX_NAME, true)?;
    dns_name("metadata.namespace", &meta.namespace, MAX_LABEL, false)?;
    uid("metadata.uid", &meta.uid)?;
    let host_network = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .is_some_and(|n| n.network == NamespaceMode::Node as i32);
    hostname("hostname", &config.hostname, host_network, node.hostname)?;
    log_directory("log_directory", &config.log_directory)?;
    if let Some(dns) = &config.dns_config {
        dns_config(dns)?;
    }
    for (i, p) in config.port_mappings.iter().enumerate() {
        port_mapping(&format!("port_mappings[{i}]"), p)?;
    }
    if let Some(linux) = &config.linux {
        cgroup_parent("linux.cgroup_parent", &linux.cgroup_parent)?;
    }
    Ok(())
}

/// Every rule of a CreateContainer request that does not need the pod's record.
pub fn container(config: &ContainerConfig) -> Checked {
    let meta = config
        .metadata
        .as_ref()
        .ok_or_else(|| invalid("metadata", "the container config has no metadata"))?;
    dns_name("metadata.name", &meta.name, MAX_NAME, true)?;
    if config.image.as_ref().is_none_or(|i| i.image.is_empty()) {
        return Err(invalid("image", "the container config names no image"));
    }
    log_path("log_path", &config.log_path)?;
    for (i, m) in config.mounts.iter().enumerate() {
        let field = format!("mounts[{i}]");
        // An image volume has no host path (and is refused later as unsupported).
        if m.image.is_none() {
            absolute_path(&format!("{field}.host_path"), &m.host_path)?;
        }
        absolute_path(&format!("{field}.container_path"), &m.container_path)?;
    }
    Ok(())
}

/// A DNS-1123 label (or, with `dots`, subdomain) with upper-case letters allowed: ASCII
/// letters, digits and '-' (and '.'), starting and ending with a letter or digit, each
/// dot-separated part non-empty. Nothing in it can be a path separator, `..`, a CNI_ARGS
/// separator (';', '=') or a control character.
pub fn dns_name(field: &str, value: &str, max: usize, dots: bool) -> Checked {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(invalid(
            field,
            format!("is {} bytes long, at most {max} allowed", value.len()),
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || (dots && c == '.');
    if let Some(c) = value.chars().find(|c| !allowed(*c)) {
        let what = if dots {
            "letters, digits, '-' and '.'"
        } else {
            "letters, digits and '-'"
        };
        return Err(invalid(
            field,
            format!("{value:?} contains {c:?}; only {what} are allowed"),
        ));
    }
    for part in value.split('.') {
        let ok = part
            .chars()
            .next()
            .zip(part.chars().last())
            .is_some_and(|(a, b)| a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric());
        if !ok {
            return Err(invalid(
                field,
                format!(
                    "{value:?} must start and end with a letter or digit (around each '.' too)"
                ),
            ));
        }
    }
    Ok(())
}

/// A pod UID: Kubernetes allows any string, but ours becomes part of keys, CNI_ARGS and
/// iptables comments: printable, no '/', ';' or '=', not `.`/`..`, bounded.
pub fn uid(field: &str, value: &str) -> Checked {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > MAX_UID {
        return Err(invalid(
            field,
            format!("is {} bytes long, at most {MAX_UID} allowed", value.len()),
        ));
    }
    if value == "." || value == ".." {
        return Err(invalid(field, format!("{value:?} is not a valid uid")));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '/' | ';' | '=' | '\\'))
    {
        return Err(invalid(
            field,
            format!(
                "{value:?} contains {c:?}; printable ASCII other than '/', '\\', ';' and '=' only"
            ),
        ));
    }
    Ok(())
}

/// The pod's hostname. In the node's UTS namespace the pod has the node's hostname, so any
/// other value is refused (kubelet sends none for a hostNetwork pod; containerd passes it to
/// runc, which refuses it with "unable to set hostname without a private UTS namespace").
pub fn hostname(field: &str, value: &str, host_network: bool, node: &str) -> Checked {
    if value.is_empty() {
        return Ok(());
    }
    if host_network && value != node {
        return Err(invalid(
            field,
            format!(
                "{value:?} cannot be set on a pod in the node's network namespace (its hostname is the node's, {node:?})"
            ),
        ));
    }
    if value.len() > MAX_HOSTNAME {
        return Err(invalid(
            field,
            format!(
                "is {} bytes long, at most {MAX_HOSTNAME} allowed",
                value.len()
            ),
        ));
    }
    if let Some(c) = value.chars().find(|c| !c.is_ascii_graphic() || *c == '/') {
        return Err(invalid(field, format!("{value:?} contains {c:?}")));
    }
    Ok(())
}

/// The pod's log directory: empty (no logs), or an absolute path without `.`/`..`
/// components. A relative one would resolve against the daemon's working directory.
pub fn log_directory(field: &str, value: &str) -> Checked {
    if value.is_empty() {
        return Ok(());
    }
    absolute_path(field, value)
}

/// An absolute host or container path: no NUL, no `..` (a lexical `..` is where every
/// escape starts; kubelet never sends one), bounded.
pub fn absolute_path(field: &str, value: &str) -> Checked {
    path_chars(field, value)?;
    if !value.starts_with('/') {
        return Err(invalid(
            field,
            format!("{value:?} must be an absolute path"),
        ));
    }
    no_parent(field, value)
}

/// A container's log path, relative to the pod's log directory: must stay inside it.
pub fn log_path(field: &str, value: &str) -> Checked {
    if value.is_empty() {
        return Ok(());
    }
    path_chars(field, value)?;
    if value.starts_with('/') {
        return Err(invalid(
            field,
            format!("{value:?} must be relative to the pod's log_directory"),
        ));
    }
    no_parent(field, value)?;
    if !Path::new(value)
        .components()
        .any(|c| matches!(c, Component::Normal(_)))
    {
        return Err(invalid(field, format!("{value:?} names no file")));
    }
    Ok(())
}

fn path_chars(field: &str, value: &str) -> Checked {
    if value.len() > MAX_PATH {
        return Err(invalid(
            field,
            format!("is {} bytes long, at most {MAX_PATH} allowed", value.len()),
        ));
    }
    if value.contains('\0') {
        return Err(invalid(field, "contains a NUL byte"));
    }
    Ok(())
}

fn no_parent(field: &str, value: &str) -> Checked {
    if Path::new(value)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err(invalid(field, format!("{value:?} must not contain '..'")));
    }
    Ok(())
}

/// Servers, searches and options each become one word of resolv.conf: a newline (or any
/// whitespace or control character) in one would add lines or words of its own.
pub fn dns_config(dns: &DnsConfig) -> Checked {
    for (field, values) in [
        ("dns_config.servers", &dns.servers),
        ("dns_config.searches", &dns.searches),
        ("dns_config.options", &dns.options),
    ] {
        for (i, v) in values.iter().enumerate() {
            if v.is_empty() {
                return Err(invalid(format!("{field}[{i}]"), "must not be empty"));
            }
            if v.len() > MAX_NAME {
                return Err(invalid(
                    format!("{field}[{i}]"),
                    format!("is {} bytes long, at most {MAX_NAME} allowed", v.len()),
                ));
            }
            if let Some(c) = v.chars().find(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    format!("{field}[{i}]"),
                    format!("{v:?} contains {c:?}"),
                ));
            }
        }
    }
    Ok(())
}

/// Ports are 16-bit: container_port 1..=65535, host_port 0 (none) ..=65535; host_ip, when
/// given, an IP address (it reaches iptables).
pub fn port_mapping(field: &str, p: &PortMapping) -> Checked {
    if !(1..=65535).contains(&p.container_port) {
        return Err(invalid(
            format!("{field}.container_port"),
            format!("{} is not a port (1-65535)", p.container_port),
        ));
    }
    if !(0..=65535).contains(&p.host_port) {
        return Err(invalid(
            format!("{field}.host_port"),
            format!("{} is not a port (0-65535)", p.host_port),
        ));
    }
    if !p.host_ip.is_empty() && p.host_ip.parse::<std::net::IpAddr>().is_err() {
        return Err(invalid(
            format!("{field}.host_ip"),
            format!("{:?} is not an IP address", p.host_ip),
        ));
    }
    Ok(())
}

/// The pod's cgroup parent, below every hierarchy's root: a cgroupfs path such as
/// `/kubepods/besteffort/pod<uid>` or a systemd slice name such as
/// `kubepods-besteffort-pod<uid>.slice`. No `.`/`..` component (runc confines them; we refuse
/// them), no control characters.
pub fn cgroup_parent(field: &str, value: &str) -> Checked {
    if value.is_empty() {
        return Ok(());
    }
    path_chars(field, value)?;
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(invalid(field, format!("{value:?} contains {c:?}")));
    }
    if value.split('/').any(|part| part == ".." || part == ".") {
        return Err(invalid(
            field,
            format!("{value:?} must not contain '.' or '..' components"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{
        ContainerMetadata, ImageSpec, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount,
        NamespaceOption, PodSandboxMetadata,
    };

    const NODE: Node = Node { hostname: "node-1" };

    fn pod() -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "create-PodSandbox-for-container-1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
                namespace: "cri-test-namespace1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
                uid: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
                attempt: 3,
            }),
            hostname: "web-0".into(),
            log_directory: "/var/log/pods/default_web-0_1b4e28ba".into(),
            dns_config: Some(DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["default.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            port_mappings: vec![PortMapping {
                container_port: 80,
                host_port: 8080,
                host_ip: "127.0.0.1".into(),
                ..Default::default()
            }],
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: "/kubepods/besteffort/pod1b4e28ba-2fa1-11d2-883f-0016d3cca427"
                    .into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn host_network(mut c: PodSandboxConfig) -> PodSandboxConfig {
        c.linux.get_or_insert_default().security_context = Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
        c
    }

    fn ctr() -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name:
                    "container-for-host-net-portforward-test-1b4e28ba-2fa1-11d2-883f-0016d3cca427"
                        .into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            log_path: "web/0.log".into(),
            mounts: vec![Mount {
                host_path: "/var/lib/kubelet/pods/x/volumes/a".into(),
                container_path: "/data".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// The refused field of a pod config after `change`.
    fn pod_field(change: impl FnOnce(&mut PodSandboxConfig)) -> String {
        let mut c = pod();
        change(&mut c);
        pod_sandbox(&c, &NODE).expect_err("must be refused").field
    }

    fn ctr_field(change: impl FnOnce(&mut ContainerConfig)) -> String {
        let mut c = ctr();
        change(&mut c);
        container(&c).expect_err("must be refused").field
    }

    fn meta(c: &mut PodSandboxConfig) -> &mut PodSandboxMetadata {
        c.metadata.as_mut().unwrap()
    }

    #[test]
    fn what_kubelet_and_critest_send_passes() {
        pod_sandbox(&pod(), &NODE).unwrap();
        container(&ctr()).unwrap();
        // kubelet with the systemd cgroup driver, and a Guaranteed pod with cgroupfs.
        for parent in [
            "kubepods-besteffort-pod1b4e28ba_2fa1_11d2_883f_0016d3cca427.slice",
            "/kubepods/pod1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "/kubepods/burstable/podx/",
            "",
        ] {
            let mut c = pod();
            c.linux.as_mut().unwrap().cgroup_parent = parent.into();
            pod_sandbox(&c, &NODE).unwrap_or_else(|e| panic!("{parent}: {e}"));
        }
        // A static pod's uid is a hash; a hostNetwork pod without a hostname, or with the
        // node's own.
        let mut c = pod();
        meta(&mut c).uid = "5d2a1c3f0e9b8a7d6c5b4a3f2e1d0c9b".into();
        pod_sandbox(&c, &NODE).unwrap();
        let mut c = host_network(pod());
        c.hostname.clear();
        pod_sandbox(&c, &NODE).unwrap();
        c.hostname = "node-1".into();
        pod_sandbox(&c, &NODE).unwrap();
        // No log directory, no log path, no DNS config: all optional.
        let mut c = pod();
        c.log_directory.clear();
        c.dns_config = None;
        pod_sandbox(&c, &NODE).unwrap();
        let mut c = ctr();
        c.log_path.clear();
        container(&c).unwrap();
        // host_port 0 means "no host port".
        let mut c = pod();
        c.port_mappings[0].host_port = 0;
        c.port_mappings[0].host_ip.clear();
        pod_sandbox(&c, &NODE).unwrap();
    }

    #[test]
    fn bad_pod_names_are_refused() {
        for name in [
            "",
            "a/b",
            "../../../../../../tmp/x",
            "a\0b",
            "a_b",
            "-a",
            "a.",
            "a..b",
            ".",
            "..",
            "a;K8S_POD_NAME=b",
        ] {
            assert_eq!(
                pod_field(|c| meta(c).name = name.into()),
                "metadata.name",
                "{name:?}"
            );
        }
        assert_eq!(
            pod_field(|c| meta(c).name = "a".repeat(10 * 1024)),
            "metadata.name"
        );
        pod_field(|c| meta(c).name = "a".repeat(MAX_NAME + 1));
        let mut c = pod();
        meta(&mut c).name = "a".repeat(MAX_NAME);
        pod_sandbox(&c, &NODE).unwrap();
    }

    #[test]
    fn bad_namespaces_and_uids_are_refused() {
        for ns in ["", "../x", "a.b", "a/b", "x\n", &"n".repeat(MAX_LABEL + 1)] {
            assert_eq!(
                pod_field(|c| meta(c).namespace = ns.into()),
                "metadata.namespace",
                "{ns:?}"
            );
        }
        for uid in [
            "",
            ".",
            "..",
            "../../x",
            "a/b",
            "a\0b",
            "a b",
            "a;b",
            "a=b",
            &"u".repeat(MAX_UID + 1),
        ] {
            assert_eq!(
                pod_field(|c| meta(c).uid = uid.into()),
                "metadata.uid",
                "{uid:?}"
            );
        }
        assert_eq!(pod_field(|c| c.metadata = None), "metadata");
    }

    #[test]
    fn log_directory_must_be_absolute_without_parent_components() {
        for dir in ["logs", "../../etc", "/var/log/../../etc", "/var/log/\0x"] {
            assert_eq!(
                pod_field(|c| c.log_directory = dir.into()),
                "log_directory",
                "{dir:?}"
            );
        }
    }

    #[test]
    fn hostname_rules() {
        let mut c = host_network(pod());
        c.hostname = "other".into();
        let e = pod_sandbox(&c, &NODE).unwrap_err();
        assert_eq!(e.field, "hostname");
        assert!(e.reason.contains("node"), "{e}");
        for h in ["a\nb", "a/b", "a b", &"h".repeat(MAX_HOSTNAME + 1)] {
            assert_eq!(pod_field(|c| c.hostname = h.into()), "hostname", "{h:?}");
        }
    }

    #[test]
    fn dns_values_cannot_add_lines() {
        assert_eq!(
            pod_field(|c| c
                .dns_config
                .as_mut()
                .unwrap()
                .options
                .push("ndots:1\nnameserver 6.6.6.6".into())),
            "dns_config.options[1]"
        );
        assert_eq!(
            pod_field(|c| c.dns_config.as_mut().unwrap().servers[0] = "1.1.1.1\r".into()),
            "dns_config.servers[0]"
        );
        assert_eq!(
            pod_field(|c| c.dns_config.as_mut().unwrap().searches[0] = "a b".into()),
            "dns_config.searches[0]"
        );
        assert_eq!(
            pod_field(|c| c.dns_config.as_mut().unwrap().searches.push(String::new())),
            "dns_config.searches[1]"
        );
    }

    #[test]
    fn ports_are_sixteen_bits() {
        for (host, container, field) in [
            (-1, 80, "port_mappings[0].host_port"),
            (70000, 80, "port_mappings[0].host_port"),
            (8080, 0, "port_mappings[0].container_port"),
            (8080, 65536, "port_mappings[0].container_port"),
            (8080, -5, "port_mappings[0].container_port"),
        ] {
            assert_eq!(
                pod_field(|c| {
                    c.port_mappings[0].host_port = host;
                    c.port_mappings[0].container_port = container;
                }),
                field
            );
        }
        assert_eq!(
            pod_field(|c| c.port_mappings[0].host_ip = "localhost; rm".into()),
            "port_mappings[0].host_ip"
        );
        let mut c = pod();
        c.port_mappings[0].host_port = 65535;
        c.port_mappings[0].container_port = 65535;
        c.port_mappings[0].host_ip = "::1".into();
        pod_sandbox(&c, &NODE).unwrap();
    }

    #[test]
    fn cgroup_parents_cannot_climb() {
        for parent in [
            "../../../..",
            "../../../../tmp/x/deep",
            "/kubepods/../../x",
            "kubepods/./x",
            "/a/..",
            "/a\nb",
            "/a\0b",
        ] {
            assert_eq!(
                pod_field(|c| c.linux.as_mut().unwrap().cgroup_parent = parent.into()),
                "linux.cgroup_parent",
                "{parent:?}"
            );
        }
    }

    #[test]
    fn container_rules() {
        for name in ["", "../../x", "a/b", "a\0b", &"c".repeat(MAX_NAME + 1)] {
            assert_eq!(
                ctr_field(|c| c.metadata.as_mut().unwrap().name = name.into()),
                "metadata.name",
                "{name:?}"
            );
        }
        assert_eq!(ctr_field(|c| c.metadata = None), "metadata");
        assert_eq!(ctr_field(|c| c.image = None), "image");
        for path in [
            "../../../../tmp/x.log",
            "/tmp/x.log",
            "a/../../x.log",
            "..",
            ".",
            "./",
            "a\0b",
        ] {
            assert_eq!(
                ctr_field(|c| c.log_path = path.into()),
                "log_path",
                "{path:?}"
            );
        }
        let mut c = ctr();
        c.log_path = "./web/./0.log".into();
        container(&c).unwrap();
        assert_eq!(
            ctr_field(|c| c.mounts[0].host_path = "relative/dir".into()),
            "mounts[0].host_path"
        );
        assert_eq!(
            ctr_field(|c| c.mounts[0].container_path = "/data/../../etc".into()),
            "mounts[0].container_path"
        );
    }

    #[test]
    fn refusals_are_invalid_argument_naming_the_field() {
        let mut c = pod();
        meta(&mut c).name = "a/b".into();
        let e: CriError = pod_sandbox(&c, &NODE).unwrap_err().into();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().starts_with("metadata.name: "), "{e}");
    }
}
