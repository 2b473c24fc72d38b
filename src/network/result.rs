//! CNI ADD results: the 1.0.0 format and the 0.3.x/0.4.0 one (which differs only by a "version"
//! field on each IP), plus the 0.1.0/0.2.0 "ip4"/"ip6" form some old plugins still print.
//! The raw JSON is what gets cached and passed on as prevResult; these types only read it.

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub ip4: Option<LegacyIp>,
    #[serde(default)]
    pub ip6: Option<LegacyIp>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Interface {
    pub name: String,
    /// The netns path for interfaces inside the sandbox; empty for host-side ones (veth peers).
    #[serde(default)]
    pub sandbox: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpConfig {
    /// CIDR notation, e.g. "10.22.0.5/24".
    pub address: String,
    /// Index into `interfaces`.
    #[serde(default)]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct LegacyIp {
    pub ip: String,
}

impl CniResult {
    pub fn parse(value: &Value) -> Result<Self, String> {
        let result: CniResult = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        for ip in &result.ips {
            if parse_cidr_address(&ip.address).is_none() {
                return Err(format!("invalid IP address {:?}", ip.address));
            }
        }
        Ok(result)
    }

    /// The addresses given to the sandbox, in result order. An IP whose interface index names
    /// a host-side interface (no "sandbox") is not the pod's; one without an index (allowed by
    /// the spec) or with a dangling index is taken as the pod's.
    pub fn sandbox_ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .ips
            .iter()
            .filter(
                |ip| match ip.interface.and_then(|i| self.interfaces.get(i)) {
                    Some(iface) => !iface.sandbox.is_empty(),
                    None => true,
                },
            )
            .filter_map(|ip| parse_cidr_address(&ip.address))
            .collect();
        for legacy in [&self.ip4, &self.ip6].into_iter().flatten() {
            ips.extend(parse_cidr_address(&legacy.ip));
        }
        ips
    }

    /// The name of the first interface inside the sandbox, if the result lists one.
    pub fn sandbox_interface(&self) -> Option<&str> {
        self.interfaces
            .iter()
            .find(|i| !i.sandbox.is_empty())
            .map(|i| i.name.as_str())
    }
}

/// "10.1.2.3/24" → 10.1.2.3 (a bare address is accepted too).
pub fn parse_cidr_address(cidr: &str) -> Option<IpAddr> {
    cidr.split('/').next()?.parse().ok()
}

/// Split addresses into the primary one (the first IPv4, else the first) and the rest, in order.
pub fn primary_and_rest(ips: &[IpAddr]) -> (Option<IpAddr>, Vec<IpAddr>) {
    let primary = ips
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| ips.first())
        .copied();
    let rest = match primary {
        Some(p) => {
            let pos = ips.iter().position(|ip| *ip == p);
            ips.iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != pos)
                .map(|(_, ip)| *ip)
                .collect()
        }
        None => Vec::new(),
    };
    (primary, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_040_result_from_bridge() {
        let v = json!({
            "cniVersion": "0.4.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/crius/netns/abc"}
            ],
            "ips": [
                {"version": "4", "interface": 2, "address": "10.22.0.5/16", "gateway": "10.22.0.1"},
                {"version": "6", "interface": 2, "address": "fd00::5/64", "gateway": "fd00::1"}
            ],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        let r = CniResult::parse(&v).unwrap();
        assert_eq!(r.sandbox_interface(), Some("eth0"));
        let ips = r.sandbox_ips();
        assert_eq!(
            ips,
            vec![
                "10.22.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
    }

    #[test]
    fn parses_100_result_and_skips_host_side_ips() {
        let v = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/var/run/netns/x"}
            ],
            "ips": [
                {"address": "fd00::7/64", "interface": 1},
                {"address": "192.168.1.1/24", "interface": 0},
                {"address": "10.0.0.7/24", "interface": 1, "gateway": "10.0.0.1"},
                {"address": "10.9.9.9/32"}
            ]
        });
        let r = CniResult::parse(&v).unwrap();
        let ips = r.sandbox_ips();
        assert_eq!(ips.len(), 3, "{ips:?}");
        let (primary, rest) = primary_and_rest(&ips);
        assert_eq!(primary, Some("10.0.0.7".parse().unwrap()));
        assert_eq!(
            rest,
            vec![
                "fd00::7".parse::<IpAddr>().unwrap(),
                "10.9.9.9".parse().unwrap()
            ]
        );
    }

    #[test]
    fn legacy_and_empty_results() {
        let r =
            CniResult::parse(&json!({"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.2/24"}})).unwrap();
        assert_eq!(r.sandbox_ips(), vec!["10.1.0.2".parse::<IpAddr>().unwrap()]);
        let r = CniResult::parse(&json!({"cniVersion":"1.0.0"})).unwrap();
        assert!(r.sandbox_ips().is_empty());
        assert_eq!(primary_and_rest(&[]), (None, vec![]));
        let v6only: Vec<IpAddr> = vec!["fd00::1".parse().unwrap()];
        assert_eq!(primary_and_rest(&v6only), (Some(v6only[0]), vec![]));
        assert!(CniResult::parse(&json!({"ips":[{"address":"nonsense"}]})).is_err());
    }
}
