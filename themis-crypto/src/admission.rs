//! Admission certificates of closed networks (PROTOCOL.md §2.10, beyond the paper).
//!
//! A closed network has an admission key. Its holder issues each admitted node a certificate
//! for that node's id; nodes present it in the handshake, and a peer without one is refused.
//!
//! ```text
//! AK (32) ‖ subject node id (32) ‖ u64be not_after_ms ‖ sig (64)           136 bytes
//! D = H("themis/v1/admission-cert"; net_id, AK, subject, u64be not_after_ms)
//! ```

use std::fs;
use std::io::{ErrorKind, Read};
use std::path::Path;

use crate::atomic_file::{self, WriteError};
use crate::error::AdmissionProblem;
use crate::hash::Transcript;
use crate::identity::{NODE_ID_LEN, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::{Error, IdentityKeypair, NetworkId, NodeId, PublicKey, Signature};

/// Domain-separation label of the certificate digest.
pub const ADMISSION_CERT_LABEL: &str = "themis/v1/admission-cert";
/// Length of an encoded certificate.
pub const ADMISSION_CERT_LEN: usize = PUBLIC_KEY_LEN + NODE_ID_LEN + 8 + SIGNATURE_LEN;
/// First line of a certificate file.
pub const ADMISSION_CERT_FILE_HEADER: &str = "themis-admission-cert v1";
/// Certificate files larger than this are refused unread.
const MAX_FILE_LEN: u64 = 4096;

/// An admission certificate (PROTOCOL.md §2.10): the admission key `AK` states that node
/// `subject` may join its closed network until `not_after_ms` (Unix milliseconds, exclusive).
///
/// [`AdmissionCert::decode`] checks the structure only; [`AdmissionCert::verify`] makes every
/// check a node makes before admitting a peer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AdmissionCert {
    admission_key: PublicKey,
    subject: NodeId,
    not_after_ms: u64,
    signature: Signature,
}

impl std::fmt::Debug for AdmissionCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionCert")
            .field("admission_key", &self.admission_key)
            .field("subject", &self.subject)
            .field("not_after_ms", &self.not_after_ms)
            .finish_non_exhaustive()
    }
}

impl AdmissionCert {
    /// Issues a certificate for `subject` on the closed network `network`, signed by
    /// `admission` (whose public key must be the network's admission key, else
    /// [`AdmissionProblem::WrongAdmissionKey`]).
    pub fn issue(
        admission: &IdentityKeypair,
        network: &NetworkId,
        subject: NodeId,
        not_after_ms: u64,
    ) -> Result<Self, Error> {
        if network.admission_key() != Some(&admission.public()) {
            return Err(Error::Admission {
                path: None,
                problem: AdmissionProblem::WrongAdmissionKey,
            });
        }
        let d = digest(network, &admission.public(), &subject, not_after_ms);
        Ok(Self {
            admission_key: admission.public(),
            subject,
            not_after_ms,
            signature: admission.sign(&d),
        })
    }

