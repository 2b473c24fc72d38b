//! This node's platform and the choice of one manifest from an index. The variant matters:
//! an arm/v7 node must get the v7 image (or, failing that, v6/v5, which it can run), never
//! arm64; amd64 and arm64 treat a missing variant as the baseline one.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    /// `os/arch[/variant]`, e.g. `linux/arm/v7`.
    fn from_str(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(format!("platform {s:?} must be os/arch[/variant]"));
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        }
        .normalized())
    }
}

impl Platform {
    /// The platform this process runs on (Go's GOOS/GOARCH names, as image indexes use).
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "arm" => "arm",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        let variant = match architecture {
            "arm" => Some(arm_variant()),
            "arm64" => Some("v8".to_string()),
            _ => None,
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant,
        }
        .normalized()
    }

    /// Fill in the variant implied by a bare architecture, as containerd does: arm means
    /// arm/v7, arm64 means v8, amd64 means v1.
    pub fn normalized(mut self) -> Platform {
        self.os = self.os.to_ascii_lowercase();
        let (arch, implied) = match self.architecture.to_ascii_lowercase().as_str() {
            "x86_64" | "x86-64" | "amd64" => ("amd64", Some("v1")),
            "aarch64" | "arm64" => ("arm64", Some("v8")),
            "armhf" => ("arm", Some("v7")),
            "armel" => ("arm", Some("v6")),
            "arm" => ("arm", Some("v7")),
            "i386" | "386" => ("386", None),
            _ => (self.architecture.as_str(), None),
        };
        let arch = arch.to_string();
        if self.variant.as_deref().is_none_or(str::is_empty) {
            self.variant = implied.map(str::to_string);
        }
        if arch == "arm64" && self.variant.as_deref() == Some("8") {
            self.variant = Some("v8".into());
        }
        self.architecture = arch;
        self
    }

    /// How well an image for `candidate` suits this (host) platform: None when it cannot
    /// run here, lower is better.
    pub fn rank(&self, candidate: &Platform) -> Option<u32> {
        let host = self.clone().normalized();
        let c = candidate.clone().normalized();
        if host.os != c.os || host.architecture != c.architecture {
            return None;
        }
        if host.variant == c.variant {
            return Some(0);
        }
        // Older ARM variants run on newer cores (v7 runs v6 and v5 code), closest first;
        // amd64 microarchitecture levels likewise.
        let level = |v: &Option<String>| {
            v.as_deref()
                .and_then(|s| s.trim_start_matches('v').parse::<u32>().ok())
        };
        match (
            host.architecture.as_str(),
            level(&host.variant),
            level(&c.variant),
        ) {
            ("arm" | "amd64", Some(h), Some(x)) if x < h => Some(h - x),
            _ => None,
        }
    }
}

/// ARM architecture version of this CPU, from /proc/cpuinfo ("CPU architecture: 7").
fn arm_variant() -> String {
    let level = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("CPU architecture"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.chars().next().and_then(|c| c.to_digit(10)));
    match level {
        // A 32-bit userland on an ARMv8 core runs v7 images.
        Some(n) if n >= 7 => "v7".into(),
        Some(n) => format!("v{n}"),
        None => "v7".into(),
    }
}

/// Index of the best entry of `candidates` for `host` (entries without a platform are
/// skipped: an index of one platform-less manifest is handled by the caller).
pub fn select(host: &Platform, candidates: &[Option<Platform>]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.as_ref().and_then(|p| host.rank(p)).map(|r| (r, i)))
        .min()
        .map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn variant_aware_selection() {
        let list = vec![
            Some(p("linux/amd64")),
            Some(p("linux/arm64/v8")),
            Some(p("linux/arm/v6")),
            Some(p("linux/arm/v7")),
            Some(p("windows/amd64")),
            None,
        ];
        assert_eq!(select(&p("linux/amd64"), &list), Some(0));
        assert_eq!(select(&p("linux/arm64"), &list), Some(1));
        assert_eq!(select(&p("linux/arm/v7"), &list), Some(3));
        assert_eq!(select(&p("linux/arm/v6"), &list), Some(2));
        assert_eq!(select(&p("linux/arm/v5"), &list), None);
        assert_eq!(select(&p("linux/s390x"), &list), None);
        // arm/v7 falls back to v6, never to arm64.
        let only_v6_and_arm64 = vec![Some(p("linux/arm64")), Some(p("linux/arm/v6"))];
        assert_eq!(select(&p("linux/arm/v7"), &only_v6_and_arm64), Some(1));
        // A bare "arm" entry is v7.
        assert_eq!(select(&p("linux/arm/v7"), &[Some(p("linux/arm"))]), Some(0));
        assert_eq!(select(&p("linux/arm/v6"), &[Some(p("linux/arm"))]), None);
    }

    #[test]
    fn host_and_parsing() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(h.to_string(), "linux/amd64/v1");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//v7".parse::<Platform>().is_err());
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64/v8");
    }
}
