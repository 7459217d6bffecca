#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Known-answer vectors: object ids, the provider-record signature and message encodings.

use themis_crypto::{IdentityKeypair, NetworkId, NodeId};
use themis_dht::fuzz::{bench_decode_request, bench_find, bench_store};
use themis_dht::{ProviderRecord, ServiceMetadata, ServiceSpec, object_id};

const VECTORS: &str = include_str!("vectors/dht.txt");

fn vector(key: &str) -> String {
    VECTORS
        .lines()
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
