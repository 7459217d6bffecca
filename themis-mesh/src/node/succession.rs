//! The key succession request (PROTOCOL.md §7.7, key rotation without a CA): a node that
//! rotated its key presents the statement its old key signed (§2.9) to a peer that asks over the
//! session the handshake authenticated. A peer asks when a contact it dialed by an old id
//! answered with another identity, and when an allow-list refuses a caller it has no statement
//! of.
//!
//! Request (command payload): exactly `0x04`, the protocol id. Response: `00 00` (no statement)
//! or `00 01 ‖ statement`.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use themis_channel::{Endpoint, Handler, PeerAddr};
use themis_crypto::{NetworkId, NodeId, Succession};
use themis_dht::Contact;

use super::MeshNode;
use super::wire::{CallResponse, RemoteErrorKind, encode_response};
use crate::Error;
use crate::policy::Successions;

/// The protocol id of key succession requests on the shared endpoint (PROTOCOL.md §5.4).
pub(crate) const PROTOCOL_SUCCESSION: u8 = 0x04;
/// Response status: an answer follows.
const STATUS_OK: u8 = 0x00;
/// Clock skew allowed between the signer of a statement and its verifier (PROTOCOL.md §2.9:
/// the DHT's `max_clock_skew`).
pub(crate) const MAX_CLOCK_SKEW_MS: u64 = 60_000;

/// This host's wall clock, in Unix milliseconds.
pub(crate) fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Encodes an answer: `00 00`, or `00 01 ‖ statement`.
pub(crate) fn encode_answer(statement: Option<&Succession>) -> Bytes {
    match statement {
        None => Bytes::from_static(&[STATUS_OK, 0]),
        Some(s) => {
            let body = s.encode();
            let mut out = BytesMut::with_capacity(2 + body.len());
            out.put_u8(STATUS_OK);
            out.put_u8(1);
            out.put_slice(&body);
            out.freeze()
        }
    }
}

/// Decodes an answer: `Some(None)` for "no statement", `Some(Some(bytes))` for a statement
/// (still to be verified), `None` for bytes that are no answer. A refusal of the protocol id
/// (`FF 04`, a node without this request) is "no statement".
pub(crate) fn decode_answer(b: &[u8]) -> Option<Option<&[u8]>> {
    match b {
        [0xFF, PROTOCOL_SUCCESSION] | [STATUS_OK, 0] => Some(None),
        [STATUS_OK, 1, rest @ ..] if !rest.is_empty() => Some(Some(rest)),
        _ => None,
    }
}

/// The answer to a request whose payload (after the protocol id) is `payload`: the statement
/// while it is in force at `now_ms`, else none. Anything after the id is malformed.
pub(crate) fn answer(payload: &[u8], statement: Option<&Succession>, now_ms: u64) -> Bytes {
    if !payload.is_empty() {
        return encode_response(&CallResponse::Error {
            kind: RemoteErrorKind::Malformed,
            message: "a key succession request is the single byte 0x04".into(),
        });
    }
    encode_answer(statement.filter(|s| s.check_in_force(now_ms, MAX_CLOCK_SKEW_MS).is_ok()))
}

/// Serves key succession requests (protocol id `0x04`).
pub(crate) struct SuccessionHandler {
    pub(crate) statement: Option<Succession>,
}

#[async_trait]
impl Handler for SuccessionHandler {
    async fn handle(&self, _from: PeerAddr, request: Bytes) -> Bytes {
        answer(&request, self.statement.as_ref(), unix_now_ms())
    }
}

/// Asks `peer` for its statement and checks it (PROTOCOL.md §7.7, receiver rules): it verifies
/// for `network`, is in force now, and its new id is the id the channel authenticated for
/// `peer`. A statement that passes is remembered in `table`. `Ok(None)`: the peer presents none.
pub(crate) async fn fetch(
    endpoint: &Endpoint,
    network: &NetworkId,
    table: &Mutex<Successions>,
    peer: &PeerAddr,
) -> Result<Option<Succession>, Error> {
    let raw = endpoint
        .request(peer, Bytes::from_static(&[PROTOCOL_SUCCESSION]))
        .await?;
    let Some(found) = decode_answer(&raw) else {
        return Err(Error::UnexpectedAnswer {
            peer: peer.id,
            request: "key succession",
        });
    };
    let Some(bytes) = found else {
        return Ok(None);
    };
    let refused = |e: themis_crypto::Error| Error::Succession {
        peer: peer.id,
        source: Box::new(e),
    };
    let s = Succession::decode(bytes, network).map_err(refused)?;
    s.check_in_force(unix_now_ms(), MAX_CLOCK_SKEW_MS)
        .map_err(refused)?;
    // The answer came sealed from the peer the handshake authenticated as `peer.id`: the
    // statement must name that very key (PROTOCOL.md §7.7), or it is someone else's.
    if s.new_id() != peer.id {
        return Ok(None);
    }
    if let Ok(mut t) = table.lock() {
        t.insert(&s);
    }
    Ok(Some(s))
}

