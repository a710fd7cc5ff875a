"""What an edge client remembers about the models it answered for (crypto note 0.3).

A response is a decryption share. If a client answered the challenge of one
attempt and then uploaded the same update again for a smaller online set, an
aggregator that really received every share of the first attempt could decrypt
both and subtract them: the dropped member's update. So a client answers **at
most one challenge per model** (identified by the SHA-256 digest of the model
bytes it was sent, not by a round number) and **never uploads for a model after
answering for it**, unless the members dropped since its answer are proven
cheaters (their signed, invalid responses travel as evidence; the two
aggregates then differ only by cheaters' own inputs).

The ledger is that memory. It holds every answered digest, the most recent
answered attempt (what the evidence check compares against) and the attempt
uploaded last (so a member that restarts can still answer it late: a response
needs only sk_i, R and the public values kept here). :class:`MemoryLedger` is
the in-process implementation; the edge service persists the same records to
disk (``services/edge_client/ledger.py``) and makes each write durable before
the message it protects leaves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from fedcast.shared.crypto.proofs import EqualityProof
from fedcast.shared.errors import KeyStorageError

__all__ = ["AnswerRecord", "AttemptRecord", "MemoryLedger", "ModelLedger"]

_FORMAT = "fedcast.client-attempt"
_VERSION = 2


@dataclass(frozen=True)
class AnswerRecord:
    """The response a client gave: the challenge R, its share T_i and the share's proof."""

    challenge: int
    share: int
    proof: EqualityProof


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt a client uploaded for: enough to answer it after a restart.

    ``after_answer`` marks an upload accepted for a model already answered,
    because evidence proved that every member dropped since was a cheater.
    """

    round: int
    attempt: int
    model_digest: bytes
    members: tuple[str, ...]
    first: int
    after_answer: bool = False
    answer: AnswerRecord | None = None
    min_online: int = 2  # the minimum this client enforced for S (sizes its proof sample)
    #: the first components this attempt was first shown (fedcast.shared.protocol.client.firsts_binding)
    firsts_digest: bytes | None = None

    def answered(self, answer: AnswerRecord) -> AttemptRecord:
        return replace(self, answer=answer)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (hex strings; no secrets: everything here is public)."""
        answer = None
        if self.answer is not None:
            proof = self.answer.proof
            answer = {
                "challenge": format(self.answer.challenge, "x"),
                "share": format(self.answer.share, "x"),
                "proof": [
                    format(proof.commitment_g, "x"),
                    format(proof.commitment_h, "x"),
                    format(proof.response, "x"),
                ],
            }
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "round": self.round,
            "attempt": self.attempt,
            "model_digest": self.model_digest.hex(),
            "members": list(self.members),
            "first": format(self.first, "x"),
            "after_answer": self.after_answer,
            "answer": answer,
            "min_online": self.min_online,
            "firsts_digest": None if self.firsts_digest is None else self.firsts_digest.hex(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> AttemptRecord:
        try:
            if data["format"] != _FORMAT or data["version"] != _VERSION:
                raise KeyStorageError("not a fedcast version-2 client attempt record")
            raw = data["answer"]
            answer = None
            if raw is not None:
                t1, t2, z = (int(x, 16) for x in raw["proof"])
                answer = AnswerRecord(
                    int(raw["challenge"], 16), int(raw["share"], 16), EqualityProof(t1, t2, z)
                )
            members = tuple(str(m) for m in data["members"])
            return cls(
                int(data["round"]),
                int(data["attempt"]),
                bytes.fromhex(data["model_digest"]),
                members,
                int(data["first"], 16),
                bool(data["after_answer"]),
                answer,
                int(data["min_online"]),
                None if data["firsts_digest"] is None else bytes.fromhex(data["firsts_digest"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyStorageError(f"client attempt record is malformed: {exc}") from exc


class ModelLedger(Protocol):
    """The client's memory of answered models (see the module docstring)."""

    def has_answered(self, model_digest: bytes) -> bool:
        """True if this client ever answered a challenge for this model."""
        ...

    def last_answer(self) -> AttemptRecord | None:
        """The most recent attempt this client answered, with its answer."""
        ...

    def pending(self) -> AttemptRecord | None:
        """The most recent attempt this client uploaded for (answered or not)."""
        ...

    def record_upload(self, record: AttemptRecord) -> None:
        """Remember an upload before it is sent."""
        ...

    def record_answer(self, record: AttemptRecord) -> None:
        """Remember an answer (``record.answer`` set) before it is sent; adds its model digest."""
        ...


class MemoryLedger:
    """A :class:`ModelLedger` in memory: for the in-process demo, simulations and tests."""

    def __init__(self) -> None:
        self._answered: set[bytes] = set()
        self._last: AttemptRecord | None = None
        self._pending: AttemptRecord | None = None

    def has_answered(self, model_digest: bytes) -> bool:
        return model_digest in self._answered

    def last_answer(self) -> AttemptRecord | None:
        return self._last

    def pending(self) -> AttemptRecord | None:
        return self._pending

    def record_upload(self, record: AttemptRecord) -> None:
        self._pending = record

    def record_answer(self, record: AttemptRecord) -> None:
        if record.answer is None:
            raise KeyStorageError("record_answer needs a record with its answer")
        self._answered.add(record.model_digest)
        self._last = record
        self._pending = record
