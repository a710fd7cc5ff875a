"""Protocol stages of the aggregator and the edge client, named in one place.

Every stage change goes through :func:`check_transition`, so a state machine
can never skip a step of Algorithm 1 (for example decrypt before every member
of S answered the challenge): an illegal transition raises ProtocolOrderError.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from fedcast.shared.errors import ProtocolOrderError

__all__ = [
    "AGGREGATOR_TRANSITIONS",
    "CLIENT_TRANSITIONS",
    "AggregatorStage",
    "ClientStage",
    "check_transition",
]


class AggregatorStage(StrEnum):
    IDLE = "idle"
    COLLECTING_READY = "collecting_ready"  # round announced, "ready" messages coming in
    COLLECTING_UPLOADS = "collecting_uploads"  # S fixed, envelopes sent
    COLLECTING_RESPONSES = "collecting_responses"  # every member uploaded, challenge sent
    DECRYPTING = "decrypting"  # every member answered: aggregate, decrypt, unpack
    UPDATING = "updating"  # apply the aggregate to the global model
    CHECKPOINTING = "checkpointing"  # persist model and round number
    STOPPED = "stopped"


class ClientStage(StrEnum):
    IDLE = "idle"  # waiting for an announcement
    READY_SENT = "ready_sent"
    UPLOADED = "uploaded"  # encrypted for S, waiting for the challenge
    RESPONDED = "responded"  # answered the challenge, waiting for the result


_A = AggregatorStage
AGGREGATOR_TRANSITIONS: Mapping[AggregatorStage, frozenset[AggregatorStage]] = {
    _A.IDLE: frozenset({_A.COLLECTING_READY, _A.STOPPED}),
    _A.COLLECTING_READY: frozenset({_A.COLLECTING_READY, _A.COLLECTING_UPLOADS, _A.STOPPED}),
    # A dropout sends an attempt back to uploads (new S) or back to ready (round restarted).
    _A.COLLECTING_UPLOADS: frozenset(
        {_A.COLLECTING_RESPONSES, _A.COLLECTING_UPLOADS, _A.COLLECTING_READY, _A.STOPPED}
    ),
    _A.COLLECTING_RESPONSES: frozenset(
        {_A.DECRYPTING, _A.COLLECTING_UPLOADS, _A.COLLECTING_READY, _A.STOPPED}
    ),
    # A failed decryption with named cheaters retries without them (new uploads, with evidence).
    # ... and one nobody can be blamed for waits (IDLE, with a deadline) before the round restarts.
    _A.DECRYPTING: frozenset({_A.UPDATING, _A.COLLECTING_UPLOADS, _A.COLLECTING_READY, _A.IDLE, _A.STOPPED}),
    _A.UPDATING: frozenset({_A.CHECKPOINTING, _A.STOPPED}),
    _A.CHECKPOINTING: frozenset({_A.COLLECTING_READY, _A.IDLE, _A.STOPPED}),
    _A.STOPPED: frozenset(),
}

_C = ClientStage
CLIENT_TRANSITIONS: Mapping[ClientStage, frozenset[ClientStage]] = {
    # RESPONDED from IDLE or READY_SENT: a late answer to an attempt restored from the
    # ledger after a restart (the member still completes the attempt it uploaded for).
    _C.IDLE: frozenset({_C.READY_SENT, _C.RESPONDED}),
    # A new announcement (next round, or the same round restarted) resets the client.
    _C.READY_SENT: frozenset({_C.READY_SENT, _C.UPLOADED, _C.IDLE, _C.RESPONDED}),
    _C.UPLOADED: frozenset({_C.RESPONDED, _C.UPLOADED, _C.READY_SENT, _C.IDLE}),
    # RESPONDED again: a repeated challenge gets the stored answer again.
    _C.RESPONDED: frozenset({_C.IDLE, _C.UPLOADED, _C.READY_SENT, _C.RESPONDED}),
}


def check_transition(
    transitions: Mapping[AggregatorStage, frozenset[AggregatorStage]]
    | Mapping[ClientStage, frozenset[ClientStage]],
    current: StrEnum,
    new: StrEnum,
) -> None:
    """Raise ProtocolOrderError unless ``current -> new`` is a legal transition."""
    allowed: frozenset[StrEnum] = transitions.get(current, frozenset())  # type: ignore[call-overload]
    if new not in allowed:
        raise ProtocolOrderError(f"illegal stage transition {current} -> {new}")
