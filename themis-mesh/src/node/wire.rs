//! The bytes of a service call (PROTOCOL.md, "Service calls").
//!
//! Request (command payload of the endpoint):
//! `0x02 | name_len: u8 | name: name_len bytes UTF-8 | body`.
//! Response: `0x00 | body` (ok) or `0x01 | kind: u8 | message: UTF-8` (error).
//!
//! The first byte is the service call's protocol id on the shared endpoint (PROTOCOL.md §5.4):
//! the endpoint's registry routes by it (DHT commands carry `0x01`) and hands the rest over.

use bytes::{BufMut, Bytes, BytesMut};

/// The service call's protocol id: the first byte of every service-call command (PROTOCOL.md
/// §5.4).
pub(crate) const TAG_SERVICE_CALL: u8 = 0x02;
/// Response status: the handler's answer follows.
const STATUS_OK: u8 = 0x00;
/// Response status: an error kind and message follow.
const STATUS_ERROR: u8 = 0x01;
/// Longest error message sent or accepted (longer ones are cut on a char boundary).
pub(crate) const MAX_ERROR_MESSAGE: usize = 512;
/// Longest service name (the DHT's limit: one limit, one constant).
pub(crate) const MAX_NAME: usize = themis_dht::MAX_NAME_LEN;
/// [`MAX_NAME`] in words, for error messages that must be `&'static str`.
pub(crate) const NAME_RULE: &str = "must be 1..=128 bytes";
const _: () = assert!(MAX_NAME == 128, "NAME_RULE spells MAX_NAME out");
/// Error kind: the provider serves no service of that name.
const KIND_UNKNOWN_SERVICE: u8 = 0x01;
/// Error kind: the provider's access policy does not allow the caller.
const KIND_ACCESS_DENIED: u8 = 0x02;
/// Error kind: the provider could not parse the call.
const KIND_MALFORMED: u8 = 0x03;
/// Error kind: the provider's handler failed (or did not answer in time).
const KIND_HANDLER: u8 = 0x04;

/// Why a provider refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteErrorKind {
    /// The provider serves no service of that name (any more).
    UnknownService,
    /// The provider's access policy does not allow the caller.
    AccessDenied,
    /// The provider could not parse the call.
    Malformed,
    /// The provider's handler reported a failure.
    Handler,
    /// A kind this implementation does not know (from a newer peer).
    Other(u8),
}

impl RemoteErrorKind {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Self::UnknownService => KIND_UNKNOWN_SERVICE,
            Self::AccessDenied => KIND_ACCESS_DENIED,
            Self::Malformed => KIND_MALFORMED,
            Self::Handler => KIND_HANDLER,
            Self::Other(b) => b,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Self {
        match b {
            KIND_UNKNOWN_SERVICE => Self::UnknownService,
            KIND_ACCESS_DENIED => Self::AccessDenied,
            KIND_MALFORMED => Self::Malformed,
            KIND_HANDLER => Self::Handler,
            other => Self::Other(other),
        }
    }
}

impl std::fmt::Display for RemoteErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownService => f.write_str("unknown service"),
            Self::AccessDenied => f.write_str("access denied"),
            Self::Malformed => f.write_str("malformed call"),
            Self::Handler => f.write_str("handler failure"),
            Self::Other(b) => write!(f, "error kind {b:#04x}"),
        }
    }
}

/// A decoded call: the service name and the request body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CallRequest {
    pub(crate) service: String,
    pub(crate) body: Bytes,
}

/// A decoded call response.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CallResponse {
    Ok(Bytes),
    Error {
        kind: RemoteErrorKind,
        message: String,
    },
}

/// Encodes a call; `None` if the name is empty or longer than [`MAX_NAME`].
pub(crate) fn encode_request(service: &str, body: &[u8]) -> Option<Bytes> {
    let len = u8::try_from(service.len()).ok()?;
    if service.is_empty() || service.len() > MAX_NAME {
        return None;
    }
    let mut out = BytesMut::with_capacity(2 + service.len() + body.len());
    out.put_u8(TAG_SERVICE_CALL);
    out.put_u8(len);
    out.put_slice(service.as_bytes());
    out.put_slice(body);
    Some(out.freeze())
}

