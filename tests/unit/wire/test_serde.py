"""Round trips, canonical bytes, signatures and first-component signatures of protocol v2."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from gmpy2 import mpz
from hypothesis import given
from hypothesis import strategies as st

from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.proofs import RESPONSE_BITS, DlogProof, EqualityProof
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.errors import (
    MalformedMessageError,
    OversizeMessageError,
    SignatureError,
    UnsupportedVersionError,
)
from fedcast.shared.wire import serde
from fedcast.shared.wire.messages import (
    PROTOCOL_VERSION,
    AggregatorInfo,
    Challenge,
    EnrollRequest,
    FirstComponent,
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
from fedcast.shared.wire.serde import WireContext
from tests.unit.wire.strategies import (
    CTX,
    GROUP,
    RESPONSE_BYTES,
    TEST_KEY,
    bodies,
    example_body,
    example_header,
    headers,
    unpack_trusted,
)

OTHER_KEY = SigningKeyPair.generate()
PROOF = DlogProof(5, 2**512 + 1)
EQ_PROOF = EqualityProof(5, 6, 7)
DIGEST = b"\x09" * 32

# READY from client-0001 in federation plant-7, round 3, attempt 0, signed with the RFC 8032
# TEST 1 key: the first worked example of docs/PROTOCOL.md (test_protocol_doc.py checks the
# document against the code; this pins the bytes themselves).
READY_KAT = bytes.fromhex(
    "9802a57265616479a7706c616e742d370300ab636c69656e742d3030303190c440"
    "507679ca5c453da9723c8c17afa7b5032d9031cd26113a31bfa4bb581a97b4c2"
    "2dca931b7f5ddfb14adce167cbb2751cc5eea33b731509605efbe5abf146dd00"
)
READY_SIGNING_BYTES = bytes.fromhex(
    "666564636173742f76322f6d7367009702a57265616479a7706c616e742d370300ab636c69656e742d3030303190"
)


def test_protocol_version_and_domains() -> None:
    assert PROTOCOL_VERSION == 2
    assert serde.SIGNING_DOMAIN == b"fedcast/v2/msg\x00" and len(serde.SIGNING_DOMAIN) == 15
    assert serde.FIRST_DOMAIN == b"fedcast/v2/first\x00" and len(serde.FIRST_DOMAIN) == 17
    assert serde.DIGEST_BYTES == 32
    assert (RESPONSE_BITS, RESPONSE_BYTES) == (513, 65)


def test_context_from_the_stored_moduli(small_group: GroupParams, group_2048: GroupParams) -> None:
    assert WireContext.from_group(small_group) == CTX == WireContext(64, 128)
    assert GROUP.n == small_group.n
    assert WireContext.from_group(group_2048) == WireContext(256, 512)
    assert WireContext.from_modulus(int(group_2048.n)) == WireContext(256, 512)
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
    assert wire[:2] == b"\x98\x02"  # an array of 8, version 2
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


def test_a_v1_signature_over_the_same_content_does_not_verify() -> None:
    """The version sits in the signed bytes and the domain changed: nothing signed for v1 verifies."""
    msg = serde.decode(READY_KAT, None)
    v1_bytes = b"fedcast/v1/msg\x00" + b"\x97\x01" + READY_SIGNING_BYTES[len(serde.SIGNING_DOMAIN) + 2 :]
    forged = dataclasses.replace(msg, signature=TEST_KEY.sign(v1_bytes))
    with pytest.raises(SignatureError):
        serde.verify(forged, TEST_KEY.verify_key, None)


def test_messages_without_big_integers_need_no_context() -> None:
    for mtype in (
        MessageType.GET_PARAMS,
        MessageType.PARAMS,
        MessageType.GET_KEYS,
        MessageType.REVOKE,
        MessageType.ACK,
        MessageType.ERROR,
        MessageType.ANNOUNCE,
        MessageType.READY,
        MessageType.RESULT,
    ):
        wire = serde.encode(example_header(mtype), example_body(mtype), TEST_KEY, None)
        assert serde.decode(wire, None) == serde.decode(wire, CTX)


@pytest.mark.parametrize(
    "mtype",
    [
        MessageType.ENROLL,
        MessageType.KEYS,
        MessageType.REGISTER_AGGREGATOR,
        MessageType.ENVELOPE,
        MessageType.UPLOAD,
        MessageType.CHALLENGE,
        MessageType.RESPONSE,
    ],
)
def test_messages_with_big_integers_need_a_context(mtype: MessageType) -> None:
    with pytest.raises(MalformedMessageError, match="WireContext"):
        serde.encode(example_header(mtype), example_body(mtype), TEST_KEY, None)
    wire = serde.encode(example_header(mtype), example_body(mtype), TEST_KEY, CTX)
    with pytest.raises(MalformedMessageError, match="WireContext"):
        serde.decode(wire, None)


# -- v2 fields -------------------------------------------------------------------------------------


def test_params_carries_only_the_modulus_and_its_own_widths() -> None:
    body = example_body(MessageType.PARAMS)
    assert isinstance(body, ParamsReply)
    assert [f.name for f in dataclasses.fields(ParamsReply)] == [
        "modulus",
        "frac_bits",
        "clip",
        "max_clients",
        "min_online",
        "aggregator",
    ]
    wire = serde.encode(example_header(MessageType.PARAMS), body, TEST_KEY, None)
    fields = unpack_trusted(wire)[6]
    assert len(fields) == 6  # no p, q or g: every party derives g and the h_j from N itself
    assert fields[0] == body.modulus.to_bytes(64, "big") and fields[0][0] != 0  # minimal width
    other = WireContext(3, 5)  # a context passed in is ignored: PARAMS is how the modulus is learned
    assert serde.decode(wire, None).body == body == serde.decode(wire, other).body
    assert serde.encode(example_header(MessageType.PARAMS), body, TEST_KEY, other) == wire
    no_aggregator = dataclasses.replace(body, aggregator=None)
    wire = serde.encode(example_header(MessageType.PARAMS), no_aggregator, TEST_KEY, None)
    assert serde.decode(wire, None).body == no_aggregator
    assert unpack_trusted(wire)[6][5] is None


def test_params_with_a_production_modulus(group_2048: GroupParams) -> None:
    """The aggregator's elements take N's width (256 bytes); responses stay 65 bytes."""
    n = int(group_2048.n)
    info = AggregatorInfo(n - 1, DlogProof(2, 2**513 - 1), 3, DlogProof(n - 2, 0), b"\x01" * 32)
    body = ParamsReply(n, 16, 4.0, 1000, 3, info)
    wire = serde.encode(example_header(MessageType.PARAMS), body, TEST_KEY, None)
    assert serde.decode(wire, None).body == body
    modulus, _, _, _, _, sent = unpack_trusted(wire)[6]
    assert len(modulus) == 256
    assert [len(sent[0]), len(sent[1][0]), len(sent[1][1]), len(sent[2]), len(sent[3][1])] == [
        256,
        256,
        65,
        256,
        65,
    ]


def test_proofs_travel_as_arrays_with_a_65_byte_response() -> None:
    body = example_body(MessageType.RESPONSE)
    assert isinstance(body, Response)
    share, proof, digest = unpack_trusted(
        serde.encode(example_header(MessageType.RESPONSE), body, TEST_KEY, CTX)
    )[6]
    assert share == body.share.to_bytes(64, "big")
    assert proof == [
        body.proof.commitment_g.to_bytes(64, "big"),
        body.proof.commitment_h.to_bytes(64, "big"),
        body.proof.response.to_bytes(65, "big"),
    ]
    assert digest == body.challenge_digest
    enroll = example_body(MessageType.ENROLL)
    assert isinstance(enroll, EnrollRequest)
    fields = unpack_trusted(serde.encode(example_header(MessageType.ENROLL), enroll, TEST_KEY, CTX))[6]
    assert fields[3] == [
        enroll.proof.commitment.to_bytes(64, "big"),
        enroll.proof.response.to_bytes(65, "big"),
    ]


@pytest.mark.parametrize("z", [0, 1, 2**512, 2**513 - 1])
def test_responses_of_any_group_are_65_bytes(z: int, group_2048: GroupParams) -> None:
    for ctx in (CTX, WireContext.from_group(group_2048)):
        body = Response(2, EqualityProof(3, 4, z), DIGEST)
        wire = serde.encode(example_header(MessageType.RESPONSE), body, TEST_KEY, ctx)
        assert z.to_bytes(65, "big") in wire
        assert serde.decode(wire, ctx).body == body


# 2^513 and 2^520 - 1 fit in 65 bytes but not under the bound; 2^640 and 2^641 - 1 were v2's first
# (256-bit challenge) responses, now out of range.
@pytest.mark.parametrize("z", [2**513, 2**520 - 1, 2**640, 2**641 - 1, 2**700, -1, True, 1.0, "5", None])
def test_encode_refuses_responses_outside_the_bound(z: Any) -> None:
    with pytest.raises(MalformedMessageError):
        serde.encode(
            example_header(MessageType.RESPONSE), Response(2, EqualityProof(3, 4, z), DIGEST), TEST_KEY, CTX
        )
    with pytest.raises(MalformedMessageError):
        serde.encode(
            example_header(MessageType.ENROLL),
            EnrollRequest("t", 5, b"\x00" * 32, DlogProof(3, z)),
            TEST_KEY,
            CTX,
        )


@pytest.mark.parametrize("digest", [b"", b"\x00" * 31, b"\x00" * 33, "00" * 32, bytearray(32)])
def test_encode_refuses_a_challenge_digest_of_another_size(digest: Any) -> None:
    with pytest.raises(MalformedMessageError, match="challenge_digest"):
        serde.encode(example_header(MessageType.RESPONSE), Response(2, EQ_PROOF, digest), TEST_KEY, CTX)


def test_upload_ends_with_the_context_digest() -> None:
    """UPLOAD has seven fields; the attempt context's digest travels last, as a 32-byte bin."""
    assert [f.name for f in dataclasses.fields(Upload)] == [
        "key_segment",
        "segments",
        "first",
        "second",
        "first_proof",
        "first_signature",
        "context_digest",
    ]
    body = example_body(MessageType.UPLOAD)
    assert isinstance(body, Upload)
    wire = serde.encode(example_header(MessageType.UPLOAD), body, TEST_KEY, CTX)
    fields = unpack_trusted(wire)[6]
    assert len(fields) == 7
    assert fields[5] == body.first_signature and fields[6] == body.context_digest == b"\x08" * 32
    assert wire.endswith(b"\xc4\x20" + body.context_digest + b"\xc4\x40" + wire[-64:])
    digest = bytes(range(32))
    changed = dataclasses.replace(body, context_digest=digest)
    wire2 = serde.encode(example_header(MessageType.UPLOAD), changed, TEST_KEY, CTX)
    msg = serde.decode(wire2, CTX)
    assert msg.body == changed and msg.body.context_digest == digest  # type: ignore[union-attr]
    # the digest is signed: the old signature does not cover the new digest
    with pytest.raises(SignatureError):
        serde.verify(dataclasses.replace(msg, signature=wire[-64:]), TEST_KEY.verify_key, CTX)


