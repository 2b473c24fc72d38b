//! Output helpers shared by the verbs: aligned tables, "3 minutes ago", "12.3MB", short ids
//! and JSON.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::error::CliError;

/// How many characters of an id the tables show (as crictl does).
pub const SHORT_ID: usize = 13;
/// Columns are at least this wide and separated by at least PADDING spaces (crictl's
/// tabwriter settings, so the tables look the same).
const MIN_WIDTH: usize = 20;
const PADDING: usize = 3;

/// `-o` for verbs that can print either a table or the CRI answer as JSON.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// The output options of the list verbs (pods, ps, images), crictl's flags.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct ListOutput {
    /// Print only ids.
    #[arg(long, short)]
    pub quiet: bool,
    /// Show full ids.
    #[arg(long)]
    pub no_trunc: bool,
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Format,
}

impl ListOutput {
    /// Prints `ids` one a line (`-q`) or `json` (`-o json`) and returns `Some`; `None` when a
    /// table is wanted.
    pub fn print_ids_or_json<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
        json: impl FnOnce() -> Value,
    ) -> Option<Result<(), CliError>> {
        if self.quiet {
            for id in ids {
                println!("{id}");
            }
            return Some(Ok(()));
        }
        (self.output == Format::Json).then(|| print_json(&json()))
    }

    /// An id as the table shows it: whole with `--no-trunc`, else shortened.
    pub fn id(&self, id: &str) -> String {
        if self.no_trunc {
            id.to_owned()
        } else {
            short_id(id)
        }
    }
}

/// A table printed with every column aligned; the last column is not padded.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                let widest = self
                    .rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0);
                (widest + PADDING).max(MIN_WIDTH)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if c + 1 < row.len() {
                    let pad = widths[c] - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) -> Result<(), CliError> {
        std::io::stdout()
            .lock()
            .write_all(self.render().as_bytes())?;
        Ok(())
    }
}

/// The first SHORT_ID characters of an id, without a `sha256:` prefix.
pub fn short_id(id: &str) -> String {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.chars().take(SHORT_ID).collect()
}

/// How long ago `created_nanos` (Unix nanoseconds) was, relative to `now_nanos`:
/// "3 minutes ago", in the wording crictl and docker use.
pub fn relative_time(created_nanos: i64, now_nanos: i64) -> String {
    let elapsed = now_nanos.saturating_sub(created_nanos).max(0);
    format!(
        "{} ago",
        human_duration(Duration::from_nanos(elapsed as u64))
    )
}

/// A rough, human reading of a duration ("About an hour", "5 days").
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    let hours = (d.as_secs_f64() / 3600.0).round() as u64;
    match () {
        _ if seconds < 1 => "Less than a second".to_string(),
        _ if seconds == 1 => "1 second".to_string(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

/// A byte count in decimal units with four significant digits: "742kB", "12.35MB".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    let int_digits = if value < 10.0 {
        1
    } else if value < 100.0 {
        2
    } else {
        3
    };
    let text = format!("{value:.prec$}", prec = 4 - int_digits);
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", UNITS[unit])
}

/// Print a value as indented JSON.
pub fn print_json<T: Serialize>(value: &T) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A verbose `info` map with every value that is JSON parsed into it (the runtime sends
/// JSON documents as strings), so it prints as one readable document.
pub fn info_json(info: &HashMap<String, String>) -> serde_json::Map<String, Value> {
    let mut keys: Vec<&String> = info.keys().collect();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let v = &info[k];
            let parsed = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone()));
            (k.clone(), parsed)
        })
        .collect()
}

/// "k=v" label selectors from the command line.
pub fn parse_labels(labels: &[String]) -> Result<HashMap<String, String>, CliError> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CliError::Usage(format!(
                "label selector {l:?} is not of the form key=value"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["POD ID", "NAME", "ATTEMPT"]);
        t.row(vec![
            "abc".into(),
            "a-rather-long-pod-name-here".into(),
            "0".into(),
        ]);
        t.row(vec!["0123456789abc".into(), "p".into(), "12".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        // Column 2 starts at the same offset everywhere: 20 (the minimum width).
        for l in &lines {
            assert_eq!(l.chars().nth(19), Some(' '), "{l:?}");
        }
        assert!(lines[1].starts_with("abc                 a-rather"));
        // The NAME column is its widest cell plus three spaces.
        let name_col = 20 + "a-rather-long-pod-name-here".len() + 3;
        assert_eq!(lines[0].find("ATTEMPT"), Some(name_col));
        assert_eq!(&lines[2][name_col..], "12");
        // No trailing blanks.
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn relative_times_read_like_crictl() {
        let s = 1_000_000_000i64;
        let now = 1_700_000_000 * s;
        assert_eq!(relative_time(now, now), "Less than a second ago");
        assert_eq!(relative_time(now + 5 * s, now), "Less than a second ago");
        assert_eq!(relative_time(now - s, now), "1 second ago");
        assert_eq!(relative_time(now - 42 * s, now), "42 seconds ago");
        assert_eq!(relative_time(now - 90 * s, now), "About a minute ago");
        assert_eq!(relative_time(now - 3 * 60 * s, now), "3 minutes ago");
        assert_eq!(relative_time(now - 3600 * s, now), "About an hour ago");
        assert_eq!(relative_time(now - 5 * 3600 * s, now), "5 hours ago");
        assert_eq!(relative_time(now - 3 * 86400 * s, now), "3 days ago");
        assert_eq!(relative_time(now - 21 * 86400 * s, now), "3 weeks ago");
        assert_eq!(relative_time(now - 90 * 86400 * s, now), "3 months ago");
        assert_eq!(relative_time(now - 800 * 86400 * s, now), "2 years ago");
    }

    #[test]
    fn sizes_are_decimal_with_four_digits() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(742_000), "742kB");
        assert_eq!(human_size(1_234_567), "1.235MB");
        assert_eq!(human_size(12_345_678), "12.35MB");
        assert_eq!(human_size(123_456_789), "123.5MB");
        assert_eq!(human_size(2_000_000_000), "2GB");
    }

    #[test]
    fn ids_are_shortened_without_digest_prefix() {
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789abc");
        assert_eq!(short_id("abc"), "abc");
    }

    #[test]
    fn info_values_are_parsed_when_json() {
        let info = HashMap::from([
            ("info".to_string(), r#"{"pid": 12}"#.to_string()),
            ("note".to_string(), "plain text".to_string()),
        ]);
        let v = info_json(&info);
        assert_eq!(v["info"]["pid"], 12);
        assert_eq!(v["note"], "plain text");
    }

    #[test]
    fn labels_need_key_and_value() {
        let l = parse_labels(&["a=b".into(), "c=".into()]).unwrap();
        assert_eq!((l["a"].as_str(), l["c"].as_str()), ("b", ""));
        assert!(parse_labels(&["nolabel".into()]).is_err());
    }
}
