//! Docker-style image reference parsing and normalisation.
//!
//! `busybox` -> `docker.io/library/busybox:latest`, `foo/bar` -> `docker.io/foo/bar:latest`,
//! `localhost:5000/x` keeps its registry, `x@sha256:<hex>` stays a digest reference.

use super::ImageError;

pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
pub const DEFAULT_TAG: &str = "latest";
const NAME_TOTAL_MAX: usize = 255;

/// A parsed, normalised reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (and port), e.g. `docker.io` or `localhost:5000`.
    pub domain: String,
    /// Repository path, e.g. `library/busybox`.
    pub path: String,
    pub tag: Option<String>,
    /// `sha256:<hex>`.
    pub digest: Option<String>,
}

impl Reference {
    /// `domain/path`, the repository name without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// `name:tag` if the reference has a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `name@digest` if the reference has a digest.
    pub fn digested(&self) -> Option<String> {
        self.digest.as_ref().map(|d| format!("{}@{d}", self.name()))
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Normalise `r` to its canonical string form.
pub fn normalize(r: &str) -> Result<String, ImageError> {
    parse(r).map(|p| p.to_string())
}

/// Parse and normalise `r`. A reference with neither tag nor digest gets the `latest` tag.
pub fn parse(r: &str) -> Result<Reference, ImageError> {
    let invalid = |reason: &str| ImageError::InvalidReference {
        reference: r.to_string(),
        reason: reason.to_string(),
    };
    if r.is_empty() {
        return Err(invalid("empty reference"));
    }
    let (rest, digest) = match r.split_once('@') {
        Some((rest, d)) => {
            validate_digest(d).map_err(|_| invalid("digest must be sha256:<64 hex digits>"))?;
            (rest, Some(d.to_string()))
        }
        None => (r, None),
    };
    // A ':' after the last '/' separates the tag; one before it belongs to a registry port.
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let i = last_slash + i;
            (&rest[..i], Some(rest[i + 1..].to_string()))
        }
        None => (rest, None),
    };
    if let Some(t) = &tag
        && !valid_tag(t)
    {
        return Err(invalid("invalid tag"));
    }
    if name.is_empty() {
        return Err(invalid("empty repository name"));
    }
    if digest.is_none() && tag.is_none() && is_hex64(name) {
        return Err(invalid(
            "a 64-hex-digit string is an image id, not a repository name",
        ));
    }
    let (mut domain, mut path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !path.contains('/') {
        path = format!("{OFFICIAL_REPO_PREFIX}{path}");
    }
    if !valid_domain(&domain) {
        return Err(invalid("invalid registry host"));
    }
    if !path.split('/').all(valid_path_component) {
        return Err(invalid(
            "repository name must be lowercase letters, digits and separators (. _ __ -)",
        ));
    }
    if domain.len() + 1 + path.len() > NAME_TOTAL_MAX {
        return Err(invalid("repository name longer than 255 characters"));
    }
    let tag = match (&tag, &digest) {
        (None, None) => Some(DEFAULT_TAG.to_string()),
        _ => tag,
    };
    Ok(Reference {
        domain,
        path,
        tag,
        digest,
    })
}

/// Check `d` is `sha256:<64 lowercase hex>`.
pub fn validate_digest(d: &str) -> Result<&str, ImageError> {
    match d.strip_prefix("sha256:") {
        Some(hex) if is_hex64(hex) => Ok(hex),
        _ => Err(ImageError::InvalidDigest {
            digest: d.to_string(),
        }),
    }
}

pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_lower_alnum(b[0]) || !is_lower_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_lower_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !is_lower_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Host labels separated by '.', optional `:port`.
fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()))
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_normalisation() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("foo/bar", "docker.io/foo/bar:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/x:v1", "localhost:5000/x:v1"),
            ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
            ("quay.io/a/b/c:t_1.2-x", "quay.io/a/b/c:t_1.2-x"),
            (
                "localhost/crius/pause:builtin",
                "localhost/crius/pause:builtin",
            ),
            ("my-app__x.y", "docker.io/library/my-app__x.y:latest"),
        ];
        for (i, o) in cases {
            assert_eq!(normalize(i).unwrap(), o, "{i}");
        }
    }

    #[test]
    fn digest_references() {
        assert_eq!(
            normalize(&format!("busybox@{D}")).unwrap(),
            format!("docker.io/library/busybox@{D}")
        );
        let r = parse(&format!("localhost:5000/a:v1@{D}")).unwrap();
        assert_eq!(r.digested().unwrap(), format!("localhost:5000/a@{D}"));
        assert_eq!(r.tagged().unwrap(), "localhost:5000/a:v1");
    }

    #[test]
    fn invalid_references() {
        for bad in [
            "",
            "Busybox",
            "foo/Bar",
            "a:",
            "a@sha256:xyz",
            "a@md5:0123",
            "a//b",
            "-a",
            "a-",
            "a..b",
            "a___b",
            ":tag",
            "a:-tag",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "bad_host!/x",
        ] {
            let e = normalize(bad);
            assert!(e.is_err(), "{bad:?} should be invalid: {e:?}");
        }
        let long = format!("x/{}", "a".repeat(260));
        assert!(normalize(&long).is_err());
        let e = normalize("Busybox").unwrap_err().to_string();
        assert!(e.contains("Busybox"), "{e}");
    }
}
