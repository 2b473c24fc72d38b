//! The user an application container runs as, resolved against the image's /etc/passwd and
//! /etc/group the way containerd does it (the caller reads those files from the rootfs; this
//! module only parses text).
//!
//! Facts mirrored from containerd:
//! - The user string is `run_as_username`, else `run_as_user`, else the image's `User`; a
//!   `run_as_group` is appended as `:gid`. `run_as_group` without a user is an error.
//! - A numeric uid not in passwd runs with gid 0; a name not in passwd is an error.
//! - The supplementary groups are the primary gid, every group that lists the user by name as a
//!   member (unless the policy is Strict), and the CRI `supplemental_groups`: sorted, without
//!   duplicates. Including the primary gid and the image groups is containerd's fix for
//!   CVE-2023-25173.

use k8s_cri::v1::SupplementalGroupsPolicy;
use oci_spec::runtime::User;

use super::SpecError;

/// One /etc/passwd line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// One /etc/group line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Parse passwd text; comment, blank and malformed lines (non-numeric ids) are skipped, as libc
/// does.
pub fn parse_passwd(passwd: &str) -> Vec<PasswdEntry> {
    passwd
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?.trim();
            let _password = f.next()?;
            let uid = f.next()?.trim().parse().ok()?;
            let gid = f.next()?.trim().parse().ok()?;
            (!name.is_empty()).then(|| PasswdEntry {
                name: name.to_string(),
                uid,
                gid,
            })
        })
        .collect()
}

/// Parse group text (`name:password:gid:member,member`); malformed lines are skipped.
pub fn parse_group(group: &str) -> Vec<GroupEntry> {
    group
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?.trim();
            let _password = f.next()?;
            let gid = f.next()?.trim().parse().ok()?;
            let members = f
                .next()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect();
            (!name.is_empty()).then(|| GroupEntry {
                name: name.to_string(),
                gid,
                members,
            })
        })
        .collect()
}

/// The first passwd entry whose uid (when `name_or_uid` is numeric) or name matches.
pub fn lookup_passwd(passwd: &str, name_or_uid: &str) -> Option<PasswdEntry> {
    let users = parse_passwd(passwd);
    match name_or_uid.parse::<u32>() {
        Ok(uid) => users.into_iter().find(|u| u.uid == uid),
        Err(_) => users.into_iter().find(|u| u.name == name_or_uid),
    }
}

/// The first group entry whose gid (when numeric) or name matches.
pub fn lookup_group(group: &str, name_or_gid: &str) -> Option<GroupEntry> {
    let groups = parse_group(group);
    match name_or_gid.parse::<u32>() {
        Ok(gid) => groups.into_iter().find(|g| g.gid == gid),
        Err(_) => groups.into_iter().find(|g| g.name == name_or_gid),
    }
}

/// The gids of the groups that list `username` as a member, except a group named like the user
/// (its primary group is added separately).
pub fn member_gids(group: &str, username: &str) -> Vec<u32> {
    parse_group(group)
        .into_iter()
        .filter(|g| g.name != username && g.members.iter().any(|m| m == username))
        .map(|g| g.gid)
        .collect()
}

/// What the CRI security context says about the user.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserRequest<'a> {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_username: &'a str,
    /// The image config's `User` ("" when unset).
    pub image_user: &'a str,
    pub supplemental_groups: &'a [i64],
    pub groups_policy: SupplementalGroupsPolicy,
}

