//! Which URLs serve a registry host: its mirrors in configured order, then the host itself
//! over HTTPS (docker.io's API lives at registry-1.docker.io). A mirror endpoint naming the
//! host itself replaces the upstream entry, which is how a registry is made plain-HTTP:
//! `[registry.mirrors."10.0.0.5:5000"] endpoint = ["http://10.0.0.5:5000"]`.

use super::RegistryError;
use crate::config::RegistryConfig;

const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// containerd's legacy config: a mirror for every host without an entry of its own.
const WILDCARD: &str = "*";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// `host[:port]`, the key for `registry.configs`.
    pub host: String,
    /// Path prefix before `/v2`, without a trailing slash ("" for most registries).
    pub prefix: String,
    /// True for a configured mirror, false for the image's own registry.
    pub mirror: bool,
}

impl Endpoint {
    /// Parse `http(s)://host[:port][/prefix]`. A trailing `/v2` is the API root and dropped.
    pub fn parse(url: &str, mirror: bool) -> Result<Endpoint, RegistryError> {
        let bad = |reason: &str| RegistryError::Config {
            host: url.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = if let Some(r) = url.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (Scheme::Http, r)
        } else {
            return Err(bad("endpoint must start with http:// or https://"));
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if host.is_empty() || host.contains(['@', '?', '#', ' ']) {
            return Err(bad("endpoint needs a plain host[:port]"));
        }
        let mut prefix = path.trim_end_matches('/');
        prefix = prefix.strip_suffix("/v2").unwrap_or(prefix);
        Ok(Endpoint {
            scheme,
            host: host.to_string(),
            prefix: prefix.to_string(),
            mirror,
        })
    }

    /// `<scheme>://<host><prefix>/v2/<rest>`.
    pub fn url(&self, rest: &str) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}{}/v2/{rest}", self.host, self.prefix)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}{}", self.host, self.prefix)
    }
}

/// The host serving the registry API for image domain `domain`.
pub fn upstream_host(domain: &str) -> &str {
    if domain == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        domain
    }
}

/// Endpoints to try for images of `domain`, in order.
pub fn endpoints(cfg: &RegistryConfig, domain: &str) -> Result<Vec<Endpoint>, RegistryError> {
    let upstream = upstream_host(domain);
    let mirrors = cfg
        .mirrors
        .get(domain)
        .or_else(|| cfg.mirrors.get(WILDCARD));
    let mut out: Vec<Endpoint> = Vec::new();
    for url in mirrors.map(|m| m.endpoint.as_slice()).unwrap_or_default() {
        let mut ep = Endpoint::parse(url, true)?;
        // An entry naming the registry itself is how the registry is reached, not a mirror.
        if ep.host == domain || ep.host == upstream {
            ep.mirror = false;
        }
        if !out.contains(&ep) {
            out.push(ep);
        }
    }
    if !out.iter().any(|e| !e.mirror) {
        out.push(Endpoint {
            scheme: Scheme::Https,
            host: upstream.to_string(),
            prefix: String::new(),
            mirror: false,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg(text: &str) -> RegistryConfig {
        Config::parse(text).unwrap().registry
    }

    #[test]
    fn mirrors_then_upstream() {
        let c = cfg(r#"
[registry.mirrors."registry.k8s.io"]
endpoint = ["http://127.0.0.1:5000", "https://mirror.example/v2/", "https://m2.example/pfx"]
"#);
        let eps = endpoints(&c, "registry.k8s.io").unwrap();
        let urls: Vec<_> = eps.iter().map(|e| e.url("foo/manifests/1")).collect();
        assert_eq!(
            urls,
            vec![
                "http://127.0.0.1:5000/v2/foo/manifests/1",
                "https://mirror.example/v2/foo/manifests/1",
                "https://m2.example/pfx/v2/foo/manifests/1",
                "https://registry.k8s.io/v2/foo/manifests/1",
            ]
        );
        assert!(eps[..3].iter().all(|e| e.mirror) && !eps[3].mirror);
        // Unlisted hosts: HTTPS only.
        let eps = endpoints(&c, "quay.io").unwrap();
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].scheme, Scheme::Https);
    }

    #[test]
    fn docker_hub_and_plain_http_self_entry() {
        let eps = endpoints(&RegistryConfig::default(), "docker.io").unwrap();
        assert_eq!(eps[0].url(""), "https://registry-1.docker.io/v2/");
        let c = cfg(r#"
[registry.mirrors."127.0.0.1:5000"]
endpoint = ["http://127.0.0.1:5000"]
[registry.mirrors."*"]
endpoint = ["https://everything.example"]
"#);
        let eps = endpoints(&c, "127.0.0.1:5000").unwrap();
        assert_eq!(eps.len(), 1);
        assert_eq!((eps[0].scheme, eps[0].mirror), (Scheme::Http, false));
        let eps = endpoints(&c, "ghcr.io").unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].host, "everything.example");
        assert!(Endpoint::parse("ftp://x", true).is_err());
        assert!(Endpoint::parse("https://", true).is_err());
    }
}
