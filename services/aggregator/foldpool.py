"""The aggregator's work on several cores: helper processes that fold segments and check proofs.

Folding (one 4096-bit multiplication per data segment per member) and the batch
check of every member's proof of knowledge of r2 are the aggregator's largest
per-round costs, and gmpy2 holds the GIL, so threads do not help.
:class:`ProcessFolder` splits the segment indices into contiguous shards (this
process folds the first shard itself, each helper process one other shard) and
splits a set of proofs the same way (each part gets its own batch test). Helpers
are plain subprocesses (``python -m fedcast.services.aggregator.foldpool``) speaking a tiny
binary protocol over their stdin/stdout; nothing is pickled::

    "S" u32(count) u32(width) u32(len) modulus   start a product of ``count`` segments (all 1)
    "F" u32(length) blob                          multiply in ``count`` values of ``width`` bytes
    "P"                                           reply with the ``count`` products, ``width`` bytes each
    "V" u32(length) payload                       check proofs; reply u32(count) u32(index)... of failures

A helper that dies is noticed at :meth:`ProcessFolder.products` (InternalError:
the caller retries the attempt, before any member answered) and respawned at the
next :meth:`ProcessFolder.start`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import IO, Any

import gmpy2
from gmpy2 import mpz

from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.proofs import DlogProof, DlogStatement, dlog_failures
from fedcast.shared.errors import ConfigurationError, InternalError

__all__ = ["ProcessFolder", "default_workers", "worker_main"]

# The width of a proof response on the pipe (any response the wire accepts fits).
_Z_BYTES = 96


#: This process's share of the segments relative to a helper's (it also screens each upload and
#: serializes the helpers' shards).
_OWN_SHARE = 0.8


def default_workers() -> int:
    """Helpers to use: one per extra CPU this process may run on (0 on a single core)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(0, cpus - 1)


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) != size:
        raise EOFError("fold helper pipe closed")
    return data


