//! A container's capability set from the CRI add/drop lists.

use k8s_cri::v1::Capability as CriCapabilities;
use oci_spec::runtime::{Capabilities, Capability};

use super::SpecError;
use super::security::{capability_set, in_bounding_set, within};

/// Parse one name: case-insensitive, with or without the `CAP_` prefix (kubelet sends
/// "NET_ADMIN", OCI tools "CAP_NET_ADMIN").
pub fn parse_capability(name: &str) -> Result<Capability, SpecError> {
    let unknown = || SpecError::UnknownCapability {
        name: name.to_string(),
    };
    // oci-spec strips any number of CAP_ prefixes; accept at most one, like every other runtime.
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare.is_empty() || bare.starts_with("CAP_") {
        return Err(unknown());
    }
    bare.parse::<Capability>().map_err(|_| unknown())
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// The capability set of a container.
///
/// Privileged containers get every capability the runtime may grant (its bounding set,
/// `bounding`) and the lists are ignored. Otherwise, starting from the default set, in
/// containerd's order: "ALL" in `add` gives every capability of the bounding set, "ALL" in
/// `drop` clears the set, then the individual adds, then the individual drops. So `drop: [ALL],
/// add: [NET_BIND_SERVICE]` is exactly NET_BIND_SERVICE and `add: [ALL], drop: [CHOWN]` is all
/// but CHOWN. An unknown name is an error (silently ignoring a drop would grant more than
/// asked), and so is an individual add outside the bounding set (the kernel would refuse it
/// with a bare EPERM at start).
///
/// `add_ambient_capabilities` is ignored, as containerd does (it clears ambient capabilities;
/// see kubernetes#56374).
pub fn container_capabilities(
    cri: Option<&CriCapabilities>,
    privileged: bool,
    bounding: u64,
) -> Result<Capabilities, SpecError> {
    if privileged {
        return Ok(capability_set(true, bounding));
    }
    let mut caps = capability_set(false, bounding);
    let Some(cri) = cri else {
        return Ok(caps);
    };
    if cri.add_capabilities.iter().any(|c| is_all(c)) {
        caps = within(bounding);
    }
    if cri.drop_capabilities.iter().any(|c| is_all(c)) {
        caps.clear();
    }
    for name in cri.add_capabilities.iter().filter(|c| !is_all(c)) {
        let cap = parse_capability(name)?;
        if !in_bounding_set(cap, bounding) {
            return Err(SpecError::CapabilityNotGrantable {
                name: name.to_string(),
            });
        }
        caps.insert(cap);
    }
    for name in cri.drop_capabilities.iter().filter(|c| !is_all(c)) {
        caps.remove(&parse_capability(name)?);
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::security::ALL_CAPABILITIES;

    /// A runtime that holds every capability.
    const ALL: u64 = u64::MAX;
    /// This test VM's bounding set: everything up to 40 but CAP_SYS_RESOURCE (24).
    const NO_SYS_RESOURCE: u64 = ((1u64 << 41) - 1) & !(1 << 24);

    fn cri(add: &[&str], drop: &[&str]) -> CriCapabilities {
        CriCapabilities {
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            add_ambient_capabilities: vec![],
        }
    }

    #[test]
    fn names() {
        for n in ["NET_ADMIN", "net_admin", "CAP_NET_ADMIN", "cap_Net_Admin"] {
            assert_eq!(parse_capability(n).unwrap(), Capability::NetAdmin, "{n}");
        }
        for bad in ["", "CAP_", "NOPE", "CAP_CAP_NET_ADMIN", "ALL"] {
            assert!(
                matches!(
                    parse_capability(bad),
                    Err(SpecError::UnknownCapability { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn defaults_without_lists() {
        assert_eq!(container_capabilities(None, false, ALL).unwrap().len(), 14);
        let c = container_capabilities(Some(&cri(&[], &[])), false, ALL).unwrap();
        assert_eq!(c, capability_set(false, ALL));
    }

    #[test]
    fn drop_all_add_one() {
        let c = container_capabilities(Some(&cri(&["NET_BIND_SERVICE"], &["ALL"])), false, ALL)
            .unwrap();
        assert_eq!(c, [Capability::NetBindService].into_iter().collect());
    }

    #[test]
    fn add_all_drop_one() {
        let c = container_capabilities(Some(&cri(&["all"], &["CHOWN"])), false, ALL).unwrap();
        assert_eq!(c.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!c.contains(&Capability::Chown));
        assert!(c.contains(&Capability::SysAdmin));
    }

    #[test]
    fn add_and_drop_individual() {
        let c = container_capabilities(Some(&cri(&["SYS_TIME"], &["NET_RAW", "KILL"])), false, ALL)
            .unwrap();
        assert_eq!(c.len(), 13);
        assert!(c.contains(&Capability::SysTime));
        assert!(!c.contains(&Capability::NetRaw));
        // Drop wins over add of the same capability.
        let c =
            container_capabilities(Some(&cri(&["SYS_TIME"], &["SYS_TIME"])), false, ALL).unwrap();
        assert!(!c.contains(&Capability::SysTime));
    }

    #[test]
    fn unknown_is_error_and_privileged_ignores_lists() {
        assert!(container_capabilities(Some(&cri(&[], &["BOGUS"])), false, ALL).is_err());
        let c = container_capabilities(Some(&cri(&[], &["ALL"])), true, ALL).unwrap();
        assert_eq!(c.len(), ALL_CAPABILITIES.len());
    }

    #[test]
    fn all_means_the_runtimes_bounding_set() {
        let c = container_capabilities(None, true, NO_SYS_RESOURCE).unwrap();
        assert_eq!(c.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!c.contains(&Capability::SysResource));
        let c = container_capabilities(Some(&cri(&["ALL"], &[])), false, NO_SYS_RESOURCE).unwrap();
        assert_eq!(c.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!c.contains(&Capability::SysResource));
        let e = container_capabilities(Some(&cri(&["SYS_RESOURCE"], &[])), false, NO_SYS_RESOURCE)
            .unwrap_err();
        assert!(matches!(e, SpecError::CapabilityNotGrantable { .. }), "{e}");
        assert_eq!(e.grpc_code(), tonic::Code::FailedPrecondition);
        // The default set is kept within the bounding set too.
        let none = container_capabilities(None, false, 0).unwrap();
        assert!(none.is_empty());
    }
}
