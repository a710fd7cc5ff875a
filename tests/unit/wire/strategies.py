"""Hypothesis strategies for protocol v1 bodies, and helpers to build hostile raw messages."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import strategies as st

from shared.crypto.signing import SigningKeyPair
from shared.wire.codec import ID_PATTERN, MAX_UINT, WireContext
from shared.wire.messages import (
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

# RFC 8032 section 7.1, TEST 1: a fixed signing key, so signatures (and known answers) are stable.
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_VERIFY = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
TEST_KEY = SigningKeyPair.from_private_bytes(RFC8032_SECRET)

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


def elements(width: int) -> st.SearchStrategy[int]:
    """Any integer of ``width`` bytes: the wire checks widths, not group membership."""
    return st.one_of(st.integers(0, 3), st.integers(0, 256**width - 1))


def aggregator_infos(width: int) -> st.SearchStrategy[AggregatorInfo]:
    return st.builds(
        AggregatorInfo,
        betas=st.lists(elements(width), min_size=1, max_size=4).map(tuple),
        delivery=elements(width),
        verify_key=verify_keys,
    )


@st.composite
def params_replies(draw: st.DrawFn) -> ParamsReply:
    p = draw(st.integers(2, 2**700))
    width = (p.bit_length() + 7) // 8
    return ParamsReply(
        p=p,
        q=draw(st.integers(1, p)),
        g=draw(elements(width)),
        frac_bits=draw(uints),
        clip=draw(floats),
        max_clients=draw(uints),
        min_online=draw(uints),
        aggregator=draw(st.none() | aggregator_infos(width)),
    )


def bodies(mtype: MessageType, ctx: WireContext) -> st.SearchStrategy[Any]:
    """A strategy for every valid body of message type ``mtype`` under ``ctx``."""
    el = elements(ctx.element_bytes)
    ct = st.integers(0, 256**ctx.ciphertext_bytes - 1)
    member_lists = st.lists(ids, unique=True, max_size=6)
    return {
        MessageType.ENROLL: st.builds(
            EnrollRequest,
            token=tokens,
            elgamal_public=el,
            verify_key=verify_keys,
            proof_commitment=el,
            proof_response=el,
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
            RegisterAggregator, token=tokens, info=aggregator_infos(ctx.element_bytes)
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
        ),
        MessageType.UPLOAD: st.builds(
            Upload,
            segments=st.lists(ct, min_size=1, max_size=4).map(tuple),
            first=el,
            second=el,
            first_signature=signatures,
        ),
        MessageType.CHALLENGE: st.builds(
            Challenge,
            challenge=el,
            firsts=st.lists(
                st.builds(FirstComponent, ids, el, signatures),
                min_size=1,
                max_size=5,
                unique_by=lambda f: f.member,
            ).map(tuple),
        ),
        MessageType.RESPONSE: st.builds(Response, share=el),
        MessageType.RESULT: st.builds(
            RoundResult, status=st.sampled_from(RoundStatus), members=member_lists.map(tuple), detail=texts
        ),
    }[mtype]


def headers(mtype: MessageType) -> st.SearchStrategy[Header]:
    return st.builds(Header, type=st.just(mtype), federation=ids, round=uints, attempt=uints, sender=ids)


def example_body(mtype: MessageType, width: int = 64, ct_width: int = 128) -> Body:
    """One fixed, valid body per type (for tests that mutate a known-good message)."""
    e = 2 ** (8 * width - 1) + 12345  # top bit set: exactly ``width`` bytes
    info = AggregatorInfo(betas=(e, e + 1), delivery=e + 2, verify_key=b"\x01" * 32)
    examples: dict[MessageType, Body] = {
        MessageType.ENROLL: EnrollRequest("tok-123", e, b"\x02" * 32, e + 3, e + 4),
        MessageType.GET_PARAMS: ParamsRequest(),
        MessageType.PARAMS: ParamsReply(2**511 + 187, 2**127 + 45, e, 16, 4.0, 1000, 2, info),
        MessageType.GET_KEYS: KeysRequest(("a", "b")),
        MessageType.KEYS: KeysReply((RegistryEntry("a", e, b"\x03" * 32, False),)),
        MessageType.REGISTER_AGGREGATOR: RegisterAggregator("tok-123", info),
        MessageType.REVOKE: RevokeRequest("tok-123", "client-9"),
        MessageType.ACK: Ack(),
        MessageType.ERROR: ErrorReply("malformed", "bad message"),
        MessageType.ANNOUNCE: Announce("fedmf", 1000, 5.0),
        MessageType.READY: Ready(),
        MessageType.ENVELOPE: MemberEnvelope(("a", "b", "c"), e, 2, b"sealed"),
        MessageType.UPLOAD: Upload((2 ** (8 * ct_width - 1), 7), e, e, b"\x04" * 64),
        MessageType.CHALLENGE: Challenge(
            e, (FirstComponent("a", e, b"\x05" * 64), FirstComponent("b", e, b"\x06" * 64))
        ),
        MessageType.RESPONSE: Response(e),
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
