//! A container's capability set from the CRI add/drop lists.

use k8s_cri::v1::Capability as CriCapabilities;
use oci_spec::runtime::{Capabilities, Capability};

use super::SpecError;
use super::security::{ALL_CAPABILITIES, capability_set};

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
/// Privileged containers get every capability and the lists are ignored. Otherwise, starting from
/// the default set, in containerd's order: "ALL" in `add` gives every capability, "ALL" in `drop`
/// clears the set, then the individual adds, then the individual drops. So `drop: [ALL],
/// add: [NET_BIND_SERVICE]` is exactly NET_BIND_SERVICE and `add: [ALL], drop: [CHOWN]` is all
/// but CHOWN. An unknown name is an error (silently ignoring a drop would grant more than asked).
///
/// `add_ambient_capabilities` is ignored, as containerd does (it clears ambient capabilities;
/// see kubernetes#56374).
pub fn container_capabilities(
    cri: Option<&CriCapabilities>,
    privileged: bool,
) -> Result<Capabilities, SpecError> {
    if privileged {
        return Ok(capability_set(true));
    }
    let mut caps = capability_set(false);
    let Some(cri) = cri else {
        return Ok(caps);
    };
    if cri.add_capabilities.iter().any(|c| is_all(c)) {
        caps = ALL_CAPABILITIES.iter().copied().collect();
    }
    if cri.drop_capabilities.iter().any(|c| is_all(c)) {
        caps.clear();
    }
    for name in cri.add_capabilities.iter().filter(|c| !is_all(c)) {
        caps.insert(parse_capability(name)?);
    }
    for name in cri.drop_capabilities.iter().filter(|c| !is_all(c)) {
        caps.remove(&parse_capability(name)?);
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(container_capabilities(None, false).unwrap().len(), 14);
        let c = container_capabilities(Some(&cri(&[], &[])), false).unwrap();
        assert_eq!(c, capability_set(false));
    }

    #[test]
    fn drop_all_add_one() {
        let c = container_capabilities(Some(&cri(&["NET_BIND_SERVICE"], &["ALL"])), false).unwrap();
        assert_eq!(c, [Capability::NetBindService].into_iter().collect());
    }

    #[test]
    fn add_all_drop_one() {
        let c = container_capabilities(Some(&cri(&["all"], &["CHOWN"])), false).unwrap();
        assert_eq!(c.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!c.contains(&Capability::Chown));
        assert!(c.contains(&Capability::SysAdmin));
    }

    #[test]
    fn add_and_drop_individual() {
        let c =
            container_capabilities(Some(&cri(&["SYS_TIME"], &["NET_RAW", "KILL"])), false).unwrap();
        assert_eq!(c.len(), 13);
        assert!(c.contains(&Capability::SysTime));
        assert!(!c.contains(&Capability::NetRaw));
        // Drop wins over add of the same capability.
        let c = container_capabilities(Some(&cri(&["SYS_TIME"], &["SYS_TIME"])), false).unwrap();
        assert!(!c.contains(&Capability::SysTime));
    }

    #[test]
    fn unknown_is_error_and_privileged_ignores_lists() {
        assert!(container_capabilities(Some(&cri(&[], &["BOGUS"])), false).is_err());
        let c = container_capabilities(Some(&cri(&[], &["ALL"])), true).unwrap();
        assert_eq!(c.len(), ALL_CAPABILITIES.len());
    }
}