impl MeshNode {
    /// The statement this node presents (PROTOCOL.md §2.9), if it was started with one.
    pub fn succession(&self) -> Option<&Succession> {
        self.inner.config.succession.as_ref()
    }

    /// Checks that the node at `contact` (its id as the handshake will prove it) succeeds
    /// `old`: asks it for its key succession statement (PROTOCOL.md §7.7) and verifies that the
    /// statement is in force and names `old` and the contact's id. The way to accept a peer
    /// dialed by an id it had before rotating its key (a bootstrap contact, a cached peer):
    /// dialing `old` fails with an identity mismatch naming the id it has now.
    pub async fn verify_successor(
        &self,
        old: NodeId,
        contact: Contact,
    ) -> Result<Succession, Error> {
        let endpoint = self.inner.dht.endpoint();
        let id = match contact.id {
            Some(id) => id,
            None => endpoint.identify(contact.addr).await?.0,
        };
        let peer = PeerAddr {
            id,
            addr: contact.addr,
        };
        let check = &self.inner.successions;
        match fetch(endpoint, &check.network, &check.table, &peer).await? {
            Some(s) if s.old_id() == old => Ok(s),
            _ => Err(Error::NotASuccessor { peer: id, old }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use themis_crypto::IdentityKeypair;

    fn statement() -> Succession {
        let net = NetworkId::new("twiitr").unwrap();
        Succession::sign(
            &IdentityKeypair::from_seed(&[1; 32]),
            &IdentityKeypair::from_seed(&[2; 32]),
            &net,
            1_000,
            9_000,
        )
        .unwrap()
    }

    #[test]
    fn answers_the_statement_only_while_it_is_in_force() {
        let s = statement();
        let a = answer(&[], Some(&s), 5_000);
        assert_eq!(&a[..2], &[0, 1]);
        assert_eq!(decode_answer(&a), Some(Some(&s.encode()[..])));
        assert_eq!(&answer(&[], Some(&s), 9_000)[..], &[0, 0]);
        assert_eq!(&answer(&[], None, 5_000)[..], &[0, 0]);
        let malformed = answer(&[1], Some(&s), 5_000);
        assert_eq!(&malformed[..2], &[0x01, 0x03]);
        assert_eq!(decode_answer(&malformed), None);
    }

    #[test]
    fn a_node_without_the_request_presents_nothing() {
        assert_eq!(decode_answer(&[0xFF, PROTOCOL_SUCCESSION]), Some(None));
        assert_eq!(decode_answer(&[0xFF, 0x03]), None);
        assert_eq!(decode_answer(&[0, 2]), None);
        assert_eq!(decode_answer(&[0, 1]), None);
        assert_eq!(decode_answer(&[]), None);
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_answer(&b);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod vectors {
    use super::*;

    /// The checked-in vectors (PROTOCOL.md §7.7).
    const VECTORS: &str = include_str!("../../tests/vectors/succession.txt");

    fn vector(name: &str) -> Vec<u8> {
        let line = VECTORS
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .unwrap();
        hex::decode(line.trim()).unwrap()
    }

    #[test]
    fn known_answers() {
        assert_eq!(vector("request"), [PROTOCOL_SUCCESSION]);
        assert_eq!(encode_answer(None).to_vec(), vector("answer_none"));
        let net = NetworkId::new("twiitr").unwrap();
        let want = vector("answer_statement");
        let Some(Some(bytes)) = decode_answer(&want) else {
            panic!("the vector is not an answer with a statement")
        };
        let s = Succession::decode(bytes, &net).unwrap();
        assert_eq!(encode_answer(Some(&s)).to_vec(), want);
        // The statement of themis-crypto's vector (PROTOCOL.md §2.9), in force in its week.
        assert_eq!(
            s.old_id().to_string(),
            "3fe4c9530e5476dc4db6f525c68f92cfd8fca2683445837d4ce1b8739db50e39"
        );
        assert_eq!(answer(&[], Some(&s), 1_800_000_000_000).to_vec(), want);
        assert_eq!(
            answer(&[], Some(&s), 1_800_604_800_000).to_vec(),
            vector("answer_none")
        );
    }
}
