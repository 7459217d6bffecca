//! AppAuth's data (paper §7): the `check` back-end's table of known users, holding salted
//! hashes only, and the login message the client sends to `handler` and `handler` forwards to
//! `check`.

use std::collections::HashMap;

use subtle::ConstantTimeEq;
use themis_crypto::{HASH_LEN, Transcript};
use zeroize::Zeroizing;

/// Longest username, in bytes.
pub(crate) const MAX_USERNAME: usize = 64;
/// Longest password, in bytes.
pub(crate) const MAX_PASSWORD: usize = 64;
/// Most users a table holds.
pub(crate) const MAX_USERS: usize = 4096;
/// Domain-separation label of the password hash.
const PASSWORD_LABEL: &str = "themis/demo/password";
/// Length of each user's random salt.
const SALT_LEN: usize = 16;

/// A login attempt: a username and a password. The password is wiped on drop and never shown.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Login {
    user: String,
    password: Zeroizing<String>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Login {
    /// A login, if both parts fit their limits (username 1..=64 bytes, password 0..=64).
    pub(crate) fn new(user: &str, password: &str) -> Option<Self> {
        if user.is_empty() || user.len() > MAX_USERNAME || password.len() > MAX_PASSWORD {
            return None;
        }
        Some(Self {
            user: user.to_owned(),
            password: Zeroizing::new(password.to_owned()),
        })
    }

    /// The username.
    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    /// Wire form: `u8 len(user) ‖ user ‖ u8 len(password) ‖ password`, both UTF-8.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.user.len() + self.password.len());
        // Both lengths are at most 64 (checked in `new`), so they fit a byte.
        out.push(self.user.len() as u8);
        out.extend_from_slice(self.user.as_bytes());
        out.push(self.password.len() as u8);
        out.extend_from_slice(self.password.as_bytes());
        out
    }

    /// Parses the wire form; `None` if it is malformed, over a limit, or has trailing bytes.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let (&ulen, rest) = bytes.split_first()?;
        let ulen = usize::from(ulen);
        if ulen == 0 || ulen > MAX_USERNAME || rest.len() < ulen + 1 {
            return None;
        }
        let (user, rest) = rest.split_at(ulen);
        let (&plen, pass) = rest.split_first()?;
        if usize::from(plen) != pass.len() || pass.len() > MAX_PASSWORD {
            return None;
        }
        let user = std::str::from_utf8(user).ok()?;
        let pass = std::str::from_utf8(pass).ok()?;
        Self::new(user, pass)
    }
}

/// One user's stored credential: a random salt and `BLAKE2b-256(label, salt, password)`.
struct Credential {
    salt: [u8; SALT_LEN],
    hash: [u8; HASH_LEN],
}

fn hash_password(salt: &[u8; SALT_LEN], password: &str) -> [u8; HASH_LEN] {
    Transcript::digest(PASSWORD_LABEL, &[salt, password.as_bytes()])
}

/// The table of known users `check` validates against: salted hashes, no plaintext.
///
/// A fast hash is enough for this demo's in-memory table; a real deployment would store a slow
/// password hash (Argon2id, `dryoc::pwhash`) so that a stolen table resists guessing.
pub(crate) struct UserTable {
    users: HashMap<String, Credential>,
    /// Compared against for unknown users, so that they take as long as known ones.
    decoy: Credential,
}

impl UserTable {
    /// Builds the table from `(user, password)` pairs (at most [`MAX_USERS`]; more are
    /// ignored), drawing each salt from `rng`.
    pub(crate) fn new<'a>(
        logins: impl IntoIterator<Item = &'a Login>,
        rng: &mut fastrand::Rng,
    ) -> Self {
        let mut salt = || {
            let mut s = [0u8; SALT_LEN];
            rng.fill(&mut s);
            s
        };
        let mut users = HashMap::new();
        for l in logins.into_iter().take(MAX_USERS) {
            let s = salt();
            users.insert(
                l.user.clone(),
                Credential {
                    salt: s,
                    hash: hash_password(&s, &l.password),
                },
            );
        }
        let s = salt();
        let decoy = Credential {
            salt: s,
            hash: hash_password(&s, "no user has this password: it is longer than allowed"),
        };
        Self { users, decoy }
    }

    /// Number of users.
    pub(crate) fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether `login` names a known user with the right password (compared in constant time).
    pub(crate) fn validate(&self, login: &Login) -> bool {
        let (known, cred) = match self.users.get(&login.user) {
            Some(c) => (true, c),
            None => (false, &self.decoy),
        };
        let h = hash_password(&cred.salt, &login.password);
        let same: bool = h.ct_eq(&cred.hash).into();
        known & same
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use proptest::prelude::*;

    fn table() -> UserTable {
        let users = [
            Login::new("alice", "wonderland").unwrap(),
            Login::new("bob", "builder").unwrap(),
        ];
        UserTable::new(&users, &mut fastrand::Rng::with_seed(1))
    }

    #[test]
    fn validates_known_pairs_only() {
        let t = table();
        assert_eq!(t.len(), 2);
        assert!(t.validate(&Login::new("alice", "wonderland").unwrap()));
        assert!(t.validate(&Login::new("bob", "builder").unwrap()));
        assert!(!t.validate(&Login::new("alice", "builder").unwrap()));
        assert!(!t.validate(&Login::new("carol", "wonderland").unwrap()));
        assert!(!t.validate(&Login::new("bob", "").unwrap()));
    }

    #[test]
    fn stores_no_plaintext_and_salts_each_user() {
        let users = [
            Login::new("a", "same").unwrap(),
            Login::new("b", "same").unwrap(),
        ];
        let t = UserTable::new(&users, &mut fastrand::Rng::with_seed(2));
        let (a, b) = (&t.users["a"], &t.users["b"]);
        assert_ne!(a.salt, b.salt);
        assert_ne!(
            a.hash, b.hash,
            "same password, different salts, different hashes"
        );
        assert_ne!(&a.hash[..4], b"same");
    }

    #[test]
    fn limits_are_enforced() {
        assert!(Login::new("", "x").is_none());
        assert!(Login::new(&"u".repeat(MAX_USERNAME + 1), "x").is_none());
        assert!(Login::new("u", &"p".repeat(MAX_PASSWORD + 1)).is_none());
        assert!(Login::new(&"u".repeat(MAX_USERNAME), &"p".repeat(MAX_PASSWORD)).is_some());
    }

    #[test]
    fn wire_layout_is_as_documented() {
        let l = Login::new("al", "pw!").unwrap();
        assert_eq!(l.encode(), b"\x02al\x03pw!");
        assert!(Login::decode(b"\x02al\x03pw!x").is_none(), "trailing byte");
        assert!(Login::decode(b"\x02al\x04pw!").is_none(), "short password");
        assert!(Login::decode(b"\x00\x00").is_none(), "empty user");
        assert!(Login::decode(b"").is_none());
    }

    #[test]
    fn debug_redacts_the_password() {
        let l = Login::new("alice", "s3cret").unwrap();
        let d = format!("{l:?}");
        assert!(d.contains("alice") && !d.contains("s3cret"), "{d}");
    }

    proptest! {
        #[test]
        fn round_trips(user in "[a-z0-9é]{1,16}", pass in "[ -~]{0,40}") {
            let l = Login::new(&user, &pass).unwrap();
            prop_assert_eq!(Login::decode(&l.encode()), Some(l));
        }

        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(l) = Login::decode(&bytes) {
                prop_assert_eq!(l.encode(), bytes);
            }
        }
    }
}
