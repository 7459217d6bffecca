#!/usr/bin/env python3
"""Computes the key succession vector of PROTOCOL.md §2.9 outside the crate (Python
`cryptography` Ed25519 and `hashlib.blake2b`); writes succession.txt beside this file."""
import hashlib
import os
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization


def H(label, *parts):
    data = bytes([len(label)]) + label
    for p in parts:
        data += struct.pack(">I", len(p)) + p
    return hashlib.blake2b(data, digest_size=32).digest()


def pk(seed):
    k = Ed25519PrivateKey.from_private_bytes(seed)
    return k, k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


old_seed = bytes(range(0, 32))
new_seed = bytes(range(32, 64))
net = "twiitr".encode()
issued = 1_800_000_000_000
grace_end = issued + 7 * 24 * 3600 * 1000
old_k, old_pk = pk(old_seed)
new_k, new_pk = pk(new_seed)
d = H(b"themis/v1/key-succession", net, old_pk, new_pk,
      struct.pack(">Q", issued), struct.pack(">Q", grace_end))
sig_old = old_k.sign(d)
sig_new = new_k.sign(d)
stmt = (bytes([1, len(net)]) + net + old_pk + new_pk + struct.pack(">QQ", issued, grace_end)
        + sig_old + sig_new)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "succession.txt")
with open(out, "w") as f:
    f.write("# Key succession statement (PROTOCOL.md §2.9), computed by gen_succession.py outside the\n")
    f.write("# crate (Python `cryptography` Ed25519, `hashlib.blake2b(digest_size=32)`).\n")
    f.write("# digest = H(\"themis/v1/key-succession\"; net_id, old_pk, new_pk, u64be issued, u64be grace_end)\n\n")
    f.write("[rotation on twiitr]\n")
    for k, v in [("old-seed", old_seed.hex()), ("new-seed", new_seed.hex()), ("old-public-key", old_pk.hex()),
                 ("new-public-key", new_pk.hex()), ("network-id", net.decode()), ("issued-ms", str(issued)),
                 ("grace-end-ms", str(grace_end)), ("old-node-id", H(b"themis/v1/node-id", old_pk, net).hex()),
                 ("new-node-id", H(b"themis/v1/node-id", new_pk, net).hex()), ("digest", d.hex()),
                 ("sig-old", sig_old.hex()), ("sig-new", sig_new.hex()), ("statement", stmt.hex())]:
        f.write(f"{k} = {v}\n")
print(len(stmt))
