"""The performance-only fast paths of the wire equal the generic ones, byte for byte and refusal for refusal.

* :class:`serde._FirstsCodec` parses a list of first components (a CHALLENGE's bulk) in one
  pass over the bytes; on any deviation from the canonical layout it hands over to the
  generic per-field reader, which must then give the same value or the same refusal.
* :func:`serde._first_bytes_fast` builds what a first-component signature covers without the
  generic codecs; anything it does not handle goes to the generic path.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

import msgpack
import pytest
from gmpy2 import mpz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcast.shared.crypto.proofs import RESPONSE_BITS, DlogProof
from fedcast.shared.errors import FedcastError, MalformedMessageError
from fedcast.shared.wire import serde
from fedcast.shared.wire.codec import MAX_UINT, WireContext
from fedcast.shared.wire.messages import Challenge, FirstComponent, Header, MessageType
from fedcast.shared.wire.reader import Reader, pack
from tests.unit.wire.strategies import CTX, TEST_KEY, digests, dlog_proofs, elements, ids, signatures

#: The test group's widths (64-byte elements: bin 8) and a 2048-bit group's (256 bytes: bin 16).
CONTEXTS = (CTX, WireContext(256, 512))


def firsts_lists(width: int, max_size: int = 20) -> st.SearchStrategy[tuple[FirstComponent, ...]]:
    """Lists of first components with distinct members; up to 20 so array 16 headers occur too."""
    return st.lists(
        st.builds(FirstComponent, ids, elements(width), dlog_proofs(width), signatures),
        max_size=max_size,
        unique_by=lambda f: f.member,
    ).map(tuple)


def _read(codec: serde._FirstsCodec, data: bytes, ctx: WireContext | None) -> tuple[str, Any]:
    """What reading ``data`` as one list and nothing else gives: ("ok", value) or (error type, text)."""
    try:
        reader = Reader(data)
        value = codec.read(reader, ctx, "Challenge.firsts")
        reader.finish()
    except FedcastError as exc:
        return type(exc).__name__, str(exc)
    return "ok", value


def _both(
    data: bytes, ctx: WireContext | None, min_items: int = 0
) -> tuple[tuple[str, Any], tuple[str, Any]]:
    fast = serde._FirstsCodec(min_items=min_items)
    generic = serde._FirstsCodec(min_items=min_items, fast=False)
    return _read(fast, data, ctx), _read(generic, data, ctx)


def _encoded(firsts: tuple[FirstComponent, ...], ctx: WireContext) -> bytes:
    return pack(serde._FirstsCodec().encode(firsts, ctx, "firsts"))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_fast_path_reads_what_the_generic_path_reads(data: st.DataObject) -> None:
    ctx = data.draw(st.sampled_from(CONTEXTS))
    firsts = data.draw(firsts_lists(ctx.element_bytes))
    raw = _encoded(firsts, ctx)
    assert serde._FirstsCodec()._parse(raw, 0, ctx.element_bytes) is not None  # taken, not fallen back
    fast, generic = _both(raw, ctx)
    assert fast == generic == ("ok", firsts)
    for a, b in zip(fast[1], firsts, strict=True):
        assert type(a.value) is type(b.value) is int and type(a.signature) is bytes


def _mutations(raw: bytes) -> st.SearchStrategy[bytes]:
    position = st.integers(0, max(0, len(raw) - 1))
    byte = st.integers(0, 255)
    return st.one_of(
        st.tuples(position, byte).map(lambda pb: raw[: pb[0]] + bytes([pb[1]]) + raw[pb[0] + 1 :]),
        position.map(lambda p: raw[:p]),  # truncated
        st.tuples(position, byte).map(lambda pb: raw[: pb[0]] + bytes([pb[1]]) + raw[pb[0] :]),  # inserted
        st.tuples(position, st.integers(1, 80)).map(lambda pn: raw[: pn[0]] + raw[pn[0] + pn[1] :]),
        st.binary(max_size=8).map(lambda tail: raw + tail),  # trailing bytes
    )


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_fast_path_refuses_what_the_generic_path_refuses(data: st.DataObject) -> None:
    ctx = data.draw(st.sampled_from(CONTEXTS))
    firsts = data.draw(firsts_lists(ctx.element_bytes, max_size=18))
    mutated = data.draw(_mutations(_encoded(firsts, ctx)))
    min_items = data.draw(st.integers(0, 2))
    fast, generic = _both(mutated, ctx, min_items)
    assert fast == generic


def _item(member: Any, value: Any, commitment: Any, response: Any, signature: Any) -> list[Any]:
    return [member, value, [commitment, response], signature]


E = CTX.element_bytes
GOOD = _item("a", b"\x01" * E, b"\x02" * E, b"\x03" * 65, b"\x04" * 64)


@pytest.mark.parametrize(
    "items",
    [
        [GOOD, GOOD],  # duplicate members
        [[*GOOD[:3]]],  # 3 fields
        [[*GOOD, b""]],  # 5 fields
        [_item("bad id", *GOOD[1:3], GOOD[2][1], GOOD[3])],
        [_item("", GOOD[1], *GOOD[2], GOOD[3])],
        [_item("x" * 65, GOOD[1], *GOOD[2], GOOD[3])],
        [_item("é", GOOD[1], *GOOD[2], GOOD[3])],
        [_item(b"a", GOOD[1], *GOOD[2], GOOD[3])],  # bin, not str
        [_item("a", b"\x01" * (E - 1), *GOOD[2], GOOD[3])],
        [_item("a", GOOD[1], b"\x02" * (E + 1), GOOD[2][1], GOOD[3])],
        [_item("a", GOOD[1], GOOD[2][0], b"\x02" + b"\x00" * 64, GOOD[3])],  # response >= 2^513
        [_item("a", GOOD[1], GOOD[2][0], b"\x00" * 64, GOOD[3])],  # 64-byte response
        [_item("a", GOOD[1], *GOOD[2], b"\x04" * 63)],
        [_item("a", 5, *GOOD[2], GOOD[3])],
        [_item("a", GOOD[1], *GOOD[2], None)],
        [None],
        [b"raw"],
    ],
)
def test_malformed_items_get_the_generic_refusal(items: list[Any]) -> None:
    raw = msgpack.packb(items, use_bin_type=True)
    fast, generic = _both(raw, CTX)
    assert fast == generic and fast[0] == "MalformedMessageError"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc0",
        b"\x80",  # a map
        b"\xdc\x00\x01" + msgpack.packb(GOOD, use_bin_type=True),  # array 16 holding 1: non-canonical
        b"\xdd\x00\x00\x00\x01" + msgpack.packb(GOOD, use_bin_type=True),
        b"\xdd\xff\xff\xff\xff",
        b"\x91\xd9\x01a",  # str 8 of 1 byte: non-canonical
        b"\x91\x94\xd9\x01a" + msgpack.packb(GOOD[1:], use_bin_type=True)[1:],
    ],
)
def test_malformed_arrays_get_the_generic_refusal(raw: bytes) -> None:
    fast, generic = _both(raw, CTX)
    assert fast == generic and fast[0] == "MalformedMessageError"


def test_min_items_and_a_missing_context_take_the_generic_path() -> None:
    assert _both(b"\x90", CTX, 1)[0] == _both(b"\x90", CTX, 1)[1]
    assert _both(b"\x90", CTX, 1)[0][0] == "MalformedMessageError"
    raw = msgpack.packb([GOOD], use_bin_type=True)
    assert _both(raw, None)[0] == _both(raw, None)[1]
    assert _both(raw, None)[0][0] == "MalformedMessageError"


@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow])
@given(firsts=firsts_lists(CTX.element_bytes, max_size=20).filter(bool), challenge=elements(E))
def test_a_whole_challenge_decodes_alike(firsts: tuple[FirstComponent, ...], challenge: int) -> None:
    header = Header(MessageType.CHALLENGE, "fed", 3, 1, "aggregator")
    wire = serde.encode(header, Challenge(challenge, firsts), TEST_KEY, CTX)
    msg = serde.decode(wire, CTX)
    with mock.patch.object(serde._FirstsCodec, "_parse", return_value=None):
        assert serde.decode(wire, CTX) == msg
    assert msg.body == Challenge(challenge, firsts)
    serde.verify(msg, TEST_KEY.verify_key, CTX)


# -- first_component_bytes --------------------------------------------------------------------


def _first_bytes(fast: bool, *args: Any) -> tuple[str, Any]:
    try:
        if fast:
            return "ok", serde.first_component_bytes(*args)
        with mock.patch.object(serde, "_first_bytes_fast", return_value=None):
            return "ok", serde.first_component_bytes(*args)
    except FedcastError as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=200)
@given(
    ctx=st.sampled_from(CONTEXTS),
    federation=ids,
    sender=ids,
    round_=st.one_of(st.integers(0, 300), st.integers(0, MAX_UINT)),
    attempt=st.one_of(st.integers(0, 300), st.integers(0, MAX_UINT)),
    data=st.data(),
    digest=digests,
)
def test_first_component_bytes_fast_equal_generic(
    ctx: WireContext,
    federation: str,
    sender: str,
    round_: int,
    attempt: int,
    data: st.DataObject,
    digest: bytes,
) -> None:
    width = ctx.element_bytes
    first = data.draw(elements(width))
    proof = data.draw(dlog_proofs(width))
    signed = serde.FirstComponentSigned(first, proof, digest)
    args = (federation, round_, attempt, sender, signed, ctx)
    assert serde._first_bytes_fast(*args) is not None
    assert _first_bytes(True, *args) == _first_bytes(False, *args)


ANY_VALUE = st.one_of(
    st.integers(-3, 2**600),
    st.just(-1),
    st.booleans(),
    st.integers(0, 2**40).map(mpz),
    st.just(2**RESPONSE_BITS),
    st.just(256**E),
    st.just(256**E - 1),
    st.binary(max_size=3),
    st.none(),
)


@settings(max_examples=300)
@given(
    federation=st.one_of(ids, st.just("bad id"), st.just(""), st.integers(0, 3)),
    sender=st.one_of(ids, st.just("x" * 65)),
    round_=st.one_of(st.integers(-2, MAX_UINT + 2), st.booleans(), st.just(2**64)),
    attempt=st.one_of(st.integers(-2, 5), st.just(MAX_UINT + 1), st.integers(0, 5).map(mpz)),
    first=ANY_VALUE,
    commitment=ANY_VALUE,
    response=ANY_VALUE,
    proof_kind=st.sampled_from(["dlog", "tuple", "none"]),
    digest=st.one_of(digests, st.binary(max_size=40), st.just(bytearray(32)), st.none()),
)
def test_first_component_bytes_refuse_alike(
    federation: Any,
    sender: Any,
    round_: Any,
    attempt: Any,
    first: Any,
    commitment: Any,
    response: Any,
    proof_kind: str,
    digest: Any,
) -> None:
    proof: Any = {
        "dlog": DlogProof(commitment, response),
        "tuple": (commitment, response),
        "none": None,
    }[proof_kind]
    signed = serde.FirstComponentSigned(first, proof, digest)
    args = (federation, round_, attempt, sender, signed, CTX)
    assert _first_bytes(True, *args) == _first_bytes(False, *args)


def test_first_component_bytes_keep_the_documented_form() -> None:
    signed = serde.FirstComponentSigned(7, DlogProof(9, 11), b"\x05" * 32)
    expected = serde.FIRST_DOMAIN + msgpack.packb(
        [
            "fed",
            4,
            0,
            "client-1",
            (7).to_bytes(E, "big"),
            [(9).to_bytes(E, "big"), (11).to_bytes(65, "big")],
            b"\x05" * 32,
        ],
        use_bin_type=True,
    )
    assert serde.first_component_bytes("fed", 4, 0, "client-1", signed, CTX) == expected
    with pytest.raises(MalformedMessageError):
        serde.first_component_bytes(
            "fed", 4, 0, "client-1", serde.FirstComponentSigned(-1, signed.proof, signed.context_digest), CTX
        )


# -- id lists (ENVELOPE and RESULT members, GET_KEYS) -------------------------------------------


def _read_ids(codec: serde._IdsCodec, data: bytes) -> tuple[str, Any]:
    try:
        reader = Reader(data)
        value = codec.read(reader, None, "MemberEnvelope.members")
        reader.finish()
    except FedcastError as exc:
        return type(exc).__name__, str(exc)
    return "ok", value


def _both_ids(data: bytes, min_items: int, sorted_: bool) -> tuple[tuple[str, Any], tuple[str, Any]]:
    fast = serde._IdsCodec(min_items=min_items, sorted_=sorted_)
    generic = serde._IdsCodec(min_items=min_items, sorted_=sorted_, fast=False)
    return _read_ids(fast, data), _read_ids(generic, data)


ID_LISTS = st.lists(ids, max_size=24, unique=True)


@settings(max_examples=150)
@given(members=ID_LISTS, sorted_=st.booleans())
def test_the_fast_id_list_reads_what_the_generic_path_reads(members: list[str], sorted_: bool) -> None:
    if sorted_:
        members.sort()
    raw = pack(members)
    assert serde._IdsCodec()._parse(raw, 0) is not None
    fast, generic = _both_ids(raw, 0, sorted_)
    assert fast == generic == ("ok", tuple(members))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_fast_id_list_refuses_what_the_generic_path_refuses(data: st.DataObject) -> None:
    members = data.draw(st.lists(ids, max_size=20))  # duplicates and any order too
    sorted_ = data.draw(st.booleans())
    if data.draw(st.booleans()):
        members.sort()
    raw = pack(members)
    mutated = data.draw(st.one_of(st.just(raw), _mutations(raw)))
    fast, generic = _both_ids(mutated, data.draw(st.integers(0, 2)), sorted_)
    assert fast == generic


@pytest.mark.parametrize(
    "raw",
    [
        msgpack.packb(["b", "a"], use_bin_type=True),  # unsorted
        msgpack.packb(["a", "a"], use_bin_type=True),
        msgpack.packb(["a", "bad id"], use_bin_type=True),
        msgpack.packb(["a", "é"], use_bin_type=True),
        msgpack.packb(["a", b"b"], use_bin_type=True),
        msgpack.packb(["a", 1], use_bin_type=True),
        msgpack.packb(["x" * 65], use_bin_type=True),
        msgpack.packb([], use_bin_type=True),  # below min_items
        b"\x91\xd9\x01a",  # str 8 of 1 byte: non-canonical
        b"\xdc\x00\x01\xa1a",
        b"\x92\xa1a",
    ],
)
def test_malformed_id_lists_get_the_generic_refusal(raw: bytes) -> None:
    fast, generic = _both_ids(raw, 1, True)
    assert fast == generic and fast[0] == "MalformedMessageError"


@settings(max_examples=30)
@given(members=st.lists(ids, min_size=1, max_size=24, unique=True).map(sorted))
def test_a_whole_result_and_envelope_decode_alike(members: list[str]) -> None:
    from fedcast.shared.wire.messages import MemberEnvelope, RoundResult, RoundStatus

    for mtype, body in (
        (MessageType.RESULT, RoundResult(RoundStatus.COMPLETE, tuple(members), "done")),
        (MessageType.ENVELOPE, MemberEnvelope(tuple(members), 5, 3, b"sealed")),
    ):
        wire = serde.encode(Header(mtype, "fed", 3, 1, "aggregator"), body, TEST_KEY, CTX)
        msg = serde.decode(wire, CTX)
        with mock.patch.object(serde._IdsCodec, "_parse", return_value=None):
            assert serde.decode(wire, CTX) == msg
        assert msg.body == body
