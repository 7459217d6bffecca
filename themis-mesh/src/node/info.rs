//! The node-info request (PROTOCOL.md §7.6, beyond the paper): what a ring member says about
//! itself to another member — its wall clock, how many services it provides, how long it has
//! run and which version of themis it runs. Operators use it through
//! [`MeshNode::node_info`]: the cluster view (`themis members`) counts services with it, the
//! doctor (`themis check`) measures the clock offset to the neighbours, and a node about to
//! join asks its bootstrap nodes first so that a mismatch (network, identity, mode) is named at
//! once instead of after a join's timeouts.
//!
//! Request (command payload): exactly `0x03`, the protocol id of node-info (PROTOCOL.md §5.4),
//! with nothing after it.
//! Response: `0x00 ‖ 0x01 (format) ‖ unix_ms: u64 ‖ uptime_secs: u64 ‖ services: u16 ‖
//! version_len: u8 ‖ version: UTF-8`, or a call error (`0x01 ‖ kind ‖ message`, §7.3).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use themis_channel::PeerAddr;
use themis_crypto::NodeId;
use themis_dht::Contact;

use super::wire::{CallResponse, RemoteErrorKind, encode_response};
use super::{MeshNode, now};
use crate::Error;

/// The protocol id of node-info commands on the shared endpoint (PROTOCOL.md §5.4: `0x01` is
/// the DHT, `0x02` service calls).
pub(crate) const PROTOCOL_NODE_INFO: u8 = 0x03;
/// Response status: the info follows (the ok status of a call response).
const STATUS_OK: u8 = 0x00;
/// The layout version of the info that follows the status byte.
const FORMAT: u8 = 0x01;
/// Size of the fixed part of an answer: status, format, unix_ms, uptime, services, version_len.
const FIXED: usize = 1 + 1 + 8 + 8 + 2 + 1;
/// Longest version string sent or accepted.
pub(crate) const MAX_VERSION: usize = 32;
/// The version this implementation reports.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a ring member says about itself (an answer to [`MeshNode::node_info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeInfo {
    /// The node that answered (authenticated by the secure channel in secure mode).
    pub id: NodeId,
    /// Its wall clock when it answered, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// How long its mesh node has run.
    pub uptime: Duration,
    /// How many services it provides.
    pub services: u16,
    /// The themis version it runs (at most 32 bytes).
    pub version: String,
    /// The round trip of the request, measured here.
    pub rtt: Duration,
    /// This node's wall clock when the request was sent, in milliseconds since the Unix epoch.
    pub asked_at_unix_ms: u64,
}

impl NodeInfo {
    /// The other node's clock minus this node's, in milliseconds, assuming the answer was
    /// written halfway through the round trip (NTP's estimate; off by at most `rtt / 2`).
    pub fn clock_offset_ms(&self) -> i64 {
        let half = i64::try_from(self.rtt.as_millis() / 2).unwrap_or(i64::MAX);
        let theirs = i64::try_from(self.unix_ms).unwrap_or(i64::MAX);
        let ours = i64::try_from(self.asked_at_unix_ms).unwrap_or(i64::MAX);
        theirs.saturating_sub(ours.saturating_add(half))
    }
}

/// The fields of an info answer, as they travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InfoBody {
    pub(crate) unix_ms: u64,
    pub(crate) uptime_secs: u64,
    pub(crate) services: u16,
    pub(crate) version: String,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Encodes an answer (a version longer than [`MAX_VERSION`] is cut on a char boundary).
pub(crate) fn encode_info(b: &InfoBody) -> Bytes {
    let mut end = b.version.len().min(MAX_VERSION);
    while !b.version.is_char_boundary(end) {
        end -= 1;
    }
    let v = b.version.get(..end).unwrap_or("");
    let mut out = BytesMut::with_capacity(FIXED + v.len());
    out.put_u8(STATUS_OK);
    out.put_u8(FORMAT);
    out.put_u64(b.unix_ms);
    out.put_u64(b.uptime_secs);
    out.put_u16(b.services);
    out.put_u8(u8::try_from(v.len()).unwrap_or(0));
    out.put_slice(v.as_bytes());
    out.freeze()
}

/// Decodes an answer; `None` unless it is an ok answer of format 1 whose version is exactly
/// `version_len` bytes of UTF-8 (at most [`MAX_VERSION`]).
pub(crate) fn decode_info(b: &[u8]) -> Option<InfoBody> {
    let (fixed, version) = (b.get(..FIXED)?, b.get(FIXED..)?);
    if fixed.first() != Some(&STATUS_OK) || fixed.get(1) != Some(&FORMAT) {
        return None;
    }
    let u64_at = |i: usize| Some(u64::from_be_bytes(fixed.get(i..i + 8)?.try_into().ok()?));
    let services = u16::from_be_bytes(fixed.get(18..20)?.try_into().ok()?);
    let len = usize::from(*fixed.get(20)?);
    if len > MAX_VERSION || version.len() != len {
        return None;
    }
    Some(InfoBody {
        unix_ms: u64_at(2)?,
        uptime_secs: u64_at(10)?,
        services,
        version: std::str::from_utf8(version).ok()?.to_owned(),
    })
}

/// The node-info answer under arbitrary bytes, for fuzzing (`fuzz/`): what decodes must encode
/// back to the same bytes. `Err` names the failed check (a bug).
pub(crate) fn fuzz_roundtrip(b: &[u8]) -> Result<bool, String> {
    let Some(info) = decode_info(b) else {
        return Ok(false);
    };
    if encode_info(&info) != b {
        return Err(format!("info answer {info:?} does not round-trip"));
    }
    Ok(true)
}

