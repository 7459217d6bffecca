//! Byte layouts of the three handshake messages (PROTOCOL.md, "Handshake").
//!
//! Parsing checks every size before reading and turns the bytes into typed fields; nothing here
//! allocates on the receive path except the returned message buffers.

use themis_crypto::{
    ADMISSION_CERT_LEN, AdmissionCert, DH_LEN, EphemeralPublic, MAC_LEN, MAX_NETWORK_ID_LEN,
    NODE_ID_LEN, NodeId, PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, Signature,
};

use crate::{Error, SESSION_ID_LEN, SessionId};

/// Protocol version byte, first byte of every THEMIS message.
pub const VERSION: u8 = 0x01;
/// Type byte of message 1 (initiator → responder).
pub const TYPE_MSG1: u8 = 0x01;
/// Type byte of message 2 (responder → initiator).
pub const TYPE_MSG2: u8 = 0x02;
/// Type byte of message 3 (initiator → responder, key confirmation).
pub const TYPE_MSG3: u8 = 0x03;
/// Length of the initiator's nonce `N_A`.
pub const NONCE_LEN: usize = 32;

const HDR: usize = 2;

/// Offset of `net_len` in message 1; everything before it is fixed-size.
const M1_NET_LEN_OFF: usize = HDR + DH_LEN + NONCE_LEN + PUBLIC_KEY_LEN + NODE_ID_LEN; // 130
/// Length of message 1 without the network id.
const M1_FIXED_LEN: usize = M1_NET_LEN_OFF + 1 + SIGNATURE_LEN; // 195
/// Smallest message 1 (1-byte network id).
pub const MSG1_MIN_LEN: usize = M1_FIXED_LEN + 1;
/// Largest message 1 (64-byte network id) on an open network.
pub const MSG1_MAX_LEN: usize = M1_FIXED_LEN + MAX_NETWORK_ID_LEN;
/// Smallest message 1 on a closed network (with the 136-byte admission certificate).
pub const MSG1_CLOSED_MIN_LEN: usize = MSG1_MIN_LEN + ADMISSION_CERT_LEN;
/// Largest message 1 on a closed network.
pub const MSG1_CLOSED_MAX_LEN: usize = MSG1_MAX_LEN + ADMISSION_CERT_LEN;
/// Exact length of message 2.
pub const MSG2_LEN: usize = HDR + DH_LEN + PUBLIC_KEY_LEN + NONCE_LEN + NODE_ID_LEN + SIGNATURE_LEN;
/// Offset of the signature in message 2 (= length of the signed body).
pub(crate) const MSG2_SIG_OFF: usize = MSG2_LEN - SIGNATURE_LEN;
/// Exact length of message 2 on a closed network (with the admission certificate).
pub const MSG2_CLOSED_LEN: usize = MSG2_LEN + ADMISSION_CERT_LEN;

// No amplification (PROTOCOL.md §5.2): message 2 is never longer than the message 1 it answers.
const _: () = assert!(MSG2_LEN <= MSG1_MIN_LEN);
const _: () = assert!(MSG2_CLOSED_LEN <= MSG1_CLOSED_MIN_LEN);
/// Exact length of message 3.
pub const MSG3_LEN: usize = HDR + SESSION_ID_LEN + MAC_LEN;
/// Length of the header of message 3 covered by its MAC (version, type, session id).
pub(crate) const MSG3_HDR_LEN: usize = HDR + SESSION_ID_LEN;

/// What a datagram is, read from its first bytes only (see [`peek`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageKind {
    /// Message 1: goes to the [`crate::Responder`].
    Message1,
    /// Message 2: goes to the [`crate::Initiator`] whose [`crate::Initiator::nonce`] equals
    /// `nonce` (the echoed `N_A`).
    Message2 {
        /// The initiator nonce the message answers.
        nonce: [u8; NONCE_LEN],
    },
    /// Message 3: goes to the [`crate::Responder`], which has `session_id` pending.
    Message3 {
        /// The session the message confirms.
        session_id: SessionId,
    },
}

