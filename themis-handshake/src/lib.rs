//! The THEMIS authenticated key agreement (paper §5.1.1, Figure 2) as a sans-I/O state machine.
//!
//! Three messages establish a [`Session`] between two self-certifying identities:
//!
//! 1. A → B: `g^a, N_A, PK_A, B, net_id, Sig_A(TH1)` — B checks the network, that he is `B`,
//!    and the signature.
//! 2. B → A: `g^b, PK_B, N_A, A, Sig_B(TH2)` — A checks `h(PK_B, net_id) = B`, her nonce, that
//!    she is `A`, and the signature; both derive the keys.
//! 3. A → B: `session_id, MAC_confirm(TH, N_A)` — B registers the session only when it verifies.
//!
//! Nothing here touches a socket or a clock: every input takes the bytes received and the
//! caller's `now`, every output is bytes to send, a [`Session`], or a deadline. PROTOCOL.md
//! ("Handshake") gives every byte, label and check.
//!
//! Feature `testing` (off by default, for tests and simulations only) adds `SeededRandom`, a
//! reproducible [`RandomSource`], and makes a [`Session`]'s keys readable and settable.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use themis_crypto::{IdentityKeypair, NetworkId};
//! use themis_handshake::{HandshakeConfig, Initiator, Responder};
//!
//! let net = NetworkId::new("twiitr")?;
//! let alice = Arc::new(IdentityKeypair::generate());
//! let bob = Arc::new(IdentityKeypair::generate());
//! let config = HandshakeConfig::default();
//! let now = Instant::now();
//!
//! let mut responder = Responder::new(bob.clone(), net.clone(), config.clone());
//! let (mut initiator, msg1) =
//!     Initiator::start(alice.clone(), net.clone(), bob.node_id(&net), &config, now)?;
//! let msg2 = responder.handle_message1(&msg1, now)?;
//! let (a_session, msg3) = initiator.handle_message2(&msg2, now)?;
//! let b_session = responder.handle_message3(&msg3, now)?;
//!
//! assert_eq!(a_session.session_id, b_session.session_id);
//! assert_eq!(a_session.peer_id, bob.node_id(&net));
//! assert_eq!(b_session.peer_id, alice.node_id(&net));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod config;
mod error;
mod initiator;
mod random;
mod responder;
mod session;
mod transcript;
mod wire;

pub use config::{
    Admission, DEFAULT_INITIATOR_TIMEOUT, DEFAULT_PENDING_CAPACITY, DEFAULT_PENDING_TTL,
    HandshakeConfig, WallClock,
};
pub use error::Error;
pub use initiator::Initiator;
#[cfg(feature = "testing")]
pub use random::SeededRandom;
pub use random::{OsRandom, RandomSource};
pub use responder::Responder;
pub use session::{Role, SESSION_ID_LEN, Session, SessionId};
pub use transcript::{LABEL_CONFIRM_INPUT, LABEL_SESSION_ID, LABEL_TH, LABEL_TH1, LABEL_TH2};
pub use wire::{
    MSG1_CLOSED_MAX_LEN, MSG1_CLOSED_MIN_LEN, MSG1_MAX_LEN, MSG1_MIN_LEN, MSG2_CLOSED_LEN,
    MSG2_LEN, MSG3_LEN, MessageKind, NONCE_LEN, TYPE_MSG1, TYPE_MSG2, TYPE_MSG3, VERSION, peek,
};

/// Fuzzing access to the message parsers (`fuzz/`). Not part of the API: may change without
/// notice.
#[doc(hidden)]
pub mod fuzz {
    /// Parses arbitrary bytes as message 1, 2 and 3, rebuilds what parsed and checks it
    /// equals the input and that [`crate::peek`] routes it alike. `Ok(Some(n))`: message `n`
    /// parsed; `Err`: a check failed (a bug).
    pub fn roundtrip(bytes: &[u8]) -> Result<Option<u8>, String> {
        crate::wire::fuzz_roundtrip(bytes)
    }
}

/// Hooks for known-answer tests (feature `testing`). Not part of the API: may change without
/// notice.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod test_hooks {
    use crate::RandomSource;

    /// A [`RandomSource`] that hands out fixed bytes in order (zeros once exhausted), so that a
    /// test can fix the ephemeral secrets and the nonce.
    #[derive(Debug)]
    pub struct ScriptedRandom {
        bytes: std::collections::VecDeque<u8>,
    }

    impl ScriptedRandom {
        /// Hands out `bytes` in order.
        pub fn new(bytes: Vec<u8>) -> Self {
            Self {
                bytes: bytes.into(),
            }
        }
    }

    impl RandomSource for ScriptedRandom {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = self.bytes.pop_front().unwrap_or(0);
            }
        }
    }
}
