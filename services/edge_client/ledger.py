"""The edge client's model ledger on disk (:class:`fedcast.shared.protocol.ledger.ModelLedger`).

Three files in the client's state directory, all 0600:

* ``answered-models.bin``: the SHA-256 digest of every model this client answered
  a challenge for, 32 bytes each, appended and fsynced before the answer leaves.
  A torn last record (a crash mid-append) is ignored on load: its answer was
  never sent, and ``last-answer.json`` restores it if it was written.
* ``last-answer.json``: the most recent answered attempt (members, R, the share
  and its proof), written atomically *before* the digest is appended, so the
  evidence check and a repeated challenge survive a restart.
* ``pending-attempt.json``: the attempt uploaded last (members, its own A_i),
  written atomically before the upload leaves, so a member that restarts can
  still answer that attempt's challenge.

Nothing here is secret (every value is public or was sent), but the files tell
an observer which rounds the device took part in: 0600 like the keys.
"""

from __future__ import annotations

import os
from pathlib import Path

from fedcast.shared.errors import KeyStorageError
from fedcast.shared.keystore import read_secret_json, write_json_atomic
from fedcast.shared.protocol.ledger import AttemptRecord

__all__ = ["ANSWERED_FILE", "LAST_ANSWER_FILE", "PENDING_FILE", "FileLedger"]

ANSWERED_FILE = "answered-models.bin"
LAST_ANSWER_FILE = "last-answer.json"
PENDING_FILE = "pending-attempt.json"
_DIGEST_BYTES = 32


class FileLedger:
    """A durable ledger in ``directory`` (created 0700 if missing)."""

    def __init__(self, directory: str | os.PathLike[str], *, check_permissions: bool = True) -> None:
        self.directory = Path(directory)
        self._check = check_permissions
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise KeyStorageError(f"cannot create {self.directory}: {exc.strerror}") from exc
        self._answered = self._load_digests()
        self._last = self._load_record(LAST_ANSWER_FILE)
        self._pending = self._load_record(PENDING_FILE)
        if self._last is not None and self._last.model_digest not in self._answered:
            self._append(self._last.model_digest)  # the crash fell between the two writes: repair

    def _load_digests(self) -> set[bytes]:
        path = self.directory / ANSWERED_FILE
        if not path.exists():
            return set()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KeyStorageError(f"cannot read {path}: {exc.strerror}") from exc
        whole = len(data) - len(data) % _DIGEST_BYTES  # a torn last record was never acted on
        return {data[i : i + _DIGEST_BYTES] for i in range(0, whole, _DIGEST_BYTES)}

    def _load_record(self, name: str) -> AttemptRecord | None:
        path = self.directory / name
        if not path.exists():
            return None
        return AttemptRecord.from_dict(read_secret_json(path, check_permissions=self._check))

    def _append(self, digest: bytes) -> None:
        path = self.directory / ANSWERED_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size % _DIGEST_BYTES:  # drop a torn record before appending after it
                    os.ftruncate(fd, size - size % _DIGEST_BYTES)
                os.write(fd, digest)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise KeyStorageError(f"cannot append to {path}: {exc.strerror}") from exc
        self._answered.add(digest)

    # -- ModelLedger -----------------------------------------------------------------------

    def has_answered(self, model_digest: bytes) -> bool:
        return model_digest in self._answered

    def last_answer(self) -> AttemptRecord | None:
        return self._last

    def pending(self) -> AttemptRecord | None:
        return self._pending

    def record_upload(self, record: AttemptRecord) -> None:
        write_json_atomic(self.directory / PENDING_FILE, record.to_dict(), secret=True)
        self._pending = record

    def record_answer(self, record: AttemptRecord) -> None:
        if record.answer is None:
            raise KeyStorageError("record_answer needs a record with its answer")
        write_json_atomic(self.directory / LAST_ANSWER_FILE, record.to_dict(), secret=True)
        self._last = record
        self._append(record.model_digest)
        write_json_atomic(self.directory / PENDING_FILE, record.to_dict(), secret=True)
        self._pending = record
