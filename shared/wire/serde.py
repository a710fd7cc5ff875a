"""The only place where protocol messages become bytes and bytes become messages.

A message on the wire is one msgpack array (docs/PROTOCOL.md has the full
specification and a worked example)::

    [version, type, federation, round, attempt, sender, body, signature]

``body`` is the array of the body dataclass's fields in declaration order;
big integers are fixed-width big-endian ``bin`` values whose widths come from
the federation's modulus N (:class:`WireContext`). The sender's Ed25519 signature
covers ``SIGNING_DOMAIN + msgpack([version, type, federation, round, attempt,
sender, body])``, i.e. the first seven elements exactly as they appear on the
wire. :func:`decode` accepts only the shortest msgpack encoding of every value,
so each message has exactly one byte form and re-encoding a decoded message
reproduces the signed bytes.

Division of labour. This module validates *structure*: sizes, array lengths,
types, id syntax, fixed widths, uniqueness and order of member lists, finite
floats, and it never lets a small hostile message allocate much (see
:mod:`fedcast.shared.wire.codec`). Whether an integer is an acceptable group element
(the received-element rule: 1 < x < N, gcd(x, N) = 1, Jacobi +1, square != 1)
and whether a proof verifies is checked by the crypto layer
(:meth:`fedcast.shared.crypto.group.GroupParams.received_square`, :mod:`fedcast.shared.crypto.proofs`,
called throughout :mod:`fedcast.shared.crypto.elgamal`), and whether a signature is by the right key
(:func:`verify`, :func:`verify_first`) is the caller's step once it has looked
up the sender's registered verify key, typically after :func:`peek_header`.

Overload. :func:`peek_header` reads only the header's bytes, and :class:`SizeLimits`
bounds each type's length by the largest valid message, so a receiver refuses a big,
stale or foreign message before parsing or copying its body (docs/PROTOCOL.md 5.1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from fedcast.shared.crypto.delivery import NONCE_BYTES
from fedcast.shared.crypto.proofs import RESPONSE_BITS, DlogProof, EqualityProof
from fedcast.shared.crypto.signing import SIGNATURE_BYTES, VERIFY_KEY_BYTES, SigningKeyPair, verify_signature
from fedcast.shared.errors import (
    ConfigurationError,
    MalformedMessageError,
    OversizeMessageError,
    UnsupportedVersionError,
)
from fedcast.shared.wire.codec import (
    MAX_MODULUS_BYTES,
    MAX_TOKEN_CHARS,
    MAX_UINT,
    BoolCodec,
    BytesCodec,
    CiphertextCodec,
    Codec,
    ElementCodec,
    EnumCodec,
    FloatCodec,
    IdCodec,
    ModulusCodec,
    OptionalCodec,
    ResponseCodec,
    SegmentsCodec,
    SeqCodec,
    StructCodec,
    TextCodec,
    TokenCodec,
    UIntCodec,
    WireContext,
    check_id,
)
from fedcast.shared.wire.messages import (
    PROTOCOL_VERSION,
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
    Signed,
    Upload,
)
from fedcast.shared.wire.reader import MAX_ARRAY_ITEMS, MAX_STR_BYTES, Reader, pack

__all__ = [
    "BODY_TYPES",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DIGEST_BYTES",
    "FIRST_DOMAIN",
    "HEADER_MAX_BYTES",
    "SIGNING_DOMAIN",
    "FirstComponentSigned",
    "SizeLimits",
    "WireContext",
    "decode",
    "encode",
    "first_component_bytes",
    "peek_header",
    "sign_first",
    "signing_bytes",
    "verify",
    "verify_first",
]

#: Largest message accepted by default, checked before any parsing. An upload costs ~7.3 bytes
#: per model parameter (README), so 10^6 parameters make a ~7.4 MB message; 64 MiB leaves room
#: for models ~8x larger while bounding what one peer can make a service buffer. The broker
#: must allow it too (RabbitMQ's ``max_message_size``).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Domain separation: a message signature can never be mistaken for a first-component one.
SIGNING_DOMAIN = b"fedcast/v2/msg\x00"
FIRST_DOMAIN = b"fedcast/v2/first\x00"
#: SHA-256 digests (model and challenge digests).
DIGEST_BYTES = 32

# msgpack fixarray headers: the 7 signed elements, and the 8 of the wire array.
_SIGNED_ARRAY = b"\x97"
_WIRE_ARRAY = b"\x98"
_WIRE_FIELDS = 8

_ID = IdCodec()
_UINT = UIntCodec()
_FLOAT = FloatCodec()
_TEXT = TextCodec()
_TOKEN = TokenCodec()
_ELEMENT = ElementCodec()
_CIPHERTEXT = CiphertextCodec()
_RESPONSE = ResponseCodec(RESPONSE_BITS)
_VERIFY_KEY = BytesCodec(VERIFY_KEY_BYTES)
_SIGNATURE = BytesCodec(SIGNATURE_BYTES)
_DIGEST = BytesCodec(DIGEST_BYTES)


def _struct(cls: type[Any], **codecs: Codec) -> StructCodec:
    """A StructCodec in the dataclass's declaration order; refuses a schema that drifted from it."""
    names = tuple(f.name for f in fields(cls))
    if set(names) != set(codecs):
        raise TypeError(f"wire schema of {cls.__name__} does not match its fields {names}")
    return StructCodec(cls, tuple((name, codecs[name]) for name in names))


