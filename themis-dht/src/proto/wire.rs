//! The DHT messages (paper Table 1 plus what Zave's protocol needs) and their bounded CBOR codec.
//!
//! Every message is one CBOR data item: a serde externally-tagged enum, so a request is either a
//! text string (`"ping"`) for messages without fields or a one-entry map
//! `{"find": {"target": h'..', "records": true}}`. PROTOCOL.md gives the full schema.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use themis_crypto::{NodeId, PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, Signature};

use super::owner::{DELEGATION_LEN, Delegation};
use super::record::{ProviderRecord, Refusal, ServiceMetadata, check_metadata};
use crate::Error;

// ----- the crate's wire constants: labels and limits (PROTOCOL.md §6.3-§6.6) -----

/// Label of the object-id hash: `object_id = Transcript::digest(OBJECT_ID_LABEL, [name, [r]])`.
pub const OBJECT_ID_LABEL: &str = "themis/v1/object-id";
/// Label of the hash a provider signs.
pub const RECORD_SIG_LABEL: &str = "themis/v1/provider-record";
/// Label of the hash a provider signs to withdraw a record (a tombstone, PROTOCOL.md §6.4):
/// another label, so that no record's signature is ever a tombstone's, nor the reverse.
pub const TOMBSTONE_SIG_LABEL: &str = "themis/v1/provider-withdrawal";
/// Longest service name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 128;
/// Longest service version string, in bytes.
pub const MAX_VERSION_LEN: usize = 32;
/// Most tags on a record.
pub const MAX_TAGS: usize = 8;
/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 32;

/// Most peers in one message (successor lists, closer lists).
pub const MAX_PEERS: usize = 32;
/// Most records in one message (`owner`, `handoff`, `leave`).
pub const MAX_RECORDS: usize = 256;
/// CBOR nesting allowed while decoding.
const RECURSION_LIMIT: usize = 16;
/// An IPv4 socket address on the wire: 4 bytes of address, 2 of port.
const ADDR_V4_LEN: usize = 6;
/// An IPv6 socket address on the wire: 16 bytes of address, 2 of port.
const ADDR_V6_LEN: usize = 18;

/// `ip ‖ port` big-endian: [`ADDR_V4_LEN`] bytes for IPv4, [`ADDR_V6_LEN`] for IPv6.
pub(crate) fn addr_bytes(addr: &SocketAddr) -> AddrBytes {
    let mut out = AddrBytes {
        buf: [0; ADDR_V6_LEN],
        len: 0,
    };
    match addr {
        SocketAddr::V4(a) => out.push(&a.ip().octets()),
        SocketAddr::V6(a) => out.push(&a.ip().octets()),
    }
    out.push(&addr.port().to_be_bytes());
    out
}

/// `ip ‖ port` of one address, held inline: it is made for every peer and record that goes on
/// the wire and for every record digest, so it does not allocate.
pub(crate) struct AddrBytes {
    buf: [u8; ADDR_V6_LEN],
    len: usize,
}

impl AddrBytes {
    fn push(&mut self, bytes: &[u8]) {
        let free = self.buf.get_mut(self.len..).unwrap_or_default();
        for (b, v) in free.iter_mut().zip(bytes) {
            *b = *v;
        }
        self.len = (self.len + bytes.len()).min(ADDR_V6_LEN);
    }
}

impl std::ops::Deref for AddrBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// The address `ip ‖ port` encodes, if it is one.
pub(crate) fn addr_from_bytes(b: &[u8]) -> Option<SocketAddr> {
    match b.len() {
        ADDR_V4_LEN => {
            let ip: [u8; 4] = b.get(..4)?.try_into().ok()?;
            let port = u16::from_be_bytes(b.get(4..6)?.try_into().ok()?);
            Some(SocketAddr::from((ip, port)))
        }
        ADDR_V6_LEN => {
            let ip: [u8; 16] = b.get(..16)?.try_into().ok()?;
            let port = u16::from_be_bytes(b.get(16..18)?.try_into().ok()?);
            Some(SocketAddr::from((ip, port)))
        }
        _ => None,
    }
}

