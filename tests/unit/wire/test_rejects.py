"""The decoder refuses everything that is not a well-formed v1 message, with the right typed error."""

from __future__ import annotations

import copy
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.crypto.group import insecure_test_group
from shared.errors import (
    MalformedMessageError,
    OversizeMessageError,
    UnsupportedVersionError,
    WireError,
)
from shared.wire import serde
from shared.wire.messages import MessageType
from shared.wire.serde import WireContext
from tests.unit.wire.strategies import TEST_KEY, example_body, example_header, repack, unpack_trusted

CTX = WireContext.from_group(insecure_test_group())
SIG = b"\x00" * 64


def wire_of(mtype: MessageType) -> bytes:
    return serde.encode(example_header(mtype), example_body(mtype), TEST_KEY, CTX)


def elements_of(mtype: MessageType) -> list[Any]:
    return unpack_trusted(wire_of(mtype))


def mutated(mtype: MessageType, change: Callable[[list[Any]], object]) -> bytes:
    """The example message of ``mtype`` after ``change`` edited its generic msgpack form in place."""
    elements = copy.deepcopy(elements_of(mtype))
    change(elements)
    return repack(elements)


def assert_malformed(data: bytes, match: str | None = None) -> None:
    with pytest.raises(MalformedMessageError, match=match):
        serde.decode(data, CTX)


def test_the_mutation_helper_is_faithful() -> None:
    for mtype in MessageType:
        assert mutated(mtype, lambda e: None) == wire_of(mtype)


# -- framing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", b"hello world", b"\x90", b"\x91", b"\x00", b"\xc0", repack("a string"), repack(None)],
)
def test_garbage_is_malformed(data: bytes) -> None:
    assert_malformed(data)
    with pytest.raises(MalformedMessageError):
        serde.peek_header(data)


@pytest.mark.parametrize("data", ["text", None, 5, [1, 2]])
def test_non_bytes_is_malformed(data: Any) -> None:
    assert_malformed(data)


@pytest.mark.parametrize("mtype", list(MessageType))
def test_every_truncation_is_malformed(mtype: MessageType) -> None:
    wire = wire_of(mtype)
    for cut in range(len(wire)):
        assert_malformed(wire[:cut])


def test_trailing_bytes_are_malformed() -> None:
    assert_malformed(wire_of(MessageType.READY) + b"\x00", "trailing")
    assert_malformed(wire_of(MessageType.READY) * 2, "trailing")


def test_oversize_is_refused_before_parsing() -> None:
    wire = wire_of(MessageType.UPLOAD)
    assert serde.decode(wire, CTX, max_bytes=len(wire)).body == example_body(MessageType.UPLOAD)
    for bad in (wire, b"\xc1" * len(wire)):  # garbage too: the size check comes first
        with pytest.raises(OversizeMessageError):
            serde.decode(bad, CTX, max_bytes=len(wire) - 1)
        with pytest.raises(OversizeMessageError):
            serde.peek_header(bad, max_bytes=len(wire) - 1)
    assert serde.DEFAULT_MAX_MESSAGE_BYTES == 64 * 1024 * 1024


def test_version_is_checked_first() -> None:
    def set_version(version: Any, extra: bool = False) -> bytes:
        def change(e: list[Any]) -> None:
            e[0] = version
            if extra:
                e.append("a v2 field")

        return mutated(MessageType.READY, change)

    for data in (set_version(2), set_version(0), set_version(2, extra=True), repack([2]), repack([2, "x"])):
        with pytest.raises(UnsupportedVersionError):
            serde.decode(data, CTX)
        with pytest.raises(UnsupportedVersionError):
            serde.peek_header(data)
    for version in ("1", True, 1.0, None, b"\x01", -1):
        assert_malformed(set_version(version))
    assert_malformed(repack([]))


def test_wrong_outer_length_is_malformed() -> None:
    assert_malformed(mutated(MessageType.READY, lambda e: e.append(None)), "8 elements")
    assert_malformed(mutated(MessageType.READY, lambda e: e.pop()), "8 elements")


