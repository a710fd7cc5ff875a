"""The edge client service: an asyncio shell around :class:`ClientMachine`.

Start-up: load or create the client's ElGamal and Ed25519 keys (0600, in the
state directory), fetch and validate the system parameters and the
aggregator's public keys from the key service (waiting until the aggregator
registered), enroll with the device token, build the fixed-base tables (in a
thread: seconds for 10^5 parameters), then consume this client's queue (which
also receives the aggregator's broadcasts).

Per message: only the aggregator's signature is accepted; envelopes are checked
against member keys fetched fresh from the key service; training and
encryption run in a worker thread so the event loop (heartbeats, other
messages) is never blocked for long. Messages are handled one at a time.

The model ledger (:mod:`fedcast.services.edge_client.ledger`, in the state directory)
makes the client answer at most one challenge per model across restarts, and
lets it answer late the attempt it uploaded for before a restart.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fedcast.services.edge_client.data import DataSource, client_task
from fedcast.services.edge_client.ledger import FileLedger
from fedcast.services.edge_client.state import (
    load_last_round,
    load_local_state,
    save_last_round,
    save_local_state,
)
from fedcast.services.envconfig import env_float, env_hex, env_int, env_path, env_str, task_from_env
from fedcast.services.keyfiles import load_or_create_client_key, load_or_create_signing_key
from fedcast.services.keyserver.client import KeyServiceClient
from fedcast.services.lifecycle import unless_stopped
from fedcast.services.runtime import MessageGate, Outbox, retry_while_unreachable
from fedcast.shared.crypto.elgamal import DEFAULT_MIN_ONLINE, DEFAULT_TABLE_MEMORY_BYTES, MIN_ONLINE
from fedcast.shared.errors import ConfigurationError, FedcastError, TransportError
from fedcast.shared.learning.tasks import TaskSpec
from fedcast.shared.metrics import (
    CLIENT_ENCRYPT_SECONDS,
    CLIENT_TRAIN_SECONDS,
    CLIPPED_VALUES,
    CURRENT_ROUND,
    MODEL_QUALITY,
)
from fedcast.shared.protocol.client import ClientMachine
from fedcast.shared.protocol.outgoing import Outgoing
from fedcast.shared.transport.base import Delivery, Transport, client_endpoint
from fedcast.shared.wire.messages import (
    Announce,
    Challenge,
    MemberEnvelope,
    MessageType,
    RegistryEntry,
    RoundResult,
    RoundStatus,
    Signed,
)
from fedcast.shared.wire.serde import (
    DEFAULT_MAX_MESSAGE_BYTES,
    SizeLimits,
    WireContext,
    sign_first,
    verify_first,
)

__all__ = ["EdgeClientService", "EdgeConfig"]

log = logging.getLogger(__name__)
SERVICE = "edge"
AGGREGATOR_SENDER = "aggregator"
#: A clipped share above this (of the values of one upload) is logged at WARNING.
CLIPPED_WARN_SHARE = 0.01
_KEEP_ROUNDS = 4  # round records kept for rounds whose result never came (an aggregator restart)


@dataclass
class _RoundLog:
    """What the round's summary line reports: aggregates only, never data or keys."""

    started: float  # time.monotonic() when the round was first seen
    quality: dict[str, float] = field(default_factory=dict)  # the global model on local test data
    uploads: int = 0  # attempts this device trained and uploaded for
    clipped: int = 0  # values clipped in the last upload (training bound + encoding clip)
    values: int = 0  # values in one upload
    train_s: float = 0.0  # local training, summed over the uploads
    encrypt_s: float = 0.0  # encoding, encryption and proofs, summed over the uploads


