"""Round trips, canonical bytes, signatures and first-component signatures of protocol v1."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.crypto.group import GroupParams, insecure_test_group
from shared.crypto.signing import SigningKeyPair
from shared.errors import MalformedMessageError, OversizeMessageError, SignatureError, UnsupportedVersionError
from shared.wire import serde
from shared.wire.messages import (
    AggregatorInfo,
    EnrollRequest,
    Header,
    MemberEnvelope,
    MessageType,
    ParamsReply,
    Ready,
    RegisterAggregator,
    Response,
    RevokeRequest,
    Upload,
)
from shared.wire.serde import WireContext
from tests.unit.wire.strategies import TEST_KEY, bodies, example_body, example_header, headers

CTX = WireContext.from_group(insecure_test_group())  # 512-bit p: 64-byte elements, 128-byte ciphertexts
OTHER_KEY = SigningKeyPair.generate()

# docs/PROTOCOL.md, "Worked example": READY from client-0001 in federation plant-7, round 3,
# attempt 0, signed with the RFC 8032 TEST 1 key.
READY_KAT = bytes.fromhex(
    "9801a57265616479a7706c616e742d370300ab636c69656e742d3030303190c440"
    "6ade0be6db3973fdab3563c094e66fe0b7987b7544f40fa3d22d049ddde83e88f7"
    "1385c033680d24844a479de38587126481ae7757e20a63c9438a117e946a08"
)
READY_SIGNING_BYTES = bytes.fromhex(
    "666564636173742f76312f6d7367009701a57265616479a7706c616e742d370300ab636c69656e742d3030303190"
)


def test_the_worked_example_in_the_protocol_document_is_the_known_answer() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "PROTOCOL.md").read_text()
    squashed = "".join(doc.split())
    assert READY_KAT.hex() in squashed
    assert READY_SIGNING_BYTES.hex() in squashed


def test_context_from_group() -> None:
    assert (CTX.element_bytes, CTX.ciphertext_bytes) == (64, 128)
    assert WireContext.from_modulus(2**2047 + 1) == WireContext(256, 512)


def test_every_message_type_has_a_body_type() -> None:
    assert set(serde.BODY_TYPES) == set(MessageType)
    assert len(set(serde.BODY_TYPES.values())) == len(MessageType)


@pytest.mark.parametrize("mtype", list(MessageType))
@given(data=st.data())
def test_round_trip_every_type(mtype: MessageType, data: st.DataObject) -> None:
    header = data.draw(headers(mtype))
    body = data.draw(bodies(mtype, CTX))
    wire = serde.encode(header, body, TEST_KEY, CTX)
    msg = serde.decode(wire, CTX)
    assert msg.header == header and msg.body == body
    assert serde.peek_header(wire) == header
    # canonical: one byte form, re-encoding reproduces it, the signature covers the first 7 elements
    assert serde.encode(msg.header, msg.body, TEST_KEY, CTX) == wire
    assert serde.signing_bytes(msg, CTX) == serde.SIGNING_DOMAIN + b"\x97" + wire[1 : -(2 + 64)]
    serde.verify(msg, TEST_KEY.verify_key, CTX)
    with pytest.raises(SignatureError):
        serde.verify(msg, OTHER_KEY.verify_key, CTX)


@pytest.mark.parametrize("mtype", list(MessageType))
def test_any_bit_flip_is_detected(mtype: MessageType) -> None:
    """Flipping any bit anywhere either makes the message undecodable or breaks the signature."""
    wire = serde.encode(example_header(mtype), example_body(mtype), TEST_KEY, CTX)
    step = max(1, len(wire) * 8 // 400)  # a few hundred positions per type keeps this fast
    for bit in range(0, len(wire) * 8, step):
        flipped = bytearray(wire)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            msg = serde.decode(bytes(flipped), CTX)
        except (MalformedMessageError, UnsupportedVersionError):
            continue
        with pytest.raises(SignatureError):
            serde.verify(msg, TEST_KEY.verify_key, CTX)


def test_known_answer_ready() -> None:
    header = Header(MessageType.READY, "plant-7", 3, 0, "client-0001")
    wire = serde.encode(header, Ready(), TEST_KEY, None)
    assert wire == READY_KAT
    msg = serde.decode(READY_KAT, None)
    assert msg.header == header and msg.body == Ready()
    assert serde.signing_bytes(msg, None) == READY_SIGNING_BYTES
    serde.verify(msg, TEST_KEY.verify_key, None)


def test_messages_without_big_integers_need_no_context() -> None:
    for mtype in (MessageType.GET_PARAMS, MessageType.ERROR, MessageType.ANNOUNCE, MessageType.RESULT):
        wire = serde.encode(example_header(mtype), example_body(mtype), TEST_KEY, None)
        assert serde.decode(wire, None) == serde.decode(wire, CTX)


@pytest.mark.parametrize("mtype", [MessageType.UPLOAD, MessageType.RESPONSE, MessageType.ENROLL])
def test_messages_with_big_integers_need_a_context(mtype: MessageType) -> None:
    with pytest.raises(MalformedMessageError, match="WireContext"):
        serde.encode(example_header(mtype), example_body(mtype), TEST_KEY, None)
    wire = serde.encode(example_header(mtype), example_body(mtype), TEST_KEY, CTX)
    with pytest.raises(MalformedMessageError, match="WireContext"):
        serde.decode(wire, None)


def test_params_carries_its_own_widths() -> None:
    body = example_body(MessageType.PARAMS)
    assert isinstance(body, ParamsReply)
    wire = serde.encode(example_header(MessageType.PARAMS), body, TEST_KEY, None)
    other = WireContext(3, 5)  # a context passed in is ignored: PARAMS is how the group is learned
    assert serde.decode(wire, None).body == body == serde.decode(wire, other).body
    assert serde.encode(example_header(MessageType.PARAMS), body, TEST_KEY, other) == wire
    no_aggregator = dataclasses.replace(body, aggregator=None)
    wire = serde.encode(example_header(MessageType.PARAMS), no_aggregator, TEST_KEY, None)
    assert serde.decode(wire, None).body == no_aggregator


def test_upload_segments_are_one_fixed_width_blob(group_2048: GroupParams) -> None:
    """A production-sized context: 256-byte elements, 512-byte ciphertexts, one bin for all segments."""
    ctx = WireContext.from_group(group_2048)
    assert (ctx.element_bytes, ctx.ciphertext_bytes) == (256, 512)
    segments = (int(group_2048.p2) - 1, 1, 0, 2**4000)
    body = Upload(segments, int(group_2048.g), int(group_2048.p) - 1, b"\x07" * 64)
    wire = serde.encode(example_header(MessageType.UPLOAD), body, TEST_KEY, ctx)
    blob = len(segments) * 512  # 2048 bytes: a bin16 (c5 + 2-byte length)
    header_fields = len(b"\x01" + b"\xa6upload" + b"\xa7plant-7" + b"\x03" + b"\x01" + b"\xabclient-0001")
    body_bytes = 1 + (3 + blob) + 2 * (3 + 256) + (2 + 64)  # fixarray, segments, first, second, signature
    assert len(wire) == 1 + header_fields + body_bytes + (2 + 64)
    assert bytes.fromhex("94c50800") + (int(group_2048.p2) - 1).to_bytes(512, "big") in wire
    msg = serde.decode(wire, ctx)
    assert msg.body == body
    serde.verify(msg, TEST_KEY.verify_key, ctx)
    with pytest.raises(MalformedMessageError):  # the small context's widths do not fit
        serde.decode(wire, CTX)


def test_a_large_upload_stays_far_below_the_default_limit(group_2048: GroupParams) -> None:
    ctx = WireContext.from_group(group_2048)
    n_segments = 1000  # ~70,000 parameters at the README's default packing
    body = Upload(tuple(range(n_segments)), 2, 3, b"\x00" * 64)
    wire = serde.encode(example_header(MessageType.UPLOAD), body, TEST_KEY, ctx)
    assert n_segments * 512 < len(wire) < n_segments * 512 + 1000 < serde.DEFAULT_MAX_MESSAGE_BYTES
    assert serde.decode(wire, ctx).body == body


# -- encoder refusals ------------------------------------------------------------------------------


def test_encode_refuses_a_body_of_the_wrong_type() -> None:
    with pytest.raises(MalformedMessageError, match="carries a Ready"):
        serde.encode(example_header(MessageType.READY), Response(5), TEST_KEY, CTX)


def test_encode_refuses_another_version() -> None:
    header = dataclasses.replace(example_header(MessageType.READY), version=2)
    with pytest.raises(UnsupportedVersionError):
        serde.encode(header, Ready(), TEST_KEY, CTX)


@pytest.mark.parametrize("value", [-1, 2**512, True, 1.0, "5", None])
def test_encode_refuses_elements_that_do_not_fit(value: object) -> None:
    with pytest.raises(MalformedMessageError):
        serde.encode(example_header(MessageType.RESPONSE), Response(value), TEST_KEY, CTX)  # type: ignore[arg-type]


def test_encode_accepts_gmpy2_integers() -> None:
    group = insecure_test_group()
    wire = serde.encode(example_header(MessageType.RESPONSE), Response(group.g), TEST_KEY, CTX)
    assert serde.decode(wire, CTX).body == Response(int(group.g))


@pytest.mark.parametrize(
    "body",
    [
        MemberEnvelope(("b", "a"), 5, 2, b""),
        MemberEnvelope(("a", "a"), 5, 2, b""),
        MemberEnvelope((), 5, 2, b""),
        MemberEnvelope(("a", "bad id"), 5, 2, b""),
        MemberEnvelope(("a",), 5, -1, b""),
        MemberEnvelope(("a",), 5, True, b""),
        Upload((), 1, 2, b"\x00" * 64),
        Upload((2**1024,), 1, 2, b"\x00" * 64),
        Upload((1,), 1, 2, b"\x00" * 63),
        EnrollRequest("has space", 5, b"\x00" * 32, 5, 5),
        EnrollRequest("tok", 5, b"\x00" * 31, 5, 5),
    ],
)
def test_encode_refuses_what_decode_would_refuse(body: object) -> None:
    mtype = MessageType.ENVELOPE if isinstance(body, MemberEnvelope) else MessageType.UPLOAD
    if isinstance(body, EnrollRequest):
        mtype = MessageType.ENROLL
    with pytest.raises(MalformedMessageError):
        serde.encode(example_header(mtype), body, TEST_KEY, CTX)  # type: ignore[arg-type]


def test_encode_refuses_oversize() -> None:
    body = example_body(MessageType.UPLOAD)
    with pytest.raises(OversizeMessageError):
        serde.encode(example_header(MessageType.UPLOAD), body, TEST_KEY, CTX, max_bytes=100)


# -- first components ------------------------------------------------------------------------------


def test_first_component_signature() -> None:
    args = ("plant-7", 3, 1, "client-0001", 2**500 + 1)
    signature = serde.sign_first(TEST_KEY, *args, CTX)
    serde.verify_first(TEST_KEY.verify_key, signature, *args, CTX)
    expected = serde.FIRST_DOMAIN + bytes.fromhex("95a7706c616e742d370301ab636c69656e742d30303031c440")
    assert serde.first_component_bytes(*args, CTX) == expected + (2**500 + 1).to_bytes(64, "big")
    with pytest.raises(SignatureError):
        serde.verify_first(OTHER_KEY.verify_key, signature, *args, CTX)
    variants = [
        ("plant-8", 3, 1, "client-0001", 2**500 + 1),
        ("plant-7", 4, 1, "client-0001", 2**500 + 1),
        ("plant-7", 3, 2, "client-0001", 2**500 + 1),
        ("plant-7", 3, 1, "client-0002", 2**500 + 1),
        ("plant-7", 3, 1, "client-0001", 2**500 + 2),
    ]
    for other in variants:
        with pytest.raises(SignatureError):
            serde.verify_first(TEST_KEY.verify_key, signature, *other, CTX)


def test_message_and_first_signatures_are_domain_separated() -> None:
    """A message signature is never a valid first-component signature, and vice versa."""
    args = ("plant-7", 3, 1, "client-0001", 5)
    first = serde.first_component_bytes(*args, CTX)
    assert first.startswith(serde.FIRST_DOMAIN) and not first.startswith(serde.SIGNING_DOMAIN)
    msg_signature = TEST_KEY.sign(serde.SIGNING_DOMAIN + first[len(serde.FIRST_DOMAIN) :])
    with pytest.raises(SignatureError):
        serde.verify_first(TEST_KEY.verify_key, msg_signature, *args, CTX)


@pytest.mark.parametrize(
    "args",
    [
        ("bad fed", 0, 0, "c", 5),
        ("f", -1, 0, "c", 5),
        ("f", 0, True, "c", 5),
        ("f", 0, 0, "", 5),
        ("f", 0, 0, "c", -5),
        ("f", 0, 0, "c", 2**512),
    ],
)
def test_first_component_refuses_malformed_input(args: tuple[Any, Any, Any, Any, Any]) -> None:
    with pytest.raises(MalformedMessageError):
        serde.first_component_bytes(*args, CTX)


# -- redaction -------------------------------------------------------------------------------------


def test_reprs_never_show_tokens_or_keys() -> None:
    secret = "s3cret-token-value"
    info = AggregatorInfo((5,), 6, b"\x00" * 32)
    for mtype, body in (
        (MessageType.ENROLL, EnrollRequest(secret, 5, b"\x00" * 32, 5, 5)),
        (MessageType.REGISTER_AGGREGATOR, RegisterAggregator(secret, info)),
        (MessageType.REVOKE, RevokeRequest(secret, "client-1")),
    ):
        msg = serde.decode(serde.encode(example_header(mtype), body, TEST_KEY, CTX), CTX)
        for text in (repr(msg), str(msg), repr(msg.body)):
            assert secret not in text
            assert msg.signature.hex() not in text
    for text in (repr(TEST_KEY), repr(CTX)):
        assert TEST_KEY.to_secret_dict()["secret"] not in text


def test_errors_never_quote_a_token() -> None:
    secret = "s3cret token"  # the space makes it invalid
    with pytest.raises(MalformedMessageError) as info:
        serde.encode(example_header(MessageType.REVOKE), RevokeRequest(secret, "c"), TEST_KEY, CTX)
    assert "s3cret" not in str(info.value)
