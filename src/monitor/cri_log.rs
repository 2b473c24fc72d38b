//! Kubelet's CRI log format, written by the monitor: one record per line,
//! `<RFC3339Nano UTC> <stdout|stderr> <F|P> <content>\n`.
//!
//! Line handling follows containerd's CRI logger so that kubelet, `crictl logs` and log
//! shippers read our files exactly as theirs: a line ending in `\n` (or `\r\n`, both dropped) is
//! one `F` record; a line longer than [`MAX_LINE`] is cut into `P` records of `MAX_LINE` bytes
//! followed by the rest; output that ends without a newline (EOF) is flushed as a `P` record.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Longest content of one record (containerd's default `max_container_log_line_size`).
pub const MAX_LINE: usize = 16 * 1024;

/// Mode of a log file we create (kubelet's and containerd's choice).
const LOG_MODE: u32 = 0o640;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// The record ends a line.
    Full,
    /// The line continues in the next record (or the stream ended without a newline).
    Partial,
}

impl Tag {
    fn letter(self) -> &'static str {
        match self {
            Tag::Full => "F",
            Tag::Partial => "P",
        }
    }
}

/// Splits one stream's bytes into records. Holds at most `max` bytes of an unfinished line.
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        Self {
            pending: Vec::new(),
            max: max.max(1),
        }
    }

    /// Feeds bytes read from the stream; `emit` gets every completed record.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(Tag, &[u8])) {
        while !data.is_empty() {
            let (piece, newline) = match data.iter().position(|&b| b == b'\n') {
                Some(i) => (&data[..i], true),
                None => (data, false),
            };
            data = &data[piece.len() + usize::from(newline)..];
            self.pending.extend_from_slice(piece);
            // A line is cut only when it is longer than the limit: exactly `max` bytes
            // followed by a newline is still one full record.
            while self.pending.len() > self.max {
                emit(Tag::Partial, &self.pending[..self.max]);
                self.pending.drain(..self.max);
            }
            if newline {
                let mut line = &self.pending[..];
                if let Some(stripped) = line.strip_suffix(b"\r") {
                    line = stripped;
                }
                emit(Tag::Full, line);
                self.pending.clear();
            }
        }
        // Long lines must not keep their peak allocation for the monitor's whole life.
        if self.pending.is_empty() && self.pending.capacity() > self.max {
            self.pending = Vec::new();
        }
    }

    /// End of stream: what is left of an unterminated line becomes a partial record.
    pub fn finish(&mut self, emit: &mut impl FnMut(Tag, &[u8])) {
        if !self.pending.is_empty() {
            emit(Tag::Partial, &self.pending);
        }
        self.pending = Vec::new();
    }
}

/// Length of a CRI log timestamp, e.g. `2026-11-27T11:22:33.123456789Z`.
pub const TIMESTAMP_LEN: usize = 30;

/// The current time as CRI logs spell it: RFC 3339, UTC, always nine fractional digits.
pub fn timestamp() -> [u8; TIMESTAMP_LEN] {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    format_timestamp(ts.tv_sec, ts.tv_nsec as u32)
}

/// Formats Unix time by hand instead of through chrono's general formatter: this runs for
/// every log line in the long-lived monitor, whose resident code we keep small.
fn format_timestamp(secs: i64, nanos: u32) -> [u8; TIMESTAMP_LEN] {
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian, 400-year eras of
    // 146097 days counted from 0000-03-01).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);

    let mut out = *b"0000-00-00T00:00:00.000000000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year.clamp(0, 9999) as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, (day_secs / 3600) as u64);
    put(14, 2, (day_secs / 60 % 60) as u64);
    put(17, 2, (day_secs % 60) as u64);
    put(20, 9, u64::from(nanos.min(999_999_999)));
    out
}

