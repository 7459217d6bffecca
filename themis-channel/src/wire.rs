//! Every byte value and size of this crate's wire format, in one place (PROTOCOL.md §1, §4, §5,
//! §5.4).
//!
//! Every frame, on every transport, starts with [`VERSION`] and a type byte. The type space is
//! shared by the layers:
//!
//! | types | owner | here |
//! |---|---|---|
//! | `0x01..=0x03` | the handshake (`themis_handshake::TYPE_MSG1..=TYPE_MSG3`) | [`HANDSHAKE_TYPES`] |
//! | `0x10`, `0x11`, `0x20`, `0x21` | the channel | [`TYPE_SECURE_COMMAND`] … |
//! | `0x30..=0x37` | the transports (TCP hello, welcome, goodbye, goodbye-ack) | [`TRANSPORT_TYPE_RANGE`] |
//! | `0x38..=0x3F` | the endpoint's control messages | [`CONTROL_TYPE_RANGE`] |
//!
//! One constant per limit. The frame limits relate as follows: a channel frame is at most
//! [`DEFAULT_MAX_FRAME_LEN`] by default (`ChannelConfig::max_frame_len`); TCP and the in-memory
//! network carry frames of the same default size; UDP carries at most one datagram per frame,
//! `UdpConfig::DEFAULT_MAX_FRAME_LEN` (path-MTU safe) by default and at most
//! [`UDP_MAX_PAYLOAD`]. An endpoint uses the smaller of its channel's and its transport's limit.

use std::ops::RangeInclusive;

use themis_crypto::{AEAD_TAG_LEN, NODE_ID_LEN};
use themis_handshake::SESSION_ID_LEN;

/// The protocol version byte that starts every frame of every layer. The handshake defines it;
/// the channel, the transports and the control messages carry the same value.
pub const VERSION: u8 = themis_handshake::VERSION;

/// The shortest valid frame: version and type.
pub const MIN_FRAME_LEN: usize = 2;

/// The handshake's message types (messages 1, 2 and 3); `0x04..=0x0F` are reserved for it.
pub const HANDSHAKE_TYPES: RangeInclusive<u8> =
    themis_handshake::TYPE_MSG1..=themis_handshake::TYPE_MSG3;

/// Type byte of a secure command frame.
pub const TYPE_SECURE_COMMAND: u8 = 0x10;
/// Type byte of a secure response frame.
pub const TYPE_SECURE_RESPONSE: u8 = 0x11;
/// Type byte of an insecure command frame.
pub const TYPE_INSECURE_COMMAND: u8 = 0x20;
/// Type byte of an insecure response frame.
pub const TYPE_INSECURE_RESPONSE: u8 = 0x21;

/// Length of a secure frame header: version, type, session id, sequence number.
pub const SECURE_HEADER_LEN: usize = 2 + SESSION_ID_LEN + 8;
/// Length of an insecure frame header: version, type, sender id, sequence number.
pub const INSECURE_HEADER_LEN: usize = 2 + NODE_ID_LEN + 8;
/// Length of the authentication tag that ends a secure frame.
pub const TAG_LEN: usize = AEAD_TAG_LEN;

/// Frame types reserved for the transports themselves. [`CONTROL_TYPE_RANGE`] belongs to the
/// endpoint and passes through every transport.
pub const TRANSPORT_TYPE_RANGE: RangeInclusive<u8> = 0x30..=0x37;
/// TCP hello: the first frame on a TCP connection, sent by the connecting side to announce its
/// listening address (PROTOCOL.md, "Transport").
pub const TRANSPORT_HELLO: u8 = 0x30;
/// TCP welcome: `01 31`, the acceptor's answer to a valid hello. The dialer sends nothing but the
/// hello before it.
pub const TRANSPORT_WELCOME: u8 = 0x31;
/// TCP goodbye: `01 32`, the last frame but the ack a side sends on a connection it closes.
pub const TRANSPORT_GOODBYE: u8 = 0x32;
/// TCP goodbye-ack: `01 33`, "I have read your goodbye and everything before it".
pub const TRANSPORT_GOODBYE_ACK: u8 = 0x33;

/// Frame types of the endpoint's control messages.
pub const CONTROL_TYPE_RANGE: RangeInclusive<u8> = 0x38..=0x3F;
/// `01 38 token[16] zero[32]`: "which key do you hold?" Padded to the size of its answer.
pub const TYPE_IDENTIFY: u8 = 0x38;
/// `01 39 token[16] public_key[32]`: answer to [`TYPE_IDENTIFY`].
pub const TYPE_IDENTITY: u8 = 0x39;
/// `01 3A nonce[32] public_key[32]`: answer to a message 1 addressed to another node id.
pub const TYPE_IDENTITY_MISMATCH: u8 = 0x3A;
/// `01 3B ref[32] seq[8]`: "I run in the other mode (secure/insecure)".
pub const TYPE_MODE_MISMATCH: u8 = 0x3B;
/// `01 3C session_id[8] seq[8]`: answer to a secure command for a session this node lacks.
pub const TYPE_UNKNOWN_SESSION: u8 = 0x3C;
/// `01 3D session_id[8] seq[8]`: "command `seq` was authenticated but refused: every handler
/// slot is taken" (reliable transports only; the session id is all zero in insecure mode).
pub const TYPE_BUSY: u8 = 0x3D;
/// `01 3E nonce[32] cookie[32]`: a responder under load answers a message 1 with it instead of
/// message 2; the initiator sends that message 1 again behind the cookie ([`TYPE_COOKIE_ECHO`]).
pub const TYPE_COOKIE: u8 = 0x3E;
/// `01 3F cookie[32] message_1[196..=259, or 332..=395 on a closed network]`: a message 1 with
/// the cookie its responder asked for.
pub const TYPE_COOKIE_ECHO: u8 = 0x3F;

