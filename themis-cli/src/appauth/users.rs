//! AppAuth's data (paper §7): the login message the client sends to `handler`, the `check`
//! back-end's table of known users (salted hashes only) and the credential record it answers,
//! and the seeded users and login mix that the demo and the bench play.

use std::collections::HashMap;

use subtle::ConstantTimeEq;
use themis_crypto::{HASH_LEN, Transcript};
use zeroize::Zeroizing;

/// Longest username, in bytes.
pub const MAX_USERNAME: usize = 64;
/// Longest password, in bytes.
pub const MAX_PASSWORD: usize = 64;
/// Most users a table holds.
pub const MAX_USERS: usize = 4096;
/// Domain-separation label of the password hash.
const PASSWORD_LABEL: &str = "themis/demo/password";
/// Length of each user's random salt.
const SALT_LEN: usize = 16;
/// Length of `check`'s answer: the salt, then the salted hash.
pub const RECORD_LEN: usize = SALT_LEN + HASH_LEN;
/// Share of the login mix, in percent, that is valid; the rest is split evenly between wrong
/// passwords and unknown users.
const VALID_PERCENT: u32 = 70;
/// Share of the login mix, in percent, that carries a known user's wrong password.
const WRONG_PASSWORD_PERCENT: u32 = 15;

/// A login attempt: a username and a password. The password is wiped on drop and never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
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
    pub fn new(user: &str, password: &str) -> Option<Self> {
        if user.is_empty() || user.len() > MAX_USERNAME || password.len() > MAX_PASSWORD {
            return None;
        }
        Some(Self {
            user: user.to_owned(),
            password: Zeroizing::new(password.to_owned()),
        })
    }

    /// The username.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Wire form: `u8 len(user) ‖ user ‖ u8 len(password) ‖ password`, both UTF-8.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.user.len() + self.password.len());
        // Both lengths are at most 64 (checked in `new`), so they fit a byte.
        out.push(self.user.len() as u8);
        out.extend_from_slice(self.user.as_bytes());
        out.push(self.password.len() as u8);
        out.extend_from_slice(self.password.as_bytes());
        out
    }

    /// Parses the wire form; `None` if it is malformed, over a limit, or has trailing bytes.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
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

impl Credential {
    /// The record `check` answers: the salt, then the hash.
    fn record(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        let (salt, hash) = out.split_at_mut(SALT_LEN);
        salt.copy_from_slice(&self.salt);
        hash.copy_from_slice(&self.hash);
        out
    }
}

fn hash_password(salt: &[u8], password: &str) -> [u8; HASH_LEN] {
    Transcript::digest(PASSWORD_LABEL, &[salt, password.as_bytes()])
}

/// Whether `record` (as `check` answers it) holds the salted hash of `login`'s password,
/// compared in constant time; `false` for a record of the wrong length.
pub(super) fn record_matches(record: &[u8], login: &Login) -> bool {
    if record.len() != RECORD_LEN {
        return false;
    }
    let (salt, hash) = record.split_at(SALT_LEN);
    hash_password(salt, &login.password).ct_eq(hash).into()
}

/// The table of known users `check` answers from: salted hashes, no plaintext.
///
/// A fast hash is enough for this demo's in-memory table; a real deployment would store a slow
/// password hash (Argon2id, `dryoc::pwhash`) so that a stolen table resists guessing.
pub struct UserTable {
    users: HashMap<String, Credential>,
    /// Answered for unknown users, so that they cost `handler` as much as known ones: a random
    /// hash, which no password is known to produce.
    decoy: Credential,
}

