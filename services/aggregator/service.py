"""The aggregator service: an asyncio shell around :class:`AggregatorMachine`.

Start-up: connect, fetch the system parameters from the key service (retrying
until it answers), load or create the aggregator's secret keys (alpha and the
delivery key; from a file or a mounted Secret, 0600, never logged) and its
Ed25519 key, register the public halves with their proofs at the key service,
resume from the last checkpoint, and announce the next round, or, if it stopped
after sending a challenge, take that attempt up again (``attempt-state.json``:
members will not upload again for a model they answered for, so the attempt
must be finished, not restarted). Then: verified messages go to the
machine, the machine's deadlines drive a timer, decryption runs in an executor,
and every completed round is checkpointed durably before it is announced as
complete. SIGTERM (the ``stop`` event) ends the loop between steps.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedcast.services.aggregator.checkpoint import Checkpoint, CheckpointStore, LoadedCheckpoint
from fedcast.services.aggregator.foldpool import ProcessFolder
from fedcast.services.envconfig import (
    env_float,
    env_hex,
    env_int,
    env_optional_int,
    env_path,
    env_str,
    task_from_env,
)
from fedcast.services.keyfiles import load_or_create_aggregator_key, load_or_create_signing_key
from fedcast.services.keyserver.client import KeyServiceClient
from fedcast.services.lifecycle import unless_stopped
from fedcast.services.observability import record_round_progress
from fedcast.services.runtime import MessageGate, Outbox, attempt_screen, retry_while_unreachable
from fedcast.shared.crypto.elgamal import DEFAULT_MIN_ONLINE, DEFAULT_TABLE_MEMORY_BYTES
from fedcast.shared.errors import (
    ConfigurationError,
    FedcastError,
    InvalidProofError,
    KeyStorageError,
    TransportError,
)
from fedcast.shared.keystore import read_json, write_json_atomic
from fedcast.shared.learning.tasks import FedAvgServerTask, FedMFServerTask, ServerTask, TaskSpec
from fedcast.shared.metrics import (
    AGGREGATE_SECONDS,
    CHALLENGE_RESENDS,
    CHECKPOINTS_DAMAGED,
    CURRENT_ROUND,
    DECRYPT_SECONDS,
    DROPOUTS,
    MESSAGE_BYTES_SENT,
    MESSAGES_SENT,
    ONLINE_SET_SIZE,
    PHASE_SECONDS,
    ROUND_RETRIES,
    ROUND_SECONDS,
    ROUNDS_COMPLETED,
)
from fedcast.shared.protocol.aggregator import AggregatorMachine, RoundConfig, RoundOutcome
from fedcast.shared.protocol.outgoing import Outgoing
from fedcast.shared.transport.base import AGGREGATOR, Delivery, Transport
from fedcast.shared.wire.messages import AggregatorInfo, MessageType, RegistryEntry, Response, Signed, Upload
from fedcast.shared.wire.serde import (
    DEFAULT_MAX_MESSAGE_BYTES,
    FirstComponentSigned,
    SizeLimits,
    WireContext,
    verify_first,
)

__all__ = ["AggregatorConfig", "AggregatorService", "server_task"]

log = logging.getLogger(__name__)
SERVICE = "aggregator"
ATTEMPT_FILE = "attempt.json"
ATTEMPT_STATE_FILE = "attempt-state.json"
_OPENING = frozenset({MessageType.ANNOUNCE, MessageType.ENVELOPE})
#: The one message type each stage of an attempt takes (AggregatorMachine._check_current).
_STAGE_EXPECTS = {
    "collecting_ready": MessageType.READY,
    "collecting_uploads": MessageType.UPLOAD,
    "collecting_responses": MessageType.RESPONSE,
}
SENDER = "aggregator"


def server_task(spec: TaskSpec) -> ServerTask:
    return FedMFServerTask(spec) if spec.name == "fedmf" else FedAvgServerTask(spec)


@dataclass(frozen=True)
class AggregatorConfig:
    """Validated aggregator settings; secrets never appear in the repr."""

    state_dir: Path
    federation: str = "default"
    amqp_url: str | None = None
    aggregator_token: str = field(default="", repr=False)
    keyserver_verify_key: bytes | None = None
    task: TaskSpec = field(default_factory=TaskSpec)
    rounds: RoundConfig = field(default_factory=RoundConfig)
    max_rounds: int | None = None  # stop after this many completed rounds (None: run forever)
    secret_key_file: Path | None = None  # default: <state_dir>/aggregator-key.json
    check_key_permissions: bool = True
    keyserver_timeout_s: float = 10.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    table_memory_bytes: int = DEFAULT_TABLE_MEMORY_BYTES
    #: Helper processes folding uploads and checking proofs (None: one per extra CPU core).
    fold_workers: int | None = None
    allow_insecure_test_group: bool = False  # tests only

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        if self.table_memory_bytes < 0:
            raise ConfigurationError("table memory must be >= 0")
        if self.fold_workers is not None and not 0 <= self.fold_workers <= 64:
            raise ConfigurationError("fold workers must be in [0, 64]")
        if not self.aggregator_token:
            raise ConfigurationError("the aggregator needs FEDCAST_AGGREGATOR_TOKEN to register its keys")
        if self.keyserver_verify_key is not None and len(self.keyserver_verify_key) != 32:
            raise ConfigurationError("the key-service verify key must be 32 bytes (64 hex digits)")
        if self.max_rounds is not None and self.max_rounds < 1:
            raise ConfigurationError("max_rounds must be >= 1")

    @property
    def key_path(self) -> Path:
        return self.secret_key_file or self.state_dir / "aggregator-key.json"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> AggregatorConfig:
        env = os.environ if environ is None else environ
        rounds = RoundConfig(
            min_online=env_int(env, "FEDCAST_MIN_ONLINE", DEFAULT_MIN_ONLINE),
            max_online=env_int(env, "FEDCAST_MAX_ONLINE", 1000),
            ready_window_s=env_float(env, "FEDCAST_READY_WINDOW_S", 10.0),
            upload_timeout_s=env_float(env, "FEDCAST_UPLOAD_TIMEOUT_S", 120.0),
            response_timeout_s=env_float(env, "FEDCAST_RESPONSE_TIMEOUT_S", 60.0),
            max_attempts=env_int(env, "FEDCAST_MAX_ATTEMPTS", 3),
            expected_clients=env_optional_int(env, "FEDCAST_EXPECTED_CLIENTS"),
        )
        values: dict[str, object] = {
            "state_dir": env_path(env, "FEDCAST_STATE_DIR", Path("/var/lib/fedcast/aggregator")),
            "federation": env_str(env, "FEDCAST_FEDERATION", "default"),
            "amqp_url": env_str(env, "FEDCAST_AMQP_URL") or None,
            "aggregator_token": env_str(env, "FEDCAST_AGGREGATOR_TOKEN"),
            "keyserver_verify_key": env_hex(env, "FEDCAST_KEYSERVER_VERIFY_KEY"),
            "task": task_from_env(env),
            "rounds": rounds,
            "max_rounds": env_optional_int(env, "FEDCAST_ROUNDS"),
            "secret_key_file": env_path(env, "FEDCAST_AGGREGATOR_KEY_FILE"),
            "check_key_permissions": env_str(env, "FEDCAST_CHECK_KEY_PERMISSIONS", "1") != "0",
            "table_memory_bytes": int(env_float(env, "FEDCAST_TABLE_MEMORY_MB", 256.0) * 1024 * 1024),
            "fold_workers": env_optional_int(env, "FEDCAST_FOLD_WORKERS"),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


class AggregatorService:
    """One aggregator process. ``on_round`` is called after each completed, checkpointed round."""

    def __init__(
        self,
        config: AggregatorConfig,
        transport: Transport,
        *,
        on_round: Callable[[RoundOutcome], None] | None = None,
    ) -> None:
        self.config = config
        self.transport = transport
        self._on_round = on_round
        self._wake = asyncio.Event()
        self._registry: dict[str, RegistryEntry] = {}
        self.machine: AggregatorMachine | None = None
        self.completed_rounds = 0
        self.finished = asyncio.Event()
        self._started = False
        self._fold_seconds = 0.0
        self._persisted_attempt = (0, -1)
        self._closing = False
        self._checkpoints = CheckpointStore(config.state_dir / "checkpoint")
        self._last_result: Checkpoint | None = None  # re-sent at start: it may never have gone out
        self._pool: ProcessFolder | None = None
        # Per round, for its summary line: members dropped by failed attempts, and its duration.
        self._round_dropouts: dict[int, int] = {}
        self._round_seconds: dict[int, float] = {}

    @property
    def is_ready(self) -> bool:
        """Registered at the key service and consuming, and not stopped (``/readyz``)."""
        return self._started and self.machine is not None and self.machine.stage.value != "stopped"

    # -- start-up ---------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        await retry_while_unreachable(self.transport.connect, what="broker")
        self._signer = load_or_create_signing_key(
            cfg.state_dir / "signing-key.json", check_permissions=cfg.check_key_permissions
        )
        self._keys = KeyServiceClient(
            self.transport,
            cfg.federation,
            SENDER,
            self._signer,
            keyserver_verify_key=cfg.keyserver_verify_key,
            timeout=cfg.keyserver_timeout_s,
            allow_insecure_test_group=cfg.allow_insecure_test_group,
        )
        params, _, min_online = await retry_while_unreachable(self._keys.get_params, what="key service")
        secret = await asyncio.to_thread(
            load_or_create_aggregator_key,
            cfg.key_path,
            params.group,
            check_permissions=cfg.check_key_permissions,
        )
        public = secret.public(federation=cfg.federation, verify_key=self._signer.verify_key)
        info = AggregatorInfo(
            int(public.beta),
            public.beta_proof,
            int(public.delivery),
            public.delivery_proof,
            self._signer.verify_key,
        )
        await retry_while_unreachable(
            lambda: self._keys.register_aggregator(cfg.aggregator_token, info), what="key service"
        )
        loaded = await asyncio.to_thread(self._checkpoints.load)
        checkpoint = None if loaded is None else loaded.checkpoint
        if loaded is not None and loaded.damaged:
            CHECKPOINTS_DAMAGED.labels(SERVICE).inc(len(loaded.damaged))
            log.error(
                "damaged checkpoint(s) skipped: %s; resuming from round %d's model: the training of "
                "rounds %d-%d is lost (their round ids are not reused)",
                "; ".join(why for _, why in loaded.damaged),
                loaded.checkpoint.round,
                loaded.checkpoint.round + 1,
                loaded.highest_round,
            )
        if checkpoint is not None and checkpoint.task != cfg.task.name:
            raise ConfigurationError(
                f"checkpoint is for task {checkpoint.task!r}, configured {cfg.task.name!r}"
            )
        rounds = cfg.rounds
        if rounds.min_online < min_online:  # the federation's minimum is a floor, never lowered
            try:
                rounds = RoundConfig(**{**rounds.__dict__, "min_online": min_online})
            except ConfigurationError as exc:
                raise ConfigurationError(
                    f"the key service's minimum online set is {min_online}: {exc}"
                ) from exc
        self._ctx = WireContext.from_group(params.group)
        resume_round, first_attempt = self._resume_point(loaded)
        self._last_result = checkpoint if checkpoint is not None and checkpoint.attempt is not None else None

        self._pool = ProcessFolder(params.group.n2, workers=cfg.fold_workers)
        pool = self._pool

        task = server_task(cfg.task)
        model = None if checkpoint is None else checkpoint.model
        if model is None and resume_round > 1:
            # The checkpoint is lost: not the seeded round-1 model again, which every member
            # already answered for (one answer per model) and would refuse.
            model = task.initial_model(seed=secrets.randbits(63))

        def build() -> AggregatorMachine:  # the decryptor's comb tables: seconds for large models
            return AggregatorMachine(
                federation=cfg.federation,
                params=params,
                secret=secret,
                task=task,
                config=rounds,
                verify_first=self._verify_first,
                model=model,
                round_id=resume_round,
                attempt=first_attempt,
                table_memory_bytes=cfg.table_memory_bytes,
                folder=pool,
                verifier=pool.dlog_failures,
            )

        self.machine = await asyncio.to_thread(build)
        if checkpoint is not None:
            log.info(
                "resuming at round %d from round %d's checkpoint in %s",
                resume_round,
                checkpoint.round,
                self._checkpoints.directory,
            )
        elif resume_round > 1:
            log.warning(
                "no checkpoint in %s: round ids 1-%d were used already, so the model starts afresh "
                "at round %d",
                self._checkpoints.directory,
                resume_round - 1,
                resume_round,
            )
        machine = self.machine
        self._gate = MessageGate(
            SERVICE,
            cfg.federation,
            self._ctx,
            {MessageType.READY, MessageType.UPLOAD, MessageType.RESPONSE},
            self._verify_key_of,
            cfg.max_message_bytes,
            limits=SizeLimits(
                self._ctx,
                max_bytes=cfg.max_message_bytes,
                n_segments=machine.n_segments,
                max_members=params.max_clients,
            ),
            # Stale rounds, attempts and stages are refused from the header: a big stale upload
            # costs neither a decode nor a signature check (PROTOCOL.md section 5).
            screen=attempt_screen(
                lambda: (machine.round, machine.attempt, _STAGE_EXPECTS.get(machine.stage.value))
            ),
        )
        self._outbox = Outbox(SERVICE, self.transport, cfg.federation, SENDER, self._signer, self._ctx)
        await self.transport.consume(AGGREGATOR, self._on_delivery)
        self._started = True

    # -- the loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Start (unless :meth:`start` was awaited already), announce, and run rounds until stopped."""
        try:
            if not self._started and not await unless_stopped(self.start(), stop):
                return  # stopped while starting (waiting for the key service, say)
            assert self.machine is not None
            if self._last_result is not None:
                # The result may never have gone out (a crash right after the checkpoint):
                # send it again; clients that saw it ignore the copy.
                last = self._last_result
                await self._send(self.machine.completed_result(last.round, last.attempt or 0, last.members))
            await self._send(self._resumed_attempt() or self.machine.start_round())
            log.info("serving: round %d attempt %d", self.machine.round, self.machine.attempt)
            await self._loop(stop)
        finally:
            await self.close()

    async def _loop(self, stop: asyncio.Event) -> None:
        machine = self.machine
        assert machine is not None
        stopper = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set() and not self.finished.is_set():
                if machine.ready_to_finish:
                    await self._finish()
                    continue
                timeout = None
                if machine.deadline is not None:
                    timeout = max(0.0, machine.deadline - asyncio.get_running_loop().time())
                    # the machine's clock is time.monotonic, which is the loop's clock too
                waker = asyncio.create_task(self._wake.wait())
                await asyncio.wait({waker, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                self._wake.clear()
                if not machine.ready_to_finish:
                    await self._send(machine.poll())
                self._record_events()
        finally:
            stopper.cancel()

    async def _finish(self) -> None:
        machine = self.machine
        assert machine is not None
        try:
            outcome = await asyncio.to_thread(machine.finish)
        except FedcastError as exc:
            log.warning("round %d attempt %d did not decrypt: %s", machine.round, machine.attempt, exc)
            await self._send(machine.decryption_failed(exc.reason))
            return
        DECRYPT_SECONDS.labels(SERVICE).observe(outcome.decrypt_seconds)
        AGGREGATE_SECONDS.labels(SERVICE).observe(self._fold_seconds)
        aggregate_seconds, self._fold_seconds = self._fold_seconds, 0.0
        # Cheap (one pass over the model): how far this round moved the model, and its size.
        update_norm = float(np.linalg.norm(outcome.model - machine.model))
        model_norm = float(np.linalg.norm(outcome.model))
        completing_attempt = machine.attempt
        machine.adopt(outcome)
        await asyncio.to_thread(
            functools.partial(
                self._checkpoints.save,
                outcome.round,
                self.config.task.name,
                outcome.model,
                attempt=machine.attempt,
                members=outcome.members,
            )
        )
        await asyncio.to_thread(self._drop_attempt_state)
        self._registry.clear()  # re-read keys (revocations) for the next round
        if self._on_round is not None:  # before the RESULT goes out: observers see rounds in order
            self._on_round(outcome)
        await self._send(machine.checkpointed())
        self.completed_rounds += 1
        ROUNDS_COMPLETED.labels(SERVICE).inc()
        self._record_events()
        # One line per round, stable key=value fields (docs/METRICS.md, "Log lines"): only what
        # the aggregator knows; it has no test data, so no loss or accuracy.
        log.info(
            "round %d complete with %d members: round=%d members=%d attempt=%d dropouts=%d round_s=%.3f "
            "aggregate_s=%.3f decrypt_s=%.3f update_norm=%.6g model_norm=%.6g",
            outcome.round,
            len(outcome.members),
            outcome.round,
            len(outcome.members),
            completing_attempt,
            self._round_dropouts.pop(outcome.round, 0),
            self._round_seconds.pop(outcome.round, float("nan")),
            aggregate_seconds,
            outcome.decrypt_seconds,
            update_norm,
            model_norm,
        )
        for stale in [r for r in (*self._round_dropouts, *self._round_seconds) if r <= outcome.round]:
            self._round_dropouts.pop(stale, None)
            self._round_seconds.pop(stale, None)
        if self.config.max_rounds is not None and self.completed_rounds >= self.config.max_rounds:
            self.finished.set()

    def _record_events(self) -> None:
        assert self.machine is not None
        events = self.machine.drain_events()
        record_round_progress(SERVICE, events, source=self)  # round age, last completion, waiting
        for event in events:
            CURRENT_ROUND.labels(SERVICE).set(event.round)
            if event.kind == "online_set_fixed":
                ONLINE_SET_SIZE.labels(SERVICE).set(int(event.data["size"]))
            elif event.kind == "attempt_failed":
                ROUND_RETRIES.labels(SERVICE).inc()
                DROPOUTS.labels(SERVICE, str(event.data["phase"])).inc(int(event.data["dropouts"]))
                dropped = self._round_dropouts.get(event.round, 0) + int(event.data["dropouts"])
                self._round_dropouts[event.round] = dropped
                log.warning("round %d attempt %d failed: %s", event.round, event.attempt, event.data)
            elif event.kind == "invalid_proof":  # a proof (of r2, or of a share) failed after admission
                detail, member = str(event.data["detail"]), str(event.data["member"])
                self._gate.rejected.record(InvalidProofError.reason, detail, member)
            elif event.kind == "challenge_resent":
                CHALLENGE_RESENDS.labels(SERVICE).inc()
                log.warning(
                    "round %d attempt %d: %s member(s) have not answered; challenge sent again (the attempt "
                    "stays open: members that answered will not upload again for this model)",
                    event.round,
                    event.attempt,
                    event.data["members"],
                )
            elif event.kind == "attempt_resumed":
                log.info("round %d attempt %d resumed after a restart", event.round, event.attempt)
            elif event.kind == "round_failed":  # the aggregate did not decrypt: the round restarts
                ROUND_RETRIES.labels(SERVICE).inc()
                log.warning("round %d attempt %d restarted: %s", event.round, event.attempt, event.data)
            elif event.kind == "phase":
                PHASE_SECONDS.labels(SERVICE, str(event.data["phase"])).observe(float(event.data["seconds"]))
            elif event.kind == "round_completed":
                ROUND_SECONDS.labels(SERVICE).observe(float(event.data["seconds"]))
                self._round_seconds[event.round] = float(event.data["seconds"])

    # -- messages -----------------------------------------------------------------------

    async def _verify_key_of(self, sender: str) -> bytes | None:
        # Unknown senders are negative-cached and budgeted by the gate (runtime.SenderLookups).
        entry = self._registry.get(sender)
        if entry is None:
            # A failed lookup raises (counted as transport_error / request_timeout), not "unknown".
            found = await self._keys.get_keys([sender])
            entry = found.get(sender)
            if entry is None:
                return None
            self._registry[sender] = entry
        return None if entry.revoked else entry.verify_key

    def _verify_first(
        self, member: str, round_id: int, attempt: int, signed: FirstComponentSigned, signature: bytes
    ) -> None:
        entry = self._registry[member]
        verify_first(
            entry.verify_key, signature, self.config.federation, round_id, attempt, member, signed, self._ctx
        )

    async def _on_delivery(self, delivery: Delivery) -> None:
        if self._closing:  # shutting down: the next life restarts the round with a new attempt
            return
        msg = await self._gate.admit(delivery)
        if msg is None or self._closing:  # closed while its sender was looked up: not a rejection
            return
        start = time.perf_counter()
        try:
            outgoing = self._dispatch(msg, delivery.body)
        except FedcastError as exc:
            self._gate.rejected(exc, msg.header.sender)
            return
        finally:
            self._fold_seconds += time.perf_counter() - start  # validating + folding is aggregation work
        await self._send(outgoing)
        self._wake.set()

    def _dispatch(self, msg: Signed, raw: bytes) -> list[Outgoing]:
        machine = self.machine
        assert machine is not None
        h = msg.header
        if h.type == MessageType.READY:
            return machine.on_ready(h.sender, h.round, h.attempt, self._registry[h.sender])
        if h.type == MessageType.UPLOAD:
            assert isinstance(msg.body, Upload)
            return machine.on_upload(h.sender, h.round, h.attempt, msg.body)
        assert isinstance(msg.body, Response)
        return machine.on_response(h.sender, h.round, h.attempt, msg.body, raw=bytes(raw))

    def _resume_point(self, loaded: LoadedCheckpoint | None) -> tuple[int, int]:
        """The (round, first attempt) to run next: never a round id or attempt used before.

        The round is one past the newest checkpoint file (a damaged one too), and at least
        the round of the last attempt opened (``attempt.json``, persisted before it was
        announced): a lost or damaged checkpoint then restarts the model, never the round
        numbering, so running edges accept it. Within that round the first attempt is one
        past the last one opened (clients never encrypt twice for one (round, attempt)).
        """
        resume = 1 if loaded is None else max(loaded.highest_round, loaded.checkpoint.round) + 1
        path = self.config.state_dir / ATTEMPT_FILE
        if not path.exists():
            return resume, 0
        try:
            saved = read_json(path)
            saved_round, saved_attempt = int(saved["round"]), int(saved["attempt"])
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyStorageError(f"{path} is malformed") from exc
        if saved_round >= resume:
            return saved_round, saved_attempt + 1
        return resume, 0

    async def _persist_attempt(self, outgoing: list[Outgoing]) -> None:
        # Written before an announcement or envelope of a new attempt leaves: after a crash
        # the next life starts above it, so no client is ever asked to encrypt twice for one
        # (round, attempt) (clients refuse that, and would stall the round until a timeout).
        opened = [(o.round, o.attempt) for o in outgoing if o.type in _OPENING]
        if not opened or max(opened) <= self._persisted_attempt:
            return
        self._persisted_attempt = max(opened)
        round_id, attempt = self._persisted_attempt
        await asyncio.to_thread(
            write_json_atomic,
            self.config.state_dir / ATTEMPT_FILE,
            {"round": round_id, "attempt": attempt},
            secret=False,
        )

    def _resumed_attempt(self) -> list[Outgoing]:
        """The challenge of an attempt this aggregator had sent before it stopped, if any."""
        assert self.machine is not None
        path = self.config.state_dir / ATTEMPT_STATE_FILE
        if not path.exists():
            return []
        try:
            return self.machine.resume_attempt(read_json(path))
        except FedcastError as exc:  # another round's or model's, or damaged: nothing to finish
            log.info("not resuming %s: %s", path, exc)
            self._drop_attempt_state()
            return []

    def _drop_attempt_state(self) -> None:
        (self.config.state_dir / ATTEMPT_STATE_FILE).unlink(missing_ok=True)

    async def _persist_challenge(self, outgoing: list[Outgoing]) -> None:
        # Written before the challenge leaves: once members answer, they will not upload again
        # for this model, so a restarted aggregator must take this attempt up, not open another.
        if not any(o.type == MessageType.CHALLENGE for o in outgoing):
            return
        assert self.machine is not None
        if self.machine.stage.value != "collecting_responses":
            return  # a re-send of a challenge already persisted
        snapshot = self.machine.attempt_snapshot()
        await asyncio.to_thread(
            write_json_atomic, self.config.state_dir / ATTEMPT_STATE_FILE, snapshot, secret=True
        )

    async def _send(self, outgoing: list[Outgoing]) -> None:
        await self._persist_attempt(outgoing)
        await self._persist_challenge(outgoing)
        try:
            for out in outgoing:
                if out.type == MessageType.ANNOUNCE:
                    await self._announce(out)
                else:
                    await self._outbox.send([out])
        except TransportError as exc:
            # The robust connection reconnects; a lost message is covered by the round's timeouts.
            log.warning("send failed: %s", exc)

    async def _announce(self, out: Outgoing) -> None:
        # An announcement expires with its ready window: while waiting, the aggregator sends a
        # new one every window, so a client that connects late gets the current one, and an
        # offline client's queue keeps no backlog of stale copies (issue 12: seven had piled up).
        # Per message, not the client queues' TTL: a RESULT must outlive it (members commit on it).
        data = self._outbox.encode(out)
        await self.transport.broadcast(data, expiration=self.config.rounds.ready_window_s)
        MESSAGES_SENT.labels(SERVICE, out.type.value).inc()
        MESSAGE_BYTES_SENT.labels(SERVICE, out.type.value).inc(len(data))

    async def close(self) -> None:
        self._closing = True
        if self.machine is not None and self.machine.stage.value != "stopped":
            self.machine.stop()
        if self._pool is not None:
            await asyncio.to_thread(self._pool.close)
        await self.transport.close()
