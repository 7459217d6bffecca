//! Bootstrap contacts as text: `NODE_ID_HEX@IP:PORT` or a bare `IP:PORT`.

use std::net::SocketAddr;
use std::str::FromStr;

use themis_crypto::NodeId;

use crate::{Contact, Error};

/// Longest contact text parsed (64 hex digits, `@`, an IPv6 socket address with scope).
const MAX_CONTACT_LEN: usize = 160;

impl FromStr for Contact {
    type Err = Error;

    /// Parses `NODE_ID_HEX@IP:PORT` (the node must prove that id in the handshake) or a bare
    /// `IP:PORT` (the id is learnt from the node itself, see `Endpoint::identify`).
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::BadContact {
            input: s.chars().take(MAX_CONTACT_LEN).collect(),
        };
        let s_trim = s.trim();
        if s_trim.len() > MAX_CONTACT_LEN {
            return Err(bad());
        }
        match s_trim.split_once('@') {
            Some((id, addr)) => Ok(Contact {
                addr: SocketAddr::from_str(addr).map_err(|_| bad())?,
                id: Some(NodeId::from_str(id).map_err(|_| bad())?),
            }),
            None => Ok(Contact {
                addr: SocketAddr::from_str(s_trim).map_err(|_| bad())?,
                id: None,
            }),
        }
    }
}

impl std::fmt::Display for Contact {
    /// The form [`Contact::from_str`] parses.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.id {
            Some(id) => write!(f, "{id}@{}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_round_trips() {
        let id = NodeId::from_bytes([0xab; 32]);
        let text = format!("{id}@127.0.0.1:7000");
        let c: Contact = text.parse().unwrap();
        assert_eq!(c.id, Some(id));
        assert_eq!(c.addr, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(c.to_string(), text);
        let bare: Contact = "[::1]:9".parse().unwrap();
        assert_eq!(bare.id, None);
        assert_eq!(bare.to_string(), "[::1]:9");
    }

    proptest::proptest! {
        /// Any text parses or is refused without panicking; every contact round-trips.
        #[test]
        fn any_text_is_safe(s in "\\PC{0,200}") {
            let _ = s.parse::<Contact>();
        }

        #[test]
        fn round_trip(id in proptest::option::of(proptest::array::uniform32(0u8..)),
                      ip in proptest::array::uniform16(0u8..), v4 in proptest::bool::ANY,
                      port in 0u16..) {
            let addr = if v4 {
                SocketAddr::from(([ip[0], ip[1], ip[2], ip[3]], port))
            } else {
                SocketAddr::from((ip, port))
            };
            let c = Contact { addr, id: id.map(NodeId::from_bytes) };
            proptest::prop_assert_eq!(c.to_string().parse::<Contact>().unwrap(), c);
        }
    }

    #[test]
    fn rejects_garbage_with_a_useful_message() {
        for s in [
            "",
            "localhost:7000",
            "abcd@127.0.0.1:1",
            "@127.0.0.1:1",
            "127.0.0.1",
            &"a".repeat(1000),
        ] {
            let e = s.parse::<Contact>().unwrap_err();
            assert!(e.to_string().contains("NODE_ID_HEX@IP:PORT"), "{e}");
        }
    }
}
