//! The responder (the paper's Bob): answers message 1, registers the session on message 3.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use themis_crypto::{
    EphemeralSecret, HASH_LEN, IdentityKeypair, NetworkId, NodeId, PublicKey, SessionKeys,
};
use zeroize::Zeroize;

use crate::random::{OsRandom, RandomSource};
use crate::wire::{self, NONCE_LEN};
use crate::{Error, HandshakeConfig, Role, Session, SessionId, transcript};

/// A handshake that answered message 1 and waits for message 3.
struct Pending {
    peer_id: NodeId,
    peer_public: PublicKey,
    nonce: [u8; NONCE_LEN],
    th: [u8; HASH_LEN],
    keys: SessionKeys,
    expires_at: Instant,
    /// Tie-breaker in the expiry index for entries with the same deadline.
    seq: u64,
}

/// The responder side of every handshake a node answers, with the bounded table of
/// handshakes waiting for message 3.
///
/// Memory is bounded by [`HandshakeConfig::pending_capacity`]; entries expire
/// [`HandshakeConfig::pending_ttl`] after message 1, by the `now` the caller passes in (call
/// [`Responder::handle_timeout`] at [`Responder::poll_timeout`]).
pub struct Responder {
    identity: Arc<IdentityKeypair>,
    network: NetworkId,
    local_id: NodeId,
    config: HandshakeConfig,
    rng: Box<dyn RandomSource>,
    pending: HashMap<SessionId, Pending>,
    /// Expiry index: (expires_at, seq) → session id, the same entries as `pending`.
    by_expiry: BTreeMap<(Instant, u64), SessionId>,
    next_seq: u64,
}

impl Responder {
    /// A responder for `identity` on `network`, drawing ephemeral secrets from the operating
    /// system.
    pub fn new(
        identity: Arc<IdentityKeypair>,
        network: NetworkId,
        config: HandshakeConfig,
    ) -> Self {
        Self::with_rng(identity, network, config, Box::new(OsRandom))
    }