_DLOG_PROOF = _struct(DlogProof, commitment=_ELEMENT, response=_RESPONSE)
_EQUALITY_PROOF = _struct(EqualityProof, commitment_g=_ELEMENT, commitment_h=_ELEMENT, response=_RESPONSE)
_AGGREGATOR_INFO = _struct(
    AggregatorInfo,
    beta=_ELEMENT,
    beta_proof=_DLOG_PROOF,
    delivery=_ELEMENT,
    delivery_proof=_DLOG_PROOF,
    verify_key=_VERIFY_KEY,
)
_REGISTRY_ENTRY = _struct(
    RegistryEntry, client_id=_ID, elgamal_public=_ELEMENT, verify_key=_VERIFY_KEY, revoked=BoolCodec()
)
_FIRST_COMPONENT = _struct(
    FirstComponent, member=_ID, value=_ELEMENT, proof=_DLOG_PROOF, signature=_SIGNATURE
)
if [name for name, _ in _FIRST_COMPONENT.fields] != ["member", "value", "proof", "signature"] or [
    name for name, _ in _DLOG_PROOF.fields
] != ["commitment", "response"]:
    raise TypeError("the first-component fast path assumes the field order of FirstComponent")

_ID_BYTES = re.compile(rb"[A-Za-z0-9._-]{1,64}")  # codec.ID_PATTERN on the UTF-8 bytes (all ASCII)
_RESPONSE_WIDTH = (RESPONSE_BITS + 7) // 8


def _bin_header(size: int) -> bytes:
    """The canonical msgpack bin header of a ``size``-byte value."""
    if size < 2**8:
        return b"\xc4" + size.to_bytes(1, "big")
    if size < 2**16:
        return b"\xc5" + size.to_bytes(2, "big")
    return b"\xc6" + size.to_bytes(4, "big")


def _id_span(data: bytes, pos: int) -> tuple[int, int] | None:
    """(start, end) of the id whose header is at ``pos``, if it is a canonical fixstr / str 8
    matching the id pattern; None for anything else (the generic path decides)."""
    size = len(data)
    if pos >= size:
        return None
    byte = data[pos]
    if 0xA0 <= byte <= 0xBF:
        start = pos + 1
        end = start + (byte & 0x1F)
    elif byte == 0xD9 and pos + 2 <= size and data[pos + 1] >= 32:
        start = pos + 2
        end = start + data[pos + 1]
    else:
        return None
    if end > size or _ID_BYTES.fullmatch(data, start, end) is None:
        return None
    return start, end


def _array_header(data: bytes, pos: int, min_items: int) -> tuple[int, int] | None:
    """(length, offset of the first item) of a canonical array header at ``pos`` holding
    ``min_items`` to MAX_ARRAY_ITEMS items; None for anything else (the generic path decides)."""
    size = len(data)
    if pos >= size:
        return None
    byte = data[pos]
    if 0x90 <= byte <= 0x9F:
        n, pos = byte & 0x0F, pos + 1
    elif byte == 0xDC and pos + 3 <= size:
        n, pos = int.from_bytes(data[pos + 1 : pos + 3], "big"), pos + 3
        if n < 16:
            return None
    elif byte == 0xDD and pos + 5 <= size:
        n, pos = int.from_bytes(data[pos + 1 : pos + 5], "big"), pos + 5
        if n < 2**16 or n > MAX_ARRAY_ITEMS:
            return None
    else:
        return None
    if n < min_items:
        return None
    return n, pos


