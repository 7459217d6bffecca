//! Fairness per source (PROTOCOL.md §5.1 "Limits" and §5.2 "Per-source limits"): the address
//! prefix a connection or a message 1 is charged to, and a table of slots held per prefix.
//!
//! Pure: no clock, no I/O. The TCP transport charges its accepted sockets to the source
//! prefix; the endpoint charges its pending responder handshakes.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

/// The part of a source address that one host is assumed to control: the whole address for
/// IPv4 (/32), the first 64 bits for IPv6 (/64, the smallest subnet a host is normally given).
/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) counts as the IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourcePrefix {
    /// An IPv4 address.
    V4([u8; 4]),
    /// The first 8 bytes of an IPv6 address.
    V6([u8; 8]),
}

impl SourcePrefix {
    /// The prefix `ip` is charged to.
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                let mut p = [0u8; 8];
                p.copy_from_slice(&o[..8]);
                Self::V6(p)
            }
        }
    }
}

/// Slots held per key (a [`SourcePrefix`] in production), each key capped at `cap`.
///
/// Only keys holding at least one slot are stored, so the table never has more entries than
/// slots held; the caller bounds those with a global cap checked alongside.
#[derive(Clone, Debug)]
pub(crate) struct PerSource<K> {
    cap: usize,
    held: HashMap<K, usize>,
    total: usize,
}

impl<K: Eq + Hash + Copy> PerSource<K> {
    /// A table allowing each key `cap` slots.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            held: HashMap::new(),
            total: 0,
        }
    }

    /// Takes a slot for `key` unless it already holds `cap`.
    pub(crate) fn acquire(&mut self, key: K) -> bool {
        let n = self.held.entry(key).or_insert(0);
        if *n >= self.cap {
            if *n == 0 {
                self.held.remove(&key);
            }
            return false;
        }
        *n += 1;
        self.total += 1;
        true
    }

    /// Gives back one slot of `key` (nothing if it holds none).
    pub(crate) fn release(&mut self, key: K) {
        if let Some(n) = self.held.get_mut(&key) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.held.remove(&key);
            }
        }
    }

    /// Slots `key` holds.
    pub(crate) fn held(&self, key: K) -> usize {
        self.held.get(&key).copied().unwrap_or(0)
    }

    /// Whether `key` holds all its slots.
    pub(crate) fn is_full(&self, key: K) -> bool {
        self.held(key) >= self.cap
    }

    /// Slots held by every key together.
    #[cfg(test)]
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Keys holding a slot (the table's size).
    pub(crate) fn keys(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn prefixes() {
        let v4: IpAddr = Ipv4Addr::new(10, 1, 2, 3).into();
        let mapped: IpAddr = Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().into();
        assert_eq!(SourcePrefix::of(v4), SourcePrefix::V4([10, 1, 2, 3]));
        assert_eq!(SourcePrefix::of(mapped), SourcePrefix::of(v4));
        assert_ne!(
            SourcePrefix::of(Ipv4Addr::new(10, 1, 2, 4).into()),
            SourcePrefix::of(v4)
        );
        let a: IpAddr = "2001:db8:1:2::1".parse::<Ipv6Addr>().unwrap().into();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse::<Ipv6Addr>().unwrap().into();
        let c: IpAddr = "2001:db8:1:3::1".parse::<Ipv6Addr>().unwrap().into();
        assert_eq!(SourcePrefix::of(a), SourcePrefix::of(b));
        assert_ne!(SourcePrefix::of(a), SourcePrefix::of(c));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire(u8),
        Release(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6).prop_map(Op::Acquire),
            (0u8..6).prop_map(Op::Release)
        ]
    }

    proptest! {
        /// The table against a model: a plain count per key.
        #[test]
        fn matches_a_model(cap in 0usize..5, ops in proptest::collection::vec(op(), 0..200)) {
            let mut t = PerSource::new(cap);
            let mut model = [0usize; 6];
            for o in ops {
                match o {
                    Op::Acquire(k) => {
                        let i = usize::from(k);
                        let want = model[i] < cap;
                        prop_assert_eq!(t.acquire(k), want);
                        if want {
                            model[i] += 1;
                        }
                    }
                    Op::Release(k) => {
                        let i = usize::from(k);
                        t.release(k);
                        model[i] = model[i].saturating_sub(1);
                    }
                }
                for (k, n) in model.iter().enumerate() {
                    let k = u8::try_from(k).unwrap();
                    prop_assert_eq!(t.held(k), *n);
                    prop_assert_eq!(t.is_full(k), *n >= cap);
                }
                prop_assert_eq!(t.total(), model.iter().sum::<usize>());
                prop_assert_eq!(t.keys(), model.iter().filter(|n| **n > 0).count());
            }
        }
    }
}
