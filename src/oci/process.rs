//! The container process: command, environment, working directory and user, from the image
//! config plus CRI overrides.

use oci_spec::image::Config as ImageConfig;
use oci_spec::runtime::User;

use super::SpecError;

/// Added when the image sets no PATH (the value Docker and containerd use).
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Entrypoint followed by Cmd. Empty is an error: a container needs something to run.
pub fn image_args(image: Option<&ImageConfig>) -> Result<Vec<String>, SpecError> {
    let entrypoint = image.and_then(|c| c.entrypoint().as_ref());
    let cmd = image.and_then(|c| c.cmd().as_ref());
    let args: Vec<String> = entrypoint
        .into_iter()
        .flatten()
        .chain(cmd.into_iter().flatten())
        .cloned()
        .collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// Check one `KEY=VALUE` entry: a non-empty key before the first '=', no NUL anywhere (execve
/// would truncate it).
pub fn validate_env_entry(entry: &str) -> Result<(), SpecError> {
    match entry.split_once('=') {
        Some((key, _)) if !key.is_empty() && !entry.contains('\0') => Ok(()),
        _ => Err(SpecError::InvalidEnv {
            entry: entry.to_string(),
        }),
    }
}

/// The image's environment, validated, with [`DEFAULT_PATH_ENV`] appended when PATH is unset.
pub fn image_env(image: Option<&ImageConfig>) -> Result<Vec<String>, SpecError> {
    let mut env = Vec::new();
    for entry in image.and_then(|c| c.env().as_ref()).into_iter().flatten() {
        validate_env_entry(entry)?;
        env.push(entry.clone());
    }
    ensure_path(&mut env);
    Ok(env)
}

/// Append the default PATH unless some entry already sets it.
pub fn ensure_path(env: &mut Vec<String>) {
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH_ENV.to_string());
    }
}

/// The image's WorkingDir, or "/" when unset; it must be absolute (it is resolved inside the
/// container's root, never against the runtime's cwd).
pub fn image_cwd(image: Option<&ImageConfig>) -> Result<String, SpecError> {
    match image.and_then(|c| c.working_dir().as_deref()) {
        None | Some("") => Ok("/".to_string()),
        Some(dir) if dir.starts_with('/') => Ok(dir.to_string()),
        Some(dir) => Err(SpecError::RelativeWorkingDir {
            dir: dir.to_string(),
        }),
    }
}

/// CRI user overrides (already unwrapped from `Int64Value`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserOverride {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
}

/// Resolve uid/gid from the CRI overrides, else from the image's numeric `uid[:gid]` User.
///
/// Names ("nobody", "app:staff") would need the image's /etc/passwd and /etc/group, which this
/// pure builder does not read, so a named image user is an error unless run_as_user overrides it.
/// That is fine for the sandbox: the pause image uses "65535:65535", and kubelet passes
/// run_as_user whenever the pod asks for a specific user. (The app-container builder will
/// resolve names against the rootfs before calling this.)
pub fn resolve_user(
    over: UserOverride,
    image_user: Option<&str>,
    supplemental_groups: &[i64],
) -> Result<User, SpecError> {
    let (uid, gid) = match (over.run_as_user, over.run_as_group) {
        (None, Some(_)) => return Err(SpecError::GroupWithoutUser),
        (Some(u), g) => (
            to_id("run_as_user", u)?,
            g.map(|g| to_id("run_as_group", g))
                .transpose()?
                .unwrap_or(0),
        ),
        (None, None) => parse_numeric_user(image_user.unwrap_or(""))?,
    };
    let additional = supplemental_groups
        .iter()
        .map(|&g| to_id("supplemental_groups", g))
        .collect::<Result<Vec<u32>, _>>()?;

    let mut user = User::default();
    user.set_uid(uid);
    user.set_gid(gid);
    user.set_umask(None);
    user.set_additional_gids(if additional.is_empty() {
        None
    } else {
        Some(additional)
    });
    user.set_username(None);
    Ok(user)
}

fn to_id(field: &'static str, value: i64) -> Result<u32, SpecError> {
    u32::try_from(value).map_err(|_| SpecError::InvalidId { field, value })
}

