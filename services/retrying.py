"""Back-off and retry for every fedcast process, in one place, on tenacity.

Two policies:

* :func:`retry_while_unreachable`: for start-up steps that need a peer (the broker, the key
  service), which may come up in any order. Retries without end, with exponential back-off
  and jitter capped at ``max_delay``; the first failure is logged once, at WARNING, with
  what is awaited and why; the next ones only at DEBUG; success after failures at INFO. A
  stop request cancels the wait at once (services/lifecycle.py).
* :func:`request_retrying`: for one key-service request (idempotent): a few retries on
  timeouts only, each logged, then the timeout is raised to the caller.

A refusal or a programming error is never retried: it would only fail again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_exponential,
    wait_exponential_jitter,
)

from fedcast.shared.errors import RequestTimeoutError, TransportError

__all__ = ["MAX_DELAY_S", "request_retrying", "retry_while_unreachable"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The longest pause between two attempts: a peer that comes back is noticed within it.
MAX_DELAY_S = 10.0
_UNREACHABLE = (RequestTimeoutError, TransportError)


class _LogOnce:
    """before_sleep: the first failure at WARNING (what and why), the rest at DEBUG."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0

    def __call__(self, state: RetryCallState) -> None:
        self.failures += 1
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        if self.failures == 1:
            log.warning(
                "%s: not reachable yet (%s); retrying with back-off up to %.0f s, logged again only "
                "when it succeeds",
                self.what,
                error,
                MAX_DELAY_S,
            )
        else:
            log.debug(
                "%s: attempt %d failed (%s); next in %.1f s", self.what, state.attempt_number, error, wait
            )


async def retry_while_unreachable(
    call: Callable[[], Awaitable[T]],
    *,
    what: str = "peer",
    max_delay: float = MAX_DELAY_S,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> T:
    """Run ``call`` until it does not fail with a timeout or a transport error."""
    logger = _LogOnce(what)
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(_UNREACHABLE),
        wait=wait_exponential_jitter(multiplier=0.5, max=max_delay, jitter=0.25),
        stop=stop_never,
        before_sleep=logger,
        reraise=True,
        sleep=sleep or asyncio.sleep,
    )

    async def attempt() -> T:
        # A coroutine *function* for tenacity: it does not await what a plain callable (a
        # lambda returning a coroutine) returns.
        return await call()

    result: T = await retrying(attempt)
    if logger.failures:
        log.info("%s: reachable after %d failed attempt(s)", what, logger.failures)
    return result


def request_retrying(
    retries: int, backoff: float, what: str, *, sleep: Callable[[float], Awaitable[None]] | None = None
) -> AsyncRetrying:
    """A few retries of one idempotent request on timeouts only; the last timeout is raised."""

    def log_retry(state: RetryCallState) -> None:
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning("%s: no reply from the key service; retry in %.1f s", what, wait)

    return AsyncRetrying(
        retry=retry_if_exception_type(RequestTimeoutError),
        wait=wait_exponential(multiplier=backoff, max=MAX_DELAY_S),
        stop=stop_after_attempt(retries + 1),
        before_sleep=log_retry,
        reraise=True,
        sleep=sleep or asyncio.sleep,
    )
