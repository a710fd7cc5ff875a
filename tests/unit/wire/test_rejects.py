"""The decoder refuses everything that is not a well-formed v2 message, with the right typed error."""

from __future__ import annotations

import copy
import struct
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcast.shared.crypto.proofs import DlogProof
from fedcast.shared.errors import (
    MalformedMessageError,
    OversizeMessageError,
    UnsupportedVersionError,
    WireError,
)
from fedcast.shared.wire import serde
from fedcast.shared.wire.messages import FirstComponent, MemberEnvelope, MessageType, Response, Upload
from fedcast.shared.wire.reader import MAX_ARRAY_ITEMS
from tests.unit.wire.strategies import CTX, TEST_KEY, example_body, example_header, repack, unpack_trusted

SIG = b"\x00" * 64
E = CTX.element_bytes  # 64
C = CTX.ciphertext_bytes  # 128
Z = 65  # proof responses (RESPONSE_BITS = 513)

# The worked example of protocol version 1 (docs/PROTOCOL.md of v1): a READY that v1 peers sent.
V1_READY = bytes.fromhex(
    "9801a57265616479a7706c616e742d370300ab636c69656e742d3030303190c440"
    "6ade0be6db3973fdab3563c094e66fe0b7987b7544f40fa3d22d049ddde83e88f7"
    "1385c033680d24844a479de38587126481ae7757e20a63c9438a117e946a08"
)

#: Where each proof response sits in the example bodies (paths into the body array).
RESPONSE_PATHS: list[tuple[MessageType, tuple[int, ...]]] = [
    (MessageType.ENROLL, (3, 1)),
    (MessageType.PARAMS, (5, 1, 1)),
    (MessageType.PARAMS, (5, 3, 1)),
    (MessageType.REGISTER_AGGREGATOR, (1, 1, 1)),
    (MessageType.REGISTER_AGGREGATOR, (1, 3, 1)),
    (MessageType.UPLOAD, (4, 1)),
    (MessageType.CHALLENGE, (1, 0, 2, 1)),
    (MessageType.CHALLENGE, (1, 1, 2, 1)),
    (MessageType.ENVELOPE, (5, 0, 2, 1)),
    (MessageType.RESPONSE, (1, 2)),
]
#: Where each group element sits (a sample per type, proof commitments included).
ELEMENT_PATHS: list[tuple[MessageType, tuple[int, ...]]] = [
    (MessageType.ENROLL, (1,)),
    (MessageType.ENROLL, (3, 0)),
    (MessageType.PARAMS, (5, 0)),
    (MessageType.PARAMS, (5, 1, 0)),
    (MessageType.PARAMS, (5, 2)),
    (MessageType.REGISTER_AGGREGATOR, (1, 3, 0)),
    (MessageType.KEYS, (0, 0, 1)),
    (MessageType.ENVELOPE, (1,)),
    (MessageType.ENVELOPE, (5, 0, 1)),
    (MessageType.ENVELOPE, (5, 0, 2, 0)),
    (MessageType.UPLOAD, (2,)),
    (MessageType.UPLOAD, (3,)),
    (MessageType.UPLOAD, (4, 0)),
    (MessageType.CHALLENGE, (0,)),
    (MessageType.CHALLENGE, (1, 1, 1)),
    (MessageType.CHALLENGE, (1, 0, 2, 0)),
    (MessageType.RESPONSE, (0,)),
    (MessageType.RESPONSE, (1, 0)),
    (MessageType.RESPONSE, (1, 1)),
]
#: Where each proof struct sits, and its number of fields.
PROOF_PATHS: list[tuple[MessageType, tuple[int, ...], int]] = [
    (MessageType.ENROLL, (3,), 2),
    (MessageType.PARAMS, (5, 1), 2),
    (MessageType.REGISTER_AGGREGATOR, (1, 3), 2),
    (MessageType.UPLOAD, (4,), 2),
    (MessageType.CHALLENGE, (1, 0, 2), 2),
    (MessageType.ENVELOPE, (5, 0, 2), 2),
    (MessageType.RESPONSE, (1,), 3),
]


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


