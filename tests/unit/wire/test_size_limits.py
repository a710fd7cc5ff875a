"""Per-type size limits: never below the largest valid message, and checked before the body."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcast.shared.crypto.proofs import RESPONSE_BITS, DlogProof, EqualityProof
from fedcast.shared.errors import ConfigurationError, MalformedMessageError, OversizeMessageError
from fedcast.shared.wire import serde
from fedcast.shared.wire.codec import MAX_UINT, Codec, WireContext
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
from fedcast.shared.wire.reader import Reader, pack
from fedcast.shared.wire.serde import HEADER_MAX_BYTES, SizeLimits
from tests.unit.wire.strategies import CTX, TEST_KEY, bodies, headers

LONGEST_TYPE = max(len(t.value) for t in MessageType)  # "register_aggregator"


def _id(prefix: str, k: int = 0) -> str:
    return f"{prefix}{k:063d}"  # 64 characters, sorted like k


def _max_header(mtype: MessageType) -> Header:
    return Header(mtype, _id("f"), MAX_UINT, MAX_UINT, _id("s"))


def _largest(mtype: MessageType, ctx: WireContext, *, segments: int, model: int, members: int) -> Body:
    """The largest valid body of ``mtype`` for these widths and counts."""
    el = 256**ctx.element_bytes - 1
    z = 2**RESPONSE_BITS - 1
    proof = DlogProof(el, z)
    token, text = "t" * 256, "\U0001f600" * 4096  # 4,096 four-byte characters
    ids = tuple(_id("m", k) for k in range(members))
    firsts = tuple(FirstComponent(m, el, proof, b"\x01" * 64) for m in ids)
    info = AggregatorInfo(el, proof, el, proof, b"\x02" * 32)
    response = Response(el, EqualityProof(el, el, z), b"\x03" * 32)
    if mtype == MessageType.PARAMS:
        n = 2**8191 + 1  # 1024 bytes: PARAMS elements take its width, whatever ctx says
        big = 256**1024 - 1
        params_info = AggregatorInfo(big, DlogProof(big, z), big, DlogProof(big, z), b"\x02" * 32)
        return ParamsReply(n, MAX_UINT, 1.0, MAX_UINT, MAX_UINT, params_info)
    if mtype == MessageType.ENVELOPE:
        raw = serde.encode(_max_header(MessageType.RESPONSE), response, TEST_KEY, ctx)
        sealed = bytes(12 + 8 * model + 16)
        return MemberEnvelope(ids, el, MAX_UINT, sealed, (raw,) * members, firsts)
    examples: dict[MessageType, Body] = {
        MessageType.ENROLL: EnrollRequest(token, el, b"\x02" * 32, proof),
        MessageType.GET_PARAMS: ParamsRequest(),
        MessageType.GET_KEYS: KeysRequest(ids),
        MessageType.KEYS: KeysReply(tuple(RegistryEntry(m, el, b"\x02" * 32, True) for m in ids)),
        MessageType.REGISTER_AGGREGATOR: RegisterAggregator(token, info),
        MessageType.REVOKE: RevokeRequest(token, _id("c")),
        MessageType.ACK: Ack(),
        MessageType.ERROR: ErrorReply(_id("r"), text),
        MessageType.ANNOUNCE: Announce(_id("t"), MAX_UINT, 1.0),
        MessageType.READY: Ready(),
        MessageType.UPLOAD: Upload(
            256**ctx.ciphertext_bytes - 1,
            (256**ctx.ciphertext_bytes - 1,) * segments,
            el,
            el,
            proof,
            b"\x04" * 64,
            b"\x05" * 32,
        ),
        MessageType.CHALLENGE: Challenge(el, firsts),
        MessageType.RESPONSE: response,
        MessageType.RESULT: RoundResult(RoundStatus.COMPLETE, ids, text),
    }
    return examples[mtype]


def test_the_header_bound_is_the_longest_header() -> None:
    longest = pack([2, "register_aggregator", _id("f"), MAX_UINT, MAX_UINT, _id("s")])
    assert HEADER_MAX_BYTES == len(longest) == 172


@pytest.mark.parametrize("members", [3, 20])  # a fixarray, and an array 16 header
@pytest.mark.parametrize("mtype", list(MessageType))
def test_the_largest_valid_message_of_each_type_fits_its_limit(mtype: MessageType, members: int) -> None:
    segments, model = 3, 50
    body = _largest(mtype, CTX, segments=segments, model=model, members=members)
    wire = serde.encode(_max_header(mtype), body, TEST_KEY, CTX)
    limits = SizeLimits(CTX, n_segments=segments, model_size=model, max_members=members, max_entries=members)
    limit = limits.limit(mtype)
    assert len(wire) <= limit, "a valid message would be refused"
    # Tight: the only slack is a type name shorter than the longest one, in the message and in
    # each evidence message of an envelope (RESPONSE messages).
    evidence = members if mtype == MessageType.ENVELOPE else 0
    slack = LONGEST_TYPE - len(mtype.value) + evidence * (LONGEST_TYPE - len("response"))
    assert limit - len(wire) == slack
    assert serde.decode(wire, CTX, limits=limits).body == body


def test_a_real_2048_bit_upload_limit() -> None:
    ctx = WireContext(256, 512)
    limits = SizeLimits(ctx, n_segments=1000, model_size=10**6, max_members=1000)
    # (u + 1) ciphertexts, A_i, B_i, a proof, two signatures' worth of fixed fields
    assert 1001 * 512 < limits.limit(MessageType.UPLOAD) < 1001 * 512 + 1500
    assert limits.limit(MessageType.READY) == HEADER_MAX_BYTES + 1 + 66
    assert limits.limit(MessageType.RESPONSE) < 1500
    assert limits.limit(MessageType.ENVELOPE) > 8 * 10**6
    assert SizeLimits(ctx, max_bytes=4096).limit(MessageType.ENVELOPE) == 4096  # capped


def test_what_the_receiver_does_not_know_is_capped_only_by_max_bytes() -> None:
    limits = SizeLimits(CTX, max_bytes=10**6)
    for mtype in (MessageType.UPLOAD, MessageType.ENVELOPE, MessageType.CHALLENGE, MessageType.KEYS):
        assert limits.limit(mtype) == 10**6
    assert limits.limit(MessageType.READY) < 300
    # without a context, the widths of the largest modulus: never below a known context's
    unknown = SizeLimits(None, max_bytes=10**6)
    assert all(unknown.limit(t) >= limits.limit(t) for t in MessageType)
    assert unknown.limit(MessageType.PARAMS) == limits.limit(MessageType.PARAMS)


@pytest.mark.parametrize("field", ["n_segments", "model_size", "max_members", "max_entries"])
def test_counts_are_checked(field: str) -> None:
    with pytest.raises(ConfigurationError):
        SizeLimits(CTX, **{field: -1})
    with pytest.raises(ConfigurationError):
        SizeLimits(CTX, max_bytes=0)


@pytest.mark.parametrize("mtype", list(MessageType))
@given(data=st.data())
def test_no_valid_message_is_refused(mtype: MessageType, data: st.DataObject) -> None:
    # The strategies draw lists of up to 6 items, up to 4 segments and sealed models of up to
    # 100 bytes (9 model values and the nonce and tag).
    limits = SizeLimits(CTX, n_segments=4, model_size=10, max_members=6, max_entries=6)
    wire = serde.encode(data.draw(headers(mtype)), data.draw(bodies(mtype, CTX)), TEST_KEY, CTX)
    limits.check(mtype, len(wire))
    serde.decode(wire, CTX, limits=limits)


class _Spy(Codec):
    """A body codec that records being asked to read (it must not be, for an oversize message)."""

    def __init__(self) -> None:
        self.reads = 0

    def encode(self, value: Any, ctx: WireContext | None, what: str) -> Any:
        raise AssertionError("not used")

    def read(self, reader: Any, ctx: WireContext | None, what: str) -> Any:
        self.reads += 1
        raise MalformedMessageError("spy")


def _padded(mtype: MessageType, size: int) -> bytes:
    """A message of exactly ``size`` bytes: a valid header, then garbage."""
    head = b"\x98" + pack(2) + pack(mtype.value) + pack("fed") + pack(1) + pack(0) + pack("alice")
    return head + b"\xc1" * (size - len(head))


@pytest.mark.parametrize("mtype", list(MessageType))
def test_an_oversize_message_of_each_type_is_refused_before_its_body(
    mtype: MessageType, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy()
    monkeypatch.setitem(serde._BODY_CODECS, mtype, spy)
    limits = SizeLimits(CTX, n_segments=2, model_size=10, max_members=3, max_entries=3)
    limit = limits.limit(mtype)
    with pytest.raises(OversizeMessageError, match=f"{mtype.value} of {limit + 1} bytes"):
        serde.decode(_padded(mtype, limit + 1), CTX, limits=limits)
    assert spy.reads == 0
    # at the limit the body is read (and here refused as garbage): the check is exactly there
    with pytest.raises(MalformedMessageError, match="spy"):
        serde.decode(_padded(mtype, limit), CTX, limits=limits)
    assert spy.reads == 1


def test_peek_header_reads_only_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def reader(data: bytes) -> Reader:
        seen.append(len(data))
        return Reader(data)

    monkeypatch.setattr(serde, "Reader", reader)
    big = _padded(MessageType.UPLOAD, 5_000_000)
    header = serde.peek_header(big)
    assert (header.type, header.round, header.sender) == (MessageType.UPLOAD, 1, "alice")
    assert seen == [HEADER_MAX_BYTES]
    with pytest.raises(MalformedMessageError):
        serde.decode(big, CTX)  # the body is garbage: only a full decode finds out
    assert seen[-1] == len(big)
    # a header that does not fit is malformed, as it was when the whole message was read
    too_long = b"\x98\x02" + pack("ready") + pack("f" * 200) + b"\x00" * 300
    with pytest.raises(MalformedMessageError, match="federation"):
        serde.peek_header(too_long)
