//! An application container's command line, environment and working directory: the image config
//! merged with the CRI `ContainerConfig`, with the precedence kubelet and containerd use.

use k8s_cri::v1::KeyValue;
use oci_spec::image::Config as ImageConfig;

use super::SpecError;
use super::process::{DEFAULT_PATH_ENV, validate_env_entry};

/// The environment variable containerd sets to the pod's hostname (many images read it).
pub const HOSTNAME_ENV: &str = "HOSTNAME";

/// `command ++ args`, Docker/kubelet style:
///
/// - CRI `command` set: it replaces the image Entrypoint, and the image Cmd is dropped; the CRI
///   `args` (possibly empty) follow.
/// - CRI `command` empty: image Entrypoint, then CRI `args` if set, else the image Cmd.
///
/// An Entrypoint of exactly `[""]` means "no entrypoint" (what `ENTRYPOINT [""]` in a Dockerfile
/// stores to reset an inherited one). Nothing at all to run is an error.
pub fn container_args(
    command: &[String],
    args: &[String],
    image: Option<&ImageConfig>,
) -> Result<Vec<String>, SpecError> {
    let image_list = |v: Option<&Vec<String>>| v.cloned().unwrap_or_default();
    let (head, tail) = if !command.is_empty() {
        (command.to_vec(), args.to_vec())
    } else {
        let mut entrypoint = image_list(image.and_then(|c| c.entrypoint().as_ref()));
        if entrypoint.len() == 1 && entrypoint[0].is_empty() {
            entrypoint.clear();
        }
        let tail = if args.is_empty() {
            image_list(image.and_then(|c| c.cmd().as_ref()))
        } else {
            args.to_vec()
        };
        (entrypoint, tail)
    };
    let out: Vec<String> = head.into_iter().chain(tail).collect();
    if out.is_empty() {
        return Err(SpecError::NoContainerCommand);
    }
    Ok(out)
}

/// The process environment, in containerd's order: the default PATH, `HOSTNAME`, the image's
/// Env, then the CRI envs. A later entry for an existing key replaces its value in place, so the
/// CRI wins over the image and the image's PATH replaces the default.
pub fn container_env(
    image: Option<&ImageConfig>,
    envs: &[KeyValue],
    hostname: &str,
) -> Result<Vec<String>, SpecError> {
    let mut env = vec![DEFAULT_PATH_ENV.to_string()];
    set_env(&mut env, format!("{HOSTNAME_ENV}={hostname}"));
    for entry in image.and_then(|c| c.env().as_ref()).into_iter().flatten() {
        validate_env_entry(entry)?;
        set_env(&mut env, entry.clone());
    }
    for kv in envs {
        validate_env_key(&kv.key)?;
        if kv.value.contains('\0') {
            return Err(SpecError::InvalidEnvKey {
                key: kv.key.clone(),
                reason: "value contains NUL",
            });
        }
        set_env(&mut env, format!("{}={}", kv.key, kv.value));
    }
    Ok(env)
}

fn validate_env_key(key: &str) -> Result<(), SpecError> {
    let reason = if key.is_empty() {
        "empty name"
    } else if key.contains('=') {
        "name contains '='"
    } else if key.contains('\0') {
        "name contains NUL"
    } else {
        return Ok(());
    };
    Err(SpecError::InvalidEnvKey {
        key: key.to_string(),
        reason,
    })
}

