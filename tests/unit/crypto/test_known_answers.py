"""Known answers on the stored 512-bit modulus, each checked against an independent re-implementation.

The reference in this file follows the spec (crypto note section 1, the docstrings of
shared/crypto) with hashlib and Python's built-in pow() only; it shares no code with
fedcast.shared.crypto. Pinned constants were computed once from it and the code, which agreed.
"""

from __future__ import annotations

import hashlib

import pytest
from gmpy2 import mpz

import fedcast.shared.crypto.proofs as proofs
from fedcast.shared.crypto.elgamal import (
    Aggregation,
    AttemptContext,
    ClientTables,
    Decryptor,
    ElGamalClient,
    OnlineSet,
)
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.keys import AggregatorSecretKey, ClientKeyPair

FED = "plant-7"
VERIFY_KEY = b"\x07" * 32

# -- the reference -----------------------------------------------------------------------------------


def frame(*parts: bytes) -> bytes:
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def fdh(n: int, label: bytes, *parts: bytes) -> int:
    """SHA-256 in counter mode over frame(label, N, parts), |N| + 128 bits, mod N, squared."""
    width = n.bit_length() + 128
    blocks = -(-width // 256)
    prefix = frame(label, n.to_bytes((n.bit_length() + 7) // 8, "big"), *parts)
    stream = b"".join(hashlib.sha256(prefix + i.to_bytes(4, "big")).digest() for i in range(blocks))
    x = int.from_bytes(stream, "big") >> (blocks * 256 - width)
    return pow(x % n, 2, n)


def generators(n: int, count: int) -> tuple[int, list[int]]:
    g = fdh(n, b"fedcast/v2/g")
    return g, [fdh(n, b"fedcast/v2/h", FED.encode(), j.to_bytes(4, "big")) for j in range(1, count + 1)]


def fixed(label: str, bits: int) -> int:
    """A fixed 'random' value of exactly ``bits`` bits (top bit set)."""
    stream = b"".join(hashlib.sha256(f"{label}/{i}".encode()).digest() for i in range(-(-bits // 256)))
    return (int.from_bytes(stream, "big") >> (len(stream) * 8 - bits)) | (1 << (bits - 1))


class Reference:
    """One round of the v2 scheme and its proofs, written out with pow()."""

    def __init__(self, n: int) -> None:
        self.n, self.n2, self.width = n, n * n, (n.bit_length() + 7) // 8
        self.g, self.h = generators(n, 2)
        self.g2 = self.g * self.g % n

    def lift(self, x: int) -> int:
        return pow(x, self.n, self.n2)

    def hash(self, tag: bytes, elements: list[int], context: bytes) -> int:
        """The Fiat-Shamir challenge: the first 16 bytes of the SHA-256 digest, big-endian (128 bits)."""
        encoded = [e.to_bytes(self.width, "big") for e in (self.n, *elements)]
        return int.from_bytes(hashlib.sha256(frame(tag, *encoded, context)).digest()[:16], "big")

    def prove_dlog(self, w: int, x: int, k: int, context: bytes) -> tuple[int, int]:
        t = pow(self.g2, k, self.n)
        return t, k + self.hash(b"fedcast/v2/proof/dlog", [x, t], context) * w

    def prove_equality(
        self, w: int, x: int, base: int, y: int, k: int, context: bytes
    ) -> tuple[int, int, int]:
        t1, t2 = pow(self.g2, k, self.n), pow(base, k, self.n)
        return t1, t2, k + self.hash(b"fedcast/v2/proof/dleq", [x, base, y, t1, t2], context) * w

    def encrypt(
        self, m: list[int], beta: int, pk_s: int, s: int, r1: int, r2: int
    ) -> tuple[int, list[int], int, int]:
        n, n2 = self.n, self.n2
        key = (1 + s * n) * pow(self.lift(beta * beta % n), r1, n2) % n2
        body = [(1 + mj * n) * pow(self.lift(hj), s, n2) % n2 for mj, hj in zip(m, self.h, strict=True)]
        return key, body, pow(self.g, r2, n), pow(self.g, r1, n) * pow(pk_s, r2, n) % n

    def decrypt(self, alpha: int, k: int, e: list[int], d: int, t: int) -> tuple[int, list[int]]:
        n, n2 = self.n, self.n2
        x = d * pow(t, -1, n) % n
        y = k * pow(self.lift(x * x % n), -alpha, n2) % n2
        assert y % n == 1
        s_sum = (y - 1) // n
        sums = []
        for ej, hj in zip(e, self.h, strict=True):
            v = ej * pow(self.lift(hj), -s_sum, n2) % n2
            assert v % n == 1
            sums.append((v - 1) // n)
        return s_sum, sums


# -- pinned values -----------------------------------------------------------------------------------

G_HEX = (
    "474188e840413e1ef635c9879c69175ac50301da76e6063600d54188d5d4029e"
    "21c587518090c08c077a7fb1667dea4620afb0034b8b205bc7b8f8fce55c590b"
)
H_HEX = (
    "b9b3e19b511ae93dd5a7504fead1ce050383abccd8bef12c94b749b4617c1c59"
    "b5f71e97b397a1a1cf8d85157a3c6dba61e97e5abb42716d6aa605f219af665",
    "6c4a80408cb994c0af75a46a6208e9aae84bc01aa54bfccf8d1e5e295a11fcfd"
    "8b92df446477b7fcefa03920a4343981aea9e6f50037e3d5a8beb7c8c1602fbc",
    "e80696bafe9717f8910d42a33643c47c8ed6995ed6f066517c406de27525d733"
    "26f7d2e0d1bbe596a7e86b61e0c9ea3667223417b899faa735c99da43e9e3d71",
)
ROUND_SHA256 = "c7410bc8a80bba732b4f35809650a3f846d70c5007e472506f613a8d3b38311d"


def test_generators_known_answer(small_group: GroupParams) -> None:
    n = int(small_group.n)
    g, hs = generators(n, 3)
    assert g == int(G_HEX, 16) == small_group.g
    assert hs == [int(h, 16) for h in H_HEX] == list(small_group.segment_bases(FED, 3))


# -- one full round with fixed randomness -----------------------------------------------------------

MEMBERS = ("a", "b", "c")
PLAINTEXTS = {"a": [1, 2**500], "b": [10, 2**499], "c": [100, 3]}
ALPHA, DELTA = fixed("alpha", 256), fixed("delta", 256)
SECRET_KEYS = {m: fixed(f"sk/{m}", 256) for m in MEMBERS}
RANDOMNESS = {m: tuple(fixed(f"{name}/{m}", 256) for name in ("s", "r1", "r2")) for m in MEMBERS}
# Nonces in the order the code draws them: beta and delivery proofs, three A proofs, three responses.
# 512 bits = a 256-bit secret + a 128-bit challenge + 128 bits of statistical hiding.
NONCES = [fixed(f"nonce/{i}", 512) for i in range(8)]


def test_proof_widths_known_answer() -> None:
    """128-bit challenges, 512-bit nonces, responses below 2^513 (65 bytes on the wire)."""
    assert (proofs.CHALLENGE_BITS, proofs.STATISTICAL_BITS) == (128, 128)
    assert (proofs.NONCE_BITS, proofs.RESPONSE_BITS) == (512, 513)
    assert (proofs.RESPONSE_BITS + 7) // 8 == 65


def test_full_round_known_answer(small_group: GroupParams, monkeypatch: pytest.MonkeyPatch) -> None:
    exponents = iter([x for m in MEMBERS for x in RANDOMNESS[m]])
    nonces = iter(NONCES)
    monkeypatch.setattr(GroupParams, "random_exponent", lambda self, bits=256: mpz(next(exponents)))
    monkeypatch.setattr(proofs, "_nonce", lambda: mpz(next(nonces)))
    ref = Reference(int(small_group.n))
    n = ref.n
    record: list[int] = []

    # The aggregator's key and its proofs.
    secret = AggregatorSecretKey.from_secrets(small_group, ALPHA, DELTA)
    public = secret.public(federation=FED, verify_key=VERIFY_KEY)
    key_context = frame(b"fedcast/v2/aggregator-key", FED.encode(), VERIFY_KEY)
    beta = pow(ref.g, ALPHA, n)
    assert public.beta == beta and public.delivery == pow(ref.g, DELTA, n)
    assert (public.beta_proof.commitment, public.beta_proof.response) == ref.prove_dlog(
        ALPHA, beta, NONCES[0], frame(b"beta", key_context)
    )
    assert (public.delivery_proof.commitment, public.delivery_proof.response) == ref.prove_dlog(
        DELTA, public.delivery, NONCES[1], frame(b"delivery", key_context)
    )

    # Uploads.
    keypairs = {m: ClientKeyPair.from_secret(small_group, SECRET_KEYS[m]) for m in MEMBERS}
    online = OnlineSet.from_registry(small_group, {m: kp.public for m, kp in keypairs.items()})
    pk_s = 1
    for m in MEMBERS:
        pk_s = pk_s * pow(pow(ref.g, SECRET_KEYS[m], n), 2, n) % n
    assert online.aggregate_key == pk_s
    context = AttemptContext(FED, hashlib.sha256(b"kat model").digest(), 7, 2, MEMBERS)
    digest = hashlib.sha256(
        frame(
            b"fedcast/v2/attempt",
            FED.encode(),
            context.model_digest,
            (7).to_bytes(8, "big"),
            (2).to_bytes(8, "big"),
            *(m.encode() for m in MEMBERS),
        )
    ).digest()
    tables = ClientTables(public, federation=FED, n_segments=2)
    clients = {m: ElGamalClient(kp, public, tables) for m, kp in keypairs.items()}
    aggregation = Aggregation(online, context, 2)
    attempts = {}
    k, e, d, t_product = 1, [1, 1], 1, 1
    for i, m in enumerate(MEMBERS):
        ct, attempts[m] = clients[m].encrypt(
            PLAINTEXTS[m], online, context, client_id=m, claimed_aggregate_key=pk_s, min_online=3
        )
        key, body, a, b = ref.encrypt(PLAINTEXTS[m], beta, pk_s, *RANDOMNESS[m])
        assert (ct.key_segment, list(ct.segments), ct.first, ct.second) == (key, body, a, b)
        t, z = ref.prove_dlog(RANDOMNESS[m][2], a, NONCES[2 + i], frame(b"first", digest, m.encode()))
        assert (ct.proof.commitment, ct.proof.response) == (t, z)
        record += [key, *body, a, b, t, z]
        k, e, d = k * key % ref.n2, [x * y % ref.n2 for x, y in zip(e, body, strict=True)], d * b % n
        aggregation.add_upload(m, ct)

    # Challenge, responses, decryption.
    challenge, firsts = aggregation.challenge()
    r = 1
    for m in MEMBERS:
        r = r * firsts[m].value % n
    assert challenge == r
    for i, m in enumerate(MEMBERS):
        share, proof = clients[m].respond(attempts[m], challenge, firsts)
        expected_share = pow(r * r % n, SECRET_KEYS[m], n)
        expected_proof = ref.prove_equality(
            SECRET_KEYS[m],
            keypairs[m].public,
            r * r % n,
            expected_share,
            NONCES[5 + i],
            frame(b"response", digest, m.encode()),
        )
        assert (share, (proof.commitment_g, proof.commitment_h, proof.response)) == (
            expected_share,
            expected_proof,
        )
        record += [share, *expected_proof]
        t_product = t_product * share % n
        aggregation.add_response(m, share, proof)
    sums = aggregation.decrypt(Decryptor(secret, federation=FED, n_segments=2, max_members=3))
    s_sum, expected = ref.decrypt(ALPHA, k, e, d, t_product)
    assert s_sum == sum(RANDOMNESS[m][0] for m in MEMBERS)
    assert sums == expected == [111, 2**500 + 2**499 + 3]

    pinned = hashlib.sha256("".join(format(v, "x") for v in record).encode()).hexdigest()
    assert pinned == ROUND_SHA256
