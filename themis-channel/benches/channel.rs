//! Channel costs: seal+open of one command (and a full command/response round trip), secure
//! and insecure side by side with the bare AEAD primitive; frame header encode/decode.
//!
//! `cargo bench -p themis-channel --bench channel`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::time::Instant;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use themis_channel::{ChannelConfig, FrameHeader, Incoming, peek_header};
use themis_crypto::{AeadKey, NodeId};
use themis_handshake::SessionId;

fn seal_open(c: &mut Criterion) {
    let now = Instant::now();
    for size in [64usize, 16 * 1024] {
        let payload = vec![0x5au8; size];
        let mut g = c.benchmark_group(format!("command_seal_open/{size}B"));
        g.throughput(Throughput::Bytes(size as u64));

        let key = AeadKey::from_bytes([7; 32]);
        let nonce = [1u8; 24];
        let ad = [2u8; 50]; // the channel's AD: 18-byte header + 32-byte receiver id
        let mut buf = payload.clone();
        g.bench_function("bare_aead", |b| {
            b.iter(|| {
                let tag = key.seal_in_place(&nonce, &ad, &mut buf).unwrap();
                key.open_in_place(&nonce, &ad, &mut buf, &tag).unwrap();
                black_box(&buf);
            })
        });

        for secure in [true, false] {
            let (mut a, mut bob) =
                themis_testkit::channel::pair(secure, 1, now, ChannelConfig::default());
            let mut out = BytesMut::with_capacity(size + 64);
            let name = if secure { "secure" } else { "insecure" };
            g.bench_function(name, |b| {
                b.iter(|| {
                    let seq = a.seal_command(black_box(&payload), &mut out, now).unwrap();
                    let got = bob.open(out.split(), now).unwrap();
                    black_box(got.payload());
                    // The endpoint would drop the request on its response or timeout.
                    a.cancel(seq);
                })
            });
        }
        g.finish();

        let mut g = c.benchmark_group(format!("round_trip/{size}B"));
        g.throughput(Throughput::Bytes(2 * size as u64));
        g.bench_function("bare_aead_x2", |b| {
            b.iter(|| {
                for _ in 0..2 {
                    let tag = key.seal_in_place(&nonce, &ad, &mut buf).unwrap();
                    key.open_in_place(&nonce, &ad, &mut buf, &tag).unwrap();
                }
                black_box(&buf);
            })
        });
        for secure in [true, false] {
            let (mut a, mut bob) =
                themis_testkit::channel::pair(secure, 2, now, ChannelConfig::default());
            let mut out = BytesMut::with_capacity(size + 64);
            let name = if secure { "secure" } else { "insecure" };
            g.bench_function(name, |b| {
                b.iter(|| {
                    let seq = a.seal_command(&payload, &mut out, now).unwrap();
                    let cmd = bob.open(out.split(), now).unwrap();
                    bob.seal_response(seq, cmd.payload(), &mut out, now)
                        .unwrap();
                    drop(cmd);
                    let rsp = a.open(out.split(), now).unwrap();
                    assert!(matches!(rsp, Incoming::Response { .. }));
                    black_box(rsp);
                })
            });
        }
        g.finish();
    }
}

fn header(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_header");
    let headers = [
        (
            "secure",
            FrameHeader::Secure {
                command: true,
                session_id: SessionId([9; 8]),
                seq: 123_456,
            },
        ),
        (
            "insecure",
            FrameHeader::Insecure {
                command: false,
                sender: NodeId::from_bytes([3; 32]),
                seq: 123_456,
            },
        ),
    ];
    for (name, h) in headers {
        let mut out = BytesMut::with_capacity(128);
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| {
                out.clear();
                black_box(h).encode(&mut out);
                black_box(&out);
            })
        });
        let mut frame = BytesMut::new();
        h.encode(&mut frame);
        frame.extend_from_slice(&[0; 16]);
        g.bench_function(format!("peek/{name}"), |b| {
            b.iter(|| peek_header(black_box(&frame)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, seal_open, header);
criterion_main!(benches);
