//! A full handshake, both sides in memory, against the sum of the primitives it is made of, so
//! that the protocol's own overhead (parsing, copying, hashing the transcript, the pending
//! table) is visible as the ratio of the two.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use themis_crypto::{EphemeralSecret, IdentityKeypair, NetworkId, SessionKeys, Transcript};
use themis_handshake::{HandshakeConfig, Initiator, Responder};

fn bench(c: &mut Criterion) {
    let net = NetworkId::new("bench").unwrap();
    let a = Arc::new(IdentityKeypair::generate());
    let b = Arc::new(IdentityKeypair::generate());
    let b_id = b.node_id(&net);
    let config = HandshakeConfig::default();
    let now = Instant::now();
    let mut responder = Responder::new(b.clone(), net.clone(), config.clone());

    let mut g = c.benchmark_group("handshake");
    g.bench_function("full (start, msg1, msg2, msg3)", |bench| {
        bench.iter(|| {
            let (mut init, m1) =
                Initiator::start(a.clone(), net.clone(), b_id, &config, now).unwrap();
            let m2 = responder.handle_message1(&m1, now).unwrap();
            let (s, m3) = init.handle_message2(&m2, now).unwrap();
            let t = responder.handle_message3(&m3, now).unwrap();
            black_box((s, t))
        })
    });

    // The same cryptographic work done by hand: 2 X25519 key generations, 2 X25519 exchanges,
    // 2 Ed25519 signatures and verifications, 3 node-id hashes, 2 key derivations, 2 MACs and
    // the 6 short transcript hashes, plus the 64 random bytes.
    let pk_a = a.public();
    let pk_b = b.public();
    g.bench_function("sum of primitives", |bench| {
        bench.iter(|| {
            let mut nonce = [0u8; 32];
            themis_crypto::fill_random(&mut nonce);
            let ea = EphemeralSecret::generate();
            let _ = black_box(pk_a.node_id(&net));
            let th1 = Transcript::digest("l1", &[&[0u8; 195]]);
            let sig1 = a.sign(&th1);
            pk_a.verify(&th1, &sig1).unwrap();
            let eb = EphemeralSecret::generate();
            let sb = eb.diffie_hellman(&ea.public()).unwrap();
            let _ = black_box(pk_a.node_id(&net));
            let th2 = Transcript::digest("l2", &[&th1, sig1.as_bytes(), &[0u8; 130]]);
            let sig2 = b.sign(&th2);
            let th = Transcript::digest("l3", &[&th2, sig2.as_bytes()]);
            let kb = SessionKeys::derive(&sb, &th);
            let _ = black_box(Transcript::digest("sid", &[&th]));
            let _ = black_box(pk_b.node_id(&net));
            pk_b.verify(&th2, &sig2).unwrap();
            let sa = ea.diffie_hellman(&eb.public()).unwrap();
            let ka = SessionKeys::derive(&sa, &th);
            let input = Transcript::digest("c", &[&[0u8; 10], &th, &nonce]);
            let mac = ka.confirm.compute(&input);
            let _ = black_box(Transcript::digest("c", &[&[0u8; 10], &th, &nonce]));
            kb.confirm.verify(&input, &mac).unwrap();
            black_box((ka, kb))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
