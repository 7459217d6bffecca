//! Handshake cookies (PROTOCOL.md §5.2, "Cookies"; after WireGuard's cookie reply): a responder
//! under load answers a message 1 with a stateless cookie, a MAC over the sender's address and
//! the message's `N_A` under a secret rotated every two minutes, and spends a signature check,
//! an X25519 and a pending-table slot only on a message 1 that comes back behind that cookie.
//! Proves that the sender receives at its address (a spoofed source gets nothing) and costs the
//! responder one MAC per message 1.
//!
//! Also the per-source accounting of the responder's pending handshakes (which session id a
//! message 1 led to, and its source prefix, until message 3 or expiry).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use themis_crypto::{MacKey, Transcript};
use themis_handshake::{
    LABEL_SESSION_ID, LABEL_TH, LABEL_TH1, LABEL_TH2, MSG1_CLOSED_MAX_LEN, MSG1_MIN_LEN,
    MSG2_CLOSED_LEN, MSG2_LEN, RandomSource, SESSION_ID_LEN, SessionId, TYPE_MSG1,
};

use crate::proto::{PerSource, SourcePrefix};
use crate::wire::{
    COOKIE_ECHO_MAX_LEN, COOKIE_ECHO_MIN_LEN, COOKIE_SIZE, LABEL_COOKIE, TYPE_COOKIE_ECHO,
    VERSION as V,
};

/// How long a cookie secret is the current one; the previous one is accepted for as long again.
pub(crate) const COOKIE_ROTATION: Duration = Duration::from_secs(120);

/// The address bytes a cookie covers: `family (4 or 6) ‖ IP (4 or 16) ‖ port (2, BE)`, the IP
/// in canonical form (an IPv4-mapped IPv6 address as IPv4).
pub(crate) fn address_bytes(addr: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(19);
    match addr.ip().to_canonical() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
    out
}

/// `cookie = MAC(secret, H("themis/v1/cookie"; address_bytes(addr), N_A))`.
pub(crate) fn cookie_mac(secret: &MacKey, addr: SocketAddr, nonce: &[u8; 32]) -> [u8; COOKIE_SIZE] {
    secret.compute(&Transcript::digest(
        LABEL_COOKIE,
        &[&address_bytes(addr), nonce],
    ))
}

/// The two cookie secrets: the current one (cookies are made with it) and the previous one
/// (still accepted). Drawn lazily, rotated by the `now` of the calls.
pub(super) struct CookieJar {
    current: Option<(MacKey, Instant)>,
    previous: Option<MacKey>,
}

impl CookieJar {
    pub(super) fn new() -> Self {
        Self {
            current: None,
            previous: None,
        }
    }

    /// Rotates if the current secret is `COOKIE_ROTATION` old (the previous one is forgotten if
    /// the current one is twice that old: nothing made with it can be valid any more).
    fn rotate(&mut self, now: Instant, rng: &mut dyn RandomSource) -> &MacKey {
        let stale = match &self.current {
            None => true,
            Some((_, since)) => now.saturating_duration_since(*since) >= COOKIE_ROTATION,
        };
        if stale {
            let old = self.current.take();
            self.previous = old.and_then(|(k, since)| {
                (now.saturating_duration_since(since) < 2 * COOKIE_ROTATION).then_some(k)
            });
            let mut secret = [0u8; COOKIE_SIZE];
            rng.fill(&mut secret);
            self.current = Some((MacKey::from_bytes(secret), now));
            zeroize::Zeroize::zeroize(&mut secret);
        }
        match &self.current {
            Some((k, _)) => k,
            None => unreachable!("set above"),
        }
    }

    /// The cookie for a message 1 with nonce `nonce` from `addr`.
    pub(super) fn make(
        &mut self,
        now: Instant,
        rng: &mut dyn RandomSource,
        addr: SocketAddr,
        nonce: &[u8; 32],
    ) -> [u8; COOKIE_SIZE] {
        cookie_mac(self.rotate(now, rng), addr, nonce)
    }

