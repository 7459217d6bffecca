//! The HTTP envelope (PROTOCOL.md §7.8): an HTTP request or response carried as the body of a
//! service call that has the HTTP option (`0x80`, §7.2), so that the transparent sidecar
//! (`/v1/call/{name}/{path…}`) keeps the method, target, headers and status end to end.
//!
//! Pure codec, no I/O. Every length is checked against the bytes present and against the
//! limits below before anything is allocated; the encoder refuses what the decoder would
//! refuse, so an envelope this agent sends always decodes.
//!
//! ```text
//! request : 01 01 | method_len u8 | method | target_len u16 | target | headers | body
//! response: 01 02 | status u16 | headers | body
//! headers : count u16 | count × (name_len u8 | name | value_len u16 | value)
//! ```

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use bytes::{BufMut, Bytes, BytesMut};

/// The envelope version (the value of the call option `0x80`, and the first byte).
pub(crate) const VERSION: u8 = themis_mesh::HTTP_ENVELOPE_VERSION;
/// Second byte: a request envelope.
const KIND_REQUEST: u8 = 0x01;
/// Second byte: a response envelope.
const KIND_RESPONSE: u8 = 0x02;
/// Longest method.
pub(crate) const MAX_METHOD: usize = 32;
/// Longest request target (path and query).
pub(crate) const MAX_TARGET: usize = 8192;
/// Most header lines.
pub(crate) const MAX_HEADERS: usize = 128;
/// Longest header value.
pub(crate) const MAX_VALUE: usize = 8192;
/// Most bytes of header names and values together.
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Why an envelope was refused (kept vague on purpose: it names the rule, not the bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EnvelopeError(pub(crate) &'static str);

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP envelope refused: {}", self.0)
    }
}

/// Header lines in order, repeats kept.
pub(crate) type Headers = Vec<(HeaderName, HeaderValue)>;

/// A request carried through the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpRequest {
    pub(crate) method: Method,
    /// Path and query, as the client sent them (percent-encoding kept).
    pub(crate) target: String,
    pub(crate) headers: Headers,
    pub(crate) body: Bytes,
}

/// A response carried back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: Headers,
    pub(crate) body: Bytes,
}

