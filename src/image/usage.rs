//! ImageFsInfo's walk of every snapshot and blob, answered again while nothing changed.
//!
//! kubelet asks for ImageFsInfo every few seconds (its image GC and eviction managers), and the
//! walk costs a syscall per file of every unpacked image. Every change that adds or removes
//! usage creates, renames or removes an entry in one of a few directories (an ingest file, a
//! blob renamed into `content/blobs/sha256` or deleted from it, a temp snapshot created in
//! `snapshots`, renamed to its number, `index.json` replaced, a snapshot removed), which moves
//! that directory's mtime. So a walk is kept with the mtimes read before it and answered again
//! while they are unchanged and it is younger than the memo's `max_age`. The age bounds what
//! the mtimes miss: a file growing in place (an ingest file during a pull, a temp snapshot
//! being filled). Any process's change is seen, not only the daemon's (`crius image import`
//! writes the same directories).
//!
//! Timestamps are only as fine as the filesystem keeps them (a kernel tick; a second on ext4
//! with small inodes), so a change right after the mtimes were read could leave them as they
//! were. A walk is therefore kept only when every directory was last changed at least [`RACY`]
//! before the mtimes were read (git's "racily clean" index entries, the same problem).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Changes closer than this to the reading of the mtimes may not have moved them.
const RACY: Duration = Duration::from_secs(1);

/// The watched directories' mtimes, in order (None: missing or unreadable).
type Token = Vec<Option<SystemTime>>;

#[derive(Debug)]
struct Kept<V> {
    token: Token,
    taken: Instant,
    value: V,
}

#[derive(Debug)]
pub struct UsageMemo<V> {
    dirs: Vec<PathBuf>,
    max_age: Duration,
    /// Held across a walk, so concurrent callers wait for it and get its answer instead of
    /// walking the same files again.
    kept: Mutex<Option<Kept<V>>>,
}

impl<V: Clone> UsageMemo<V> {
    pub fn new(dirs: Vec<PathBuf>, max_age: Duration) -> Self {
        UsageMemo {
            dirs,
            max_age,
            kept: Mutex::new(None),
        }
    }

