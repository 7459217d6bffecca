# Independent computation of the owned-name vectors (PROTOCOL.md §6.4 "Owned names"):
# Python hashlib.blake2b and cryptography's Ed25519, from the spec text alone.
import hashlib, base64, struct
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

def H(label, *parts):
    b = bytes([len(label)]) + label.encode()
    for p in parts:
        b += struct.pack(">I", len(p)) + p
    return hashlib.blake2b(b, digest_size=32).digest()

def key(seed):
    sk = Ed25519PrivateKey.from_private_bytes(seed)
    pk = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sk, pk

net = b"twiitr"
owner_sk, owner_pk = key(bytes([7]) * 32)
fp = H("themis/v1/owner-fingerprint", owner_pk)[:20]
fp_text = base64.b32encode(fp).decode().lower()
assert len(fp_text) == 32 and "=" not in fp_text
name = ("pay~" + fp_text).encode()
prov_sk, prov_pk = key(bytes([1]) * 32)
provider = H("themis/v1/node-id", prov_pk, net)
not_after = 1_900_000_000_000
dd = H("themis/v1/delegation", net, name, provider, struct.pack(">Q", not_after))
dsig = owner_sk.sign(dd)
deleg = owner_pk + struct.pack(">Q", not_after) + dsig
assert len(deleg) == 104

r = 0
oid = H("themis/v1/object-id", name, bytes([r]))
addr = bytes([10, 0, 0, 1]) + struct.pack(">H", 7000)
expires, seq = 1_800_000_000_000, 42
parts = [net, name, bytes([r]), oid, provider, prov_pk, addr, b"1.0", struct.pack(">H", 5), bytes([1]), b"blue",
         struct.pack(">Q", expires), struct.pack(">Q", seq), deleg]
D = H("themis/v1/provider-record", *parts)
rsig = prov_sk.sign(D)

def text(s):
    b = s.encode() if isinstance(s, str) else s
    assert len(b) < 256
    return (bytes([0x60 + len(b)]) if len(b) < 24 else bytes([0x78, len(b)])) + b
def bstr(b):
    if len(b) < 24: return bytes([0x40 + len(b)]) + b
    if len(b) < 256: return bytes([0x58, len(b)]) + b
    return bytes([0x59]) + struct.pack(">H", len(b)) + b
def uint(n):
    if n < 24: return bytes([n])
    if n < 256: return bytes([0x18, n])
    if n < 65536: return bytes([0x19]) + struct.pack(">H", n)
    if n < 2**32: return bytes([0x1a]) + struct.pack(">I", n)
    return bytes([0x1b]) + struct.pack(">Q", n)

rec = bytes([0xa0 + 12])
rec += text("name") + text(name) + text("r") + uint(r) + text("provider") + bstr(provider)
rec += text("pk") + bstr(prov_pk) + text("addr") + bstr(addr) + text("version") + text("1.0")
rec += text("weight") + uint(5) + text("tags") + bytes([0x81]) + text("blue")
rec += text("expires") + uint(expires) + text("seq") + uint(seq) + text("sig") + bstr(rsig)
rec += text("deleg") + bstr(deleg)
store = bytes([0xa1]) + text("store") + bytes([0xa1]) + text("record") + rec

print("owner_public_key =", owner_pk.hex())
print("owner_fingerprint =", fp.hex())
print("owned_name =", name.decode())
print("provider =", provider.hex())
print("delegation_digest =", dd.hex())
print("delegation_signature =", dsig.hex())
print("delegation =", deleg.hex())
print("object_id_owned_0 =", oid.hex())
print("record_digest =", D.hex())
print("record_signature =", rsig.hex())
print("store_request =", store.hex())