/// The lines of `map`, in its order (repeated names kept).
pub(crate) fn lines(map: &HeaderMap) -> Headers {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn check_headers(headers: &Headers) -> Result<(), EnvelopeError> {
    if headers.len() > MAX_HEADERS {
        return Err(EnvelopeError("more than 128 header lines"));
    }
    let mut total = 0usize;
    for (k, v) in headers {
        if k.as_str().len() > usize::from(u8::MAX) || v.len() > MAX_VALUE {
            return Err(EnvelopeError(
                "a header name over 255 bytes or value over 8192",
            ));
        }
        total += k.as_str().len() + v.len();
    }
    if total > MAX_HEADER_BYTES {
        return Err(EnvelopeError("header names and values over 64 KiB"));
    }
    Ok(())
}

fn put_headers(out: &mut BytesMut, headers: &Headers) {
    // check_headers bounds count and lengths: the casts below cannot truncate.
    out.put_u16(u16::try_from(headers.len()).unwrap_or(u16::MAX));
    for (k, v) in headers {
        out.put_u8(u8::try_from(k.as_str().len()).unwrap_or(u8::MAX));
        out.put_slice(k.as_str().as_bytes());
        out.put_u16(u16::try_from(v.len()).unwrap_or(u16::MAX));
        out.put_slice(v.as_bytes());
    }
}

fn headers_len(headers: &Headers) -> usize {
    2 + headers
        .iter()
        .map(|(k, v)| 3 + k.as_str().len() + v.len())
        .sum::<usize>()
}

fn valid_target(t: &[u8]) -> bool {
    !t.is_empty()
        && t.len() <= MAX_TARGET
        && t.first() == Some(&b'/')
        && t.iter().all(|b| (0x21..=0x7e).contains(b))
}

impl HttpRequest {
    /// The envelope's bytes; refused if a field breaks a limit of the decoder.
    pub(crate) fn encode(&self) -> Result<Bytes, EnvelopeError> {
        let m = self.method.as_str();
        if m.is_empty() || m.len() > MAX_METHOD {
            return Err(EnvelopeError("method longer than 32 bytes"));
        }
        if !valid_target(self.target.as_bytes()) {
            return Err(EnvelopeError(
                "target must be 1..=8192 visible ASCII bytes starting with /",
            ));
        }
        check_headers(&self.headers)?;
        let mut out = BytesMut::with_capacity(
            5 + m.len() + self.target.len() + headers_len(&self.headers) + self.body.len(),
        );
        out.put_slice(&[VERSION, KIND_REQUEST]);
        out.put_u8(u8::try_from(m.len()).unwrap_or(u8::MAX));
        out.put_slice(m.as_bytes());
        out.put_u16(u16::try_from(self.target.len()).unwrap_or(u16::MAX));
        out.put_slice(self.target.as_bytes());
        put_headers(&mut out, &self.headers);
        out.put_slice(&self.body);
        Ok(out.freeze())
    }

    /// Decodes a request envelope whose body is at most `max_body` bytes.
    pub(crate) fn decode(b: &Bytes, max_body: usize) -> Result<Self, EnvelopeError> {
        let mut r = Reader { b, at: 0 };
        r.prelude(KIND_REQUEST)?;
        let len = usize::from(r.u8()?);
        if len == 0 || len > MAX_METHOD {
            return Err(EnvelopeError("method length not 1..=32"));
        }
        let raw = r.take(len)?;
        let method = Method::from_bytes(raw).map_err(|_| EnvelopeError("method not a token"))?;
        if method.as_str().as_bytes() != raw {
            return Err(EnvelopeError("method not a token"));
        }
        let len = usize::from(r.u16()?);
        let raw = r.take(len)?;
        if !valid_target(raw) {
            return Err(EnvelopeError(
                "target must be 1..=8192 visible ASCII bytes starting with /",
            ));
        }
        let target = String::from_utf8(raw.to_vec()).map_err(|_| EnvelopeError("target"))?;
        let headers = r.headers()?;
        let body = r.rest(max_body)?;
        Ok(Self {
            method,
            target,
            headers,
            body,
        })
    }
}

impl HttpResponse {
    /// The envelope's bytes; refused if a field breaks a limit of the decoder.
    pub(crate) fn encode(&self) -> Result<Bytes, EnvelopeError> {
        check_headers(&self.headers)?;
        let mut out = BytesMut::with_capacity(4 + headers_len(&self.headers) + self.body.len());
        out.put_slice(&[VERSION, KIND_RESPONSE]);
        out.put_u16(self.status.as_u16());
        put_headers(&mut out, &self.headers);
        out.put_slice(&self.body);
        Ok(out.freeze())
    }

    /// Decodes a response envelope whose body is at most `max_body` bytes.
    pub(crate) fn decode(b: &Bytes, max_body: usize) -> Result<Self, EnvelopeError> {
        let mut r = Reader { b, at: 0 };
        r.prelude(KIND_RESPONSE)?;
        let status =
            StatusCode::from_u16(r.u16()?).map_err(|_| EnvelopeError("status not 100..=999"))?;
        let headers = r.headers()?;
        let body = r.rest(max_body)?;
        Ok(Self {
            status,
            headers,
            body,
        })
    }
}

/// A cursor over an envelope; every read checks the bytes are there.
struct Reader<'a> {
    b: &'a Bytes,
    at: usize,
}

