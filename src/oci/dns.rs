//! The pod's `/etc/resolv.conf`, rendered from the CRI `DNSConfig`.

use k8s_cri::v1::DnsConfig;

use super::SpecError;

/// Render resolv.conf text: one `nameserver` line per server, then a single `search` line and a
/// single `options` line when those lists are non-empty. Empty config gives an empty string.
///
/// Call [`validate`] first: this function does not escape anything.
pub fn resolv_conf(dns: &DnsConfig) -> String {
    let mut out = String::new();
    for server in &dns.servers {
        out.push_str("nameserver ");
        out.push_str(server);
        out.push('\n');
    }
    if !dns.searches.is_empty() {
        out.push_str("search ");
        out.push_str(&dns.searches.join(" "));
        out.push('\n');
    }
    if !dns.options.is_empty() {
        out.push_str("options ");
        out.push_str(&dns.options.join(" "));
        out.push('\n');
    }
    out
}

/// Refuse entries that would break the line structure of resolv.conf (an embedded newline could
/// smuggle extra directives in) or that are empty.
pub fn validate(dns: &DnsConfig) -> Result<(), SpecError> {
    let all = dns.servers.iter().chain(&dns.searches).chain(&dns.options);
    for entry in all {
        let reason = if entry.is_empty() {
            "empty"
        } else if entry.chars().any(|c| c.is_whitespace() || c.is_control()) {
            "contains whitespace or control characters"
        } else {
            continue;
        };
        return Err(SpecError::InvalidDns {
            entry: entry.clone(),
            reason,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(servers: &[&str], searches: &[&str], options: &[&str]) -> DnsConfig {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        DnsConfig {
            servers: v(servers),
            searches: v(searches),
            options: v(options),
        }
    }

    #[test]
    fn kubelet_cluster_first() {
        let d = cfg(
            &["10.96.0.10"],
            &[
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
            ],
            &["ndots:5"],
        );
        validate(&d).unwrap();
        assert_eq!(
            resolv_conf(&d),
            "nameserver 10.96.0.10\n\
             search default.svc.cluster.local svc.cluster.local cluster.local\n\
             options ndots:5\n"
        );
    }

    #[test]
    fn several_servers_no_search() {
        let d = cfg(&["1.1.1.1", "2001:db8::1"], &[], &["edns0", "timeout:2"]);
        assert_eq!(
            resolv_conf(&d),
            "nameserver 1.1.1.1\nnameserver 2001:db8::1\noptions edns0 timeout:2\n"
        );
    }

    #[test]
    fn empty() {
        assert_eq!(resolv_conf(&DnsConfig::default()), "");
        validate(&DnsConfig::default()).unwrap();
    }

    #[test]
    fn injection_refused() {
        assert!(validate(&cfg(&["1.1.1.1\nnameserver 6.6.6.6"], &[], &[])).is_err());
        assert!(validate(&cfg(&[], &["a b"], &[])).is_err());
        assert!(validate(&cfg(&[], &[], &[""])).is_err());
    }
}
