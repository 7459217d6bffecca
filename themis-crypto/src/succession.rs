//! Key succession statements: key rotation without a certificate authority (PROTOCOL.md §2.9).
//!
//! The old key signs "my successor is this new key, on this network, until this time", and the
//! new key signs the same digest (proof of possession). A verifier accepts the holder of the
//! new key (proved by a handshake) in the place of the old id until the grace period ends.
//!
//! ```text
//! 01 ‖ n ‖ net_id (n) ‖ old_pk (32) ‖ new_pk (32) ‖ u64be issued_ms ‖ u64be grace_end_ms
//!    ‖ sig_old (64) ‖ sig_new (64)
//! D = H("themis/v1/key-succession"; net_id, old_pk, new_pk, u64be issued, u64be grace_end)
//! ```

use std::fs;
use std::io::{ErrorKind, Read};
use std::path::Path;

use crate::atomic_file::{self, WriteError};
use crate::error::SuccessionProblem;
use crate::hash::Transcript;
use crate::identity::{PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::{Error, IdentityKeypair, MAX_NETWORK_ID_LEN, NetworkId, NodeId, PublicKey, Signature};

/// Domain-separation label of the succession digest.
pub const SUCCESSION_LABEL: &str = "themis/v1/key-succession";
/// The format byte this build writes and reads.
pub const SUCCESSION_FORMAT: u8 = 0x01;
/// Longest grace period a statement may give: 90 days, in milliseconds.
pub const MAX_GRACE_MS: u64 = 90 * 24 * 3600 * 1000;
/// Size of a statement without its network id.
const FIXED_LEN: usize = 1 + 1 + 2 * PUBLIC_KEY_LEN + 8 + 8 + 2 * SIGNATURE_LEN;
/// Shortest statement (a 1-byte network id).
pub const MIN_SUCCESSION_LEN: usize = FIXED_LEN + 1;
/// Longest statement (a 64-byte network id).
pub const MAX_SUCCESSION_LEN: usize = FIXED_LEN + MAX_NETWORK_ID_LEN;
/// First line of a statement file.
pub const SUCCESSION_FILE_HEADER: &str = "themis-succession v1";
/// Statement files larger than this are refused unread.
const MAX_FILE_LEN: u64 = 4096;

/// A verified key succession statement (PROTOCOL.md §2.9): both signatures checked, for one
/// network. Whether it is in force at a given time is [`Succession::check_in_force`].
#[derive(Clone, PartialEq, Eq)]
pub struct Succession {
    network: NetworkId,
    old: PublicKey,
    new: PublicKey,
    issued_ms: u64,
    grace_end_ms: u64,
    sig_old: Signature,
    sig_new: Signature,
}

impl std::fmt::Debug for Succession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Succession")
            .field("network", &self.network.as_str())
            .field("old", &self.old_id().short())
            .field("new", &self.new_id().short())
            .field("issued_ms", &self.issued_ms)
            .field("grace_end_ms", &self.grace_end_ms)
            .finish_non_exhaustive()
    }
}

fn problem(p: SuccessionProblem) -> Error {
    Error::Succession {
        path: None,
        problem: p,
    }
}

fn digest(
    network: &NetworkId,
    old: &PublicKey,
    new: &PublicKey,
    issued: u64,
    end: u64,
) -> [u8; 32] {
    Transcript::digest(
        SUCCESSION_LABEL,
        &[
            network.as_bytes(),
            old.as_bytes(),
            new.as_bytes(),
            &issued.to_be_bytes(),
            &end.to_be_bytes(),
        ],
    )
}

fn check_grace(issued_ms: u64, grace_end_ms: u64) -> Result<(), Error> {
    if issued_ms >= grace_end_ms || grace_end_ms - issued_ms > MAX_GRACE_MS {
        return Err(problem(SuccessionProblem::BadGrace {
            issued_ms,
            grace_end_ms,
        }));
    }
    Ok(())
}

