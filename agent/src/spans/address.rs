//! Peer addresses as attribute text. Every span of a connection names the same addresses, so
//! each address is written once and shared, instead of formatted and copied per span.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use agent_common::{AF_INET, AF_INET6};
use foldhash::HashMap;

/// Addresses kept before the cache starts over (a scan of many peers must not grow it).
const MAX_NAMES: usize = 4096;

/// Address texts seen recently.
#[derive(Default)]
pub struct AddressNames {
    names: HashMap<IpAddr, Arc<str>>,
}

impl AddressNames {
    /// The text of the address in a tuple field, if the family is known.
    pub fn of(&mut self, family: u16, bytes: &[u8; 16]) -> Option<Arc<str>> {
        let ip = address(family, bytes)?;
        if let Some(name) = self.names.get(&ip) {
            return Some(name.clone());
        }
        if self.names.len() >= MAX_NAMES {
            self.names.clear();
        }
        let name: Arc<str> = address_text(ip).into();
        self.names.insert(ip, name.clone());
        Some(name)
    }
}

/// An address as text. IPv4, by far the most common, is written directly: `to_string` costs
/// several times as much (the formatting machinery, and two reallocations on the way).
fn address_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let octets = v4.octets();
    let digits = |n: u8| 1 + usize::from(n >= 10) + usize::from(n >= 100);
    let mut text = String::with_capacity(3 + octets.iter().map(|&n| digits(n)).sum::<usize>());
    for (i, n) in octets.into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if n >= 100 {
            text.push(char::from(b'0' + n / 100));
        }
        if n >= 10 {
            text.push(char::from(b'0' + n / 10 % 10));
        }
        text.push(char::from(b'0' + n % 10));
    }
    text
}

fn address(family: u16, bytes: &[u8; 16]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(*bytes);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.9.99.100",
            "255.255.255.255",
            "192.168.1.20",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let text = address_text(ip);
            assert_eq!(text, ip.to_string());
            if ip.is_ipv4() {
                assert_eq!(text.capacity(), text.len(), "{ip}");
            }
        }
    }

    #[test]
    fn names_are_shared_and_bounded() {
        let mut names = AddressNames::default();
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[10, 0, 0, 1]);
        let a = names.of(AF_INET, &v4).unwrap();
        let b = names.of(AF_INET, &v4).unwrap();
        assert_eq!(&*a, "10.0.0.1");
        assert!(Arc::ptr_eq(&a, &b));
        // An IPv4-mapped IPv6 address reads as IPv4.
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(names.of(AF_INET6, &mapped).as_deref(), Some("10.0.0.1"));
        assert_eq!(names.of(0, &v4), None);
        for n in 0..(MAX_NAMES as u32 + 10) {
            let mut ip = [0u8; 16];
            ip[..4].copy_from_slice(&n.to_be_bytes());
            names.of(AF_INET, &ip);
        }
        assert!(names.names.len() <= MAX_NAMES);
    }
}