/// Resolve uid, gid and supplementary gids. `passwd`/`group` are the image's files (None when the
/// image has none).
pub fn resolve_container_user(
    req: &UserRequest,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<User, SpecError> {
    let passwd = passwd.unwrap_or("");
    let group = group.unwrap_or("");

    // (user part, group part) of the user string.
    let (user_part, group_part): (String, Option<String>) = if !req.run_as_username.is_empty() {
        (req.run_as_username.to_string(), None)
    } else if let Some(uid) = req.run_as_user {
        (id_string("run_as_user", uid)?, None)
    } else if req.run_as_group.is_some() {
        return Err(SpecError::GroupWithoutUser);
    } else {
        split_user(req.image_user)?
    };
    let group_part = match req.run_as_group {
        Some(gid) => Some(id_string("run_as_group", gid)?),
        None => group_part,
    };

    let entry = lookup_passwd(passwd, &user_part);
    let (uid, default_gid) = match (user_part.parse::<u32>(), &entry) {
        (Ok(uid), Some(e)) => (uid, e.gid),
        (Ok(uid), None) => (uid, 0),
        (Err(_), Some(e)) => (e.uid, e.gid),
        (Err(_), None) => return Err(SpecError::UnknownUser { user: user_part }),
    };
    let gid = match group_part {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                lookup_group(group, &g)
                    .ok_or(SpecError::UnknownGroup { group: g })?
                    .gid
            }
        },
    };

    let mut gids = vec![gid];
    if req.groups_policy != SupplementalGroupsPolicy::Strict {
        // Membership is by name; a uid without a passwd entry has no name and no image groups.
        let username = match user_part.parse::<u32>() {
            Ok(_) => entry.as_ref().map(|e| e.name.clone()),
            Err(_) => Some(user_part.clone()),
        };
        if let Some(name) = username {
            gids.extend(member_gids(group, &name));
        }
    }
    for &g in req.supplemental_groups {
        gids.push(u32::try_from(g).map_err(|_| SpecError::InvalidId {
            field: "supplemental_groups",
            value: g,
        })?);
    }
    gids.sort_unstable();
    gids.dedup();

    let mut user = User::default();
    user.set_uid(uid);
    user.set_gid(gid);
    user.set_umask(None);
    user.set_additional_gids(Some(gids));
    user.set_username(None);
    Ok(user)
}

fn id_string(field: &'static str, value: i64) -> Result<String, SpecError> {
    u32::try_from(value)
        .map(|v| v.to_string())
        .map_err(|_| SpecError::InvalidId { field, value })
}

