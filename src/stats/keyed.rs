//! Parsing of the small text formats cgroup control files use.

use super::error::{StatsError, is_vanished};
use std::collections::HashMap;
use std::path::Path;

/// Read a control file; `Ok(None)` when it does not exist (controller not enabled, cgroup
/// removed meanwhile).
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, StatsError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if is_vanished(&e) => Ok(None),
        Err(e) => Err(StatsError::io(path, e)),
    }
}

/// A file holding one unsigned number, such as `memory.current` or `cpuacct.usage`.
/// v2 writes "max" for "no limit", reported as `u64::MAX`.
pub(crate) fn read_u64(path: &Path) -> Result<Option<u64>, StatsError> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    parse_u64(text.trim())
        .map(Some)
        .ok_or_else(|| StatsError::Parse {
            path: path.to_owned(),
            reason: format!("expected a number, found {:?}", text.trim()),
        })
}

fn parse_u64(s: &str) -> Option<u64> {
    if s == "max" {
        return Some(u64::MAX);
    }
    s.parse().ok()
}

/// A flat keyed file (`memory.stat`, `cpu.stat`): one "key value" pair a line. Lines that do
/// not parse are skipped: newer kernels add keys, and we only look up the ones we know.
pub(crate) fn read_keyed(path: &Path) -> Result<Option<HashMap<String, u64>>, StatsError> {
    Ok(read_optional(path)?.map(|text| parse_keyed(&text)))
}

pub(crate) fn parse_keyed(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            let key = it.next()?;
            let value = parse_u64(it.next()?)?;
            Some((key.to_owned(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_skips_junk_and_keeps_numbers() {
        let m = parse_keyed("cache 10\nrss 20\nbogus\nweird x\nmax_thing max\n");
        assert_eq!(m.get("cache"), Some(&10));
        assert_eq!(m.get("rss"), Some(&20));
        assert_eq!(m.get("max_thing"), Some(&u64::MAX));
        assert!(!m.contains_key("weird"));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn read_u64_missing_is_none_and_garbage_is_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_u64(&dir.path().join("nope")).unwrap().is_none());
        std::fs::write(dir.path().join("n"), "42\n").unwrap();
        assert_eq!(read_u64(&dir.path().join("n")).unwrap(), Some(42));
        std::fs::write(dir.path().join("g"), "forty\n").unwrap();
        assert!(matches!(
            read_u64(&dir.path().join("g")),
            Err(StatsError::Parse { .. })
        ));
    }
}