@dataclass(frozen=True)
class EdgeConfig:
    """Validated edge-client settings; the enrollment token never appears in the repr."""

    client_id: str
    state_dir: Path
    keyserver_verify_key: bytes
    federation: str = "default"
    amqp_url: str | None = None
    enrollment_token: str = field(default="", repr=False)
    task: TaskSpec = field(default_factory=TaskSpec)
    data: DataSource = field(default_factory=DataSource)
    min_online: int = DEFAULT_MIN_ONLINE
    table_memory_bytes: int = DEFAULT_TABLE_MEMORY_BYTES
    #: Check every member's first-component proof instead of the sampled 2^-128 check.
    check_all_proofs: bool = False
    check_key_permissions: bool = True
    keyserver_timeout_s: float = 10.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    allow_insecure_test_group: bool = False  # tests only

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        if not self.enrollment_token:
            raise ConfigurationError("an edge client needs its device's FEDCAST_ENROLLMENT_TOKEN")
        if len(self.keyserver_verify_key) != 32:
            raise ConfigurationError("FEDCAST_KEYSERVER_VERIFY_KEY must be 32 bytes (64 hex digits)")
        if self.min_online < MIN_ONLINE:
            raise ConfigurationError("min_online must be >= 2")
        if self.table_memory_bytes < 0:
            raise ConfigurationError("table memory must be >= 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> EdgeConfig:
        env = os.environ if environ is None else environ
        data = DataSource(
            path=env_path(env, "FEDCAST_DATA_PATH"),
            labels_path=env_path(env, "FEDCAST_DATA_LABELS_PATH"),
            shard=env_int(env, "FEDCAST_SYNTHETIC_SHARD", 0),
            n_shards=env_int(env, "FEDCAST_SYNTHETIC_SHARDS", 8),
            users_per_client=env_int(env, "FEDCAST_SYNTHETIC_USERS_PER_CLIENT", 6),
            seed=env_int(env, "FEDCAST_DATA_SEED", 0),
        )
        values: dict[str, object] = {
            "client_id": env_str(env, "FEDCAST_CLIENT_ID"),
            "state_dir": env_path(env, "FEDCAST_STATE_DIR", Path("/var/lib/fedcast/edge")),
            "keyserver_verify_key": env_hex(env, "FEDCAST_KEYSERVER_VERIFY_KEY") or b"",
            "federation": env_str(env, "FEDCAST_FEDERATION", "default"),
            "amqp_url": env_str(env, "FEDCAST_AMQP_URL") or None,
            "enrollment_token": env_str(env, "FEDCAST_ENROLLMENT_TOKEN"),
            "task": task_from_env(env),
            "data": data,
            "min_online": env_int(env, "FEDCAST_MIN_ONLINE", DEFAULT_MIN_ONLINE),
            "table_memory_bytes": int(env_float(env, "FEDCAST_TABLE_MEMORY_MB", 256.0) * 1024 * 1024),
            "check_key_permissions": env_str(env, "FEDCAST_CHECK_KEY_PERMISSIONS", "1") != "0",
            "check_all_proofs": env_str(env, "FEDCAST_CHECK_ALL_PROOFS", "0") == "1",
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


class EdgeClientService:
    """One edge device. ``on_result(round, committed)`` is called for every round result."""

    def __init__(
        self,
        config: EdgeConfig,
        transport: Transport,
        *,
        on_result: Callable[[int, bool], None] | None = None,
    ) -> None:
        self.config = config
        self.transport = transport
        self._on_result = on_result
        self._lock = asyncio.Lock()
        self.machine: ClientMachine | None = None
        self.ready = asyncio.Event()
        self._state_path = config.state_dir / "local-model.npy"
        self._round_path = config.state_dir / "last-round.json"
        self._rounds: dict[int, _RoundLog] = {}

    @property
    def is_ready(self) -> bool:
        """Enrolled and consuming its queue (``/readyz``)."""
        return self.ready.is_set()

    async def start(self) -> None:
        cfg = self.config
        await retry_while_unreachable(self.transport.connect, what="broker")
        signer = load_or_create_signing_key(
            cfg.state_dir / "signing-key.json", check_permissions=cfg.check_key_permissions
        )
        keys = KeyServiceClient(
            self.transport,
            cfg.federation,
            cfg.client_id,
            signer,
            keyserver_verify_key=cfg.keyserver_verify_key,
            timeout=cfg.keyserver_timeout_s,
            allow_insecure_test_group=cfg.allow_insecure_test_group,
        )
        self._keys = keys
        params, aggregator, min_online = await retry_while_unreachable(keys.get_params, what="key service")
        delay = 0.5
        while aggregator is None or keys.aggregator_key is None:  # the aggregator registers on start
            log.info("waiting for the aggregator to register at the key service")
            await asyncio.sleep(delay)
            delay = min(2 * delay, 10.0)
            params, aggregator, min_online = await retry_while_unreachable(
                keys.get_params, what="key service"
            )
        public = keys.aggregator_key
        group = params.group
        keypair = await asyncio.to_thread(
            load_or_create_client_key,
            cfg.state_dir / "client-key.json",
            group,
            check_permissions=cfg.check_key_permissions,
        )
        await retry_while_unreachable(lambda: keys.enroll(cfg.enrollment_token, keypair), what="key service")
        self._ctx = WireContext.from_group(group)
        self._aggregator_vk = aggregator.verify_key
        ledger = await asyncio.to_thread(
            FileLedger, cfg.state_dir / "ledger", check_permissions=cfg.check_key_permissions
        )
        task = await asyncio.to_thread(client_task, cfg.task, cfg.data)
        saved = await asyncio.to_thread(load_local_state, self._state_path)
        if saved is not None:
            task.import_state(saved)
            log.info("restored the local model from %s", self._state_path)
        ctx, federation, me = self._ctx, cfg.federation, cfg.client_id

        def build() -> ClientMachine:
            return ClientMachine(
                client_id=me,
                federation=federation,
                params=params,
                keypair=keypair,
                aggregator=public,
                task=task,
                sign_first=lambda r, a, first: sign_first(signer, federation, r, a, me, first, ctx),
                verify_first=lambda m, r, a, first, sig, key: verify_first(
                    key, sig, federation, r, a, m, first, ctx
                ),
                min_online=max(cfg.min_online, min_online),
                table_memory_bytes=cfg.table_memory_bytes,
                ledger=ledger,
                check_all_proofs=cfg.check_all_proofs,
            )

        self.machine = await asyncio.to_thread(build)  # fixed-base tables: CPU heavy, off the loop
        self.machine.last_completed_round = await asyncio.to_thread(
            functools.partial(load_last_round, self._round_path, check_permissions=cfg.check_key_permissions)
        )
        self._gate = MessageGate(
            SERVICE,
            federation,
            ctx,
            {MessageType.ANNOUNCE, MessageType.ENVELOPE, MessageType.CHALLENGE, MessageType.RESULT},
            self._verify_key_of,
            cfg.max_message_bytes,
            limits=SizeLimits(
                ctx,
                max_bytes=cfg.max_message_bytes,
                model_size=cfg.task.model_size,
                max_members=params.max_clients,
            ),
        )
        self._outbox = Outbox(SERVICE, self.transport, federation, me, signer, ctx)
        await self.transport.consume(client_endpoint(me), self._on_delivery, broadcast=True, prefetch=4)
        self.ready.set()
        log.info("edge client %s enrolled and listening", me)

    async def _verify_key_of(self, sender: str) -> bytes | None:
        return self._aggregator_vk if sender == AGGREGATOR_SENDER else None

    async def run(self, stop: asyncio.Event) -> None:
        try:  # a stop while waiting for the key service ends start-up at once, and closes
            if await unless_stopped(self.start(), stop):
                await stop.wait()
        finally:
            await self.close()

    async def _on_delivery(self, delivery: Delivery) -> None:
        msg = await self._gate.admit(delivery)
        if msg is None:
            return
        async with self._lock:  # one message at a time: the machine's steps stay in order
            try:
                outgoing = await self._dispatch(msg)
            except FedcastError as exc:
                self._gate.rejected(exc, msg.header.sender)
                return
            try:
                await self._outbox.send(outgoing)
            except TransportError as exc:
                log.warning("send failed (the round's timeout covers it): %s", exc)

    async def _dispatch(self, msg: Signed) -> list[Outgoing]:
        machine = self.machine
        assert machine is not None
        h, body = msg.header, msg.body
        CURRENT_ROUND.labels(SERVICE).set(h.round)
        if isinstance(body, Announce):
            outgoing = machine.on_announce(h.round, h.attempt, body)
            self._round_log(h.round)
            return outgoing
        if isinstance(body, MemberEnvelope):
            # Evidence against a dropped member is checked with its registered keys too.
            registry = await self._keys.get_keys([*body.members, *sorted(machine.evidence_senders(body))])
            job = machine.on_envelope(h.round, h.attempt, body, registry)
            record = self._round_log(h.round)
            record.quality = machine.task.quality(job.model)
            for metric, value in record.quality.items():
                MODEL_QUALITY.labels(SERVICE, metric).set(value)
            prepared = await asyncio.to_thread(machine.compute_upload, job)
            CLIENT_TRAIN_SECONDS.labels(SERVICE).observe(prepared.train_seconds)
            CLIENT_ENCRYPT_SECONDS.labels(SERVICE).observe(prepared.encrypt_seconds)
            CLIPPED_VALUES.labels(SERVICE).inc(prepared.clipped)
            record.uploads += 1
            record.clipped, record.values = prepared.clipped, machine.n_upload
            record.train_s += prepared.train_seconds
            record.encrypt_s += prepared.encrypt_seconds
            if record.values and prepared.clipped > CLIPPED_WARN_SHARE * record.values:
                log.warning(
                    "round %d attempt %d: clipped %d of %d values (%.1f%%): the update was bounded; if this "
                    "persists, check the federation's clip and the task's weight bound",
                    h.round,
                    h.attempt,
                    prepared.clipped,
                    record.values,
                    100.0 * prepared.clipped / record.values,
                )
            return machine.uploaded(prepared)
        if isinstance(body, Challenge):
            members: Mapping[str, RegistryEntry] | None = None
            if machine.needs_registry(h.round, h.attempt):  # restarted since the upload
                members = await self._keys.get_keys([f.member for f in body.firsts])
            return machine.on_challenge(h.round, h.attempt, body, members)
        assert isinstance(body, RoundResult)
        before = machine.last_completed_round
        committed = machine.on_result(h.round, h.attempt, body)
        if committed:
            state = machine.task.export_state()
            if state is not None:  # a restarted device keeps its private model
                await asyncio.to_thread(save_local_state, self._state_path, state)
        if machine.last_completed_round > before:  # a restarted device refuses replays of old rounds
            await asyncio.to_thread(save_last_round, self._round_path, machine.last_completed_round)
        if body.status != RoundStatus.RETRY:
            self._log_round(h.round, h.attempt, body)
        if self._on_result is not None:
            self._on_result(h.round, committed)
        return []

    def _round_log(self, round_id: int) -> _RoundLog:
        record = self._rounds.get(round_id)
        if record is None:
            record = self._rounds[round_id] = _RoundLog(time.monotonic())
            for old in [r for r in self._rounds if r < round_id - _KEEP_ROUNDS]:
                del self._rounds[old]
        return record

    def _log_round(self, round_id: int, attempt: int, result: RoundResult) -> None:
        """The round's one INFO line (docs/METRICS.md, "Log lines"), when its result is final."""
        record = self._rounds.pop(round_id, None)
        if record is None:  # not seen by this process (a copy of an old result after a restart)
            return
        member = self.config.client_id in result.members
        quality = "".join(f" {name}={value:.6g}" for name, value in record.quality.items())
        share = record.clipped / record.values if record.values else 0.0
        log.info(
            "round %d %s: client=%s round=%d attempt=%d status=%s member=%s uploads=%d%s clipped=%d "
            "clipped_share=%.4f train_s=%.4f encrypt_s=%.4f round_s=%.3f",
            round_id,
            result.status.value,
            self.config.client_id,
            round_id,
            attempt,
            result.status.value,
            "yes" if member else "no",
            record.uploads,
            quality,
            record.clipped,
            share,
            record.train_s,
            record.encrypt_s,
            time.monotonic() - record.started,
        )

    async def close(self) -> None:
        await self.transport.close()