impl Succession {
    /// Signs a statement naming `new` the successor of `old` on `network` from `issued_ms` until
    /// `grace_end_ms` (Unix milliseconds). Refuses the same key twice and a grace period that is
    /// empty or longer than [`MAX_GRACE_MS`].
    pub fn sign(
        old: &IdentityKeypair,
        new: &IdentityKeypair,
        network: &NetworkId,
        issued_ms: u64,
        grace_end_ms: u64,
    ) -> Result<Self, Error> {
        if old.public() == new.public() {
            return Err(problem(SuccessionProblem::SameKey));
        }
        check_grace(issued_ms, grace_end_ms)?;
        let d = digest(
            network,
            &old.public(),
            &new.public(),
            issued_ms,
            grace_end_ms,
        );
        Ok(Self {
            network: network.clone(),
            old: old.public(),
            new: new.public(),
            issued_ms,
            grace_end_ms,
            sig_old: old.sign(&d),
            sig_new: new.sign(&d),
        })
    }

    /// Decodes and verifies a statement for `network`, every check of PROTOCOL.md §2.9 in its
    /// order. Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8], network: &NetworkId) -> Result<Self, Error> {
        let len = bytes.len();
        if len < MIN_SUCCESSION_LEN {
            return Err(problem(SuccessionProblem::TooShort { len }));
        }
        if len > MAX_SUCCESSION_LEN {
            return Err(problem(SuccessionProblem::TooLong { len }));
        }
        let (&format, rest) = bytes
            .split_first()
            .ok_or(problem(SuccessionProblem::TooShort { len }))?;
        if format != SUCCESSION_FORMAT {
            return Err(problem(SuccessionProblem::UnsupportedFormat {
                found: format,
            }));
        }
        let (&n, rest) = rest
            .split_first()
            .ok_or(problem(SuccessionProblem::TooShort { len }))?;
        let n = usize::from(n);
        if n == 0 || n > MAX_NETWORK_ID_LEN || len != FIXED_LEN + n {
            return Err(problem(SuccessionProblem::BadLength { len, net_len: n }));
        }
        let bad_length = || problem(SuccessionProblem::BadLength { len, net_len: n });
        let (net, rest) = rest.split_at_checked(n).ok_or_else(bad_length)?;
        let found =
            NetworkId::from_bytes(net).map_err(|_| problem(SuccessionProblem::BadNetworkId))?;
        // Names are compared: a closed network's statements carry its name (PROTOCOL.md §2.10).
        if found.as_bytes() != network.as_bytes() {
            return Err(problem(SuccessionProblem::WrongNetwork {
                found: found.as_str().to_owned(),
                expected: network.as_str().to_owned(),
            }));
        }
        let (old, rest) = rest
            .split_first_chunk::<PUBLIC_KEY_LEN>()
            .ok_or_else(bad_length)?;
        let (new, rest) = rest
            .split_first_chunk::<PUBLIC_KEY_LEN>()
            .ok_or_else(bad_length)?;
        let (issued, rest) = rest.split_first_chunk::<8>().ok_or_else(bad_length)?;
        let (end, rest) = rest.split_first_chunk::<8>().ok_or_else(bad_length)?;
        let (sig_old, rest) = rest
            .split_first_chunk::<SIGNATURE_LEN>()
            .ok_or_else(bad_length)?;
        let (sig_new, rest) = rest
            .split_first_chunk::<SIGNATURE_LEN>()
            .ok_or_else(bad_length)?;
        if !rest.is_empty() {
            return Err(bad_length());
        }
        let (old, new) = (PublicKey::from_bytes(*old), PublicKey::from_bytes(*new));
        if old == new {
            return Err(problem(SuccessionProblem::SameKey));
        }
        let (issued_ms, grace_end_ms) = (u64::from_be_bytes(*issued), u64::from_be_bytes(*end));
        check_grace(issued_ms, grace_end_ms)?;
        let s = Self {
            network: network.clone(),
            old,
            new,
            issued_ms,
            grace_end_ms,
            sig_old: Signature::from_bytes(*sig_old),
            sig_new: Signature::from_bytes(*sig_new),
        };
        let d = s.digest();
        s.old
            .verify(&d, &s.sig_old)
            .and_then(|()| s.new.verify(&d, &s.sig_new))
            .map_err(|_| problem(SuccessionProblem::BadSignature))?;
        Ok(s)
    }

    /// The encoding of PROTOCOL.md §2.9 (211–274 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let net = self.network.as_bytes();
        let mut out = Vec::with_capacity(FIXED_LEN + net.len());
        out.push(SUCCESSION_FORMAT);
        out.push(u8::try_from(net.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(net);
        out.extend_from_slice(self.old.as_bytes());
        out.extend_from_slice(self.new.as_bytes());
        out.extend_from_slice(&self.issued_ms.to_be_bytes());
        out.extend_from_slice(&self.grace_end_ms.to_be_bytes());
        out.extend_from_slice(self.sig_old.as_bytes());
        out.extend_from_slice(self.sig_new.as_bytes());
        out
    }

    /// The signed digest `D`.
    pub fn digest(&self) -> [u8; 32] {
        digest(
            &self.network,
            &self.old,
            &self.new,
            self.issued_ms,
            self.grace_end_ms,
        )
    }

    /// `Ok` if the statement is in force at `now_ms` (Unix milliseconds): issued no later than
    /// `now_ms + max_skew_ms`, and `now_ms` before the end of the grace period.
    pub fn check_in_force(&self, now_ms: u64, max_skew_ms: u64) -> Result<(), Error> {
        if self.issued_ms > now_ms.saturating_add(max_skew_ms) {
            return Err(problem(SuccessionProblem::NotYetValid {
                issued_ms: self.issued_ms,
                now_ms,
            }));
        }
        if now_ms >= self.grace_end_ms {
            return Err(problem(SuccessionProblem::Expired {
                grace_end_ms: self.grace_end_ms,
                now_ms,
            }));
        }
        Ok(())
    }

    /// `Ok` if the statement names `key` as the successor (a node presents only a statement of
    /// its own key), else [`SuccessionProblem::NotThisKey`].
    pub fn check_successor_key(&self, key: &PublicKey) -> Result<(), Error> {
        if &self.new != key {
            return Err(problem(SuccessionProblem::NotThisKey {
                named: self.new.to_string(),
                actual: key.to_string(),
            }));
        }
        Ok(())
    }

    /// The network the statement is for.
    pub fn network(&self) -> &NetworkId {
        &self.network
    }

    /// The retired key.
    pub fn old_key(&self) -> PublicKey {
        self.old
    }

    /// The successor key.
    pub fn new_key(&self) -> PublicKey {
        self.new
    }

    /// The retired key's node id on the statement's network.
    pub fn old_id(&self) -> NodeId {
        self.old.node_id(&self.network)
    }

    /// The successor key's node id on the statement's network.
    pub fn new_id(&self) -> NodeId {
        self.new.node_id(&self.network)
    }

    /// When the statement was signed (Unix milliseconds).
    pub fn issued_ms(&self) -> u64 {
        self.issued_ms
    }

    /// When the grace period ends (Unix milliseconds, exclusive).
    pub fn grace_end_ms(&self) -> u64 {
        self.grace_end_ms
    }

    /// Writes the statement file (PROTOCOL.md §2.9) atomically, mode 0644 (a statement is not
    /// secret). Without `overwrite`, an existing file is left alone.
    pub fn write_to_file(&self, path: &Path, overwrite: bool) -> Result<(), Error> {
        let at = |p: SuccessionProblem| Error::Succession {
            path: Some(path.to_owned()),
            problem: p,
        };
        let body = format!(
            "{SUCCESSION_FILE_HEADER}\n# network {}\n# old node id {}\n# new node id {}\n# issued at unix ms {}; the old id's grace period ends at unix ms {}\nstatement {}\n",
            self.network.as_str(),
            self.old_id(),
            self.new_id(),
            self.issued_ms,
            self.grace_end_ms,
            hex::encode(self.encode()),
        );
        atomic_file::write(path, body.as_bytes(), 0o644, overwrite, "succession").map_err(|e| {
            match e {
                WriteError::AlreadyExists => at(SuccessionProblem::AlreadyExists),
                WriteError::Io(e) => at(SuccessionProblem::Io(e)),
            }
        })
    }

    /// Reads and verifies a statement file for `network` (PROTOCOL.md §2.9). Every error names
    /// the file. Whether the statement is in force is the caller's check.
    pub fn read_from_file(path: &Path, network: &NetworkId) -> Result<Self, Error> {
        let at = |p: SuccessionProblem| Error::Succession {
            path: Some(path.to_owned()),
            problem: p,
        };
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(at(SuccessionProblem::Missing));
            }
            Err(e) => return Err(at(SuccessionProblem::Io(e))),
        };
        let mut raw = Vec::new();
        file.take(MAX_FILE_LEN + 1)
            .read_to_end(&mut raw)
            .map_err(|e| at(SuccessionProblem::Io(e)))?;
        if raw.len() as u64 > MAX_FILE_LEN {
            return Err(at(SuccessionProblem::FileTooLarge { max: MAX_FILE_LEN }));
        }
        let text =
            std::str::from_utf8(&raw).map_err(|_| at(SuccessionProblem::NotAStatementFile))?;
        let bytes = parse_file(text).map_err(at)?;
        Self::decode(&bytes, network).map_err(|e| match e {
            Error::Succession { problem, .. } => at(problem),
            other => other,
        })
    }
}