@pytest.mark.parametrize("value", ["bogus", "READY", "", 7, None, b"ready"])
def test_unknown_message_type_is_malformed(value: Any) -> None:
    assert_malformed(mutated(MessageType.READY, lambda e: e.__setitem__(1, value)), "type")


def test_body_of_another_type_is_malformed() -> None:
    response_body = elements_of(MessageType.RESPONSE)[6]
    assert_malformed(mutated(MessageType.READY, lambda e: e.__setitem__(6, response_body)))


# -- maps, ext types, hostile containers ----------------------------------------------------------


def test_maps_are_refused_everywhere() -> None:
    elements = elements_of(MessageType.READY)
    as_map = dict(
        zip(["version", "type", "federation", "round", "attempt", "sender", "body", "sig"], elements)
    )
    assert_malformed(repack(as_map), "maps")
    assert_malformed(repack({}), "maps")
    assert_malformed(mutated(MessageType.READY, lambda e: e.__setitem__(6, {})), "maps")
    assert_malformed(mutated(MessageType.RESPONSE, lambda e: e.__setitem__(6, {"share": e[6][0]})), "maps")
    assert_malformed(mutated(MessageType.READY, lambda e: e.__setitem__(2, {"a": 1})), "maps")


def test_ext_types_are_refused() -> None:
    import msgpack

    ext = msgpack.ExtType(1, b"\x00" * 8)
    assert_malformed(mutated(MessageType.READY, lambda e: e.__setitem__(2, ext)), "scalar")


def test_hostile_array_headers_do_not_allocate() -> None:
    """Array headers that claim far more elements than the message holds are refused at once."""
    huge = b"\xdd" + struct.pack(">I", 2**32 - 1)
    start = time.perf_counter()
    assert_malformed(huge + b"\x01" * 10)
    head = wire_of(MessageType.READY)[: -(1 + 66 + 1)]  # up to (not incl.) the empty body array
    assert_malformed(head + huge * 1000)
    assert_malformed(head + b"\xdc\xff\xff" + b"\x90" * 100)
    # a 10^4-deep nest of arrays where a scalar is expected
    assert_malformed(b"\x98\x01\xa5ready" + b"\x91" * 10_000)
    assert time.perf_counter() - start < 1.0


def test_long_strings_are_refused_before_being_decoded() -> None:
    assert_malformed(mutated(MessageType.READY, lambda e: e.__setitem__(2, "a" * 100_000)))


# -- header fields ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["", "a" * 65, "has space", "tab\t", "new\nline", "caf\u00e9", "a/b", "x:y", 5, None, b"id"]
)
@pytest.mark.parametrize("position", [2, 5])
def test_bad_ids_in_header_are_malformed(value: Any, position: int) -> None:
    assert_malformed(mutated(MessageType.READY, lambda e: e.__setitem__(position, value)))


def test_longest_id_is_fine() -> None:
    assert serde.decode(mutated(MessageType.READY, lambda e: e.__setitem__(5, "a" * 64)), CTX)


@pytest.mark.parametrize("value", [-1, -(2**63), 2**63, 2**64 - 1, True, False, 1.0, "3", None])
@pytest.mark.parametrize("position", [3, 4])
def test_round_and_attempt_must_be_small_non_negative_ints(value: Any, position: int) -> None:
    assert_malformed(mutated(MessageType.READY, lambda e: e.__setitem__(position, value)))


@pytest.mark.parametrize("size", [0, 63, 65])
def test_signature_must_be_64_bytes(size: int) -> None:
    assert_malformed(mutated(MessageType.READY, lambda e: e.__setitem__(7, b"\x00" * size)), "signature")
    assert_malformed(mutated(MessageType.READY, lambda e: e.__setitem__(7, "x" * 64)), "signature")


# -- non-canonical encodings -----------------------------------------------------------------------