def body_setter(index: int, value: Any, *path: int) -> Callable[[list[Any]], None]:
    """Set body[path...][index] = value."""

    def change(e: list[Any]) -> None:
        target = e[6]
        for step in path:
            target = target[step]
        target[index] = value

    return change


def at(path: tuple[int, ...], value: Any) -> Callable[[list[Any]], None]:
    """Set the body value at ``path`` (a tuple of indices into the body array)."""
    return body_setter(path[-1], value, *path[:-1])


def test_the_mutation_helper_is_faithful() -> None:
    for mtype in MessageType:
        assert mutated(mtype, lambda e: None) == wire_of(mtype)


def test_the_paths_point_where_they_claim() -> None:
    for mtype, path in RESPONSE_PATHS + ELEMENT_PATHS:
        value: Any = elements_of(mtype)[6]
        for step in path:
            value = value[step]
        expected = Z if (mtype, path) in RESPONSE_PATHS else E
        assert isinstance(value, bytes) and len(value) == expected, (mtype, path)
    for mtype, path, size in PROOF_PATHS:
        value = elements_of(mtype)[6]
        for step in path:
            value = value[step]
        assert isinstance(value, list) and len(value) == size


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
    for bad in (wire, b"\xc1" * len(wire), V1_READY + b"\x00" * len(wire)):
        # garbage and other versions too: the size check comes first
        with pytest.raises(OversizeMessageError):
            serde.decode(bad, CTX, max_bytes=len(wire) - 1)
        with pytest.raises(OversizeMessageError):
            serde.peek_header(bad, max_bytes=len(wire) - 1)
    assert serde.DEFAULT_MAX_MESSAGE_BYTES == 64 * 1024 * 1024


# -- versions --------------------------------------------------------------------------------------


def test_a_version_1_message_is_unsupported() -> None:
    for data in (V1_READY, V1_READY[:10], V1_READY + b"trailing"):
        with pytest.raises(UnsupportedVersionError) as info:
            serde.decode(data, CTX)
        assert info.value.reason == "unsupported_version"
        with pytest.raises(UnsupportedVersionError):
            serde.peek_header(data)
    # the same message as version 2 decodes (its signature is another matter)
    as_v2 = b"\x98\x02" + V1_READY[2:]
    assert serde.decode(as_v2, CTX).header.version == 2


@pytest.mark.parametrize("mtype", list(MessageType))
def test_every_type_as_version_1_is_unsupported(mtype: MessageType) -> None:
    assert serde.decode(wire_of(mtype), CTX).header.version == 2
    with pytest.raises(UnsupportedVersionError):
        serde.decode(mutated(mtype, lambda e: e.__setitem__(0, 1)), CTX)


def test_version_1_bodies_are_unsupported_not_malformed() -> None:
    """A v1 peer's RESPONSE ([share] only) and PARAMS ([p, q, g, ...]) get the version error."""
    v1_response = [1, "response", "plant-7", 3, 0, "client-0001", [b"\x01" * E], SIG]
    v1_params = [
        1,
        "params",
        "plant-7",
        0,
        0,
        "keyserver",
        [b"\x01" * E, b"\x01" * 16, b"\x02" * E, 16, 4.0, 10, 2, None],
        SIG,
    ]
    for message in (v1_response, v1_params):
        with pytest.raises(UnsupportedVersionError):
            serde.decode(repack(message), CTX)
        message[0] = 2  # the same layout claiming version 2 is simply malformed
        assert_malformed(repack(message))