/// The statement bytes of a statement file's text.
fn parse_file(text: &str) -> Result<Vec<u8>, SuccessionProblem> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let (_, header) = lines.next().ok_or(SuccessionProblem::NotAStatementFile)?;
    if header != SUCCESSION_FILE_HEADER {
        return match header.strip_prefix("themis-succession ") {
            Some(v) => Err(SuccessionProblem::UnsupportedVersion {
                found: v.chars().take(16).collect(),
            }),
            None => Err(SuccessionProblem::NotAStatementFile),
        };
    }
    let (line, content) = lines.next().ok_or(SuccessionProblem::Corrupt {
        line: 2,
        reason: "the `statement` line is missing".to_owned(),
    })?;
    let hex_text = content
        .strip_prefix("statement ")
        .ok_or(SuccessionProblem::Corrupt {
            line,
            reason: "expected `statement <hex digits>`".to_owned(),
        })?;
    let bytes = hex::decode(hex_text.trim()).map_err(|_| SuccessionProblem::Corrupt {
        line,
        reason: "the statement is not hex digits".to_owned(),
    })?;
    if let Some((line, _)) = lines.next() {
        return Err(SuccessionProblem::Corrupt {
            line,
            reason: "unexpected content after the statement".to_owned(),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn net(s: &str) -> NetworkId {
        NetworkId::new(s).unwrap()
    }

    fn pair() -> (IdentityKeypair, IdentityKeypair) {
        (
            IdentityKeypair::from_seed(&[1; 32]),
            IdentityKeypair::from_seed(&[2; 32]),
        )
    }

    fn problem_of(e: Error) -> SuccessionProblem {
        match e {
            Error::Succession { problem, .. } => problem,
            other => panic!("not a succession error: {other}"),
        }
    }

    #[test]
    fn sign_decode_and_time_rules() {
        let (old, new) = pair();
        let n = net("twiitr");
        let s = Succession::sign(&old, &new, &n, 1_000, 2_000).unwrap();
        let b = s.encode();
        assert_eq!(b.len(), FIXED_LEN + 6);
        let d = Succession::decode(&b, &n).unwrap();
        assert_eq!(d, s);
        assert_eq!(d.old_id(), old.node_id(&n));
        assert_eq!(d.new_id(), new.node_id(&n));
        assert!(d.check_in_force(1_000, 0).is_ok());
        assert!(d.check_in_force(1_999, 0).is_ok());
        assert!(matches!(
            problem_of(d.check_in_force(2_000, 0).unwrap_err()),
            SuccessionProblem::Expired { .. }
        ));
        assert!(matches!(
            problem_of(d.check_in_force(900, 0).unwrap_err()),
            SuccessionProblem::NotYetValid { .. }
        ));
        assert!(d.check_in_force(900, 100).is_ok());
    }

    #[test]
    fn each_rule_has_its_refusal() {
        let (old, new) = pair();
        let n = net("twiitr");
        let p = |r: Result<Succession, Error>| problem_of(r.unwrap_err());
        assert!(matches!(
            p(Succession::sign(&old, &old, &n, 1, 2)),
            SuccessionProblem::SameKey
        ));
        assert!(matches!(
            p(Succession::sign(&old, &new, &n, 2, 2)),
            SuccessionProblem::BadGrace { .. }
        ));
        assert!(matches!(
            p(Succession::sign(&old, &new, &n, 0, MAX_GRACE_MS + 1)),
            SuccessionProblem::BadGrace { .. }
        ));
        assert!(Succession::sign(&old, &new, &n, 0, MAX_GRACE_MS).is_ok());
        let good = Succession::sign(&old, &new, &n, 1, 2).unwrap().encode();
        assert!(matches!(
            p(Succession::decode(&good, &net("other"))),
            SuccessionProblem::WrongNetwork { .. }
        ));
        assert!(matches!(
            p(Succession::decode(&good[..good.len() - 1], &n)),
            SuccessionProblem::BadLength { .. }
        ));
        assert!(matches!(
            p(Succession::decode(&good[..10], &n)),
            SuccessionProblem::TooShort { .. }
        ));
        assert!(matches!(
            p(Succession::decode(&[0u8; MAX_SUCCESSION_LEN + 1], &n)),
            SuccessionProblem::TooLong { .. }
        ));
        let mut v2 = good.clone();
        v2[0] = 2;
        assert!(matches!(
            p(Succession::decode(&v2, &n)),
            SuccessionProblem::UnsupportedFormat { found: 2 }
        ));
        let mut forged = good.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(matches!(
            p(Succession::decode(&forged, &n)),
            SuccessionProblem::BadSignature
        ));
        // Swapping the keys (and the signatures) does not make a statement the other way round.
        let mut swapped = good.clone();
        let (o, k) = (8, 8 + 32);
        let old_pk: Vec<u8> = swapped[o..o + 32].to_vec();
        let new_pk: Vec<u8> = swapped[k..k + 32].to_vec();
        swapped[o..o + 32].copy_from_slice(&new_pk);
        swapped[k..k + 32].copy_from_slice(&old_pk);
        let s = k + 32 + 16;
        let (so, sn) = (
            swapped[s..s + 64].to_vec(),
            swapped[s + 64..s + 128].to_vec(),
        );
        swapped[s..s + 64].copy_from_slice(&sn);
        swapped[s + 64..s + 128].copy_from_slice(&so);
        assert!(matches!(
            p(Succession::decode(&swapped, &n)),
            SuccessionProblem::BadSignature
        ));
    }

    #[test]
    fn statement_file_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.key.succession");
        let (old, new) = pair();
        let n = net("twiitr");
        let s = Succession::sign(&old, &new, &n, 1, 2).unwrap();
        s.write_to_file(&path, false).unwrap();
        assert_eq!(Succession::read_from_file(&path, &n).unwrap(), s);
        let e = s.write_to_file(&path, false).unwrap_err().to_string();
        assert!(
            e.contains("already exists") && e.contains("new.key.succession"),
            "{e}"
        );
        let e = Succession::read_from_file(&path, &net("other"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("'other'") && e.contains("'twiitr'"), "{e}");
        let e = Succession::read_from_file(&dir.path().join("nope"), &n)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert!(matches!(
            parse_file("themis-succession v2\n"),
            Err(SuccessionProblem::UnsupportedVersion { .. })
        ));
        assert!(matches!(
            parse_file("themis-identity v1\n"),
            Err(SuccessionProblem::NotAStatementFile)
        ));
        assert!(matches!(
            parse_file("themis-succession v1\nstatement zz\n"),
            Err(SuccessionProblem::Corrupt { line: 2, .. })
        ));
        assert!(matches!(
            parse_file("themis-succession v1\nstatement 00\nmore\n"),
            Err(SuccessionProblem::Corrupt { line: 3, .. })
        ));
    }
}