@pytest.mark.parametrize("digest", [b"", b"\x00" * 31, b"\x00" * 33, "00" * 32, bytearray(32), None])
def test_encode_refuses_a_context_digest_of_another_size(digest: Any) -> None:
    body = dataclasses.replace(example_body(MessageType.UPLOAD), context_digest=digest)  # type: ignore[type-var]
    with pytest.raises(MalformedMessageError, match="context_digest"):
        serde.encode(example_header(MessageType.UPLOAD), body, TEST_KEY, CTX)


def test_upload_key_segment_and_segments_at_production_size(group_2048: GroupParams) -> None:
    """256-byte elements, one 512-byte key segment, the data segments in one bin of u x 512 bytes."""
    ctx = WireContext.from_group(group_2048)
    n2 = int(group_2048.n2)
    segments = (n2 - 1, 1, 0, 2**4000)
    proof = DlogProof(int(group_2048.g), 2**513 - 1)
    body = Upload(n2 - 2, segments, int(group_2048.g), int(group_2048.n) - 1, proof, b"\x07" * 64, DIGEST)
    wire = serde.encode(example_header(MessageType.UPLOAD), body, ctx=ctx, signer=TEST_KEY)
    blob = len(segments) * 512  # 2048 bytes: a bin16 (c5 + 2-byte length)
    header_fields = len(b"\x02" + b"\xa6upload" + b"\xa7plant-7" + b"\x03" + b"\x01" + b"\xabclient-0001")
    # fixarray, key segment, segments, first, second, proof (fixarray, element, response), signature,
    # context digest
    body_bytes = 1 + (3 + 512) + (3 + blob) + 2 * (3 + 256) + (1 + (3 + 256) + (2 + 65)) + (2 + 64) + (2 + 32)
    assert len(wire) == 1 + header_fields + body_bytes + (2 + 64)
    assert bytes.fromhex("97c50200") + (n2 - 2).to_bytes(512, "big") + bytes.fromhex("c50800") in wire
    msg = serde.decode(wire, ctx)
    assert msg.body == body
    serde.verify(msg, TEST_KEY.verify_key, ctx)
    with pytest.raises(MalformedMessageError):  # the small context's widths do not fit
        serde.decode(wire, CTX)


