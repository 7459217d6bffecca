//! The bytes of a service call (PROTOCOL.md §7.2, §7.3).
//!
//! Request (command payload of the endpoint):
//! `0x02 | name_len: u8 | name: name_len bytes UTF-8 | body`, or, with call options,
//! `0x02 | 0x00 | opts_len: u8 | options | name_len | name | body` (options: `type | len |
//! value` each; `0x01` hops, one byte; `0x02` the caller's remaining time in ms, u32; `0x80`
//! the body is an HTTP envelope of the given version, one byte; types `0x80..` are critical).
//! Response: `0x00 | body` (ok), `0x01 | kind: u8 | message: UTF-8` (error),
//! `0x02 | code: u16 | body` (the application refused the request; the provider is healthy) or
//! `0x03 | code: u16 | body` (the application failed with an answer; only to an HTTP call).
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
/// Response status: the application refused the request (a caller error, such as an HTTP
/// 4xx of a sidecar's upstream); a code and a body follow.
const STATUS_REJECTED: u8 = 0x02;
/// Response status: the application failed and answered (an HTTP 5xx of a sidecar's upstream,
/// sent only in answer to a call with [`OPT_HTTP`]); a code and a body follow.
const STATUS_FAILED: u8 = 0x03;
/// `name_len` value announcing call options before the name.
const OPTIONS_FOLLOW: u8 = 0x00;
/// Call option: the hop count (one byte).
const OPT_HOPS: u8 = 0x01;
/// Call option: the caller's remaining time for the call, in milliseconds (u32 BE).
const OPT_BUDGET: u8 = 0x02;
/// Call option: the body is an HTTP request envelope and the answer's body an HTTP response
/// envelope (PROTOCOL.md §7.8), of the version given (one byte).
const OPT_HTTP: u8 = 0x80;
/// The one HTTP envelope version this implementation speaks.
pub const HTTP_ENVELOPE_VERSION: u8 = 0x01;
/// Option types from this one on are critical: a provider that does not know one refuses the
/// call as malformed (unrun) instead of skipping it.
const OPT_CRITICAL: u8 = 0x80;
/// Most calls a call may be nested in (hops) before it is refused (issue 12, loop protection).
pub const MAX_HOPS: u8 = 8;
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
/// Error kind: the provider's handler failed.
const KIND_HANDLER: u8 = 0x04;
/// Error kind: the provider could not reach the application (its upstream refused the
/// connection): the call did not run.
const KIND_UNREACHABLE: u8 = 0x05;
/// Error kind: the handler did not answer in time (it may have run).
const KIND_TIMEOUT: u8 = 0x06;
/// Error kind: the service is at its concurrency limit on the provider: the call did not run.
const KIND_BUSY: u8 = 0x07;
/// Error kind: the call has passed through more than [`MAX_HOPS`] calls: refused unrun.
const KIND_HOP_LIMIT: u8 = 0x08;

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
    /// The provider's handler reported a failure (it ran, or may have).
    Handler,
    /// The provider could not reach the application behind it (its upstream refused the
    /// connection): the call did not run.
    Unreachable,
    /// The provider's handler did not answer in time: the call may have run.
    Timeout,
    /// The service is at its concurrency limit on the provider: the call did not run.
    Busy,
    /// The call has been nested in more than [`MAX_HOPS`] calls (a service calling itself
    /// through the mesh, directly or not): refused unrun.
    HopLimit,
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
            Self::Unreachable => KIND_UNREACHABLE,
            Self::Timeout => KIND_TIMEOUT,
            Self::Busy => KIND_BUSY,
            Self::HopLimit => KIND_HOP_LIMIT,
            Self::Other(b) => b,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Self {
        match b {
            KIND_UNKNOWN_SERVICE => Self::UnknownService,
            KIND_ACCESS_DENIED => Self::AccessDenied,
            KIND_MALFORMED => Self::Malformed,
            KIND_HANDLER => Self::Handler,
            KIND_UNREACHABLE => Self::Unreachable,
            KIND_TIMEOUT => Self::Timeout,
            KIND_BUSY => Self::Busy,
            KIND_HOP_LIMIT => Self::HopLimit,
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
            Self::Unreachable => f.write_str("application unreachable"),
            Self::Timeout => f.write_str("handler timeout"),
            Self::Busy => f.write_str("provider busy"),
            Self::HopLimit => f.write_str("hop limit"),
            Self::Other(b) => write!(f, "error kind {b:#04x}"),
        }
    }
}