class _IdsCodec(SeqCodec):
    """A list of unique ids (member lists of ENVELOPE and RESULT, GET_KEYS), with a one-pass fast path.

    Performance only, like :class:`_FirstsCodec`: the fast path accepts only canonical fixstr /
    str 8 ids matching the id pattern; anything else is left to the generic path, which makes
    every refusal. The list checks (count, unique, sorted) are the same either way.
    """

    def __init__(self, *, min_items: int = 0, sorted_: bool = False, fast: bool = True) -> None:
        super().__init__(_ID, min_items=min_items, unique=True, sorted_=sorted_)
        self.fast = fast

    def read(self, reader: Reader, ctx: WireContext | None, what: str) -> Any:
        if self.fast:
            parsed = self._parse(reader.data, reader.tell())
            if parsed is not None:
                items, end = parsed
                reader.skip_parsed(end)
                return self._check(items, what)
        return super().read(reader, ctx, what)

    def _parse(self, data: bytes, pos: int) -> tuple[tuple[str, ...], int] | None:
        """(the ids, the offset after the array) if the array at ``pos`` is canonical and valid."""
        header = _array_header(data, pos, self.min_items)
        if header is None:
            return None
        n, pos = header
        items: list[str] = []
        for _ in range(n):
            span = _id_span(data, pos)
            if span is None:
                return None
            start, pos = span
            items.append(data[start:pos].decode("ascii"))
        return tuple(items), pos


class _FirstsCodec(SeqCodec):
    """A list of FirstComponent (CHALLENGE, ENVELOPE evidence), with a one-pass fast path.

    Performance only (a CHALLENGE at 943 members is ~620 KB of these): :meth:`read` first
    tries to parse the whole array straight from the message bytes, accepting it only if
    every byte is in the one canonical form the generic path accepts (array and bin headers,
    fixstr / str 8 ids matching the id pattern, exact widths, responses < 2^RESPONSE_BITS);
    then the same list checks (count, unique members) run. Anything else, however small,
    goes to the generic path, which therefore produces every refusal, with the same error.
    """

    def __init__(self, *, min_items: int = 0, fast: bool = True) -> None:
        super().__init__(_FIRST_COMPONENT, min_items=min_items, unique=True, key=lambda f: f.member)
        self.fast = fast

    def read(self, reader: Reader, ctx: WireContext | None, what: str) -> Any:
        if self.fast and ctx is not None:
            parsed = self._parse(reader.data, reader.tell(), ctx.element_bytes)
            if parsed is not None:
                items, end = parsed
                reader.skip_parsed(end)
                return self._check(items, what)
        return super().read(reader, ctx, what)

    def _parse(self, data: bytes, pos: int, width: int) -> tuple[tuple[FirstComponent, ...], int] | None:
        """(the items, the offset after the array) if the array at ``pos`` is canonical and valid."""
        size = len(data)
        header = _array_header(data, pos, self.min_items)
        if header is None:
            return None
        n, pos = header
        element = _bin_header(width)
        response = _bin_header(_RESPONSE_WIDTH)
        signature = _bin_header(SIGNATURE_BYTES)
        # Offsets after the id: value bin, fixarray(2) of commitment bin and response bin, signature bin.
        value_at = len(element)
        proof_at = value_at + width
        commitment_at = proof_at + 1 + len(element)
        response_at = commitment_at + width
        signature_at = response_at + len(response) + _RESPONSE_WIDTH
        tail = signature_at + len(signature) + SIGNATURE_BYTES
        limit = 1 << RESPONSE_BITS
        from_bytes, first, proof_cls = int.from_bytes, FirstComponent, DlogProof
        items: list[FirstComponent] = []
        for _ in range(n):
            if pos >= size or data[pos] != 0x94:
                return None
            span = _id_span(data, pos + 1)
            if span is None:
                return None
            start, end = span
            pos = end + tail
            if pos > size:
                return None
            raw_id = data[start:end]
            if (
                data[end : end + value_at] != element
                or data[end + proof_at] != 0x92
                or data[end + proof_at + 1 : end + commitment_at] != element
                or data[end + response_at : end + response_at + len(response)] != response
                or data[end + signature_at : end + signature_at + len(signature)] != signature
            ):
                return None
            z = from_bytes(data[end + response_at + len(response) : end + signature_at], "big")
            if z >= limit:
                return None
            items.append(
                first(
                    raw_id.decode("ascii"),
                    from_bytes(data[end + value_at : end + proof_at], "big"),
                    proof_cls(from_bytes(data[end + commitment_at : end + response_at], "big"), z),
                    data[end + signature_at + len(signature) : pos],
                )
            )
        return tuple(items), pos


