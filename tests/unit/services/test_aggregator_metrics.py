"""The aggregator service turns its machine's events into exactly the metrics docs/METRICS.md describes."""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from fedcast.services.aggregator.service import AggregatorConfig, AggregatorService
from fedcast.services.observability import initialize_series, record_round_progress
from fedcast.services.runtime import RejectLog
from fedcast.shared.protocol.outgoing import Event
from fedcast.shared.transport.inprocess import InProcessBroker, InProcessTransport


class FakeMachine:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def drain_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"service": "aggregator", **labels}) or 0.0


def snapshot() -> dict[str, float]:
    return {
        "retries": value("fedcast_round_retries_total"),
        "resends": value("fedcast_challenge_resends_total"),
        "dropouts_upload": value("fedcast_dropouts_total", phase="upload"),
        "dropouts_decrypt": value("fedcast_dropouts_total", phase="decrypt"),
        "dropouts_response": value("fedcast_dropouts_total", phase="response"),
        "invalid_proof": value("fedcast_messages_rejected_total", reason="invalid_proof"),
    }


@pytest.fixture
def service(tmp_path: Path) -> tuple[AggregatorService, FakeMachine]:
    config = AggregatorConfig(tmp_path, aggregator_token="aggregator-token-0123456789")
    svc = AggregatorService(config, InProcessTransport(InProcessBroker()))
    machine = FakeMachine()
    svc.machine = machine  # type: ignore[assignment]
    svc._gate = SimpleNamespace(rejected=RejectLog("aggregator"))  # type: ignore[assignment]
    return svc, machine


def record(
    svc: AggregatorService, machine: FakeMachine, *events: tuple[str, dict[str, Any]]
) -> dict[str, float]:
    before = snapshot()
    machine.events = [Event(kind, 4, 1, data) for kind, data in events]
    svc._record_events()
    after = snapshot()
    return {k: after[k] - before[k] for k in before}


def test_a_bad_proof_of_r2_before_the_challenge(service: tuple[AggregatorService, FakeMachine]) -> None:
    # The machine reports each member caught by its proof, then the failed attempt.
    delta = record(
        *service,
        (
            "invalid_proof",
            {"member": "c2", "detail": "proof of 'c2': the proof of knowledge does not verify"},
        ),
        ("attempt_failed", {"phase": "upload", "dropouts": 1, "survivors": 3}),
    )
    assert delta["invalid_proof"] == 1 and delta["retries"] == 1 and delta["dropouts_upload"] == 1
    assert delta["resends"] == delta["dropouts_decrypt"] == delta["dropouts_response"] == 0


