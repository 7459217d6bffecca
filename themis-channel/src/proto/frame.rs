//! The frame codec: header layout, header parsing for routing, nonce and associated data.
//!
//! ```text
//! secure   (0x10 cmd / 0x11 rsp): ver | type | session_id (8) | seq (u64 BE) | ciphertext | tag (16)
//! insecure (0x20 cmd / 0x21 rsp): ver | type | sender NodeId (32) | seq (u64 BE) | payload
//! ```

use bytes::{BufMut, BytesMut};
use themis_crypto::{AEAD_NONCE_PREFIX_LEN, AEAD_NONCE_TAIL_LEN, NODE_ID_LEN, NodeId};
use themis_handshake::{SESSION_ID_LEN, SessionId};

use crate::error::{Error, Result};
use crate::wire::{
    INSECURE_HEADER_LEN, SECURE_HEADER_LEN, TAG_LEN, TYPE_INSECURE_COMMAND, TYPE_INSECURE_RESPONSE,
    TYPE_SECURE_COMMAND, TYPE_SECURE_RESPONSE, VERSION,
};

/// Length of the associated data of a secure frame: its header and the receiver's id.
pub(crate) const AD_LEN: usize = SECURE_HEADER_LEN + NODE_ID_LEN;

/// Whether a channel (or a frame) is encrypted and authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// XChaCha20-Poly1305 under the keys of a finished handshake (paper Fig. 3).
    Secure,
    /// Plaintext frames with the same sequencing (for measurement and trusted networks only).
    Insecure,
}

/// The four channel frame types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Type 0x10.
    SecureCommand,
    /// Type 0x11.
    SecureResponse,
    /// Type 0x20.
    InsecureCommand,
    /// Type 0x21.
    InsecureResponse,
}

impl FrameKind {
    /// The kind for a mode and direction.
    pub const fn new(mode: Mode, command: bool) -> Self {
        match (mode, command) {
            (Mode::Secure, true) => Self::SecureCommand,
            (Mode::Secure, false) => Self::SecureResponse,
            (Mode::Insecure, true) => Self::InsecureCommand,
            (Mode::Insecure, false) => Self::InsecureResponse,
        }
    }

    /// The type byte on the wire.
    pub const fn type_byte(self) -> u8 {
        match self {
            Self::SecureCommand => TYPE_SECURE_COMMAND,
            Self::SecureResponse => TYPE_SECURE_RESPONSE,
            Self::InsecureCommand => TYPE_INSECURE_COMMAND,
            Self::InsecureResponse => TYPE_INSECURE_RESPONSE,
        }
    }

    /// The kind a type byte denotes, if it is a channel frame type.
    pub const fn from_type_byte(b: u8) -> Option<Self> {
        match b {
            TYPE_SECURE_COMMAND => Some(Self::SecureCommand),
            TYPE_SECURE_RESPONSE => Some(Self::SecureResponse),
            TYPE_INSECURE_COMMAND => Some(Self::InsecureCommand),
            TYPE_INSECURE_RESPONSE => Some(Self::InsecureResponse),
            _ => None,
        }
    }

    /// Secure or insecure.
    pub const fn mode(self) -> Mode {
        match self {
            Self::SecureCommand | Self::SecureResponse => Mode::Secure,
            Self::InsecureCommand | Self::InsecureResponse => Mode::Insecure,
        }
    }

    /// Whether this is a command (as opposed to a response).
    pub const fn is_command(self) -> bool {
        matches!(self, Self::SecureCommand | Self::InsecureCommand)
    }

    /// Header length of frames of this kind.
    pub const fn header_len(self) -> usize {
        match self.mode() {
            Mode::Secure => SECURE_HEADER_LEN,
            Mode::Insecure => INSECURE_HEADER_LEN,
        }
    }

    /// Bytes a frame of this kind adds around its payload (header, plus the tag when secure).
    pub const fn overhead(self) -> usize {
        match self.mode() {
            Mode::Secure => SECURE_HEADER_LEN + TAG_LEN,
            Mode::Insecure => INSECURE_HEADER_LEN,
        }
    }
}

/// The cleartext header of a channel frame: what an endpoint needs to route a frame to its
/// channel before decrypting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameHeader {
    /// A secure frame, routed by session id.
    Secure {
        /// Command (0x10) or response (0x11).
        command: bool,
        /// The session the frame belongs to.
        session_id: SessionId,
        /// The sequence number (of the command; a response repeats its command's).
        seq: u64,
    },
    /// An insecure frame, routed by the sender's id.
    Insecure {
        /// Command (0x20) or response (0x21).
        command: bool,
        /// The sender's node id (the paper's cleartext `A`).
        sender: NodeId,
        /// The sequence number (of the command; a response repeats its command's).
        seq: u64,
    },
}

