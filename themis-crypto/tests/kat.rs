//! Known-answer tests from the RFCs (RFC 8032 §7.1 Ed25519, RFC 7748 §5.2 and §6.1 X25519) and
//! the worked identity example of PROTOCOL.md, all loaded from `tests/vectors/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use themis_crypto::{EphemeralPublic, EphemeralSecret, IdentityKeypair, NetworkId, NodeId};

/// One `[name]` block of a vector file: its `key = value` lines.
struct Vector {
    name: String,
    fields: BTreeMap<String, String>,
}

impl Vector {
    fn text(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .unwrap_or_else(|| panic!("{}: no `{key}` field", self.name))
    }

    fn bytes(&self, key: &str) -> Vec<u8> {
        hex::decode(self.text(key))
            .unwrap_or_else(|e| panic!("{}: `{key}` is not hex: {e}", self.name))
    }

    fn array<const N: usize>(&self, key: &str) -> [u8; N] {
        self.bytes(key)
            .try_into()
            .unwrap_or_else(|_| panic!("{}: `{key}` is not {N} bytes", self.name))
    }
}

/// Parses the vector file format described at the top of each file in `tests/vectors/`.
fn parse(text: &str) -> Vec<Vector> {
    let mut out: Vec<Vector> = Vec::new();
    let mut last_key: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push(Vector {
                name: name.to_owned(),
                fields: BTreeMap::new(),
            });
            last_key = None;
            continue;
        }
        let v = out.last_mut().expect("a field before the first [name]");
        if line.starts_with(char::is_whitespace) {
            let key = last_key
                .as_ref()
                .expect("a continuation line with no field");
            v.fields.get_mut(key).unwrap().push_str(line.trim());
        } else {
            let (key, value) = line.split_once('=').expect("a `key = value` line");
            let key = key.trim().to_owned();
            assert!(
                v.fields
                    .insert(key.clone(), value.trim().to_owned())
                    .is_none(),
                "{}: duplicate field {key}",
                v.name
            );
            last_key = Some(key);
        }
    }
    out
}

#[test]
fn rfc8032_ed25519_from_seed() {
    let vectors = parse(include_str!("vectors/rfc8032-ed25519.txt"));
    let names: Vec<&str> = vectors.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        ["TEST 1", "TEST 2", "TEST 3", "TEST 1024", "TEST SHA(abc)"]
    );
    for v in &vectors {
        let kp = IdentityKeypair::from_seed(&v.array("secret-key"));
        assert_eq!(
            kp.public().as_bytes(),
            &v.array::<32>("public-key"),
            "{}",
            v.name
        );
        let message = v.bytes("message");
        let sig = kp.sign(&message);
        assert_eq!(sig.as_bytes(), &v.array::<64>("signature"), "{}", v.name);
        kp.public().verify(&message, &sig).unwrap();

        // The vector's signature must not verify for any other message or key.
        let mut other = message.clone();
        other.push(0);
        assert!(kp.public().verify(&other, &sig).is_err(), "{}", v.name);
        let stranger = IdentityKeypair::from_seed(&[0x42; 32]).public();
        assert!(stranger.verify(&message, &sig).is_err(), "{}", v.name);
    }
    assert_eq!(vectors[3].bytes("message").len(), 1023);
}

fn x25519(scalar: [u8; 32], u: [u8; 32]) -> [u8; 32] {
    *EphemeralSecret::from_bytes(scalar)
        .diffie_hellman(&EphemeralPublic::from_bytes(u))
        .unwrap()
        .as_bytes()
}

#[test]
fn rfc7748_x25519() {
    let vectors = parse(include_str!("vectors/rfc7748-x25519.txt"));
    let mut checked = 0;
    for v in &vectors {
        if v.name.starts_with("5.2 vector") {
            assert_eq!(
                x25519(v.array("scalar"), v.array("u")),
                v.array::<32>("output"),
                "{}",
                v.name
            );
        } else if v.name.starts_with("5.2 iterate") {
            let n: usize = v.text("iterations").parse().unwrap();
            let mut k = [0u8; 32];
            k[0] = 9;
            let mut u = k;
            for _ in 0..n {
                let next = x25519(k, u);
                u = k;
                k = next;
            }
            assert_eq!(k, v.array::<32>("k"), "{}", v.name);
        } else if v.name == "6.1" {
            let alice = EphemeralSecret::from_bytes(v.array("alice-private"));
            let bob = EphemeralSecret::from_bytes(v.array("bob-private"));
            assert_eq!(alice.public().as_bytes(), &v.array::<32>("alice-public"));
            assert_eq!(bob.public().as_bytes(), &v.array::<32>("bob-public"));
            let shared = v.array::<32>("shared");
            assert_eq!(
                alice.diffie_hellman(&bob.public()).unwrap().as_bytes(),
                &shared
            );
            assert_eq!(
                bob.diffie_hellman(&alice.public()).unwrap().as_bytes(),
                &shared
            );
        } else {
            panic!("unknown vector {}", v.name);
        }
        checked += 1;
    }
    assert_eq!(checked, 5);
}

