"""A strict, schema-driven msgpack reader for untrusted messages, and the one msgpack packer.

Why not ``msgpack.unpackb``: a generic unpacker allocates every container as
soon as it reads its header, so a few kilobytes of nested array headers that
each claim 2^32 elements could make it allocate gigabytes before it notices the
data is short. :class:`Reader` is driven by the message schema instead:

* it enters an array only where the schema expects one, and checks the declared
  length against the bytes left (every element takes at least one byte);
* it peeks at the type byte before unpacking a scalar, so it never unpacks a
  container, a map or an ext value by accident;
* the unpacker's own limits (``max_str_len``, ``max_bin_len``,
  ``max_array_len``, no maps, no ext) back this up;
* every value must be in its shortest msgpack encoding, so a message has exactly
  one byte form, which is what makes "re-encode and check the signature" sound.

Every failure is a :class:`~fedcast.shared.errors.MalformedMessageError`.
"""

from __future__ import annotations

from typing import Any

import msgpack

from fedcast.shared.errors import MalformedMessageError

__all__ = ["MAX_ARRAY_ITEMS", "MAX_STR_BYTES", "Reader", "fail", "pack"]

#: Longest array in any message: member lists, challenge first components, registry entries, evidence.
MAX_ARRAY_ITEMS = 2**18
#: Longest msgpack str in bytes (4,096 characters of at most 4 UTF-8 bytes each).
MAX_STR_BYTES = 4 * 4096


def pack(value: Any) -> bytes:
    """msgpack with the protocol's options: str and bin distinct, floats as float64, shortest forms."""
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def fail(what: str, reason: str) -> MalformedMessageError:
    """The error for field ``what`` (a path like ``Upload.first``); never quotes the value."""
    return MalformedMessageError(f"{what}: {reason}")


def _is_array(byte: int) -> bool:
    return 0x90 <= byte <= 0x9F or byte in (0xDC, 0xDD)


def _is_map(byte: int) -> bool:
    return 0x80 <= byte <= 0x8F or byte in (0xDE, 0xDF)


def _is_scalar(byte: int) -> bool:
    # Everything but containers, ext types (0xc7-0xc9, 0xd4-0xd8) and the never-used byte 0xc1.
    return not (
        _is_array(byte) or _is_map(byte) or byte == 0xC1 or 0xC7 <= byte <= 0xC9 or 0xD4 <= byte <= 0xD8
    )


class Reader:
    """Reads one message front to back."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._unpacker = msgpack.Unpacker(
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_buffer_size=max(len(data), 1),
            max_bin_len=len(data),
            max_str_len=MAX_STR_BYTES,
            max_array_len=MAX_ARRAY_ITEMS,
            max_map_len=0,
            max_ext_len=0,
        )
        self._unpacker.feed(data)

    def _peek(self, what: str) -> tuple[int, int]:
        pos: int = self._unpacker.tell()
        if pos >= len(self._data):
            raise fail(what, "message is truncated")
        byte = self._data[pos]
        if _is_map(byte):
            raise fail(what, "maps are not allowed in fedcast messages")
        return pos, byte

    def array(self, what: str, *, exact: int | None = None, min_items: int = 0) -> int:
        """Enter an array; return its declared length after checking it against the data left."""
        start, byte = self._peek(what)
        if not _is_array(byte):
            raise fail(what, "expected an array")
        try:
            n: int = self._unpacker.read_array_header()
        except (msgpack.UnpackException, ValueError) as exc:  # truncated, or over max_array_len
            raise fail(what, "bad array header") from exc
        if self._unpacker.tell() - start != (1 if n < 16 else 3 if n < 2**16 else 5):
            raise fail(what, "non-canonical array header")
        if n > len(self._data) - self._unpacker.tell():  # every element takes at least one byte
            raise fail(what, "array is longer than the message")
        if n > MAX_ARRAY_ITEMS:  # read_array_header does not apply max_array_len itself
            raise fail(what, f"more than {MAX_ARRAY_ITEMS} elements")
        if exact is not None and n != exact:
            raise fail(what, f"expected {exact} elements, got {n}")
        if n < min_items:
            raise fail(what, f"expected at least {min_items} elements, got {n}")
        return n

    def next_is_nil(self, what: str) -> bool:
        return self._peek(what)[1] == 0xC0

    def scalar(self, what: str) -> Any:
        """Unpack one non-container value, refusing any but its shortest encoding."""
        data = self._data
        start: int = self._unpacker.tell()
        if start < len(data):
            fast = self._common_scalar(start, data[start])
            if fast is not None:
                self._unpacker.skip()  # the bounds were checked: moves past exactly this value
                return fast[0]
        start, byte = self._peek(what)
        if not _is_scalar(byte):
            raise fail(what, "expected a scalar (arrays, maps and ext types are not allowed here)")
        try:
            value = self._unpacker.unpack()
        except (msgpack.UnpackException, ValueError) as exc:  # OutOfData, limits, bad UTF-8
            raise fail(what, "undecodable value") from exc
        if pack(value) != memoryview(self._data)[start : self._unpacker.tell()]:
            raise fail(what, "non-canonical encoding")
        return value

    def _common_scalar(self, start: int, byte: int) -> tuple[Any] | None:
        """The value of a bin 8 / bin 16, fixstr or positive fixint at ``start``, if canonical and
        complete; None for anything else (the general path decides). Performance only: the
        same values and refusals as the general path, without unpacking and re-packing (the
        bulk of a CHALLENGE is bins: members' A, proofs and signatures)."""
        data = self._data
        if byte == 0xC4 and start + 1 < len(data):  # bin 8: always canonical
            end = start + 2 + data[start + 1]
            return (data[start + 2 : end],) if end <= len(data) else None
        if byte == 0xC5:  # bin 16: canonical from 256 bytes
            size = int.from_bytes(data[start + 1 : start + 3], "big")
            end = start + 3 + size
            if end > len(data) or len(data) - start < 3 or size < 256:
                return None
            return (data[start + 3 : end],)
        if 0xA0 <= byte <= 0xBF:  # fixstr: canonical below 32 bytes, which is all it holds
            end = start + 1 + (byte & 0x1F)
            if end > len(data):
                return None
            try:
                return (data[start + 1 : end].decode("utf-8"),)
            except UnicodeDecodeError:
                return None
        if byte <= 0x7F:  # positive fixint
            return (byte,)
        return None

    @property
    def data(self) -> bytes:
        """The whole message (for a caller's own fixed-layout fast path; see :meth:`skip_parsed`)."""
        return self._data

    def tell(self) -> int:
        """The offset of the next value."""
        pos: int = self._unpacker.tell()
        return pos

    def skip_parsed(self, end: int) -> None:
        """Move past the one value that starts here and ends at ``end``.

        Performance only: for a caller that already parsed and validated that value from
        :attr:`data` itself (no unpacking of its items). The unpacker skips it in C, and
        must land exactly on ``end``.
        """
        try:
            self._unpacker.skip()
        except (msgpack.UnpackException, ValueError) as exc:  # pragma: no cover - parsed already
            raise MalformedMessageError("a value the fast path accepted is undecodable") from exc
        if self._unpacker.tell() != end:  # pragma: no cover - the fast path parsed exactly this value
            raise MalformedMessageError("a value the fast path accepted has another length")

    def finish(self) -> None:
        """Insist that the message ended exactly here."""
        if self._unpacker.tell() != len(self._data):
            raise MalformedMessageError("trailing bytes after the message")