/// A ring member: its self-certifying id and the address it listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// The node id (authenticated by the secure channel).
    pub id: NodeId,
    /// The listening address.
    pub addr: SocketAddr,
}

/// A fixed-size byte string serialised as a CBOR byte string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bytes<const N: usize>(pub(crate) [u8; N]);

impl<const N: usize> Serialize for Bytes<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de, const N: usize> Deserialize<'de> for Bytes<N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const N: usize>;
        impl<const N: usize> serde::de::Visitor<'_> for V<N> {
            type Value = Bytes<N>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a byte string of {N} bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes<N>, E> {
                <[u8; N]>::try_from(v)
                    .map(Bytes)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_bytes(V::<N>)
    }
}

/// A key succession statement as a CBOR byte string of
/// [`MIN_SUCCESSION_LEN`](themis_crypto::MIN_SUCCESSION_LEN)..=[`MAX_SUCCESSION_LEN`](themis_crypto::MAX_SUCCESSION_LEN)
/// bytes (PROTOCOL.md §2.9, §6.4 `succ`); its signatures are checked by readers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StatementBytes(pub(crate) Vec<u8>);

impl Serialize for StatementBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for StatementBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = StatementBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    "a byte string of {}..={} bytes",
                    themis_crypto::MIN_SUCCESSION_LEN,
                    themis_crypto::MAX_SUCCESSION_LEN
                )
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<StatementBytes, E> {
                if (themis_crypto::MIN_SUCCESSION_LEN..=themis_crypto::MAX_SUCCESSION_LEN)
                    .contains(&v.len())
                {
                    Ok(StatementBytes(v.to_vec()))
                } else {
                    Err(E::invalid_length(v.len(), &self))
                }
            }
        }
        d.deserialize_bytes(V)
    }
}

/// A socket address as a CBOR byte string `ip ‖ port` (6 or 18 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Addr(pub(crate) SocketAddr);

