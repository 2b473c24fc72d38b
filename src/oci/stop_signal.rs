//! The signal that asks a container to stop: the image's `StopSignal`, else SIGTERM.

use oci_spec::image::ImageConfiguration;

const SIGTERM: i32 = libc::SIGTERM;

/// The image config's StopSignal as a number; SIGTERM when unset or unparsable (an image with a
/// bad StopSignal should still be stoppable, so this logs instead of failing).
pub fn stop_signal(image: &ImageConfiguration) -> i32 {
    let Some(raw) = image
        .config()
        .as_ref()
        .and_then(|c| c.stop_signal().as_deref())
    else {
        return SIGTERM;
    };
    parse_signal(raw).unwrap_or_else(|| {
        tracing::warn!(stop_signal = raw, "unknown image StopSignal; using SIGTERM");
        SIGTERM
    })
}

/// "SIGTERM", "TERM", "sigterm", "15", "SIGRTMIN+3", "RTMAX-1" → the signal number.
pub fn parse_signal(raw: &str) -> Option<i32> {
    let s = raw.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=libc::SIGRTMAX()).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rt) = realtime(name) {
        return rt;
    }
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" | "CLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return None,
    };
    Some(n)
}

/// RTMIN, RTMIN+n, RTMAX, RTMAX-n (within the real-time range). `None` if not a real-time name,
/// `Some(None)` if it is one but out of range.
fn realtime(name: &str) -> Option<Option<i32>> {
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let offset = |rest: &str, sign: char| -> Option<i32> {
        if rest.is_empty() {
            return Some(0);
        }
        rest.strip_prefix(sign)?.parse::<i32>().ok()
    };
    let n = if let Some(rest) = name.strip_prefix("RTMIN") {
        offset(rest, '+').map(|o| min + o)
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        offset(rest, '-').map(|o| max - o)
    } else {
        return None;
    };
    Some(n.filter(|n| (min..=max).contains(n)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

    fn image(sig: Option<&str>) -> ImageConfiguration {
        let mut c = ConfigBuilder::default();
        if let Some(s) = sig {
            c = c.stop_signal(s.to_string());
        }
        ImageConfigurationBuilder::default()
            .config(c.build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn parsing() {
        let table = [
            ("SIGTERM", Some(15)),
            ("TERM", Some(15)),
            ("sigquit", Some(3)),
            ("15", Some(15)),
            ("9", Some(9)),
            ("SIGKILL", Some(9)),
            ("SIGWINCH", Some(28)),
            ("SIGRTMIN", Some(libc::SIGRTMIN())),
            ("SIGRTMIN+3", Some(libc::SIGRTMIN() + 3)),
            ("RTMAX-1", Some(libc::SIGRTMAX() - 1)),
            ("SIGRTMIN+99", None),
            ("SIGRTMIN-1", None),
            ("0", None),
            ("-9", None),
            ("999", None),
            ("SIGNOPE", None),
            ("", None),
        ];
        for (raw, want) in table {
            assert_eq!(parse_signal(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn image_default_and_fallback() {
        assert_eq!(stop_signal(&image(None)), 15);
        assert_eq!(stop_signal(&image(Some("SIGQUIT"))), 3);
        assert_eq!(stop_signal(&image(Some("bogus"))), 15);
        let empty = ImageConfigurationBuilder::default().build().unwrap();
        assert_eq!(stop_signal(&empty), 15);
    }
}