@pytest.mark.parametrize("key_segment", [-1, 256**128, 2**1100, True, None])
def test_encode_refuses_a_key_segment_that_does_not_fit(key_segment: Any) -> None:
    body = dataclasses.replace(example_body(MessageType.UPLOAD), key_segment=key_segment)  # type: ignore[type-var]
    with pytest.raises(MalformedMessageError, match="key_segment"):
        serde.encode(example_header(MessageType.UPLOAD), body, TEST_KEY, CTX)


def test_a_large_upload_stays_far_below_the_default_limit(group_2048: GroupParams) -> None:
    ctx = WireContext.from_group(group_2048)
    n_segments = 1000  # ~70,000 parameters at the default packing
    body = Upload(7, tuple(range(n_segments)), 2, 3, PROOF, b"\x00" * 64, DIGEST)
    wire = serde.encode(example_header(MessageType.UPLOAD), body, TEST_KEY, ctx)
    fixed = 1051  # header, 3 elements, the proof, two signatures, the digest and the framing at |N| = 2048
    assert len(wire) == (n_segments + 1) * 512 + fixed < serde.DEFAULT_MAX_MESSAGE_BYTES
    assert serde.decode(wire, ctx).body == body


def test_envelope_evidence_carries_whole_signed_responses() -> None:
    """Evidence is a list of raw messages: they survive the envelope byte for byte and verify again."""
    response = serde.encode(
        Header(MessageType.RESPONSE, "plant-7", 3, 0, "client-0002"),
        example_body(MessageType.RESPONSE),
        TEST_KEY,
        CTX,
    )
    envelope = MemberEnvelope(("client-0001", "client-0003"), 5, 3, b"sealed", (response, b"", b"\x00" * 3))
    wire = serde.encode(example_header(MessageType.ENVELOPE), envelope, TEST_KEY, CTX)
    msg = serde.decode(wire, CTX)
    assert msg.body == envelope
    assert unpack_trusted(wire)[6][4] == [response, b"", b"\x00" * 3]
    inner = serde.decode(msg.body.evidence[0], CTX)  # type: ignore[union-attr]
    assert inner.header.sender == "client-0002" and inner.body == example_body(MessageType.RESPONSE)
    serde.verify(inner, TEST_KEY.verify_key, CTX)
    assert MemberEnvelope(("a",), 5, 2, b"").evidence == ()  # none by default
    plain = serde.encode(
        example_header(MessageType.ENVELOPE), MemberEnvelope(("a",), 5, 2, b""), TEST_KEY, CTX
    )
    assert unpack_trusted(plain)[6][4] == []


