"""A real `fedcast keyserver` process stops cleanly on SIGTERM (exit 0, connection closed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker


def _start_until(
    args: list[str], env: dict[str, str], marker: str
) -> tuple[subprocess.Popen[str], list[str]]:
    """Start a fedcast process and read its log until a line holds ``marker`` (60 s at most)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedcast.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    lines: list[str] = []
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            break
    return proc, lines


def test_keyserver_process_shuts_down_on_sigterm(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FEDCAST_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
        "FEDCAST_FEDERATION": f"sigterm-{uuid.uuid4().hex[:8]}",
        "FEDCAST_STATE_DIR": str(tmp_path / "ks"),
        "FEDCAST_LOG_LEVEL": "INFO",
        "FEDCAST_METRICS_PORT": "0",
    }
    proc, lines = _start_until(["keyserver", "serve"], env, "serving")
    try:
        assert any("serving" in line for line in lines), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, "".join(lines) + rest
        assert (tmp_path / "ks" / "verify-key.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("service", ["aggregator", "edge"])
def test_a_process_waiting_for_an_absent_key_service_stops_on_sigterm(tmp_path: Path, service: str) -> None:
    """The audit's case: the broker answers but no key service does, so start-up retries.

    Proves: SIGTERM ends the process within the shutdown grace (10 s) plus a margin, with
    exit status 0, instead of retrying until SIGKILL.
    """
    env = {
        **os.environ,
        "FEDCAST_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
        "FEDCAST_FEDERATION": f"sigterm-{uuid.uuid4().hex[:8]}",  # nobody serves its key service
        "FEDCAST_STATE_DIR": str(tmp_path / service),
        "FEDCAST_LOG_LEVEL": "INFO",
        "FEDCAST_METRICS_PORT": "0",
        "FEDCAST_KEYSERVER_VERIFY_KEY": "01" * 32,
        "FEDCAST_AGGREGATOR_TOKEN": "aggregator-token-" + "y" * 24,
        "FEDCAST_CLIENT_ID": "line-01",
        "FEDCAST_ENROLLMENT_TOKEN": "t" * 32,
        "FEDCAST_KEYSERVER_TIMEOUT_S": "1",
    }
    proc, lines = _start_until([service], env, "no reply from")
    try:
        assert any("no reply from" in line for line in lines), "".join(lines)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        elapsed = time.monotonic() - sent
        assert proc.returncode == 0, "".join(lines) + rest
        assert elapsed < 15.0, f"stopped {elapsed:.1f} s after SIGTERM\n{rest}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