class _ParamsCodec(Codec):
    """ParamsReply carries its own modulus, so its element widths come from its own N.

    N is minimal-width; the aggregator's elements have N's width. A context passed
    by the caller is ignored: PARAMS is how a party learns the modulus.
    """

    _modulus = ModulusCodec()
    _fields = _struct(
        ParamsReply,
        modulus=_modulus,  # read first: it gives the widths of the rest
        frac_bits=_UINT,
        clip=_FLOAT,
        max_clients=_UINT,
        min_online=_UINT,
        aggregator=OptionalCodec(_AGGREGATOR_INFO),
    ).fields
    if _fields[0][0] != "modulus":
        raise TypeError("ParamsReply must start with the modulus")
    _rest = _fields[1:]

    @staticmethod
    def _own_context(n: int, what: str) -> WireContext:
        if n < 3:
            raise MalformedMessageError(f"{what}.modulus: not a modulus")
        return WireContext.from_modulus(n)

    def encode(self, value: Any, ctx: WireContext | None, what: str) -> Any:
        if type(value) is not ParamsReply:
            raise MalformedMessageError(f"{what}: expected a ParamsReply")
        n = self._modulus.encode(value.modulus, None, f"{what}.modulus")
        own = self._own_context(int.from_bytes(n, "big"), what)
        return [n, *(codec.encode(getattr(value, name), own, f"{what}.{name}") for name, codec in self._rest)]

    def read(self, reader: Reader, ctx: WireContext | None, what: str) -> Any:
        reader.array(what, exact=1 + len(self._rest))
        n = self._modulus.read(reader, None, f"{what}.modulus")
        own = self._own_context(n, what)
        rest = {name: codec.read(reader, own, f"{what}.{name}") for name, codec in self._rest}
        return ParamsReply(modulus=n, **rest)


#: Which body each message type carries (the protocol layer may dispatch on it).
BODY_TYPES: Mapping[MessageType, type[Any]] = MappingProxyType(
    {
        MessageType.ENROLL: EnrollRequest,
        MessageType.GET_PARAMS: ParamsRequest,
        MessageType.PARAMS: ParamsReply,
        MessageType.GET_KEYS: KeysRequest,
        MessageType.KEYS: KeysReply,
        MessageType.REGISTER_AGGREGATOR: RegisterAggregator,
        MessageType.REVOKE: RevokeRequest,
        MessageType.ACK: Ack,
        MessageType.ERROR: ErrorReply,
        MessageType.ANNOUNCE: Announce,
        MessageType.READY: Ready,
        MessageType.ENVELOPE: MemberEnvelope,
        MessageType.UPLOAD: Upload,
        MessageType.CHALLENGE: Challenge,
        MessageType.RESPONSE: Response,
        MessageType.RESULT: RoundResult,
    }
)

_BODY_CODECS: dict[MessageType, Codec] = {
    MessageType.ENROLL: _struct(
        EnrollRequest, token=_TOKEN, elgamal_public=_ELEMENT, verify_key=_VERIFY_KEY, proof=_DLOG_PROOF
    ),
    MessageType.GET_PARAMS: _struct(ParamsRequest),
    MessageType.PARAMS: _ParamsCodec(),
    MessageType.GET_KEYS: _struct(KeysRequest, client_ids=_IdsCodec()),
    MessageType.KEYS: _struct(
        KeysReply, entries=SeqCodec(_REGISTRY_ENTRY, unique=True, key=lambda e: e.client_id)
    ),
    MessageType.REGISTER_AGGREGATOR: _struct(RegisterAggregator, token=_TOKEN, info=_AGGREGATOR_INFO),
    MessageType.REVOKE: _struct(RevokeRequest, token=_TOKEN, client_id=_ID),
    MessageType.ACK: _struct(Ack),
    MessageType.ERROR: _struct(ErrorReply, reason=_ID, message=_TEXT),
    MessageType.ANNOUNCE: _struct(Announce, task=_ID, n_params=_UINT, ready_window_s=_FLOAT),
    MessageType.READY: _struct(Ready),
    MessageType.ENVELOPE: _struct(
        MemberEnvelope,
        members=_IdsCodec(min_items=1, sorted_=True),
        aggregate_key=_ELEMENT,
        min_online=_UINT,
        sealed_model=BytesCodec(),
        evidence=SeqCodec(BytesCodec()),
        first_evidence=_FirstsCodec(),
    ),
    MessageType.UPLOAD: _struct(
        Upload,
        key_segment=_CIPHERTEXT,
        segments=SegmentsCodec(),
        first=_ELEMENT,
        second=_ELEMENT,
        first_proof=_DLOG_PROOF,
        first_signature=_SIGNATURE,
        context_digest=_DIGEST,
    ),
    MessageType.CHALLENGE: _struct(
        Challenge,
        challenge=_ELEMENT,
        firsts=_FirstsCodec(min_items=1),
    ),
    MessageType.RESPONSE: _struct(Response, share=_ELEMENT, proof=_EQUALITY_PROOF, challenge_digest=_DIGEST),
    MessageType.RESULT: _struct(
        RoundResult, status=EnumCodec(RoundStatus), members=_IdsCodec(), detail=_TEXT
    ),
}