def test_envelope_first_evidence_carries_signed_first_components() -> None:
    """The second kind of evidence: members' signed first components, as a Challenge carries them."""
    proof = DlogProof(2**511 + 3, 2**512 + 7)
    items = (
        FirstComponent("client-0002", 2**511 + 1, proof, b"\x0a" * 64),
        FirstComponent("client-0001", 5, DlogProof(6, 0), b"\x0b" * 64),  # any order
    )
    envelope = MemberEnvelope(("client-0003",), 5, 2, b"sealed", (), items)
    wire = serde.encode(example_header(MessageType.ENVELOPE), envelope, TEST_KEY, CTX)
    msg = serde.decode(wire, CTX)
    assert msg.body == envelope
    fields = unpack_trusted(wire)[6]
    assert len(fields) == 6 and fields[4] == []
    assert fields[5][0] == [
        "client-0002",
        (2**511 + 1).to_bytes(64, "big"),
        [(2**511 + 3).to_bytes(64, "big"), (2**512 + 7).to_bytes(65, "big")],
        b"\x0a" * 64,
    ]
    # encoded exactly as a Challenge's firsts
    challenge = serde.encode(example_header(MessageType.CHALLENGE), Challenge(5, items), TEST_KEY, CTX)
    assert unpack_trusted(challenge)[6][1] == fields[5]
    assert MemberEnvelope(("a",), 5, 2, b"").first_evidence == ()  # none by default
    plain = serde.encode(
        example_header(MessageType.ENVELOPE), MemberEnvelope(("a",), 5, 2, b""), TEST_KEY, CTX
    )
    assert unpack_trusted(plain)[6][4:] == [[], []]


