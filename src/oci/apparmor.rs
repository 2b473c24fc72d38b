//! AppArmor: which profile a container asked for, and what goes into `process.apparmorProfile`.
//!
//! As in containerd, asking for any confinement on a node without AppArmor is an error (running
//! the workload unconfined would silently weaken what the pod spec promised); unconfined or
//! nothing is fine everywhere.

use k8s_cri::v1::SecurityProfile;
use k8s_cri::v1::security_profile::ProfileType;

use super::SpecError;

/// The AppArmor mode a container asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppArmorChoice {
    /// Nothing set (kubelet sends nothing unless the pod asks).
    Unset,
    Unconfined,
    RuntimeDefault,
    /// A profile already loaded on the node, by name.
    Localhost(String),
}

const LOCALHOST_PREFIX: &str = "localhost/";

/// Decide from the CRI fields: `profile` wins over the deprecated `apparmor_profile` string
/// ("", "unconfined", "runtime/default", "localhost/<name>").
pub fn choose(
    profile: Option<&SecurityProfile>,
    deprecated: &str,
) -> Result<AppArmorChoice, SpecError> {
    let invalid = |shown: &str, reason| SpecError::InvalidAppArmorProfile {
        profile: shown.to_string(),
        reason,
    };
    if let Some(p) = profile {
        let kind = p.profile_type();
        if kind != ProfileType::Localhost && !p.localhost_ref.is_empty() {
            return Err(invalid(
                &p.localhost_ref,
                "localhost_ref is only allowed with profile type Localhost",
            ));
        }
        return match kind {
            ProfileType::Unconfined => Ok(AppArmorChoice::Unconfined),
            ProfileType::RuntimeDefault => Ok(AppArmorChoice::RuntimeDefault),
            ProfileType::Localhost => {
                let name = p
                    .localhost_ref
                    .strip_prefix(LOCALHOST_PREFIX)
                    .unwrap_or(&p.localhost_ref);
                localhost(name, &p.localhost_ref)
            }
        };
    }
    match deprecated {
        "" => Ok(AppArmorChoice::Unset),
        "unconfined" => Ok(AppArmorChoice::Unconfined),
        "runtime/default" => Ok(AppArmorChoice::RuntimeDefault),
        other => match other.strip_prefix(LOCALHOST_PREFIX) {
            Some(name) => localhost(name, other),
            None => Err(invalid(
                other,
                "expected \"\", \"unconfined\", \"runtime/default\" or \"localhost/<name>\"",
            )),
        },
    }
}

fn localhost(name: &str, shown: &str) -> Result<AppArmorChoice, SpecError> {
    if name.is_empty() || name.contains(['\0', '\n']) {
        return Err(SpecError::InvalidAppArmorProfile {
            profile: shown.to_string(),
            reason: "Localhost profile needs a non-empty name without NUL or newline",
        });
    }
    Ok(AppArmorChoice::Localhost(name.to_string()))
}

/// The profile name for the spec.
///
/// Without AppArmor on the node: anything but Unset/Unconfined is
/// [`SpecError::AppArmorUnavailable`]. With AppArmor: Localhost names its profile (applied even
/// when privileged, as containerd does); RuntimeDefault gives no profile, because this runtime
/// does not ship and load a default AppArmor profile of its own (seccomp, capabilities and the
/// masked paths still confine the container).
pub fn resolve(
    choice: &AppArmorChoice,
    apparmor_available: bool,
) -> Result<Option<String>, SpecError> {
    match choice {
        AppArmorChoice::Unset | AppArmorChoice::Unconfined => Ok(None),
        _ if !apparmor_available => Err(SpecError::AppArmorUnavailable {
            profile: match choice {
                AppArmorChoice::Localhost(name) => format!("{LOCALHOST_PREFIX}{name}"),
                _ => "runtime/default".to_string(),
            },
        }),
        AppArmorChoice::RuntimeDefault => Ok(None),
        AppArmorChoice::Localhost(name) => Ok(Some(name.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(kind: ProfileType, r: &str) -> SecurityProfile {
        SecurityProfile {
            profile_type: kind as i32,
            localhost_ref: r.into(),
        }
    }

    #[test]
    fn choices() {
        assert_eq!(choose(None, "").unwrap(), AppArmorChoice::Unset);
        assert_eq!(
            choose(None, "unconfined").unwrap(),
            AppArmorChoice::Unconfined
        );
        assert_eq!(
            choose(None, "runtime/default").unwrap(),
            AppArmorChoice::RuntimeDefault
        );
        assert_eq!(
            choose(None, "localhost/k8s-nginx").unwrap(),
            AppArmorChoice::Localhost("k8s-nginx".into())
        );
        assert!(choose(None, "weird").is_err());
        assert!(choose(None, "localhost/").is_err());
        let p = sp(ProfileType::Localhost, "localhost/prof");
        assert_eq!(
            choose(Some(&p), "unconfined").unwrap(),
            AppArmorChoice::Localhost("prof".into()),
            "the field wins over the deprecated string"
        );
        let p = sp(ProfileType::RuntimeDefault, "x");
        assert!(choose(Some(&p), "").is_err());
        let p = sp(ProfileType::Unconfined, "");
        assert_eq!(choose(Some(&p), "").unwrap(), AppArmorChoice::Unconfined);
    }

    #[test]
    fn refusal_without_apparmor() {
        assert_eq!(resolve(&AppArmorChoice::Unset, false).unwrap(), None);
        assert_eq!(resolve(&AppArmorChoice::Unconfined, false).unwrap(), None);
        let err = resolve(&AppArmorChoice::RuntimeDefault, false).unwrap_err();
        assert!(
            err.to_string()
                .contains("AppArmor is not available on this node")
        );
        assert_eq!(err.grpc_code(), tonic::Code::FailedPrecondition);
        let err = resolve(&AppArmorChoice::Localhost("p".into()), false).unwrap_err();
        assert!(err.to_string().contains("localhost/p"), "{err}");
    }

    #[test]
    fn with_apparmor() {
        assert_eq!(
            resolve(&AppArmorChoice::RuntimeDefault, true).unwrap(),
            None
        );
        assert_eq!(
            resolve(&AppArmorChoice::Localhost("p".into()), true).unwrap(),
            Some("p".into())
        );
    }
}
