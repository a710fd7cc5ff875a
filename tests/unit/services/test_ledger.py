"""FileLedger: the edge client's durable memory of answered models (one answer per model, crypto note 0.3)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from fedcast.services.edge_client.ledger import ANSWERED_FILE, LAST_ANSWER_FILE, PENDING_FILE, FileLedger
from fedcast.shared.crypto.proofs import EqualityProof
from fedcast.shared.errors import KeyStorageError
from fedcast.shared.keystore import write_json_atomic
from fedcast.shared.protocol.ledger import AnswerRecord, AttemptRecord, MemoryLedger, ModelLedger


def digest(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def upload(model: str = "model-1", round_id: int = 1, attempt: int = 0) -> AttemptRecord:
    return AttemptRecord(round_id, attempt, digest(model), ("c1", "c2", "c3"), 0xABCDEF + attempt)


def answered(record: AttemptRecord, share: int = 0x1234) -> AttemptRecord:
    return record.answered(AnswerRecord(0x5555, share, EqualityProof(0x11, 0x22, 2**512 + 3)))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the same semantics as MemoryLedger -------------------------------------------------------------


@pytest.fixture(params=["memory", "file"])
def make_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], ModelLedger]:
    if request.param == "memory":
        return MemoryLedger
    return lambda: FileLedger(tmp_path / "ledger")


def test_ledger_semantics(make_ledger: Callable[[], ModelLedger]) -> None:
    ledger = make_ledger()
    first = upload("model-1")
    assert not ledger.has_answered(first.model_digest)
    assert ledger.last_answer() is None and ledger.pending() is None

    ledger.record_upload(first)  # an upload is not an answer
    assert ledger.pending() == first
    assert not ledger.has_answered(first.model_digest) and ledger.last_answer() is None

    with pytest.raises(KeyStorageError, match="answer"):
        ledger.record_answer(first)  # a record without its answer
    assert not ledger.has_answered(first.model_digest) and ledger.last_answer() is None

    done = answered(first)
    ledger.record_answer(done)
    assert ledger.has_answered(first.model_digest)
    assert ledger.last_answer() == done and ledger.pending() == done
    assert not ledger.has_answered(digest("model-2"))

    second = upload("model-2", round_id=2)
    ledger.record_upload(second)  # the next round's upload: pending moves, the last answer stays
    assert ledger.pending() == second and ledger.last_answer() == done
    assert ledger.has_answered(first.model_digest) and not ledger.has_answered(second.model_digest)

    retry = upload("model-2", round_id=2, attempt=1)
    ledger.record_answer(answered(retry, share=0x9999))
    assert ledger.has_answered(first.model_digest) and ledger.has_answered(second.model_digest)
    assert ledger.last_answer() == answered(retry, share=0x9999) == ledger.pending()


# -- durability -------------------------------------------------------------------------------------


def test_records_survive_a_reopen(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    ledger = FileLedger(directory)
    first = upload("model-1")
    ledger.record_upload(first)
    assert FileLedger(directory).pending() == first  # durable before the upload leaves
    done = answered(first)
    ledger.record_answer(done)
    second = upload("model-2", round_id=2)
    ledger.record_upload(second)

    reopened = FileLedger(directory)
    assert reopened.has_answered(first.model_digest)
    assert not reopened.has_answered(second.model_digest)
    assert reopened.last_answer() == done
    assert reopened.pending() == second
    assert (directory / ANSWERED_FILE).read_bytes() == first.model_digest  # one 32-byte record


def test_files_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    ledger = FileLedger(directory)
    ledger.record_upload(upload())
    ledger.record_answer(answered(upload()))
    assert mode(directory) == 0o700
    for name in (ANSWERED_FILE, LAST_ANSWER_FILE, PENDING_FILE):
        assert mode(directory / name) == 0o600, name


def test_a_group_readable_record_is_refused_unless_permissions_are_not_checked(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    FileLedger(directory).record_answer(answered(upload()))
    os.chmod(directory / LAST_ANSWER_FILE, 0o644)
    with pytest.raises(KeyStorageError, match="group or others"):
        FileLedger(directory)
    assert FileLedger(directory, check_permissions=False).last_answer() == answered(upload())


def test_a_malformed_record_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    FileLedger(directory).record_upload(upload())
    document = json.loads((directory / PENDING_FILE).read_text())
    document["version"] = 1
    write_json_atomic(directory / PENDING_FILE, document, secret=True)
    with pytest.raises(KeyStorageError, match="version-2"):
        FileLedger(directory)


def test_a_torn_last_digest_is_ignored_and_truncated_by_the_next_append(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    first = answered(upload("model-1"))
    FileLedger(directory).record_answer(first)
    path = directory / ANSWERED_FILE
    with path.open("ab") as fh:  # a crash 7 bytes into the next append
        fh.write(b"\xaa" * 7)
    assert path.stat().st_size == 32 + 7

    ledger = FileLedger(directory)
    assert ledger.has_answered(first.model_digest)
    assert not ledger.has_answered((b"\xaa" * 7).ljust(32, b"\x00"))
    second = answered(upload("model-2", round_id=2))
    ledger.record_answer(second)
    assert path.read_bytes() == first.model_digest + second.model_digest  # the stray bytes are gone

    reopened = FileLedger(directory)
    assert reopened.has_answered(first.model_digest) and reopened.has_answered(second.model_digest)


def test_a_crash_between_the_answer_and_its_digest_is_repaired_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "ledger"
    ledger = FileLedger(directory)
    first = answered(upload("model-1"))
    ledger.record_answer(first)
    second = answered(upload("model-2", round_id=2))

    def crash(self: FileLedger, digest: bytes) -> None:
        raise KeyboardInterrupt("power cut")  # after last-answer.json, before the digest

    with monkeypatch.context() as patch:
        patch.setattr(FileLedger, "_append", crash)
        with pytest.raises(KeyboardInterrupt):
            ledger.record_answer(second)
    path = directory / ANSWERED_FILE
    assert path.read_bytes() == first.model_digest  # the digest never made it
    assert json.loads((directory / LAST_ANSWER_FILE).read_text())["model_digest"] == second.model_digest.hex()

    reopened = FileLedger(directory)
    assert reopened.has_answered(second.model_digest) and reopened.has_answered(first.model_digest)
    assert reopened.last_answer() == second
    assert (
        path.read_bytes() == first.model_digest + second.model_digest
    )  # repaired on disk, not only in memory


def test_a_crash_mid_append_of_the_answered_digest_is_repaired_on_open(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    first = answered(upload("model-1"))
    FileLedger(directory).record_answer(first)
    second = answered(upload("model-2", round_id=2))
    write_json_atomic(directory / LAST_ANSWER_FILE, second.to_dict(), secret=True)
    path = directory / ANSWERED_FILE
    with path.open("ab") as fh:
        fh.write(second.model_digest[:7])  # torn: the answer was never sent, but it was written

    reopened = FileLedger(directory)
    assert reopened.has_answered(second.model_digest)
    assert path.read_bytes() == first.model_digest + second.model_digest
