#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Known-answer vectors: object ids, the provider-record signature and message encodings.

use themis_crypto::{IdentityKeypair, NetworkId, NodeId};
use themis_dht::fuzz::{bench_decode_request, bench_find, bench_store};
use themis_dht::{ProviderRecord, ServiceMetadata, ServiceSpec, object_id};

const VECTORS: &str = include_str!("vectors/dht.txt");

fn vector(key: &str) -> String {
    lookup(VECTORS, key)
}

/// The value of `key = hex` in a vector file (`#` lines are comments).
fn lookup(file: &str, key: &str) -> String {
    file.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.trim_start().strip_prefix('='))
        })
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("vector {key} missing"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn record() -> ProviderRecord {
    let (kp, spec) = signer();
    ProviderRecord::sign(
        &kp,
        &NetworkId::new("twiitr").unwrap(),
        &spec,
        "127.0.0.1:1".parse().unwrap(),
        1,
        1_800_000_000_000,
        42,
    )
}

/// The tombstone withdrawing [`record`]: same fields, the next sequence number.
fn tombstone() -> ProviderRecord {
    let (kp, spec) = signer();
    ProviderRecord::sign_withdrawal(
        &kp,
        &NetworkId::new("twiitr").unwrap(),
        &spec,
        "127.0.0.1:1".parse().unwrap(),
        1,
        1_800_000_000_000,
        43,
    )
}

fn signer() -> (IdentityKeypair, ServiceSpec) {
    let kp = IdentityKeypair::from_seed(&[1; 32]);
    let spec = ServiceSpec {
        name: "check".into(),
        addr: Some("10.0.0.1:7000".parse().unwrap()),
        metadata: ServiceMetadata {
            version: "1.0".into(),
            weight: 5,
            tags: vec!["blue".into()],
        },
        delegation: None,
    };
    (kp, spec)
}

#[test]
fn object_ids() {
    assert_eq!(
        hex(object_id("check", 0).as_bytes()),
        vector("object_id_check_0")
    );
    assert_eq!(
        hex(object_id("check", 2).as_bytes()),
        vector("object_id_check_2")
    );
}

#[test]
fn record_signature() {
    let r = record();
    assert_eq!(hex(r.provider().as_bytes()), vector("provider"));
    assert_eq!(hex(r.signature().as_bytes()), vector("signature"));
}

#[test]
fn message_encodings() {
    let find = bench_find(NodeId::from_bytes([7; 32]));
    assert_eq!(hex(&find), vector("find_request"));
    let store = bench_store(&record());
    assert_eq!(hex(&store), vector("store_request"));
    assert!(bench_decode_request(&find) && bench_decode_request(&store));
}

#[test]
fn tombstone_signature_and_encoding() {
    let t = tombstone();
    assert!(t.is_withdrawn());
    assert_eq!(hex(t.signature().as_bytes()), vector("tombstone_signature"));
    let store = bench_store(&t);
    assert_eq!(hex(&store), vector("tombstone_store_request"));
    assert!(bench_decode_request(&store));
}

// ----- owned names (PROTOCOL.md §6.4 "Owned names"), vectors/owned.txt -----

const OWNED: &str = include_str!("vectors/owned.txt");

fn owned(key: &str) -> String {
    lookup(OWNED, key)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn owner_and_name() -> (IdentityKeypair, String) {
    let owner = IdentityKeypair::from_seed(&[7; 32]);
    let name = themis_dht::owned_name("pay", &owner.public()).unwrap();
    (owner, name)
}

#[test]
fn owned_name_and_fingerprint() {
    let (owner, name) = owner_and_name();
    assert_eq!(hex(owner.public().as_bytes()), owned("owner_public_key"));
    let fp = themis_dht::OwnerFingerprint::of(&owner.public());
    assert_eq!(hex(fp.as_bytes()), owned("owner_fingerprint"));
    assert_eq!(name, owned("owned_name"));
    assert_eq!(
        themis_dht::NameOwner::of(&name),
        themis_dht::NameOwner::Owned(fp)
    );
    assert_eq!(
        hex(object_id(&name, 0).as_bytes()),
        owned("object_id_owned_0")
    );
}

fn delegated_record() -> ProviderRecord {
    let (owner, name) = owner_and_name();
    let net = NetworkId::new("twiitr").unwrap();
    let (kp, mut spec) = signer();
    let d = themis_dht::Delegation::sign(&owner, &net, &name, &kp.node_id(&net), 1_900_000_000_000)
        .unwrap();
    spec.name = name;
    spec.delegation = Some(d);
    ProviderRecord::sign(
        &kp,
        &net,
        &spec,
        "127.0.0.1:1".parse().unwrap(),
        0,
        1_800_000_000_000,
        42,
    )
}

#[test]
fn delegation_and_delegated_record() {
    let r = delegated_record();
    assert_eq!(hex(r.provider().as_bytes()), owned("provider"));
    let d = r.delegation().unwrap();
    assert_eq!(hex(&d.encode()), owned("delegation"));
    assert_eq!(hex(&d.encode()[40..]), owned("delegation_signature"));
    assert_eq!(hex(r.signature().as_bytes()), owned("record_signature"));
    assert_eq!(hex(&bench_store(&r)), owned("store_request"));
}

#[test]
fn the_independent_store_bytes_verify_and_every_altered_delegation_is_refused() {
    use themis_dht::Refusal;
    let net = NetworkId::new("twiitr").unwrap();
    let bytes = unhex(&owned("store_request"));
    let rec = themis_dht::fuzz::check_store(&bytes, &net, 8).unwrap();
    assert_eq!(rec, delegated_record());
    // Another network: the provider id no longer derives (bad_identity) before anything else.
    assert_eq!(
        themis_dht::fuzz::check_store(&bytes, &NetworkId::new("other").unwrap(), 8),
        Err(Refusal::BadIdentity)
    );
    // Any byte of the delegation flipped: refused (bad_delegation, or bad_signature when the
    // owner's signature still holds but the record's no longer does).
    let at = bytes.len() - 104;
    for i in 0..104 {
        let mut b = bytes.clone();
        b[at + i] ^= 0x01;
        let got = themis_dht::fuzz::check_store(&b, &net, 8);
        assert!(
            matches!(got, Err(Refusal::BadDelegation | Refusal::BadSignature)),
            "byte {i}: {got:?}"
        );
    }
    // The same record without its delegation (the map's last entry cut, one key fewer).
    let key = b"\x65deleg\x58\x68";
    let cut = bytes.len() - 104 - key.len();
    assert_eq!(&bytes[cut..cut + key.len()], key);
    let mut bare = bytes[..cut].to_vec();
    let map = bytes.iter().position(|&b| b == 0xac).unwrap();
    bare[map] = 0xab;
    assert_eq!(
        themis_dht::fuzz::check_store(&bare, &net, 8),
        Err(Refusal::BadDelegation)
    );
}
