//! Micro-benchmarks of the primitives every handshake and frame costs.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dryoc::classic::crypto_secretbox::{crypto_secretbox_detached, crypto_secretbox_open_detached};
use std::hint::black_box;
use themis_crypto::{AeadKey, EphemeralSecret, IdentityKeypair, MacKey, NetworkId};

fn bench(c: &mut Criterion) {
    let net = NetworkId::new("bench").unwrap();
    let kp = IdentityKeypair::generate();
    let sig = kp.sign(b"message");
    c.bench_function("ed25519/keygen", |b| b.iter(IdentityKeypair::generate));
    c.bench_function("ed25519/sign_64B", |b| {
        b.iter(|| kp.sign(black_box(&[7u8; 64])))
    });
    c.bench_function("ed25519/verify", |b| {
        b.iter(|| kp.public().verify(black_box(b"message"), &sig).unwrap())
    });
    c.bench_function("node_id/derive", |b| {
        b.iter(|| kp.public().node_id(black_box(&net)))
    });
    let peer = EphemeralSecret::generate().public();
    c.bench_function("x25519/generate", |b| b.iter(EphemeralSecret::generate));
    let eph = EphemeralSecret::generate();
    c.bench_function("x25519/dh", |b| {
        b.iter(|| eph.diffie_hellman(black_box(&peer)).unwrap())
    });
    let mac = MacKey::from_bytes([1; 32]);
    c.bench_function("hmac_sha512_256/32B", |b| {
        b.iter(|| mac.compute(black_box(&[0u8; 32])))
    });

    let key = AeadKey::generate();
    let nonce = [0u8; 24];
    for size in [64usize, 16 * 1024] {
        let mut g = c.benchmark_group(format!("xchacha20poly1305/seal_open_{size}B"));
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0u8; size];
        g.bench_function("seal+open", |b| {
            b.iter(|| {
                let tag = key.seal_in_place(&nonce, b"header", &mut buf).unwrap();
                key.open_in_place(&nonce, b"header", &mut buf, &tag)
                    .unwrap();
            })
        });
        // The same bytes with the HChaCha20 subkey made once (as the channel does per session
        // and frame type): the per-frame cost of a small frame without that step.
        let prefixed = key.for_nonce_prefix(&[0u8; 16]);
        let tail = [0u8; 8];
        g.bench_function("seal+open, subkey made once", |b| {
            b.iter(|| {
                let tag = prefixed.seal_in_place(&tail, b"header", &mut buf).unwrap();
                prefixed
                    .open_in_place(&tail, b"header", &mut buf, &tag)
                    .unwrap();
            })
        });
        // For comparison only (PROTOCOL.md's AEAD choice): libsodium's secretbox,
        // XSalsa20-Poly1305 without associated data, seal then open of the same size.
        let sb_key = [7u8; 32];
        let sb_nonce = [0u8; 24];
        let msg = vec![0u8; size];
        let mut ct = vec![0u8; size];
        g.bench_function("xsalsa20poly1305_secretbox_seal+open", |b| {
            b.iter(|| {
                let mut mac = [0u8; 16];
                crypto_secretbox_detached(&mut ct, &mut mac, black_box(&msg), &sb_nonce, &sb_key)
                    .unwrap();
                crypto_secretbox_open_detached(&mut buf, &ct, &mac, &sb_nonce, &sb_key).unwrap();
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
