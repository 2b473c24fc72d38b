//! Which Linux namespaces a pod owns, from the CRI `NamespaceOption`.

use k8s_cri::v1::{NamespaceMode, NamespaceOption};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use super::SpecError;

/// The namespaces a pod sandbox creates for itself (`true`) instead of sharing the node's.
///
/// UTS follows the network namespace: kubelet has no separate UTS option, and a host-network pod
/// must see the node's hostname (that is what `hostNetwork: true` promises).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodNamespaces {
    pub network: bool,
    pub uts: bool,
    pub ipc: bool,
    pub pid: bool,
}

impl PodNamespaces {
    /// The OCI namespace list for the sandbox container: a mount namespace always, plus every
    /// namespace the pod owns. There is deliberately no cgroup namespace (cgroup v1 nodes, and
    /// libcontainer emulates the hierarchy instead) and no user namespace.
    ///
    /// `netns_path`, when given, makes the sandbox join an already pinned network namespace
    /// instead of creating one.
    pub fn linux_namespaces(&self, netns_path: Option<&std::path::Path>) -> Vec<LinuxNamespace> {
        let mut out = vec![namespace(LinuxNamespaceType::Mount)];
        if self.pid {
            out.push(namespace(LinuxNamespaceType::Pid));
        }
        if self.ipc {
            out.push(namespace(LinuxNamespaceType::Ipc));
        }
        if self.uts {
            out.push(namespace(LinuxNamespaceType::Uts));
        }
        if self.network {
            let mut ns = namespace(LinuxNamespaceType::Network);
            ns.set_path(netns_path.map(|p| p.to_path_buf()));
            out.push(ns);
        }
        out
    }
}

fn namespace(typ: LinuxNamespaceType) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(None);
    ns
}

/// Decide the pod's namespaces. A missing option means kubelet's defaults: everything POD.
///
/// Only NODE shares; POD, CONTAINER and TARGET all give the sandbox its own namespace (for the
/// sandbox itself CONTAINER/TARGET only matter to the app containers that join it later).
pub fn namespaces_for(opts: Option<&NamespaceOption>) -> PodNamespaces {
    let own = |mode: NamespaceMode| mode != NamespaceMode::Node;
    match opts {
        None => PodNamespaces {
            network: true,
            uts: true,
            ipc: true,
            pid: true,
        },
        Some(o) => PodNamespaces {
            network: own(o.network()),
            uts: own(o.network()),
            ipc: own(o.ipc()),
            pid: own(o.pid()),
        },
    }
}

/// The namespaces of an application container in a pod whose sandbox (pause) process is
/// `sandbox_pid`: a new mount namespace; the sandbox's network, UTS and IPC namespaces joined
/// through `/proc/<pid>/ns/*` unless the pod shares the node's (then the entry is absent, i.e.
/// the host's); and the PID namespace per mode: POD joins the sandbox's, CONTAINER gets a new
/// one, NODE the host's, TARGET joins the one of the container whose pid is `target_pid`.
/// The cgroup namespace is decided separately ([`container_cgroup_namespace`]).
pub fn container_namespaces(
    opts: Option<&NamespaceOption>,
    sandbox_pid: i32,
    target_pid: Option<i32>,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    check_user_namespace(opts)?;
    if sandbox_pid <= 0 {
        return Err(SpecError::InvalidId {
            field: "sandbox_pid",
            value: sandbox_pid.into(),
        });
    }
    let join = |typ, pid: i32, name: &str| {
        let mut ns = namespace(typ);
        ns.set_path(Some(format!("/proc/{pid}/ns/{name}").into()));
        ns
    };
    let pod = namespaces_for(opts);
    let mut out = vec![namespace(LinuxNamespaceType::Mount)];
    let pid_mode = opts.map_or(NamespaceMode::Pod, |o| o.pid());
    match pid_mode {
        NamespaceMode::Pod => out.push(join(LinuxNamespaceType::Pid, sandbox_pid, "pid")),
        NamespaceMode::Container => out.push(namespace(LinuxNamespaceType::Pid)),
        NamespaceMode::Node => {}
        NamespaceMode::Target => {
            let target = opts.map(|o| o.target_id.clone()).unwrap_or_default();
            match target_pid {
                Some(pid) if pid > 0 => out.push(join(LinuxNamespaceType::Pid, pid, "pid")),
                _ => return Err(SpecError::MissingTargetPid { target }),
            }
        }
    }
    if pod.ipc {
        out.push(join(LinuxNamespaceType::Ipc, sandbox_pid, "ipc"));
    }
    if pod.uts {
        out.push(join(LinuxNamespaceType::Uts, sandbox_pid, "uts"));
    }
    if pod.network {
        out.push(join(LinuxNamespaceType::Network, sandbox_pid, "net"));
    }
    Ok(out)
}