def test_silence_after_the_challenge_resends_it_and_drops_nobody(
    service: tuple[AggregatorService, FakeMachine], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    delta = record(*service, ("challenge_resent", {"members": 2}), ("challenge_resent", {"members": 1}))
    assert delta["resends"] == 2  # one per re-send, not per silent member
    assert delta["retries"] == delta["dropouts_upload"] == delta["dropouts_response"] == 0
    assert "2 member(s) have not answered" in caplog.text


def test_a_wrong_share_named_by_its_proof_retries_with_evidence(
    service: tuple[AggregatorService, FakeMachine],
) -> None:
    delta = record(
        *service,
        ("invalid_proof", {"member": "c3", "detail": "response of 'c3': the share proof does not verify"}),
        ("attempt_failed", {"phase": "decrypt", "dropouts": 1, "survivors": 3}),
    )
    assert delta["invalid_proof"] == 1 and delta["retries"] == 1 and delta["dropouts_decrypt"] == 1
    assert delta["dropouts_upload"] == delta["resends"] == 0


def test_an_unattributed_decryption_failure_restarts_the_round_and_counts_a_retry(
    service: tuple[AggregatorService, FakeMachine],
) -> None:
    delta = record(*service, ("round_failed", {"reason": "decryption_failed", "attributed": False}))
    assert delta["retries"] == 1
    assert delta["invalid_proof"] == delta["dropouts_upload"] == delta["dropouts_decrypt"] == 0


def test_a_resumed_attempt_is_logged_not_counted_as_a_resend(
    service: tuple[AggregatorService, FakeMachine], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    delta = record(*service, ("attempt_resumed", {"members": 3}))
    assert all(v == 0 for v in delta.values())
    assert "resumed after a restart" in caplog.text


# -- progress: round age, last completion, waiting for clients ---------------------------------------


def progress() -> tuple[float | None, float | None, float | None]:
    return (
        REGISTRY.get_sample_value("fedcast_round_started_timestamp_seconds", {"service": "aggregator"}),
        REGISTRY.get_sample_value(
            "fedcast_last_round_completed_timestamp_seconds", {"service": "aggregator"}
        ),
        REGISTRY.get_sample_value("fedcast_waiting_for_clients", {"service": "aggregator"}),
    )


def test_progress_gauges_follow_a_round_from_waiting_to_completion() -> None:
    ticks = itertools.count(1000)

    def clock() -> float:
        return float(next(ticks))

    source = object()

    def feed(*events: tuple[str, int]) -> tuple[float | None, float | None, float | None]:
        record_round_progress(
            "aggregator",
            [Event(kind, round_id, 0, {}) for kind, round_id in events],
            source=source,
            clock=clock,
        )
        return progress()

    started, _, waiting = feed(("round_announced", 7))
    assert started == 1000 and waiting == 0
    # No quorum: the window closes short of clients, again and again. The round keeps its start.
    assert feed(("ready_window_extended", 7), ("ready_window_extended", 7)) == (1000, progress()[1], 1)
    # Clients came: an online set is fixed; a failed attempt and a restarted round are the same round.
    assert feed(("online_set_fixed", 7))[2] == 0
    assert feed(("attempt_failed", 7), ("round_failed", 7), ("round_announced", 7))[0] == 1000
    # Completion, then the next round's first event in the same drain.
    started, completed, waiting = feed(("round_completed", 7), ("phase", 8), ("round_announced", 8))
    assert completed == 1001 and started == 1002 and waiting == 0


def test_a_new_aggregator_starts_its_own_round_and_has_not_waited() -> None:
    ticks = itertools.count(5000)

    def clock() -> float:
        return float(next(ticks))

    first, second = object(), object()
    record_round_progress("aggregator", [Event("ready_window_extended", 3, 0, {})], source=first, clock=clock)
    assert progress()[2] == 1
    # Another aggregator in the same process (a second demo) at the same round id.
    record_round_progress("aggregator", [Event("round_announced", 3, 0, {})], source=second, clock=clock)
    started, _, waiting = progress()
    assert started == 5001 and waiting == 0


def test_the_service_records_progress_from_its_machine(
    service: tuple[AggregatorService, FakeMachine],
) -> None:
    svc, machine = service
    before = time.time()
    machine.events = [Event("attempt_resumed", 41, 2, {"members": 3})]  # a restarted aggregator
    svc._record_events()
    started, _, waiting = progress()
    assert started is not None and before <= started <= time.time() and waiting == 0
    machine.events = [
        Event("phase", 41, 2, {"phase": "response", "seconds": 0.5}),
        Event("round_completed", 41, 2, {"members": 3, "seconds": 1.0}),
    ]
    svc._record_events()
    _, completed, _ = progress()
    assert completed is not None and started <= completed <= time.time()
    assert progress()[0] == started  # round 41 still; round 42 starts with its first event
    machine.events = [
        Event("round_announced", 42, 0, {}),
        Event("ready_window_extended", 42, 0, {"ready": 1}),
    ]
    svc._record_events()
    next_started, _, waiting = progress()
    assert next_started is not None and next_started >= completed and waiting == 1
    assert value("fedcast_current_round") == 42  # the existing metrics still see every event


def test_initialize_series_exports_waiting_without_resetting_it() -> None:
    record_round_progress("aggregator", [Event("ready_window_extended", 9, 0, {})], source=object())
    initialize_series("aggregator")  # a late call (fedcast demo, tests) must not hide a waiting aggregator
    assert progress()[2] == 1
    initialize_series("edge")  # only the aggregator waits for clients
    assert REGISTRY.get_sample_value("fedcast_waiting_for_clients", {"service": "edge"}) is None
