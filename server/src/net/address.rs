//! Client addresses as the limits see them: one key per IPv4 address or IPv6 /64 (one site
//! holds a whole /64, so counting its addresses one by one would count nothing), address ranges
//! for `trusted_proxies`, the per-address connection cap, and the client behind a trusted proxy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// What limits count by: an IPv4 address, or the /64 network of an IPv6 address (IPv4-mapped
/// IPv6 addresses count as the IPv4 address). Eight bytes, since every connection keeps one:
/// an IPv6 /64 is its upper half, and an IPv4 address sits under the prefix `ffff:ffff::/32`,
/// which lies in the multicast range and so is never the source of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey(u64);

/// The upper half of every IPv4 key.
const IPV4_KEYS: u64 = 0xffff_ffff << 32;

impl From<IpAddr> for AddressKey {
    fn from(address: IpAddr) -> Self {
        match address.to_canonical() {
            IpAddr::V4(v4) => AddressKey(IPV4_KEYS | u64::from(u32::from(v4))),
            IpAddr::V6(v6) => AddressKey((u128::from(v6) >> 64) as u64),
        }
    }
}

/// An address or a network in CIDR form (`10.0.0.0/8`, `fd00::/8`, `192.0.2.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct AddressRange {
    network: IpAddr,
    prefix: u8,
}

impl AddressRange {
    /// Whether `address` lies inside the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for AddressRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or network (CIDR)"))?;
        let network = network.to_canonical();
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {bits}"))?,
        };
        Ok(AddressRange { network, prefix })
    }
}

impl TryFrom<String> for AddressRange {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

/// Whether any range of `ranges` holds `address`.
pub fn is_trusted(ranges: &[AddressRange], address: IpAddr) -> bool {
    ranges.iter().any(|range| range.contains(address))
}

/// The client of a request that came from `peer` with these `X-Forwarded-For` values: `peer`
/// itself unless it is a trusted proxy; otherwise the rightmost forwarded address that is not a
/// trusted proxy (addresses further left were written by the client and prove nothing).
pub fn forwarded_client<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &[AddressRange],
) -> IpAddr {
    if !is_trusted(trusted, peer) {
        return peer;
    }
    let mut client = peer;
    let hops = forwarded_for.rev().flat_map(|value| value.rsplit(','));
    for hop in hops {
        let Ok(address) = hop.trim().parse::<IpAddr>() else {
            // A hop that is not an address: the chain cannot be followed further.
            break;
        };
        client = address;
        if !is_trusted(trusted, address) {
            break;
        }
    }
    client
}

/// Open connections per address, refusing one over the cap. Entries exist only while their
/// address has a connection open, so the map is bounded by the connections themselves.
#[derive(Debug)]
pub struct PerAddressCap {
    cap: u32,
    open: Mutex<HashMap<AddressKey, u32>>,
}

impl PerAddressCap {
    /// At most `cap` connections per address; 0 means no cap.
    pub fn new(cap: u32) -> Arc<Self> {
        Arc::new(PerAddressCap {
            cap,
            open: Mutex::default(),
        })
    }

    /// A slot for one more connection from `address`, or `None` when it has `cap` open.
    pub fn take(self: &Arc<Self>, address: IpAddr) -> Option<AddressSlot> {
        if self.cap == 0 {
            return Some(AddressSlot { held: None });
        }
        let key = AddressKey::from(address);
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            held: Some((self.clone(), key)),
        })
    }

    /// Connections open from `address` now.
    pub fn open_from(&self, address: IpAddr) -> u32 {
        let open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open.get(&AddressKey::from(address)).copied().unwrap_or(0)
    }
}

/// One connection's place under its address's cap, given back on drop.
#[derive(Debug)]
pub struct AddressSlot {
    held: Option<(Arc<PerAddressCap>, AddressKey)>,
}

impl AddressSlot {
    /// A slot outside any cap (trusted proxies).
    pub fn exempt() -> Self {
        AddressSlot { held: None }
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Some((cap, key)) = self.held.take() {
            let mut open = cap
                .open
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(count) = open.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn spec_6_ipv6_addresses_of_one_64_share_a_key_and_ipv4_mapped_count_as_ipv4() {
        assert_eq!(
            AddressKey::from(ip("2001:db8:1:2::1")),
            AddressKey::from(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            AddressKey::from(ip("2001:db8:1:2::1")),
            AddressKey::from(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            AddressKey::from(ip("::ffff:192.0.2.1")),
            AddressKey::from(ip("192.0.2.1"))
        );
        assert_ne!(
            AddressKey::from(ip("192.0.2.1")),
            AddressKey::from(ip("192.0.2.2"))
        );
    }

    #[test]
    fn ranges_parse_and_contain() {
        let range: AddressRange = "10.0.0.0/8".parse().unwrap();
        assert!(range.contains(ip("10.200.1.1")));
        assert!(range.contains(ip("::ffff:10.1.1.1")));
        assert!(!range.contains(ip("11.0.0.1")));
        let single: AddressRange = "192.0.2.7".parse().unwrap();
        assert!(single.contains(ip("192.0.2.7")) && !single.contains(ip("192.0.2.8")));
        let v6: AddressRange = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let everything: AddressRange = "0.0.0.0/0".parse().unwrap();
        assert!(everything.contains(ip("203.0.113.9")));
        assert!("10.0.0.0/33".parse::<AddressRange>().is_err());
        assert!("proxy.local".parse::<AddressRange>().is_err());
    }

    #[test]
    fn spec_6_forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let header = ["198.51.100.1, 203.0.113.5", "10.0.0.3"];
        // From a trusted proxy: the rightmost hop that is not a trusted proxy.
        assert_eq!(
            forwarded_client(ip("10.0.0.2"), header.into_iter(), &trusted),
            ip("203.0.113.5")
        );
        // From anyone else, the header is the client's own claim: ignored.
        assert_eq!(
            forwarded_client(ip("203.0.113.9"), header.into_iter(), &trusted),
            ip("203.0.113.9")
        );
        // A garbled hop stops the walk at the last address followed.
        assert_eq!(
            forwarded_client(ip("10.0.0.2"), ["junk, 10.0.0.7"].into_iter(), &trusted),
            ip("10.0.0.7")
        );
        assert_eq!(
            forwarded_client(ip("10.0.0.2"), std::iter::empty(), &trusted),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn the_per_address_cap_refuses_one_more_and_frees_on_drop() {
        let cap = PerAddressCap::new(2);
        let (first, second) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let held: Vec<_> = (0..2).map(|_| cap.take(first).unwrap()).collect();
        assert!(cap.take(first).is_none());
        assert!(cap.take(second).is_some());
        drop(held);
        assert_eq!(cap.open_from(first), 0);
        assert!(cap.take(first).is_some());
    }
}