def test_version_is_checked_first() -> None:
    def set_version(version: Any, extra: bool = False) -> bytes:
        def change(e: list[Any]) -> None:
            e[0] = version
            if extra:
                e.append("a v3 field")

        return mutated(MessageType.READY, change)

    for data in (
        set_version(1),
        set_version(3),
        set_version(0),
        set_version(3, extra=True),
        repack([3]),
        repack([1, "x"]),
    ):
        with pytest.raises(UnsupportedVersionError):
            serde.decode(data, CTX)
        with pytest.raises(UnsupportedVersionError):
            serde.peek_header(data)
    for version in ("2", True, 2.0, None, b"\x02", -1):
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
    upload_body = elements_of(MessageType.UPLOAD)[6]
    assert_malformed(mutated(MessageType.RESPONSE, lambda e: e.__setitem__(6, upload_body)))


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
    # a proof as a map
    assert_malformed(mutated(MessageType.RESPONSE, body_setter(1, {"t1": b"", "t2": b"", "z": b""})), "maps")
    assert_malformed(mutated(MessageType.ENVELOPE, body_setter(4, {})), "maps")
    assert_malformed(mutated(MessageType.ENVELOPE, body_setter(5, {})), "maps")
    assert_malformed(mutated(MessageType.ENVELOPE, body_setter(0, {"member": "d"}, 5)), "maps")


def test_ext_types_are_refused() -> None:
    ext = msgpack.ExtType(1, b"\x00" * 8)
    assert_malformed(mutated(MessageType.READY, lambda e: e.__setitem__(2, ext)), "scalar")
    assert_malformed(mutated(MessageType.RESPONSE, body_setter(2, ext, 1)), "scalar")
    assert_malformed(mutated(MessageType.ENVELOPE, body_setter(0, ext, 4)), "scalar")


def test_hostile_array_headers_are_refused() -> None:
    """Array headers that claim far more elements than the message holds are refused at once."""
    huge = b"\xdd" + struct.pack(">I", 2**32 - 1)
    assert_malformed(huge + b"\x01" * 10)
    head = wire_of(MessageType.READY)[: -(1 + 66)]  # up to (not incl.) the empty body array
    assert head.endswith(b"\xabclient-0001")
    assert_malformed(head + huge * 1000, "longer than the message")
    assert_malformed(head + b"\xdc\xff\xff" + b"\x90" * 100, "longer than the message")
    # a 10^4-deep nest of arrays where a scalar is expected
    assert_malformed(b"\x98\x02\xa5ready" + b"\x91" * 10_000)
    # an evidence list claiming 2^32 - 1 items
    envelope = wire_of(MessageType.ENVELOPE)
    evidence = repack([b"raw response 1", b""])
    assert evidence in envelope
    assert_malformed(envelope.replace(evidence, huge + evidence[1:]))
    # a first-evidence list claiming 2^32 - 1 signed first components
    first_evidence = repack(elements_of(MessageType.ENVELOPE)[6][5])
    assert first_evidence[:1] == b"\x91" and first_evidence in envelope
    assert_malformed(envelope.replace(first_evidence, huge + first_evidence[1:]), "longer than the message")


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
    # the version as uint8 (cc 02)
    assert_malformed(b"\x98\xcc\x02" + wire[2:], "non-canonical")
    # federation "plant-7" as str8 (d9 07) instead of fixstr (a7)
    assert_malformed(wire.replace(b"\xa7plant-7", b"\xd9\x07plant-7"), "non-canonical")
    # empty body as array16 (dc 00 00) instead of the fixarray 90
    assert_malformed(wire.replace(b"\x90\xc4\x40", b"\xdc\x00\x00\xc4\x40"), "non-canonical")
    # the outer array as array16
    assert_malformed(b"\xdc\x00\x08" + wire[1:], "non-canonical")
    # the signature as bin16
    assert_malformed(wire.replace(b"\x90\xc4\x40", b"\x90\xc5\x00\x40"), "non-canonical")
    announce = wire_of(MessageType.ANNOUNCE)
    float64 = b"\xcb" + struct.pack(">d", 5.0)
    assert float64 in announce
    assert_malformed(announce.replace(float64, b"\xca" + struct.pack(">f", 5.0)), "non-canonical")
    # a 65-byte proof response as bin16 (c5 00 41) instead of bin8 (c4 41)
    response = wire_of(MessageType.RESPONSE)
    z = example_body(MessageType.RESPONSE).proof.response.to_bytes(Z, "big")  # type: ignore[union-attr]
    assert b"\xc4\x41" + z in response
    assert_malformed(response.replace(b"\xc4\x41" + z, b"\xc5\x00\x41" + z), "non-canonical")
    # the proof array as array16
    assert_malformed(response.replace(b"\x93\xc4\x40", b"\xdc\x00\x03\xc4\x40"), "non-canonical")