/// Classifies a datagram by its version and type bytes (and, for message 2 and 3, the routing
/// field), without parsing or verifying the rest, so that an endpoint can route it.
///
/// Errors: fewer than 2 bytes or too short for the routing field → [`Error::Malformed`]; version
/// other than 1 → [`Error::UnsupportedVersion`]; a type byte outside 0x01..=0x03 →
/// [`Error::WrongMessageType`] (0x10.. belong to the channel, not to the handshake).
pub fn peek(datagram: &[u8]) -> Result<MessageKind, Error> {
    let (version, ty) = match datagram {
        [v, t, ..] => (*v, *t),
        _ => {
            return Err(Error::Malformed {
                message: "message",
                reason: "shorter than the 2-byte header",
            });
        }
    };
    if version != VERSION {
        return Err(Error::UnsupportedVersion { found: version });
    }
    match ty {
        TYPE_MSG1 => Ok(MessageKind::Message1),
        TYPE_MSG2 => {
            let nonce = array_at(datagram, HDR + DH_LEN + PUBLIC_KEY_LEN, "message 2")?;
            Ok(MessageKind::Message2 { nonce })
        }
        TYPE_MSG3 => {
            let id = array_at(datagram, HDR, "message 3")?;
            Ok(MessageKind::Message3 {
                session_id: SessionId(id),
            })
        }
        found => Err(Error::WrongMessageType {
            expected: TYPE_MSG1,
            expected_name: "a handshake message, 0x01..=0x03",
            found,
        }),
    }
}

fn array_at<const N: usize>(
    bytes: &[u8],
    off: usize,
    message: &'static str,
) -> Result<[u8; N], Error> {
    bytes
        .get(off..off + N)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(Error::Malformed {
            message,
            reason: "too short",
        })
}

/// Checks the 2-byte header; the first check of every decoder.
fn check_header(bytes: &[u8], ty: u8, name: &'static str) -> Result<(), Error> {
    let [version, found, ..] = bytes else {
        return Err(Error::Malformed {
            message: name,
            reason: "shorter than the 2-byte header",
        });
    };
    if *version != VERSION {
        return Err(Error::UnsupportedVersion { found: *version });
    }
    if *found != ty {
        return Err(Error::WrongMessageType {
            expected: ty,
            expected_name: name,
            found: *found,
        });
    }
    Ok(())
}

/// A parsed message 1. `signed_len` is the length of the prefix the signature covers.
pub(crate) struct Msg1<'a> {
    pub(crate) ephemeral: EphemeralPublic,
    pub(crate) nonce: [u8; NONCE_LEN],
    pub(crate) initiator_public: PublicKey,
    pub(crate) recipient: NodeId,
    /// Raw network id bytes (validated against ours by the responder).
    pub(crate) network: &'a [u8],
    /// The initiator's admission certificate (closed networks only).
    pub(crate) cert: Option<AdmissionCert>,
    pub(crate) signature: Signature,
    pub(crate) signed: &'a [u8],
}

const M1: &str = "message 1";
const M2: &str = "message 2";
const M3: &str = "message 3";

pub(crate) fn parse_msg1(bytes: &[u8]) -> Result<Msg1<'_>, Error> {
    check_header(bytes, TYPE_MSG1, M1)?;
    if bytes.len() < MSG1_MIN_LEN {
        return Err(Error::Malformed {
            message: M1,
            reason: "shorter than the smallest message 1 (196 bytes)",
        });
    }
    if bytes.len() > MSG1_CLOSED_MAX_LEN {
        return Err(Error::Malformed {
            message: M1,
            reason: "longer than the largest message 1 (395 bytes)",
        });
    }
    let net_len = usize::from(bytes.get(M1_NET_LEN_OFF).copied().unwrap_or(0));
    if net_len == 0 || net_len > MAX_NETWORK_ID_LEN {
        return Err(Error::Malformed {
            message: M1,
            reason: "network id length outside 1..=64",
        });
    }
    // Open network: no certificate; closed network: the certificate follows net_id.
    let cert_len = if bytes.len() == M1_FIXED_LEN + net_len {
        0
    } else if bytes.len() == M1_FIXED_LEN + net_len + ADMISSION_CERT_LEN {
        ADMISSION_CERT_LEN
    } else {
        return Err(Error::Malformed {
            message: M1,
            reason: "length does not match the network id length (truncated or trailing bytes)",
        });
    };
    let net_off = M1_NET_LEN_OFF + 1;
    let cert_off = net_off + net_len;
    let sig_off = cert_off + cert_len;
    let short = || Error::Malformed {
        message: M1,
        reason: "too short",
    };
    let cert = cert_at(bytes, cert_off, cert_len, M1)?;
    Ok(Msg1 {
        ephemeral: EphemeralPublic::from_bytes(array_at(bytes, HDR, M1)?),
        nonce: array_at(bytes, HDR + DH_LEN, M1)?,
        initiator_public: PublicKey::from_bytes(array_at(bytes, HDR + DH_LEN + NONCE_LEN, M1)?),
        recipient: NodeId::from_bytes(array_at(
            bytes,
            HDR + DH_LEN + NONCE_LEN + PUBLIC_KEY_LEN,
            M1,
        )?),
        network: bytes.get(net_off..cert_off).ok_or_else(short)?,
        cert,
        signature: Signature::from_bytes(array_at(bytes, sig_off, M1)?),
        signed: bytes.get(..sig_off).ok_or_else(short)?,
    })
}

