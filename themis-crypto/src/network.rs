use std::fmt;
use std::str::FromStr;

use crate::Error;

/// Longest network id, in bytes.
pub const MAX_NETWORK_ID_LEN: usize = 64;

/// The name of a THEMIS network (the paper's `net_id`).
///
/// Rule: 1 to 64 bytes of UTF-8, no control characters (Unicode category Cc), and no leading or
/// trailing whitespace. The id is compared byte for byte: `twiitr` and `Twiitr` are different
/// networks. Every node id is derived from it, so a node has a different identity on every network.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkId(String);

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
        Ok(Self(name.to_owned()))
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
        &self.0
    }

    /// The name's UTF-8 bytes (1..=64 of them).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl FromStr for NetworkId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkId({:?})", self.0)
    }
}

impl serde::Serialize for NetworkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
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
}