# -- body fields: types, widths, bools, floats, strings --------------------------------------------


@pytest.mark.parametrize("size", [0, 63, 65, 81, 128])
def test_elements_must_have_the_exact_width(size: int) -> None:
    for mtype, path in ELEMENT_PATHS:
        assert_malformed(mutated(mtype, at(path, b"\x01" * size)), "64 bytes")


@pytest.mark.parametrize("value", [5, -5, "00" * 64, None, True, [b"\x01" * 64]])
def test_elements_must_be_bin(value: Any) -> None:
    assert_malformed(mutated(MessageType.RESPONSE, body_setter(0, value)))
    assert_malformed(mutated(MessageType.RESPONSE, body_setter(0, value, 1)))


# -- proofs (v2) -----------------------------------------------------------------------------------


# 81 bytes: the width of v2's first (256-bit challenge) responses, refused now.
@pytest.mark.parametrize("size", [0, 1, 63, 64, 66, 80, 81, 128])
def test_proof_responses_are_exactly_65_bytes(size: int) -> None:
    for mtype, path in RESPONSE_PATHS:
        assert_malformed(mutated(mtype, at(path, b"\x00" * size)), "65 bytes")


@pytest.mark.parametrize(
    "top",
    [b"\x02", b"\x03", b"\x80", b"\xff"],  # 65 bytes with a top byte >= 2: z >= 2^513
)
def test_proof_responses_of_2_513_or_more_are_refused(top: bytes) -> None:
    for mtype, path in RESPONSE_PATHS:
        assert_malformed(mutated(mtype, at(path, top + b"\x00" * (Z - 1))), "2\\^513")


@pytest.mark.parametrize(
    "raw", [b"\x01" + b"\xff" * 64, b"\x01" + b"\x00" * 64, b"\x00" * 65, b"\x00" * 64 + b"\x01"]
)
def test_proof_responses_below_2_513_decode_exactly(raw: bytes) -> None:
    msg = serde.decode(mutated(MessageType.RESPONSE, at((1, 2), raw)), CTX)
    assert isinstance(msg.body, Response)
    assert msg.body.proof.response == int.from_bytes(raw, "big") < 2**513
    msg2 = serde.decode(mutated(MessageType.UPLOAD, at((4, 1), raw)), CTX)
    assert isinstance(msg2.body, Upload)
    assert msg2.body.first_proof.response == int.from_bytes(raw, "big")


@pytest.mark.parametrize("value", [5, None, True, "00" * 65, [b"\x00" * 65]])
def test_proof_responses_must_be_bin(value: Any) -> None:
    for mtype, path in RESPONSE_PATHS:
        assert_malformed(mutated(mtype, at(path, value)))


def test_proofs_are_arrays_of_the_exact_length() -> None:
    for mtype, path, size in PROOF_PATHS:

        def extra(e: list[Any], path: tuple[int, ...] = path) -> None:
            target = e[6]
            for step in path:
                target = target[step]
            target.append(b"\x00" * Z)

        def short(e: list[Any], path: tuple[int, ...] = path) -> None:
            target = e[6]
            for step in path:
                target = target[step]
            target.pop()

        assert_malformed(mutated(mtype, extra), f"expected {size} elements")
        assert_malformed(mutated(mtype, short), f"expected {size} elements")
        assert_malformed(mutated(mtype, at(path, b"\x00" * (E + Z))), "array")
        assert_malformed(mutated(mtype, at(path, None)), "array")


def test_a_dlog_proof_where_an_equality_proof_belongs_is_malformed() -> None:
    dlog = elements_of(MessageType.ENROLL)[6][3]
    assert_malformed(mutated(MessageType.RESPONSE, body_setter(1, dlog)), "3 elements")
    equality = elements_of(MessageType.RESPONSE)[6][1]
    assert_malformed(mutated(MessageType.ENROLL, body_setter(3, equality)), "2 elements")