def test_an_upload_first_signature_verifies_as_envelope_evidence() -> None:
    """An Upload's first component and signature, moved into first_evidence, verify for the
    upload's context digest and for no other."""
    upload = example_body(MessageType.UPLOAD)
    assert isinstance(upload, Upload)
    args = ("plant-7", 3, 1, "client-0002")
    signed = serde.FirstComponentSigned(upload.first, upload.first_proof, upload.context_digest)
    upload = dataclasses.replace(upload, first_signature=serde.sign_first(TEST_KEY, *args, signed, CTX))
    item = FirstComponent("client-0002", upload.first, upload.first_proof, upload.first_signature)
    envelope = MemberEnvelope(("client-0001",), 5, 2, b"sealed", (), (item,))
    msg = serde.decode(serde.encode(example_header(MessageType.ENVELOPE), envelope, TEST_KEY, CTX), CTX)
    assert isinstance(msg.body, MemberEnvelope)
    (got,) = msg.body.first_evidence
    serde.verify_first(
        TEST_KEY.verify_key,
        got.signature,
        *args,
        serde.FirstComponentSigned(got.value, got.proof, upload.context_digest),
        CTX,
    )
    with pytest.raises(SignatureError):  # a client that answered another attempt context
        serde.verify_first(
            TEST_KEY.verify_key,
            got.signature,
            *args,
            serde.FirstComponentSigned(got.value, got.proof, DIGEST),
            CTX,
        )


@pytest.mark.parametrize(
    "first_evidence",
    [
        (FirstComponent("a", 5, PROOF, b"\x00" * 64), FirstComponent("a", 6, PROOF, b"\x00" * 64)),
        (FirstComponent("bad id", 5, PROOF, b"\x00" * 64),),
        (FirstComponent("a", 2**512, PROOF, b"\x00" * 64),),
        (FirstComponent("a", 5, DlogProof(1, 2**513), b"\x00" * 64),),
        (FirstComponent("a", 5, EQ_PROOF, b"\x00" * 64),),  # type: ignore[arg-type]
        (FirstComponent("a", 5, PROOF, b"\x00" * 63),),
        (b"raw upload",),
        [FirstComponent("a", 5, PROOF, b"\x00" * 64)],  # a list, not a tuple: fine
    ],
)
def test_encode_checks_first_evidence(first_evidence: Any) -> None:
    body = MemberEnvelope(("a",), 5, 2, b"", (), first_evidence)
    if isinstance(first_evidence, list):
        wire = serde.encode(example_header(MessageType.ENVELOPE), body, TEST_KEY, CTX)
        assert serde.decode(wire, CTX).body == dataclasses.replace(body, first_evidence=tuple(first_evidence))
        return
    with pytest.raises(MalformedMessageError, match="first_evidence"):
        serde.encode(example_header(MessageType.ENVELOPE), body, TEST_KEY, CTX)