def test_non_canonical_encodings_are_refused() -> None:
    wire = wire_of(MessageType.READY)
    # round 3 as uint8 (cc 03) instead of the fixint 03
    assert_malformed(wire.replace(b"\x03\x01\xab", b"\xcc\x03\x01\xab"), "non-canonical")
    # federation "plant-7" as str8 (d9 07) instead of fixstr (a7)
    assert_malformed(wire.replace(b"\xa7plant-7", b"\xd9\x07plant-7"), "non-canonical")
    # empty body as array16 (dc 00 00) instead of the fixarray 90
    assert_malformed(wire.replace(b"\x90\xc4\x40", b"\xdc\x00\x00\xc4\x40"), "non-canonical")
    # the signature as bin16
    assert_malformed(wire.replace(b"\x90\xc4\x40", b"\x90\xc5\x00\x40"), "non-canonical")
    announce = wire_of(MessageType.ANNOUNCE)
    float64 = b"\xcb" + struct.pack(">d", 5.0)
    assert float64 in announce
    assert_malformed(announce.replace(float64, b"\xca" + struct.pack(">f", 5.0)), "non-canonical")


# -- body fields: types, widths, bools, floats, strings --------------------------------------------


def body_setter(index: int, value: Any, *path: int) -> Callable[[list[Any]], None]:
    def change(e: list[Any]) -> None:
        target = e[6]
        for step in path:
            target = target[step]
        target[index] = value

    return change


@pytest.mark.parametrize("size", [0, 63, 65, 128])
def test_elements_must_have_the_exact_width(size: int) -> None:
    assert_malformed(mutated(MessageType.RESPONSE, body_setter(0, b"\x01" * size)), "64 bytes")
    assert_malformed(mutated(MessageType.UPLOAD, body_setter(1, b"\x01" * size)), "64 bytes")
    assert_malformed(mutated(MessageType.CHALLENGE, body_setter(1, b"\x01" * size, 1, 0)), "64 bytes")


@pytest.mark.parametrize("value", [5, -5, "00" * 64, None, True, [b"\x01" * 64]])
def test_elements_must_be_bin(value: Any) -> None:
    assert_malformed(mutated(MessageType.RESPONSE, body_setter(0, value)))


@pytest.mark.parametrize("size", [0, 1, 127, 129, 255, 3 * 128 + 1])
def test_segment_blob_must_be_a_positive_multiple_of_the_ciphertext_width(size: int) -> None:
    assert_malformed(mutated(MessageType.UPLOAD, body_setter(0, b"\x01" * size)), "segment")


def test_segment_blob_decodes_to_fixed_width_integers() -> None:
    blob = (1).to_bytes(128, "big") + (2**1023).to_bytes(128, "big") + bytes(128)
    msg = serde.decode(mutated(MessageType.UPLOAD, body_setter(0, blob)), CTX)
    assert msg.body.segments == (1, 2**1023, 0)  # type: ignore[union-attr]


@pytest.mark.parametrize("size", [0, 31, 33])
def test_verify_keys_must_be_32_bytes(size: int) -> None:
    assert_malformed(mutated(MessageType.ENROLL, body_setter(2, b"\x00" * size)), "32 bytes")
    assert_malformed(mutated(MessageType.KEYS, body_setter(2, b"\x00" * size, 0, 0)), "32 bytes")
    assert_malformed(mutated(MessageType.PARAMS, body_setter(2, b"\x00" * size, 7)), "32 bytes")


@pytest.mark.parametrize("value", [0, 1, None, "true", 1.0])
def test_bools_must_be_msgpack_bools(value: Any) -> None:
    assert_malformed(mutated(MessageType.KEYS, body_setter(3, value, 0, 0)), "bool")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 5, True, "5.0", None])
def test_floats_must_be_finite_float64(value: Any) -> None:
    assert_malformed(mutated(MessageType.ANNOUNCE, body_setter(2, value)), "float")
    assert_malformed(mutated(MessageType.PARAMS, body_setter(4, value)), "float")


