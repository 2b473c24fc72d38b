//! The monitor's process title: `crius monitor <container id>` in `ps`, as conmon shows its
//! container, instead of the `crius monitor --standby` every monitor is started as.
//!
//! A process's command line is the memory between `arg_start` and `arg_end` (fields 48 and 49
//! of /proc/self/stat), which the process may overwrite; moving those bounds needs
//! CAP_SYS_RESOURCE, which a node may not grant. So the daemon starts each standby with room to
//! spare ([`ROOM_ARG`] and [`room`]), and the monitor writes its title over that area once it
//! knows its container, padding with NULs.

/// A hidden argument whose value only reserves command-line space for the title.
pub const ROOM_ARG: &str = "--title-room";

/// Room for "crius monitor " and a 64-character id.
pub fn room() -> String {
    ".".repeat(80)
}

/// Replaces this process's command line with `title` (cut to the space there is). Best effort:
/// a title is for operators, never worth failing for.
pub fn set(title: &str) {
    let Some((start, end)) = argv_area() else {
        return;
    };
    let len = end.saturating_sub(start);
    if len == 0 {
        return;
    }
    let mut bytes = vec![0u8; len];
    let text = title.as_bytes();
    let n = text.len().min(len - 1);
    bytes[..n].copy_from_slice(&text[..n]);
    // ps shows argv NUL-separated: "crius monitor <id>" as three words.
    for b in &mut bytes[..n] {
        if *b == b' ' {
            *b = 0;
        }
    }
    // SAFETY: [start, end) is this process's own argument area (the kernel reports it for the
    // running process), writable stack memory that nothing else refers to by address once the
    // arguments are parsed; Rust's std copies argv strings when they are read.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), start as *mut u8, len) };
    let comm = std::ffi::CString::new("crius-monitor").expect("no NUL");
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr()) };
}

/// `arg_start` and `arg_end` of this process.
fn argv_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_argv_area(&stat)
}

fn parse_argv_area(stat: &str) -> Option<(usize, usize)> {
    let fields: Vec<&str> = crate::util::proc_stat_fields(stat)?.collect();
    // fields start at field 3; arg_start is field 48, arg_end field 49.
    let start = fields.get(48 - 3)?.parse().ok()?;
    let end = fields.get(49 - 3)?.parse().ok()?;
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_area_is_read_from_stat() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[48 - 3] = "140000".into();
        fields[49 - 3] = "140100".into();
        let stat = format!("123 (a (b) c) {}", fields.join(" "));
        assert_eq!(parse_argv_area(&stat), Some((140000, 140100)));
        let (start, end) = argv_area().expect("own stat");
        assert!(end > start);
    }
}
