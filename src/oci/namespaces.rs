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