@pytest.mark.parametrize("value", [-1, 2**63, True, 1.5, None])
def test_small_ints_must_be_non_negative_ints(value: Any) -> None:
    assert_malformed(mutated(MessageType.ANNOUNCE, body_setter(1, value)))
    assert_malformed(mutated(MessageType.ENVELOPE, body_setter(2, value)))


def test_text_bounds() -> None:
    ok = mutated(MessageType.ERROR, body_setter(1, "\u00e9" * 4096 + ""))
    assert serde.decode(ok, CTX).body.message == "\u00e9" * 4096  # type: ignore[union-attr]
    assert_malformed(mutated(MessageType.ERROR, body_setter(1, "a" * 4097)), "4096")
    assert_malformed(mutated(MessageType.RESULT, body_setter(2, "x" * 4097)), "4096")
    for control in ("\x00", "\x1b[2J", "\r", "\x7f", "\x85"):
        assert_malformed(mutated(MessageType.ERROR, body_setter(1, "a" + control)), "control")
    assert serde.decode(mutated(MessageType.ERROR, body_setter(1, "line\n\tnext")), CTX)


def test_invalid_utf8_is_malformed() -> None:
    wire = wire_of(MessageType.ERROR)
    assert b"\xabbad message" in wire
    assert_malformed(wire.replace(b"\xabbad message", b"\xabbad\xff\xfeessage"))


@pytest.mark.parametrize("value", ["", "has space", "x" * 257, "caf\u00e9", 5, None, b"tok"])
def test_tokens_must_be_printable_ascii(value: Any) -> None:
    assert_malformed(mutated(MessageType.ENROLL, body_setter(0, value)), "token")
    assert_malformed(mutated(MessageType.REVOKE, body_setter(0, value)), "token")


@pytest.mark.parametrize("value", ["unknown", "COMPLETE", "", 1, None])
def test_round_status_must_be_known(value: Any) -> None:
    assert_malformed(mutated(MessageType.RESULT, body_setter(0, value)), "RoundStatus")


@pytest.mark.parametrize("value", ["", "bad reason", "a" * 65, 5])
def test_reason_and_task_are_ids(value: Any) -> None:
    assert_malformed(mutated(MessageType.ERROR, body_setter(0, value)), "reason")
    assert_malformed(mutated(MessageType.ANNOUNCE, body_setter(0, value)), "task")


@pytest.mark.parametrize("mtype", list(MessageType))
def test_wrong_body_lengths_are_malformed(mtype: MessageType) -> None:
    assert_malformed(mutated(mtype, lambda e: e[6].append(None)), "elements")
    if elements_of(mtype)[6]:
        assert_malformed(mutated(mtype, lambda e: e[6].pop()), "elements")
    assert_malformed(mutated(mtype, lambda e: e.__setitem__(6, None)), "array")


# -- member lists ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "match"),
    [
        (["b", "a", "c"], "sorted"),
        (["a", "c", "b"], "sorted"),
        (["a", "a", "b"], "duplicate"),
        (["a", "b", "b"], "duplicate"),
        ([], "at least 1"),
        (["a", "b c"], "id"),
        (["B", "a"], None),  # "B" < "a" in byte order: sorted, so accepted
    ],
)
def test_envelope_members_must_be_sorted_and_unique(members: list[Any], match: str | None) -> None:
    data = mutated(MessageType.ENVELOPE, body_setter(0, members))
    if match is None:
        assert serde.decode(data, CTX).body.members == tuple(members)  # type: ignore[union-attr]
    else:
        assert_malformed(data, match)


def test_challenge_firsts_must_have_distinct_members() -> None:
    def duplicate(e: list[Any]) -> None:
        e[6][1][1][0] = e[6][1][0][0]

    assert_malformed(mutated(MessageType.CHALLENGE, duplicate), "duplicate")
    assert_malformed(mutated(MessageType.CHALLENGE, body_setter(1, [])), "at least 1")
    assert_malformed(mutated(MessageType.CHALLENGE, body_setter(2, b"\x00" * 63, 1, 0)), "64 bytes")


