//! `crius logs`: print a container's CRI log file (`<RFC3339Nano> <stream> <P|F> <content>`
//! lines, as the runtime writes them), joining partial lines, optionally following the file
//! across rotations until the container stops.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_cri::v1::{ContainerState, ContainerStatusRequest};

use super::connect::{Client, Deadline};
use super::error::CliError;

/// How often a followed log is polled for new data.
const POLL: Duration = Duration::from_millis(200);
/// How often following asks whether the container still runs.
const STATE_CHECK: Duration = Duration::from_secs(1);

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Keep printing new lines (also after log rotation) until the container stops.
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Prefix each line with the time the runtime recorded it.
    #[arg(long, short)]
    pub timestamps: bool,
    /// The container.
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One whole line of container output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: Stream,
    /// The time of the line's first part.
    pub time: String,
    pub content: Vec<u8>,
}

/// Joins `P` (partial) records with the `F` record that completes them, per stream.
#[derive(Default)]
pub struct Joiner {
    /// Unfinished lines: stdout, stderr.
    pending: [Option<(String, Vec<u8>)>; 2],
}

impl Joiner {
    /// Feed one record (without its newline); returns a line when one is complete. Records
    /// that are not in the CRI format are skipped.
    pub fn push(&mut self, record: &[u8]) -> Option<LogLine> {
        let mut parts = record.splitn(4, |&b| b == b' ');
        let time = std::str::from_utf8(parts.next()?).ok()?;
        let stream = match parts.next()? {
            b"stdout" => Stream::Stdout,
            b"stderr" => Stream::Stderr,
            _ => return None,
        };
        let partial = match parts.next()? {
            b"P" => true,
            b"F" => false,
            _ => return None,
        };
        let content = parts.next().unwrap_or_default();
        let slot = &mut self.pending[stream as usize];
        let (first_time, mut joined) = slot
            .take()
            .unwrap_or_else(|| (time.to_string(), Vec::new()));
        joined.extend_from_slice(content);
        if partial {
            *slot = Some((first_time, joined));
            return None;
        }
        Some(LogLine {
            stream,
            time: first_time,
            content: joined,
        })
    }
}

/// Splits bytes into newline-terminated records, keeping an unfinished tail for later.
#[derive(Default)]
struct Records {
    buf: Vec<u8>,
}

impl Records {
    fn feed(&mut self, data: &[u8], joiner: &mut Joiner) -> Vec<LogLine> {
        self.buf.extend_from_slice(data);
        let mut lines = Vec::new();
        let mut start = 0;
        while let Some(n) = self.buf[start..].iter().position(|&b| b == b'\n') {
            if let Some(l) = joiner.push(&self.buf[start..start + n]) {
                lines.push(l);
            }
            start += n + 1;
        }
        self.buf.drain(..start);
        lines
    }
}

/// Every complete line in `data`.
#[cfg(test)]
pub fn parse_all(data: &[u8]) -> Vec<LogLine> {
    Records::default().feed(data, &mut Joiner::default())
}