impl FrameHeader {
    /// The frame kind.
    pub const fn kind(&self) -> FrameKind {
        match *self {
            Self::Secure { command, .. } => FrameKind::new(Mode::Secure, command),
            Self::Insecure { command, .. } => FrameKind::new(Mode::Insecure, command),
        }
    }

    /// The sequence number.
    pub const fn seq(&self) -> u64 {
        match *self {
            Self::Secure { seq, .. } | Self::Insecure { seq, .. } => seq,
        }
    }

    /// Length of the encoded header.
    pub const fn len(&self) -> usize {
        self.kind().header_len()
    }

    /// Always false: a header is never empty (present for API symmetry with `len`).
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Appends the encoded header to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.len());
        out.put_u8(VERSION);
        out.put_u8(self.kind().type_byte());
        match self {
            Self::Secure { session_id, .. } => out.put_slice(&session_id.0),
            Self::Insecure { sender, .. } => out.put_slice(sender.as_bytes()),
        }
        out.put_u64(self.seq());
    }
}

/// Parses the cleartext header of a channel frame without decrypting anything, so that an
/// endpoint can route the frame (by session id or sender id) and see its sequence number.
///
/// Checks, in this order: at least 2 bytes; version 0x01; a channel frame type; the frame is at
/// least as long as its header (plus the 16-byte tag for a secure frame). It does not check the
/// maximum frame size (the transport bounds frames before reading them, and
/// [`crate::Channel::open`] checks it again) and, for secure frames, nothing is authentic until
/// [`crate::Channel::open`] has verified the tag.
pub fn peek_header(frame: &[u8]) -> Result<FrameHeader> {
    let (&version, rest) = frame.split_first().ok_or(Error::FrameTooShort {
        len: frame.len(),
        min: SECURE_HEADER_LEN + TAG_LEN,
    })?;
    if version != VERSION {
        return Err(Error::UnsupportedVersion { found: version });
    }
    let (&ty, rest) = rest.split_first().ok_or(Error::FrameTooShort {
        len: frame.len(),
        min: SECURE_HEADER_LEN + TAG_LEN,
    })?;
    let kind = FrameKind::from_type_byte(ty).ok_or(Error::UnknownFrameType { found: ty })?;
    let min = kind.overhead();
    if frame.len() < min {
        return Err(Error::FrameTooShort {
            len: frame.len(),
            min,
        });
    }
    let command = kind.is_command();
    match kind.mode() {
        Mode::Secure => {
            let (sid, rest) = split_array::<SESSION_ID_LEN>(rest)?;
            let (seq, _) = split_array::<8>(rest)?;
            Ok(FrameHeader::Secure {
                command,
                session_id: SessionId(sid),
                seq: u64::from_be_bytes(seq),
            })
        }
        Mode::Insecure => {
            let (id, rest) = split_array::<NODE_ID_LEN>(rest)?;
            let (seq, _) = split_array::<8>(rest)?;
            Ok(FrameHeader::Insecure {
                command,
                sender: NodeId::from_bytes(id),
                seq: u64::from_be_bytes(seq),
            })
        }
    }
}

/// Splits `N` bytes off the front of `b`.
fn split_array<const N: usize>(b: &[u8]) -> Result<([u8; N], &[u8])> {
    let (head, rest) = b.split_first_chunk::<N>().ok_or(Error::FrameTooShort {
        len: b.len(),
        min: N,
    })?;
    Ok((*head, rest))
}

/// The 24-byte XChaCha20-Poly1305 nonce of a secure frame: `type ‖ 15 zero bytes ‖ seq (u64 BE)`.
///
/// Under one direction key, the sender seals its own commands (type 0x10, each `seq` once, from
/// a counter that never repeats) and its responses (type 0x11, each `seq` at most once, enforced
/// by the response window); the type byte keeps a command and a response with equal `seq` apart.
#[cfg(test)]
pub(crate) fn nonce(type_byte: u8, seq: u64) -> [u8; themis_crypto::AEAD_NONCE_LEN] {
    let mut n = [0u8; themis_crypto::AEAD_NONCE_LEN];
    n[..AEAD_NONCE_PREFIX_LEN].copy_from_slice(&nonce_prefix(type_byte));
    n[AEAD_NONCE_PREFIX_LEN..].copy_from_slice(&nonce_tail(seq));
    n
}