/// "" → root; "u" → ("u", None); "u:g" → ("u", Some("g")); more colons or empty parts → error.
fn split_user(user: &str) -> Result<(String, Option<String>), SpecError> {
    if user.is_empty() {
        return Ok(("0".to_string(), None));
    }
    let invalid = || SpecError::InvalidUser {
        user: user.to_string(),
    };
    let mut parts = user.split(':');
    let u = parts.next().filter(|u| !u.is_empty()).ok_or_else(invalid)?;
    let g = parts.next();
    if parts.next().is_some() || g == Some("") {
        return Err(invalid());
    }
    Ok((u.to_string(), g.map(str::to_string)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken:x:notanumber:1::/:/bin/false
app:x:1000:1000:App:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
";

    const GROUP: &str = "\
root:x:0:
daemon:x:1:app
wheel:x:10:root,app
app:x:1000:app
audio:x:29: app , other
staff:x:50:
";

    fn req<'a>() -> UserRequest<'a> {
        UserRequest::default()
    }

    fn resolve(r: &UserRequest) -> Result<(u32, u32, Vec<u32>), SpecError> {
        let u = resolve_container_user(r, Some(PASSWD), Some(GROUP))?;
        Ok((u.uid(), u.gid(), u.additional_gids().clone().unwrap()))
    }

    #[test]
    fn parse_files() {
        let users = parse_passwd(PASSWD);
        assert_eq!(users.len(), 4, "comment and malformed lines skipped");
        assert_eq!(
            lookup_passwd(PASSWD, "app"),
            Some(PasswdEntry {
                name: "app".into(),
                uid: 1000,
                gid: 1000
            })
        );
        assert_eq!(lookup_passwd(PASSWD, "65534").unwrap().name, "nobody");
        assert_eq!(lookup_passwd(PASSWD, "broken"), None);
        assert_eq!(lookup_group(GROUP, "staff").unwrap().gid, 50);
        assert_eq!(lookup_group(GROUP, "29").unwrap().members, ["app", "other"]);
        // The group named like the user is its primary group, not a supplementary one.
        assert_eq!(member_gids(GROUP, "app"), [1, 10, 29]);
        assert_eq!(member_gids(GROUP, "root"), [10]);
        assert!(member_gids(GROUP, "nobody").is_empty());
    }

    #[test]
    fn image_user_forms() {
        let mut r = req();
        assert_eq!(resolve(&r).unwrap(), (0, 0, vec![0, 10]));
        r.image_user = "app";
        assert_eq!(resolve(&r).unwrap(), (1000, 1000, vec![1, 10, 29, 1000]));
        r.image_user = "1000";
        assert_eq!(resolve(&r).unwrap(), (1000, 1000, vec![1, 10, 29, 1000]));
        r.image_user = "4242";
        assert_eq!(
            resolve(&r).unwrap(),
            (4242, 0, vec![0]),
            "unknown uid: gid 0"
        );
        r.image_user = "app:staff";
        assert_eq!(resolve(&r).unwrap(), (1000, 50, vec![1, 10, 29, 50]));
        r.image_user = "1000:7";
        assert_eq!(resolve(&r).unwrap(), (1000, 7, vec![1, 7, 10, 29]));
        r.image_user = "ghost";
        assert!(matches!(resolve(&r), Err(SpecError::UnknownUser { .. })));
        r.image_user = "app:ghosts";
        assert!(matches!(resolve(&r), Err(SpecError::UnknownGroup { .. })));
        for bad in ["a:b:c", ":1", "1:"] {
            r.image_user = bad;
            assert!(
                matches!(resolve(&r), Err(SpecError::InvalidUser { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn cri_overrides() {
        let mut r = req();
        r.image_user = "app";
        r.run_as_user = Some(65534);
        assert_eq!(resolve(&r).unwrap(), (65534, 65534, vec![65534]));
        r.run_as_group = Some(5);
        assert_eq!(resolve(&r).unwrap(), (65534, 5, vec![5]));
        // The username wins over run_as_user, as in containerd.
        r.run_as_username = "daemon";
        assert_eq!(resolve(&r).unwrap(), (1, 5, vec![5]));
        r.run_as_username = "ghost";
        assert!(matches!(resolve(&r), Err(SpecError::UnknownUser { ref user }) if user == "ghost"));

        let mut r = req();
        r.run_as_group = Some(5);
        assert!(matches!(resolve(&r), Err(SpecError::GroupWithoutUser)));
        r.run_as_user = Some(-1);
        assert!(matches!(resolve(&r), Err(SpecError::InvalidId { .. })));
    }

    #[test]
    fn supplemental_groups_and_policy() {
        let mut r = req();
        r.run_as_user = Some(1000);
        r.supplemental_groups = &[3000, 10, 3000];
        assert_eq!(
            resolve(&r).unwrap(),
            (1000, 1000, vec![1, 10, 29, 1000, 3000])
        );
        r.groups_policy = SupplementalGroupsPolicy::Strict;
        assert_eq!(resolve(&r).unwrap(), (1000, 1000, vec![10, 1000, 3000]));
        r.supplemental_groups = &[-3];
        assert!(resolve(&r).is_err());
    }

    #[test]
    fn image_without_files() {
        let r = UserRequest {
            image_user: "1234:99",
            ..req()
        };
        let u = resolve_container_user(&r, None, None).unwrap();
        assert_eq!((u.uid(), u.gid()), (1234, 99));
        assert_eq!(u.additional_gids(), &Some(vec![99]));
        let r = UserRequest {
            image_user: "named",
            ..req()
        };
        assert!(matches!(
            resolve_container_user(&r, None, None),
            Err(SpecError::UnknownUser { .. })
        ));
    }
}
