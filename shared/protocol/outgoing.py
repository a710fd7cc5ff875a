"""What a state machine asks its shell to do: messages to send and events to record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedcast.shared.wire.messages import Body, MessageType

__all__ = ["Event", "Outgoing"]


@dataclass(frozen=True)
class Outgoing:
    """One message to sign and send; ``endpoint`` None means broadcast to every client."""

    endpoint: str | None
    type: MessageType
    round: int
    attempt: int
    body: Body


@dataclass(frozen=True)
class Event:
    """Something worth a metric or a log line (the shell decides which)."""

    kind: str  # round_started, online_set_fixed, attempt_failed, round_failed, round_completed, ...
    round: int
    attempt: int
    data: dict[str, Any] = field(default_factory=dict)