/// The worked examples of PROTOCOL.md §2.3: seed → public key → hash input → node id. The
/// expected values were computed outside this crate (see the header of `vectors/identity.txt`).
#[test]
fn identity_worked_example() {
    let vectors = parse(include_str!("vectors/identity.txt"));
    assert!(!vectors.is_empty());
    for v in &vectors {
        let kp = IdentityKeypair::from_seed(&v.array("seed"));
        assert_eq!(kp.public().as_bytes(), &v.array::<32>("public-key"));
        let net = NetworkId::new(v.text("network-id")).unwrap();

        // The hash input, spelled out as PROTOCOL.md gives it.
        let input = v.bytes("hash-input");
        let mut want_input = vec![0x11];
        want_input.extend_from_slice(b"themis/v1/node-id");
        want_input.extend_from_slice(&[0, 0, 0, 32]);
        want_input.extend_from_slice(kp.public().as_bytes());
        want_input.extend_from_slice(&(net.as_bytes().len() as u32).to_be_bytes());
        want_input.extend_from_slice(net.as_bytes());
        assert_eq!(input, want_input, "{}", v.name);
        let mut direct = [0u8; 32];
        dryoc::classic::crypto_generichash::crypto_generichash(&mut direct, &input, None).unwrap();

        let id: NodeId = v.text("node-id").parse().unwrap();
        assert_eq!(direct, *id.as_bytes(), "{}", v.name);
        assert_eq!(kp.node_id(&net), id, "{}", v.name);
        assert!(id.is_derived_from(&kp.public(), &net));
    }
}

/// PROTOCOL.md §2.9: the key succession statement, computed outside the crate
/// (`tests/vectors/gen_succession.py`).
#[test]
fn key_succession_statement() {
    use themis_crypto::{Succession, Transcript};
    let vectors = parse(include_str!("vectors/succession.txt"));
    assert!(!vectors.is_empty());
    for v in vectors {
        let net = NetworkId::new(v.text("network-id")).unwrap();
        let old = IdentityKeypair::from_seed(&v.array("old-seed"));
        let new = IdentityKeypair::from_seed(&v.array("new-seed"));
        assert_eq!(old.public().as_bytes(), &v.array::<32>("old-public-key"));
        assert_eq!(new.public().as_bytes(), &v.array::<32>("new-public-key"));
        let issued: u64 = v.text("issued-ms").parse().unwrap();
        let end: u64 = v.text("grace-end-ms").parse().unwrap();
        let want = v.bytes("statement");
        // Signing here gives the same bytes (Ed25519 is deterministic) ...
        let signed = Succession::sign(&old, &new, &net, issued, end).unwrap();
        assert_eq!(signed.encode(), want, "{}", v.name);
        assert_eq!(signed.digest(), v.array::<32>("digest"));
        let d = Transcript::digest(
            "themis/v1/key-succession",
            &[
                net.as_bytes(),
                old.public().as_bytes(),
                new.public().as_bytes(),
                &issued.to_be_bytes(),
                &end.to_be_bytes(),
            ],
        );
        assert_eq!(d, v.array::<32>("digest"));
        assert_eq!(old.sign(&d).as_bytes(), &v.array::<64>("sig-old"));
        assert_eq!(new.sign(&d).as_bytes(), &v.array::<64>("sig-new"));
        // ... and the independent bytes decode to the statement.
        let got = Succession::decode(&want, &net).unwrap();
        assert_eq!(got, signed);
        assert_eq!(got.old_id(), NodeId::from_bytes(v.array("old-node-id")));
        assert_eq!(got.new_id(), NodeId::from_bytes(v.array("new-node-id")));
        assert_eq!((got.issued_ms(), got.grace_end_ms()), (issued, end));
        got.check_in_force(issued, 0).unwrap();
        assert!(got.check_in_force(end, 0).is_err());
    }
}

/// PROTOCOL.md §2.10: a closed network's node id and an admission certificate, computed outside
/// the crate (`themis-handshake/tests/vectors/gen_closed.py`).
#[test]
fn admission_certificate() {
    use themis_crypto::{AdmissionCert, Transcript};
    let vectors = parse(include_str!("vectors/admission.txt"));
    assert!(!vectors.is_empty());
    for v in vectors {
        let ak = IdentityKeypair::from_seed(&v.array("admission-seed"));
        assert_eq!(ak.public().as_bytes(), &v.array::<32>("admission-key"));
        let node = IdentityKeypair::from_seed(&v.array("node-seed"));
        assert_eq!(node.public().as_bytes(), &v.array::<32>("node-public-key"));
        let open = NetworkId::new(v.text("network-id")).unwrap();
        let closed = open.clone().closed(ak.public());
        // The open id is unchanged; the closed one binds the admission key.
        assert_eq!(
            node.node_id(&open).as_bytes(),
            &v.array::<32>("open-node-id")
        );
        let id = node.node_id(&closed);
        assert_eq!(id.as_bytes(), &v.array::<32>("closed-node-id"));
        let not_after: u64 = v.text("not-after-ms").parse().unwrap();
        let d = Transcript::digest(
            "themis/v1/admission-cert",
            &[
                open.as_bytes(),
                ak.public().as_bytes(),
                id.as_bytes(),
                &not_after.to_be_bytes(),
            ],
        );
        assert_eq!(d, v.array::<32>("digest"));
        let want = v.bytes("cert");
        let issued = AdmissionCert::issue(&ak, &closed, id, not_after).unwrap();
        assert_eq!(issued.encode().to_vec(), want, "{}", v.name);
        let got = AdmissionCert::decode(&want).unwrap();
        assert_eq!(got, issued);
        got.verify(&closed, &id, not_after - 1).unwrap();
        assert!(got.verify(&closed, &id, not_after).is_err());
        assert!(got.verify(&open, &node.node_id(&open), 0).is_err());
    }
}