/// The container's cgroup namespace. On a cgroup v2 host every unprivileged container gets a
/// private one, so its /proc/self/cgroup reads `0::/` and the cgroup2 mount at /sys/fs/cgroup
/// shows its own cgroup as the root (other pods' cgroups out of sight), as runc/containerd do and
/// kubelet's cgroup v2 support assumes. Privileged containers keep the node's (containerd's
/// rule: they are trusted with the node's view, e.g. node agents reading every pod's cgroup).
/// None on v1: the controllers are bind-mounted from the node and libcontainer emulates the
/// container's view there.
pub fn container_cgroup_namespace(cgroup_v2: bool, privileged: bool) -> Option<LinuxNamespace> {
    (cgroup_v2 && !privileged).then(|| namespace(LinuxNamespaceType::Cgroup))
}

/// Reject a pod user namespace: kubelet asks for one only for `hostUsers: false`, which needs
/// id-mapped mounts and a pinned userns that this runtime does not implement. A missing
/// `userns_options` or mode NODE means "no user namespace".
pub fn check_user_namespace(opts: Option<&NamespaceOption>) -> Result<(), SpecError> {
    match opts.and_then(|o| o.userns_options.as_ref()) {
        None => Ok(()),
        Some(u) if u.mode() == NamespaceMode::Node => Ok(()),
        Some(u) => Err(SpecError::UnsupportedUserNamespace {
            mode: u.mode().as_str_name().to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::UserNamespace;

    fn opts(network: NamespaceMode, pid: NamespaceMode, ipc: NamespaceMode) -> NamespaceOption {
        NamespaceOption {
            network: network as i32,
            pid: pid as i32,
            ipc: ipc as i32,
            ..Default::default()
        }
    }

    fn types(ns: &[LinuxNamespace]) -> Vec<LinuxNamespaceType> {
        ns.iter().map(|n| n.typ()).collect()
    }

    #[test]
    fn default_is_all_own() {
        let ns = namespaces_for(None);
        assert!(ns.network && ns.uts && ns.ipc && ns.pid);
        assert_eq!(
            types(&ns.linux_namespaces(None)),
            vec![
                LinuxNamespaceType::Mount,
                LinuxNamespaceType::Pid,
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Uts,
                LinuxNamespaceType::Network
            ]
        );
    }

    #[test]
    fn host_network_drops_net_and_uts() {
        let o = opts(
            NamespaceMode::Node,
            NamespaceMode::Container,
            NamespaceMode::Pod,
        );
        let ns = namespaces_for(Some(&o));
        assert_eq!(
            ns,
            PodNamespaces {
                network: false,
                uts: false,
                ipc: true,
                pid: true
            }
        );
        assert_eq!(
            types(&ns.linux_namespaces(None)),
            vec![
                LinuxNamespaceType::Mount,
                LinuxNamespaceType::Pid,
                LinuxNamespaceType::Ipc
            ]
        );
    }

    #[test]
    fn host_pid_and_ipc() {
        let o = opts(NamespaceMode::Pod, NamespaceMode::Node, NamespaceMode::Node);
        let ns = namespaces_for(Some(&o));
        assert!(!ns.pid && !ns.ipc && ns.network && ns.uts);
    }

    #[test]
    fn netns_path_is_joined() {
        let ns = namespaces_for(None);
        let list = ns.linux_namespaces(Some(std::path::Path::new("/run/crius/netns/x")));
        let net = list
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .unwrap();
        assert_eq!(
            net.path().as_deref(),
            Some(std::path::Path::new("/run/crius/netns/x"))
        );
    }

    fn paths(ns: &[LinuxNamespace]) -> Vec<(LinuxNamespaceType, Option<String>)> {
        ns.iter()
            .map(|n| {
                (
                    n.typ(),
                    n.path().as_ref().map(|p| p.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    #[test]
    fn container_joins_sandbox() {
        use LinuxNamespaceType::*;
        let p = |s: &str| Some(s.to_string());
        let ns = container_namespaces(None, 42, None).unwrap();
        assert_eq!(
            paths(&ns),
            [
                (Mount, None),
                (Pid, p("/proc/42/ns/pid")),
                (Ipc, p("/proc/42/ns/ipc")),
                (Uts, p("/proc/42/ns/uts")),
                (Network, p("/proc/42/ns/net")),
            ]
        );
        let o = opts(
            NamespaceMode::Node,
            NamespaceMode::Container,
            NamespaceMode::Node,
        );
        let ns = container_namespaces(Some(&o), 42, None).unwrap();
        assert_eq!(paths(&ns), [(Mount, None), (Pid, None)]);
        let o = opts(NamespaceMode::Pod, NamespaceMode::Node, NamespaceMode::Pod);
        let ns = container_namespaces(Some(&o), 42, None).unwrap();
        assert!(!types(&ns).contains(&Pid));
        assert!(types(&ns).contains(&Network));
    }

    #[test]
    fn container_target_pid() {
        let mut o = opts(
            NamespaceMode::Pod,
            NamespaceMode::Target,
            NamespaceMode::Pod,
        );
        o.target_id = "abc".into();
        let ns = container_namespaces(Some(&o), 42, Some(77)).unwrap();
        let pid = ns
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Pid)
            .unwrap();
        assert_eq!(
            pid.path().as_deref(),
            Some(std::path::Path::new("/proc/77/ns/pid"))
        );
        let err = container_namespaces(Some(&o), 42, None).unwrap_err();
        assert!(matches!(err, SpecError::MissingTargetPid { ref target } if target == "abc"));
        assert!(container_namespaces(None, 0, None).is_err());
        o.userns_options = Some(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            ..Default::default()
        });
        assert!(container_namespaces(Some(&o), 42, Some(77)).is_err());
    }

    #[test]
    fn cgroup_namespace_on_v2_unless_privileged() {
        let ns = container_cgroup_namespace(true, false).expect("v2 unprivileged");
        assert_eq!(ns.typ(), LinuxNamespaceType::Cgroup);
        assert!(ns.path().is_none(), "a new namespace, not a joined one");
        assert!(container_cgroup_namespace(true, true).is_none());
        assert!(container_cgroup_namespace(false, false).is_none());
        assert!(container_cgroup_namespace(false, true).is_none());
    }

    #[test]
    fn user_namespace_modes() {
        assert!(check_user_namespace(None).is_ok());
        let mut o = NamespaceOption::default();
        assert!(check_user_namespace(Some(&o)).is_ok());
        o.userns_options = Some(UserNamespace {
            mode: NamespaceMode::Node as i32,
            ..Default::default()
        });
        assert!(check_user_namespace(Some(&o)).is_ok());
        o.userns_options = Some(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            ..Default::default()
        });
        let err = check_user_namespace(Some(&o)).unwrap_err();
        assert!(matches!(err, SpecError::UnsupportedUserNamespace { .. }));
    }
}
