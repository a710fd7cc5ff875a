"""The key service's registry: devices, their enrolled public keys and the aggregator, in sqlite.

One sqlite file in the key service's state directory, opened in WAL mode (a
crash never leaves a half-applied write, readers never block the writer), with
the schema version in ``PRAGMA user_version`` and :func:`migrate` bringing an
older file up to :data:`SCHEMA_VERSION`. Every write runs in one
``BEGIN IMMEDIATE`` transaction. The file is created with mode 0600 (sqlite
gives its ``-wal``/``-shm`` companions the same mode) and refused if group or
others can access it, like :mod:`fedcast.shared.keystore` refuses key files.

Enrollment tokens never touch the disk in clear: only their SHA-256 is stored
and a presented token is hashed and compared with :func:`hmac.compare_digest`.
A plain hash suffices because tokens carry at least :data:`MIN_TOKEN_LENGTH`
characters of operator- or CSPRNG-chosen entropy; there is no password to
stretch. No method logs a token.

Calls are short synchronous sqlite statements on one connection. The key
service runs them in worker threads (next to the element checks, which are the
slow part), so the connection is shared across threads and a lock serializes
every use of it: one transaction at a time, never interleaved.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType

from fedcast.shared.crypto.proofs import DlogProof
from fedcast.shared.crypto.signing import VERIFY_KEY_BYTES
from fedcast.shared.errors import (
    ConfigurationError,
    EnrollmentRefusedError,
    KeyStorageError,
    LegacyStateError,
    RegistryError,
)
from fedcast.shared.wire.codec import ID_PATTERN, MAX_TOKEN_CHARS
from fedcast.shared.wire.messages import AggregatorInfo, RegistryEntry

__all__ = [
    "MIN_TOKEN_LENGTH",
    "RESERVED_IDS",
    "SCHEMA_VERSION",
    "DeviceRecord",
    "DeviceStatus",
    "RegistryStore",
    "check_client_id",
    "check_token",
    "hash_token",
    "migrate",
]

log = logging.getLogger(__name__)

#: Shortest token accepted (imported tokens are operator-made; ours have 43 characters).
MIN_TOKEN_LENGTH = 16
# What the wire accepts as a token (fedcast.shared.wire.codec.TokenCodec): printable ASCII, no spaces.
_TOKEN = re.compile(rf"[\x21-\x7e]{{{MIN_TOKEN_LENGTH},{MAX_TOKEN_CHARS}}}", re.ASCII)
SCHEMA_VERSION = 2
# sqlite's default host-parameter limit is 999 in old builds; stay well below it per query.
_CHUNK = 500


class DeviceStatus(StrEnum):
    PROVISIONED = "provisioned"  # has a token, has not enrolled yet
    ENROLLED = "enrolled"  # keys registered
    REVOKED = "revoked"  # keys kept (for audit), marked revoked; enrollment refused


@dataclass(frozen=True)
class DeviceRecord:
    """What an operator may see of a device: its status and dates (Unix seconds), never a token or hash."""

    client_id: str
    status: DeviceStatus
    provisioned_at: float
    enrolled_at: float | None
    revoked_at: float | None


#: Sender ids of the services themselves (docs/PROTOCOL.md): never a device's id.
RESERVED_IDS = frozenset({"keyserver", "aggregator"})


def check_client_id(client_id: object) -> str:
    """Return ``client_id`` if it is a wire id (1-64 of ``[A-Za-z0-9._-]``), else raise RegistryError."""
    if not isinstance(client_id, str) or not ID_PATTERN.fullmatch(client_id):
        raise RegistryError(f"invalid client id {client_id!r}: want 1-64 characters of A-Z a-z 0-9 . _ -")
    if client_id in RESERVED_IDS:
        # Messages are attributed by sender id: a device named like a service could be
        # mistaken for it by code that looks senders up by name.
        raise RegistryError(f"{client_id!r} is reserved for a fedcast service")
    return client_id


def hash_token(token: str) -> bytes:
    """SHA-256 of the token's UTF-8 bytes: what the registry stores instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def check_token(token: object, what: str = "a device token") -> str:
    """Return ``token`` if it is :data:`MIN_TOKEN_LENGTH`-256 printable ASCII characters, else raise.

    The ConfigurationError never quotes the token.
    """
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise ConfigurationError(
            f"{what} must be {MIN_TOKEN_LENGTH}-{MAX_TOKEN_CHARS} printable ASCII characters without spaces"
        )
    return token