impl Serialize for Addr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&addr_bytes(&self.0))
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Addr;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a 6- or 18-byte address")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Addr, E> {
                addr_from_bytes(v)
                    .map(Addr)
                    .ok_or_else(|| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_bytes(V)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WirePeer {
    id: NodeId,
    addr: Addr,
}

impl From<Peer> for WirePeer {
    fn from(p: Peer) -> Self {
        Self {
            id: p.id,
            addr: Addr(p.addr),
        }
    }
}

impl From<WirePeer> for Peer {
    fn from(p: WirePeer) -> Self {
        Self {
            id: p.id,
            addr: p.addr.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireRecord {
    name: String,
    r: u8,
    provider: NodeId,
    pk: Bytes<PUBLIC_KEY_LEN>,
    addr: Addr,
    version: String,
    weight: u16,
    tags: Vec<String>,
    expires: u64,
    seq: u64,
    sig: Bytes<SIGNATURE_LEN>,
    /// The provider's key succession statement (PROTOCOL.md §6.4), outside the signed digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    succ: Option<StatementBytes>,
    /// `true` for a tombstone; absent (never sent as `false`) for a record, so the bytes of a
    /// record are those of version 1 before tombstones.
    #[serde(default, skip_serializing_if = "is_false")]
    withdrawn: bool,
    /// The owner's delegation (owned names only, PROTOCOL.md §6.4), covered by `sig`; absent
    /// for an unowned name, so such a record's bytes are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deleg: Option<Box<Bytes<DELEGATION_LEN>>>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_false(b: &bool) -> bool {
    !*b
}

impl From<&ProviderRecord> for WireRecord {
    fn from(r: &ProviderRecord) -> Self {
        Self {
            name: r.name.clone(),
            r: r.replica,
            provider: r.provider,
            pk: Bytes(*r.public_key.as_bytes()),
            addr: Addr(r.addr),
            version: r.metadata.version.clone(),
            weight: r.metadata.weight,
            tags: r.metadata.tags.clone(),
            expires: r.expires_unix_ms,
            seq: r.seq,
            sig: Bytes(*r.signature.as_bytes()),
            succ: r.succession.clone().map(StatementBytes),
            withdrawn: r.withdrawn,
            deleg: r.delegation.as_deref().map(|d| Box::new(Bytes(d.encode()))),
        }
    }
}

impl TryFrom<WireRecord> for ProviderRecord {
    type Error = Refusal;
    /// Parse, don't validate: a `ProviderRecord` always satisfies the size limits (its signature
    /// is checked separately).
    fn try_from(w: WireRecord) -> Result<Self, Refusal> {
        if w.name.is_empty() || w.name.len() > MAX_NAME_LEN {
            return Err(Refusal::Malformed);
        }
        let metadata = ServiceMetadata {
            version: w.version,
            weight: w.weight,
            tags: w.tags,
        };
        check_metadata(&metadata).map_err(|_| Refusal::Malformed)?;
        Ok(Self {
            name: w.name,
            replica: w.r,
            provider: w.provider,
            public_key: PublicKey::from_bytes(w.pk.0),
            addr: w.addr.0,
            metadata,
            expires_unix_ms: w.expires,
            seq: w.seq,
            signature: Signature::from_bytes(w.sig.0),
            succession: w.succ.map(|s| s.0),
            withdrawn: w.withdrawn,
            delegation: match w.deleg {
                Some(b) => Some(Box::new(
                    Delegation::decode(&b.0).ok_or(Refusal::Malformed)?,
                )),
                None => None,
            },
        })
    }
}

/// Requests (the `cmd` of the secure channel, paper Table 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Request {
    /// paper Table 1 `(find, identifier)`; `records` asks the owner for its provider records.
    Find { target: NodeId, records: bool },
    /// paper Table 1 `(store, obj)`: one signed record.
    Store { record: WireRecord },
    /// paper Table 1 `(join, net_id)`: the network is implied by the secure channel.
    Join,
    /// Zave: ask a successor for its predecessor and successor list (paper `update`).
    GetNeighbors,
    /// Zave: "I may be your predecessor" (the other half of paper `update`).
    Notify,
    /// Liveness check of the predecessor.
    Ping,
    /// Objects handed to a closer predecessor (paper Table 1 `update` rsp `(id, ObjTable)`,
    /// sent as its own request so big tables can be chunked).
    Handoff { records: Vec<WireRecord> },
    /// paper Table 1 `(leave, ObjTable, id)`, chunked: `last` marks the final chunk, which
    /// makes the receiver adopt `predecessor`.
    Leave {
        predecessor: Option<WirePeer>,
        records: Vec<WireRecord>,
        last: bool,
    },
    /// Sent by a leaving node to its predecessor: "your successors are now these".
    SetSuccessors { successors: Vec<WirePeer> },
    /// Ring unification (PROTOCOL.md §6.14): "`peer` is a live node that may belong between
    /// you and your successor"; routed through the receiver's ring toward `peer`'s id, `hops`
    /// counting the forwards so far.
    Unify { peer: WirePeer, hops: u8 },
}

/// Responses (the `rsp` of the secure channel).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Response {
    /// "I am responsible for the target" with the records asked for.
    Owner { records: Vec<WireRecord> },
    /// "The target lies between me and my successor": the answer of a node find. `after`
    /// (PROTOCOL.md §6.5, optional) is the node just before `peer` in the responder's view
    /// (the entry before it in its successor list, or the responder itself): `peer` is the
    /// successor of every id in `(after, peer]`.
    Successor {
        peer: WirePeer,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<NodeId>,
    },
    /// The closest preceding nodes I know, best first.
    Closer { peers: Vec<WirePeer> },
    /// A store was accepted.
    Stored,
    /// Answer to `join`: the newcomer's successor and that successor's list as far as known.
    Joined {
        successor: WirePeer,
        successors: Vec<WirePeer>,
    },
    /// Answer to `get_neighbors`.
    Neighbors {
        predecessor: Option<WirePeer>,
        successors: Vec<WirePeer>,
    },
    /// Generic acknowledgement (notify, handoff, leave, set_successors).
    Ack,
    /// Answer to `ping`.
    Pong,
    /// The request was refused.
    Refused { reason: Refusal },
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Room for an answer with one record (about 300 bytes) without growing twice.
    let mut out = Vec::with_capacity(512);
    // Writing into a Vec cannot fail, and every type here serialises.
    if ciborium::ser::into_writer(v, &mut out).is_err() {
        out.clear();
    }
    out
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, Error> {
    if bytes.len() > max {
        return Err(Error::MessageTooLarge {
            len: bytes.len(),
            max,
        });
    }
    ciborium::de::from_reader_with_recursion_limit(bytes, RECURSION_LIMIT)
        .map_err(|e| Error::Malformed(e.to_string()))
}

fn check_len(what: &str, len: usize, max: usize) -> Result<(), Error> {
    if len > max {
        return Err(Error::Malformed(format!(
            "{what} holds {len} entries; at most {max}"
        )));
    }
    Ok(())
}

impl Request {
    pub(crate) fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a request: size cap first, then CBOR with a nesting limit, then collection caps.
    pub(crate) fn decode(bytes: &[u8], max: usize) -> Result<Self, Error> {
        let r: Self = decode(bytes, max)?;
        match &r {
            Request::Handoff { records } | Request::Leave { records, .. } => {
                check_len("record list", records.len(), MAX_RECORDS)?;
            }
            Request::SetSuccessors { successors } => {
                check_len("successor list", successors.len(), MAX_PEERS)?;
            }
            _ => {}
        }
        Ok(r)
    }
}

impl Response {
    pub(crate) fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a response, with the same caps as [`Request::decode`].
    pub(crate) fn decode(bytes: &[u8], max: usize) -> Result<Self, Error> {
        let r: Self = decode(bytes, max)?;
        match &r {
            Response::Owner { records } => check_len("record list", records.len(), MAX_RECORDS)?,
            Response::Closer { peers } => check_len("peer list", peers.len(), MAX_PEERS)?,
            Response::Joined { successors, .. } | Response::Neighbors { successors, .. } => {
                check_len("successor list", successors.len(), MAX_PEERS)?;
            }
            _ => {}
        }
        Ok(r)
    }
}

/// Decodes and re-encodes arbitrary bytes as a request and as a response: for fuzzing and
/// property tests. Returns whether each decoded.
#[doc(hidden)]
pub fn fuzz_decode(bytes: &[u8]) -> (bool, bool) {
    let a = Request::decode(bytes, usize::MAX).map(|r| r.encode());
    let b = Response::decode(bytes, usize::MAX).map(|r| r.encode());
    (a.is_ok(), b.is_ok())
}

/// Decodes arbitrary bytes as a request and as a response and checks what decodes: it
/// re-encodes to bytes that decode to the same value, and each provider record in it that
/// converts to a [`ProviderRecord`] converts back to the same wire record. For fuzzing
/// (`fuzz/`); returns whether each decoded, `Err` names the failed check (a bug).
#[doc(hidden)]
pub fn fuzz_roundtrip(bytes: &[u8]) -> Result<(bool, bool), String> {
    fn records(w: &[WireRecord]) -> Result<(), String> {
        for r in w {
            if let Ok(p) = ProviderRecord::try_from(r.clone())
                && WireRecord::from(&p) != *r
            {
                return Err(format!("record {r:?} does not survive ProviderRecord"));
            }
        }
        Ok(())
    }
    let req = Request::decode(bytes, usize::MAX).ok();
    if let Some(r) = &req {
        if Request::decode(&r.encode(), usize::MAX).ok().as_ref() != Some(r) {
            return Err(format!("request {r:?} does not round-trip"));
        }
        match r {
            Request::Store { record } => records(std::slice::from_ref(record))?,
            Request::Handoff { records: rs } | Request::Leave { records: rs, .. } => records(rs)?,
            _ => {}
        }
    }
    let rsp = Response::decode(bytes, usize::MAX).ok();
    if let Some(r) = &rsp {
        if Response::decode(&r.encode(), usize::MAX).ok().as_ref() != Some(r) {
            return Err(format!("response {r:?} does not round-trip"));
        }
        if let Response::Owner { records: rs } = r {
            records(rs)?;
        }
    }
    Ok((req.is_some(), rsp.is_some()))
}

/// Encodes a `find` request (benchmarks).
#[doc(hidden)]
pub fn bench_find(target: NodeId) -> Vec<u8> {
    Request::Find {
        target,
        records: true,
    }
    .encode()
}

/// Encodes a `store` request carrying `record` (benchmarks).
#[doc(hidden)]
pub fn bench_store(record: &ProviderRecord) -> Vec<u8> {
    Request::Store {
        record: record.into(),
    }
    .encode()
}

/// Decodes a `store` request and runs the checks on its record that do not depend on time
/// (replica range, identity, delegation, signature: PROTOCOL.md §6.4, §6.7), for known-answer
/// tests of bytes made outside the crate.
#[doc(hidden)]
pub fn check_store(
    bytes: &[u8],
    network: &themis_crypto::NetworkId,
    max_k: u8,
) -> Result<ProviderRecord, Refusal> {
    let Ok(Request::Store { record }) = Request::decode(bytes, usize::MAX) else {
        return Err(Refusal::Malformed);
    };
    let rec = ProviderRecord::try_from(record)?;
    rec.verify_static(network, max_k)?;
    Ok(rec)
}

/// Decodes a request; true if it is well formed (benchmarks).
#[doc(hidden)]
pub fn bench_decode_request(bytes: &[u8]) -> bool {
    Request::decode(bytes, usize::MAX).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use themis_crypto::{IdentityKeypair, NetworkId};

    /// The fuzz hook (fuzz/fuzz_targets/dht_cbor.rs) decodes and round-trips the known-answer
    /// requests, records included.
    #[test]
    fn fuzz_hook_round_trips_known_answer_requests() {
        let kat = include_str!("../../tests/vectors/dht.txt");
        for name in [
            "find_request = ",
            "store_request = ",
            "tombstone_store_request = ",
        ] {
            let hex = kat.lines().find_map(|l| l.strip_prefix(name)).unwrap();
            let b: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap(), 16).unwrap())
                .collect();
            assert_eq!(fuzz_roundtrip(&b).unwrap(), (true, false), "{name}");
        }
        assert_eq!(fuzz_roundtrip(&[0xff]).unwrap(), (false, false));
    }

    fn peer(b: u8) -> WirePeer {
        Peer {
            id: NodeId::from_bytes([b; 32]),
            addr: SocketAddr::from(([10, 0, 0, b], 7000 + u16::from(b))),
        }
        .into()
    }

    fn record(seed: u8) -> WireRecord {
        let kp = IdentityKeypair::from_seed(&[seed; 32]);
        let r = ProviderRecord::sign(
            &kp,
            &NetworkId::new("t").unwrap(),
            &crate::ServiceSpec {
                name: format!("svc{seed}"),
                addr: None,
                metadata: ServiceMetadata {
                    version: "1.2".into(),
                    weight: 3,
                    tags: vec!["a".into()],
                },
                delegation: None,
            },
            "[::1]:9".parse().unwrap(),
            seed % 3,
            99,
            5,
        );
        (&r).into()
    }

    fn requests() -> Vec<Request> {
        vec![
            Request::Find {
                target: NodeId::from_bytes([7; 32]),
                records: true,
            },
            Request::Store { record: record(1) },
            Request::Join,
            Request::GetNeighbors,
            Request::Notify,
            Request::Ping,
            Request::Handoff {
                records: vec![record(2), record(3)],
            },
            Request::Leave {
                predecessor: Some(peer(4)),
                records: vec![record(4)],
                last: true,
            },
            Request::SetSuccessors {
                successors: vec![peer(5), peer(6)],
            },
            Request::Unify {
                peer: peer(7),
                hops: 3,
            },
        ]
    }

    /// The known-answer vectors of a `successor` answer without and with `after` (PROTOCOL.md
    /// §6.5), written out by hand from the schema: a decoder that predates `after` skips it
    /// (unknown keys of a map are ignored), and one that knows it reads its absence as none.
    #[test]
    fn successor_vectors() {
        let vectors = include_str!("../../tests/vectors/dht.txt");
        let bytes = |key: &str| -> Vec<u8> {
            let hex = vectors.lines().find_map(|l| l.strip_prefix(key)).unwrap();
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect()
        };
        let peer = || {
            WirePeer::from(Peer {
                id: NodeId::from_bytes([7; 32]),
                addr: "10.0.0.1:7000".parse().unwrap(),
            })
        };
        for (key, after) in [
            ("successor_response = ", None),
            (
                "successor_after_response = ",
                Some(NodeId::from_bytes([5; 32])),
            ),
        ] {
            let rsp = Response::Successor {
                peer: peer(),
                after,
            };
            assert_eq!(rsp.encode(), bytes(key), "{key}");
            assert_eq!(Response::decode(&bytes(key), 65536).unwrap(), rsp);
        }
        // a decoder without the field: the same answer, `after` skipped
        #[derive(Debug, PartialEq, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum Before {
            Successor { peer: WirePeer },
        }
        let old: Before = ciborium::from_reader(&bytes("successor_after_response = ")[..]).unwrap();
        assert_eq!(old, Before::Successor { peer: peer() });
    }

    /// The known-answer vector of `unify` (PROTOCOL.md §6.14), written out by hand from the
    /// schema there, byte by byte.
    #[test]
    fn unify_vector() {
        let vectors = include_str!("../../tests/vectors/dht.txt");
        let hex = vectors
            .lines()
            .find_map(|l| l.strip_prefix("unify_request = "))
            .unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let req = Request::Unify {
            peer: Peer {
                id: NodeId::from_bytes([7; 32]),
                addr: "10.0.0.1:7000".parse().unwrap(),
            }
            .into(),
            hops: 3,
        };
        assert_eq!(req.encode(), bytes);
        assert_eq!(Request::decode(&bytes, 65536).unwrap(), req);
    }

    fn responses() -> Vec<Response> {
        vec![
            Response::Owner {
                records: vec![record(1)],
            },
            Response::Successor {
                peer: peer(1),
                after: None,
            },
            Response::Successor {
                peer: peer(2),
                after: Some(NodeId::from_bytes([1; 32])),
            },
            Response::Closer {
                peers: vec![peer(1), peer(2)],
            },
            Response::Stored,
            Response::Joined {
                successor: peer(3),
                successors: vec![peer(4)],
            },
            Response::Neighbors {
                predecessor: None,
                successors: vec![peer(4)],
            },
            Response::Ack,
            Response::Pong,
            Response::Refused {
                reason: Refusal::OverQuota,
            },
        ]
    }

    #[test]
    fn round_trips() {
        for r in requests() {
            assert_eq!(Request::decode(&r.encode(), 65536).unwrap(), r);
        }
        for r in responses() {
            assert_eq!(Response::decode(&r.encode(), 65536).unwrap(), r);
        }
    }

    #[test]
    fn known_encodings() {
        // unit variants are bare text strings
        assert_eq!(Request::Ping.encode(), b"\x64ping");
        // refused reasons are snake_case strings
        let r = Response::Refused {
            reason: Refusal::NotProvider,
        }
        .encode();
        let mut expect = vec![0xa1, 0x67];
        expect.extend_from_slice(b"refused");
        expect.extend_from_slice(&[0xa1, 0x66]);
        expect.extend_from_slice(b"reason");
        expect.push(0x6c);
        expect.extend_from_slice(b"not_provider");
        assert_eq!(r, expect);
    }

    #[test]
    fn size_cap_checked_before_decoding() {
        let b = Request::Ping.encode();
        assert!(matches!(
            Request::decode(&b, 2),
            Err(Error::MessageTooLarge { len: 5, max: 2 })
        ));
    }

    #[test]
    fn collection_caps() {
        let many = Request::SetSuccessors {
            successors: (0..(MAX_PEERS + 1) as u8).map(peer).collect(),
        };
        assert!(matches!(
            Request::decode(&many.encode(), 1 << 20),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn bad_sizes_rejected() {
        // a peer with a 5-byte address
        let mut bad = Request::Find {
            target: NodeId::from_bytes([1; 32]),
            records: false,
        }
        .encode();
        // truncate the node id
        bad.truncate(bad.len() - 3);
        assert!(Request::decode(&bad, 1 << 20).is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = fuzz_decode(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic(i in 0usize..10, pos in any::<usize>(), val in any::<u8>(), cut in any::<usize>()) {
            let mut b = requests()[i].encode();
            let p = pos % b.len();
            b[p] = val;
            let _ = fuzz_decode(&b);
            b.truncate(cut % (b.len() + 1));
            let _ = fuzz_decode(&b);
            let rs = responses();
            let mut c = rs[i % rs.len()].encode();
            let p = pos % c.len();
            c[p] ^= val;
            let _ = fuzz_decode(&c);
        }

        /// Tombstones and records survive the codec exactly and still verify; a tombstone read
        /// as a record (or the reverse) does not; any one-byte change of a stored tombstone is
        /// refused or fails verification, never mistaken for a valid tombstone of other content.
        #[test]
        fn tombstone_codec(
            seed in 1u8..=255, r in 0u8..=8, exp in any::<u64>(), seq in any::<u64>(),
            withdrawn in any::<bool>(), pos in any::<usize>(), val in 1u8..=255,
        ) {
            let kp = IdentityKeypair::from_seed(&[seed; 32]);
            let net = NetworkId::new("t").unwrap();
            let spec = crate::ServiceSpec::new(format!("svc{seed}"));
            let addr: SocketAddr = "10.1.2.3:7".parse().unwrap();
            let rec = if withdrawn {
                ProviderRecord::sign_withdrawal(&kp, &net, &spec, addr, r, exp, seq)
            } else {
                ProviderRecord::sign(&kp, &net, &spec, addr, r, exp, seq)
            };
            let req = Request::Store { record: WireRecord::from(&rec) };
            let bytes = req.encode();
            let Request::Store { record } = Request::decode(&bytes, 65_536).unwrap() else {
                panic!("not a store");
            };
            let back = ProviderRecord::try_from(record.clone()).unwrap();
            prop_assert_eq!(&back, &rec);
            prop_assert_eq!(back.is_withdrawn(), withdrawn);
            prop_assert!(back.verify_static(&net, 8).is_ok());
            // the key is absent from a record's bytes (version 1 records are unchanged)
            let key = b"withdrawn";
            prop_assert_eq!(bytes.windows(key.len()).any(|w| w == key), withdrawn);
            let mut flipped = record;
            flipped.withdrawn = !withdrawn;
            let flipped = ProviderRecord::try_from(flipped).unwrap();
            prop_assert_eq!(flipped.verify_static(&net, 8), Err(Refusal::BadSignature));
            let mut b = bytes.clone();
            let p = pos % b.len();
            b[p] ^= val;
            if let Ok(Request::Store { record }) = Request::decode(&b, 65_536)
                && let Ok(m) = ProviderRecord::try_from(record)
                && m != rec
            {
                prop_assert!(m.verify_static(&net, 8).is_err(), "byte {} changed", p);
            }
        }

        /// Records of owned names (PROTOCOL.md §6.4): the delegation survives the codec
        /// exactly and the record verifies; without it, or with it moved to an unowned name,
        /// the record is refused; any one-byte change of the store is refused or fails
        /// verification; any bytes as a delegation decode only at exactly 104 bytes, and any
        /// name parses as owned or not without panicking.
        #[test]
        fn owned_record_codec(
            seed in 1u8..=255, owner_seed in 1u8..=255, label in "[a-z~.-]{1,40}",
            r in 0u8..=8, withdrawn in any::<bool>(), pos in any::<usize>(), val in 1u8..=255,
            junk in proptest::collection::vec(any::<u8>(), 0..200), any_name in "\\PC{0,130}",
        ) {
            use crate::proto::owner::{DELEGATION_LEN, Delegation, NameOwner, owned_name};
            let _ = NameOwner::of(&any_name);
            prop_assert_eq!(Delegation::decode(&junk).is_some(), junk.len() == DELEGATION_LEN);
            let kp = IdentityKeypair::from_seed(&[seed; 32]);
            let owner = IdentityKeypair::from_seed(&[owner_seed; 32]);
            let net = NetworkId::new("t").unwrap();
            let name = owned_name(&label, &owner.public()).unwrap();
            let (exp, seq) = (2_000_000_000_000u64, 7u64);
            let d = Delegation::sign(&owner, &net, &name, &kp.node_id(&net), exp).unwrap();
            prop_assert_eq!(Delegation::decode(&d.encode()), Some(d));
            let mut spec = crate::ServiceSpec::new(name.clone());
            spec.delegation = Some(d);
            let addr: SocketAddr = "10.1.2.3:7".parse().unwrap();
            let rec = if withdrawn {
                ProviderRecord::sign_withdrawal(&kp, &net, &spec, addr, r, exp, seq)
            } else {
                ProviderRecord::sign(&kp, &net, &spec, addr, r, exp, seq)
            };
            let bytes = Request::Store { record: WireRecord::from(&rec) }.encode();
            let Request::Store { record } = Request::decode(&bytes, 65_536).unwrap() else {
                panic!("not a store");
            };
            let back = ProviderRecord::try_from(record.clone()).unwrap();
            prop_assert_eq!(&back, &rec);
            prop_assert!(back.verify_static(&net, 8).is_ok());
            let mut bare = record.clone();
            bare.deleg = None;
            let bare = ProviderRecord::try_from(bare).unwrap();
            prop_assert_eq!(bare.verify_static(&net, 8), Err(Refusal::BadDelegation));
            // a record that outlives its delegation is refused
            let long = ProviderRecord::sign(&kp, &net, &spec, addr, r, exp + 1, seq);
            prop_assert_eq!(long.verify_static(&net, 8), Err(Refusal::BadDelegation));
            // the same delegation on an unowned name's record
            let mut plain = crate::ServiceSpec::new(format!("plain{seed}"));
            plain.delegation = Some(d);
            let p = ProviderRecord::sign(&kp, &net, &plain, addr, r, exp, seq);
            prop_assert_eq!(p.verify_static(&net, 8), Err(Refusal::BadDelegation));
            let mut b = bytes.clone();
            let at = pos % b.len();
            b[at] ^= val;
            if let Ok(Request::Store { record }) = Request::decode(&b, 65_536)
                && let Ok(m) = ProviderRecord::try_from(record)
                && m != rec
            {
                prop_assert!(m.verify_static(&net, 8).is_err(), "byte {} changed", at);
            }
        }

        #[test]
        fn find_round_trip(t in any::<[u8; 32]>(), want in any::<bool>()) {
            let r = Request::Find { target: NodeId::from_bytes(t), records: want };
            prop_assert_eq!(Request::decode(&r.encode(), 1024).unwrap(), r);
        }
    }

    #[test]
    fn addr_codec() {
        for a in ["1.2.3.4:5", "[::1]:65535"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(addr_from_bytes(&addr_bytes(&a)), Some(a));
        }
        assert_eq!(addr_from_bytes(&[1, 2, 3]), None);
    }
}
