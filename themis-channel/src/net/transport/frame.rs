//! The two bytes every frame starts with, and the transport's own control frames.

use std::ops::RangeInclusive;

use super::error::TransportError;

/// The protocol version byte every frame starts with.
pub const FRAME_VERSION: u8 = 0x01;

/// The shortest valid frame: version and type.
pub const MIN_FRAME_LEN: usize = 2;

/// Frame types reserved for the transport itself (the TCP hello and close frames). 0x38..=0x3F
/// belong to the endpoint's control messages and pass through every transport.
pub const TRANSPORT_TYPE_RANGE: RangeInclusive<u8> = 0x30..=0x37;

/// TCP hello: the first frame on a TCP connection, sent by the connecting side to announce
/// its listening address (PROTOCOL.md, "Transport").
pub const TRANSPORT_HELLO: u8 = 0x30;

/// TCP welcome: `01 31`, the acceptor's answer to a valid hello. The dialer sends nothing but
/// the hello before it (PROTOCOL.md, "Transport").
pub const TRANSPORT_WELCOME: u8 = 0x31;

/// TCP goodbye: `01 32`, the last frame but the ack a side sends on a connection it closes
/// (PROTOCOL.md, "Transport").
pub const TRANSPORT_GOODBYE: u8 = 0x32;

/// TCP goodbye-ack: `01 33`, "I have read your goodbye and everything before it".
pub const TRANSPORT_GOODBYE_ACK: u8 = 0x33;

/// Why an incoming frame was refused before reaching the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// Shorter than [`MIN_FRAME_LEN`] or a version other than [`FRAME_VERSION`].
    Garbage,
    /// A type in [`TRANSPORT_TYPE_RANGE`] where the transport does not expect one.
    Reserved,
}

/// Checks a frame received from a peer: version byte, minimum length, type outside the range
/// the transport keeps for itself.
pub(crate) fn check_incoming(frame: &[u8]) -> Result<(), Malformed> {
    match frame {
        [FRAME_VERSION, ty, ..] if TRANSPORT_TYPE_RANGE.contains(ty) => Err(Malformed::Reserved),
        [FRAME_VERSION, _, ..] => Ok(()),
        _ => Err(Malformed::Garbage),
    }
}

/// Checks a frame the endpoint asks a transport to send: at least [`MIN_FRAME_LEN`] bytes,
/// [`FRAME_VERSION`] first, a type outside [`TRANSPORT_TYPE_RANGE`], at most `max` bytes. Every
/// [`Transport`](super::Transport) enforces these rules in `send`, in this order.
pub fn check_outgoing_frame(frame: &[u8], max: usize) -> Result<(), TransportError> {
    if frame.len() > max {
        return Err(TransportError::FrameTooLarge {
            len: frame.len(),
            max,
        });
    }
    match check_incoming(frame) {
        Ok(()) => Ok(()),
        Err(Malformed::Garbage) => Err(TransportError::InvalidFrame {
            reason: "a frame must be at least 2 bytes and start with version 0x01",
        }),
        Err(Malformed::Reserved) => Err(TransportError::InvalidFrame {
            reason: "frame types 0x30-0x37 are reserved for the transport",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incoming_rules() {
        assert_eq!(check_incoming(&[]), Err(Malformed::Garbage));
        assert_eq!(check_incoming(&[1]), Err(Malformed::Garbage));
        assert_eq!(check_incoming(&[2, 0x10]), Err(Malformed::Garbage));
        assert_eq!(check_incoming(&[1, 0x30]), Err(Malformed::Reserved));
        assert_eq!(check_incoming(&[1, 0x37, 9]), Err(Malformed::Reserved));
        assert_eq!(check_incoming(&[1, 0x38, 9]), Ok(()));
        assert_eq!(check_incoming(&[1, 0x10]), Ok(()));
        assert_eq!(check_incoming(&[1, 0x40, 1, 2]), Ok(()));
    }

    #[test]
    fn outgoing_limit_checked_first() {
        assert!(matches!(
            check_outgoing_frame(&[1, 0x10, 0], 2),
            Err(TransportError::FrameTooLarge { len: 3, max: 2 })
        ));
        assert!(check_outgoing_frame(&[1, 0x10, 0], 3).is_ok());
        assert!(matches!(
            check_outgoing_frame(&[1, 0x30], 3),
            Err(TransportError::InvalidFrame { .. })
        ));
    }
}