    /// Parses the 136-byte encoding. Only the length is checked here.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let bad = || Error::Admission {
            path: None,
            problem: AdmissionProblem::BadLength { len: bytes.len() },
        };
        let (ak, rest) = bytes
            .split_first_chunk::<PUBLIC_KEY_LEN>()
            .ok_or_else(bad)?;
        let (subject, rest) = rest.split_first_chunk::<NODE_ID_LEN>().ok_or_else(bad)?;
        let (not_after, rest) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
        let (sig, rest) = rest.split_first_chunk::<SIGNATURE_LEN>().ok_or_else(bad)?;
        if !rest.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            admission_key: PublicKey::from_bytes(*ak),
            subject: NodeId::from_bytes(*subject),
            not_after_ms: u64::from_be_bytes(*not_after),
            signature: Signature::from_bytes(*sig),
        })
    }

    /// The 136-byte encoding.
    pub fn encode(&self) -> [u8; ADMISSION_CERT_LEN] {
        let mut out = [0u8; ADMISSION_CERT_LEN];
        let parts: [&[u8]; 4] = [
            self.admission_key.as_bytes(),
            self.subject.as_bytes(),
            &self.not_after_ms.to_be_bytes(),
            self.signature.as_bytes(),
        ];
        let mut off = 0;
        for p in parts {
            if let Some(dst) = out.get_mut(off..off + p.len()) {
                dst.copy_from_slice(p);
            }
            off += p.len();
        }
        out
    }

    /// The admission key that signed it.
    pub fn admission_key(&self) -> &PublicKey {
        &self.admission_key
    }

    /// The node id it admits.
    pub fn subject(&self) -> NodeId {
        self.subject
    }

    /// End of validity (Unix milliseconds, exclusive).
    pub fn not_after_ms(&self) -> u64 {
        self.not_after_ms
    }

    /// Every check of PROTOCOL.md §2.10, in order: `network` is closed under the certificate's
    /// key ([`AdmissionProblem::WrongAdmissionKey`]), the subject is `subject`
    /// ([`AdmissionProblem::WrongSubject`]), `now_ms < not_after_ms`
    /// ([`AdmissionProblem::Expired`]), the signature verifies
    /// ([`AdmissionProblem::BadSignature`]).
    pub fn verify(
        &self,
        network: &NetworkId,
        subject: &NodeId,
        now_ms: u64,
    ) -> Result<(), AdmissionProblem> {
        if network.admission_key() != Some(&self.admission_key) {
            return Err(AdmissionProblem::WrongAdmissionKey);
        }
        if &self.subject != subject {
            return Err(AdmissionProblem::WrongSubject {
                found: self.subject,
            });
        }
        if now_ms >= self.not_after_ms {
            return Err(AdmissionProblem::Expired {
                not_after_ms: self.not_after_ms,
                now_ms,
            });
        }
        let d = digest(
            network,
            &self.admission_key,
            &self.subject,
            self.not_after_ms,
        );
        self.admission_key
            .verify(&d, &self.signature)
            .map_err(|_| AdmissionProblem::BadSignature)
    }

    /// Writes the certificate file (PROTOCOL.md §2.10) atomically, mode 0644 (a certificate is
    /// not secret). Without `overwrite`, an existing file is left alone.
    pub fn write_to_file(
        &self,
        path: &Path,
        network: &NetworkId,
        overwrite: bool,
    ) -> Result<(), Error> {
        let at = |p: AdmissionProblem| Error::Admission {
            path: Some(path.to_owned()),
            problem: p,
        };
        let body = format!(
            "{ADMISSION_CERT_FILE_HEADER}\n# network {}\n# admission key {}\n# node id {}\n# valid until unix ms {}\ncert {}\n",
            network.as_str(),
            self.admission_key,
            self.subject,
            self.not_after_ms,
            hex::encode(self.encode()),
        );
        atomic_file::write(path, body.as_bytes(), 0o644, overwrite, "admission-cert").map_err(|e| {
            match e {
                WriteError::AlreadyExists => at(AdmissionProblem::AlreadyExists),
                WriteError::Io(e) => at(AdmissionProblem::Io(e)),
            }
        })
    }

    /// Reads a certificate file (PROTOCOL.md §2.10); checks its structure only (the caller
    /// verifies it with [`AdmissionCert::verify`]). Every error names the file.
    pub fn read_from_file(path: &Path) -> Result<Self, Error> {
        let at = |p: AdmissionProblem| Error::Admission {
            path: Some(path.to_owned()),
            problem: p,
        };
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(at(AdmissionProblem::Missing)),
            Err(e) => return Err(at(AdmissionProblem::Io(e))),
        };
        let mut raw = Vec::new();
        file.take(MAX_FILE_LEN + 1)
            .read_to_end(&mut raw)
            .map_err(|e| at(AdmissionProblem::Io(e)))?;
        if raw.len() as u64 > MAX_FILE_LEN {
            return Err(at(AdmissionProblem::FileTooLarge { max: MAX_FILE_LEN }));
        }
        let text = std::str::from_utf8(&raw).map_err(|_| at(AdmissionProblem::NotACertFile))?;
        let bytes = parse_file(text).map_err(at)?;
        Self::decode(&bytes).map_err(|e| match e {
            Error::Admission { problem, .. } => at(problem),
            other => other,
        })
    }
}

/// The signed digest `D`.
fn digest(
    network: &NetworkId,
    admission_key: &PublicKey,
    subject: &NodeId,
    not_after_ms: u64,
) -> [u8; 32] {
    Transcript::digest(
        ADMISSION_CERT_LABEL,
        &[
            network.as_bytes(),
            admission_key.as_bytes(),
            subject.as_bytes(),
            &not_after_ms.to_be_bytes(),
        ],
    )
}