# -- size limits -----------------------------------------------------------------------------------

# Encoded sizes of the largest values the schema allows (msgpack headers included).
_UINT_MAX_BYTES = 9  # uint 64
_FLOAT_BYTES = 9  # float 64, the only float form
_ID_MAX_BYTES = 2 + 64  # str 8 of 64 ASCII characters
_TOKEN_MAX_BYTES = 3 + MAX_TOKEN_CHARS  # str 16 of printable ASCII
_TEXT_MAX_BYTES = 3 + MAX_STR_BYTES  # str 16: 4,096 characters of up to 4 UTF-8 bytes
_GCM_TAG_BYTES = 16  # a sealed model is nonce || AES-GCM ciphertext || tag (fedcast.shared.crypto.delivery)
_RESPONSE_BYTES = (RESPONSE_BITS + 7) // 8


def _bin_size(n: int) -> int:
    return n + (2 if n < 2**8 else 3 if n < 2**16 else 5)


def _str_size(n: int) -> int:
    return n + (1 if n < 32 else 2 if n < 2**8 else 3 if n < 2**16 else 5)


def _array_size(items: int, item_bytes: int) -> int:
    return (1 if items < 16 else 3 if items < 2**16 else 5) + items * item_bytes


#: The longest header a valid message can have: array, version, type, two ids, round, attempt.
HEADER_MAX_BYTES = (
    1 + 1 + max(_str_size(len(t.value)) for t in MessageType) + 2 * _ID_MAX_BYTES + 2 * _UINT_MAX_BYTES
)
_SIGNATURE_SIZE = _bin_size(SIGNATURE_BYTES)


def _largest_body(
    mtype: MessageType,
    element: int,
    ciphertext: int,
    *,
    n_segments: int | None,
    model_size: int | None,
    members: int,
    entries: int,
) -> int | None:
    """Encoded size of the largest valid body of ``mtype`` (None: the schema does not bound it)."""
    el = _bin_size(element)
    dlog = 1 + el + _bin_size(_RESPONSE_BYTES)
    key = _bin_size(VERIFY_KEY_BYTES)
    digest = _bin_size(DIGEST_BYTES)
    first = 1 + _ID_MAX_BYTES + el + dlog + _SIGNATURE_SIZE
    entry = 1 + _ID_MAX_BYTES + el + key + 1
    modulus_el = _bin_size(MAX_MODULUS_BYTES)  # PARAMS: widths of its own N, up to 1024 bytes
    params_info = 1 + 2 * (modulus_el + 1 + modulus_el + _bin_size(_RESPONSE_BYTES)) + key
    response = 1 + el + (1 + 2 * el + _bin_size(_RESPONSE_BYTES)) + digest
    if mtype == MessageType.ENVELOPE:
        if model_size is None:
            return None
        sealed = _bin_size(NONCE_BYTES + 8 * model_size + _GCM_TAG_BYTES)
        evidence = _bin_size(HEADER_MAX_BYTES + response + _SIGNATURE_SIZE)  # signed RESPONSE messages
        return (
            1
            + _array_size(members, _ID_MAX_BYTES)
            + el
            + _UINT_MAX_BYTES
            + sealed
            + _array_size(members, evidence)
            + _array_size(members, first)
        )
    if mtype == MessageType.UPLOAD:
        if n_segments is None:
            return None
        data = _bin_size(n_segments * ciphertext)
        return 1 + _bin_size(ciphertext) + data + 2 * el + dlog + _SIGNATURE_SIZE + digest
    sizes: dict[MessageType, int] = {
        MessageType.ENROLL: 1 + _TOKEN_MAX_BYTES + el + key + dlog,
        MessageType.GET_PARAMS: 1,
        MessageType.PARAMS: 1 + modulus_el + 3 * _UINT_MAX_BYTES + _FLOAT_BYTES + params_info,
        MessageType.GET_KEYS: 1 + _array_size(entries, _ID_MAX_BYTES),
        MessageType.KEYS: 1 + _array_size(entries, entry),
        MessageType.REGISTER_AGGREGATOR: 1 + _TOKEN_MAX_BYTES + 1 + 2 * (el + dlog) + key,
        MessageType.REVOKE: 1 + _TOKEN_MAX_BYTES + _ID_MAX_BYTES,
        MessageType.ACK: 1,
        MessageType.ERROR: 1 + _ID_MAX_BYTES + _TEXT_MAX_BYTES,
        MessageType.ANNOUNCE: 1 + _ID_MAX_BYTES + _UINT_MAX_BYTES + _FLOAT_BYTES,
        MessageType.READY: 1,
        MessageType.CHALLENGE: 1 + el + _array_size(members, first),
        MessageType.RESPONSE: response,
        MessageType.RESULT: 1
        + max(_str_size(len(s.value)) for s in RoundStatus)
        + _array_size(members, _ID_MAX_BYTES)
        + _TEXT_MAX_BYTES,
    }
    return sizes[mtype]


