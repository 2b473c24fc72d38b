//! Test images built from this machine's files: a busybox image from Debian's busybox-static.

use std::path::Path;

use super::oci_image::{LayerFile, SYMLINK, write_image_archive};

/// The busybox applets the tests call by name.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "ls", "id", "head", "yes", "dd", "true", "false", "env",
    "printf", "tr", "wc", "ps", "hostname", "touch", "mkdir", "kill", "grep", "seq", "stat",
    "chown", "unshare",
];

pub const BUSYBOX_IMAGE: &str = "localhost/test/busybox:1";

/// A user the image's /etc/passwd knows, for run_as_username tests.
pub const IMAGE_USER: (&str, u32, u32) = ("tester", 1234, 1234);

/// Write a busybox image archive: /bin/busybox (static) with applet symlinks, /etc/passwd and
/// /etc/group with `tester` (also in group `extra` 2345), Cmd ["sh"].
pub fn write_busybox_image(out: &Path) {
    let busybox =
        std::fs::read("/bin/busybox").expect("read /bin/busybox (apt-get install busybox-static)");
    let passwd = format!(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n{}:x:{}:{}::/home/tester:/bin/sh\n",
        IMAGE_USER.0, IMAGE_USER.1, IMAGE_USER.2
    );
    let group = format!(
        "root:x:0:\nnogroup:x:65534:\n{}:x:{}:\nextra:x:2345:{}\n",
        IMAGE_USER.0, IMAGE_USER.2, IMAGE_USER.0
    );
    let links: Vec<(String, &str)> = APPLETS
        .iter()
        .map(|a| (format!("bin/{a}"), "busybox"))
        .collect();
    let mut files = vec![
        LayerFile {
            path: "bin/busybox",
            data: &busybox,
            mode: 0o755,
        },
        LayerFile {
            path: "etc/passwd",
            data: passwd.as_bytes(),
            mode: 0o644,
        },
        LayerFile {
            path: "etc/group",
            data: group.as_bytes(),
            mode: 0o644,
        },
        LayerFile {
            path: "tmp/.keep",
            data: b"",
            mode: 0o644,
        },
    ];
    for (path, target) in &links {
        files.push(LayerFile {
            path,
            data: target.as_bytes(),
            mode: SYMLINK,
        });
    }
    write_image_archive(
        out,
        BUSYBOX_IMAGE,
        serde_json::json!({
            "Env": ["PATH=/bin", "FROM_IMAGE=yes"],
            "Cmd": ["sh"],
            "WorkingDir": "/",
        }),
        &files,
    );
}
