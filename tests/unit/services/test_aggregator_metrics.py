"""The aggregator service turns its machine's events into exactly the metrics docs/METRICS.md describes."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.aggregator.service import AggregatorConfig, AggregatorService
from services.runtime import RejectLog
from shared.protocol.outgoing import Event
from shared.transport.inprocess import InProcessBroker, InProcessTransport


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