impl UserTable {
    /// Builds the table from `(user, password)` pairs (at most [`MAX_USERS`]; more are
    /// ignored), drawing each salt from `rng`.
    pub fn new<'a>(logins: impl IntoIterator<Item = &'a Login>, rng: &mut fastrand::Rng) -> Self {
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
        let mut decoy = Credential {
            salt: salt(),
            hash: [0; HASH_LEN],
        };
        rng.fill(&mut decoy.hash);
        Self { users, decoy }
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the table holds no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// `check`'s answer for the user named by `user` (UTF-8, 1..=[`MAX_USERNAME`] bytes): the
    /// user's credential record, or the decoy's for an unknown user.
    pub fn record(&self, user: &[u8]) -> Result<[u8; RECORD_LEN], String> {
        let name = std::str::from_utf8(user)
            .ok()
            .filter(|u| !u.is_empty() && u.len() <= MAX_USERNAME)
            .ok_or("malformed user name: expected 1 to 64 bytes of UTF-8")?;
        Ok(self.users.get(name).unwrap_or(&self.decoy).record())
    }

    /// Whether `login` names a known user with the right password (compared in constant time).
    pub fn validate(&self, login: &Login) -> bool {
        self.record(login.user.as_bytes())
            .is_ok_and(|r| record_matches(&r, login))
    }
}

/// `count` users (at most [`MAX_USERS`]) named `user0000`, `user0001`, ... with random
/// 12-character passwords drawn from `rng` (in plaintext: the client plays them).
pub fn users(rng: &mut fastrand::Rng, count: usize) -> Vec<Login> {
    (0..count.min(MAX_USERS))
        .filter_map(|i| {
            let pw: String = std::iter::repeat_with(|| rng.alphanumeric())
                .take(12)
                .collect();
            Login::new(&format!("user{i:04}"), &pw)
        })
        .collect()
}

/// A login the client sends and whether the table must accept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The login.
    pub login: Login,
    /// Whether it names a known user with the right password.
    pub valid: bool,
}

/// Login `i` of the mix, drawn from `rng`: 70 % a known user with the right password, 15 % a
/// known user with a wrong one, 15 % an unknown user. `None` only when `users` is empty.
pub fn attempt(rng: &mut fastrand::Rng, users: &[Login], i: u64) -> Option<Attempt> {
    let u = users.get(rng.usize(..users.len().max(1)))?;
    let roll = rng.u32(0..100);
    let (login, valid) = if roll < VALID_PERCENT {
        (Some(u.clone()), true)
    } else if roll < VALID_PERCENT + WRONG_PASSWORD_PERCENT {
        (Login::new(u.user(), &format!("{}?", rng.u32(..))), false)
    } else {
        (Login::new(&format!("mallory{i}"), "letmein"), false)
    };
    login.map(|login| Attempt { login, valid })
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

    #[test]
    fn the_record_is_the_salt_then_the_hash() {
        let t = table();
        let r = t.record(b"alice").unwrap();
        let alice = &t.users["alice"];
        assert_eq!(&r[..SALT_LEN], &alice.salt);
        assert_eq!(&r[SALT_LEN..], &alice.hash);
        assert!(record_matches(
            &r,
            &Login::new("alice", "wonderland").unwrap()
        ));
        assert!(!record_matches(
            &r[1..],
            &Login::new("alice", "wonderland").unwrap()
        ));
        assert!(t.record(b"").is_err());
        assert!(t.record(&[b'u'; MAX_USERNAME + 1]).is_err());
        // An unknown user's record is the decoy's, the same whoever asks.
        assert_eq!(t.record(b"carol").unwrap(), t.record(b"dave").unwrap());
    }

    #[test]
    fn the_mix_is_seeded_and_mostly_valid() {
        let mut rng = fastrand::Rng::with_seed(5);
        let users = users(&mut rng, 64);
        assert_eq!(users.len(), 64);
        let batch = |rng: &mut fastrand::Rng, users: &[Login]| -> Vec<Attempt> {
            (0..2000).filter_map(|i| attempt(rng, users, i)).collect()
        };
        let a = batch(&mut rng, &users);
        assert_eq!(a.len(), 2000);
        let valid = a.iter().filter(|x| x.valid).count();
        assert!((1300..1500).contains(&valid), "{valid}");
        let t = UserTable::new(&users, &mut rng);
        assert!(a.iter().all(|x| t.validate(&x.login) == x.valid));
        let mut again = fastrand::Rng::with_seed(5);
        let users2 = super::users(&mut again, 64);
        assert_eq!(batch(&mut again, &users2), a);
        assert_eq!(attempt(&mut again, &[], 0), None);
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