/// A decoded call: the service name, its options and the request body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CallRequest {
    pub(crate) service: String,
    /// Calls this one is nested in (0: a call from outside the mesh).
    pub(crate) hops: u8,
    /// The caller's remaining time when it sent the call, in milliseconds (none: it did not
    /// say).
    pub(crate) budget_ms: Option<u32>,
    /// The body is an HTTP request envelope (option `0x80`).
    pub(crate) http: bool,
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
    /// The application refused the request with `code` (a caller error: the provider is
    /// healthy).
    Rejected {
        code: u16,
        body: Bytes,
    },
    /// The application failed with `code` and an answer (a provider failure; only to an HTTP
    /// call).
    Failed {
        code: u16,
        body: Bytes,
    },
}

/// Encodes a call nested in `hops` calls, with the caller's remaining time `budget_ms`;
/// `None` if the name is empty or longer than [`MAX_NAME`]; `http` marks the body an HTTP
/// envelope. Without options (`hops` 0, no budget, not HTTP) the layout of nodes before call
/// options.
pub(crate) fn encode_request(
    service: &str,
    hops: u8,
    budget_ms: Option<u32>,
    http: bool,
    body: &[u8],
) -> Option<Bytes> {
    let len = u8::try_from(service.len()).ok()?;
    if service.is_empty() || service.len() > MAX_NAME {
        return None;
    }
    let mut out = BytesMut::with_capacity(14 + service.len() + body.len());
    out.put_u8(TAG_SERVICE_CALL);
    if hops > 0 || budget_ms.is_some() || http {
        let opts_len = if hops > 0 { 3 } else { 0 }
            + if budget_ms.is_some() { 6 } else { 0 }
            + if http { 3 } else { 0 };
        out.put_u8(OPTIONS_FOLLOW);
        out.put_u8(opts_len);
        if hops > 0 {
            out.put_slice(&[OPT_HOPS, 1, hops]);
        }
        if let Some(ms) = budget_ms {
            out.put_slice(&[OPT_BUDGET, 4]);
            out.put_u32(ms);
        }
        if http {
            out.put_slice(&[OPT_HTTP, 1, HTTP_ENVELOPE_VERSION]);
        }
    }
    out.put_u8(len);
    out.put_slice(service.as_bytes());
    out.put_slice(body);
    Some(out.freeze())
}

/// The options of a call.
struct Options {
    hops: u8,
    budget_ms: Option<u32>,
    http: bool,
}

/// Reads the options of a call (hops, budget, HTTP); `None` if one is malformed, a known one
/// repeats, or a critical one (`0x80..`) is unknown (or names an envelope version this
/// implementation does not speak). Unknown options below `0x80` are skipped (a newer caller's).
fn decode_options(mut opts: &[u8]) -> Option<Options> {
    let (mut hops, mut budget, mut http) = (None, None, None);
    while let Some((&ty, rest)) = opts.split_first() {
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..usize::from(len))?;
        opts = rest.get(usize::from(len)..)?;
        match ty {
            OPT_HOPS => {
                let [h] = value else { return None };
                if hops.replace(*h).is_some() {
                    return None;
                }
            }
            OPT_BUDGET => {
                let ms = u32::from_be_bytes(<[u8; 4]>::try_from(value).ok()?);
                if budget.replace(ms).is_some() {
                    return None;
                }
            }
            OPT_HTTP if value != [HTTP_ENVELOPE_VERSION] || http.replace(true).is_some() => {
                return None;
            }
            OPT_HTTP => {}
            t if t >= OPT_CRITICAL => return None,
            _ => {}
        }
    }
    Some(Options {
        hops: hops.unwrap_or(0),
        budget_ms: budget,
        http: http.unwrap_or(false),
    })
}

/// Decodes a call after its protocol id (which the endpoint's registry strips). The endpoint
/// already bounds the payload's size.
pub(crate) fn decode_request(payload: &Bytes) -> Option<CallRequest> {
    let (&first, _) = payload.split_first()?;
    let (o, at) = if first == OPTIONS_FOLLOW {
        let opts_len = usize::from(*payload.get(1)?);
        let opts = payload.get(2..2 + opts_len)?;
        (decode_options(opts)?, 2 + opts_len)
    } else {
        (
            Options {
                hops: 0,
                budget_ms: None,
                http: false,
            },
            0,
        )
    };
    let len = usize::from(*payload.get(at)?);
    if len == 0 || len > MAX_NAME {
        return None;
    }
    let name = payload.get(at + 1..at + 1 + len)?;
    let service = std::str::from_utf8(name).ok()?.to_owned();
    let body = payload.slice(at + 1 + len..);
    Some(CallRequest {
        service,
        hops: o.hops,
        budget_ms: o.budget_ms,
        http: o.http,
        body,
    })
}