/// The last `n` lines (all when `n` is None).
pub fn tail(mut lines: Vec<LogLine>, n: Option<usize>) -> Vec<LogLine> {
    if let Some(n) = n {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    lines
}

fn print(lines: &[LogLine], timestamps: bool) -> Result<(), CliError> {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for l in lines {
        let w: &mut dyn Write = match l.stream {
            Stream::Stdout => &mut out,
            Stream::Stderr => &mut err,
        };
        if timestamps {
            write!(w, "{} ", l.time)?;
        }
        w.write_all(&l.content)?;
        w.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// The open log and where we are in it.
struct Followed {
    path: PathBuf,
    file: File,
    inode: u64,
    pos: u64,
}

impl Followed {
    fn open(path: &Path) -> Result<Followed, CliError> {
        let err = |source| CliError::Log {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(err)?;
        let inode = file.metadata().map_err(err)?.ino();
        Ok(Followed {
            path: path.to_path_buf(),
            file,
            inode,
            pos: 0,
        })
    }

    /// Whatever was appended since the last read.
    fn read_new(&mut self) -> Result<Vec<u8>, CliError> {
        let mut data = Vec::new();
        self.file
            .read_to_end(&mut data)
            .map_err(|source| CliError::Log {
                path: self.path.clone(),
                source,
            })?;
        self.pos += data.len() as u64;
        Ok(data)
    }

    /// After reaching the end: follow a rotation (the path now names another file) or a
    /// truncation (the file shrank below what we read). Returns true if we switched.
    fn check_rotation(&mut self) -> Result<bool, CliError> {
        match std::fs::metadata(&self.path) {
            Ok(m) if m.ino() != self.inode => {
                // The runtime renamed the old file away and created a new one.
                *self = Followed::open(&self.path)?;
                Ok(true)
            }
            Ok(m) if m.len() < self.pos => {
                self.file
                    .seek(SeekFrom::Start(0))
                    .map_err(|source| CliError::Log {
                        path: self.path.clone(),
                        source,
                    })?;
                self.pos = 0;
                Ok(true)
            }
            // Missing between rename and create: keep waiting for the new file.
            _ => Ok(false),
        }
    }
}

async fn is_running(c: &Client, id: &str) -> Result<bool, CliError> {
    let status = c
        .call(
            "ContainerStatus",
            Deadline::Normal,
            c.runtime.clone().container_status(ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            }),
        )
        .await?
        .status;
    Ok(status.is_some_and(|s| s.state == ContainerState::ContainerRunning as i32))
}

pub async fn logs(c: &Client, args: &LogsArgs) -> Result<(), CliError> {
    let status = c
        .call(
            "ContainerStatus",
            Deadline::Normal,
            c.runtime.clone().container_status(ContainerStatusRequest {
                container_id: args.id.clone(),
                verbose: false,
            }),
        )
        .await?
        .status
        .ok_or_else(|| CliError::Answer {
            what: "container",
            id: args.id.clone(),
            reason: "the runtime returned no status".into(),
        })?;
    if status.log_path.is_empty() {
        return Err(CliError::Answer {
            what: "container",
            id: args.id.clone(),
            reason: "it has no log path (created without log_path)".into(),
        });
    }
    let mut log = Followed::open(Path::new(&status.log_path))?;
    let mut joiner = Joiner::default();
    let mut records = Records::default();
    let first = log.read_new()?;
    print(
        &tail(records.feed(&first, &mut joiner), args.tail),
        args.timestamps,
    )?;
    if !args.follow {
        return Ok(());
    }
    let mut last_check = Instant::now();
    // Set when the container was seen stopped: one more pass drains what it wrote last.
    let mut draining = false;
    loop {
        let data = log.read_new()?;
        if !data.is_empty() {
            print(&records.feed(&data, &mut joiner), args.timestamps)?;
            continue;
        }
        if log.check_rotation()? {
            continue;
        }
        if draining {
            return Ok(());
        }
        if last_check.elapsed() >= STATE_CHECK {
            last_check = Instant::now();
            if !is_running(c, &args.id).await? {
                draining = true;
                continue;
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(stream: Stream, time: &str, content: &str) -> LogLine {
        LogLine {
            stream,
            time: time.into(),
            content: content.as_bytes().to_vec(),
        }
    }

    #[test]
    fn joins_partial_lines_per_stream() {
        let text = "2024-01-01T00:00:00.1Z stdout P hel\n\
                    2024-01-01T00:00:00.2Z stderr F oops\n\
                    2024-01-01T00:00:00.3Z stdout P lo \n\
                    2024-01-01T00:00:00.4Z stdout F world\n\
                    2024-01-01T00:00:00.5Z stdout F \n\
                    garbage line\n\
                    2024-01-01T00:00:00.6Z stdout F with  two  spaces\n\
                    2024-01-01T00:00:00.7Z stdout P unfinished";
        let got = parse_all(text.as_bytes());
        assert_eq!(
            got,
            [
                line(Stream::Stderr, "2024-01-01T00:00:00.2Z", "oops"),
                line(Stream::Stdout, "2024-01-01T00:00:00.1Z", "hello world"),
                line(Stream::Stdout, "2024-01-01T00:00:00.5Z", ""),
                line(
                    Stream::Stdout,
                    "2024-01-01T00:00:00.6Z",
                    "with  two  spaces"
                ),
            ]
        );
    }

    #[test]
    fn records_split_across_reads_are_kept() {
        let mut r = Records::default();
        let mut j = Joiner::default();
        assert!(
            r.feed(b"2024-01-01T00:00:00Z stdout F ab", &mut j)
                .is_empty()
        );
        let got = r.feed(b"c\n2024-01-01T00:00:01Z stdout F d\n", &mut j);
        let contents: Vec<&[u8]> = got.iter().map(|l| l.content.as_slice()).collect();
        assert_eq!(contents, [b"abc".as_slice(), b"d".as_slice()]);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let lines: Vec<LogLine> = (0..5)
            .map(|i| line(Stream::Stdout, "t", &i.to_string()))
            .collect();
        assert_eq!(tail(lines.clone(), None).len(), 5);
        let t = tail(lines.clone(), Some(2));
        assert_eq!((t[0].content.as_slice(), t.len()), (b"3".as_slice(), 2));
        assert_eq!(tail(lines, Some(10)).len(), 5);
    }

    #[test]
    fn follows_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, "t stdout F one\n").unwrap();
        let mut f = Followed::open(&path).unwrap();
        assert_eq!(f.read_new().unwrap(), b"t stdout F one\n");
        assert!(!f.check_rotation().unwrap());
        // Rotation: the old file is renamed, a new one takes its name.
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        std::fs::write(&path, "t stdout F two\n").unwrap();
        assert!(f.check_rotation().unwrap());
        assert_eq!(f.read_new().unwrap(), b"t stdout F two\n");
        // Truncation in place.
        std::fs::write(&path, "").unwrap();
        assert!(f.check_rotation().unwrap());
        std::fs::write(&path, "t stdout F 3\n").unwrap();
        assert_eq!(f.read_new().unwrap(), b"t stdout F 3\n");
    }
}
