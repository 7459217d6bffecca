//! The handshake transcript: what each signature covers, the final hash the keys are bound
//! to, the session id and the key-confirmation input (PROTOCOL.md, "Handshake transcript").

use themis_crypto::{HASH_LEN, MAC_LEN, MacKey, Signature, Transcript};

use crate::wire::{MSG3_HDR_LEN, NONCE_LEN};
use crate::{SESSION_ID_LEN, SessionId};

/// Label of `TH1`, the hash the initiator signs in message 1.
pub const LABEL_TH1: &str = "themis/v1/hs/1/initiator";
/// Label of `TH2`, the hash the responder signs in message 2.
pub const LABEL_TH2: &str = "themis/v1/hs/2/responder";
/// Label of the final transcript hash `TH` the session keys are derived with.
pub const LABEL_TH: &str = "themis/v1/hs/final";
/// Label of the key-confirmation input of message 3.
pub const LABEL_CONFIRM_INPUT: &str = "themis/v1/hs/3/confirm";
/// Label of the session id derivation.
pub const LABEL_SESSION_ID: &str = "themis/v1/session-id";

/// `TH1 = H(LABEL_TH1; msg1 without its signature)`.
pub(crate) fn th1(msg1_body: &[u8]) -> [u8; HASH_LEN] {
    Transcript::digest(LABEL_TH1, &[msg1_body])
}

/// `TH2 = H(LABEL_TH2; TH1, sig1, msg2 without its signature)`: binds all of message 1 (and so
/// `g^a`, `PK_A`, `B`, `net_id`) into the responder's signature.
pub(crate) fn th2(th1: &[u8; HASH_LEN], sig1: &Signature, msg2_body: &[u8]) -> [u8; HASH_LEN] {
    Transcript::digest(LABEL_TH2, &[th1, sig1.as_bytes(), msg2_body])
}

/// `TH = H(LABEL_TH; TH2, sig2)`: the whole transcript.
pub(crate) fn th_final(th2: &[u8; HASH_LEN], sig2: &Signature) -> [u8; HASH_LEN] {
    Transcript::digest(LABEL_TH, &[th2, sig2.as_bytes()])
}

/// The first 8 bytes of `H(LABEL_SESSION_ID; TH)`.
pub(crate) fn session_id(th: &[u8; HASH_LEN]) -> SessionId {
    let d = Transcript::digest(LABEL_SESSION_ID, &[th]);
    let mut id = [0u8; SESSION_ID_LEN];
    for (dst, src) in id.iter_mut().zip(d) {
        *dst = src;
    }
    SessionId(id)
}

/// The bytes message 3's MAC covers: `H(LABEL_CONFIRM_INPUT; msg3 header, TH, N_A)`.
fn confirm_input(
    header: &[u8; MSG3_HDR_LEN],
    th: &[u8; HASH_LEN],
    nonce: &[u8; NONCE_LEN],
) -> [u8; HASH_LEN] {
    Transcript::digest(LABEL_CONFIRM_INPUT, &[header, th, nonce])
}

/// The MAC of message 3 (paper: `MAC_K(N_A)`, here over the transcript too).
pub(crate) fn confirm_mac(
    key: &MacKey,
    header: &[u8; MSG3_HDR_LEN],
    th: &[u8; HASH_LEN],
    nonce: &[u8; NONCE_LEN],
) -> [u8; MAC_LEN] {
    key.compute(&confirm_input(header, th, nonce))
}

/// Verifies the MAC of message 3 in constant time.
pub(crate) fn verify_confirm(
    key: &MacKey,
    header: &[u8; MSG3_HDR_LEN],
    th: &[u8; HASH_LEN],
    nonce: &[u8; NONCE_LEN],
    mac: &[u8; MAC_LEN],
) -> bool {
    key.verify(&confirm_input(header, th, nonce), mac).is_ok()
}
