#!/usr/bin/env python3
"""Writes the fuzz corpus seeds (fuzz/seeds/TARGET/*) from the checked-in known-answer vectors.

Run from anywhere: python3 fuzz/seed.py. The seeds are committed; rerun after a vector file
changes. Each seed is one input of its target, named after the vector it comes from.
"""
import pathlib
import re
import shutil
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "seeds"


def pairs(path):
    """`name = hex` lines of a vector file."""
    for line in (ROOT / path).read_text().splitlines():
        m = re.match(r"^(\w+) = ([0-9a-f]+)$", line.strip())
        if m:
            yield m.group(1), bytes.fromhex(m.group(2))


def write(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def main():
    if OUT.exists():
        shutil.rmtree(OUT)

    # Handshake: messages 1, 2, 3 of the three transcripts (one of a closed network).
    for f in ["twiitr", "unicode-network", "closed-twiitr"]:
        for name, b in pairs(f"themis-handshake/tests/vectors/{f}.txt"):
            if name.startswith("msg"):
                write("handshake", f"{f}-{name}", b)

    # Channel frames: every frame of the known-answer file (last field of a `vector =` line).
    frames = []
    for line in (ROOT / "themis-channel/tests/vectors/frames.txt").read_text().splitlines():
        if line.startswith("vector = "):
            f = line.split()
            frames.append(bytes.fromhex(f[-1]))
            write("channel_frame", f"{len(frames):02}-{f[2]}-{f[3]}-{f[4]}-{f[5]}", frames[-1])

    # Cookie replies and echoes (PROTOCOL.md §5.2, "Cookies"): the last two fields of each
    # `vector =` line of the cookie vectors ("-" where a vector has no echo).
    for i, line in enumerate(
        l for l in (ROOT / "themis-channel/tests/vectors/cookie.txt").read_text().splitlines()
        if l.startswith("vector = ")
    ):
        f = line.split()
        write("channel_frame", f"cookie-reply-{i + 1}", bytes.fromhex(f[-2]))
        if f[-1] != "-":
            write("channel_frame", f"cookie-echo-{i + 1}", bytes.fromhex(f[-1]))

    # TCP framing: limit byte (x16), read-size byte, then length-prefixed frames. The stream of
    # every known-answer frame, read 8 bytes at a time, plus a hello frame (PROTOCOL.md §5.1:
    # 01 30 | family 4 | 127.0.0.1 | port 7000) and a stream cut in the middle of a frame.
    stream = b"".join(struct.pack(">I", len(f)) + f for f in frames)
    write("tcp_framing", "all-frames", bytes([0xFF, 7]) + stream)
    write("tcp_framing", "cut-frame", bytes([0x10, 0]) + stream[: len(stream) // 2])
    hello = bytes.fromhex("0130047f0000011b58")
    write("tcp_framing", "hello", bytes([1, 3]) + struct.pack(">I", len(hello)) + hello)

    # DHT: the request and response vectors; an `owner` response carrying the store request's record
    # (the same record map under {"owner": {"records": [..]}}).
    record_prefix = bytes.fromhex("a16573746f7265a1667265636f7264")
    for name, b in pairs("themis-dht/tests/vectors/dht.txt"):
        if name.endswith(("_request", "_response")):
            write("dht_cbor", name, b)
        if name == "store_request" and b.startswith(record_prefix):
            record = b[len(record_prefix):]
            owner = bytes.fromhex("a1656f776e6572a1677265636f72647381") + record
            write("dht_cbor", "owner_response", owner)
    # Owned names: a store of a record carrying an owner's delegation.
    for name, b in pairs("themis-dht/tests/vectors/owned.txt"):
        if name == "store_request":
            write("dht_cbor", "owned_store_request", b)

    # Mesh: call requests (after the protocol id 02, which the endpoint strips), responses and
    # the node-info answer.
    for line in (ROOT / "themis-mesh/tests/vectors/service_call.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, *hexes = line.split()
            b = bytes.fromhex("".join(hexes))
            write("mesh_call", name, b[1:] if name.startswith("request") else b)
    for name, b in pairs("themis-mesh/tests/vectors/node_info.txt"):
        if name == "answer":
            write("mesh_call", "node_info_answer", b)


if __name__ == "__main__":
    main()