/// The certificate of `cert_len` (0 or 136) bytes at `off`.
fn cert_at(
    bytes: &[u8],
    off: usize,
    cert_len: usize,
    message: &'static str,
) -> Result<Option<AdmissionCert>, Error> {
    if cert_len == 0 {
        return Ok(None);
    }
    let raw = bytes.get(off..off + cert_len).ok_or(Error::Malformed {
        message,
        reason: "too short",
    })?;
    AdmissionCert::decode(raw)
        .map(Some)
        .map_err(|_| Error::Malformed {
            message,
            reason: "bad admission certificate length",
        })
}

/// The signed body of message 1 (everything but the signature).
pub(crate) fn msg1_body(
    ephemeral: &EphemeralPublic,
    nonce: &[u8; NONCE_LEN],
    initiator_public: &PublicKey,
    recipient: &NodeId,
    network: &[u8],
    cert: Option<&AdmissionCert>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(M1_FIXED_LEN + network.len() + ADMISSION_CERT_LEN);
    out.extend_from_slice(&[VERSION, TYPE_MSG1]);
    out.extend_from_slice(ephemeral.as_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(initiator_public.as_bytes());
    out.extend_from_slice(recipient.as_bytes());
    // NetworkId guarantees 1..=64 bytes, so the length fits in one byte.
    out.push(u8::try_from(network.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(network);
    if let Some(c) = cert {
        out.extend_from_slice(&c.encode());
    }
    out
}

/// A parsed message 2.
pub(crate) struct Msg2<'a> {
    pub(crate) ephemeral: EphemeralPublic,
    pub(crate) responder_public: PublicKey,
    pub(crate) nonce: [u8; NONCE_LEN],
    pub(crate) recipient: NodeId,
    /// The responder's admission certificate (closed networks only).
    pub(crate) cert: Option<AdmissionCert>,
    pub(crate) signature: Signature,
    pub(crate) signed: &'a [u8],
}

pub(crate) fn parse_msg2(bytes: &[u8]) -> Result<Msg2<'_>, Error> {
    check_header(bytes, TYPE_MSG2, M2)?;
    let cert_len = match bytes.len() {
        MSG2_LEN => 0,
        MSG2_CLOSED_LEN => ADMISSION_CERT_LEN,
        _ => {
            return Err(Error::Malformed {
                message: M2,
                reason: "message 2 must be exactly 194 bytes (330 on a closed network)",
            });
        }
    };
    let sig_off = MSG2_SIG_OFF + cert_len;
    Ok(Msg2 {
        ephemeral: EphemeralPublic::from_bytes(array_at(bytes, HDR, M2)?),
        responder_public: PublicKey::from_bytes(array_at(bytes, HDR + DH_LEN, M2)?),
        nonce: array_at(bytes, HDR + DH_LEN + PUBLIC_KEY_LEN, M2)?,
        recipient: NodeId::from_bytes(array_at(
            bytes,
            HDR + DH_LEN + PUBLIC_KEY_LEN + NONCE_LEN,
            M2,
        )?),
        cert: cert_at(bytes, MSG2_SIG_OFF, cert_len, M2)?,
        signature: Signature::from_bytes(array_at(bytes, sig_off, M2)?),
        signed: bytes.get(..sig_off).ok_or(Error::Malformed {
            message: M2,
            reason: "too short",
        })?,
    })
}

/// The signed body of message 2 (everything but the signature).
pub(crate) fn msg2_body(
    ephemeral: &EphemeralPublic,
    responder_public: &PublicKey,
    nonce: &[u8; NONCE_LEN],
    recipient: &NodeId,
    cert: Option<&AdmissionCert>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(MSG2_CLOSED_LEN);
    out.extend_from_slice(&[VERSION, TYPE_MSG2]);
    out.extend_from_slice(ephemeral.as_bytes());
    out.extend_from_slice(responder_public.as_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(recipient.as_bytes());
    if let Some(c) = cert {
        out.extend_from_slice(&c.encode());
    }
    out
}

/// A parsed message 3.
pub(crate) struct Msg3 {
    pub(crate) session_id: SessionId,
    pub(crate) mac: [u8; MAC_LEN],
    pub(crate) header: [u8; MSG3_HDR_LEN],
}

pub(crate) fn parse_msg3(bytes: &[u8]) -> Result<Msg3, Error> {
    check_header(bytes, TYPE_MSG3, M3)?;
    if bytes.len() != MSG3_LEN {
        return Err(Error::Malformed {
            message: M3,
            reason: "message 3 must be exactly 42 bytes",
        });
    }
    Ok(Msg3 {
        session_id: SessionId(array_at(bytes, HDR, M3)?),
        mac: array_at(bytes, MSG3_HDR_LEN, M3)?,
        header: array_at(bytes, 0, M3)?,
    })
}

/// The MAC-covered header of message 3.
pub(crate) fn msg3_header(session_id: &SessionId) -> [u8; MSG3_HDR_LEN] {
    let mut h = [0u8; MSG3_HDR_LEN];
    let (ver_ty, id) = h.split_at_mut(HDR);
    ver_ty.copy_from_slice(&[VERSION, TYPE_MSG3]);
    id.copy_from_slice(&session_id.0);
    h
}

/// Parses `bytes` as each of the three messages and, for each that parses, rebuilds the message
/// from the parsed fields and checks that [`peek`] routes it the same way: for fuzzing
/// (`fuzz/`). Returns which message parsed; `Err` says which check failed (a parser that
/// accepts bytes it does not represent, or a router that disagrees with the parser).
pub(crate) fn fuzz_roundtrip(bytes: &[u8]) -> Result<Option<u8>, String> {
    let kind = peek(bytes).ok();
    let mismatch = |m: &str, what: &str| Err(format!("message {m}: {what}"));
    if let Ok(m) = parse_msg1(bytes) {
        let mut out = msg1_body(
            &m.ephemeral,
            &m.nonce,
            &m.initiator_public,
            &m.recipient,
            m.network,
            m.cert.as_ref(),
        );
        if out.as_slice() != m.signed {
            return mismatch("1", "the signed prefix does not rebuild");
        }
        out.extend_from_slice(m.signature.as_bytes());
        if out != bytes {
            return mismatch("1", "the rebuilt bytes differ");
        }
        if kind != Some(MessageKind::Message1) {
            return mismatch("1", "peek routes it elsewhere");
        }
        return Ok(Some(1));
    }
    if let Ok(m) = parse_msg2(bytes) {
        let mut out = msg2_body(
            &m.ephemeral,
            &m.responder_public,
            &m.nonce,
            &m.recipient,
            m.cert.as_ref(),
        );
        if out.as_slice() != m.signed {
            return mismatch("2", "the signed prefix does not rebuild");
        }
        out.extend_from_slice(m.signature.as_bytes());
        if out != bytes {
            return mismatch("2", "the rebuilt bytes differ");
        }
        if kind != Some(MessageKind::Message2 { nonce: m.nonce }) {
            return mismatch("2", "peek routes it elsewhere");
        }
        return Ok(Some(2));
    }
    if let Ok(m) = parse_msg3(bytes) {
        let header = msg3_header(&m.session_id);
        if header != m.header {
            return mismatch("3", "the header does not rebuild");
        }
        let mut out = header.to_vec();
        out.extend_from_slice(&m.mac);
        if out != bytes {
            return mismatch("3", "the rebuilt bytes differ");
        }
        if kind
            != Some(MessageKind::Message3 {
                session_id: m.session_id,
            })
        {
            return mismatch("3", "peek routes it elsewhere");
        }
        return Ok(Some(3));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz hook (fuzz/fuzz_targets/handshake.rs) accepts and rebuilds the known-answer
    /// messages, and refuses them with a byte flipped in the header or cut short.
    #[test]
    fn fuzz_hook_round_trips_known_answer_messages() {
        for kat in [
            include_str!("../tests/vectors/twiitr.txt"),
            include_str!("../tests/vectors/closed-twiitr.txt"),
        ] {
            for (n, name) in [(1u8, "msg1 = "), (2, "msg2 = "), (3, "msg3 = ")] {
                let hex = kat.lines().find_map(|l| l.strip_prefix(name)).unwrap();
                let mut b = hex::decode(hex).unwrap();
                assert_eq!(fuzz_roundtrip(&b), Ok(Some(n)), "{name}");
                b.pop();
                assert_eq!(fuzz_roundtrip(&b), Ok(None), "{name} cut short");
            }
        }
    }

    #[test]
    fn sizes_are_as_documented() {
        assert_eq!(M1_NET_LEN_OFF, 130);
        assert_eq!(MSG1_MIN_LEN, 196);
        assert_eq!(MSG1_MAX_LEN, 259);
        assert_eq!(MSG2_LEN, 194);
        assert_eq!(MSG2_SIG_OFF, 130);
        assert_eq!(MSG3_LEN, 42);
        assert_eq!(MSG1_CLOSED_MIN_LEN, 332);
        assert_eq!(MSG1_CLOSED_MAX_LEN, 395);
        assert_eq!(MSG2_CLOSED_LEN, 330);
    }

    #[test]
    fn peek_classifies_and_rejects() {
        assert_eq!(peek(&[1, 1]).unwrap(), MessageKind::Message1);
        let mut m2 = vec![1u8, 2];
        m2.extend_from_slice(&[0; 64]);
        m2.extend_from_slice(&[7; 32]);
        assert_eq!(peek(&m2).unwrap(), MessageKind::Message2 { nonce: [7; 32] });
        m2.truncate(97);
        assert!(matches!(peek(&m2), Err(Error::Malformed { .. })));
        let mut m3 = vec![1u8, 3, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            peek(&m3).unwrap(),
            MessageKind::Message3 {
                session_id: SessionId([1, 2, 3, 4, 5, 6, 7, 8])
            }
        );
        m3.pop();
        assert!(matches!(peek(&m3), Err(Error::Malformed { .. })));
        assert!(matches!(peek(&[1]), Err(Error::Malformed { .. })));
        assert!(matches!(peek(&[]), Err(Error::Malformed { .. })));
        assert!(matches!(
            peek(&[2, 1]),
            Err(Error::UnsupportedVersion { found: 2 })
        ));
        assert!(matches!(
            peek(&[1, 0x10]),
            Err(Error::WrongMessageType { found: 0x10, .. })
        ));
    }

    #[test]
    fn msg1_length_field_is_checked() {
        let body = msg1_body(
            &EphemeralPublic::from_bytes([1; 32]),
            &[2; 32],
            &PublicKey::from_bytes([3; 32]),
            &NodeId::from_bytes([4; 32]),
            b"net",
            None,
        );
        let mut m = body.clone();
        m.extend_from_slice(&[5; 64]);
        let p = parse_msg1(&m).unwrap();
        assert_eq!(p.network, b"net");
        assert_eq!(p.signed, &body[..]);
        assert_eq!(p.signature.as_bytes(), &[5; 64]);
        for bad_len in [0u8, 2, 4, 65, 255] {
            let mut x = m.clone();
            x[130] = bad_len;
            assert!(matches!(parse_msg1(&x), Err(Error::Malformed { .. })));
        }
    }
}
