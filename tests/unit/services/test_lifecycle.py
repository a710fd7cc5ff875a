"""Stopping a service in every state within a bounded time (issue 12: SIGTERM while waiting)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from fedcast.services.aggregator.service import AggregatorConfig, AggregatorService
from fedcast.services.edge_client.service import EdgeClientService, EdgeConfig
from fedcast.services.lifecycle import run_until_stopped, unless_stopped
from fedcast.shared.learning.tasks import TaskSpec
from fedcast.shared.transport.inprocess import InProcessBroker, InProcessTransport


async def _stop_after(stop: asyncio.Event, seconds: float) -> None:
    await asyncio.sleep(seconds)
    stop.set()


async def test_a_run_that_watches_stop_returns_by_itself() -> None:
    stop = asyncio.Event()
    steps: list[str] = []

    async def run(event: asyncio.Event) -> None:
        await event.wait()
        await asyncio.sleep(0.05)  # finishing the current step
        steps.append("clean")

    asyncio.get_running_loop().call_later(0.05, stop.set)
    assert await run_until_stopped(run, stop, grace_s=2.0) is True
    assert steps == ["clean"]


async def test_a_run_stuck_in_back_off_is_cancelled_after_the_grace_and_cleans_up() -> None:
    stop = asyncio.Event()
    cleaned: list[bool] = []

    async def run(event: asyncio.Event) -> None:
        try:
            while True:  # a retry loop that never looks at ``event``
                await asyncio.sleep(0.5)
        finally:
            cleaned.append(True)

    asyncio.get_running_loop().call_later(0.05, stop.set)
    started = time.monotonic()
    assert await run_until_stopped(run, stop, grace_s=0.2) is False
    assert time.monotonic() - started < 1.0
    assert cleaned == [True]


async def test_a_fatal_error_propagates_once() -> None:
    async def run(event: asyncio.Event) -> None:
        raise RuntimeError("fatal")

    with pytest.raises(RuntimeError, match="fatal"):
        await run_until_stopped(run, asyncio.Event())


async def test_cancelling_the_caller_takes_the_run_down() -> None:
    cleaned: list[bool] = []

    async def run(event: asyncio.Event) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.append(True)

    outer = asyncio.ensure_future(run_until_stopped(run, asyncio.Event()))
    await asyncio.sleep(0.05)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert cleaned == [True]


@pytest.mark.parametrize("service", ["aggregator", "edge"])
async def test_a_service_waiting_for_an_absent_key_service_stops_within_the_grace(
    tmp_path: Path, service: str
) -> None:
    """The audit's case: no key service answers, so start-up retries forever; SIGTERM
    (here the stop event it sets) must still end the service within the grace period."""
    broker = InProcessBroker()
    transport = InProcessTransport(broker)
    await transport.connect()
    run_service: AggregatorService | EdgeClientService
    if service == "aggregator":
        run_service = AggregatorService(
            AggregatorConfig(
                tmp_path / "aggregator",
                federation="plant-7",
                aggregator_token="aggregator-token-" + "y" * 24,
                keyserver_verify_key=b"\x01" * 32,
                task=TaskSpec(n_items=8),
                fold_workers=0,
                allow_insecure_test_group=True,
            ),
            transport,
        )
    else:
        run_service = EdgeClientService(
            EdgeConfig(
                "line-01",
                tmp_path / "edge",
                b"\x01" * 32,
                enrollment_token="t" * 32,
                federation="plant-7",
            ),
            transport,
        )
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    started = time.monotonic()
    finished = await run_until_stopped(run_service.run, stop, grace_s=5.0, name=service)
    elapsed = time.monotonic() - started
    assert finished is True  # start-up itself gave way to the stop: no need for the grace
    assert elapsed < 1.5, elapsed
    with pytest.raises(Exception, match="closed"):
        await transport.send("aggregator", b"after stop")  # its finally closed the transport


async def test_unless_stopped_runs_a_step_or_cancels_it() -> None:
    stop = asyncio.Event()
    done: list[str] = []

    async def step(seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
            done.append("finished")
        finally:
            done.append("cleaned")

    assert await unless_stopped(step(0.01), stop) is True
    assert done == ["finished", "cleaned"]
    done.clear()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    assert await unless_stopped(step(60), stop) is False
    assert done == ["cleaned"]
    assert await unless_stopped(step(0.01), stop) is False  # already stopped: never started

    async def failing() -> None:
        raise RuntimeError("fatal")

    with pytest.raises(RuntimeError, match="fatal"):
        await unless_stopped(failing(), asyncio.Event())