# -- ciphertexts and digests (v2) ------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 64, 127, 129, 256])
def test_the_key_segment_is_exactly_one_ciphertext(size: int) -> None:
    assert_malformed(mutated(MessageType.UPLOAD, body_setter(0, b"\x01" * size)), "128 bytes")


@pytest.mark.parametrize("value", [5, None, "00" * 128, [b"\x00" * 128]])
def test_the_key_segment_must_be_bin(value: Any) -> None:
    assert_malformed(mutated(MessageType.UPLOAD, body_setter(0, value)), "key_segment")


def test_the_key_segment_decodes_to_a_fixed_width_integer() -> None:
    for value in (0, 1, 2**1023, 2**1024 - 1):
        msg = serde.decode(mutated(MessageType.UPLOAD, body_setter(0, value.to_bytes(C, "big"))), CTX)
        assert msg.body.key_segment == value  # type: ignore[union-attr]


@pytest.mark.parametrize("size", [0, 1, 127, 129, 255, 3 * 128 + 1])
def test_segment_blob_must_be_a_positive_multiple_of_the_ciphertext_width(size: int) -> None:
    assert_malformed(mutated(MessageType.UPLOAD, body_setter(1, b"\x01" * size)), "segment")


def test_segment_blob_decodes_to_fixed_width_integers() -> None:
    blob = (1).to_bytes(128, "big") + (2**1023).to_bytes(128, "big") + bytes(128)
    msg = serde.decode(mutated(MessageType.UPLOAD, body_setter(1, blob)), CTX)
    assert msg.body.segments == (1, 2**1023, 0)  # type: ignore[union-attr]


@pytest.mark.parametrize("value", [b"", b"\x00" * 31, b"\x00" * 33, b"\x00" * 64, "00" * 32, None, 5])
def test_challenge_digest_is_exactly_32_bytes(value: Any) -> None:
    assert_malformed(mutated(MessageType.RESPONSE, body_setter(2, value)), "challenge_digest")


def test_challenge_digest_decodes_as_given() -> None:
    digest = bytes(range(32))
    msg = serde.decode(mutated(MessageType.RESPONSE, body_setter(2, digest)), CTX)
    assert msg.body.challenge_digest == digest  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "value", [b"", b"\x00" * 31, b"\x00" * 33, b"\x00" * 64, "00" * 32, None, 5, [b"\x00" * 32]]
)
def test_context_digest_is_exactly_32_bytes(value: Any) -> None:
    assert elements_of(MessageType.UPLOAD)[6][6] == b"\x08" * 32
    assert_malformed(mutated(MessageType.UPLOAD, body_setter(6, value)), "context_digest")


def test_context_digest_decodes_as_given() -> None:
    digest = bytes(range(32))
    msg = serde.decode(mutated(MessageType.UPLOAD, body_setter(6, digest)), CTX)
    assert isinstance(msg.body, Upload) and msg.body.context_digest == digest


def test_an_upload_without_the_context_digest_is_malformed() -> None:
    """Six fields was the shape of UPLOAD before the context digest: refused, not defaulted."""
    assert_malformed(mutated(MessageType.UPLOAD, lambda e: e[6].pop()), "7 elements")
    assert_malformed(mutated(MessageType.UPLOAD, lambda e: e[6].append(b"\x08" * 32)), "7 elements")


# -- evidence (v2) ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "evidence",
    [
        [],
        [b""],
        [b"x" * 300],
        [b"a", b"a"],
        [wire_of(MessageType.RESPONSE)] * 3,
        # the wire does not look inside: a client counts only RESPONSE messages (section 5.4)
        [wire_of(MessageType.UPLOAD), wire_of(MessageType.RESPONSE)],
    ],
)
def test_evidence_is_a_list_of_bytes(evidence: list[bytes]) -> None:
    msg = serde.decode(mutated(MessageType.ENVELOPE, body_setter(4, evidence)), CTX)
    assert msg.body.evidence == tuple(evidence)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "evidence", [None, b"raw", "raw", 5, [None], ["raw"], [5], [[b"raw"]], [b"ok", True]]
)
def test_evidence_of_another_shape_is_malformed(evidence: Any) -> None:
    assert_malformed(mutated(MessageType.ENVELOPE, body_setter(4, evidence)), "evidence")