/// The provider side: the answer to a node-info command whose `payload` follows the protocol
/// id, given how many services this node provides and when it started. Anything after the id
/// is malformed.
pub(crate) fn answer(payload: &[u8], services: usize, started: Instant) -> Bytes {
    if !payload.is_empty() {
        return encode_response(&CallResponse::Error {
            kind: RemoteErrorKind::Malformed,
            message: "a node-info request is the single byte 0x03".into(),
        });
    }
    encode_info(&InfoBody {
        unix_ms: unix_ms(SystemTime::now()),
        uptime_secs: now().saturating_duration_since(started).as_secs(),
        services: u16::try_from(services).unwrap_or(u16::MAX),
        version: VERSION.to_owned(),
    })
}

impl MeshNode {
    /// Asks the node at `contact` about itself (PROTOCOL.md §7.6): its clock, its services, its
    /// uptime and version. A contact without an id is identified first (the endpoint's
    /// `identify`), so a bare bootstrap address works too. Fails like any request over the
    /// endpoint: a [`Error::Channel`] names an unreachable node, a handshake timeout, an
    /// identity or mode mismatch; a node that does not know the request (an older themis)
    /// gives [`Error::UnexpectedAnswer`]. Within the endpoint's handshake and request timeouts.
    pub async fn node_info(&self, contact: Contact) -> Result<NodeInfo, Error> {
        let endpoint = self.inner.dht.endpoint();
        let id = match contact.id {
            Some(id) => id,
            None => endpoint.identify(contact.addr).await?.0,
        };
        let asked_at_unix_ms = unix_ms(SystemTime::now());
        let started = now();
        let answer = if id == self.id() {
            let services = self.provided_services().len();
            answer(&[], services, self.inner.started)
        } else {
            let peer = PeerAddr {
                id,
                addr: contact.addr,
            };
            endpoint
                .request(&peer, Bytes::from_static(&[PROTOCOL_NODE_INFO]))
                .await?
        };
        let rtt = now().saturating_duration_since(started);
        let body = decode_info(&answer).ok_or(Error::UnexpectedAnswer {
            peer: id,
            request: "node-info",
        })?;
        Ok(NodeInfo {
            id,
            unix_ms: body.unix_ms,
            uptime: Duration::from_secs(body.uptime_secs),
            services: body.services,
            version: body.version,
            rtt,
            asked_at_unix_ms,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn answer_layout() {
        let b = encode_info(&InfoBody {
            unix_ms: 0x0102_0304_0506_0708,
            uptime_secs: 9,
            services: 3,
            version: "0.1.0".into(),
        });
        assert_eq!(
            &b[..],
            &[
                0x00, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 9, 0, 3, 5, b'0', b'.',
                b'1', b'.', b'0'
            ]
        );
    }

    #[test]
    fn nothing_after_the_protocol_id_is_a_request() {
        // `answer` sees the payload after the protocol id, which the registry strips.
        let t = now();
        assert!(decode_info(&answer(&[], 2, t)).is_some());
        for bad in [&[PROTOCOL_NODE_INFO][..], &[0], &[0x02, 1]] {
            let a = answer(bad, 2, t);
            assert_eq!(a[0], 0x01, "{bad:?}");
            assert!(decode_info(&a).is_none());
        }
    }

    #[test]
    fn an_unknown_protocol_refusal_is_not_an_answer() {
        // What a node without node-info answers: the registry's `FF ‖ id`.
        assert!(decode_info(&[0xFF, PROTOCOL_NODE_INFO]).is_none());
    }

    proptest! {
        #[test]
        fn answers_round_trip(unix_ms in any::<u64>(), uptime_secs in any::<u64>(), services in any::<u16>(), version in ".{0,32}") {
            let b = InfoBody { unix_ms, uptime_secs, services, version };
            let got = decode_info(&encode_info(&b)).unwrap();
            prop_assert!(b.version.starts_with(&got.version));
            prop_assert_eq!(got.version.len().min(MAX_VERSION), got.version.len());
            prop_assert_eq!((got.unix_ms, got.uptime_secs, got.services), (unix_ms, uptime_secs, services));
        }

        #[test]
        fn any_bytes_decode_without_panic(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode_info(&b);
        }

        #[test]
        fn a_cut_or_padded_answer_is_refused(cut in 0usize..26, pad in 1usize..4) {
            let b = encode_info(&InfoBody { unix_ms: 1, uptime_secs: 2, services: 3, version: "0.1.0".into() });
            prop_assert!(decode_info(&b[..cut]).is_none());
            let mut longer = b.to_vec();
            longer.extend(std::iter::repeat_n(b'x', pad));
            prop_assert!(decode_info(&longer).is_none());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod vectors {
    use super::*;

    /// The checked-in vectors (PROTOCOL.md §7.6).
    const VECTORS: &str = include_str!("../../tests/vectors/node_info.txt");

    fn vector(name: &str) -> Vec<u8> {
        let line = VECTORS
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .unwrap();
        hex::decode(line.trim()).unwrap()
    }

    #[test]
    fn known_answers() {
        assert_eq!(vector("request"), [PROTOCOL_NODE_INFO]);
        let answer = InfoBody {
            unix_ms: 1_800_000_000_000,
            uptime_secs: 3600,
            services: 2,
            version: "0.1.0".into(),
        };
        assert_eq!(encode_info(&answer).to_vec(), vector("answer"));
        assert_eq!(decode_info(&vector("answer")), Some(answer));
        // The endpoint's registry strips the protocol id before the handler sees the payload.
        let refused = answer_fn(&vector("malformed_request")[1..]);
        assert_eq!(&refused[..2], &[0x01, 0x03]);
        assert_eq!(decode_info(&vector("unknown_protocol")), None);
    }

    fn answer_fn(payload: &[u8]) -> Bytes {
        answer(payload, 0, now())
    }
}
