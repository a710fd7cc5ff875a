"""One INFO line per round from every edge and from the aggregator, with stable key=value fields."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from fedcast.demo import _ADMIN_TOKEN, _AGGREGATOR_TOKEN, DemoConfig, run_demo
from fedcast.services.aggregator.service import AggregatorConfig, AggregatorService
from fedcast.shared.protocol.outgoing import Event
from fedcast.shared.transport.inprocess import InProcessBroker, InProcessTransport

EDGE_LOGGER = "fedcast.services.edge_client.service"
AGGREGATOR_LOGGER = "fedcast.services.aggregator.service"
FIELD = re.compile(r"(\w+)=(\S+)")

AGGREGATOR_FIELDS = {
    "round",
    "members",
    "attempt",
    "dropouts",
    "round_s",
    "aggregate_s",
    "decrypt_s",
    "update_norm",
    "model_norm",
}
EDGE_FIELDS = {
    "client",
    "round",
    "attempt",
    "status",
    "member",
    "uploads",
    "rmse",
    "mae",
    "clipped",
    "clipped_share",
    "train_s",
    "encrypt_s",
    "round_s",
}


def fields(message: str) -> dict[str, str]:
    return dict(FIELD.findall(message.split(": ", 1)[1]))


def lines(
    caplog: pytest.LogCaptureFixture, logger: str, pattern: str, level: int = logging.INFO
) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == logger and r.levelno == level and re.match(pattern, r.getMessage())
    ]


async def run(caplog: pytest.LogCaptureFixture, tmp_path: Path, **overrides: object) -> None:
    caplog.set_level(logging.INFO, logger="fedcast.services")
    config = DemoConfig(
        n_clients=3,
        rounds=2,
        users_per_client=2,
        n_items=20,
        insecure_small_group=True,
        state_dir=tmp_path,
        **overrides,  # type: ignore[arg-type]
    )
    result = await run_demo(config)
    assert result.rounds_completed == 2


async def test_every_round_logs_one_summary_line_per_service(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    await run(caplog, tmp_path)

    summaries = lines(caplog, AGGREGATOR_LOGGER, r"round \d+ complete with \d+ members: ")
    assert len(summaries) == 2
    for round_id, line in enumerate(summaries, start=1):
        found = fields(line)
        assert set(found) == AGGREGATOR_FIELDS
        assert (found["round"], found["members"], found["dropouts"]) == (str(round_id), "3", "0")
        assert float(found["update_norm"]) > 0 and float(found["model_norm"]) > 0
        assert float(found["round_s"]) >= 0 and float(found["decrypt_s"]) >= 0

    edge = lines(caplog, EDGE_LOGGER, r"round \d+ complete: ")
    assert len(edge) == 6  # 3 edges x 2 rounds
    seen = set()
    for line in edge:
        found = fields(line)
        assert set(found) == EDGE_FIELDS
        assert (found["status"], found["member"], found["uploads"]) == ("complete", "yes", "1")
        assert float(found["rmse"]) > 0 and float(found["mae"]) > 0
        assert int(found["clipped"]) == 0 and float(found["clipped_share"]) == 0
        assert float(found["train_s"]) >= 0 and float(found["round_s"]) > 0
        seen.add((found["client"], found["round"]))
    assert seen == {(f"line-{i:02d}", str(r)) for i in range(3) for r in (1, 2)}
    assert not lines(caplog, EDGE_LOGGER, r"round \d+ attempt \d+: clipped", logging.WARNING)
    assert _ADMIN_TOKEN not in caplog.text and _AGGREGATOR_TOKEN not in caplog.text


async def test_heavy_clipping_is_a_warning_with_the_count(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    await run(caplog, tmp_path, clip=1e-3)  # nearly every gradient value exceeds the clip

    warnings = lines(
        caplog, EDGE_LOGGER, r"round \d+ attempt \d+: clipped \d+ of 120 values", logging.WARNING
    )
    assert len(warnings) == 6
    clipped = [int(fields(line)["clipped"]) for line in lines(caplog, EDGE_LOGGER, r"round \d+ complete: ")]
    assert len(clipped) == 6 and all(n > 1 for n in clipped)


def test_dropouts_of_failed_attempts_are_summed_per_round(tmp_path: Path) -> None:
    svc = AggregatorService(
        AggregatorConfig(tmp_path, aggregator_token="aggregator-token-0123456789"),
        InProcessTransport(InProcessBroker()),
    )
    events = [
        Event("attempt_failed", 4, 0, {"phase": "upload", "dropouts": 2, "survivors": 5}),
        Event("attempt_failed", 4, 1, {"phase": "response", "dropouts": 1, "survivors": 4}),
        Event("round_completed", 4, 2, {"members": 4, "seconds": 12.5}),
    ]

    class Machine:
        def drain_events(self) -> list[Event]:
            return events

    svc.machine = Machine()  # type: ignore[assignment]
    svc._record_events()
    assert svc._round_dropouts == {4: 3} and svc._round_seconds == {4: 12.5}