def test_an_envelope_without_evidence_is_malformed() -> None:
    """v2 envelopes always carry both evidence fields (possibly empty): five fields was the shape
    before first-component evidence, four was v1's."""
    assert_malformed(mutated(MessageType.ENVELOPE, lambda e: e[6].pop()), "6 elements")
    assert_malformed(mutated(MessageType.ENVELOPE, lambda e: (e[6].pop(), e[6].pop())), "6 elements")
    assert_malformed(mutated(MessageType.ENVELOPE, lambda e: e[6].append([])), "6 elements")


def _first(member: str, value: bytes = b"\x01" * E, sig: bytes = SIG) -> list[Any]:
    """A FirstComponent in its generic form: [member, A, [t, z], signature]."""
    return [member, value, [b"\x02" * E, b"\x00" * Z], sig]


def test_first_evidence_is_the_last_envelope_field() -> None:
    fields = elements_of(MessageType.ENVELOPE)[6]
    assert len(fields) == 6
    assert fields[5] == [["d", fields[5][0][1], fields[5][0][2], b"\x09" * 64]]
    assert len(fields[5][0][1]) == E and [len(x) for x in fields[5][0][2]] == [E, Z]


@pytest.mark.parametrize(
    "first_evidence",
    [
        [],
        [_first("a")],
        [_first("b"), _first("a")],  # any order: unlike members, the list need not be sorted
        [_first("zz", b"\x00" * E), _first("a-1", b"\xff" * E)],
    ],
)
def test_first_evidence_is_a_list_of_first_components(first_evidence: list[Any]) -> None:
    msg = serde.decode(mutated(MessageType.ENVELOPE, body_setter(5, first_evidence)), CTX)
    assert isinstance(msg.body, MemberEnvelope)
    assert [f.member for f in msg.body.first_evidence] == [f[0] for f in first_evidence]
    for decoded, raw in zip(msg.body.first_evidence, first_evidence, strict=True):
        assert decoded == FirstComponent(
            raw[0],
            int.from_bytes(raw[1], "big"),
            DlogProof(int.from_bytes(raw[2][0], "big"), int.from_bytes(raw[2][1], "big")),
            raw[3],
        )


@pytest.mark.parametrize(
    ("first_evidence", "match"),
    [
        (None, "first_evidence"),
        (b"raw", "first_evidence"),
        ([None], "first_evidence"),
        ([b"raw upload"], "first_evidence"),  # a struct, not a raw message
        ([_first("a"), _first("a")], "duplicate"),
        ([_first("a"), _first("b"), _first("a")], "duplicate"),
        ([_first("a")[:3]], "4 elements"),
        ([[*_first("a"), b""]], "4 elements"),
        ([_first("bad id")], "id"),
        ([_first("a", b"\x01" * (E - 1))], "64 bytes"),
        ([_first("a", b"\x01" * (E + 1))], "64 bytes"),
        ([_first("a", sig=b"\x00" * 63)], "64 bytes"),
        ([["a", b"\x01" * E, [b"\x02" * E, b"\x02" + b"\x00" * (Z - 1)], SIG]], "2\\^513"),
        ([["a", b"\x01" * E, [b"\x02" * E, b"\x00" * Z, b"\x00" * Z], SIG]], "2 elements"),
    ],
)
def test_first_evidence_of_another_shape_is_malformed(first_evidence: Any, match: str) -> None:
    assert_malformed(mutated(MessageType.ENVELOPE, body_setter(5, first_evidence)), match)


def test_evidence_and_first_evidence_do_not_stand_in_for_each_other() -> None:
    """Raw messages where first components belong, or first components where raw bytes belong."""
    assert_malformed(mutated(MessageType.ENVELOPE, body_setter(5, [wire_of(MessageType.UPLOAD)])))
    assert_malformed(mutated(MessageType.ENVELOPE, body_setter(4, [_first("a")])), "evidence")