# -- encoder refusals ------------------------------------------------------------------------------


def test_encode_refuses_a_body_of_the_wrong_type() -> None:
    with pytest.raises(MalformedMessageError, match="carries a Ready"):
        serde.encode(example_header(MessageType.READY), Response(5, EQ_PROOF, DIGEST), TEST_KEY, CTX)


@pytest.mark.parametrize("version", [1, 3, 0, True])
def test_encode_refuses_another_version(version: Any) -> None:
    header = dataclasses.replace(example_header(MessageType.READY), version=version)
    with pytest.raises(UnsupportedVersionError):
        serde.encode(header, Ready(), TEST_KEY, CTX)


@pytest.mark.parametrize("value", [-1, 2**512, True, 1.0, "5", None])
def test_encode_refuses_elements_that_do_not_fit(value: object) -> None:
    with pytest.raises(MalformedMessageError):
        serde.encode(example_header(MessageType.RESPONSE), Response(value, EQ_PROOF, DIGEST), TEST_KEY, CTX)  # type: ignore[arg-type]
    with pytest.raises(MalformedMessageError):
        serde.encode(
            example_header(MessageType.RESPONSE),
            Response(5, EqualityProof(5, value, 7), DIGEST),
            TEST_KEY,
            CTX,  # type: ignore[arg-type]
        )


def test_encode_accepts_gmpy2_integers() -> None:
    g = GROUP.g
    body = Response(g, EqualityProof(g, mpz(3), mpz(2) ** 512), DIGEST)
    wire = serde.encode(example_header(MessageType.RESPONSE), body, TEST_KEY, CTX)
    assert serde.decode(wire, CTX).body == Response(int(g), EqualityProof(int(g), 3, 2**512), DIGEST)


@pytest.mark.parametrize(
    "body",
    [
        MemberEnvelope(("b", "a"), 5, 2, b""),
        MemberEnvelope(("a", "a"), 5, 2, b""),
        MemberEnvelope((), 5, 2, b""),
        MemberEnvelope(("a", "bad id"), 5, 2, b""),
        MemberEnvelope(("a",), 5, -1, b""),
        MemberEnvelope(("a",), 5, True, b""),
        MemberEnvelope(("a",), 5, 2, b"", ("not bytes",)),  # type: ignore[arg-type]
        MemberEnvelope(("a",), 5, 2, b"", b"not a tuple"),  # type: ignore[arg-type]
        MemberEnvelope(("a",), 5, 2, b"", (None,)),  # type: ignore[arg-type]
        Upload(1, (), 1, 2, PROOF, b"\x00" * 64, DIGEST),
        Upload(1, (2**1024,), 1, 2, PROOF, b"\x00" * 64, DIGEST),
        Upload(2**1024, (1,), 1, 2, PROOF, b"\x00" * 64, DIGEST),
        Upload(1, (1,), 1, 2, PROOF, b"\x00" * 63, DIGEST),
        Upload(1, (1,), 1, 2, DlogProof(1, 2**513), b"\x00" * 64, DIGEST),
        Upload(1, (1,), 1, 2, (1, 2), b"\x00" * 64, DIGEST),  # type: ignore[arg-type]
        Upload(1, (1,), 1, 2, EqualityProof(1, 2, 3), b"\x00" * 64, DIGEST),  # type: ignore[arg-type]
        Upload(1, (1,), 1, 2, PROOF, b"\x00" * 64, b"\x00" * 31),
        Upload(1, (1,), 1, 2, PROOF, b"\x00" * 64, b"\x00" * 33),
        Upload(1, (1,), 1, 2, PROOF, b"\x00" * 64, "00" * 32),  # type: ignore[arg-type]
        EnrollRequest("has space", 5, b"\x00" * 32, PROOF),
        EnrollRequest("tok", 5, b"\x00" * 31, PROOF),
        Response(5, DlogProof(1, 2), DIGEST),  # type: ignore[arg-type]
        Response(5, EQ_PROOF, b"\x00" * 31),
    ],
)
def test_encode_refuses_what_decode_would_refuse(body: object) -> None:
    mtype = {
        MemberEnvelope: MessageType.ENVELOPE,
        Upload: MessageType.UPLOAD,
        EnrollRequest: MessageType.ENROLL,
        Response: MessageType.RESPONSE,
    }[type(body)]
    with pytest.raises(MalformedMessageError):
        serde.encode(example_header(mtype), body, TEST_KEY, CTX)  # type: ignore[arg-type]