/// Replace the entry with the same key, or append. `entry` is a validated `KEY=VALUE`.
fn set_env(env: &mut Vec<String>, entry: String) {
    let key_len = entry.find('=').map_or(entry.len(), |i| i + 1);
    let prefix = &entry[..key_len];
    match env.iter_mut().find(|e| e.starts_with(prefix)) {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
}

/// CRI `working_dir`, else the image's WorkingDir, else "/". Must be absolute: it is resolved
/// inside the container's root.
pub fn container_cwd(working_dir: &str, image: Option<&ImageConfig>) -> Result<String, SpecError> {
    let dir = match working_dir {
        "" => image.and_then(|c| c.working_dir().as_deref()).unwrap_or(""),
        dir => dir,
    };
    match dir {
        "" => Ok("/".to_string()),
        d if d.starts_with('/') => Ok(d.to_string()),
        d => Err(SpecError::RelativeWorkingDir { dir: d.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::ConfigBuilder;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        ConfigBuilder::default()
            .entrypoint(v(entrypoint))
            .cmd(v(cmd))
            .build()
            .unwrap()
    }

    #[test]
    fn args_merge_table() {
        let img = image(&["/entry", "-x"], &["cmd", "arg"]);
        // (command, args, expected)
        let table: &[(&[&str], &[&str], &[&str])] = &[
            (&[], &[], &["/entry", "-x", "cmd", "arg"]),
            (&[], &["a1"], &["/entry", "-x", "a1"]),
            (&["/bin/sh"], &[], &["/bin/sh"]),
            (&["/bin/sh"], &["-c", "x"], &["/bin/sh", "-c", "x"]),
        ];
        for (command, args, want) in table {
            let got = container_args(&v(command), &v(args), Some(&img)).unwrap();
            assert_eq!(got, v(want), "command={command:?} args={args:?}");
        }
    }

    #[test]
    fn args_without_entrypoint() {
        let img = image(&[], &["sh"]);
        assert_eq!(container_args(&[], &[], Some(&img)).unwrap(), ["sh"]);
        assert_eq!(
            container_args(&[], &v(&["top"]), Some(&img)).unwrap(),
            ["top"]
        );
        // ENTRYPOINT [""] resets the entrypoint.
        let img = image(&[""], &["sh"]);
        assert_eq!(container_args(&[], &[], Some(&img)).unwrap(), ["sh"]);
    }

    #[test]
    fn args_empty_is_error() {
        assert!(matches!(
            container_args(&[], &[], None),
            Err(SpecError::NoContainerCommand)
        ));
        let img = image(&[""], &[]);
        assert!(matches!(
            container_args(&[], &[], Some(&img)),
            Err(SpecError::NoContainerCommand)
        ));
        // Args alone (no image entrypoint) are the command.
        assert_eq!(container_args(&[], &v(&["ls"]), None).unwrap(), ["ls"]);
    }

    fn kv(k: &str, val: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: val.into(),
        }
    }

    #[test]
    fn env_override_order() {
        let img = ConfigBuilder::default()
            .env(v(&["PATH=/img/bin", "A=image", "B=image"]))
            .build()
            .unwrap();
        let env = container_env(Some(&img), &[kv("B", "cri"), kv("C", "x=y")], "pod-1").unwrap();
        assert_eq!(
            env,
            [
                "PATH=/img/bin",
                "HOSTNAME=pod-1",
                "A=image",
                "B=cri",
                "C=x=y"
            ]
        );
        // The CRI may override HOSTNAME and PATH too.
        let env = container_env(None, &[kv("HOSTNAME", "h"), kv("PATH", "/p")], "pod").unwrap();
        assert_eq!(env, ["PATH=/p", "HOSTNAME=h"]);
        // A key that is a prefix of another is a different key.
        let env = container_env(None, &[kv("PATHX", "1")], "p").unwrap();
        assert_eq!(env.len(), 3);
        assert!(env[0].starts_with("PATH=/usr"));
    }

    #[test]
    fn env_validation() {
        assert!(matches!(
            container_env(None, &[kv("", "x")], "p"),
            Err(SpecError::InvalidEnvKey { .. })
        ));
        assert!(container_env(None, &[kv("A=B", "x")], "p").is_err());
        assert!(container_env(None, &[kv("A", "x\0")], "p").is_err());
        let img = ConfigBuilder::default()
            .env(v(&["BROKEN"]))
            .build()
            .unwrap();
        assert!(matches!(
            container_env(Some(&img), &[], "p"),
            Err(SpecError::InvalidEnv { .. })
        ));
        // Empty values are fine.
        assert_eq!(container_env(None, &[kv("E", "")], "p").unwrap()[2], "E=");
    }

    #[test]
    fn cwd_precedence() {
        let img = ConfigBuilder::default()
            .working_dir("/img".to_string())
            .build()
            .unwrap();
        assert_eq!(container_cwd("/cri", Some(&img)).unwrap(), "/cri");
        assert_eq!(container_cwd("", Some(&img)).unwrap(), "/img");
        assert_eq!(container_cwd("", None).unwrap(), "/");
        assert!(matches!(
            container_cwd("rel", None),
            Err(SpecError::RelativeWorkingDir { .. })
        ));
    }
}
