//! Who may connect to a redirection: its access list, parsed once for the accept loop.
//!
//! The list is checked at accept, before any instance is contacted: a refused client is
//! reset at once and counted, and costs the application nothing (ngrok's "control who can
//! access"). `deny` wins over `allow`; an empty `allow` admits everyone. The PROXY protocol
//! setting travels with the list, since both are decided per connection at accept (the
//! header itself is built by the data plane, `data/proxy_header.rs`).

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::wire::{ProxyProtocol, RedirSettings, MAX_RANGES};

/// A redirection's access rules, parsed once for the accept loop.
#[derive(Debug, Clone, Default)]
pub struct Access {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    proxy: Option<ProxyProtocol>,
}

impl Access {
    /// Parses and checks the rules as the API received them.
    pub fn parse(rules: &RedirSettings) -> Result<Access, String> {
        Ok(Access {
            allow: ranges(&rules.allow, "allow")?,
            deny: ranges(&rules.deny, "deny")?,
            proxy: rules.proxy_protocol,
        })
    }

    /// Rules that admit no one.
    pub fn deny_all() -> Access {
        // The default networks are 0.0.0.0/0 and ::/0.
        Access {
            deny: vec![IpNet::V4(Default::default()), IpNet::V6(Default::default())],
            ..Access::default()
        }
    }

    /// Whether a client at `ip` may connect: not denied, and allowed when a list is given.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        let within = |list: &[IpNet]| list.iter().any(|net| net.contains(&ip));
        !within(&self.deny) && (self.allow.is_empty() || within(&self.allow))
    }

    /// The PROXY protocol header the instance gets, if any.
    pub fn proxy(&self) -> Option<ProxyProtocol> {
        self.proxy
    }
}

fn ranges(list: &[String], what: &str) -> Result<Vec<IpNet>, String> {
    if list.len() > MAX_RANGES {
        return Err(format!("`{what}` holds {} ranges; the most is {MAX_RANGES}", list.len()));
    }
    list.iter()
        .map(|text| {
            text.parse::<IpNet>().or_else(|_| text.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
                format!("`{what}`: `{text}` is not an address range: write it like 203.0.113.0/24, 2001:db8::/32 or 198.51.100.7")
            })
        })
        .collect()
}

/// An IPv4 client on a dual-stack listener shows up as `::ffff:a.b.c.d`; rules and
/// headers speak of it as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `addr` with an IPv4-mapped address as the IPv4 address it is.
pub fn unmapped(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(addr.ip()), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(allow: &[&str], deny: &[&str]) -> Access {
        let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Access::parse(&RedirSettings { allow: owned(allow), deny: owned(deny), ..RedirSettings::default() })
            .unwrap()
    }

    #[test]
    fn deny_wins_and_allow_restricts() {
        let rules = access(&["10.0.0.0/8", "2001:db8::/32"], &["10.1.0.0/16"]);
        assert!(rules.admits("10.2.3.4".parse().unwrap()));
        assert!(!rules.admits("10.1.3.4".parse().unwrap()));
        assert!(!rules.admits("192.0.2.1".parse().unwrap()));
        assert!(rules.admits("2001:db8::1".parse().unwrap()));
        assert!(rules.admits("::ffff:10.2.3.4".parse().unwrap()), "mapped IPv4 is IPv4");
        assert!(access(&[], &[]).admits("192.0.2.1".parse().unwrap()));
        assert!(!access(&[], &["192.0.2.1"]).admits("192.0.2.1".parse().unwrap()));
        assert!(!Access::deny_all().admits("192.0.2.1".parse().unwrap()));
        assert!(!Access::deny_all().admits("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn bad_ranges_are_refused_with_an_example() {
        let bad = RedirSettings { allow: vec!["10.0.0.0/33".into()], ..RedirSettings::default() };
        assert!(Access::parse(&bad).unwrap_err().contains("203.0.113.0/24"));
    }
}