def test_encode_refuses_oversize() -> None:
    body = example_body(MessageType.UPLOAD)
    with pytest.raises(OversizeMessageError):
        serde.encode(example_header(MessageType.UPLOAD), body, TEST_KEY, CTX, max_bytes=100)


# -- first components ------------------------------------------------------------------------------


FIRST_PROOF = DlogProof(2**511 + 9, 2**512 + 1)
FIRST_DIGEST = bytes(range(32))


def _signed(
    first: Any = 2**500 + 1, proof: Any = FIRST_PROOF, digest: Any = FIRST_DIGEST
) -> serde.FirstComponentSigned:
    return serde.FirstComponentSigned(first, proof, digest)


def test_first_component_signature() -> None:
    """FIRST_DOMAIN || msgpack([federation, round, attempt, member, A, [t, z], context_digest])."""
    args = ("plant-7", 3, 1, "client-0001", _signed())
    signature = serde.sign_first(TEST_KEY, *args, CTX)
    serde.verify_first(TEST_KEY.verify_key, signature, *args, CTX)
    expected = (
        b"fedcast/v2/first\x00"
        + bytes.fromhex("97a7706c616e742d370301ab636c69656e742d30303031")
        + b"\xc4\x40"
        + (2**500 + 1).to_bytes(64, "big")
        + b"\x92\xc4\x40"
        + (2**511 + 9).to_bytes(64, "big")
        + b"\xc4\x41"
        + (2**512 + 1).to_bytes(65, "big")
        + b"\xc4\x20"
        + FIRST_DIGEST
    )
    assert serde.first_component_bytes(*args, CTX) == expected
    assert len(expected) == 17 + 23 + 66 + 1 + 66 + 67 + 34
    assert serde.first_component_bytes(*args, CTX)[17:] == msgpack.packb(
        [
            "plant-7",
            3,
            1,
            "client-0001",
            (2**500 + 1).to_bytes(64, "big"),
            [(2**511 + 9).to_bytes(64, "big"), (2**512 + 1).to_bytes(65, "big")],
            FIRST_DIGEST,
        ],
        use_bin_type=True,
    )
    with pytest.raises(SignatureError):
        serde.verify_first(OTHER_KEY.verify_key, signature, *args, CTX)
    variants = [
        ("plant-8", 3, 1, "client-0001", _signed()),
        ("plant-7", 4, 1, "client-0001", _signed()),
        ("plant-7", 3, 2, "client-0001", _signed()),
        ("plant-7", 3, 1, "client-0002", _signed()),
        ("plant-7", 3, 1, "client-0001", _signed(first=2**500 + 2)),
        # the proof is covered: commitment and response
        ("plant-7", 3, 1, "client-0001", _signed(proof=DlogProof(2**511 + 10, 2**512 + 1))),
        ("plant-7", 3, 1, "client-0001", _signed(proof=DlogProof(2**511 + 9, 2**512 + 2))),
        # and so is the attempt context it was made for
        ("plant-7", 3, 1, "client-0001", _signed(digest=bytes(32))),
        ("plant-7", 3, 1, "client-0001", _signed(digest=FIRST_DIGEST[:31] + b"\x00")),
    ]
    for other in variants:
        with pytest.raises(SignatureError):
            serde.verify_first(TEST_KEY.verify_key, signature, *other, CTX)