# -- other body fields -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 31, 33])
def test_verify_keys_must_be_32_bytes(size: int) -> None:
    assert_malformed(mutated(MessageType.ENROLL, body_setter(2, b"\x00" * size)), "32 bytes")
    assert_malformed(mutated(MessageType.KEYS, body_setter(2, b"\x00" * size, 0, 0)), "32 bytes")
    assert_malformed(mutated(MessageType.PARAMS, body_setter(4, b"\x00" * size, 5)), "32 bytes")
    assert_malformed(mutated(MessageType.REGISTER_AGGREGATOR, body_setter(4, b"\x00" * size, 1)), "32 bytes")


@pytest.mark.parametrize("value", [0, 1, None, "true", 1.0])
def test_bools_must_be_msgpack_bools(value: Any) -> None:
    assert_malformed(mutated(MessageType.KEYS, body_setter(3, value, 0, 0)), "bool")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 5, True, "5.0", None])
def test_floats_must_be_finite_float64(value: Any) -> None:
    assert_malformed(mutated(MessageType.ANNOUNCE, body_setter(2, value)), "float")
    assert_malformed(mutated(MessageType.PARAMS, body_setter(2, value)), "float")


def test_nan_with_any_payload_is_refused() -> None:
    announce = wire_of(MessageType.ANNOUNCE)
    float64 = b"\xcb" + struct.pack(">d", 5.0)
    for nan in (
        b"\x7f\xf8\x00\x00\x00\x00\x00\x00",
        b"\xff\xf8\x00\x00\x00\x00\x00\x01",
        b"\x7f\xf0\x00\x00\x00\x00\x00\x01",
    ):
        assert_malformed(announce.replace(float64, b"\xcb" + nan), "float|non-canonical")


@pytest.mark.parametrize("value", [-1, 2**63, True, 1.5, None])
def test_small_ints_must_be_non_negative_ints(value: Any) -> None:
    assert_malformed(mutated(MessageType.ANNOUNCE, body_setter(1, value)))
    assert_malformed(mutated(MessageType.ENVELOPE, body_setter(2, value)))
    assert_malformed(mutated(MessageType.PARAMS, body_setter(1, value)))


def test_text_bounds() -> None:
    ok = mutated(MessageType.ERROR, body_setter(1, "\u00e9" * 4096))
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
    ready = wire_of(MessageType.READY)
    assert_malformed(ready.replace(b"\xa7plant-7", b"\xa7plant\xc3("))  # a broken 2-byte sequence
    assert_malformed(ready.replace(b"\xa7plant-7", b"\xa7plan\xed\xa0\x80"))  # an encoded surrogate


@pytest.mark.parametrize("value", ["", "has space", "x" * 257, "caf\u00e9", 5, None, b"tok"])
def test_tokens_must_be_printable_ascii(value: Any) -> None:
    assert_malformed(mutated(MessageType.ENROLL, body_setter(0, value)), "token")
    assert_malformed(mutated(MessageType.REVOKE, body_setter(0, value)), "token")
    assert_malformed(mutated(MessageType.REGISTER_AGGREGATOR, body_setter(0, value)), "token")


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
        (["a-1", "a.1", "a_1"], None),  # "-" (2d) < "." (2e) < "_" (5f)
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
    assert_malformed(mutated(MessageType.CHALLENGE, body_setter(3, b"\x00" * 63, 1, 0)), "64 bytes")
    # unlike the envelope's member list, the firsts need not be sorted
    swapped = mutated(MessageType.CHALLENGE, lambda e: e[6][1].reverse())
    assert [f.member for f in serde.decode(swapped, CTX).body.firsts] == ["b", "a"]  # type: ignore[union-attr]


def test_other_id_lists_must_be_unique() -> None:
    assert_malformed(mutated(MessageType.GET_KEYS, body_setter(0, ["a", "a"])), "duplicate")
    assert_malformed(mutated(MessageType.RESULT, body_setter(1, ["a", "b", "a"])), "duplicate")
    assert_malformed(mutated(MessageType.KEYS, lambda e: e[6][0].append(e[6][0][0])), "duplicate")


# -- PARAMS ----------------------------------------------------------------------------------------