# -- schema ---------------------------------------------------------------------------------------


def _migrate_0_to_1(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE devices (
            client_id TEXT PRIMARY KEY,
            token_hash BLOB NOT NULL,
            elgamal_public TEXT,
            verify_key TEXT,
            status TEXT NOT NULL CHECK (status IN ('provisioned', 'enrolled', 'revoked')),
            provisioned_at REAL NOT NULL,
            enrolled_at REAL,
            revoked_at REAL
        )"""
    )
    db.execute(
        """CREATE TABLE aggregator (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            betas TEXT NOT NULL,
            delivery TEXT NOT NULL,
            verify_key TEXT NOT NULL,
            registered_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    """Protocol version 2: keys live mod an RSA modulus, and the aggregator has one beta with proofs.

    Keys enrolled under version 1 are elements of a prime-modulus group that hides
    nothing: they cannot be carried over. A registry holding any is refused (nothing
    is changed); one with provisioned devices only keeps their tokens.
    """
    enrolled = db.execute("SELECT COUNT(*) FROM devices WHERE elgamal_public IS NOT NULL").fetchone()[0]
    aggregators = db.execute("SELECT COUNT(*) FROM aggregator").fetchone()[0]
    if enrolled or aggregators:
        raise LegacyStateError(
            f"the registry holds {enrolled} device key(s) and {aggregators} aggregator key(s) enrolled under "
            "fedcast protocol version 1, whose group hides nothing; they are refused. Start the "
            "version-2 key service with a new state directory and re-provision the devices "
            "(fedcast keyserver add-device, or FEDCAST_DEVICE_TOKENS); see docs/SECURITY.md"
        )
    db.execute("DROP TABLE aggregator")
    db.execute(
        """CREATE TABLE aggregator (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            beta TEXT NOT NULL,
            beta_proof TEXT NOT NULL,
            delivery TEXT NOT NULL,
            delivery_proof TEXT NOT NULL,
            verify_key TEXT NOT NULL,
            registered_at REAL NOT NULL
        )"""
    )


# _MIGRATIONS[v] turns a version-v file into version v+1; append, never edit, to evolve the schema.
_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migrate_0_to_1, _migrate_1_to_2)
assert len(_MIGRATIONS) == SCHEMA_VERSION


def migrate(db: sqlite3.Connection) -> int:
    """Bring ``db`` (opened with ``isolation_level=None``) to :data:`SCHEMA_VERSION`; return it.

    Each step runs in its own transaction together with its ``user_version``
    bump, so an interrupted migration leaves a consistent older version.
    """
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise KeyStorageError(
            f"registry schema version {version} is newer than this build's {SCHEMA_VERSION}; upgrade fedcast"
        )
    while version < SCHEMA_VERSION:
        db.execute("BEGIN IMMEDIATE")
        try:
            _MIGRATIONS[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        version += 1
        log.info("registry schema migrated to version %d", version)
    return version


def _proof_json(proof: DlogProof) -> str:
    return json.dumps([format(proof.commitment, "x"), format(proof.response, "x")])


def _proof_from_json(text: str) -> DlogProof:
    commitment, response = json.loads(text)
    return DlogProof(int(commitment, 16), int(response, 16))


# -- the store ------------------------------------------------------------------------------------


def _open_private(path: Path) -> None:
    """Create ``path`` with mode 0600 if missing; refuse an existing group/other-accessible file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
    except OSError as exc:
        raise KeyStorageError(f"cannot open registry {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyStorageError(f"registry {path} is accessible by group or others (mode {mode:04o})")


class RegistryStore:
    """The registry (see the module docstring). Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        _open_private(self.path)
        self._db: sqlite3.Connection | None = None
        try:
            # isolation_level=None: no implicit transactions; _write() opens them explicitly.
            # check_same_thread=False: worker threads share the connection, self._lock guards it.
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")  # a confirmed enrollment survives power loss
            self._db.execute("PRAGMA foreign_keys = ON")
            migrate(self._db)
        except sqlite3.Error as exc:
            self.close()
            raise KeyStorageError(f"cannot open registry {self.path}: {exc}") from exc
        except BaseException:  # a refused migration (LegacyStateError) must not leak the connection
            self.close()
            raise

    def close(self) -> None:
        """Close the database (after any operation in flight); safe to call more than once."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> RegistryStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RegistryStore({str(self.path)!r})"

    @property
    def schema_version(self) -> int:
        with self._read() as db:
            return int(db.execute("PRAGMA user_version").fetchone()[0])

    # -- federation binding ----------------------------------------------------------------------

    def bind_federation(self, federation: str) -> None:
        """Remember the federation on first use; refuse a state dir that belongs to another one."""
        stored = self._bind_meta("federation", federation)
        if stored != federation:
            raise ConfigurationError(
                f"registry {self.path} belongs to federation {stored!r}, not {federation!r}"
            )

    def bind_modulus(self, modulus: int) -> None:
        """Remember the federation's modulus N on first use; refuse keys enrolled under another N.

        Every stored key is an element mod N: a registry kept while the system parameters
        were replaced would serve keys of another group.
        """
        digest = hashlib.sha256(format(modulus, "x").encode()).hexdigest()
        if self._bind_meta("modulus", digest) != digest:
            raise ConfigurationError(
                f"registry {self.path} holds keys for another modulus N than system-params.json: "
                "restore the matching system-params.json, or start a new registry"
            )

    def _bind_meta(self, key: str, value: str) -> str:
        """The value stored under ``key``; ``value`` is stored first if there is none."""
        with self._write() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            if row is None:
                db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
                return value
            return str(row[0])

    # -- devices ---------------------------------------------------------------------------------

    def provision_device(
        self, client_id: str, *, reprovision: bool = False, force_active: bool = False
    ) -> str:
        """Create a device with a fresh token and return the token (shown once, stored hashed).

        A revoked device is provisioned anew (keys cleared, it enrolls again). A device
        that is provisioned or enrolled is refused with RegistryError: a new token would
        silently un-enroll it and void the token it holds. ``reprovision`` together with
        ``force_active`` does that on purpose; ``force_active`` alone is a usage error.
        """
        check_client_id(client_id)
        if force_active and not reprovision:
            raise ConfigurationError(
                "force_active (--force-active) applies only with reprovision (--reprovision)"
            )
        token = secrets.token_urlsafe(32)
        with self._write() as db:
            row = db.execute("SELECT status FROM devices WHERE client_id = ?", (client_id,)).fetchone()
            previous = None if row is None else DeviceStatus(row[0])
            if previous not in (None, DeviceStatus.REVOKED):
                if not reprovision:
                    raise RegistryError(f"device {client_id!r} is already provisioned ({previous})")
                if not force_active:
                    raise RegistryError(
                        f"device {client_id!r} is {previous}, not revoked: re-provisioning would un-enroll "
                        "it and void its token. Revoke it first, or force it (--force-active)"
                    )
            self._put_device(db, client_id, hash_token(token))
        if previous in (DeviceStatus.PROVISIONED, DeviceStatus.ENROLLED):
            log.warning(
                "device %s was %s: re-provisioned by force, it must enroll again", client_id, previous
            )
        else:
            log.info("device %s provisioned", client_id)
        return token

    def import_tokens(self, tokens: Mapping[str, str]) -> int:
        """Provision devices from operator-made tokens (client id -> token); return how many changed.

        Idempotent: a device that already has this token is left alone. A
        provisioned device with another token gets the new one (the operator
        rotated it before enrollment); an enrolled or revoked device keeps its
        state and a warning is logged (re-provision it explicitly instead).
        """
        checked = {
            check_client_id(cid): hash_token(check_token(tok, f"token of {cid}"))
            for cid, tok in tokens.items()
        }
        changed = 0
        with self._write() as db:
            for client_id, digest in checked.items():
                row = db.execute(
                    "SELECT status, token_hash FROM devices WHERE client_id = ?", (client_id,)
                ).fetchone()
                if row is not None and hmac.compare_digest(row[1], digest):
                    continue
                if row is not None and row[0] != DeviceStatus.PROVISIONED:
                    log.warning("token of %s device %s changed; not re-provisioned", row[0], client_id)
                    continue
                self._put_device(db, client_id, digest)
                changed += 1
        if changed:
            log.info("imported %d device token(s)", changed)
        return changed

    def enroll(self, client_id: str, token: str, elgamal_public: int, verify_key: bytes) -> bool:
        """Bind the device's public keys; True if newly enrolled, False if it already was (same keys).

        EnrollmentRefusedError for an unknown device or a wrong token (one
        message for both, so the reply does not reveal which ids exist), a
        revoked device, or a device already enrolled with other keys. The
        caller validates ``elgamal_public`` as a group element.
        """
        if not isinstance(verify_key, bytes) or len(verify_key) != VERIFY_KEY_BYTES:
            raise EnrollmentRefusedError(f"verify key must be {VERIFY_KEY_BYTES} bytes")
        if not isinstance(elgamal_public, int) or elgamal_public <= 1:
            raise EnrollmentRefusedError("ElGamal public key must be an integer > 1")
        if not isinstance(client_id, str) or not ID_PATTERN.fullmatch(client_id):
            raise EnrollmentRefusedError("invalid client id")
        pk_hex, vk_hex = format(elgamal_public, "x"), verify_key.hex()
        with self._write() as db:
            row = db.execute(
                "SELECT token_hash, status, elgamal_public, verify_key FROM devices WHERE client_id = ?",
                (client_id,),
            ).fetchone()
            # Hash even for unknown ids so both refusals take the same time.
            digest = hash_token(token) if isinstance(token, str) else b""
            if row is None or not hmac.compare_digest(row[0], digest):
                raise EnrollmentRefusedError("unknown device or wrong enrollment token")
            status = DeviceStatus(row[1])
            if status is DeviceStatus.REVOKED:
                raise EnrollmentRefusedError(f"device {client_id!r} is revoked")
            if status is DeviceStatus.ENROLLED:
                if (row[2], row[3]) == (pk_hex, vk_hex):
                    return False
                raise EnrollmentRefusedError(f"device {client_id!r} is already enrolled with other keys")
            db.execute(
                "UPDATE devices SET status = ?, elgamal_public = ?, verify_key = ?, enrolled_at = ? "
                "WHERE client_id = ?",
                (DeviceStatus.ENROLLED.value, pk_hex, vk_hex, time.time(), client_id),
            )
        log.info("device %s enrolled (verify key %s...)", client_id, vk_hex[:16])
        return True

    def status(self, client_id: str) -> DeviceStatus | None:
        """The device's status, None if unknown."""
        with self._read() as db:
            row = db.execute("SELECT status FROM devices WHERE client_id = ?", (client_id,)).fetchone()
        return None if row is None else DeviceStatus(row[0])

    def list_devices(self) -> list[DeviceRecord]:
        """Every device, by id, with its status and dates: what ``fedcast keyserver list`` shows."""
        with self._read() as db:
            rows = db.execute(
                "SELECT client_id, status, provisioned_at, enrolled_at, revoked_at FROM devices "
                "ORDER BY client_id"
            ).fetchall()
        return [
            DeviceRecord(client_id, DeviceStatus(status), provisioned, enrolled, revoked)
            for client_id, status, provisioned, enrolled, revoked in rows
        ]

    def entries(self, client_ids: Iterable[str]) -> list[RegistryEntry]:
        """Registry entries of those ids that have keys (enrolled or revoked), in request order."""
        wanted = list(dict.fromkeys(client_ids))  # dedupe, keep order
        found: dict[str, RegistryEntry] = {}
        with self._read() as db:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    "SELECT client_id, elgamal_public, verify_key, status FROM devices "  # noqa: S608 - '?'s only
                    f"WHERE client_id IN ({marks}) AND elgamal_public IS NOT NULL",
                    chunk,
                ).fetchall()
                for client_id, pk_hex, vk_hex, status in rows:
                    found[client_id] = RegistryEntry(
                        client_id, int(pk_hex, 16), bytes.fromhex(vk_hex), status == DeviceStatus.REVOKED
                    )
        return [found[c] for c in wanted if c in found]

    def revoke(self, client_id: str) -> bool:
        """Mark the device revoked; True if it changed, False if it already was. Unknown: RegistryError."""
        with self._write() as db:
            row = db.execute("SELECT status FROM devices WHERE client_id = ?", (client_id,)).fetchone()
            if row is None:
                raise RegistryError(f"unknown device {client_id!r}")
            if row[0] == DeviceStatus.REVOKED:
                return False
            db.execute(
                "UPDATE devices SET status = ?, revoked_at = ? WHERE client_id = ?",
                (DeviceStatus.REVOKED.value, time.time(), client_id),
            )
        log.info("device %s revoked", client_id)
        return True

    # -- aggregator ------------------------------------------------------------------------------

    def set_aggregator(self, info: AggregatorInfo) -> bool:
        """Register (or replace) the aggregator's public keys; True if anything changed.

        The caller has verified the proofs (the handler does); they are stored so that
        every client can verify them again from the PARAMS reply.
        """
        if len(info.verify_key) != VERIFY_KEY_BYTES:
            raise RegistryError("aggregator info needs a 32-byte verify key")
        values = (
            format(info.beta, "x"),
            _proof_json(info.beta_proof),
            format(info.delivery, "x"),
            _proof_json(info.delivery_proof),
            info.verify_key.hex(),
        )
        columns = "beta, beta_proof, delivery, delivery_proof, verify_key"
        with self._write() as db:
            row = db.execute(f"SELECT {columns} FROM aggregator WHERE id = 1").fetchone()  # noqa: S608
            if row is not None and tuple(row) == values:
                return False
            db.execute(
                f"INSERT OR REPLACE INTO aggregator (id, {columns}, registered_at) "  # noqa: S608 - constants
                "VALUES (1, ?, ?, ?, ?, ?, ?)",
                (*values, time.time()),
            )
        log.info(
            "aggregator %s (verify key %s...)",
            "registered" if row is None else "re-registered with new keys",
            values[4][:16],
        )
        return True

    def aggregator(self) -> AggregatorInfo | None:
        """The registered aggregator, None before registration."""
        with self._read() as db:
            row = db.execute(
                "SELECT beta, beta_proof, delivery, delivery_proof, verify_key FROM aggregator WHERE id = 1"
            ).fetchone()
        if row is None:
            return None
        try:
            return AggregatorInfo(
                int(row[0], 16),
                _proof_from_json(row[1]),
                int(row[2], 16),
                _proof_from_json(row[3]),
                bytes.fromhex(row[4]),
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise KeyStorageError("aggregator row in the registry is corrupt") from exc

    # -- internals -------------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """The connection, held exclusively; sqlite errors become KeyStorageError."""
        with self._lock:
            if self._db is None:
                raise KeyStorageError("registry is closed")
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise KeyStorageError(f"registry operation failed: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; sqlite errors become KeyStorageError, typed refusals pass through."""
        with self._read() as db:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise KeyStorageError(f"registry is not writable: {exc}") from exc
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # sqlite may have rolled back already (e.g. on SQLITE_FULL)
                    db.execute("ROLLBACK")
                raise

    @staticmethod
    def _put_device(db: sqlite3.Connection, client_id: str, digest: bytes) -> None:
        db.execute(
            "INSERT OR REPLACE INTO devices (client_id, token_hash, elgamal_public, verify_key, status, "
            "provisioned_at, enrolled_at, revoked_at) VALUES (?, ?, NULL, NULL, ?, ?, NULL, NULL)",
            (client_id, digest, DeviceStatus.PROVISIONED.value, time.time()),
        )