class _Helper:
    """One helper process and its shard [lo, hi)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fedcast.services.aggregator.foldpool"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.lo = self.hi = 0

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def read(self, size: int) -> bytes:
        assert self.process.stdout is not None
        return _read_exact(self.process.stdout, size)

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # a dead helper's pipe cannot flush what is buffered
                    stream.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a wedged helper
            self.process.kill()
            self.process.wait()


class ProcessFolder:
    """A :class:`fedcast.shared.crypto.elgamal.SegmentFolder` over this process and ``workers`` helpers."""

    def __init__(self, modulus: Any, *, workers: int | None = None) -> None:
        count = default_workers() if workers is None else workers
        if count < 0:
            raise ConfigurationError("workers must be >= 0")
        self._m = mpz(modulus)
        self._width = int(self._m.bit_length() + 7) // 8
        self._helpers = [_Helper() for _ in range(count)]
        self._own: list[mpz] = []
        self._n = 0
        self._broken = False

    @property
    def workers(self) -> int:
        return len(self._helpers)

    def start(self, n_segments: int) -> None:
        weights = [_OWN_SHARE] + [1.0] * len(self._helpers)
        total = sum(weights)
        cut = [0.0]
        for w in weights:
            cut.append(cut[-1] + w)
        bounds = [round(n_segments * c / total) for c in cut]
        self._n = n_segments
        self._own = [mpz(1)] * bounds[1]
        self._broken = False
        header = self._m.to_bytes((self._m.bit_length() + 7) // 8, "big")
        for k, helper in enumerate(self._helpers):
            if not helper.alive:
                helper.close()
                self._helpers[k] = helper = _Helper()
            helper.lo, helper.hi = bounds[k + 1], bounds[k + 2]
            try:
                helper.send(
                    b"S" + _u32(helper.hi - helper.lo) + _u32(self._width) + _u32(len(header)) + header
                )
            except OSError:
                self._broken = True

    def fold(self, segments: Sequence[mpz]) -> None:
        if len(segments) != self._n:
            raise InternalError(f"fold of {len(segments)} segments into a product of {self._n}")
        width = self._width
        for helper in self._helpers:
            if self._broken:
                break
            blob = b"".join(mpz(x).to_bytes(width, "big") for x in segments[helper.lo : helper.hi])
            try:  # the helper works while this process folds its own shard below
                helper.send(b"F" + _u32(len(blob)) + blob)
            except OSError:
                self._broken = True
        m = self._m
        self._own = [a * e % m for a, e in zip(self._own, segments[: len(self._own)], strict=True)]

    def products(self) -> list[mpz]:
        out = list(self._own)
        width = self._width
        for helper in self._helpers:
            count = helper.hi - helper.lo
            try:
                if self._broken:
                    raise OSError("a fold helper failed earlier")
                helper.send(b"P")
                raw = helper.read(count * width)
            except (OSError, EOFError) as exc:
                self._broken = True
                raise InternalError("a fold helper process failed; the attempt must be retried") from exc
            out.extend(mpz.from_bytes(raw[i : i + width], "big") for i in range(0, len(raw), width))
        return out

    def dlog_failures(self, group: GroupParams, items: Sequence[DlogStatement]) -> dict[int, str]:
        """:func:`fedcast.shared.crypto.proofs.dlog_failures`, split over this process and the helpers.

        Each part is screened (element rule, ranges, hashes) and batch-tested where it is
        checked, a helper with its own random exponents; the culprits a helper reports are
        checked again here (to word the reason). A helper that fails has its part checked
        here; a statement that does not serialize (not an integer in range) stays here too.
        """
        parts = len(self._helpers) + 1
        here = [i for i, item in enumerate(items) if not _serializable(group, item)]
        rest = [i for i, item in enumerate(items) if _serializable(group, item)]
        shares = [rest[k * len(rest) // parts : (k + 1) * len(rest) // parts] for k in range(parts)]
        here += shares[0]
        asked: list[tuple[_Helper, list[int]]] = []
        for helper, share in zip(self._helpers, shares[1:], strict=True):
            if not share:
                continue
            try:
                if not helper.alive:
                    raise OSError("helper is gone")
                helper.send(b"V" + _verify_payload(group, [items[i] for i in share]))
                asked.append((helper, share))
            except OSError:
                here += share
        suspects: list[int] = []
        local = dlog_failures(group, [items[i] for i in here])
        failures = {here[k]: why.replace(f"proof {k}", f"proof {here[k]}", 1) for k, why in local.items()}
        for helper, share in asked:
            try:
                count = int.from_bytes(helper.read(4), "big")
                suspects += [share[int.from_bytes(helper.read(4), "big")] for _ in range(count)]
            except (OSError, EOFError, IndexError):
                suspects += share  # the helper died (or spoke nonsense): its part is checked here
        if suspects:
            again = dlog_failures(group, [items[i] for i in suspects])
            failures.update(
                {
                    suspects[k]: why.replace(f"proof {k}", f"proof {suspects[k]}", 1)
                    for k, why in again.items()
                }
            )
        return failures

    def close(self) -> None:
        """Stop the helpers (safe to call twice)."""
        helpers, self._helpers = self._helpers, []
        for helper in helpers:
            helper.close()

    def __enter__(self) -> ProcessFolder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _serializable(group: GroupParams, item: DlogStatement) -> bool:
    values = (item.public, item.proof.commitment, item.proof.response)
    return (
        all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v for v in values)
        and all(v < group.n for v in values[:2])
        and item.proof.response < (1 << (8 * _Z_BYTES))
    )


def _field(data: bytes) -> bytes:
    return _u32(len(data)) + data


def _verify_payload(group: GroupParams, items: Sequence[DlogStatement]) -> bytes:
    width = group.element_bytes
    parts = [_field(int(group.n).to_bytes(width, "big")), _u32(len(items))]
    for item in items:
        parts.append(int(item.public).to_bytes(width, "big"))
        parts.append(int(item.proof.commitment).to_bytes(width, "big"))
        parts.append(int(item.proof.response).to_bytes(_Z_BYTES, "big"))
        parts.append(_field(item.context))
    payload = b"".join(parts)
    return _u32(len(payload)) + payload


@functools.lru_cache(maxsize=4)
def _group(n: int) -> GroupParams:
    return GroupParams(mpz(n), insecure=True)  # the parent validated N; this only derives g


def _verify(payload: bytes) -> list[int]:
    """The failing indices of the proofs in a "V" payload."""
    view = memoryview(payload)
    width = int.from_bytes(view[:4], "big")
    n = int.from_bytes(view[4 : 4 + width], "big")
    count = int.from_bytes(view[4 + width : 8 + width], "big")
    offset = 8 + width
    items: list[DlogStatement] = []
    for _ in range(count):
        x = int.from_bytes(view[offset : offset + width], "big")
        t = int.from_bytes(view[offset + width : offset + 2 * width], "big")
        offset += 2 * width
        z = int.from_bytes(view[offset : offset + _Z_BYTES], "big")
        offset += _Z_BYTES
        size = int.from_bytes(view[offset : offset + 4], "big")
        context = bytes(view[offset + 4 : offset + 4 + size])
        offset += 4 + size
        items.append(DlogStatement(x, DlogProof(t, z), context))
    return sorted(dlog_failures(_group(n), items))


def worker_main(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The helper's loop (see the module docstring); returns when stdin closes."""
    modulus = mpz(0)
    width = 0
    products: list[mpz] = []
    while True:
        op = stdin.read(1)
        if not op:
            return
        if op == b"S":
            count = int.from_bytes(_read_exact(stdin, 4), "big")
            width = int.from_bytes(_read_exact(stdin, 4), "big")
            modulus = mpz.from_bytes(_read_exact(stdin, int.from_bytes(_read_exact(stdin, 4), "big")), "big")
            products = [mpz(1)] * count
        elif op == b"F":
            blob = _read_exact(stdin, int.from_bytes(_read_exact(stdin, 4), "big"))
            values = [mpz.from_bytes(blob[i : i + width], "big") for i in range(0, len(blob), width)]
            products = [a * e % modulus for a, e in zip(products, values, strict=True)]
        elif op == b"P":
            stdout.write(b"".join(int(p).to_bytes(width, "big") for p in products))
            stdout.flush()
        elif op == b"V":
            payload = _read_exact(stdin, int.from_bytes(_read_exact(stdin, 4), "big"))
            failing = _verify(payload)
            stdout.write(_u32(len(failing)) + b"".join(_u32(i) for i in failing))
            stdout.flush()
        else:
            raise SystemExit(f"fold helper: unknown operation {op!r}")


if __name__ == "__main__":  # pragma: no cover - run as a helper process
    _ = gmpy2  # the helper multiplies with gmpy2 like its parent
    worker_main(sys.stdin.buffer, sys.stdout.buffer)