@dataclass(frozen=True)
class SizeLimits:
    """The largest valid message of each type in one federation, to refuse bigger ones by length.

    A receiver checks a message's length against its type's limit right after the header
    (:func:`peek_header` reads nothing else), so a big message costs neither a decode nor a
    signature check. Each limit is the encoded size of the largest message the schema allows
    once the federation's widths and counts are fixed (64-character ids, 256-character tokens,
    texts of 4,096 four-byte characters, 8-byte uints), so no valid message is ever refused;
    all are capped by ``max_bytes``. What the receiver does not know is not bounded: without
    ``n_segments`` an UPLOAD, without ``model_size`` an ENVELOPE may take ``max_bytes``; without
    ``max_members`` or ``max_entries`` lists may hold the schema's 2^18 items. ``ctx`` None (a
    requester before PARAMS) assumes the largest modulus, 1024 bytes.
    """

    ctx: WireContext | None
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    #: Data segments u of an UPLOAD (``SystemParams.n_segments`` of the upload length).
    n_segments: int | None = None
    #: Model values (float64) sealed in an ENVELOPE (the task's model size).
    model_size: int | None = None
    #: Members of S: the federation's ``max_clients`` (ENVELOPE, CHALLENGE, RESULT and evidence).
    max_members: int | None = None
    #: Ids of a GET_KEYS and entries of its KEYS reply (a requester knows how many it asked for).
    max_entries: int | None = None
    _limits: Mapping[MessageType, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ConfigurationError("max_bytes must be >= 1")
        for name in ("n_segments", "model_size", "max_members", "max_entries"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 0):
                raise ConfigurationError(f"{name} must be an int >= 0")
        element = MAX_MODULUS_BYTES if self.ctx is None else self.ctx.element_bytes
        ciphertext = 2 * MAX_MODULUS_BYTES if self.ctx is None else self.ctx.ciphertext_bytes
        members = MAX_ARRAY_ITEMS if self.max_members is None else min(self.max_members, MAX_ARRAY_ITEMS)
        entries = MAX_ARRAY_ITEMS if self.max_entries is None else min(self.max_entries, MAX_ARRAY_ITEMS)
        limits = {}
        for mtype in MessageType:
            body = _largest_body(
                mtype,
                element,
                ciphertext,
                n_segments=self.n_segments,
                model_size=self.model_size,
                members=members,
                entries=entries,
            )
            whole = self.max_bytes if body is None else HEADER_MAX_BYTES + body + _SIGNATURE_SIZE
            limits[mtype] = min(whole, self.max_bytes)
        object.__setattr__(self, "_limits", MappingProxyType(limits))

    def limit(self, mtype: MessageType) -> int:
        """The largest message of type ``mtype`` this receiver accepts, in bytes."""
        return self._limits[mtype]

    def check(self, mtype: MessageType, size: int) -> None:
        """OversizeMessageError if a ``mtype`` message of ``size`` bytes cannot be a valid one."""
        limit = self._limits[mtype]
        if size > limit:
            raise OversizeMessageError(f"{mtype.value} of {size} bytes exceeds its limit of {limit}")


# -- header ----------------------------------------------------------------------------------------


def _message_type(value: Any) -> MessageType:
    if type(value) is not str and not isinstance(value, MessageType):
        raise MalformedMessageError("type: expected a string")
    try:
        return MessageType(value)
    except ValueError as exc:
        raise MalformedMessageError("type: unknown message type") from exc


def _encode_header(header: Header) -> list[Any]:
    if type(header.version) is not int or header.version != PROTOCOL_VERSION:
        raise UnsupportedVersionError(f"this build encodes protocol version {PROTOCOL_VERSION} only")
    return [
        PROTOCOL_VERSION,
        _message_type(header.type).value,
        check_id(header.federation, "federation"),
        _UINT.encode(header.round, None, "round"),
        _UINT.encode(header.attempt, None, "attempt"),
        check_id(header.sender, "sender"),
    ]


def _read_header(reader: Reader) -> Header:
    n = reader.array("message", min_items=1)
    # The version comes first, so a future layout is reported as a version problem.
    version = _UINT.read(reader, None, "version")
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersionError(f"protocol version {version} (this build speaks {PROTOCOL_VERSION})")
    if n != _WIRE_FIELDS:
        raise MalformedMessageError(f"message: expected {_WIRE_FIELDS} elements, got {n}")
    return Header(
        type=_message_type(reader.scalar("type")),
        federation=check_id(reader.scalar("federation"), "federation"),
        round=_UINT.read(reader, None, "round"),
        attempt=_UINT.read(reader, None, "attempt"),
        sender=check_id(reader.scalar("sender"), "sender"),
        version=version,
    )


def _checked_size(data: object, max_bytes: int) -> int:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessageError("message is not bytes")
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > max_bytes:  # before any parsing or copying: an oversize message costs only its length
        raise OversizeMessageError(f"message of {size} bytes exceeds the limit of {max_bytes}")
    if not size:
        raise MalformedMessageError("empty message")
    return size


def _reader(data: bytes | bytearray | memoryview) -> Reader:
    return Reader(data if isinstance(data, bytes) else bytes(data))


def _codec_for(mtype: MessageType, ctx: WireContext | None) -> Codec:
    codec = _BODY_CODECS[mtype]
    if codec.needs_ctx and ctx is None:
        raise MalformedMessageError(f"{mtype.value}: carries group elements; a WireContext is needed")
    return codec


def _signed_elements(header: Header, body: Body, ctx: WireContext | None) -> bytes:
    """msgpack of the 7 signed elements, without the array header (shared by wire and signing bytes)."""
    head = _encode_header(header)
    mtype = MessageType(head[1])
    expected = BODY_TYPES[mtype]
    if type(body) is not expected:
        raise MalformedMessageError(f"{mtype.value} carries a {expected.__name__}, not {type(body).__name__}")
    encoded = _codec_for(mtype, ctx).encode(body, ctx, expected.__name__)
    # An array's msgpack form is its header followed by its elements' forms.
    return b"".join(pack(value) for value in (*head, encoded))


# -- messages --------------------------------------------------------------------------------------


def encode(
    header: Header,
    body: Body,
    signer: SigningKeyPair,
    ctx: WireContext | None,
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> bytes:
    """Validate, sign and serialize one message; ``ctx`` may be None only for bodies without elements."""
    elements = _signed_elements(header, body, ctx)
    size = len(_WIRE_ARRAY) + len(elements) + 2 + SIGNATURE_BYTES  # bin8 header: 2 bytes
    if size > max_bytes:  # refuse here rather than have every receiver drop it
        raise OversizeMessageError(f"message of {size} bytes exceeds the limit of {max_bytes}")
    signature = signer.sign(SIGNING_DOMAIN + _SIGNED_ARRAY + elements)
    return _WIRE_ARRAY + elements + pack(signature)


def decode(
    data: bytes | bytearray | memoryview,
    ctx: WireContext | None,
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    limits: SizeLimits | None = None,
) -> Signed:
    """Parse and structurally validate one message (the signature is checked by :func:`verify`).

    With ``limits``, a message longer than its type's limit is refused after the header,
    before the body is parsed. Raises OversizeMessageError, UnsupportedVersionError or
    MalformedMessageError.
    """
    size = _checked_size(data, max_bytes)
    reader = _reader(data)
    header = _read_header(reader)
    if limits is not None:
        limits.check(header.type, size)
    body = _codec_for(header.type, ctx).read(reader, ctx, BODY_TYPES[header.type].__name__)
    signature = _SIGNATURE.read(reader, None, "signature")
    reader.finish()
    return Signed(header, body, signature)


def peek_header(
    data: bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> Header:
    """The validated header alone, for routing, size and replay checks before the body.

    Only the first :data:`HEADER_MAX_BYTES` bytes are read (and copied), whatever the
    message's size: a valid header always fits, and an invalid one is refused either way.
    """
    _checked_size(data, max_bytes)
    return _read_header(_reader(memoryview(data)[:HEADER_MAX_BYTES]))


def signing_bytes(msg: Signed, ctx: WireContext | None) -> bytes:
    """The bytes the sender signed: SIGNING_DOMAIN + msgpack of the first 7 wire elements."""
    return SIGNING_DOMAIN + _SIGNED_ARRAY + _signed_elements(msg.header, msg.body, ctx)


def verify(msg: Signed, verify_key: bytes, ctx: WireContext | None) -> None:
    """Check ``msg``'s signature under ``verify_key`` (the sender's registered key); SignatureError."""
    verify_signature(verify_key, msg.signature, signing_bytes(msg, ctx))


# -- first components (crypto note section 5) -----------------------------------------------------


@dataclass(frozen=True)
class FirstComponentSigned:
    """What a member's first-component signature covers (besides federation, round, attempt, id)."""

    first: int
    proof: DlogProof
    context_digest: bytes


def _first_bytes_fast(
    federation: str, round: int, attempt: int, sender: str, signed: FirstComponentSigned, ctx: WireContext
) -> bytes | None:
    """:func:`first_component_bytes` without the generic codecs, for plain values; None otherwise.

    Performance only (a client checks ~90 of these per challenge): when every value has
    exactly the type and range the codecs accept (ids by the same check, ints and bytes of
    the right widths, a DlogProof) the bytes are assembled directly, in the same canonical
    form; anything else (also every case the codecs refuse) takes the generic path.
    """
    proof = signed.proof
    first, digest = signed.first, signed.context_digest
    if (
        type(round) is not int
        or type(attempt) is not int
        or not 0 <= round <= MAX_UINT
        or not 0 <= attempt <= MAX_UINT
        or type(proof) is not DlogProof
        or type(first) is not int
        or type(proof.commitment) is not int
        or type(proof.response) is not int
        or type(digest) is not bytes
        or len(digest) != DIGEST_BYTES
        or not 0 <= proof.response < 1 << RESPONSE_BITS
    ):
        return None
    width = ctx.element_bytes
    if not 0 <= first < 1 << (8 * width) or not 0 <= proof.commitment < 1 << (8 * width):
        return None
    head = pack([check_id(federation, "federation"), round, attempt, check_id(sender, "sender")])
    element = _bin_header(width)
    return b"".join(
        (
            FIRST_DOMAIN,
            b"\x97",  # the 7-element array: the 4 header values above, then A_i, [t, z], digest
            head[1:],
            element,
            first.to_bytes(width, "big"),
            b"\x92",
            element,
            proof.commitment.to_bytes(width, "big"),
            _bin_header(_RESPONSE_WIDTH),
            proof.response.to_bytes(_RESPONSE_WIDTH, "big"),
            _bin_header(DIGEST_BYTES),
            digest,
        )
    )


def first_component_bytes(
    federation: str, round: int, attempt: int, sender: str, signed: FirstComponentSigned, ctx: WireContext
) -> bytes:
    """What a member signs for its A_i, so a Challenge can carry it verifiably to the others.

    ``FIRST_DOMAIN || msgpack([federation, round, attempt, sender, A_i, [t, z], context_digest])``:
    bound to federation, round and attempt so it cannot be replayed elsewhere; the proof and
    the attempt context it was made for are covered too, so a first component whose proof
    fails *for the context it names* is, signed, proof that its member cheated (evidence),
    while a member shown another S by an equivocating aggregator signs that other context.
    """
    fast = _first_bytes_fast(federation, round, attempt, sender, signed, ctx)
    if fast is not None:
        return fast
    return FIRST_DOMAIN + pack(
        [
            check_id(federation, "federation"),
            _UINT.encode(round, None, "round"),
            _UINT.encode(attempt, None, "attempt"),
            check_id(sender, "sender"),
            _ELEMENT.encode(signed.first, ctx, "first"),
            _DLOG_PROOF.encode(signed.proof, ctx, "first_proof"),
            _DIGEST.encode(signed.context_digest, ctx, "context_digest"),
        ]
    )


def sign_first(
    signer: SigningKeyPair,
    federation: str,
    round: int,
    attempt: int,
    sender: str,
    signed: FirstComponentSigned,
    ctx: WireContext,
) -> bytes:
    """The Upload.first_signature of member ``sender``."""
    return signer.sign(first_component_bytes(federation, round, attempt, sender, signed, ctx))


def verify_first(
    verify_key: bytes,
    signature: bytes,
    federation: str,
    round: int,
    attempt: int,
    sender: str,
    signed: FirstComponentSigned,
    ctx: WireContext,
) -> None:
    """Check a member's first-component signature (in an Upload, a Challenge or evidence); SignatureError."""
    verify_signature(
        verify_key, signature, first_component_bytes(federation, round, attempt, sender, signed, ctx)
    )