    /// Whether `cookie` is the cookie of (`addr`, `nonce`) under the current or the previous
    /// secret. Constant time in the cookie.
    pub(super) fn check(
        &mut self,
        now: Instant,
        rng: &mut dyn RandomSource,
        addr: SocketAddr,
        nonce: &[u8; 32],
        cookie: &[u8; COOKIE_SIZE],
    ) -> bool {
        let input = Transcript::digest(LABEL_COOKIE, &[&address_bytes(addr), nonce]);
        let current = self.rotate(now, rng).verify(&input, cookie).is_ok();
        let previous = self
            .previous
            .as_ref()
            .is_some_and(|k| k.verify(&input, cookie).is_ok());
        current | previous
    }
}

/// A cookie echo `01 3F ‖ cookie (32) ‖ message 1`: the cookie and the message 1 (whose header
/// and length are checked, nothing else), or `None`.
pub(crate) fn parse_echo(b: &[u8]) -> Option<([u8; COOKIE_SIZE], &[u8])> {
    if !(COOKIE_ECHO_MIN_LEN..=COOKIE_ECHO_MAX_LEN).contains(&b.len()) {
        return None;
    }
    let (&[v, ty], rest) = b.split_first_chunk::<2>()?;
    if v != V || ty != TYPE_COOKIE_ECHO {
        return None;
    }
    let (cookie, msg1) = rest.split_first_chunk::<COOKIE_SIZE>()?;
    (msg1.get(..2)? == [V, TYPE_MSG1]).then_some((*cookie, msg1))
}

/// The cookie echo of `msg1` behind `cookie`.
pub(crate) fn encode_echo(cookie: &[u8; COOKIE_SIZE], msg1: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + COOKIE_SIZE + msg1.len());
    out.extend_from_slice(&[V, TYPE_COOKIE_ECHO]);
    out.extend_from_slice(cookie);
    out.extend_from_slice(msg1);
    out
}

/// Whether `msg1` has a message 1's length (open or closed network) and names `local` as its
/// recipient (bytes 98..130): what a responder checks before answering it with a cookie.
pub(super) fn msg1_for(msg1: &[u8], local: &[u8; 32]) -> bool {
    (MSG1_MIN_LEN..=MSG1_CLOSED_MAX_LEN).contains(&msg1.len())
        && msg1.get(..2) == Some(&[V, TYPE_MSG1][..])
        && msg1.get(98..130) == Some(&local[..])
}

/// The session id the handshake of `msg1` and the `msg2` answering it leads to (PROTOCOL.md
/// §3.5: `TH1`, `TH2`, `TH`, then the id), computed from the public messages alone.
pub(super) fn session_id_of(msg1: &[u8], msg2: &[u8]) -> Option<SessionId> {
    if !(msg2.len() == MSG2_LEN || msg2.len() == MSG2_CLOSED_LEN) || msg1.len() < MSG1_MIN_LEN {
        return None;
    }
    // each body is everything before its 64-byte signature (a closed network's certificate
    // included, §3.2/§3.3)
    let (body1, sig1) = msg1.split_at_checked(msg1.len() - 64)?;
    let (body2, sig2) = msg2.split_at_checked(msg2.len() - 64)?;
    let th1 = Transcript::digest(LABEL_TH1, &[body1]);
    let th2 = Transcript::digest(LABEL_TH2, &[&th1, sig1, body2]);
    let th = Transcript::digest(LABEL_TH, &[&th2, sig2]);
    let d = Transcript::digest(LABEL_SESSION_ID, &[&th]);
    let mut id = [0u8; SESSION_ID_LEN];
    id.copy_from_slice(d.get(..SESSION_ID_LEN)?);
    Some(SessionId(id))
}

