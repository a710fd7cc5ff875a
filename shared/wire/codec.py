"""Field codecs of the v2 wire format: each validates on the way out and on the way in.

:mod:`fedcast.shared.wire.serde` describes every message body as a list of these codecs
in field order. Because the same checks run in ``encode`` and ``read``, the
encoder never produces bytes the decoder would refuse. ``encode`` returns a
msgpack-ready value; ``read`` pulls the field from a
:class:`~fedcast.shared.wire.reader.Reader` and returns the Python value.
"""

from __future__ import annotations

import itertools
import math
import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from fedcast.shared.errors import ConfigurationError
from fedcast.shared.wire.reader import MAX_ARRAY_ITEMS, Reader, fail

if TYPE_CHECKING:
    from fedcast.shared.crypto.group import GroupParams

__all__ = [
    "ID_PATTERN",
    "MAX_MODULUS_BYTES",
    "MAX_TEXT_CHARS",
    "MAX_TOKEN_CHARS",
    "MAX_UINT",
    "BoolCodec",
    "BytesCodec",
    "CiphertextCodec",
    "Codec",
    "ElementCodec",
    "EnumCodec",
    "FloatCodec",
    "IdCodec",
    "ModulusCodec",
    "OptionalCodec",
    "ResponseCodec",
    "SegmentsCodec",
    "SeqCodec",
    "StructCodec",
    "TextCodec",
    "TokenCodec",
    "UIntCodec",
    "WireContext",
    "check_id",
]

#: Client, federation and sender ids, reason codes and task names: short printable ASCII that is
#: safe in logs, metric labels, file names and AMQP routing keys.
ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
#: Free text (ErrorReply.message, RoundResult.detail): enough for a sentence, not for a payload.
MAX_TEXT_CHARS = 4096
#: Enrollment and admin tokens: printable ASCII without spaces.
MAX_TOKEN_CHARS = 256
_TOKEN_PATTERN = re.compile(rf"[\x21-\x7e]{{1,{MAX_TOKEN_CHARS}}}", re.ASCII)
# C0/C1 control characters other than tab and newline: no business in a message, and they could
# rewrite the terminal of whoever reads a log line that quotes one.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: Small integers (round, attempt, counts) fit a signed 64-bit integer in every language.
MAX_UINT = 2**63 - 1
#: N of PARAMS: 8192 bits is far beyond any supported modulus (2048/3072).
MAX_MODULUS_BYTES = 1024


