#!/usr/bin/env python3
"""An independent reference reader of the hashgate filter format v1 and v2 (docs/FORMAT.md).

Written from the spec, sharing no code with the Rust implementation, so that the
known-answer tests check the spec and not one implementation against itself.

    filter_ref.py probe SALT_HEX ALGORITHM DIGEST_HEX BITS K
    filter_ref.py check SNAPSHOT_FILE ALGORITHM DIGEST_HEX     (exit 0 hit, 1 clean)
    filter_ref.py home SALT_HEX PDQ_HEX SLOTS     (the home slot of a PDQ hash)
    filter_ref.py pdq SNAPSHOT_FILE PDQ_HEX       (prints "hit LABEL DISTANCE" per match;
                                                   exit 0 hit, 1 none, 3 layout not the spec's)
"""
import hashlib
import struct
import sys

MASK = (1 << 64) - 1
CODES = {"md5": 1, "sha1": 2, "sha256": 3}
PDQ = 4


def rotl(x, b):
    return ((x << b) | (x >> (64 - b))) & MASK


def sipround(v):
    v0, v1, v2, v3 = v
    v0 = (v0 + v1) & MASK; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32)
    v2 = (v2 + v3) & MASK; v3 = rotl(v3, 16); v3 ^= v2
    v0 = (v0 + v3) & MASK; v3 = rotl(v3, 21); v3 ^= v0
    v2 = (v2 + v1) & MASK; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32)
    return [v0, v1, v2, v3]


def siphash13_128(key, msg):
    """SipHash-1-3 with 128-bit output; returns the 16 output bytes."""
    k0, k1 = struct.unpack("<QQ", key)
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D,
         k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]
    v[1] ^= 0xEE
    tail = len(msg) % 8
    for i in range(0, len(msg) - tail, 8):
        m = struct.unpack("<Q", msg[i:i + 8])[0]
        v[3] ^= m
        v = sipround(v)
        v[0] ^= m
    b = (len(msg) & 0xFF) << 56
    for i, byte in enumerate(msg[len(msg) - tail:]):
        b |= byte << (8 * i)
    v[3] ^= b
    v = sipround(v)
    v[0] ^= b
    v[2] ^= 0xEE
    for _ in range(3):
        v = sipround(v)
    h1 = v[0] ^ v[1] ^ v[2] ^ v[3]
    v[1] ^= 0xDD
    for _ in range(3):
        v = sipround(v)
    h2 = v[0] ^ v[1] ^ v[2] ^ v[3]
    return struct.pack("<QQ", h1, h2)


def probe(salt, code, digest):
    h1, h2 = struct.unpack("<QQ", siphash13_128(salt, bytes([code]) + digest))
    h3, _ = struct.unpack("<QQ", siphash13_128(salt, bytes([code | 0x80]) + digest))
    return h1, h2, h3


def indices(h1, h2, h3, k, bits):
    return [((((h1 + i * h2 + i * i * h3) & MASK) * bits) >> 64) for i in range(k)]


def parse(body):
    if body[:8] != b"HASHGATE":
        raise ValueError("bad magic")
    version, count, flags = struct.unpack_from("<HHI", body, 8)
    if version not in (1, 2) or flags != 0 or not 1 <= count <= 64:
        raise ValueError("bad version, flags or section count")
    k = struct.unpack_from("<I", body, 112)[0]
    salt = body[120:136]
    payload_len = struct.unpack_from("<Q", body, 136)[0]
    payload_sha = body[144:176]
    start = 176 + 48 * count
    if len(body) != start + payload_len:
        raise ValueError("length disagrees with payload_len")
    if hashlib.sha256(body[start:]).digest() != payload_sha:
        raise ValueError("payload digest mismatch")
    sections, pdq, offset = [], [], start
    for i in range(count):
        rec = body[176 + 48 * i:176 + 48 * (i + 1)]
        code, label_len = rec[0], rec[1]
        entries, bits = struct.unpack_from("<QQ", rec, 8)
        label = rec[24:24 + label_len].decode()
        nbytes = (bits + 7) // 8
        if code == PDQ and version == 2:
            threshold = rec[2]
            if bits % 256 or threshold > 63 or any(rec[3:8]):
                raise ValueError("bad PDQ section record")
            data = body[offset:offset + nbytes]
            slots = [data[j:j + 32] for j in range(0, nbytes, 32)]
            listed = [h for h in slots if any(h)]
            if len(listed) != entries or len(set(listed)) != len(listed):
                raise ValueError("PDQ entries disagree with the slots")
            pdq.append((label, threshold, slots))
        else:
            if pdq or any(rec[2:8]):
                raise ValueError("digest section after a PDQ section, or reserved bytes set")
            sections.append((code, label, bits, body[offset:offset + nbytes]))
        offset += nbytes
    if (version == 2) != bool(pdq):
        raise ValueError("version 2 if and only if there are PDQ sections")
    return k, salt, sections, pdq


def pdq_home(salt, h, count):
    lo = struct.unpack("<Q", siphash13_128(salt, bytes([PDQ]) + h)[:8])[0]
    return (lo * count) >> 64


def pdq_layout(salt, hashes, count):
    """The slots the spec's writer gives `hashes` (distinct): by (home, bytes), each at
    the first free slot from its home, the runs past the end wrapping to the start."""
    slots, overflow, nxt = [bytes(32)] * count, [], 0
    for hm, h in sorted((pdq_home(salt, h, count), h) for h in hashes):
        at = max(hm, nxt)
        if at >= count:
            overflow.append(h)
            continue
        slots[at], nxt = h, at + 1
    free = [i for i in range(count) if not any(slots[i])]
    for h, at in zip(overflow, free):
        slots[at] = h
    return slots


def read_body(path):
    """A snapshot file's body: the file without its signature trailer, if it has one."""
    data = open(path, "rb").read()
    return data[:-80] if data[-80:-72] == b"HGSIGv1\n" else data


def main(argv):
    if argv[1] == "probe":
        salt, alg, digest = bytes.fromhex(argv[2]), argv[3], bytes.fromhex(argv[4])
        h1, h2, h3 = probe(salt, CODES[alg], digest)
        print(f"{h1:016x} {h2:016x} {h3:016x}", *indices(h1, h2, h3, int(argv[6]), int(argv[5])))
        return 0
    if argv[1] == "check":
        k, salt, sections, _ = parse(read_body(argv[2]))
        code, digest = CODES[argv[3]], bytes.fromhex(argv[4])
        h1, h2, h3 = probe(salt, code, digest)
        hit = False
        for s_code, label, bits, bitmap in sections:
            if s_code == code and all(bitmap[i // 8] & (1 << (i % 8)) for i in indices(h1, h2, h3, k, bits)):
                print(f"hit {label or '-'}")
                hit = True
        return 0 if hit else 1
    if argv[1] == "home":
        print(pdq_home(bytes.fromhex(argv[2]), bytes.fromhex(argv[3]), int(argv[4])))
        return 0
    if argv[1] == "pdq":
        _, salt, _, pdq = parse(read_body(argv[2]))
        query = int(argv[3], 16)
        hit = False
        for label, threshold, slots in pdq:
            if pdq_layout(salt, [h for h in slots if any(h)], len(slots)) != slots:
                print(f"layout of {label or '-'} is not the spec's")
                return 3
            for h in slots:
                d = bin(int.from_bytes(h, "big") ^ query).count("1")
                if any(h) and d <= threshold:
                    print(f"hit {label or '-'} {d}")
                    hit = True
        return 0 if hit else 1
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