def test_the_first_signature_of_protocol_2_without_proof_and_digest_does_not_verify() -> None:
    """Before the proof and the context digest were signed, the array had 5 elements: A alone."""
    args = ("plant-7", 3, 1, "client-0001", _signed())
    old = serde.FIRST_DOMAIN + bytes.fromhex("95a7706c616e742d370301ab636c69656e742d30303031c440")
    old_signature = TEST_KEY.sign(old + (2**500 + 1).to_bytes(64, "big"))
    with pytest.raises(SignatureError):
        serde.verify_first(TEST_KEY.verify_key, old_signature, *args, CTX)


def test_first_component_bytes_take_the_widths_of_the_context(group_2048: GroupParams) -> None:
    """A and t take E bytes (256 at 2048 bits); z stays 65 bytes; the digest 32."""
    ctx = WireContext.from_group(group_2048)
    signed = _signed(first=5, proof=DlogProof(6, 7))
    data = serde.first_component_bytes("plant-7", 3, 1, "client-0001", signed, ctx)
    assert len(data) == 17 + 23 + (3 + 256) + 1 + (3 + 256) + (2 + 65) + (2 + 32)
    assert (5).to_bytes(256, "big") in data and (7).to_bytes(65, "big") in data
    assert data != serde.first_component_bytes("plant-7", 3, 1, "client-0001", signed, CTX)


def test_message_and_first_signatures_are_domain_separated() -> None:
    """A message signature is never a valid first-component signature, and vice versa."""
    args = ("plant-7", 3, 1, "client-0001", _signed(first=5))
    first = serde.first_component_bytes(*args, CTX)
    assert first.startswith(serde.FIRST_DOMAIN) and not first.startswith(serde.SIGNING_DOMAIN)
    msg_signature = TEST_KEY.sign(serde.SIGNING_DOMAIN + first[len(serde.FIRST_DOMAIN) :])
    with pytest.raises(SignatureError):
        serde.verify_first(TEST_KEY.verify_key, msg_signature, *args, CTX)
    v1_signature = TEST_KEY.sign(b"fedcast/v1/first\x00" + first[len(serde.FIRST_DOMAIN) :])
    with pytest.raises(SignatureError):
        serde.verify_first(TEST_KEY.verify_key, v1_signature, *args, CTX)


@pytest.mark.parametrize(
    "args",
    [
        ("bad fed", 0, 0, "c", _signed(first=5)),
        ("f", -1, 0, "c", _signed(first=5)),
        ("f", 0, True, "c", _signed(first=5)),
        ("f", 0, 0, "", _signed(first=5)),
        ("f", 0, 0, "c", _signed(first=-5)),
        ("f", 0, 0, "c", _signed(first=2**512)),
        ("f", 0, 0, "c", _signed(proof=DlogProof(5, 2**513))),
        ("f", 0, 0, "c", _signed(proof=DlogProof(2**512, 5))),
        ("f", 0, 0, "c", _signed(proof=EQ_PROOF)),
        ("f", 0, 0, "c", _signed(proof=(5, 6))),
        ("f", 0, 0, "c", _signed(digest=b"\x00" * 31)),
        ("f", 0, 0, "c", _signed(digest=b"\x00" * 33)),
        ("f", 0, 0, "c", _signed(digest="00" * 32)),
        ("f", 0, 0, "c", _signed(digest=None)),
    ],
)
def test_first_component_refuses_malformed_input(args: tuple[Any, Any, Any, Any, Any]) -> None:
    with pytest.raises(MalformedMessageError):
        serde.first_component_bytes(*args, CTX)
    with pytest.raises(MalformedMessageError):
        serde.sign_first(TEST_KEY, *args, CTX)


# -- redaction -------------------------------------------------------------------------------------


def test_reprs_never_show_tokens_or_keys() -> None:
    secret = "s3cret-token-value"
    info = AggregatorInfo(5, PROOF, 6, PROOF, b"\x00" * 32)
    for mtype, body in (
        (MessageType.ENROLL, EnrollRequest(secret, 5, b"\x00" * 32, PROOF)),
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