@dataclass(frozen=True)
class WireContext:
    """The fixed byte widths of big integers on the wire, set by the federation's group."""

    element_bytes: int  # ceil(|N| / 8): group elements mod N
    ciphertext_bytes: int  # ceil(|N^2| / 8): segment ciphertexts mod N^2

    def __post_init__(self) -> None:
        for name in ("element_bytes", "ciphertext_bytes"):
            width = getattr(self, name)
            if type(width) is not int or not 1 <= width <= 2 * MAX_MODULUS_BYTES:
                raise ConfigurationError(f"WireContext.{name} must be an int in [1, {2 * MAX_MODULUS_BYTES}]")

    @classmethod
    def from_group(cls, group: GroupParams) -> WireContext:
        return cls(group.element_bytes, group.ciphertext_bytes)

    @classmethod
    def from_modulus(cls, p: int) -> WireContext:
        """Widths for modulus ``p`` (what a PARAMS message implies)."""
        if p <= 1:
            raise ConfigurationError("a modulus must be > 1")
        return cls((p.bit_length() + 7) // 8, ((p * p).bit_length() + 7) // 8)


def check_id(value: Any, what: str) -> str:
    """Return ``value`` if it is an id (1..64 chars of ``[A-Za-z0-9._-]``), else raise."""
    if type(value) is not str or ID_PATTERN.fullmatch(value) is None:
        raise fail(what, "not an id (1-64 characters of A-Z a-z 0-9 . _ -)")
    return value


def _index(value: Any, what: str) -> int:
    """An int from int, numpy or gmpy2 integers; never from a bool, float or str."""
    if isinstance(value, bool):
        raise fail(what, "expected an integer, got a bool")
    try:
        return operator.index(value)
    except TypeError as exc:
        raise fail(what, "expected an integer") from exc


class Codec(ABC):
    """One field kind."""

    #: Whether the codec needs the group widths of a WireContext.
    needs_ctx: bool = False

    @abstractmethod
    def encode(self, value: Any, ctx: WireContext | None, what: str) -> Any: ...

    @abstractmethod
    def read(self, reader: Reader, ctx: WireContext | None, what: str) -> Any: ...


class _Scalar(Codec):
    """A codec whose wire value is one msgpack scalar checked by :meth:`check` both ways."""

    @abstractmethod
    def check(self, value: Any, what: str) -> Any: ...

    def encode(self, value: Any, ctx: WireContext | None, what: str) -> Any:
        return self.check(value, what)

    def read(self, reader: Reader, ctx: WireContext | None, what: str) -> Any:
        return self.check(reader.scalar(what), what)


class UIntCodec(_Scalar):
    """0 <= x <= 2^63 - 1 as a msgpack int (a bool is not an int here)."""

    def check(self, value: Any, what: str) -> Any:
        if type(value) is not int or not 0 <= value <= MAX_UINT:
            raise fail(what, "expected an integer in [0, 2^63 - 1]")
        return value

    def encode(self, value: Any, ctx: WireContext | None, what: str) -> Any:
        return self.check(_index(value, what), what)


class FloatCodec(_Scalar):
    """A finite float64; on decode an int where a float is expected is refused."""

    def check(self, value: Any, what: str) -> Any:
        if type(value) is not float:
            raise fail(what, "expected a float64")
        if not math.isfinite(value):
            raise fail(what, "float is not finite")
        return value

    def encode(self, value: Any, ctx: WireContext | None, what: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail(what, "expected a float")
        return self.check(float(value), what)


class BoolCodec(_Scalar):
    """msgpack true/false only: 0 and 1 are not booleans."""

    def check(self, value: Any, what: str) -> Any:
        if type(value) is not bool:
            raise fail(what, "expected a bool")
        return value


class IdCodec(_Scalar):
    def check(self, value: Any, what: str) -> Any:
        return check_id(value, what)


class TextCodec(_Scalar):
    """Free text: at most MAX_TEXT_CHARS characters, no control characters but tab and newline."""

    def check(self, value: Any, what: str) -> Any:
        if type(value) is not str:
            raise fail(what, "expected a string")
        if len(value) > MAX_TEXT_CHARS:
            raise fail(what, f"text longer than {MAX_TEXT_CHARS} characters")
        if _CONTROL.search(value):
            raise fail(what, "text contains control characters")
        try:
            value.encode()
        except UnicodeEncodeError as exc:  # lone surrogates cannot be sent as UTF-8
            raise fail(what, "text is not valid Unicode") from exc
        return value


class TokenCodec(_Scalar):
    """A secret token: 1..256 printable ASCII characters. Errors never quote it."""

    def check(self, value: Any, what: str) -> Any:
        if type(value) is not str or _TOKEN_PATTERN.fullmatch(value) is None:
            raise fail(what, f"expected a token of 1-{MAX_TOKEN_CHARS} printable ASCII characters")
        return value


class BytesCodec(_Scalar):
    """A msgpack bin, of exactly ``size`` bytes if given."""

    def __init__(self, size: int | None = None) -> None:
        self.size = size

    def check(self, value: Any, what: str) -> Any:
        if type(value) is not bytes:
            raise fail(what, "expected bytes")
        if self.size is not None and len(value) != self.size:
            raise fail(what, f"expected {self.size} bytes, got {len(value)}")
        return value


class EnumCodec(_Scalar):
    """A StrEnum member as its string value."""

    def __init__(self, enum: type[StrEnum]) -> None:
        self.enum = enum

    def check(self, value: Any, what: str) -> Any:
        if type(value) is not str and not isinstance(value, self.enum):
            raise fail(what, f"expected a {self.enum.__name__}")
        try:
            return self.enum(value)
        except ValueError as exc:
            raise fail(what, f"unknown {self.enum.__name__}") from exc

    def encode(self, value: Any, ctx: WireContext | None, what: str) -> Any:
        return self.check(value, what).value


# -- big integers ----------------------------------------------------------------------------------


def _need(ctx: WireContext | None, what: str) -> WireContext:
    if ctx is None:
        raise fail(what, "big integers need the group's WireContext")
    return ctx


def _to_fixed(value: Any, width: int, what: str) -> bytes:
    try:
        return _index(value, what).to_bytes(width, "big")
    except OverflowError as exc:  # negative, or too wide for the group
        raise fail(what, f"integer does not fit {width} unsigned bytes") from exc


class ElementCodec(Codec):
    """A group element mod N: big-endian bin of exactly ``element_bytes`` (range checks are crypto's)."""

    needs_ctx = True

    def encode(self, value: Any, ctx: WireContext | None, what: str) -> Any:
        return _to_fixed(value, _need(ctx, what).element_bytes, what)

    def read(self, reader: Reader, ctx: WireContext | None, what: str) -> Any:
        raw = BytesCodec(_need(ctx, what).element_bytes).read(reader, ctx, what)
        return int.from_bytes(raw, "big")


class CiphertextCodec(Codec):
    """One ciphertext mod N^2 (the key segment): big-endian bin of exactly ``ciphertext_bytes``."""

    needs_ctx = True

    def encode(self, value: Any, ctx: WireContext | None, what: str) -> Any:
        return _to_fixed(value, _need(ctx, what).ciphertext_bytes, what)

    def read(self, reader: Reader, ctx: WireContext | None, what: str) -> Any:
        raw = BytesCodec(_need(ctx, what).ciphertext_bytes).read(reader, ctx, what)
        return int.from_bytes(raw, "big")


class ResponseCodec(Codec):
    """A proof response z < 2^bits: big-endian bin of exactly ceil(bits / 8) bytes (group-independent)."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.width = (bits + 7) // 8

    def encode(self, value: Any, ctx: WireContext | None, what: str) -> Any:
        number = _index(value, what)
        if not 0 <= number < 1 << self.bits:
            raise fail(what, f"proof response outside [0, 2^{self.bits})")
        return number.to_bytes(self.width, "big")

    def read(self, reader: Reader, ctx: WireContext | None, what: str) -> Any:
        number = int.from_bytes(BytesCodec(self.width).read(reader, ctx, what), "big")
        if number >> self.bits:
            raise fail(what, f"proof response outside [0, 2^{self.bits})")
        return number


class SegmentsCodec(Codec):
    """Segment ciphertexts mod N^2 as ONE bin of len(segments) * ciphertext_bytes, at least one."""

    needs_ctx = True

    def encode(self, value: Any, ctx: WireContext | None, what: str) -> Any:
        width = _need(ctx, what).ciphertext_bytes
        if not isinstance(value, tuple | list) or not value:
            raise fail(what, "expected a non-empty sequence of integers")
        return b"".join(_to_fixed(v, width, f"{what}[{i}]") for i, v in enumerate(value))

    def read(self, reader: Reader, ctx: WireContext | None, what: str) -> Any:
        width = _need(ctx, what).ciphertext_bytes
        blob = BytesCodec().read(reader, ctx, what)
        if not blob or len(blob) % width:
            raise fail(what, f"segment blob of {len(blob)} bytes is not a positive multiple of {width}")
        view = memoryview(blob)
        return tuple(int.from_bytes(view[i : i + width], "big") for i in range(0, len(blob), width))


class ModulusCodec(Codec):
    """A positive integer in minimal big-endian width (N of PARAMS), at most 1024 bytes."""

    def encode(self, value: Any, ctx: WireContext | None, what: str) -> Any:
        number = _index(value, what)
        width = (number.bit_length() + 7) // 8
        if number <= 0 or width > MAX_MODULUS_BYTES:
            raise fail(what, f"expected a positive integer of at most {MAX_MODULUS_BYTES} bytes")
        return number.to_bytes(width, "big")

    def read(self, reader: Reader, ctx: WireContext | None, what: str) -> Any:
        raw = BytesCodec().read(reader, ctx, what)
        if not 1 <= len(raw) <= MAX_MODULUS_BYTES or raw[0] == 0:
            raise fail(
                what, f"expected a minimal-width positive integer of at most {MAX_MODULUS_BYTES} bytes"
            )
        return int.from_bytes(raw, "big")


# -- composites ------------------------------------------------------------------------------------


class OptionalCodec(Codec):
    """``None`` as msgpack nil, anything else through ``inner``."""

    def __init__(self, inner: Codec) -> None:
        self.inner = inner
        self.needs_ctx = inner.needs_ctx

    def encode(self, value: Any, ctx: WireContext | None, what: str) -> Any:
        return None if value is None else self.inner.encode(value, ctx, what)

    def read(self, reader: Reader, ctx: WireContext | None, what: str) -> Any:
        if reader.next_is_nil(what):
            reader.scalar(what)
            return None
        return self.inner.read(reader, ctx, what)


class SeqCodec(Codec):
    """A tuple as an array; optionally unique and sorted by ``key`` (ids sort in byte order)."""

    def __init__(
        self,
        item: Codec,
        *,
        min_items: int = 0,
        unique: bool = False,
        sorted_: bool = False,
        key: Callable[[Any], Hashable] | None = None,
    ) -> None:
        self.item = item
        self.min_items = min_items
        self.unique = unique
        self.sorted = sorted_
        self.key: Callable[[Any], Any] = key or (lambda v: v)
        self.needs_ctx = item.needs_ctx

    def _check(self, items: tuple[Any, ...], what: str) -> tuple[Any, ...]:
        if not self.min_items <= len(items) <= MAX_ARRAY_ITEMS:
            raise fail(what, f"expected {self.min_items} to {MAX_ARRAY_ITEMS} elements, got {len(items)}")
        keys = [self.key(v) for v in items]
        if self.unique and len(set(keys)) != len(keys):
            raise fail(what, "duplicate entries")
        if self.sorted and any(a >= b for a, b in itertools.pairwise(keys)):
            raise fail(what, "entries are not sorted")
        return items

    def encode(self, value: Any, ctx: WireContext | None, what: str) -> Any:
        if not isinstance(value, tuple | list):
            raise fail(what, "expected a tuple")
        encoded = [self.item.encode(v, ctx, f"{what}[{i}]") for i, v in enumerate(value)]
        self._check(tuple(value), what)  # after the items: keys are only comparable once they are valid
        return encoded

    def read(self, reader: Reader, ctx: WireContext | None, what: str) -> Any:
        n = reader.array(what, min_items=self.min_items)
        return self._check(tuple(self.item.read(reader, ctx, f"{what}[{i}]") for i in range(n)), what)


class StructCodec(Codec):
    """A frozen dataclass as the array of its fields in declaration order."""

    def __init__(self, cls: type[Any], fields: tuple[tuple[str, Codec], ...]) -> None:
        self.cls = cls
        self.fields = fields
        self.needs_ctx = any(codec.needs_ctx for _, codec in fields)

    def encode(self, value: Any, ctx: WireContext | None, what: str) -> Any:
        if type(value) is not self.cls:
            raise fail(what, f"expected a {self.cls.__name__}")
        return [codec.encode(getattr(value, name), ctx, f"{what}.{name}") for name, codec in self.fields]

    def read(self, reader: Reader, ctx: WireContext | None, what: str) -> Any:
        reader.array(what, exact=len(self.fields))
        values = {name: codec.read(reader, ctx, f"{what}.{name}") for name, codec in self.fields}
        return self.cls(**values)