/// The call payloads under arbitrary bytes, for fuzzing (`fuzz/`): what decodes as a request
/// or a response must encode to bytes that decode to the same value. Returns whether each
/// decoded; `Err` names the failed check (a bug).
pub(crate) fn fuzz_roundtrip(bytes: &[u8]) -> Result<(bool, bool), String> {
    let payload = Bytes::copy_from_slice(bytes);
    let req = decode_request(&payload);
    if let Some(r) = &req {
        let again = encode_request(&r.service, r.hops, r.budget_ms, r.http, &r.body)
            .ok_or_else(|| format!("request {r:?} decodes but does not encode"))?;
        // The encoding starts with the protocol id, which the endpoint strips before decoding.
        if again.first() != Some(&TAG_SERVICE_CALL)
            || decode_request(&again.slice(1..)).as_ref() != Some(r)
        {
            return Err(format!("request {r:?} does not round-trip"));
        }
    }
    let rsp = decode_response(&payload);
    if let Some(r) = &rsp
        && decode_response(&encode_response(r)).as_ref() != Some(r)
    {
        return Err(format!("response {r:?} does not round-trip"));
    }
    Ok((req.is_some(), rsp.is_some()))
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
        CallResponse::Rejected { code, body } | CallResponse::Failed { code, body } => {
            let status = if matches!(r, CallResponse::Rejected { .. }) {
                STATUS_REJECTED
            } else {
                STATUS_FAILED
            };
            let mut out = BytesMut::with_capacity(3 + body.len());
            out.put_u8(status);
            out.put_u16(*code);
            out.put_slice(body);
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
        STATUS_REJECTED | STATUS_FAILED => {
            let code = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
            let body = payload.slice(3..);
            Some(if status == STATUS_REJECTED {
                CallResponse::Rejected { code, body }
            } else {
                CallResponse::Failed { code, body }
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

    /// The fuzz hook (fuzz/fuzz_targets/mesh_call.rs) round-trips a call with options and each
    /// kind of response.
    #[test]
    fn fuzz_hook_round_trips_calls_and_responses() {
        let call = encode_request("echo", 0, None, false, b"hi").unwrap();
        assert_eq!(fuzz_roundtrip(&call[1..]), Ok((true, false)));
        // With options the payload starts with 0x00, which is also an ok response.
        let call = encode_request("echo", 2, Some(1500), false, b"hi").unwrap();
        assert_eq!(fuzz_roundtrip(&call[1..]), Ok((true, true)));
        for r in [
            CallResponse::Ok(Bytes::from_static(b"hi")),
            CallResponse::Rejected {
                code: 404,
                body: Bytes::new(),
            },
        ] {
            assert_eq!(
                fuzz_roundtrip(&encode_response(&r)).map(|(_, rsp)| rsp),
                Ok(true)
            );
        }
    }

    #[test]
    fn request_layout_is_tag_len_name_body() {
        let b = encode_request("ab", 0, None, false, b"xyz").unwrap();
        assert_eq!(&b[..], &[0x02, 2, b'a', b'b', b'x', b'y', b'z']);
        assert!(encode_request("", 0, None, false, b"").is_none());
        assert!(encode_request(&"n".repeat(MAX_NAME + 1), 0, None, false, b"").is_none());
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
        let b = encode_request("ab", 0, None, false, b"").unwrap();
        assert_eq!(b[0], TAG_SERVICE_CALL);
        assert!(decode_request(&b.slice(1..)).is_some());
    }

    /// Known answers (PROTOCOL.md §7.2, §7.3; `tests/vectors/service_call.txt`): `NAME HEX`
    /// lines, checked against the encoders.
    #[test]
    fn known_answer_vectors() {
        let text = include_str!("../../tests/vectors/service_call.txt");
        let mut seen = 0;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, hex) = line.split_once(' ').unwrap();
            let hex: String = hex.split_whitespace().collect();
            let want: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            let got = match name {
                "request" => encode_request("echo", 0, None, false, b"hi").unwrap(),
                "request_hops_3" => encode_request("echo", 3, None, false, b"hi").unwrap(),
                "request_budget_1500" => {
                    encode_request("echo", 0, Some(1500), false, b"hi").unwrap()
                }
                "request_hops_2_budget_1500" => {
                    encode_request("echo", 2, Some(1500), false, b"hi").unwrap()
                }
                "request_http" => encode_request("echo", 0, None, true, b"hi").unwrap(),
                "response_failed_503" => encode_response(&CallResponse::Failed {
                    code: 503,
                    body: Bytes::from_static(b"no"),
                }),
                "response_ok" => encode_response(&CallResponse::Ok(Bytes::from_static(b"hi"))),
                "response_unreachable" => encode_response(&CallResponse::Error {
                    kind: RemoteErrorKind::Unreachable,
                    message: "down".into(),
                }),
                "response_timeout" => encode_response(&CallResponse::Error {
                    kind: RemoteErrorKind::Timeout,
                    message: "slow".into(),
                }),
                "response_busy" => encode_response(&CallResponse::Error {
                    kind: RemoteErrorKind::Busy,
                    message: "full".into(),
                }),
                "response_hop_limit" => encode_response(&CallResponse::Error {
                    kind: RemoteErrorKind::HopLimit,
                    message: "loop".into(),
                }),
                "response_rejected_404" => encode_response(&CallResponse::Rejected {
                    code: 404,
                    body: Bytes::from_static(b"no"),
                }),
                other => panic!("unknown vector {other}"),
            };
            assert_eq!(&got[..], &want[..], "vector {name}");
            if name.starts_with("request") {
                assert!(decode_request(&got.slice(1..)).is_some(), "{name}");
            } else {
                assert!(decode_response(&got).is_some(), "{name}");
            }
            seen += 1;
        }
        assert_eq!(seen, 12);
    }

    #[test]
    fn options_are_checked_and_unknown_ones_skipped() {
        // Unknown option 0x7f (2 bytes) before hops 2.
        let b = Bytes::from_static(&[0x00, 7, 0x7f, 2, 9, 9, 0x01, 1, 2, 1, b'a', b'x']);
        let r = decode_request(&b).unwrap();
        assert_eq!(
            (r.service.as_str(), r.hops, &r.body[..]),
            ("a", 2, &b"x"[..])
        );
        // Hops twice, hops of 2 bytes, an option running past opts_len, a budget of 3 bytes:
        // malformed.
        for bad in [
            &[0x00, 6, 0x01, 1, 2, 0x01, 1, 2, 1, b'a'][..],
            &[0x00, 4, 0x01, 2, 0, 2, 1, b'a'][..],
            &[0x00, 2, 0x01, 1, 2, 1, b'a'][..],
            &[0x00, 5, 0x02, 3, 0, 0, 1, 1, b'a'][..],
        ] {
            assert!(
                decode_request(&Bytes::copy_from_slice(bad)).is_none(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn critical_options_are_understood_or_refused() {
        // The HTTP option of version 1 is read; another version, an unknown critical option,
        // or the option twice make the call malformed (so no provider runs an envelope as a
        // plain body).
        let ok = Bytes::from_static(&[0x00, 3, 0x80, 1, 1, 1, b'a', b'x']);
        let r = decode_request(&ok).unwrap();
        assert!(r.http);
        assert_eq!(&r.body[..], b"x");
        for bad in [
            &[0x00, 3, 0x80, 1, 2, 1, b'a'][..],
            &[0x00, 3, 0x81, 1, 1, 1, b'a'][..],
            &[0x00, 2, 0xff, 0, 1, b'a'][..],
            &[0x00, 6, 0x80, 1, 1, 0x80, 1, 1, 1, b'a'][..],
        ] {
            assert!(
                decode_request(&Bytes::copy_from_slice(bad)).is_none(),
                "{bad:?}"
            );
        }
        // Below 0x80 an unknown option is still skipped.
        let skip = Bytes::from_static(&[0x00, 2, 0x7f, 0, 1, b'a']);
        assert!(!decode_request(&skip).unwrap().http);
    }

    proptest! {
        #[test]
        fn request_round_trips(name in "[a-z]{1,128}", hops in any::<u8>(), budget in proptest::option::of(any::<u32>()), http in any::<bool>(), body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let b = encode_request(&name, hops, budget, http, &body).unwrap();
            let r = decode_request(&b.slice(1..)).unwrap();
            prop_assert_eq!(r.service, name);
            prop_assert_eq!(r.hops, hops);
            prop_assert_eq!(r.budget_ms, budget);
            prop_assert_eq!(r.http, http);
            prop_assert_eq!(&r.body[..], &body[..]);
        }

        #[test]
        fn response_round_trips(which in 0u8..4, kind in any::<u8>(), code in any::<u16>(), body in proptest::collection::vec(any::<u8>(), 0..256), msg in ".{0,100}") {
            let r = match which {
                0 => CallResponse::Ok(Bytes::from(body)),
                1 => CallResponse::Error { kind: RemoteErrorKind::from_byte(kind), message: msg },
                2 => CallResponse::Rejected { code, body: Bytes::from(body) },
                _ => CallResponse::Failed { code, body: Bytes::from(body) },
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