def test_params_modulus_is_minimal_and_gives_the_widths() -> None:
    assert_malformed(mutated(MessageType.PARAMS, body_setter(0, b"\x00" + b"\x01" * 64)), "minimal")
    assert_malformed(mutated(MessageType.PARAMS, body_setter(0, b"")), "minimal")
    assert_malformed(mutated(MessageType.PARAMS, body_setter(0, b"\x01" * 1025)), "minimal")
    assert_malformed(mutated(MessageType.PARAMS, body_setter(0, b"\x01")), "modulus")
    assert_malformed(mutated(MessageType.PARAMS, body_setter(0, b"\x02")), "modulus")
    assert_malformed(mutated(MessageType.PARAMS, body_setter(0, 12345)), "modulus")
    # a 65-byte modulus makes the aggregator's 64-byte elements too short
    assert_malformed(mutated(MessageType.PARAMS, body_setter(0, b"\x01" * 65)), "65 bytes")
    assert_malformed(mutated(MessageType.PARAMS, body_setter(0, b"\x01" * 63, 5)), "64 bytes")  # beta
    assert_malformed(
        mutated(MessageType.PARAMS, body_setter(0, b"\x01" * 63, 5, 3)), "64 bytes"
    )  # commitment
    # without an aggregator the modulus alone decides; a 3-byte one is fine for the wire
    data = mutated(
        MessageType.PARAMS, lambda e: (body_setter(5, None)(e), body_setter(0, b"\x01\x00\x01")(e))
    )
    assert serde.decode(data, None).body.modulus == 65537  # type: ignore[union-attr]
    # no aggregator yet: nil
    assert serde.decode(mutated(MessageType.PARAMS, body_setter(5, None)), None).body.aggregator is None  # type: ignore[union-attr]


def test_params_in_the_v1_layout_is_malformed() -> None:
    """v1 sent [p, q, g, frac_bits, clip, max_clients, min_online, aggregator]: 8 fields, not 6."""

    def v1_layout(e: list[Any]) -> None:
        body = e[6]
        e[6] = [body[0], b"\x01" * 16, b"\x02" * E, *body[1:5], None]

    assert_malformed(mutated(MessageType.PARAMS, v1_layout), "6 elements")


def test_aggregator_info_has_five_fields() -> None:
    assert_malformed(mutated(MessageType.PARAMS, lambda e: e[6][5].pop()), "5 elements")
    v1_info = [[b"\x01" * E, b"\x02" * E], b"\x03" * E, b"\x04" * 32]  # v1: [betas, delivery, verify_key]
    assert_malformed(mutated(MessageType.PARAMS, body_setter(5, v1_info)), "5 elements")
    assert_malformed(mutated(MessageType.REGISTER_AGGREGATOR, body_setter(1, v1_info)), "5 elements")


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
    _decode_or_wire_error(repack([2, "upload", "f", 0, 0, "s", value, SIG]))
    _decode_or_wire_error(repack([2, "response", "f", 0, 0, "s", value, SIG]))
    envelope: list[Any] = [["a"], b"\x01" * E, 2, b""]
    _decode_or_wire_error(repack([2, "envelope", "f", 0, 0, "s", [*envelope, value, []], SIG]))
    _decode_or_wire_error(repack([2, "envelope", "f", 0, 0, "s", [*envelope, [], value], SIG]))


def test_arrays_longer_than_the_limit_are_refused() -> None:
    ids = ["a"] * (MAX_ARRAY_ITEMS + 1)  # fits in the byte limit, but not in the array limit
    assert_malformed(mutated(MessageType.GET_KEYS, body_setter(0, ids)), "more than")
    evidence = [b""] * (MAX_ARRAY_ITEMS + 1)
    assert_malformed(mutated(MessageType.ENVELOPE, body_setter(4, evidence)), "more than")


def test_bytes_like_input_is_accepted() -> None:
    wire = wire_of(MessageType.UPLOAD)
    assert (
        serde.decode(bytearray(wire), CTX) == serde.decode(memoryview(wire), CTX) == serde.decode(wire, CTX)
    )
    with pytest.raises(OversizeMessageError):
        serde.decode(memoryview(wire), CTX, max_bytes=len(wire) - 1)