/// The certificate bytes of a certificate file's text.
fn parse_file(text: &str) -> Result<Vec<u8>, AdmissionProblem> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let (_, header) = lines.next().ok_or(AdmissionProblem::NotACertFile)?;
    if header != ADMISSION_CERT_FILE_HEADER {
        return match header.strip_prefix("themis-admission-cert ") {
            Some(v) => Err(AdmissionProblem::UnsupportedVersion {
                found: v.chars().take(16).collect(),
            }),
            None => Err(AdmissionProblem::NotACertFile),
        };
    }
    let (line, content) = lines.next().ok_or(AdmissionProblem::Corrupt {
        line: 2,
        reason: "the `cert` line is missing".to_owned(),
    })?;
    let hex_text = content
        .strip_prefix("cert ")
        .ok_or(AdmissionProblem::Corrupt {
            line,
            reason: "expected `cert <hex digits>`".to_owned(),
        })?;
    let bytes = hex::decode(hex_text.trim()).map_err(|_| AdmissionProblem::Corrupt {
        line,
        reason: "the certificate is not hex digits".to_owned(),
    })?;
    if let Some((line, _)) = lines.next() {
        return Err(AdmissionProblem::Corrupt {
            line,
            reason: "unexpected content after the certificate".to_owned(),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (IdentityKeypair, NetworkId, NodeId) {
        let ak = IdentityKeypair::from_seed(&[9; 32]);
        let net = NetworkId::new("twiitr").unwrap().closed(ak.public());
        let node = IdentityKeypair::from_seed(&[1; 32]).node_id(&net);
        (ak, net, node)
    }

    #[test]
    fn issue_encode_decode_verify() {
        let (ak, net, node) = setup();
        let c = AdmissionCert::issue(&ak, &net, node, 2_000).unwrap();
        let b = c.encode();
        assert_eq!(b.len(), 136);
        let d = AdmissionCert::decode(&b).unwrap();
        assert_eq!(d, c);
        d.verify(&net, &node, 1_999).unwrap();
    }

    #[test]
    fn each_check_refuses() {
        let (ak, net, node) = setup();
        let c = AdmissionCert::issue(&ak, &net, node, 2_000).unwrap();
        assert!(matches!(
            c.verify(&net.open(), &node, 0),
            Err(AdmissionProblem::WrongAdmissionKey)
        ));
        let other_key = net.open().closed(PublicKey::from_bytes([3; 32]));
        assert!(matches!(
            c.verify(&other_key, &node, 0),
            Err(AdmissionProblem::WrongAdmissionKey)
        ));
        let other = NodeId::from_bytes([7; 32]);
        assert!(matches!(
            c.verify(&net, &other, 0),
            Err(AdmissionProblem::WrongSubject { .. })
        ));
        assert!(matches!(
            c.verify(&net, &node, 2_000),
            Err(AdmissionProblem::Expired { .. })
        ));
        let mut b = c.encode();
        b[70] ^= 1; // not_after changed: the signature no longer covers it
        let forged = AdmissionCert::decode(&b).unwrap();
        assert!(matches!(
            forged.verify(&net, &node, 0),
            Err(AdmissionProblem::BadSignature)
        ));
        // Issuing under a key that is not the network's is refused.
        let wrong = IdentityKeypair::from_seed(&[4; 32]);
        assert!(AdmissionCert::issue(&wrong, &net, node, 1).is_err());
        assert!(AdmissionCert::issue(&ak, &net.open(), node, 1).is_err());
    }

    #[test]
    fn decode_refuses_other_lengths() {
        for len in [0, 1, 135, 137, 300] {
            let e = AdmissionCert::decode(&vec![0; len])
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("{len} bytes")), "{e}");
        }
    }

    #[test]
    fn file_round_trip_and_errors() {
        let (ak, net, node) = setup();
        let c = AdmissionCert::issue(&ak, &net, node, 2_000).unwrap();
        let dir = std::env::temp_dir().join(format!("themis-adm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("node.cert");
        let _ = std::fs::remove_file(&p);
        c.write_to_file(&p, &net, false).unwrap();
        assert_eq!(AdmissionCert::read_from_file(&p).unwrap(), c);
        assert!(
            c.write_to_file(&p, &net, false)
                .unwrap_err()
                .to_string()
                .contains("already exists")
        );
        std::fs::write(&p, "themis-admission-cert v2\ncert 00\n").unwrap();
        let e = AdmissionCert::read_from_file(&p).unwrap_err().to_string();
        assert!(e.contains("v2") && e.contains("node.cert"), "{e}");
        std::fs::write(&p, "hello\n").unwrap();
        let e = AdmissionCert::read_from_file(&p).unwrap_err().to_string();
        assert!(e.contains("not a themis admission certificate"), "{e}");
        std::fs::write(&p, "themis-admission-cert v1\ncert zz\n").unwrap();
        let e = AdmissionCert::read_from_file(&p).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = AdmissionCert::read_from_file(&dir.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