/// Decodes a call after its protocol id (which the endpoint's registry strips). The endpoint
/// already bounds the payload's size.
pub(crate) fn decode_request(payload: &Bytes) -> Option<CallRequest> {
    let (&len, rest) = payload.split_first()?;
    let len = usize::from(len);
    if len == 0 || len > MAX_NAME {
        return None;
    }
    let name = rest.get(..len)?;
    let service = std::str::from_utf8(name).ok()?.to_owned();
    let body = payload.slice(1 + len..);
    Some(CallRequest { service, body })
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// Encodes a response.
pub(crate) fn encode_response(r: &CallResponse) -> Bytes {
    match r {
        CallResponse::Ok(body) => {
            let mut out = BytesMut::with_capacity(1 + body.len());
            out.put_u8(STATUS_OK);
            out.put_slice(body);
            out.freeze()
        }
        CallResponse::Error { kind, message } => {
            let m = truncate(message, MAX_ERROR_MESSAGE);
            let mut out = BytesMut::with_capacity(2 + m.len());
            out.put_u8(STATUS_ERROR);
            out.put_u8(kind.to_byte());
            out.put_slice(m.as_bytes());
            out.freeze()
        }
    }
}

/// Decodes a response; `None` if it is empty, has an unknown status or a bad error message.
pub(crate) fn decode_response(payload: &Bytes) -> Option<CallResponse> {
    let (&status, rest) = payload.split_first()?;
    match status {
        STATUS_OK => Some(CallResponse::Ok(payload.slice(1..))),
        STATUS_ERROR => {
            let (&kind, msg) = rest.split_first()?;
            if msg.len() > MAX_ERROR_MESSAGE {
                return None;
            }
            let message = std::str::from_utf8(msg).ok()?.to_owned();
            Some(CallResponse::Error {
                kind: RemoteErrorKind::from_byte(kind),
                message,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_layout_is_tag_len_name_body() {
        let b = encode_request("ab", b"xyz").unwrap();
        assert_eq!(&b[..], &[0x02, 2, b'a', b'b', b'x', b'y', b'z']);
        assert!(encode_request("", b"").is_none());
        assert!(encode_request(&"n".repeat(MAX_NAME + 1), b"").is_none());
    }

    #[test]
    fn error_layout_and_truncation() {
        let r = CallResponse::Error {
            kind: RemoteErrorKind::AccessDenied,
            message: "é".repeat(MAX_ERROR_MESSAGE),
        };
        let b = encode_response(&r);
        assert_eq!(&b[..2], &[0x01, 0x02]);
        assert!(b.len() <= 2 + MAX_ERROR_MESSAGE);
        assert!(matches!(
            decode_response(&b),
            Some(CallResponse::Error {
                kind: RemoteErrorKind::AccessDenied,
                ..
            })
        ));
    }

    #[test]
    fn calls_and_dht_commands_have_protocol_ids_of_their_own() {
        // The endpoint's registry tells them apart by this byte alone (PROTOCOL.md §5.4).
        assert_ne!(TAG_SERVICE_CALL, themis_dht::DhtHandler::PROTOCOL_ID);
        let b = encode_request("ab", b"").unwrap();
        assert_eq!(b[0], TAG_SERVICE_CALL);
        assert!(decode_request(&b.slice(1..)).is_some());
    }

    proptest! {
        #[test]
        fn request_round_trips(name in "[a-z]{1,128}", body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let b = encode_request(&name, &body).unwrap();
            let r = decode_request(&b.slice(1..)).unwrap();
            prop_assert_eq!(r.service, name);
            prop_assert_eq!(&r.body[..], &body[..]);
        }

        #[test]
        fn response_round_trips(ok in any::<bool>(), kind in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..256), msg in ".{0,100}") {
            let r = if ok { CallResponse::Ok(Bytes::from(body)) } else {
                CallResponse::Error { kind: RemoteErrorKind::from_byte(kind), message: msg }
            };
            prop_assert_eq!(decode_response(&encode_response(&r)), Some(r));
        }

        #[test]
        fn any_bytes_decode_without_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let b = Bytes::from(b);
            let _ = decode_request(&b);
            let _ = decode_response(&b);
        }
    }
}