/// The first 16 bytes of [`nonce`]: `type ‖ 15 zero bytes`, the same for every frame of a type
/// (so the channel makes XChaCha20's subkey once per direction and type).
pub(crate) fn nonce_prefix(type_byte: u8) -> [u8; AEAD_NONCE_PREFIX_LEN] {
    let mut p = [0u8; AEAD_NONCE_PREFIX_LEN];
    p[0] = type_byte;
    p
}

/// The last 8 bytes of [`nonce`]: `seq` (u64 BE).
pub(crate) fn nonce_tail(seq: u64) -> [u8; AEAD_NONCE_TAIL_LEN] {
    seq.to_be_bytes()
}

/// The associated data of a secure frame: its 18-byte header ‖ the receiver's 32-byte node id.
///
/// paper §5.1.2: B "checks that the identity inside is his". The receiver id is authenticated
/// without being sent: a frame only opens at the node it was sealed for.
pub(crate) fn associated_data(header: &[u8; SECURE_HEADER_LEN], receiver: &NodeId) -> [u8; AD_LEN] {
    let mut ad = [0u8; AD_LEN];
    ad[..SECURE_HEADER_LEN].copy_from_slice(header);
    ad[SECURE_HEADER_LEN..].copy_from_slice(receiver.as_bytes());
    ad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_both_modes() {
        let hs = [
            FrameHeader::Secure {
                command: true,
                session_id: SessionId([1, 2, 3, 4, 5, 6, 7, 8]),
                seq: 0x0102_0304_0506_0708,
            },
            FrameHeader::Insecure {
                command: false,
                sender: NodeId::from_bytes([9; 32]),
                seq: u64::MAX,
            },
        ];
        for h in hs {
            let mut b = BytesMut::new();
            h.encode(&mut b);
            assert_eq!(b.len(), h.len());
            if h.kind().mode() == Mode::Secure {
                b.extend_from_slice(&[0; TAG_LEN]);
            }
            assert_eq!(peek_header(&b).unwrap(), h);
        }
    }

    #[test]
    fn header_bytes_are_as_documented() {
        let mut b = BytesMut::new();
        FrameHeader::Secure {
            command: false,
            session_id: SessionId(*b"SESSION!"),
            seq: 258,
        }
        .encode(&mut b);
        assert_eq!(&b[..], b"\x01\x11SESSION!\0\0\0\0\0\0\x01\x02");
    }

    #[test]
    fn peek_rejects_each_malformation() {
        assert!(matches!(peek_header(&[]), Err(Error::FrameTooShort { .. })));
        assert!(matches!(
            peek_header(&[2, 0x10]),
            Err(Error::UnsupportedVersion { found: 2 })
        ));
        for t in [0x01, 0x03, 0x12, 0x22, 0x30, 0xff] {
            assert!(matches!(
                peek_header(&[1, t, 0, 0]),
                Err(Error::UnknownFrameType { found }) if found == t
            ));
        }
        assert!(matches!(
            peek_header(&[1, 0x10]),
            Err(Error::FrameTooShort { len: 2, min: 34 })
        ));
        let mut f = vec![0u8; 33];
        f[0] = 1;
        f[1] = 0x10;
        assert!(matches!(
            peek_header(&f),
            Err(Error::FrameTooShort { len: 33, min: 34 })
        ));
        f.push(0);
        assert!(peek_header(&f).is_ok());
        let mut f = vec![0u8; 41];
        f[0] = 1;
        f[1] = 0x21;
        assert!(matches!(
            peek_header(&f),
            Err(Error::FrameTooShort { len: 41, min: 42 })
        ));
        f.push(0);
        assert!(peek_header(&f).is_ok());
    }

    #[test]
    fn nonces_differ_by_type_and_seq() {
        assert_ne!(
            nonce(TYPE_SECURE_COMMAND, 7),
            nonce(TYPE_SECURE_RESPONSE, 7)
        );
        assert_ne!(nonce(TYPE_SECURE_COMMAND, 7), nonce(TYPE_SECURE_COMMAND, 8));
        let n = nonce(0x11, 0x0102);
        assert_eq!(n[0], 0x11);
        assert_eq!(&n[1..22], &[0u8; 21]);
        assert_eq!(&n[22..], &[1, 2]);
    }
}
