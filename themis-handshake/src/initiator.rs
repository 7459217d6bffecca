//! The initiator (the paper's Alice): sends message 1, checks message 2, sends message 3.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use themis_crypto::{
    EphemeralSecret, HASH_LEN, IdentityKeypair, NetworkId, NodeId, SessionKeys, Signature,
};
use zeroize::Zeroize;

use crate::random::{OsRandom, RandomSource};
use crate::wire::{self, NONCE_LEN};
use crate::{Admission, Error, HandshakeConfig, Role, Session, transcript};

/// The initiator's side of one handshake, waiting for message 2.
///
/// Feed every message 2 addressed to it to [`Initiator::handle_message2`]. A message that fails
/// any check leaves the initiator waiting, so an on-path attacker who injects garbage cannot
/// abort the handshake; only the deadline ([`Initiator::deadline`]) ends it.
pub struct Initiator {
    network: NetworkId,
    local_id: NodeId,
    expected_peer: NodeId,
    ephemeral: EphemeralSecret,
    nonce: [u8; NONCE_LEN],
    th1: [u8; HASH_LEN],
    sig1: Signature,
    deadline: Instant,
    finished: bool,
    /// Our certificate and clock, on a closed network.
    admission: Option<Admission>,
}

impl Initiator {
    /// Starts a handshake with `expected_peer` on `network` and returns message 1, drawing the
    /// ephemeral secret and the nonce from the operating system.
    ///
    /// Fails with [`Error::SelfHandshake`] if `expected_peer` is this node's own id.
    pub fn start(
        identity: Arc<IdentityKeypair>,
        network: NetworkId,
        expected_peer: NodeId,
        config: &HandshakeConfig,
        now: Instant,
    ) -> Result<(Self, Vec<u8>), Error> {
        Self::start_with_rng(identity, network, expected_peer, config, now, &mut OsRandom)
    }

    /// Like [`Initiator::start`], drawing randomness (32 bytes of ephemeral secret, then the
    /// 32-byte nonce) from `rng`.
    pub fn start_with_rng(
        identity: Arc<IdentityKeypair>,
        network: NetworkId,
        expected_peer: NodeId,
        config: &HandshakeConfig,
        now: Instant,
        rng: &mut dyn RandomSource,
    ) -> Result<(Self, Vec<u8>), Error> {
        let local_id = identity.node_id(&network);
        if local_id == expected_peer {
            return Err(Error::SelfHandshake(local_id));
        }
        // Closed network (PROTOCOL.md §2.10): our certificate goes into message 1.
        let admission = match network.admission_key() {
            None => None,
            Some(_) => Some(
                config
                    .admission
                    .clone()
                    .ok_or_else(|| Error::NoAdmissionCertificate(network.clone()))?,
            ),
        };
        // paper §5.1.1: "Alice picks a Diffie–Hellman exponent a and a fresh nonce N_A".
        let mut secret = [0u8; 32];
        rng.fill(&mut secret);
        let ephemeral = EphemeralSecret::from_bytes(secret);
        secret.zeroize();
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce);

        // paper §5.1.1, message 1: g^a, N_A, PK_A, net_id, B, all signed with SK_A.
        // Strengthened: the signature covers TH1, a labelled hash of the exact bytes sent.
        let mut msg1 = wire::msg1_body(
            &ephemeral.public(),
            &nonce,
            &identity.public(),
            &expected_peer,
            network.as_bytes(),
            admission.as_ref().map(|a| &a.certificate),
        );
        let th1 = transcript::th1(&msg1);
        let sig1 = identity.sign(&th1);
        msg1.extend_from_slice(sig1.as_bytes());

