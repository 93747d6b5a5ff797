//! IPv4 addresses with a prefix (`192.168.147.141/24`) and CIDR blocks
//! (`10.244.0.0/16`), the only address forms the node schema uses.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 address with a prefix length. As a node address the host bits
/// are the address; as a CIDR block (see [`Ipv4Cidr::parse_block`]) they
/// must be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    /// The address as written.
    pub addr: Ipv4Addr,
    /// Prefix length, 0–32.
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Parses `a.b.c.d/p` where host bits may be set (an interface address).
    pub fn parse_address(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` has no `/prefix`"))?;
        let addr = Ipv4Addr::from_str(a).map_err(|_| format!("`{a}` is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("prefix `{p}` is not a number"))?;
        if prefix > 32 {
            return Err(format!("prefix /{prefix} is larger than 32"));
        }
        Ok(Self { addr, prefix })
    }

    /// Parses a CIDR block `a.b.c.d/p`: host bits must be zero.
    pub fn parse_block(s: &str) -> Result<Self, String> {
        let c = Self::parse_address(s)?;
        if c.network() != c.addr {
            return Err(format!(
                "`{s}` has host bits set (the network is {}/{})",
                c.network(),
                c.prefix
            ));
        }
        Ok(c)
    }

    /// The netmask as a number.
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The broadcast address (host bits set).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether `ip` lies inside this block.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Whether the two blocks share any address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blocks_and_addresses() {
        let b = Ipv4Cidr::parse_block("10.244.0.0/16").unwrap();
        assert!(b.contains("10.244.3.1".parse().unwrap()));
        assert!(!b.contains("10.245.0.1".parse().unwrap()));
        let a = Ipv4Cidr::parse_address("192.168.147.141/24").unwrap();
        assert_eq!(a.network().to_string(), "192.168.147.0");
        assert_eq!(a.broadcast().to_string(), "192.168.147.255");
        assert_eq!(Ipv4Cidr::parse_address("0.0.0.0/0").unwrap().mask(), 0);
    }

    #[test]
    fn rejects_bad_forms() {
        assert!(Ipv4Cidr::parse_block("10.244.0.0/99")
            .unwrap_err()
            .contains("larger than 32"));
        assert!(Ipv4Cidr::parse_block("10.244.0.1/16")
            .unwrap_err()
            .contains("host bits"));
        assert!(Ipv4Cidr::parse_block("10.244.0.0").is_err());
        assert!(Ipv4Cidr::parse_block("10.244.0/16").is_err());
        assert!(Ipv4Cidr::parse_block("10.244.0.0/x").is_err());
    }

    #[test]
    fn detects_overlap() {
        let a = Ipv4Cidr::parse_block("10.0.0.0/8").unwrap();
        let b = Ipv4Cidr::parse_block("10.1.0.0/16").unwrap();
        let c = Ipv4Cidr::parse_block("192.168.0.0/16").unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
    }
}
