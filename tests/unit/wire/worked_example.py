"""The worked example of docs/PROTOCOL.md section 9, computed from the specification.

Everything the protocol draws at random (secret exponents, proof nonces, the AES-GCM
nonce) is fixed here, so the bytes are a known answer. The values are computed the way
docs/PROTOCOL.md describes them (frame, FDH, proof hashes, contexts, encryption
equations, packing, HKDF), independently of the reference code where the reference
code would draw randomness; test_protocol_doc.py then checks them against the reference
code (its verifiers, its decryption, its encoder) and against the document.

``python -m tests.unit.wire.worked_example`` prints every value; ``python -m
tests.unit.wire.worked_example docs/PROTOCOL.md`` recomputes the document's ``kat`` and
``dump`` blocks in place (after a deliberate change of the protocol).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import struct
import sys
from dataclasses import dataclass

import msgpack
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.proofs import DlogProof, EqualityProof
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.wire import serde
from fedcast.shared.wire.messages import EnrollRequest, Header, MessageType, Ready, Response, Upload
from tests.conftest import stored_modulus

FEDERATION = "plant-7"
ROUND, ATTEMPT = 3, 0
MEMBERS = ("client-0001", "client-0002", "client-0003")
#: RFC 8032 section 7.1 TEST 1 (client-0001) and TEST 2 (the aggregator).
CLIENT_KEY = SigningKeyPair.from_private_bytes(
    bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
)
AGGREGATOR_KEY = SigningKeyPair.from_private_bytes(
    bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
)
TOKEN = "enroll-token-0001"
#: The global model (4 float64) and the members' upload vectors (n = 4), exactly representable
#: with f = 16 so that stochastic rounding has nothing to round.
MODEL = (0.25, -0.5, 1.0, 2.0)
VECTORS = {
    "client-0001": (0.5, -1.25, 3.0, 0.0),
    "client-0002": (-4.0, 0.75, 1.5, -0.125),
    "client-0003": (1.0, 1.0, -2.5, 4.0),
}
FRAC_BITS, CLIP, MAX_CLIENTS = 16, 4.0, 1000
#: Proof widths as docs/PROTOCOL.md states them (deliberately not imported from fedcast.shared.crypto.proofs):
#: c = the first 16 bytes of a SHA-256 output (128 bits), nonces k of 256 + 128 + 128 = 512 bits,
#: responses z < 2^513 in 65-byte bins.
CHALLENGE_BYTES, NONCE_BITS, RESPONSE_BYTES = 16, 512, 65


def group() -> GroupParams:
    """The stored 512-bit test modulus (INSECURE: its factors are reproducible)."""
    return GroupParams.from_modulus(stored_modulus(512), allow_insecure=True)


# -- the primitives, as docs/PROTOCOL.md section 7 states them ------------------------------------


def frame(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def fdh(n: int, label: bytes, *parts: bytes) -> tuple[int, int]:
    """(x, x^2 mod N): the hash before and after squaring."""
    width = n.bit_length() + 128
    blocks = -(-width // 256)
    prefix = frame(label, n.to_bytes((n.bit_length() + 7) // 8, "big"), *parts)
    stream = b"".join(hashlib.sha256(prefix + struct.pack(">I", i)).digest() for i in range(blocks))
    x = (int.from_bytes(stream, "big") >> (blocks * 256 - width)) % n
    return x, x * x % n


def fixed(label: str, bits: int) -> int:
    """An arbitrary fixed value of ``bits`` bits for the example (real ones come from a CSPRNG)."""
    blocks = -(-bits // 256)
    stream = b"".join(
        hashlib.sha256(f"fedcast example {label}".encode() + struct.pack(">I", i)).digest()
        for i in range(blocks)
    )
    return int.from_bytes(stream, "big") >> (blocks * 256 - bits) | 1


@dataclass(frozen=True)
class Example:
    values: dict[str, bytes]
    # what the reference code needs to re-check the example (ints)
    n: int
    ints: dict[str, int]
    proofs: dict[str, DlogProof | EqualityProof]


def compute() -> Example:
    grp = group()
    n = int(grp.n)
    n2 = n * n
    e = (n.bit_length() + 7) // 8
    c_width = (n2.bit_length() + 7) // 8
    v: dict[str, bytes] = {}
    ints: dict[str, int] = {}
    proofs: dict[str, DlogProof | EqualityProof] = {}

    def el(x: int) -> bytes:
        return x.to_bytes(e, "big")

    def put(name: str, value: int, width: int) -> None:
        ints[name] = value
        v[name] = value.to_bytes(width, "big")

    def challenge(tag: bytes, elements: list[int], context: bytes) -> int:
        digest = hashlib.sha256(frame(tag, el(n), *map(el, elements), context)).digest()
        return int.from_bytes(digest[:CHALLENGE_BYTES], "big")

    def lift(x: int) -> int:
        return pow(x, n, n2)

    # 9.1 the group
    put("N", n, e)
    g_x, g = fdh(n, b"fedcast/v2/g")
    put("g_x", g_x, e)
    put("g", g, e)
    g2 = g * g % n
    for j in (1, 2):
        put(f"h_{j}", fdh(n, b"fedcast/v2/h", FEDERATION.encode(), struct.pack(">I", j))[1], e)

    # 9.2 READY
    ready = serde.encode(
        Header(MessageType.READY, FEDERATION, ROUND, ATTEMPT, "client-0001"), Ready(), CLIENT_KEY, None
    )
    v["ready"] = ready
    v["ready_signing_bytes"] = b"fedcast/v2/msg\x00" + b"\x97" + ready[1:-66]

    # 9.3 ENROLL of client-0001 (its Ed25519 key is RFC 8032 TEST 1)
    sk = {m: fixed(f"sk {m}", 256) for m in MEMBERS}
    pk = {m: pow(g, sk[m], n) for m in MEMBERS}
    put("sk_1", sk["client-0001"], 32)
    put("pk_1", pk["client-0001"], e)
    context = frame(b"fedcast/v2/enrollment", FEDERATION.encode(), b"client-0001", CLIENT_KEY.verify_key)
    v["enroll_context"] = context
    k = fixed("enroll nonce", NONCE_BITS)
    put("enroll_k", k, NONCE_BITS // 8)
    t = pow(g2, k, n)
    c = challenge(b"fedcast/v2/proof/dlog", [pk["client-0001"], t], context)
    z = k + c * sk["client-0001"]
    put("enroll_t", t, e)
    put("enroll_c", c, CHALLENGE_BYTES)
    put("enroll_z", z, RESPONSE_BYTES)
    proofs["enroll"] = DlogProof(t, z)
    enroll = EnrollRequest(TOKEN, pk["client-0001"], CLIENT_KEY.verify_key, DlogProof(t, z))
    ctx = serde.WireContext(e, c_width)
    v["enroll"] = serde.encode(
        Header(MessageType.ENROLL, FEDERATION, 0, 0, "client-0001"), enroll, CLIENT_KEY, ctx
    )

    # 9.4 the aggregator's keys (its Ed25519 key is RFC 8032 TEST 2)
    alpha, delta = fixed("alpha", 256), fixed("delta", 256)
    put("alpha", alpha, 32)
    put("delta", delta, 32)
    beta, dkey = pow(g, alpha, n), pow(g, delta, n)
    put("beta", beta, e)
    put("D", dkey, e)
    key_context = frame(b"fedcast/v2/aggregator-key", FEDERATION.encode(), AGGREGATOR_KEY.verify_key)
    v["beta_context"] = frame(b"beta", key_context)
    k = fixed("beta nonce", NONCE_BITS)
    t = pow(g2, k, n)
    z = k + challenge(b"fedcast/v2/proof/dlog", [beta, t], v["beta_context"]) * alpha
    put("beta_k", k, NONCE_BITS // 8)
    put("beta_t", t, e)
    put("beta_z", z, RESPONSE_BYTES)
    proofs["beta"] = DlogProof(t, z)
    k = fixed("delivery nonce", NONCE_BITS)
    t = pow(g2, k, n)
    z = k + challenge(b"fedcast/v2/proof/dlog", [dkey, t], frame(b"delivery", key_context)) * delta
    proofs["delivery"] = DlogProof(t, z)  # not in the document: the same with the label "delivery"

    # 9.5 model delivery to client-0001 in round 3
    model_bytes = b"".join(struct.pack("<d", x) for x in MODEL)
    v["model_bytes"] = model_bytes
    digest = hashlib.sha256(model_bytes).digest()
    v["model_digest"] = digest
    dh = pow(pk["client-0001"] ** 2 % n, delta, n)
    assert dh == pow(dkey * dkey % n, sk["client-0001"], n)
    put("dh_1", dh, e)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"fedcast/v2/model-delivery").derive(
        el(dh)
    )
    v["delivery_key_1"] = key
    ad = frame(b"fedcast/v2/model-delivery-ad", FEDERATION.encode(), str(ROUND).encode(), b"client-0001")
    v["delivery_ad_1"] = ad
    nonce = fixed("gcm nonce", 96).to_bytes(12, "big")
    v["delivery_nonce_1"] = nonce
    v["sealed_model_1"] = nonce + AESGCM(key).encrypt(nonce, model_bytes, ad)

    # 9.6 the attempt: S = MEMBERS, each uploads one segment
    pkbar = 1
    for m in MEMBERS:
        pkbar = pkbar * pk[m] * pk[m] % n
    put("aggregate_key", pkbar, e)
    parts = [
        b"fedcast/v2/attempt",
        FEDERATION.encode(),
        digest,
        struct.pack(">Q", ROUND),
        struct.pack(">Q", ATTEMPT),
    ]
    attempt_digest = hashlib.sha256(frame(*parts, *(m.encode() for m in MEMBERS))).digest()
    v["attempt_digest"] = attempt_digest
    v["first_context_1"] = frame(b"first", attempt_digest, b"client-0001")
    offset = math.ceil(CLIP * 2**FRAC_BITS)  # Q
    slot_bits = (MAX_CLIENTS * 2 * offset).bit_length()
    assert (slot_bits, (n.bit_length() - 1) // slot_bits) == (29, 17)
    big_b = lift(beta * beta % n)
    h1 = ints["h_1"]
    big_h1 = lift(h1)
    firsts: dict[str, int] = {}
    key_product, data_product, d_product = 1, 1, 1
    for i, m in enumerate(MEMBERS, start=1):
        encoded = [int(x * 2**FRAC_BITS) + offset for x in VECTORS[m]]  # exact: no rounding happens
        segment = sum(
            value << (slot_bits * slot) for slot, value in enumerate(encoded)
        )  # 13 padding slots: 0
        s, r1, r2 = fixed(f"s {m}", 256), fixed(f"r1 {m}", 256), fixed(f"r2 {m}", 256)
        key_segment = (1 + s * n) * pow(big_b, r1, n2) % n2
        data_segment = (1 + segment * n) * pow(big_h1, s, n2) % n2
        first = pow(g, r2, n)
        second = pow(g, r1, n) * pow(pkbar, r2, n) % n
        k = fixed(f"first nonce {m}", NONCE_BITS)
        t = pow(g2, k, n)
        context = frame(b"first", attempt_digest, m.encode())
        z = k + challenge(b"fedcast/v2/proof/dlog", [first, t], context) * r2
        proofs[f"first_{i}"] = DlogProof(t, z)
        ints[f"sk_{i}"], ints[f"s_{i}"], ints[f"r1_{i}"], ints[f"r2_{i}"] = sk[m], s, r1, r2
        ints[f"K_{i}"], ints[f"E_{i}1"], ints[f"A_{i}"], ints[f"B_{i}"] = (
            key_segment,
            data_segment,
            first,
            second,
        )
        firsts[m] = first
        key_product = key_product * key_segment % n2
        data_product = data_product * data_segment % n2
        d_product = d_product * second % n
        if i == 1:
            put("m_1", segment, e)
            for name in ("s_1", "r1_1", "r2_1"):
                put(name, ints[name], 32)
            put("K_1", key_segment, c_width)
            put("E_11", data_segment, c_width)
            put("A_1", first, e)
            put("B_1", second, e)
            put("first_k_1", k, NONCE_BITS // 8)
            put("first_t_1", t, e)
            put("first_z_1", z, RESPONSE_BYTES)
            # section 4: A_1, its proof and the attempt digest, signed for this round and attempt
            v["first_signing_bytes_1"] = b"fedcast/v2/first\x00" + msgpack.packb(
                [
                    FEDERATION,
                    ROUND,
                    ATTEMPT,
                    m,
                    el(first),
                    [el(t), z.to_bytes(RESPONSE_BYTES, "big")],
                    attempt_digest,
                ],
                use_bin_type=True,
            )
            signature = CLIENT_KEY.sign(v["first_signing_bytes_1"])
            # context_digest: the attempt the proof was made for, the one the signature names
            upload = Upload(
                key_segment, (data_segment,), first, second, DlogProof(t, z), signature, attempt_digest
            )
            header = Header(MessageType.UPLOAD, FEDERATION, ROUND, ATTEMPT, m)
            v["upload_1"] = serde.encode(header, upload, CLIENT_KEY, ctx)
    for i in (2, 3):
        put(f"A_{i}", ints[f"A_{i}"], e)

    # 9.7 the challenge and client-0001's response
    r = firsts["client-0001"] * firsts["client-0002"] * firsts["client-0003"] % n
    put("R", r, e)
    # section 5.3: what client-0001 binds the attempt to when it is first shown these first components
    binding = hashlib.sha256(b"fedcast/v2/firsts-binding")
    for m in sorted(MEMBERS):
        a_bytes = firsts[m].to_bytes(max(1, -(-firsts[m].bit_length() // 8)), "big")
        binding.update(struct.pack(">I", len(m.encode())) + m.encode())
        binding.update(struct.pack(">I", len(a_bytes)) + a_bytes)
    v["firsts_binding_1"] = binding.digest()
    v["challenge_digest"] = hashlib.sha256(frame(b"fedcast/v2/challenge", el(r))).digest()
    # client-0001's keyed sample of the proofs it checks (|S| = 3: k = 2, both others)
    secret_1 = ints["sk_1"].to_bytes(32, "big")
    sample_key = hashlib.sha256(frame(b"fedcast/v2/proof-sample-key", secret_1)).digest()
    v["sample_key_1"] = sample_key
    for i, m in enumerate(MEMBERS[1:], start=2):
        v[f"sample_rank_1_{i}"] = hmac.new(sample_key, attempt_digest + el(r) + m.encode(), "sha256").digest()
    r2_square = r * r % n
    shares: dict[str, int] = {}
    for i, m in enumerate(MEMBERS, start=1):
        share = pow(r2_square, sk[m], n)
        k = fixed(f"response nonce {m}", NONCE_BITS)
        t1, t2 = pow(g2, k, n), pow(r2_square, k, n)
        context = frame(b"response", attempt_digest, m.encode())
        c = challenge(b"fedcast/v2/proof/dleq", [pk[m], r2_square, share, t1, t2], context)
        proofs[f"response_{i}"] = EqualityProof(t1, t2, k + c * sk[m])
        ints[f"T_{i}"] = share
        shares[m] = share
        if i == 1:
            put("T_1", share, e)
            v["response_context_1"] = context
            put("response_k_1", k, NONCE_BITS // 8)
            put("response_t1_1", t1, e)
            put("response_t2_1", t2, e)
            put("response_c_1", c, CHALLENGE_BYTES)
            put("response_z_1", k + c * sk[m], RESPONSE_BYTES)
            body = Response(share, EqualityProof(t1, t2, k + c * sk[m]), v["challenge_digest"])
            v["response_1"] = serde.encode(
                Header(MessageType.RESPONSE, FEDERATION, ROUND, ATTEMPT, m), body, CLIENT_KEY, ctx
            )

    # 9.8 the aggregator's decryption
    t_product = shares["client-0001"] * shares["client-0002"] * shares["client-0003"] % n
    put("K", key_product, c_width)
    put("E_1", data_product, c_width)
    put("d", d_product, e)
    put("T", t_product, e)
    x = d_product * pow(t_product, -1, n) % n
    xbar = x * x % n
    put("xbar", xbar, e)
    y = key_product * pow(lift(pow(xbar, alpha, n)), -1, n2) % n2
    assert y % n == 1
    s_sum = (y - 1) // n
    assert s_sum == sum(ints[f"s_{i}"] for i in (1, 2, 3)) < 3 << 256
    put("s_sum", s_sum, 33)
    w = data_product * pow(pow(big_h1, s_sum, n2), -1, n2) % n2
    assert w % n == 1
    put("M_1", (w - 1) // n, e)
    return Example(v, n, ints, proofs)


def render(example: Example, names: list[str] | None = None) -> str:
    """The ``name = hex`` lines of a ``kat`` block of the document (64 hex digits a line)."""
    lines = []
    for name in names if names is not None else list(example.values):
        text = example.values[name].hex()
        chunks = [text[i : i + 64] for i in range(0, len(text), 64)] or [""]
        pad = " " * (len(name) + 3)
        lines.append(f"{name} = {chunks[0]}")
        lines.extend(pad + chunk for chunk in chunks[1:])
    return "\n".join(lines)


#: How the annotated dumps of section 9 label each field: (path into the message, label).
DUMP_LABELS: dict[str, list[tuple[tuple[int, ...], str]]] = {
    "ready": [((6,), "body: Ready has no fields, an empty array")],
    "enroll": [
        ((6,), "body: EnrollRequest, array of 4"),
        ((6, 0), "token"),
        ((6, 1), "elgamal_public = pk_1"),
        ((6, 2), "verify_key (RFC 8032 TEST 1)"),
        ((6, 3), "proof: DlogProof, array of 2"),
        ((6, 3, 0), "commitment t"),
        ((6, 3, 1), "response z"),
    ],
    "upload_1": [
        ((6,), "body: Upload, array of 7"),
        ((6, 0), "key_segment K_1"),
        ((6, 1), "segments: u = 1, E_11"),
        ((6, 2), "first A_1"),
        ((6, 3), "second B_1"),
        ((6, 4), "first_proof: DlogProof, array of 2"),
        ((6, 4, 0), "commitment t"),
        ((6, 4, 1), "response z"),
        ((6, 5), "first_signature"),
        ((6, 6), "context_digest = attempt_digest"),
    ],
    "response_1": [
        ((6,), "body: Response, array of 3"),
        ((6, 0), "share T_1"),
        ((6, 1), "proof: EqualityProof, array of 3"),
        ((6, 1, 0), "commitment_g t1"),
        ((6, 1, 1), "commitment_h t2"),
        ((6, 1, 2), "response z"),
        ((6, 2), "challenge_digest"),
    ],
}
_HEADER_LABELS = ["version", "", "", "round", "attempt", ""]


def dump(example: Example, name: str) -> str:
    """An annotated byte-by-byte dump of message ``name`` (a ``dump`` block of the document)."""
    labels = dict(DUMP_LABELS[name])
    rows: list[tuple[str, str]] = []

    def pack(value: object) -> bytes:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]

    def walk(value: object, path: tuple[int, ...], label: str) -> None:
        if isinstance(value, list):
            rows.append((pack([None] * len(value))[: 1 if len(value) < 16 else 3].hex(" "), label))
            for i, item in enumerate(value):
                walk(item, (*path, i), labels.get((*path, i), ""))
            return
        raw = pack(value)
        if isinstance(value, bytes) and len(value) > 8:
            rows.append((raw[: len(raw) - len(value)].hex(" "), f"bin of {len(value)} bytes: {label}"))
            text = value.hex()
            rows.extend(("   " + text[i : i + 64], "") for i in range(0, len(text), 64))
        else:
            shown = f'"{value}"' if isinstance(value, str) else str(value)
            rows.append((raw.hex(" "), f"{label} {shown}".strip()))

    message = msgpack.unpackb(example.values[name], raw=False)
    rows.append(("98", "array of 8"))
    for i, value in enumerate(message[:6]):
        walk(value, (i,), _HEADER_LABELS[i])
    walk(message[6], (6,), labels[(6,)])
    walk(message[7], (7,), "the signature")
    width = max(len(h) for h, c in rows if c) + 2
    return "\n".join(h.ljust(width) + c if c else h for h, c in rows)


_BLOCK = re.compile(r"^```(kat|dump)(?: (\S+))?\n(.*?)^```$", re.S | re.M)


def refresh(document: str, example: Example) -> str:
    """``document`` with every ``kat`` and ``dump`` block recomputed (the names stay as written)."""

    def block(match: re.Match[str]) -> str:
        kind, name, body = match.groups()
        if kind == "dump":
            return f"```dump {name}\n{dump(example, name)}\n```"
        names = [m.group(1) for m in re.finditer(r"^(\S+) = ", body, re.M)]
        return f"```kat\n{render(example, names)}\n```"

    return _BLOCK.sub(block, document)


if __name__ == "__main__":
    if len(sys.argv) == 2:  # rewrite a document's example blocks in place
        with open(sys.argv[1], encoding="utf-8") as source:
            text = refresh(source.read(), compute())
        with open(sys.argv[1], "w", encoding="utf-8") as target:
            target.write(text)
    else:
        print(render(compute()))