    /// Like [`Responder::new`], drawing each ephemeral secret (32 bytes per message 1 that
    /// passes all checks) from `rng`.
    pub fn with_rng(
        identity: Arc<IdentityKeypair>,
        network: NetworkId,
        config: HandshakeConfig,
        rng: Box<dyn RandomSource>,
    ) -> Self {
        let local_id = identity.node_id(&network);
        Self {
            identity,
            network,
            local_id,
            config,
            rng,
            pending: HashMap::new(),
            by_expiry: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// This node's id on its network.
    pub fn local_id(&self) -> NodeId {
        self.local_id
    }

    /// Number of handshakes waiting for message 3 (expired ones included until the next
    /// [`Responder::handle_timeout`], or until a message 1 finds the table full).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The earliest time a pending handshake expires, if any is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.by_expiry.keys().next().map(|(t, _)| *t)
    }

    /// Drops every pending handshake whose lifetime ended at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let id = entry.remove();
            self.pending.remove(&id);
        }
    }

    /// Checks message 1 and returns message 2; the handshake then waits for message 3.
    ///
    /// Checks, in order (PROTOCOL.md lists the error of each): header, length fields, network
    /// id, recipient `B`, reflection, table capacity (after purging expired entries),
    /// signature, contributory DH. On error nothing is stored.
    pub fn handle_message1(&mut self, bytes: &[u8], now: Instant) -> Result<Vec<u8>, Error> {
        let m = wire::parse_msg1(bytes)?;
        // The network: its name, then open or closed and under which admission key
        // (PROTOCOL.md §2.10; the key is in the certificate).
        let their_key = m.cert.as_ref().map(|c| c.admission_key());
        if m.network == self.network.as_bytes() && their_key != self.network.admission_key() {
            let theirs = match their_key {
                None => self.network.open(),
                Some(k) => self.network.open().closed(*k),
            };
            return Err(Error::NetworkMismatch {
                ours: self.network.clone(),
                theirs,
            });
        }
        if m.network != self.network.as_bytes() {
            return Err(match NetworkId::from_bytes(m.network) {
                Ok(theirs) => Error::NetworkMismatch {
                    ours: self.network.clone(),
                    theirs: match their_key {
                        None => theirs,
                        Some(k) => theirs.closed(*k),
                    },
                },
                Err(_) => Error::Malformed {
                    message: "message 1",
                    reason: "the network id is not a valid network name",
                },
            });
        }
        // paper §5.1.1: "He then inspects the identifier B that is signed by Alice to check that
        // he was the intended recipient."
        if m.recipient != self.local_id {
            return Err(Error::NotIntendedRecipient {
                ours: self.local_id,
                addressed_to: m.recipient,
            });
        }
        // Strengthening: our own message 1 coming back (or a handshake with ourselves) is refused.
        if m.initiator_public == self.identity.public() {
            return Err(Error::Reflected);
        }
        // Bound: purge expired entries, then refuse rather than evict a live handshake. Checked
        // before the signature so that a flood costs us no signature verification.
        if self.pending.len() >= self.config.pending_capacity {
            self.handle_timeout(now);
            if self.pending.len() >= self.config.pending_capacity {
                return Err(Error::PendingTableFull {
                    capacity: self.config.pending_capacity,
                });
            }
        }
        // paper §5.1.1: "Bob first verifies that the signature is valid." (Here: over TH1.)
        let th1 = transcript::th1(m.signed);
        m.initiator_public
            .verify(&th1, &m.signature)
            .map_err(|_| Error::BadSignature)?;
        let peer_id = m.initiator_public.node_id(&self.network);
        // Closed network (beyond the paper, PROTOCOL.md §2.10): A's certificate admits A now,
        // and ours goes into message 2.
        let own_cert = match (&m.cert, &self.config.admission) {
            (None, _) => None,
            (Some(_), None) => return Err(Error::NoAdmissionCertificate(self.network.clone())),
            (Some(cert), Some(adm)) => {
                cert.verify(&self.network, &peer_id, adm.clock.unix_ms(now))
                    .map_err(|problem| Error::AdmissionRefused {
                        peer: peer_id,
                        problem,
                    })?;
                Some(&adm.certificate)
            }
        };

        // paper §5.1.1: "Bob then picks his own Diffie–Hellman exponent b".
        let mut secret = [0u8; 32];
        self.rng.fill(&mut secret);
        let ephemeral = EphemeralSecret::from_bytes(secret);
        secret.zeroize();
        // paper §5.1.1: "Bob then computes the key K_AB" (here: HKDF over g^ab and TH).
        let shared = ephemeral
            .diffie_hellman(&m.ephemeral)
            .map_err(|_| Error::NonContributory)?;

        // paper §5.1.1, message 2: g^b, PK_B, N_A, A, signed with SK_B (here: over TH2, which
        // binds message 1 as well).
        let mut msg2 = wire::msg2_body(
            &ephemeral.public(),
            &self.identity.public(),
            &m.nonce,
            &peer_id,
            own_cert,
        );
        let th2 = transcript::th2(&th1, &m.signature, &msg2);
        let sig2 = self.identity.sign(&th2);
        msg2.extend_from_slice(sig2.as_bytes());
        let th = transcript::th_final(&th2, &sig2);
        let keys = SessionKeys::derive(&shared, &th);
        let session_id = transcript::session_id(&th);
        if self.pending.contains_key(&session_id) {
            return Err(Error::SessionIdInUse(session_id));
        }

        let expires_at = now.checked_add(self.config.pending_ttl).unwrap_or(now);
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.by_expiry.insert((expires_at, seq), session_id);
        self.pending.insert(
            session_id,
            Pending {
                peer_id,
                peer_public: m.initiator_public,
                nonce: m.nonce,
                th,
                keys,
                expires_at,
                seq,
            },
        );
        Ok(msg2)
    }

    /// Checks message 3 (key confirmation) and returns the established session.
    ///
    /// Checks, in order: header, length, a live pending entry for the session id, the MAC.
    /// A wrong MAC leaves the entry pending, so a forged message 3 cannot cancel a genuine
    /// handshake; success removes it, so a replayed message 3 finds nothing.
    pub fn handle_message3(&mut self, bytes: &[u8], now: Instant) -> Result<Session, Error> {
        let m = wire::parse_msg3(bytes)?;
        let unknown = Error::UnknownSession {
            session_id: m.session_id,
        };
        let Some(p) = self.pending.get(&m.session_id) else {
            return Err(unknown);
        };
        if p.expires_at <= now {
            self.remove(&m.session_id);
            return Err(unknown);
        }
        // paper §5.1.1 / §5.2.1 G2: Bob registers the key only once message 3 proves Alice holds it.
        if !transcript::verify_confirm(&p.keys.confirm, &m.header, &p.th, &p.nonce, &m.mac) {
            return Err(Error::BadKeyConfirmation);
        }
        let Some(p) = self.remove(&m.session_id) else {
            return Err(unknown);
        };
        let Pending {
            peer_id,
            peer_public,
            th,
            keys,
            ..
        } = p;
        let SessionKeys {
            initiator_to_responder,
            responder_to_initiator,
            ..
        } = keys;
        Ok(Session {
            role: Role::Responder,
            network: self.network.clone(),
            local_id: self.local_id,
            peer_id,
            peer_public,
            session_id: m.session_id,
            transcript_hash: th,
            send_key: responder_to_initiator,
            recv_key: initiator_to_responder,
            established_at: now,
        })
    }

    fn remove(&mut self, id: &SessionId) -> Option<Pending> {
        let p = self.pending.remove(id)?;
        self.by_expiry.remove(&(p.expires_at, p.seq));
        Some(p)
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("local_id", &self.local_id)
            .field("network", &self.network)
            .field("config", &self.config)
            .field("pending", &self.pending.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;
    use themis_crypto::EphemeralPublic;

    fn signed_msg1(kp: &IdentityKeypair, to: NodeId, net: &NetworkId) -> Vec<u8> {
        let eph = EphemeralSecret::from_bytes([5; 32]);
        let mut m = wire::msg1_body(
            &eph.public(),
            &[6; 32],
            &kp.public(),
            &to,
            net.as_bytes(),
            None,
        );
        let sig = kp.sign(&transcript::th1(&m));
        m.extend_from_slice(sig.as_bytes());
        m
    }

    #[test]
    fn own_message1_addressed_to_self_is_refused() {
        // A message 1 that names us as recipient and is signed with our own key: only a
        // reflection (or a copy of our key) can produce it.
        let net = NetworkId::new("n").unwrap();
        let kp = Arc::new(IdentityKeypair::from_seed(&[1; 32]));
        let mut r = Responder::new(kp.clone(), net.clone(), HandshakeConfig::default());
        let m = signed_msg1(&kp, kp.node_id(&net), &net);
        assert!(matches!(
            r.handle_message1(&m, Instant::now()),
            Err(Error::Reflected)
        ));
        assert_eq!(r.pending_len(), 0);
    }

    #[test]
    fn low_order_ephemeral_is_refused() {
        let net = NetworkId::new("n").unwrap();
        let a = IdentityKeypair::from_seed(&[1; 32]);
        let b = Arc::new(IdentityKeypair::from_seed(&[2; 32]));
        let mut r = Responder::with_rng(
            b.clone(),
            net.clone(),
            HandshakeConfig::default(),
            Box::new(SeededRandom::from_u64(1)),
        );
        let mut m = wire::msg1_body(
            &EphemeralPublic::from_bytes([0; 32]),
            &[6; 32],
            &a.public(),
            &b.node_id(&net),
            net.as_bytes(),
            None,
        );
        let sig = a.sign(&transcript::th1(&m));
        m.extend_from_slice(sig.as_bytes());
        assert!(matches!(
            r.handle_message1(&m, Instant::now()),
            Err(Error::NonContributory)
        ));
        assert_eq!(r.pending_len(), 0);
    }
}