/// "" → root; "uid" → (uid, 0); "uid:gid" → (uid, gid); anything else is a name.
fn parse_numeric_user(user: &str) -> Result<(u32, u32), SpecError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let named = || SpecError::NonNumericImageUser {
        user: user.to_string(),
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid = u.parse::<u32>().map_err(|_| named())?;
    let gid = match g {
        None => 0,
        Some(g) => g.parse::<u32>().map_err(|_| named())?,
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::ConfigBuilder;

    fn image(entrypoint: &[&str], cmd: &[&str], env: &[&str], wd: Option<&str>) -> ImageConfig {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut b = ConfigBuilder::default()
            .entrypoint(v(entrypoint))
            .cmd(v(cmd))
            .env(v(env));
        if let Some(wd) = wd {
            b = b.working_dir(wd.to_string());
        }
        b.build().unwrap()
    }

    #[test]
    fn args_concat() {
        let c = image(&["/pause"], &["-v"], &[], None);
        assert_eq!(image_args(Some(&c)).unwrap(), ["/pause", "-v"]);
        let c = image(&[], &["sh"], &[], None);
        assert_eq!(image_args(Some(&c)).unwrap(), ["sh"]);
        let c = image(&[], &[], &[], None);
        assert!(matches!(image_args(Some(&c)), Err(SpecError::NoCommand)));
        assert!(matches!(image_args(None), Err(SpecError::NoCommand)));
    }

    #[test]
    fn env_validation_and_path() {
        let c = image(&["x"], &[], &["A=1", "B=", "C=x=y"], None);
        let env = image_env(Some(&c)).unwrap();
        assert_eq!(env, ["A=1", "B=", "C=x=y", DEFAULT_PATH_ENV]);
        let c = image(&["x"], &[], &["PATH=/bin"], None);
        assert_eq!(image_env(Some(&c)).unwrap(), ["PATH=/bin"]);
        for bad in ["NOEQUALS", "=value", "A=b\0c"] {
            let c = image(&["x"], &[], &[bad], None);
            assert!(
                matches!(image_env(Some(&c)), Err(SpecError::InvalidEnv { ref entry }) if entry == bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cwd() {
        assert_eq!(image_cwd(None).unwrap(), "/");
        let c = image(&["x"], &[], &[], Some("/srv"));
        assert_eq!(image_cwd(Some(&c)).unwrap(), "/srv");
        let c = image(&["x"], &[], &[], Some("srv"));
        assert!(matches!(
            image_cwd(Some(&c)),
            Err(SpecError::RelativeWorkingDir { .. })
        ));
    }

    #[test]
    fn users() {
        let none = UserOverride::default();
        let u = resolve_user(none, Some("65535:65535"), &[]).unwrap();
        assert_eq!((u.uid(), u.gid()), (65535, 65535));
        assert_eq!(u.additional_gids(), &None);
        let u = resolve_user(none, Some("1000"), &[]).unwrap();
        assert_eq!((u.uid(), u.gid()), (1000, 0));
        let u = resolve_user(none, None, &[]).unwrap();
        assert_eq!((u.uid(), u.gid()), (0, 0));
        assert!(matches!(
            resolve_user(none, Some("nobody"), &[]),
            Err(SpecError::NonNumericImageUser { .. })
        ));
        assert!(resolve_user(none, Some("1000:staff"), &[]).is_err());

        let over = UserOverride {
            run_as_user: Some(1001),
            run_as_group: Some(2002),
        };
        let u = resolve_user(over, Some("nobody"), &[3, 4]).unwrap();
        assert_eq!((u.uid(), u.gid()), (1001, 2002));
        assert_eq!(u.additional_gids(), &Some(vec![3, 4]));

        let only_user = UserOverride {
            run_as_user: Some(7),
            run_as_group: None,
        };
        let u = resolve_user(only_user, Some("65535:65535"), &[]).unwrap();
        assert_eq!((u.uid(), u.gid()), (7, 0));

        let only_group = UserOverride {
            run_as_user: None,
            run_as_group: Some(7),
        };
        assert!(matches!(
            resolve_user(only_group, None, &[]),
            Err(SpecError::GroupWithoutUser)
        ));
        let neg = UserOverride {
            run_as_user: Some(-1),
            run_as_group: None,
        };
        assert!(matches!(
            resolve_user(neg, None, &[]),
            Err(SpecError::InvalidId {
                field: "run_as_user",
                value: -1
            })
        ));
        assert!(resolve_user(none, None, &[1 << 33]).is_err());
    }
}
