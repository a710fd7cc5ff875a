"""Hypothesis strategies for protocol v2 bodies, and helpers to build hostile raw messages.

The wire checks widths and structure, never group membership or proofs, so the strategies
draw any integer of the right width: that is exactly the set the decoder must accept.
Widths come from the stored 512-bit test modulus (tests/conftest.py, ``small_group``):
64-byte elements, 128-byte ciphertexts; proof responses are 65 bytes in every group.
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import strategies as st

from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.proofs import RESPONSE_BITS, DlogProof, EqualityProof
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.wire.codec import ID_PATTERN, MAX_UINT, WireContext
from fedcast.shared.wire.messages import (
    Ack,
    AggregatorInfo,
    Announce,
    Body,
    Challenge,
    EnrollRequest,
    ErrorReply,
    FirstComponent,
    Header,
    KeysReply,
    KeysRequest,
    MemberEnvelope,
    MessageType,
    ParamsReply,
    ParamsRequest,
    Ready,
    RegisterAggregator,
    RegistryEntry,
    Response,
    RevokeRequest,
    RoundResult,
    RoundStatus,
    Upload,
)
from tests.conftest import stored_modulus

# RFC 8032 section 7.1, TEST 1: a fixed signing key, so signatures (and known answers) are stable.
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_VERIFY = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
TEST_KEY = SigningKeyPair.from_private_bytes(RFC8032_SECRET)
#: The order of the Ed25519 base point (RFC 8032 section 5.1).
ED25519_L = 2**252 + 27742317777372353535851937790883648493
#: The neutral element as an Ed25519 verify key (y = 1, x = 0): a key of small order.
IDENTITY_VERIFY_KEY = (1).to_bytes(32, "little")


def identity_key_forgery() -> bytes:
    """(R = [a]B, S = a mod L): under the neutral element as verify key, the cofactorless
    equation [S]B = R + [k]A holds for *every* message. OpenSSL accepts it; libsodium refuses
    small-order keys (shared/crypto/signing.py)."""
    import hashlib

    # [a]B for a known scalar a: the verify key of a seed is [clamp(SHA-512(seed)[:32])]B.
    seed = b"\x07" * 32
    digest = bytearray(hashlib.sha512(seed).digest()[:32])
    digest[0] &= 248
    digest[31] &= 127
    digest[31] |= 64
    a = int.from_bytes(digest, "little")
    return SigningKeyPair.from_private_bytes(seed).verify_key + (a % ED25519_L).to_bytes(32, "little")


#: The stored 512-bit modulus (the ``small_group`` fixture's): INSECURE, for widths only.
GROUP = GroupParams.from_modulus(stored_modulus(512), allow_insecure=True)
CTX = WireContext.from_group(GROUP)  # 64-byte elements, 128-byte ciphertexts
#: Every proof response travels as a bin of exactly this many bytes, whatever the group.
RESPONSE_BYTES = 65
assert (RESPONSE_BITS + 7) // 8 == RESPONSE_BYTES

ids = st.from_regex(ID_PATTERN, fullmatch=True)
tokens = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
texts = st.text(
    st.one_of(
        st.characters(blacklist_categories=("Cs", "Cc")),  # no surrogates, no control characters
        st.sampled_from("\t\n"),
    ),
    max_size=60,
)
uints = st.one_of(st.integers(0, 300), st.integers(0, MAX_UINT))
floats = st.floats(allow_nan=False, allow_infinity=False)
verify_keys = st.binary(min_size=32, max_size=32)
signatures = st.binary(min_size=64, max_size=64)
digests = st.binary(min_size=32, max_size=32)
#: Proof responses z: any integer in [0, 2^513), edges included.
responses = st.one_of(
    st.integers(0, 3),
    st.integers(0, 2**RESPONSE_BITS - 1),
    st.just(2**RESPONSE_BITS - 1),
    st.just(2 ** (RESPONSE_BITS - 1)),
)


def elements(width: int) -> st.SearchStrategy[int]:
    """Any integer of ``width`` bytes: the wire checks widths, not group membership."""
    return st.one_of(st.integers(0, 3), st.integers(0, 256**width - 1))


def ciphertexts(width: int) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, 3), st.integers(0, 256**width - 1), st.just(256**width - 1))


def dlog_proofs(width: int) -> st.SearchStrategy[DlogProof]:
    return st.builds(DlogProof, commitment=elements(width), response=responses)


def equality_proofs(width: int) -> st.SearchStrategy[EqualityProof]:
    return st.builds(
        EqualityProof, commitment_g=elements(width), commitment_h=elements(width), response=responses
    )


def aggregator_infos(width: int) -> st.SearchStrategy[AggregatorInfo]:
    return st.builds(
        AggregatorInfo,
        beta=elements(width),
        beta_proof=dlog_proofs(width),
        delivery=elements(width),
        delivery_proof=dlog_proofs(width),
        verify_key=verify_keys,
    )


def first_components(width: int, *, min_size: int) -> st.SearchStrategy[tuple[FirstComponent, ...]]:
    """Signed first components with distinct members (a Challenge's firsts, an envelope's evidence)."""
    return st.lists(
        st.builds(FirstComponent, ids, elements(width), dlog_proofs(width), signatures),
        min_size=min_size,
        max_size=5,
        unique_by=lambda f: f.member,
    ).map(tuple)


@st.composite
def params_replies(draw: st.DrawFn) -> ParamsReply:
    """PARAMS brings its own modulus; the aggregator's elements take that modulus's width."""
    n = draw(st.one_of(st.integers(3, 2**16), st.integers(3, 2**700), st.just(GROUP.n).map(int)))
    width = (n.bit_length() + 7) // 8
    return ParamsReply(
        modulus=n,
        frac_bits=draw(uints),
        clip=draw(floats),
        max_clients=draw(uints),
        min_online=draw(uints),
        aggregator=draw(st.none() | aggregator_infos(width)),
    )


def bodies(mtype: MessageType, ctx: WireContext) -> st.SearchStrategy[Any]:
    """A strategy for every valid body of message type ``mtype`` under ``ctx``."""
    width = ctx.element_bytes
    el = elements(width)
    ct = ciphertexts(ctx.ciphertext_bytes)
    member_lists = st.lists(ids, unique=True, max_size=6)
    return {
        MessageType.ENROLL: st.builds(
            EnrollRequest, token=tokens, elgamal_public=el, verify_key=verify_keys, proof=dlog_proofs(width)
        ),
        MessageType.GET_PARAMS: st.just(ParamsRequest()),
        MessageType.PARAMS: params_replies(),
        MessageType.GET_KEYS: st.builds(KeysRequest, client_ids=member_lists.map(tuple)),
        MessageType.KEYS: st.builds(
            KeysReply,
            entries=st.lists(
                st.builds(RegistryEntry, ids, el, verify_keys, st.booleans()),
                unique_by=lambda e: e.client_id,
                max_size=5,
            ).map(tuple),
        ),
        MessageType.REGISTER_AGGREGATOR: st.builds(
            RegisterAggregator, token=tokens, info=aggregator_infos(width)
        ),
        MessageType.REVOKE: st.builds(RevokeRequest, token=tokens, client_id=ids),
        MessageType.ACK: st.just(Ack()),
        MessageType.ERROR: st.builds(ErrorReply, reason=ids, message=texts),
        MessageType.ANNOUNCE: st.builds(Announce, task=ids, n_params=uints, ready_window_s=floats),
        MessageType.READY: st.just(Ready()),
        MessageType.ENVELOPE: st.builds(
            MemberEnvelope,
            members=st.lists(ids, unique=True, min_size=1, max_size=6).map(lambda m: tuple(sorted(m))),
            aggregate_key=el,
            min_online=uints,
            sealed_model=st.binary(max_size=100),
            evidence=st.lists(st.binary(max_size=120), max_size=3).map(tuple),
            first_evidence=first_components(width, min_size=0),
        ),
        MessageType.UPLOAD: st.builds(
            Upload,
            key_segment=ct,
            segments=st.lists(ct, min_size=1, max_size=4).map(tuple),
            first=el,
            second=el,
            first_proof=dlog_proofs(width),
            first_signature=signatures,
            context_digest=digests,
        ),
        MessageType.CHALLENGE: st.builds(Challenge, challenge=el, firsts=first_components(width, min_size=1)),
        MessageType.RESPONSE: st.builds(
            Response, share=el, proof=equality_proofs(width), challenge_digest=digests
        ),
        MessageType.RESULT: st.builds(
            RoundResult, status=st.sampled_from(RoundStatus), members=member_lists.map(tuple), detail=texts
        ),
    }[mtype]


def headers(mtype: MessageType) -> st.SearchStrategy[Header]:
    return st.builds(Header, type=st.just(mtype), federation=ids, round=uints, attempt=uints, sender=ids)


def example_body(mtype: MessageType, ctx: WireContext = CTX) -> Body:
    """One fixed, valid body per type (for tests that mutate a known-good message)."""
    width, ct_width = ctx.element_bytes, ctx.ciphertext_bytes
    e = 2 ** (8 * width - 1) + 12345  # top bit set: exactly ``width`` bytes
    z = 2 ** (RESPONSE_BITS - 1) + 99  # a response that needs all RESPONSE_BYTES (65) bytes
    proof = DlogProof(e + 10, z)
    info = AggregatorInfo(
        beta=e,
        beta_proof=proof,
        delivery=e + 2,
        delivery_proof=DlogProof(e + 11, z + 1),
        verify_key=b"\x01" * 32,
    )
    examples: dict[MessageType, Body] = {
        MessageType.ENROLL: EnrollRequest("tok-123", e, b"\x02" * 32, proof),
        MessageType.GET_PARAMS: ParamsRequest(),
        MessageType.PARAMS: ParamsReply(2 ** (8 * width - 1) + 187, 16, 4.0, 1000, 2, info),
        MessageType.GET_KEYS: KeysRequest(("a", "b")),
        MessageType.KEYS: KeysReply((RegistryEntry("a", e, b"\x03" * 32, False),)),
        MessageType.REGISTER_AGGREGATOR: RegisterAggregator("tok-123", info),
        MessageType.REVOKE: RevokeRequest("tok-123", "client-9"),
        MessageType.ACK: Ack(),
        MessageType.ERROR: ErrorReply("malformed", "bad message"),
        MessageType.ANNOUNCE: Announce("fedmf", 1000, 5.0),
        MessageType.READY: Ready(),
        MessageType.ENVELOPE: MemberEnvelope(
            ("a", "b", "c"),
            e,
            2,
            b"sealed",
            (b"raw response 1", b""),
            (FirstComponent("d", e + 3, DlogProof(e + 12, z + 2), b"\x09" * 64),),
        ),
        MessageType.UPLOAD: Upload(
            2 ** (8 * ct_width - 1) + 5,
            (2 ** (8 * ct_width - 1), 7),
            e,
            e + 1,
            proof,
            b"\x04" * 64,
            b"\x08" * 32,
        ),
        MessageType.CHALLENGE: Challenge(
            e, (FirstComponent("a", e, proof, b"\x05" * 64), FirstComponent("b", e + 1, proof, b"\x06" * 64))
        ),
        MessageType.RESPONSE: Response(e, EqualityProof(e + 20, e + 21, z), b"\x07" * 32),
        MessageType.RESULT: RoundResult(RoundStatus.RETRY, ("a", "b"), "client c dropped"),
    }
    return examples[mtype]


def example_header(mtype: MessageType) -> Header:
    return Header(type=mtype, federation="plant-7", round=3, attempt=1, sender="client-0001")


def unpack_trusted(data: bytes) -> list[Any]:
    """Generic msgpack decode of a message *we* produced (never use on untrusted input)."""
    return msgpack.unpackb(data, raw=False)  # type: ignore[no-any-return]


def repack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
