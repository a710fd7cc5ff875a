"""The aggregator's work on several cores: helper processes that fold segments and check proofs.

Folding (one 4096-bit multiplication per data segment per member) and the batch
check of every member's proof of knowledge of r2 are the aggregator's largest
per-round costs, and gmpy2 holds the GIL, so threads do not help.
:class:`ProcessFolder` splits the segment indices into contiguous shards (this
process folds the first shard itself, each helper process one other shard) and
splits a set of proofs the same way (each part gets its own batch test). Helpers
are plain subprocesses (``python -m services.aggregator.foldpool``) speaking a tiny
binary protocol over their stdin/stdout; nothing is pickled::

    "S" u32(count) u32(width) u32(len) modulus   start a product of ``count`` segments (all 1)
    "F" u32(length) blob                          multiply in ``count`` values of ``width`` bytes
    "P"                                           reply with the ``count`` products, ``width`` bytes each
    "V" u32(length) payload                       batch-test proofs; reply one byte, 1 if they hold

A helper that dies is noticed at :meth:`ProcessFolder.products` (InternalError:
the caller retries the attempt, before any member answered) and respawned at the
next :meth:`ProcessFolder.start`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import IO, Any

import gmpy2
from gmpy2 import mpz

from shared.crypto.group import GroupParams
from shared.crypto.proofs import (
    DlogStatement,
    ScreenedDlog,
    dlog_batch_holds,
    dlog_individual_failures,
    screen_dlogs,
)
from shared.errors import ConfigurationError, InternalError

__all__ = ["ProcessFolder", "default_workers", "worker_main"]

# The sizes of one screened proof on the pipe: X and t (element width), z, c.
_Z_BYTES = 96
_C_BYTES = 32


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
            [sys.executable, "-m", "services.aggregator.foldpool"],
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
    """A :class:`shared.crypto.elgamal.SegmentFolder` over this process and ``workers`` helpers."""

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
        """:func:`shared.crypto.proofs.dlog_failures`, its batch test split over the helpers.

        Screening (element rule, ranges, hashes) runs here; each part of the screened set
        gets an independent batch test (a helper draws its own random exponents); only a
        part that fails is checked proof by proof, here, to name the culprits.
        """
        failures, screened = screen_dlogs(group, items)
        if not screened:
            return failures
        n = group.n
        g2 = group.g * group.g % n
        parts = len(self._helpers) + 1
        shares = [
            screened[k * len(screened) // parts : (k + 1) * len(screened) // parts] for k in range(parts)
        ]
        asked: list[tuple[_Helper, list[ScreenedDlog]]] = []
        for helper, share in zip(self._helpers, shares[1:], strict=True):
            if not share or not helper.alive:
                shares[0] = [*shares[0], *share]
                continue
            try:
                helper.send(b"V" + _verify_payload(n, g2, group.element_bytes, share))
                asked.append((helper, share))
            except OSError:
                shares[0] = [*shares[0], *share]
        failed: list[ScreenedDlog] = []
        if shares[0] and not dlog_batch_holds(n, g2, shares[0]):
            failed += shares[0]
        for helper, share in asked:
            try:
                holds = helper.read(1) == b"\x01"
            except (OSError, EOFError):
                holds = dlog_batch_holds(n, g2, share)  # the helper died: check its part here
            if not holds:
                failed += share
        if failed:
            failures.update(dlog_individual_failures(group, failed))
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


def _verify_payload(n: mpz, g2: mpz, width: int, share: Sequence[ScreenedDlog]) -> bytes:
    head: bytes = _u32(width) + _u32(len(share)) + bytes(mpz(n).to_bytes(width, "big"))
    head += bytes(mpz(g2).to_bytes(width, "big"))
    body = b"".join(
        bytes(mpz(x).to_bytes(width, "big"))
        + bytes(mpz(t).to_bytes(width, "big"))
        + bytes(mpz(z).to_bytes(_Z_BYTES, "big"))
        + int(c).to_bytes(_C_BYTES, "big")
        for _, x, t, z, c in share
    )
    payload = head + body
    return _u32(len(payload)) + payload


def _verify(payload: bytes) -> bool:
    width = int.from_bytes(payload[:4], "big")
    count = int.from_bytes(payload[4:8], "big")
    n = mpz.from_bytes(payload[8 : 8 + width], "big")
    g2 = mpz.from_bytes(payload[8 + width : 8 + 2 * width], "big")
    offset, step = 8 + 2 * width, 2 * width + _Z_BYTES + _C_BYTES
    screened: list[ScreenedDlog] = []
    for k in range(count):
        item = payload[offset + k * step : offset + (k + 1) * step]
        x = mpz.from_bytes(item[:width], "big")
        t = mpz.from_bytes(item[width : 2 * width], "big")
        z = mpz.from_bytes(item[2 * width : 2 * width + _Z_BYTES], "big")
        screened.append((k, x, t, z, int.from_bytes(item[2 * width + _Z_BYTES :], "big")))
    return dlog_batch_holds(n, g2, screened)


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
            stdout.write(b"\x01" if _verify(payload) else b"\x00")
            stdout.flush()
        else:
            raise SystemExit(f"fold helper: unknown operation {op!r}")


if __name__ == "__main__":  # pragma: no cover - run as a helper process
    _ = gmpy2  # the helper multiplies with gmpy2 like its parent
    worker_main(sys.stdin.buffer, sys.stdout.buffer)
