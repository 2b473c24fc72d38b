//! The pod's `/etc/resolv.conf`, rendered from the CRI `DNSConfig`.

use k8s_cri::v1::DnsConfig;

/// Render resolv.conf text: one `nameserver` line per server, then a single `search` line and a
/// single `options` line when those lists are non-empty. Empty config gives an empty string.
///
/// It escapes nothing: requests reach it only through [`crate::validate::dns_config`], which
/// refuses entries that could add lines.
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
    }
}
