//! The checks every transport makes on the two bytes every frame starts with (the constants
//! are in [`crate::wire`]).

use super::error::TransportError;
use crate::wire::{TRANSPORT_TYPE_RANGE, VERSION as FRAME_VERSION};

/// Why an incoming frame was refused before reaching the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// Shorter than [`crate::wire::MIN_FRAME_LEN`] or a version other than
    /// [`crate::wire::VERSION`].
    Garbage,
    /// A type in [`crate::wire::TRANSPORT_TYPE_RANGE`] where the transport does not expect one.
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
