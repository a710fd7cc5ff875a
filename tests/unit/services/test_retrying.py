"""The one retry policy of every fedcast process (services/retrying.py, on tenacity)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fedcast.services.retrying import MAX_DELAY_S, request_retrying, retry_while_unreachable
from fedcast.shared.errors import ConfigurationError, RequestTimeoutError, TransportError


class Flaky:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


async def test_a_peer_that_comes_back_is_reached_and_the_failure_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    call = Flaky([TransportError("refused")] * 5 + [RequestTimeoutError("no reply")] * 3)
    with caplog.at_level(logging.DEBUG, logger="fedcast.services.retrying"):
        assert await retry_while_unreachable(call, what="broker", sleep=sleep) == "ok"
    assert call.calls == 9 and len(sleeps) == 8
    assert all(0 < s <= MAX_DELAY_S + 0.25 for s in sleeps)  # capped (plus jitter)
    assert sleeps[-1] > sleeps[0]  # backs off
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "broker: not reachable yet (refused)" in warnings[0].getMessage()
    assert any("reachable after 8 failed attempt(s)" in r.getMessage() for r in caplog.records)


async def test_a_refusal_is_not_retried() -> None:
    call = Flaky([ConfigurationError("bad token")])
    with pytest.raises(ConfigurationError, match="bad token"):
        await retry_while_unreachable(call, what="key service")
    assert call.calls == 1


async def test_a_stop_cancels_the_back_off_at_once() -> None:
    async def never() -> None:
        raise TransportError("down")

    task = asyncio.ensure_future(retry_while_unreachable(never, what="broker", max_delay=60))
    await asyncio.sleep(0.7)  # inside a back-off sleep by now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1.0)


async def test_a_request_is_retried_on_timeouts_only_then_the_timeout_is_raised() -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    timeouts = Flaky([RequestTimeoutError("t")] * 10)
    with pytest.raises(RequestTimeoutError):
        await request_retrying(3, 0.5, "get_keys", sleep=sleep)(timeouts)
    assert timeouts.calls == 4 and sleeps == [0.5, 1.0, 2.0]
    broken = Flaky([TransportError("closed")])
    with pytest.raises(TransportError):
        await request_retrying(3, 0.5, "get_keys", sleep=sleep)(broken)
    assert broken.calls == 1
    assert await request_retrying(2, 0.0, "get_keys", sleep=sleep)(Flaky([RequestTimeoutError("t")])) == "ok"


async def test_a_lambda_returning_a_coroutine_is_awaited() -> None:
    """The services pass lambdas (``lambda: keys.enroll(token, keypair)``): each must really run."""
    call = Flaky([TransportError("down")])
    assert await retry_while_unreachable(lambda: call(), what="key service", max_delay=0.01) == "ok"
    assert call.calls == 2
