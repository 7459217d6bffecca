use std::fmt;
use std::str::FromStr;

use crate::{Error, PublicKey};

/// Longest network id, in bytes.
pub const MAX_NETWORK_ID_LEN: usize = 64;

/// The name of a THEMIS network (the paper's `net_id`).
///
/// Rule: 1 to 64 bytes of UTF-8, no control characters (Unicode category Cc), and no leading or
/// trailing whitespace. The id is compared byte for byte: `twiitr` and `Twiitr` are different
/// networks. Every node id is derived from it, so a node has a different identity on every network.
///
/// A network is **open** (the paper's model, [`NetworkId::new`]) or **closed** under an
/// admission key ([`NetworkId::closed`], PROTOCOL.md §2.10): the admission public key is then
/// part of every node id, so the open network and each closed network of the same name are
/// different networks whose node ids never coincide. The name alone is what travels in message 1
/// and in signed digests ([`NetworkId::as_bytes`]); the admission key is compared separately.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkId {
    name: String,
    /// Boxed: a `NetworkId` stays two words plus the name, as most are open.
    admission: Option<Box<PublicKey>>,
}

impl NetworkId {
    /// Validates `name` against the rule above.
    pub fn new(name: &str) -> Result<Self, Error> {
        let fail = |reason| Error::InvalidNetworkId {
            shown: name.chars().take(80).collect(),
            reason,
        };
        if name.is_empty() {
            return Err(fail("it is empty"));
        }
        if name.len() > MAX_NETWORK_ID_LEN {
            return Err(fail("it is longer than 64 bytes"));
        }
        if name.chars().any(char::is_control) {
            return Err(fail("it contains a control character"));
        }
        if name.trim() != name {
            return Err(fail("it has leading or trailing whitespace"));
        }
        Ok(Self {
            name: name.to_owned(),
            admission: None,
        })
    }

    /// The closed network of this name under `admission_key` (PROTOCOL.md §2.10): only nodes
    /// holding a certificate signed by that key are admitted, and node ids bind the key.
    #[must_use]
    pub fn closed(self, admission_key: PublicKey) -> Self {
        Self {
            name: self.name,
            admission: Some(Box::new(admission_key)),
        }
    }

    /// The open network of the same name.
    #[must_use]
    pub fn open(&self) -> Self {
        Self {
            name: self.name.clone(),
            admission: None,
        }
    }

    /// The admission public key of a closed network; `None` for an open one.
    pub fn admission_key(&self) -> Option<&PublicKey> {
        self.admission.as_deref()
    }

    /// A description for operators: `'twiitr'` for an open network, `'twiitr' (closed,
    /// admission key 1a2b3c4d…)` for a closed one.
    pub fn describe(&self) -> String {
        match &self.admission {
            None => format!("'{}' (open)", self.name),
            Some(k) => format!(
                "'{}' (closed, admission key {}…)",
                self.name,
                k.to_string().chars().take(16).collect::<String>()
            ),
        }
    }

    /// Parses the wire form: the raw UTF-8 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        match std::str::from_utf8(bytes) {
            Ok(s) => Self::new(s),
            Err(_) => Err(Error::InvalidNetworkId {
                shown: String::from_utf8_lossy(bytes).chars().take(80).collect(),
                reason: "it is not valid UTF-8",
            }),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The name's UTF-8 bytes (1..=64 of them); without the admission key.
    pub fn as_bytes(&self) -> &[u8] {
        self.name.as_bytes()
    }
}

impl FromStr for NetworkId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

/// The name only (configuration, logs); [`NetworkId::describe`] also says open or closed.
impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.admission {
            None => write!(f, "NetworkId({:?})", self.name),
            Some(k) => write!(f, "NetworkId({:?}, admission key {k})", self.name),
        }
    }
}

/// Serialized as its name; a closed network's admission key is configured apart (and
/// deserializing gives the open network of that name).
impl serde::Serialize for NetworkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl<'de> serde::Deserialize<'de> for NetworkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["twiitr", "a", "prod-eu.west/1", "réseau", &"x".repeat(64)] {
            assert_eq!(NetworkId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_bad_names_with_reason() {
        let cases = [
            ("", "empty"),
            (&"x".repeat(65) as &str, "longer than 64"),
            ("a\nb", "control"),
            (" lead", "whitespace"),
            ("trail ", "whitespace"),
        ];
        for (bad, why) in cases {
            let err = NetworkId::new(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        // 22 three-byte characters = 66 bytes: too long although only 22 chars.
        assert!(NetworkId::new(&"€".repeat(22)).is_err());
        assert!(
            NetworkId::from_bytes(&[0xff, 0xfe])
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
    }

    #[test]
    fn closed_differs_from_open_and_by_key() {
        let open = NetworkId::new("twiitr").unwrap();
        let k1 = PublicKey::from_bytes([1; 32]);
        let k2 = PublicKey::from_bytes([2; 32]);
        let c1 = open.clone().closed(k1);
        assert_ne!(open, c1);
        assert_ne!(c1, open.clone().closed(k2));
        assert_eq!(c1.open(), open);
        assert_eq!(c1.as_bytes(), b"twiitr");
        assert_eq!(c1.admission_key(), Some(&k1));
        assert_eq!(open.admission_key(), None);
        assert!(
            c1.describe()
                .contains("closed, admission key 0101010101010101")
        );
        assert!(open.describe().contains("open"));
    }
}