/// The responder's pending handshakes by source prefix, each charged until its message 3
/// arrives or it expires (the responder's own entries live exactly as long).
pub(super) struct PendingBySource {
    table: PerSource<SourcePrefix>,
    by_session: HashMap<SessionId, (SourcePrefix, Instant, u64)>,
    by_expiry: BTreeMap<(Instant, u64), SessionId>,
    next_seq: u64,
}

impl PendingBySource {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            table: PerSource::new(cap),
            by_session: HashMap::new(),
            by_expiry: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Whether `prefix` may have one more pending handshake (expired ones are purged first).
    pub(super) fn has_room(&mut self, now: Instant, prefix: SourcePrefix) -> bool {
        if self.table.is_full(prefix) {
            self.purge(now);
        }
        !self.table.is_full(prefix)
    }

    /// Charges handshake `sid` to `prefix` until `expires_at`.
    pub(super) fn insert(&mut self, prefix: SourcePrefix, sid: SessionId, expires_at: Instant) {
        if self.by_session.contains_key(&sid) || !self.table.acquire(prefix) {
            return;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.by_session.insert(sid, (prefix, expires_at, seq));
        self.by_expiry.insert((expires_at, seq), sid);
    }

    /// Handshake `sid` finished (or was dropped): gives its slot back.
    pub(super) fn remove(&mut self, sid: &SessionId) {
        if let Some((prefix, at, seq)) = self.by_session.remove(sid) {
            self.by_expiry.remove(&(at, seq));
            self.table.release(prefix);
        }
    }

    /// Gives back the slots of every handshake expired at `now`.
    pub(super) fn purge(&mut self, now: Instant) {
        while let Some(e) = self.by_expiry.first_entry() {
            if e.key().0 > now {
                break;
            }
            let sid = e.remove();
            if let Some((prefix, _, _)) = self.by_session.remove(&sid) {
                self.table.release(prefix);
            }
        }
    }

    /// Source prefixes holding a slot.
    pub(super) fn sources(&self) -> usize {
        self.table.keys()
    }

    /// Handshakes charged.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.table.total()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;
    use themis_crypto::{IdentityKeypair, NetworkId};
    use themis_handshake::{HandshakeConfig, Initiator, Responder, SeededRandom};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn session_id_matches_the_handshake() {
        let net = NetworkId::new("n").unwrap();
        let a = Arc::new(IdentityKeypair::from_seed(&[1; 32]));
        let b = Arc::new(IdentityKeypair::from_seed(&[2; 32]));
        let cfg = HandshakeConfig::default();
        let now = Instant::now();
        let mut r = Responder::new(b.clone(), net.clone(), cfg.clone());
        let (mut i, m1) = Initiator::start(a, net.clone(), b.node_id(&net), &cfg, now).unwrap();
        let m2 = r.handle_message1(&m1, now).unwrap();
        let (s, _) = i.handle_message2(&m2, now).unwrap();
        assert_eq!(session_id_of(&m1, &m2), Some(s.session_id));
        assert_eq!(session_id_of(&m1, &m2[1..]), None);
    }

    #[test]
    fn cookies_bind_address_and_nonce_and_rotate() {
        let mut rng = SeededRandom::from_u64(7);
        let mut jar = CookieJar::new();
        let t0 = Instant::now();
        let a = addr("127.0.0.1:4000");
        let c = jar.make(t0, &mut rng, a, &[1; 32]);
        assert!(jar.check(t0, &mut rng, a, &[1; 32], &c));
        assert!(!jar.check(t0, &mut rng, a, &[2; 32], &c));
        assert!(!jar.check(t0, &mut rng, addr("127.0.0.1:4001"), &[1; 32], &c));
        assert!(!jar.check(t0, &mut rng, addr("127.0.0.2:4000"), &[1; 32], &c));
        // The mapped form of the same address is the same source.
        assert!(jar.check(t0, &mut rng, addr("[::ffff:127.0.0.1]:4000"), &[1; 32], &c));
        // One rotation later: still accepted (previous secret); two: refused.
        let t1 = t0 + COOKIE_ROTATION;
        assert!(jar.check(t1, &mut rng, a, &[1; 32], &c));
        assert_ne!(jar.make(t1, &mut rng, a, &[1; 32]), c);
        let t2 = t1 + COOKIE_ROTATION;
        assert!(!jar.check(t2, &mut rng, a, &[1; 32], &c));
        // A long idle gap forgets the previous secret too.
        let mut jar = CookieJar::new();
        let c = jar.make(t0, &mut rng, a, &[1; 32]);
        assert!(!jar.check(t0 + 2 * COOKIE_ROTATION, &mut rng, a, &[1; 32], &c));
    }

    #[test]
    fn pending_by_source_counts_until_message3_or_expiry() {
        let t0 = Instant::now();
        let p = SourcePrefix::V4([127, 0, 0, 2]);
        let q = SourcePrefix::V4([127, 0, 0, 1]);
        let mut t = PendingBySource::new(2);
        let ttl = Duration::from_secs(10);
        t.insert(p, SessionId([1; 8]), t0 + ttl);
        t.insert(p, SessionId([2; 8]), t0 + ttl);
        assert!(!t.has_room(t0, p));
        assert!(t.has_room(t0, q));
        t.remove(&SessionId([1; 8]));
        assert!(t.has_room(t0, p));
        t.insert(p, SessionId([3; 8]), t0 + 2 * ttl);
        assert!(!t.has_room(t0, p));
        // The first expires: room again, found by the purge in has_room.
        assert!(t.has_room(t0 + ttl, p));
        assert_eq!(t.len(), 1);
        assert_eq!(t.sources(), 1);
    }

    /// tests/vectors/cookie.txt, generated independently (gen_cookie.py: hashlib, hmac).
    #[test]
    fn known_answer_cookies() {
        use super::super::control::Control;
        const KAT: &str = include_str!("../../../tests/vectors/cookie.txt");
        let mut msg1 = Vec::new();
        let mut n = 0;
        for line in KAT.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let (k, v) = line.split_once(" = ").unwrap();
            if k == "msg1" {
                msg1 = hex::decode(v).unwrap();
                continue;
            }
            let f: Vec<&str> = v.split(' ').collect();
            let secret = MacKey::from_bytes(hex::decode(f[0]).unwrap().try_into().unwrap());
            let a = addr(f[1]);
            let nonce: [u8; 32] = hex::decode(f[2]).unwrap().try_into().unwrap();
            assert_eq!(hex::encode(address_bytes(a)), f[3]);
            let cookie = cookie_mac(&secret, a, &nonce);
            assert_eq!(hex::encode(cookie), f[4]);
            let reply = Control::Cookie { nonce, cookie }.encode();
            assert_eq!(hex::encode(&reply), f[5]);
            assert_eq!(
                Control::decode(&reply),
                Some(Control::Cookie { nonce, cookie })
            );
            if f[6] != "-" {
                let echo = encode_echo(&cookie, &msg1);
                assert_eq!(hex::encode(&echo), f[6]);
                assert_eq!(parse_echo(&echo), Some((cookie, &msg1[..])));
            }
            n += 1;
        }
        assert_eq!(n, 5);
    }

    proptest! {
        #[test]
        fn echo_round_trips(cookie in any::<[u8; 32]>(), body in proptest::collection::vec(any::<u8>(), 194..=257)) {
            let mut msg1 = vec![V, TYPE_MSG1];
            msg1.extend_from_slice(&body);
            let e = encode_echo(&cookie, &msg1);
            prop_assert_eq!(parse_echo(&e), Some((cookie, &msg1[..])));
        }

        #[test]
        fn parse_echo_never_panics(b in proptest::collection::vec(any::<u8>(), 0..320)) {
            if let Some((c, m)) = parse_echo(&b) {
                prop_assert_eq!(encode_echo(&c, m), b);
            }
        }
    }
}
