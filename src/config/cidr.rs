//! An IP network written as a CIDR (`10.0.0.0/8`, `fd00::/8`, or a bare address meaning
//! that one host), for `ingress.trusted_proxies`. Hand-written on `std`'s address parser:
//! all it needs is a prefix and a mask comparison, not a dependency.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A network: the address with the bits past the prefix cleared, and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a text is not a CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a CIDR (such as \"10.0.0.0/8\", \"fd00::/8\" or one address)")]
pub struct NotACidr;

impl Cidr {
    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`,
    /// what a dual-stack listener reports for an IPv4 client) is read as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                u32::from(ip) & v4_mask(self.prefix) == u32::from(network)
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                u128::from(ip) & v6_mask(self.prefix) == u128::from(network)
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = NotACidr;

    fn from_str(text: &str) -> Result<Cidr, NotACidr> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| NotACidr)?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            // Digits only: `u8::from_str` would take a leading `+`.
            Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                digits.parse::<u8>().map_err(|_| NotACidr)?
            }
            Some(_) => return Err(NotACidr),
            None => max,
        };
        if prefix > max {
            return Err(NotACidr);
        }
        Ok(Cidr::new(address, prefix))
    }
}

impl Cidr {
    /// The network of `address` with `prefix` bits (at most 32 or 128). An IPv4-mapped
    /// IPv6 network of at least 96 bits is kept as the IPv4 network it maps, so it
    /// matches IPv4 peers however they are reported.
    fn new(address: IpAddr, prefix: u8) -> Cidr {
        if let IpAddr::V6(v6) = address
            && let (true, Some(v4)) = (prefix >= 96, v6.to_ipv4_mapped())
        {
            return Cidr::new(IpAddr::V4(v4), prefix - 96);
        }
        match address {
            IpAddr::V4(v4) => Cidr {
                network: IpAddr::V4(Ipv4Addr::from(u32::from(v4) & v4_mask(prefix))),
                prefix,
            },
            IpAddr::V6(v6) => Cidr {
                network: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & v6_mask(prefix))),
                prefix,
            },
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn v4_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn v6_mask(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse()
            .unwrap_or_else(|_| panic!("{text} should parse"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv4_networks_contain_their_addresses_only() {
        let net = cidr("10.0.0.0/8");
        assert!(net.contains(ip("10.0.0.1")));
        assert!(net.contains(ip("10.255.255.255")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("9.255.255.255")));
        assert!(cidr("192.168.1.0/24").contains(ip("192.168.1.77")));
        assert!(!cidr("192.168.1.0/24").contains(ip("192.168.2.1")));
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
    }

    #[test]
    fn a_bare_address_is_that_one_host() {
        assert_eq!(cidr("10.0.0.7"), cidr("10.0.0.7/32"));
        assert!(cidr("10.0.0.7").contains(ip("10.0.0.7")));
        assert!(!cidr("10.0.0.7").contains(ip("10.0.0.8")));
        assert_eq!(cidr("::1"), cidr("::1/128"));
        assert!(cidr("::1").contains(ip("::1")));
        assert!(!cidr("::1").contains(ip("::2")));
    }

    #[test]
    fn ipv6_networks_contain_their_addresses_only() {
        let net = cidr("fd00::/8");
        assert!(net.contains(ip("fd12:3456::1")));
        assert!(!net.contains(ip("fe80::1")));
        assert!(cidr("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!cidr("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
    }

    #[test]
    fn an_ipv4_mapped_peer_matches_an_ipv4_network() {
        let net = cidr("10.0.0.0/8");
        assert!(net.contains(ip("::ffff:10.0.0.1")));
        assert!(!net.contains(ip("::ffff:11.0.0.1")));
        assert!(cidr("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        // And a network written in the mapped form matches plain IPv4 peers.
        assert!(cidr("::ffff:10.0.0.0/104").contains(ip("10.1.2.3")));
        assert!(cidr("::ffff:10.0.0.1").contains(ip("10.0.0.1")));
    }

    #[test]
    fn families_never_match_each_other_otherwise() {
        assert!(!cidr("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(!cidr("::/0").contains(ip("10.0.0.1")));
        // `::1` is IPv6 loopback, not an IPv4-mapped address.
        assert!(!cidr("127.0.0.1").contains(ip("::1")));
    }

    #[test]
    fn host_bits_are_cleared() {
        assert_eq!(cidr("10.1.2.3/8"), cidr("10.0.0.0/8"));
        assert!(cidr("10.1.2.3/8").contains(ip("10.9.9.9")));
        assert_eq!(cidr("10.1.2.3/8").to_string(), "10.0.0.0/8");
    }

    #[test]
    fn anything_else_is_not_a_cidr() {
        for text in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "10.0.0/8",
            "010.0.0.1",
            "10.0.0.0 /8",
            " 10.0.0.0/8",
            "localhost",
            "[::1]",
            "::1/64x",
            "10.0.0.0/255.0.0.0",
            "10.0.0.0/999",
        ] {
            assert_eq!(text.parse::<Cidr>(), Err(NotACidr), "{text:?}");
        }
    }
}