const SHORT: EnvelopeError = EnvelopeError("truncated");

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], EnvelopeError> {
        let end = self.at.checked_add(n).ok_or(SHORT)?;
        let s = self.b.get(self.at..end).ok_or(SHORT)?;
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, EnvelopeError> {
        Ok(*self.take(1)?.first().ok_or(SHORT)?)
    }

    fn u16(&mut self) -> Result<u16, EnvelopeError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([
            *s.first().ok_or(SHORT)?,
            *s.get(1).ok_or(SHORT)?,
        ]))
    }

    fn prelude(&mut self, kind: u8) -> Result<(), EnvelopeError> {
        if self.u8()? != VERSION {
            return Err(EnvelopeError("unknown envelope version"));
        }
        if self.u8()? != kind {
            return Err(EnvelopeError("not the envelope kind expected"));
        }
        Ok(())
    }

    fn headers(&mut self) -> Result<Headers, EnvelopeError> {
        let count = usize::from(self.u16()?);
        if count > MAX_HEADERS {
            return Err(EnvelopeError("more than 128 header lines"));
        }
        let mut out = Vec::with_capacity(count);
        let mut total = 0usize;
        for _ in 0..count {
            let len = usize::from(self.u8()?);
            let raw = self.take(len)?;
            let name =
                HeaderName::from_bytes(raw).map_err(|_| EnvelopeError("header name invalid"))?;
            // Only the canonical (lower-case) spelling, so one header has one encoding.
            if name.as_str().as_bytes() != raw {
                return Err(EnvelopeError("header name not lower-case"));
            }
            let len = usize::from(self.u16()?);
            if len > MAX_VALUE {
                return Err(EnvelopeError("header value over 8192 bytes"));
            }
            let raw = self.take(len)?;
            let value =
                HeaderValue::from_bytes(raw).map_err(|_| EnvelopeError("header value invalid"))?;
            total += name.as_str().len() + len;
            if total > MAX_HEADER_BYTES {
                return Err(EnvelopeError("header names and values over 64 KiB"));
            }
            out.push((name, value));
        }
        Ok(out)
    }

    fn rest(&self, max_body: usize) -> Result<Bytes, EnvelopeError> {
        let body = self.b.slice(self.at.min(self.b.len())..);
        if body.len() > max_body {
            return Err(EnvelopeError(
                "body larger than the agent's limit (themis node --max-body)",
            ));
        }
        Ok(body)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Known answers (PROTOCOL.md §7.8; `tests/vectors/http_envelope.txt`): `NAME HEX` lines,
    /// checked against the encoders and decoded back.
    #[test]
    fn known_answer_vectors() {
        let text = include_str!("../../tests/vectors/http_envelope.txt");
        let mut seen = 0;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, bytes) = line.split_once(' ').unwrap();
            let want = Bytes::from(hex(bytes));
            let request = |method, target: &str, headers, body: &'static [u8]| HttpRequest {
                method,
                target: target.to_owned(),
                headers,
                body: Bytes::from_static(body),
            };
            let response = |code, headers, body: &'static [u8]| HttpResponse {
                status: StatusCode::from_u16(code).unwrap(),
                headers,
                body: Bytes::from_static(body),
            };
            match name {
                "request_get" => {
                    let r = request(Method::GET, "/a?b=1", h(&[("accept", "*/*")]), b"");
                    assert_eq!(r.encode().unwrap(), want, "{name}");
                    assert_eq!(HttpRequest::decode(&want, 1 << 20).unwrap(), r);
                }
                "request_post" => {
                    let r = request(
                        Method::POST,
                        "/p%20q",
                        h(&[("x-a", "1"), ("x-a", "2")]),
                        b"hi",
                    );
                    assert_eq!(r.encode().unwrap(), want, "{name}");
                    assert_eq!(HttpRequest::decode(&want, 1 << 20).unwrap(), r);
                }
                "response_204" => {
                    let r = response(204, h(&[]), b"");
                    assert_eq!(r.encode().unwrap(), want, "{name}");
                    assert_eq!(HttpResponse::decode(&want, 1 << 20).unwrap(), r);
                }
                "response_404" => {
                    let r = response(404, h(&[("content-type", "text/plain")]), b"no");
                    assert_eq!(r.encode().unwrap(), want, "{name}");
                    assert_eq!(HttpResponse::decode(&want, 1 << 20).unwrap(), r);
                }
                other => panic!("unknown vector {other}"),
            }
            seen += 1;
        }
        assert_eq!(seen, 4);
    }

    #[test]
    fn limits_are_enforced_both_ways() {
        let mut r = HttpRequest {
            method: Method::GET,
            target: "/".into(),
            headers: Vec::new(),
            body: Bytes::from_static(b"12345"),
        };
        let b = r.encode().unwrap();
        assert!(HttpRequest::decode(&b, 5).is_ok());
        assert!(HttpRequest::decode(&b, 4).is_err());
        r.headers = (0..=MAX_HEADERS)
            .map(|_| (HeaderName::from_static("a"), HeaderValue::from_static("b")))
            .collect();
        assert!(r.encode().is_err());
        r.headers = vec![(
            HeaderName::from_static("a"),
            HeaderValue::from_bytes(&vec![b'v'; MAX_VALUE + 1]).unwrap(),
        )];
        assert!(r.encode().is_err());
        r.headers = (0..9)
            .map(|_| {
                (
                    HeaderName::from_static("a"),
                    HeaderValue::from_bytes(&vec![b'v'; MAX_VALUE]).unwrap(),
                )
            })
            .collect();
        assert!(r.encode().is_err(), "over 64 KiB in all");
        for bad in ["", "x", "/a b", "/é"] {
            r.headers.clear();
            r.target = bad.into();
            assert!(r.encode().is_err(), "{bad}");
        }
        // A count announcing more lines than allowed is refused before anything is read.
        let b = Bytes::from(hex("01 02 00c8 ffff"));
        assert_eq!(
            HttpResponse::decode(&b, 10).unwrap_err(),
            EnvelopeError("more than 128 header lines")
        );
        // Upper-case names, another version, the other kind: refused.
        for bad in [
            "01 02 00c8 0001 01 41 0000",
            "02 02 00c8 0000",
            "01 01 00c8 0000",
        ] {
            assert!(
                HttpResponse::decode(&Bytes::from(hex(bad)), 10).is_err(),
                "{bad}"
            );
        }
    }

    fn arb_headers() -> impl Strategy<Value = Headers> {
        proptest::collection::vec(("[a-z][a-z0-9-]{0,20}", "[ -~]{0,40}"), 0..8).prop_map(|v| {
            v.into_iter()
                .map(|(k, val)| {
                    (
                        HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        HeaderValue::from_bytes(val.as_bytes()).unwrap(),
                    )
                })
                .collect()
        })
    }

    fn arb_request() -> impl Strategy<Value = HttpRequest> {
        (
            prop_oneof![
                Just(Method::GET),
                Just(Method::HEAD),
                Just(Method::POST),
                Just(Method::DELETE),
                "[A-Z]{1,32}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
            ],
            "/[!-~]{0,100}",
            arb_headers(),
            proptest::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(method, target, headers, body)| HttpRequest {
                method,
                target,
                headers,
                body: Bytes::from(body),
            })
    }

    fn arb_response() -> impl Strategy<Value = HttpResponse> {
        (
            100u16..=999,
            arb_headers(),
            proptest::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(code, headers, body)| HttpResponse {
                status: StatusCode::from_u16(code).unwrap(),
                headers,
                body: Bytes::from(body),
            })
    }

    proptest! {
        #[test]
        fn requests_round_trip(r in arb_request()) {
            let b = r.encode().unwrap();
            prop_assert_eq!(HttpRequest::decode(&b, 1 << 20).unwrap(), r);
        }

        #[test]
        fn responses_round_trip(r in arb_response()) {
            let b = r.encode().unwrap();
            prop_assert_eq!(HttpResponse::decode(&b, 1 << 20).unwrap(), r);
        }

        /// Any truncation inside the head is refused, never a panic (a truncation in the
        /// body is a shorter body, which the call's framing already rules out).
        #[test]
        fn truncated_heads_are_refused(r in arb_request(), s in arb_response(), cut in any::<proptest::sample::Index>()) {
            let b = r.encode().unwrap();
            let head = b.len() - r.body.len();
            let at = cut.index(head);
            prop_assert!(HttpRequest::decode(&b.slice(..at), 1 << 20).is_err());
            let b = s.encode().unwrap();
            let head = b.len() - s.body.len();
            let at = cut.index(head);
            prop_assert!(HttpResponse::decode(&b.slice(..at), 1 << 20).is_err());
        }

        /// Any mutation of the head decodes to something else or is refused, never a panic,
        /// and what decodes re-encodes to the same bytes (one encoding per message).
        #[test]
        fn mutated_envelopes_never_panic(r in arb_request(), s in arb_response(), at in any::<proptest::sample::Index>(), x in 1u8..=255) {
            let mut b = r.encode().unwrap().to_vec();
            let i = at.index(b.len());
            b[i] ^= x;
            let b = Bytes::from(b);
            if let Ok(d) = HttpRequest::decode(&b, 1 << 20) {
                prop_assert_ne!(&d, &r);
                prop_assert_eq!(d.encode().unwrap(), b);
            }
            let mut b = s.encode().unwrap().to_vec();
            let i = at.index(b.len());
            b[i] ^= x;
            let b = Bytes::from(b);
            if let Ok(d) = HttpResponse::decode(&b, 1 << 20) {
                prop_assert_ne!(&d, &s);
                prop_assert_eq!(d.encode().unwrap(), b);
            }
        }

        #[test]
        fn any_bytes_decode_without_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let b = Bytes::from(b);
            let _ = HttpRequest::decode(&b, 1 << 20);
            let _ = HttpResponse::decode(&b, 1 << 20);
        }
    }
}