/// One record, newline included.
pub fn record(time: &[u8], stream: Stream, tag: Tag, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(time.len() + content.len() + 12);
    out.extend_from_slice(time);
    out.push(b' ');
    out.extend_from_slice(stream.name().as_bytes());
    out.push(b' ');
    out.extend_from_slice(tag.letter().as_bytes());
    out.push(b' ');
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

/// The container's log file at the path kubelet chose.
#[derive(Debug)]
pub struct CriLog {
    path: PathBuf,
    file: File,
}

fn open(path: &Path) -> io::Result<File> {
    // kubelet creates the pod's log directory; a missing one is a caller error, reported at
    // create time instead of silently logging nowhere.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_MODE)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

impl CriLog {
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            file: open(path)?,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts a new file at the same path (kubelet renamed the old one away). The old file
    /// stays in use if the new one cannot be opened.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = open(&self.path)?;
        Ok(())
    }

    /// Appends one record with a single write, so a reader never sees half a line from us.
    pub fn write(&mut self, stream: Stream, tag: Tag, content: &[u8]) -> io::Result<()> {
        self.file
            .write_all(&record(&timestamp(), stream, tag, content))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]], eof: bool) -> Vec<(Tag, String)> {
        let mut out = Vec::new();
        let mut s = LineSplitter::new(max);
        let mut emit = |t: Tag, c: &[u8]| out.push((t, String::from_utf8_lossy(c).into_owned()));
        for c in chunks {
            s.feed(c, &mut emit);
        }
        if eof {
            s.finish(&mut emit);
        }
        out
    }

    fn full(s: &str) -> (Tag, String) {
        (Tag::Full, s.to_owned())
    }
    fn part(s: &str) -> (Tag, String) {
        (Tag::Partial, s.to_owned())
    }

    #[test]
    fn lines_across_reads_and_a_trailing_partial() {
        assert_eq!(
            split(16, &[b"he", b"llo\nwor", b"ld\r\n\nrest"], true),
            vec![full("hello"), full("world"), full(""), part("rest")]
        );
        // Without EOF the unterminated rest is held back.
        assert_eq!(split(16, &[b"a\nb"], false), vec![full("a")]);
    }

    #[test]
    fn long_lines_are_cut_like_containerd() {
        assert_eq!(split(4, &[b"abcd\n"], true), vec![full("abcd")]);
        assert_eq!(split(4, &[b"abcde\n"], true), vec![part("abcd"), full("e")]);
        assert_eq!(
            split(4, &[b"abcdefghij", b"k\n"], true),
            vec![part("abcd"), part("efgh"), full("ijk")]
        );
        assert_eq!(split(4, &[b"abcd"], true), vec![part("abcd")]);
        assert_eq!(
            split(4, &[b"abcdefgh"], true),
            vec![part("abcd"), part("efgh")]
        );
    }

    #[test]
    fn records_are_formatted_for_kubelet() {
        let r = record(
            b"2026-11-27T11:22:33.123456789Z",
            Stream::Stderr,
            Tag::Partial,
            b"x y",
        );
        assert_eq!(r, b"2026-11-27T11:22:33.123456789Z stderr P x y\n");
        let t = String::from_utf8(timestamp().to_vec()).unwrap();
        assert!(t.ends_with('Z'), "{t}");
        chrono::DateTime::parse_from_rfc3339(&t).unwrap();
    }

    #[test]
    fn timestamps_match_chrono() {
        let cases = [
            (0, 0),
            (951_782_400, 5), // 2000-02-29, leap day of a 400-year leap year
            (4_107_542_399, 999_999_999), // 2100-02-28T23:59:59, not a leap year
            (1_795_778_553, 123_456_789),
            (-86_400, 1),
        ];
        for (secs, nanos) in cases {
            let ours = format_timestamp(secs, nanos);
            let theirs = chrono::DateTime::from_timestamp(secs, nanos)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            assert_eq!(std::str::from_utf8(&ours).unwrap(), theirs);
        }
        // Every day across several years, including leap years and century boundaries.
        for day in (-800..60_000).step_by(7) {
            let secs = day * 86_400 + 45_296;
            let theirs = chrono::DateTime::from_timestamp(secs, 7)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            assert_eq!(
                std::str::from_utf8(&format_timestamp(secs, 7)).unwrap(),
                theirs
            );
        }
    }

    #[test]
    fn reopen_follows_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut log = CriLog::open(&path).unwrap();
        log.write(Stream::Stdout, Tag::Full, b"one").unwrap();
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        log.write(Stream::Stdout, Tag::Full, b"two").unwrap();
        log.reopen().unwrap();
        log.write(Stream::Stdout, Tag::Full, b"three").unwrap();
        let old = std::fs::read_to_string(dir.path().join("0.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(
            old.ends_with(" stdout F two\n") && old.contains(" F one\n"),
            "{old}"
        );
        assert!(
            new.ends_with(" stdout F three\n") && new.lines().count() == 1,
            "{new}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "{mode:o}");
    }
}