    fn token(&self) -> Token {
        self.dirs
            .iter()
            .map(|d| std::fs::metadata(d).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// The kept walk if nothing changed since, else `walk()`, kept when its directories had
    /// settled. Blocking: call it from a blocking thread.
    pub fn get<E>(&self, walk: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        // The clock before the mtimes: `settled` must compare them with the moment they were
        // read, not with the end of a walk that may take seconds.
        let read_at = SystemTime::now();
        let token = self.token();
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = kept.as_ref()
            && k.token == token
            && k.taken.elapsed() < self.max_age
        {
            return Ok(k.value.clone());
        }
        // Whatever was kept is out of date; a failed walk must not leave it behind.
        *kept = None;
        let value = walk()?;
        if settled(&token, read_at) {
            *kept = Some(Kept {
                token,
                taken: Instant::now(),
                value: value.clone(),
            });
        }
        Ok(value)
    }
}

/// Every mtime is at least [`RACY`] older than `read_at` (a missing directory has none). An
/// mtime in the future (the clock was set back) is never settled.
fn settled(token: &[Option<SystemTime>], read_at: SystemTime) -> bool {
    token
        .iter()
        .flatten()
        .all(|m| read_at.duration_since(*m).is_ok_and(|age| age >= RACY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::path::Path;

    /// Sets a directory's mtime `ago` into the past, as if its last change were that old.
    fn age(dir: &Path, ago: Duration) {
        let t = SystemTime::now() - ago;
        std::fs::File::open(dir).unwrap().set_modified(t).unwrap();
    }

    const LONG_AGO: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    /// A walk that answers how many times it ran.
    fn counter(walks: &Cell<u32>) -> impl Fn() -> Result<u32, ()> + '_ {
        move || {
            walks.set(walks.get() + 1);
            Ok(walks.get())
        }
    }

    #[test]
    fn a_walk_is_kept_until_a_directory_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("blobs");
        std::fs::create_dir(&d).unwrap();
        age(&d, LONG_AGO);
        let memo = UsageMemo::new(vec![d.clone()], HOUR);
        let walks = Cell::new(0);
        assert_eq!(memo.get(counter(&walks)), Ok(1));
        assert_eq!(memo.get(counter(&walks)), Ok(1), "nothing changed: no walk");
        std::fs::write(d.join("new"), b"x").unwrap();
        assert_eq!(memo.get(counter(&walks)), Ok(2), "an entry came: walked");
        // Changed just now: not kept while the change is this recent.
        assert_eq!(memo.get(counter(&walks)), Ok(3));
        age(&d, LONG_AGO);
        assert_eq!(memo.get(counter(&walks)), Ok(4));
        assert_eq!(memo.get(counter(&walks)), Ok(4));
        std::fs::remove_file(d.join("new")).unwrap();
        assert_eq!(memo.get(counter(&walks)), Ok(5), "an entry went: walked");
    }

    #[test]
    fn a_change_during_the_walk_is_seen_by_the_next_call() {
        let tmp = tempfile::tempdir().unwrap();
        age(tmp.path(), LONG_AGO);
        let memo = UsageMemo::new(vec![tmp.path().to_path_buf()], HOUR);
        // The walk itself adds a blob after the mtimes were read: what it counted may or may
        // not include it, so its answer must not be kept under the old mtimes' token.
        let first = memo.get(|| {
            std::fs::write(tmp.path().join("blob"), b"x").unwrap();
            Ok::<_, ()>(1)
        });
        assert_eq!(first, Ok(1));
        assert_eq!(memo.get(|| Ok::<_, ()>(2)), Ok(2));
    }

    #[test]
    fn a_recent_change_is_not_trusted_however_long_the_walk_takes() {
        let tmp = tempfile::tempdir().unwrap();
        // Changed half a second before the call; the walk then takes longer than RACY, so
        // the change is old by its end, but not when the mtimes were read.
        age(tmp.path(), Duration::from_millis(500));
        let memo = UsageMemo::new(vec![tmp.path().to_path_buf()], HOUR);
        let slow = || {
            std::thread::sleep(Duration::from_millis(700));
            Ok::<_, ()>(1)
        };
        assert_eq!(memo.get(slow), Ok(1));
        assert_eq!(memo.get(|| Ok::<_, ()>(2)), Ok(2), "the racy walk was kept");
    }

    #[test]
    fn a_directory_that_appears_is_a_change() {
        let tmp = tempfile::tempdir().unwrap();
        let ingest = tmp.path().join("ingest");
        let memo = UsageMemo::new(vec![ingest.clone()], HOUR);
        let walks = Cell::new(0);
        assert_eq!(memo.get(counter(&walks)), Ok(1));
        assert_eq!(memo.get(counter(&walks)), Ok(1), "still missing: no walk");
        std::fs::create_dir(&ingest).unwrap();
        age(&ingest, LONG_AGO);
        assert_eq!(memo.get(counter(&walks)), Ok(2));
    }

    #[test]
    fn a_walk_is_not_kept_past_its_max_age() {
        let tmp = tempfile::tempdir().unwrap();
        age(tmp.path(), LONG_AGO);
        let memo = UsageMemo::new(vec![tmp.path().to_path_buf()], Duration::ZERO);
        assert_eq!(memo.get(|| Ok::<_, ()>(1)), Ok(1));
        assert_eq!(memo.get(|| Ok::<_, ()>(2)), Ok(2));
    }

    #[test]
    fn a_failed_walk_is_reported_and_drops_what_was_kept() {
        let tmp = tempfile::tempdir().unwrap();
        age(tmp.path(), LONG_AGO);
        let memo = UsageMemo::new(vec![tmp.path().to_path_buf()], HOUR);
        assert_eq!(memo.get(|| Ok::<_, &str>(1)), Ok(1));
        std::fs::write(tmp.path().join("blob"), b"x").unwrap();
        age(tmp.path(), LONG_AGO);
        assert_eq!(memo.get(|| Err::<u32, _>("io")), Err("io"));
        assert!(memo.kept.lock().unwrap().is_none());
        assert_eq!(memo.get(|| Ok::<_, &str>(3)), Ok(3));
        assert_eq!(memo.get(|| Ok::<_, &str>(4)), Ok(3));
    }

    #[test]
    fn settled_needs_every_mtime_racy_old() {
        let now = SystemTime::now();
        let old = Some(now - LONG_AGO);
        assert!(settled(&[old, None], now));
        assert!(!settled(&[old, Some(now - RACY / 2)], now));
        assert!(!settled(&[Some(now + LONG_AGO)], now), "future mtime");
        assert!(settled(&[], now), "nothing watched");
    }
}