        let deadline = now.checked_add(config.initiator_timeout).unwrap_or(now);
        Ok((
            Self {
                network,
                local_id,
                expected_peer,
                ephemeral,
                nonce,
                th1,
                sig1,
                deadline,
                finished: false,
                admission,
            },
            msg1,
        ))
    }

    /// The node this handshake must reach.
    pub fn expected_peer(&self) -> NodeId {
        self.expected_peer
    }

    /// The nonce `N_A` of message 1; message 2 echoes it (see [`crate::MessageKind::Message2`]),
    /// so an endpoint can route message 2 by it.
    pub fn nonce(&self) -> &[u8; NONCE_LEN] {
        &self.nonce
    }

    /// When the handshake fails if no valid message 2 has arrived.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// `true` once `now` has reached the deadline.
    pub fn is_timed_out(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// Checks message 2 and, if it is genuine, returns the established session and message 3.
    ///
    /// Checks, in order (PROTOCOL.md lists the error of each): finished, deadline, header,
    /// length, `h(PK_B, net_id) = B`, echoed nonce, recipient `A`, signature, contributory DH.
    /// On error nothing changes: the initiator keeps waiting for the genuine message 2.
    pub fn handle_message2(
        &mut self,
        bytes: &[u8],
        now: Instant,
    ) -> Result<(Session, Vec<u8>), Error> {
        if self.finished {
            return Err(Error::AlreadyFinished);
        }
        if self.is_timed_out(now) {
            return Err(Error::TimedOut {
                peer: self.expected_peer,
            });
        }
        let m = wire::parse_msg2(bytes)?;
        // A closed network's message 2 carries the responder's certificate, an open one's none.
        if m.cert.is_some() != self.admission.is_some() {
            return Err(Error::Malformed {
                message: "message 2",
                reason: if self.admission.is_some() {
                    "no admission certificate, but this network is closed"
                } else {
                    "an admission certificate, but this network is open"
                },
            });
        }
        // paper §5.1.1: Alice verifies that the hash of PK_B is the identity she meant to reach.
        let actual = m.responder_public.node_id(&self.network);
        if actual != self.expected_peer {
            return Err(Error::IdentityMismatch {
                expected: self.expected_peer,
                actual,
            });
        }
        // paper §5.1.1: Bob includes N_A "to allow Alice to confirm freshness".
        if m.nonce != self.nonce {
            return Err(Error::NonceMismatch);
        }
        // paper §5.1.1: ... "and Alice's identifier A to allow her to verify that the message was
        // meant for her".
        if m.recipient != self.local_id {
            return Err(Error::NotIntendedRecipient {
                ours: self.local_id,
                addressed_to: m.recipient,
            });
        }
        // paper §5.1.1: "she checks that the signature is valid". Strengthened: Bob signs TH2,
        // which also covers all of message 1 (g^a, PK_A, B, net_id, Alice's signature).
        let th2 = transcript::th2(&self.th1, &self.sig1, m.signed);
        m.responder_public
            .verify(&th2, &m.signature)
            .map_err(|_| Error::BadSignature)?;
        // Closed network (beyond the paper, PROTOCOL.md §2.10): B's certificate admits B now.
        if let (Some(cert), Some(adm)) = (&m.cert, &self.admission) {
            cert.verify(&self.network, &self.expected_peer, adm.clock.unix_ms(now))
                .map_err(|problem| Error::AdmissionRefused {
                    peer: self.expected_peer,
                    problem,
                })?;
        }
        // paper §5.1.1: K_AB = (g^b)^a. Strengthened: all-zero results refused, and the keys
        // come from HKDF over g^ab and the transcript hash, never g^ab itself.
        let shared = self
            .ephemeral
            .diffie_hellman(&m.ephemeral)
            .map_err(|_| Error::NonContributory)?;
        let th = transcript::th_final(&th2, &m.signature);
        let keys = SessionKeys::derive(&shared, &th);
        let session_id = transcript::session_id(&th);

        // paper §5.1.1, message 3: "Alice sends him a MAC of N_A created with K_AB". Here with
        // the confirm key, over the message header, TH and N_A.
        let header = wire::msg3_header(&session_id);
        let mac = transcript::confirm_mac(&keys.confirm, &header, &th, &self.nonce);
        let mut msg3 = Vec::with_capacity(wire::MSG3_LEN);
        msg3.extend_from_slice(&header);
        msg3.extend_from_slice(&mac);

        self.finished = true;
        let SessionKeys {
            initiator_to_responder,
            responder_to_initiator,
            ..
        } = keys;
        let session = Session {
            role: Role::Initiator,
            network: self.network.clone(),
            local_id: self.local_id,
            peer_id: self.expected_peer,
            peer_public: m.responder_public,
            session_id,
            transcript_hash: th,
            send_key: initiator_to_responder,
            recv_key: responder_to_initiator,
            established_at: now,
        };
        Ok((session, msg3))
    }
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field("local_id", &self.local_id)
            .field("expected_peer", &self.expected_peer)
            .field("network", &self.network)
            .field("deadline", &self.deadline)
            .field("finished", &self.finished)
            .field("ephemeral", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;
    use themis_crypto::{EphemeralPublic, IdentityKeypair};

    #[test]
    fn low_order_ephemeral_in_a_genuine_message2_is_refused_and_state_kept() {
        // Only a misbehaving (or compromised) responder can sign a low-order g^b; the initiator
        // must still refuse it, and keep waiting.
        let net = NetworkId::new("n").unwrap();
        let a = Arc::new(IdentityKeypair::from_seed(&[1; 32]));
        let b = IdentityKeypair::from_seed(&[2; 32]);
        let now = Instant::now();
        let (mut init, msg1) = Initiator::start_with_rng(
            a.clone(),
            net.clone(),
            b.node_id(&net),
            &HandshakeConfig::default(),
            now,
            &mut SeededRandom::from_u64(3),
        )
        .unwrap();
        let th1 = transcript::th1(&msg1[..msg1.len() - 64]);
        let mut m2 = wire::msg2_body(
            &EphemeralPublic::from_bytes([0; 32]),
            &b.public(),
            init.nonce(),
            &a.node_id(&net),
            None,
        );
        let sig = b.sign(&transcript::th2(&th1, &init.sig1, &m2));
        m2.extend_from_slice(sig.as_bytes());
        assert!(matches!(
            init.handle_message2(&m2, now),
            Err(Error::NonContributory)
        ));
        assert!(!init.finished);
    }

    #[test]
    fn refuses_to_start_with_itself() {
        let net = NetworkId::new("n").unwrap();
        let a = Arc::new(IdentityKeypair::from_seed(&[1; 32]));
        let me = a.node_id(&net);
        assert!(matches!(
            Initiator::start(a, net, me, &HandshakeConfig::default(), Instant::now()),
            Err(Error::SelfHandshake(id)) if id == me
        ));
    }
}