def test_other_id_lists_must_be_unique() -> None:
    assert_malformed(mutated(MessageType.GET_KEYS, body_setter(0, ["a", "a"])), "duplicate")
    assert_malformed(mutated(MessageType.RESULT, body_setter(1, ["a", "b", "a"])), "duplicate")
    assert_malformed(mutated(MessageType.KEYS, lambda e: e[6][0].append(e[6][0][0])), "duplicate")


# -- PARAMS ----------------------------------------------------------------------------------------


def test_params_widths() -> None:
    assert_malformed(mutated(MessageType.PARAMS, body_setter(0, b"\x00" + b"\x01" * 64)), "minimal")
    assert_malformed(mutated(MessageType.PARAMS, body_setter(0, b"")), "minimal")
    assert_malformed(mutated(MessageType.PARAMS, body_setter(0, b"\x01" * 1025)), "minimal")
    assert_malformed(mutated(MessageType.PARAMS, body_setter(0, b"\x01")), "modulus")
    assert_malformed(mutated(MessageType.PARAMS, body_setter(1, b"\x01" * 65)), "wider than p")
    assert_malformed(mutated(MessageType.PARAMS, body_setter(2, b"\x01" * 63)), "64 bytes")  # g
    assert_malformed(mutated(MessageType.PARAMS, body_setter(0, b"\x01" * 63, 7, 0)), "64 bytes")  # a beta
    assert_malformed(mutated(MessageType.PARAMS, body_setter(0, [], 7)), "at least 1")  # no betas
    # no aggregator yet: nil
    assert serde.decode(mutated(MessageType.PARAMS, body_setter(7, None)), None).body.aggregator is None  # type: ignore[union-attr]


# -- fuzz ------------------------------------------------------------------------------------------


def _decode_or_wire_error(data: bytes) -> None:
    try:
        msg = serde.decode(data, CTX)
    except WireError:
        return
    # anything accepted is canonical: re-encoding reproduces the signed part byte for byte
    assert serde.SIGNING_DOMAIN + b"\x97" + data[1:-66] == serde.signing_bytes(msg, CTX)
    assert serde.peek_header(data) == msg.header


@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    _decode_or_wire_error(data)
    try:
        serde.peek_header(data)
    except WireError:
        pass


@given(st.sampled_from(list(MessageType)), st.data())
def test_fuzz_mutated_messages(mtype: MessageType, data: st.DataObject) -> None:
    wire = bytearray(wire_of(mtype))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(wire) - 1))
        action = data.draw(st.sampled_from(["set", "insert", "delete"]))
        if action == "set":
            wire[position] = data.draw(st.integers(0, 255))
        elif action == "insert":
            wire[position:position] = data.draw(st.binary(min_size=1, max_size=5))
        elif len(wire) > 1:
            del wire[position : position + data.draw(st.integers(1, 5))]
    _decode_or_wire_error(bytes(wire))


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text() | st.binary(),
        lambda inner: st.lists(inner, max_size=9) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=30,
    )
)
def test_fuzz_arbitrary_msgpack(value: Any) -> None:
    _decode_or_wire_error(repack(value))
    _decode_or_wire_error(repack([1, "upload", "f", 0, 0, "s", value, SIG]))


def test_arrays_longer_than_the_limit_are_refused() -> None:
    from shared.wire.reader import MAX_ARRAY_ITEMS

    ids = ["a"] * (MAX_ARRAY_ITEMS + 1)  # fits in the byte limit, but not in the array limit
    assert_malformed(mutated(MessageType.GET_KEYS, body_setter(0, ids)), "more than")


def test_bytes_like_input_is_accepted() -> None:
    wire = wire_of(MessageType.UPLOAD)
    assert (
        serde.decode(bytearray(wire), CTX) == serde.decode(memoryview(wire), CTX) == serde.decode(wire, CTX)
    )
    with pytest.raises(OversizeMessageError):
        serde.decode(memoryview(wire), CTX, max_bytes=len(wire) - 1)
