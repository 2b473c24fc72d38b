//! Per-pod sysctls: only those the kernel scopes to a namespace the pod owns may be set.
//!
//! A sysctl that is not namespaced would change the whole node; one whose namespace the pod shares
//! with the node (host network, host IPC) would change the node's value too. Both are refused.
//! The namespaced set is the one runc and kubelet agree on.

use std::collections::HashMap;

use super::{PodNamespaces, SpecError};

/// Kernel IPC sysctls scoped to the IPC namespace (besides the `fs.mqueue.*` prefix).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
];

/// Validate every key/value; errors name the first offending key (in sorted order, so the
/// message does not depend on hash-map iteration).
pub fn validate(sysctls: &HashMap<String, String>, ns: &PodNamespaces) -> Result<(), SpecError> {
    let mut keys: Vec<&String> = sysctls.keys().collect();
    keys.sort();
    for key in keys {
        validate_one(key, &sysctls[key], ns)?;
    }
    Ok(())
}

fn validate_one(key: &str, value: &str, ns: &PodNamespaces) -> Result<(), SpecError> {
    let not_allowed = |reason| {
        Err(SpecError::SysctlNotAllowed {
            key: key.to_string(),
            reason,
        })
    };
    // libcontainer turns the dots into a path under /proc/sys: keep it a plain relative path.
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return not_allowed("empty name component");
    }
    if key.contains(['/', '\0']) || key.chars().any(char::is_whitespace) {
        return not_allowed("name must be dot-separated without '/', NUL or whitespace");
    }
    if value.contains(['\0', '\n']) {
        return not_allowed("value must not contain NUL or newline");
    }

    let needs = |own: bool, namespace: &'static str| {
        if own {
            Ok(())
        } else {
            Err(SpecError::SysctlNeedsNamespace {
                key: key.to_string(),
                namespace,
            })
        }
    };
    if IPC_SYSCTLS.contains(&key) || key.starts_with("fs.mqueue.") {
        return needs(ns.ipc, "ipc");
    }
    if key.starts_with("net.") {
        return needs(ns.network, "network");
    }
    match key {
        // The UTS namespace owns it, but the spec's `hostname` field is the one way to set it.
        "kernel.hostname" => not_allowed("set the pod hostname instead"),
        "kernel.domainname" => needs(ns.uts, "uts"),
        _ => Err(SpecError::SysctlNotNamespaced {
            key: key.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: PodNamespaces = PodNamespaces {
        network: true,
        uts: true,
        ipc: true,
        pid: true,
    };
    const HOST: PodNamespaces = PodNamespaces {
        network: false,
        uts: false,
        ipc: false,
        pid: false,
    };

    fn one(k: &str, v: &str) -> HashMap<String, String> {
        HashMap::from([(k.to_string(), v.to_string())])
    }

    #[test]
    fn namespaced_ok_with_own_namespaces() {
        for k in [
            "net.ipv4.ip_unprivileged_port_start",
            "net.ipv4.ping_group_range",
            "net.core.somaxconn",
            "kernel.shm_rmid_forced",
            "kernel.sem",
            "kernel.msgmax",
            "fs.mqueue.msg_max",
            "kernel.domainname",
        ] {
            validate(&one(k, "1"), &OWN).unwrap_or_else(|e| panic!("{k}: {e}"));
        }
    }

    #[test]
    fn shared_namespace_is_refused() {
        let e = validate(&one("net.core.somaxconn", "1024"), &HOST).unwrap_err();
        assert!(
            matches!(e, SpecError::SysctlNeedsNamespace { ref key, namespace: "network" } if key == "net.core.somaxconn")
        );
        let e = validate(&one("kernel.shmmax", "1"), &HOST).unwrap_err();
        assert!(matches!(
            e,
            SpecError::SysctlNeedsNamespace {
                namespace: "ipc",
                ..
            }
        ));
        let e = validate(&one("fs.mqueue.queues_max", "1"), &HOST).unwrap_err();
        assert!(matches!(
            e,
            SpecError::SysctlNeedsNamespace {
                namespace: "ipc",
                ..
            }
        ));
    }

    #[test]
    fn not_namespaced_is_refused_with_key() {
        for k in [
            "kernel.panic",
            "vm.overcommit_memory",
            "fs.file-max",
            "kernel.pid_max",
        ] {
            let e = validate(&one(k, "1"), &OWN).unwrap_err();
            assert!(
                matches!(e, SpecError::SysctlNotNamespaced { ref key } if key == k),
                "{k}"
            );
            assert!(e.to_string().contains(k));
        }
    }

    #[test]
    fn malformed_names_and_values() {
        for k in [
            "",
            "net..ipv4",
            ".net.x",
            "net.ipv4.",
            "net/ipv4/ip_forward",
            "net.a b",
        ] {
            assert!(
                matches!(
                    validate(&one(k, "1"), &OWN),
                    Err(SpecError::SysctlNotAllowed { .. })
                ),
                "{k:?}"
            );
        }
        assert!(validate(&one("net.core.somaxconn", "1\n2"), &OWN).is_err());
        assert!(validate(&one("kernel.hostname", "x"), &OWN).is_err());
    }

    #[test]
    fn first_bad_key_in_sorted_order() {
        let m = HashMap::from([
            ("vm.b".to_string(), "1".to_string()),
            ("kernel.a".to_string(), "1".to_string()),
            ("net.core.somaxconn".to_string(), "1".to_string()),
        ]);
        let e = validate(&m, &OWN).unwrap_err();
        assert!(matches!(e, SpecError::SysctlNotNamespaced { ref key } if key == "kernel.a"));
    }
}
