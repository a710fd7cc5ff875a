"""Running a service until it is told to stop, in every state, within a bounded time.

A service's ``run(stop)`` watches ``stop`` between the steps of its loop, but not while it
starts: waiting for the key service or the broker (retries with back-off) would otherwise
ignore SIGTERM for as long as the peer is away, longer than any Kubernetes grace period.
:func:`run_until_stopped` races the run against the stop event: once ``stop`` is set the
run has ``grace_s`` to finish its current step and return by itself; after that it is
cancelled, which interrupts any await (a back-off sleep, a connection attempt, a request
to the key service), and its ``finally`` blocks close what it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["DEFAULT_SHUTDOWN_GRACE_S", "run_until_stopped", "unless_stopped"]

log = logging.getLogger(__name__)

#: Time a service gets to finish its current step after SIGTERM before it is cancelled:
#: well inside Kubernetes' default terminationGracePeriodSeconds of 30 s, and longer than
#: a checkpoint write or a decryption of a large model (docs/BENCHMARKS.md).
DEFAULT_SHUTDOWN_GRACE_S = 10.0


async def run_until_stopped(
    run: Callable[[asyncio.Event], Awaitable[None]],
    stop: asyncio.Event,
    *,
    grace_s: float = DEFAULT_SHUTDOWN_GRACE_S,
    name: str = "service",
) -> bool:
    """Run ``run(stop)``; return True if it returned by itself, False if it was cancelled.

    An exception from the run propagates (a fatal error is the caller's to report, once).
    """
    task = asyncio.ensure_future(run(stop))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            done, _ = await asyncio.wait({task}, timeout=grace_s)
            if not done:
                log.warning("%s did not stop within %.1f s of the stop request: cancelling it", name, grace_s)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return False
        task.result()  # re-raise its exception, if any
        return True
    finally:
        stopper.cancel()
        if not task.done():  # our own caller was cancelled: take the run down with us
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def unless_stopped(step: Awaitable[None], stop: asyncio.Event) -> bool:
    """Await ``step`` unless ``stop`` is set first; then cancel it and return False.

    For steps with nothing worth finishing, such as start-up waiting for a peer: a stop
    request ends them at once instead of after the grace period.
    """
    if stop.is_set():
        if asyncio.iscoroutine(step):
            step.close()  # never started: no "was never awaited" warning
        return False
    task = asyncio.ensure_future(step)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return False
    task.result()
    return True
