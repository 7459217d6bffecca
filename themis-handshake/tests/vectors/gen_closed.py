#!/usr/bin/env python3
"""Computes the closed-network vectors of PROTOCOL.md §2.10 and §3 outside the crates (Python
`cryptography` Ed25519 and X25519, `hashlib.blake2b`, `hmac`): the admission certificates, the
closed node ids and a whole closed-network handshake. Writes closed-twiitr.txt beside this file
and themis-crypto/tests/vectors/admission.txt."""
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def H(label, *parts):
    data = bytes([len(label)]) + label
    for p in parts:
        data += struct.pack(">I", len(p)) + p
    return hashlib.blake2b(data, digest_size=32).digest()


def ed(seed):
    k = Ed25519PrivateKey.from_private_bytes(seed)
    return k, k.public_key().public_bytes(*RAW)


def x(secret):
    k = X25519PrivateKey.from_private_bytes(secret)
    return k, k.public_key().public_bytes(*RAW)


def hkdf_expand1(prk, info):
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


here = os.path.dirname(os.path.abspath(__file__))
net = "twiitr".encode()
seed_a, seed_b, seed_ak = bytes([0x31] * 32), bytes([0x32] * 32), bytes([0x30] * 32)
eph_a, nonce_a, eph_b = bytes([0x33] * 32), bytes([0x34] * 32), bytes([0x35] * 32)
not_after_a, not_after_b = 1_800_000_000_000, 1_800_086_400_000
now_ms = 1_799_999_999_999  # the last millisecond at which both certificates are valid

ka, pk_a = ed(seed_a)
kb, pk_b = ed(seed_b)
kak, ak = ed(seed_ak)
node = lambda pk: H(b"themis/v1/node-id", pk, net, ak)
a_id, b_id = node(pk_a), node(pk_b)
open_a_id = H(b"themis/v1/node-id", pk_a, net)


def cert(subject, not_after):
    nb = struct.pack(">Q", not_after)
    sig = kak.sign(H(b"themis/v1/admission-cert", net, ak, subject, nb))
    return ak + subject + nb + sig


cert_a, cert_b = cert(a_id, not_after_a), cert(b_id, not_after_b)
ea, ga = x(eph_a)
eb, gb = x(eph_b)

msg1 = b"\x01\x01" + ga + nonce_a + pk_a + b_id + bytes([len(net)]) + net + cert_a
th1 = H(b"themis/v1/hs/1/initiator", msg1)
sig1 = ka.sign(th1)
msg1 += sig1
msg2 = b"\x01\x02" + gb + pk_b + nonce_a + a_id + cert_b
th2 = H(b"themis/v1/hs/2/responder", th1, sig1, msg2)
sig2 = kb.sign(th2)
msg2 += sig2
th = H(b"themis/v1/hs/final", th2, sig2)
ss = ea.exchange(X25519PublicKey.from_public_bytes(gb))
prk = hmac.new(th, ss, hashlib.sha256).digest()
k_i2r = hkdf_expand1(prk, b"themis/v1/key/initiator-to-responder")
k_r2i = hkdf_expand1(prk, b"themis/v1/key/responder-to-initiator")
k_confirm = hkdf_expand1(prk, b"themis/v1/key/confirm")
sid = H(b"themis/v1/session-id", th)[:8]
hdr3 = b"\x01\x03" + sid
mac3 = hmac.new(k_confirm, H(b"themis/v1/hs/3/confirm", hdr3, th, nonce_a), hashlib.sha512).digest()[:32]
msg3 = hdr3 + mac3
assert len(msg1) == 195 + len(net) + 136 and len(msg2) == 330 and len(msg3) == 42

with open(os.path.join(here, "closed-twiitr.txt"), "w") as f:
    f.write("# THEMIS handshake known-answer transcript on a closed network (\"twiitr\" under an\n")
    f.write("# admission key), computed outside the crate by gen_closed.py (Python `cryptography`).\n")
    f.write("# Format: `name = hex`; see themis-handshake/tests/kat.rs and PROTOCOL.md §2.10, §3.\n")
    f.write("# inputs\n")
    for k, v in [("seed_a", seed_a), ("seed_b", seed_b), ("network", net), ("eph_a", eph_a),
                 ("nonce_a", nonce_a), ("eph_b", eph_b), ("admission_seed", seed_ak),
                 ("not_after_a", struct.pack(">Q", not_after_a)),
                 ("not_after_b", struct.pack(">Q", not_after_b)), ("now_ms", struct.pack(">Q", now_ms))]:
        f.write(f"{k} = {v.hex()}\n")
    f.write("# outputs\n")
    for k, v in [("msg1", msg1), ("msg2", msg2), ("msg3", msg3), ("session_id", sid),
                 ("transcript_hash", th), ("key_i2r", k_i2r), ("key_r2i", k_r2i),
                 ("cert_a", cert_a), ("cert_b", cert_b)]:
        f.write(f"{k} = {v.hex()}\n")

with open(os.path.join(here, "../../../themis-crypto/tests/vectors/admission.txt"), "w") as f:
    f.write("# Admission certificate and closed-network node id (PROTOCOL.md §2.10), computed by\n")
    f.write("# themis-handshake/tests/vectors/gen_closed.py outside the crate (Python `cryptography`\n")
    f.write("# Ed25519, `hashlib.blake2b(digest_size=32)`).\n")
    f.write("# node id = H(\"themis/v1/node-id\"; PK, net_id, AK)\n")
    f.write("# D = H(\"themis/v1/admission-cert\"; net_id, AK, subject, u64be not_after_ms)\n")
    f.write("# cert = AK (32) || subject (32) || u64be not_after_ms || Sign(admission key, D) (64)\n")
    f.write("\n[certificate on closed twiitr]\n")
    for k, v in [("admission-seed", seed_ak.hex()), ("admission-key", ak.hex()),
                 ("node-seed", seed_a.hex()), ("node-public-key", pk_a.hex()),
                 ("network-id", net.decode()), ("open-node-id", open_a_id.hex()),
                 ("closed-node-id", a_id.hex()), ("not-after-ms", str(not_after_a)),
                 ("digest", H(b"themis/v1/admission-cert", net, ak, a_id, struct.pack(">Q", not_after_a)).hex()),
                 ("cert", cert_a.hex())]:
        f.write(f"{k} = {v}\n")