/// Length of an identify request and of its answer.
pub const IDENTIFY_LEN: usize = 2 + 16 + 32;
/// Length of an identity-mismatch message.
pub const IDENTITY_MISMATCH_LEN: usize = 2 + 32 + 32;
/// Length of a mode-mismatch message (= the shortest insecure command frame, which it may
/// answer).
pub const MODE_MISMATCH_LEN: usize = 2 + 32 + 8;
/// Length of an unknown-session message.
pub const UNKNOWN_SESSION_LEN: usize = 2 + SESSION_ID_LEN + 8;
/// Length of a busy message.
pub const BUSY_LEN: usize = 2 + SESSION_ID_LEN + 8;
/// Length of a cookie and of its MAC key (the cookie secret).
pub const COOKIE_SIZE: usize = 32;
/// Length of a cookie reply.
pub const COOKIE_LEN: usize = 2 + 32 + COOKIE_SIZE;
/// Shortest cookie echo: header, cookie, the shortest message 1.
pub const COOKIE_ECHO_MIN_LEN: usize = 2 + COOKIE_SIZE + themis_handshake::MSG1_MIN_LEN;
/// Longest cookie echo: header, cookie, the longest message 1 (a closed network's).
pub const COOKIE_ECHO_MAX_LEN: usize = 2 + COOKIE_SIZE + themis_handshake::MSG1_CLOSED_MAX_LEN;
/// Label of the hash a cookie is the MAC of: `cookie = MAC(secret, H(LABEL_COOKIE; address,
/// N_A))` (PROTOCOL.md §5.2, "Cookies").
pub const LABEL_COOKIE: &str = "themis/v1/cookie";

/// Default largest frame, header and tag included (16 MiB): the default of
/// `ChannelConfig::max_frame_len`, `TcpConfig::max_frame_len` and `MemConfig::max_frame_len`.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Largest UDP payload over IPv4 (65,535 − 20 (IPv4) − 8 (UDP)): the ceiling of
/// `UdpConfig::max_frame_len`, whose default is the path-MTU-safe 1,500 − 40 (IPv6) − 8 (UDP).
pub const UDP_MAX_PAYLOAD: usize = 65_535 - 20 - 8;

/// First byte of the response a [`crate::HandlerRegistry`] sends for a command whose protocol
/// id it does not serve: `FF ‖ protocol id` (PROTOCOL.md §5.4). No protocol's response may
/// start with it (for CBOR it is the "break" code, never the start of a data item).
pub const UNKNOWN_PROTOCOL: u8 = 0xFF;

/// Protocol id `0x00` is never registered: an empty command payload, which has no protocol id,
/// is refused as protocol `0x00`.
pub const RESERVED_PROTOCOL: u8 = 0x00;

// No amplification (checked at compile time): each control answer is no larger than the
// smallest frame it answers. Identify: request and answer are both IDENTIFY_LEN. Identity
// mismatch answers a message 1; mode mismatch answers a message 1 or an insecure command;
// unknown session answers a secure command; busy an authenticated command of either mode;
// message 2 answers a message 1 (on a closed network both carry a certificate, PROTOCOL.md
// §2.10, and the responder answers only a message 1 that carries one).
const _: () = assert!(IDENTITY_MISMATCH_LEN <= themis_handshake::MSG1_MIN_LEN);
const _: () = assert!(MODE_MISMATCH_LEN <= INSECURE_HEADER_LEN);
const _: () = assert!(UNKNOWN_SESSION_LEN <= SECURE_HEADER_LEN + TAG_LEN);
const _: () = assert!(BUSY_LEN <= SECURE_HEADER_LEN + TAG_LEN);
const _: () = assert!(BUSY_LEN <= INSECURE_HEADER_LEN);
const _: () = assert!(themis_handshake::MSG2_LEN <= themis_handshake::MSG1_MIN_LEN);
// A cookie answers a message 1; message 2 (or an identity mismatch) answers a cookie echo.
const _: () = assert!(COOKIE_LEN <= themis_handshake::MSG1_MIN_LEN);
const _: () = assert!(themis_handshake::MSG2_LEN <= COOKIE_ECHO_MIN_LEN);
const _: () = assert!(IDENTITY_MISMATCH_LEN <= COOKIE_ECHO_MIN_LEN);
// On a closed network both messages carry a certificate: still no amplification, directly or
// behind a cookie.
const _: () = assert!(themis_handshake::MSG2_CLOSED_LEN <= themis_handshake::MSG1_CLOSED_MIN_LEN);
const _: () = assert!(
    themis_handshake::MSG2_CLOSED_LEN <= 2 + COOKIE_SIZE + themis_handshake::MSG1_CLOSED_MIN_LEN
);
// The type ranges do not overlap.
const _: () = assert!(*HANDSHAKE_TYPES.end() < TYPE_SECURE_COMMAND);
const _: () = assert!(TYPE_INSECURE_RESPONSE < *TRANSPORT_TYPE_RANGE.start());
const _: () = assert!(*TRANSPORT_TYPE_RANGE.end() < *CONTROL_TYPE_RANGE.start());
