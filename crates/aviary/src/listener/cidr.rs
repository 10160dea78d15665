//! IP allow-list rules: an address block in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`,
//! or a single address). Checked at accept, before anything is read from the socket.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One address block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cidr {
    /// The network address (host bits cleared).
    network: IpAddr,
    /// Leading bits that must match.
    prefix: u8,
}

/// Why a CIDR rule does not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected an address or address/prefix such as \"10.0.0.0/8\", got {0:?}")]
pub(crate) struct CidrError(String);

impl Cidr {
    /// Whether `ip` is inside the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask32(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask128(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `bits` with all but the first `prefix` bits cleared.
fn mask32(bits: u32, prefix: u8) -> u32 {
    bits.checked_shr(32 - u32::from(prefix))
        .map_or(0, |b| b << (32 - u32::from(prefix)))
}

/// `bits` with all but the first `prefix` bits cleared.
fn mask128(bits: u128, prefix: u8) -> u128 {
    bits.checked_shr(128 - u32::from(prefix))
        .map_or(0, |b| b << (128 - u32::from(prefix)))
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, CidrError> {
        let err = || CidrError(text.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(err)?,
            None => max,
        };
        let network = match addr {
            IpAddr::V4(a) => IpAddr::V4(mask32(u32::from(a), prefix).into()),
            IpAddr::V6(a) => IpAddr::V6(mask128(u128::from(a), prefix).into()),
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rule: &str, ip: &str, expected: bool) {
        let cidr: Cidr = rule.parse().unwrap();
        assert_eq!(
            cidr.contains(ip.parse().unwrap()),
            expected,
            "{rule} ∋ {ip}"
        );
    }

    #[test]
    fn membership() {
        check("10.0.0.0/8", "10.1.2.3", true);
        check("10.0.0.0/8", "11.1.2.3", false);
        check("127.0.0.1", "127.0.0.1", true);
        check("127.0.0.1", "127.0.0.2", false);
        check("0.0.0.0/0", "8.8.8.8", true);
        check("0.0.0.0/0", "::1", false);
        check("127.0.0.0/8", "::ffff:127.0.0.1", true);
        check("2001:db8::/32", "2001:db8:1::1", true);
        check("2001:db8::/32", "2001:db9::1", false);
        check("::/0", "::1", true);
        check("192.168.1.77/24", "192.168.1.1", true);
    }

    #[test]
    fn display_shows_the_network() {
        let cidr: Cidr = "192.168.1.77/24".parse().unwrap();
        assert_eq!(cidr.to_string(), "192.168.1.0/24");
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in ["", "10.0.0.0/33", "::/129", "host/8", "10.0.0.0/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
