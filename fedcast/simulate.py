"""A whole secure federation in one process tree: :class:`ProtocolSum`, the protocol as a SecureSum.

:class:`fedcast.shared.schemes.ElGamalSum` runs the crypto alone. :class:`ProtocolSum` runs the
real protocol every round: the aggregator's state machine
(:class:`~fedcast.shared.protocol.aggregator.AggregatorMachine`) in this process and one
:class:`~fedcast.shared.protocol.client.ClientMachine` per client in worker processes, every
message encoded, signed, size-checked, decoded and verified through
:mod:`fedcast.shared.wire.serde` as the services do (``services/runtime.py``: ``MessageGate``,
``Outbox``), with each client's one-answer-per-model ledger (in memory), the sealed model
delivery, the clients' checks of their envelopes and challenges (the element rule on every
first component, the proofs and signatures of each client's keyed sample: nothing is skipped
or shared between clients) and the aggregator's retries with evidence when a member cheats.

How to call it from a training loop (FedMF, FedAvg: one float vector per client per round)::

    from fedcast.simulate import ProtocolSum

    with ProtocolSum(n_clients=943, seed=0) as secure:      # a fresh 2048-bit N (~1 s)
        for round_ in range(rounds):
            vectors = [client_update(i, model) for i in range(943)]   # main process
            total = secure.sum(vectors)                    # the decrypted sum, float64
            model = apply(model, total)
            stats = secure.last_round                      # RoundStats: clipped_values, ...

``vectors[i]`` is client i's upload; a round may pass fewer vectors than ``n_clients`` (the
first ``len(vectors)`` clients take part, the others sit the round out). The first call fixes
the vector length (the workers build their fixed-base tables for it then: seconds, once).
If a client is caught cheating (``misbehave``, tests), the round completes without it, as the
services' retry does, and :attr:`ProtocolSum.last_members` says who was summed. ``last_round``
(RoundStats) counts the clipped values and each member's CPU seconds (``client_seconds``:
envelope to UPLOAD, ``respond_seconds``: CHALLENGE to RESPONSE, in its worker);
:attr:`ProtocolSum.last_timing` has the round's wall-clock phases and CPU per worker.

Workers are started with the ``spawn`` method, which imports the main module again in each of
them: a script that uses ProtocolSum must keep its top-level work under
``if __name__ == "__main__":`` (console entry points such as ``fedcast`` already do).

Processes and data. Workers are ``multiprocessing`` processes (``spawn`` context; ``workers``
defaults to one per CPU). Each generates its clients' ElGamal and Ed25519 keys itself (no
secret crosses a pipe) and enrolls them with a signed ENROLL message; the federation's
parameters reach it as a signed PARAMS message, the registry as a signed KEYS message. Every
pipe frame is raw bytes (``Connection.send_bytes``): wire messages as they would travel, the
round's vectors as little-endian float64, small JSON for set-up and timings. Nothing read from
a frame is unpickled; the one pickle involved is multiprocessing's own start-up of a worker
(spawn sends the worker's entry function and its arguments: its pipe end, JSON bytes and the PARAMS bytes,
from this process to the child it starts), as with any ``multiprocessing`` program. What each
simulated client does is exactly what an edge client does; what
the simulation shares is public set-up a real client also does once per deployment (the
fixed-base tables, shared by the clients of one worker) and the key service's signed KEYS reply
(decoded once per worker; every client checks the keys in it itself).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from fedcast.shared.crypto.elgamal import DEFAULT_MIN_ONLINE, DEFAULT_TABLE_MEMORY_BYTES, ClientTables
from fedcast.shared.crypto.group import DEFAULT_MODULUS_BITS, GroupParams
from fedcast.shared.crypto.keys import AggregatorPublicKey, AggregatorSecretKey, ClientKeyPair
from fedcast.shared.crypto.modulus import generate_group
from fedcast.shared.crypto.pok import enrollment_context, prove_possession, verify_possession
from fedcast.shared.crypto.proofs import DlogProof
from fedcast.shared.crypto.signing import SigningKeyPair, verify_signature
from fedcast.shared.encoding import FixedPointEncoding
from fedcast.shared.errors import (
    ConfigurationError,
    DecryptionError,
    FedcastError,
    InternalError,
    MalformedMessageError,
)
from fedcast.shared.learning.data import FloatArray
from fedcast.shared.learning.tasks import ClientTask, LocalUpdate, ServerTask, TaskSpec, model_to_bytes
from fedcast.shared.params import SystemParams
from fedcast.shared.protocol.aggregator import AggregatorMachine, RoundConfig
from fedcast.shared.protocol.client import ClientMachine, model_digest
from fedcast.shared.protocol.outgoing import Outgoing
from fedcast.shared.secure_sum import RoundStats, check_vectors
from fedcast.shared.transport.base import AGGREGATOR, KEYSERVER, client_endpoint
from fedcast.shared.wire import serde
from fedcast.shared.wire.messages import (
    AggregatorInfo,
    EnrollRequest,
    Header,
    KeysReply,
    MessageType,
    ParamsReply,
    RegistryEntry,
    Response,
    Signed,
    Upload,
)

__all__ = ["Misbehavior", "ProtocolSum", "RoundTiming", "default_workers"]

FEDERATION = "simulation"
_TOKEN = "simulated-device-token"  # noqa: S105 - an enrollment token of the simulation, not a secret
# A wire message ends with its signature: bin8 of 64 bytes.
_SIGNATURE_TAIL = 2 + 64
# Messages per frame to a worker: small enough that replies stream back while others compute.
_CHUNK = 8
_CLIENT_ACCEPTS = frozenset(
    {MessageType.ANNOUNCE, MessageType.ENVELOPE, MessageType.CHALLENGE, MessageType.RESULT}
)
_AGGREGATOR_ACCEPTS = frozenset({MessageType.READY, MessageType.UPLOAD, MessageType.RESPONSE})
# Idle polls (time jumps to the machine's deadline) without any message before giving up.
_MAX_IDLE_POLLS = 12


class Misbehavior(StrEnum):
    """A client that cheats, for tests and demonstrations of the checks (never by default)."""

    #: signs a wrong share T_i (times g): the decryption fails, its response proof names it.
    BAD_SHARE = "bad-share"
    #: signs a first component whose proof of knowledge of r2 fails: the others refuse the
    #: challenge, the aggregator checks the proofs at the response timeout and retries without it.
    BAD_PROOF = "bad-proof"


@dataclass
class RoundTiming:
    """Wall-clock seconds of the last round by phase (this process's view), for benchmarks."""

    total: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    #: CPU seconds the clients spent per message type, summed over clients (all workers)
    worker_seconds: dict[str, float] = field(default_factory=dict)
    #: CPU seconds per worker process in this round (its clients' handling of every message)
    worker_cpu: list[float] = field(default_factory=list)
    #: CPU seconds of this process (the aggregator and the pump) in this round
    main_cpu: float = 0.0
    attempts: int = 1
    refusals: dict[str, str] = field(default_factory=dict)  # "client: type" -> reason


# -- framing: raw bytes only ---------------------------------------------------------------


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def _pack_blobs(blobs: Sequence[bytes]) -> bytes:
    return _u32(len(blobs)) + b"".join(_u32(len(b)) + b for b in blobs)


def _unpack_blobs(data: bytes | memoryview, offset: int = 0) -> tuple[list[bytes], int]:
    view = memoryview(data)
    count = int.from_bytes(view[offset : offset + 4], "big")
    offset += 4
    out: list[bytes] = []
    for _ in range(count):
        size = int.from_bytes(view[offset : offset + 4], "big")
        out.append(bytes(view[offset + 4 : offset + 4 + size]))
        offset += 4 + size
    return out, offset


def _verify_wire(data: bytes, msg: Signed, verify_key: bytes, ctx: serde.WireContext) -> None:
    """The message signature, over the signed bytes taken from the wire (docs/PROTOCOL.md section 4).

    ``decode`` accepts canonical encodings only and the signature is the last element, so the
    signed bytes are ``0x97`` and the wire bytes from offset 1 up to the signature: what
    :func:`serde.verify` re-encodes, without re-encoding.
    """
    tail = data[-_SIGNATURE_TAIL:]
    if tail[:2] != b"\xc4\x40" or tail[2:] != msg.signature:
        serde.verify(msg, verify_key, ctx)  # pragma: no cover - decode guarantees the tail
        return
    verify_signature(verify_key, msg.signature, serde.SIGNING_DOMAIN + b"\x97" + data[1:-_SIGNATURE_TAIL])


def _gate(
    data: bytes,
    *,
    ctx: serde.WireContext,
    limits: serde.SizeLimits,
    accepts: frozenset[MessageType],
    key_of: Callable[[str], bytes],
) -> Signed:
    """``MessageGate.admit`` without the asyncio and metrics: header, size, key, decode, signature."""
    header = serde.peek_header(data)
    if header.federation != FEDERATION:
        raise MalformedMessageError(f"message for federation {header.federation!r}")
    if header.type not in accepts:
        raise MalformedMessageError(f"{header.type} is not a message this party accepts")
    limits.check(header.type, len(data))
    key = key_of(header.sender)
    msg = serde.decode(data, ctx)
    _verify_wire(data, msg, key, ctx)
    return msg


# -- the tasks: the caller trains, the protocol moves vectors ------------------------------


class _GivenVector(ClientTask):
    """A client whose update is whatever the training loop computed for it this round."""

    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.vector: FloatArray = np.zeros(spec.upload_size)

    def local_update(self, model: FloatArray) -> LocalUpdate:
        del model  # the training loop in the main process used its own copy of the model
        return LocalUpdate(self.vector)

    def quality(self, model: FloatArray) -> dict[str, float]:
        return {}


class _RunningTotal(ServerTask):
    """The sealed model: the running total of the aggregates, from a random start.

    Clients identify a model by its digest and answer once per model, so every round must
    deliver a model they have not seen: a total that repeats (an all-zero aggregate) is moved
    by one ulp.
    """

    def __init__(self, spec: TaskSpec, rng: np.random.Generator) -> None:
        super().__init__(spec)
        self._rng = rng
        self._seen: set[bytes] = set()

    def initial_model(self, seed: int | None = None) -> FloatArray:
        model: FloatArray = self._rng.standard_normal(self.spec.model_size)
        self._seen.add(model_digest(model_to_bytes(model)))
        return model

    def apply(self, model: FloatArray, aggregate: FloatArray, n_members: int) -> FloatArray:
        new: FloatArray = model + aggregate
        while model_digest(model_to_bytes(new)) in self._seen:
            new = new.copy()
            new[0] = np.nextafter(new[0], np.inf)
        self._seen.add(model_digest(model_to_bytes(new)))
        return new


def _spec(n: int) -> TaskSpec:
    # FedMF's shape with d = 1 and plain gradients: the sealed model and the upload both have n values.
    return TaskSpec(name="fedmf", n_items=n, latent_dim=1, optimizer="gd")


# -- the worker process --------------------------------------------------------------------


class _Worker:
    """The clients of one worker process and their gate (runs in the worker)."""

    def __init__(self, config: dict[str, Any], params_wire: bytes) -> None:
        self.ids: list[str] = list(config["ids"])
        self.index = {cid: i for i, cid in enumerate(self.ids)}
        self.keyserver_key = bytes.fromhex(config["keyserver_key"])
        self.min_online = int(config["min_online"])
        self.check_all = bool(config["check_all_proofs"])
        self.table_memory = int(config["table_memory_bytes"])
        self.misbehave = {str(k): Misbehavior(v) for k, v in dict(config["misbehave"]).items()}
        # PARAMS brings its own widths; the key service's key is pinned.
        msg = serde.decode(params_wire, None)
        _verify_wire(params_wire, msg, self.keyserver_key, serde.WireContext(1, 1))
        body = msg.body
        assert isinstance(body, ParamsReply) and body.aggregator is not None
        self.group = GroupParams.from_modulus(body.modulus, allow_insecure=bool(config["allow_insecure"]))
        self.params = SystemParams(
            self.group, FixedPointEncoding(body.frac_bits, body.clip), body.max_clients
        )
        self.ctx = serde.WireContext.from_group(self.group)
        info = body.aggregator
        self.aggregator = AggregatorPublicKey.verified(
            self.group,
            info.beta,
            info.delivery,
            info.beta_proof,
            info.delivery_proof,
            federation=FEDERATION,
            verify_key=info.verify_key,
        )
        self.aggregator_key = info.verify_key
        self.keys = [ClientKeyPair.generate(self.group) for _ in self.ids]
        self.signers = [SigningKeyPair.generate() for _ in self.ids]
        self.machines: list[ClientMachine] = []
        self.tasks: list[_GivenVector] = []
        self.registry: dict[str, RegistryEntry] = {}
        self.participating = len(self.ids)
        self.limits = serde.SizeLimits(self.ctx)
        self.seed = config.get("seed")

    def enrollments(self) -> list[bytes]:
        out = []
        for cid, keypair, signer in zip(self.ids, self.keys, self.signers, strict=True):
            proof = prove_possession(keypair, enrollment_context(FEDERATION, cid, signer.verify_key))
            body = EnrollRequest(_TOKEN, int(keypair.public), signer.verify_key, proof)
            out.append(
                serde.encode(Header(MessageType.ENROLL, FEDERATION, 0, 0, cid), body, signer, self.ctx)
            )
        return out

    def deploy(self, n: int, keys_wire: bytes) -> None:
        """The KEYS reply (every member), then the tables and one machine per client for length n."""
        msg = serde.decode(keys_wire, self.ctx)
        _verify_wire(keys_wire, msg, self.keyserver_key, self.ctx)
        assert isinstance(msg.body, KeysReply)
        self.registry = {e.client_id: e for e in msg.body.entries}
        spec = _spec(n)
        tables = ClientTables(
            self.aggregator,
            federation=FEDERATION,
            n_segments=self.params.n_segments(n),
            table_memory_bytes=self.table_memory,
        )
        self.tasks = [_GivenVector(spec) for _ in self.ids]
        self.machines = [self._machine(i, tables) for i in range(len(self.ids))]

    def _machine(self, i: int, tables: ClientTables) -> ClientMachine:
        cid, signer, ctx = self.ids[i], self.signers[i], self.ctx

        def sign_first(r: int, a: int, first: serde.FirstComponentSigned) -> bytes:
            return serde.sign_first(signer, FEDERATION, r, a, cid, first, ctx)

        def verify_first(
            m: str, r: int, a: int, first: serde.FirstComponentSigned, sig: bytes, key: bytes
        ) -> None:
            serde.verify_first(key, sig, FEDERATION, r, a, m, first, ctx)

        machine = ClientMachine(
            client_id=cid,
            federation=FEDERATION,
            params=self.params,
            keypair=self.keys[i],
            aggregator=self.aggregator,
            task=self.tasks[i],
            sign_first=sign_first,
            verify_first=verify_first,
            min_online=self.min_online,
            tables=tables,
            check_all_proofs=self.check_all,
        )
        if self.seed is not None:  # reproducible stochastic rounding (the OS entropy otherwise)
            machine._rng = np.random.default_rng([int(self.seed), int(cid[1:])])
        return machine

    def set_vectors(self, payload: bytes) -> None:
        count = int.from_bytes(payload[:4], "big")
        n = len(self.tasks[0].vector) if self.tasks else 0
        rows = np.frombuffer(payload[4:], dtype="<f8").reshape(count, n) if count else np.zeros((0, n))
        self.participating = count
        for task, row in zip(self.tasks, rows, strict=False):
            task.vector = row.astype(np.float64)

    def deliver(self, targets: Sequence[int], data: bytes) -> tuple[list[bytes], dict[str, Any]]:
        """Hand one wire message to each target client; return what they send and what it cost."""
        out: list[bytes] = []
        report: dict[str, Any] = {"refused": {}, "seconds": {}, "clipped": {}, "type": ""}
        for i in targets:
            cid = self.ids[i]
            start = time.process_time()  # CPU seconds: what a device would spend, whatever the load
            try:
                msg = _gate(
                    data,
                    ctx=self.ctx,
                    limits=self.limits,
                    accepts=_CLIENT_ACCEPTS,
                    key_of=self._aggregator_key,
                )
                report["type"] = msg.header.type.value
                out.extend(self._handle(i, msg, report))
            except FedcastError as exc:
                report["refused"][cid] = f"{exc.reason}: {exc}"
            report["seconds"][cid] = time.process_time() - start
        return out, report

    def _aggregator_key(self, sender: str) -> bytes:
        if sender != AGGREGATOR:
            raise MalformedMessageError(f"clients accept round messages from {AGGREGATOR!r} only")
        return self.aggregator_key

    def _handle(self, i: int, msg: Signed, report: dict[str, Any]) -> list[bytes]:
        machine, h, body = self.machines[i], msg.header, msg.body
        cid = self.ids[i]
        if h.type == MessageType.ANNOUNCE:
            if i >= self.participating:
                return []  # offline this round
            outs = machine.on_announce(h.round, h.attempt, body)  # type: ignore[arg-type]
        elif h.type == MessageType.ENVELOPE:
            job = machine.on_envelope(h.round, h.attempt, body, self.registry)  # type: ignore[arg-type]
            prepared = machine.compute_upload(job)
            if self.misbehave.get(cid) == Misbehavior.BAD_PROOF:
                prepared = replace(prepared, body=self._bad_proof(i, prepared.body, h.round, h.attempt))
            report["clipped"][cid] = prepared.clipped
            outs = machine.uploaded(prepared)
        elif h.type == MessageType.CHALLENGE:
            outs = machine.on_challenge(h.round, h.attempt, body)  # type: ignore[arg-type]
            if self.misbehave.get(cid) == Misbehavior.BAD_SHARE:
                outs = [replace(o, body=self._bad_share(o.body)) for o in outs]
        else:  # RESULT
            machine.on_result(h.round, h.attempt, body)  # type: ignore[arg-type]
            outs = []
        signer = self.signers[i]
        return [
            serde.encode(Header(o.type, FEDERATION, o.round, o.attempt, cid), o.body, signer, self.ctx)
            for o in outs
        ]

    def _bad_proof(self, i: int, upload: Upload, round_id: int, attempt: int) -> Upload:
        proof = DlogProof(upload.first_proof.commitment, upload.first_proof.response ^ 1)
        signed = serde.FirstComponentSigned(upload.first, proof, upload.context_digest)
        signature = serde.sign_first(
            self.signers[i], FEDERATION, round_id, attempt, self.ids[i], signed, self.ctx
        )
        return replace(upload, first_proof=proof, first_signature=signature)

    def _bad_share(self, response: Any) -> Any:
        assert isinstance(response, Response)
        return replace(response, share=response.share * int(self.group.g) % int(self.group.n))


def _worker_main(conn: Connection, config_json: bytes, params_wire: bytes) -> None:
    """The worker's loop: one reply frame per request frame, raw bytes both ways."""
    try:
        worker = _Worker(json.loads(config_json), params_wire)
        conn.send_bytes(b"E" + _pack_blobs(worker.enrollments()))
        while True:
            try:
                frame = conn.recv_bytes()
            except EOFError:
                return
            op, payload = frame[:1], frame[1:]
            if op == b"Q":
                return
            if op == b"K":  # u32 n, KEYS wire
                worker.deploy(int.from_bytes(payload[:4], "big"), payload[4:])
                conn.send_bytes(b"k")
            elif op == b"V":
                worker.set_vectors(payload)
                conn.send_bytes(b"v")
            elif op == b"D":  # u32 count, u32 targets..., wire message
                count = int.from_bytes(payload[:4], "big")
                targets = [int.from_bytes(payload[4 + 4 * k : 8 + 4 * k], "big") for k in range(count)]
                out, report = worker.deliver(targets, payload[4 + 4 * count :])
                conn.send_bytes(b"R" + _pack_blobs([json.dumps(report).encode(), *out]))
            else:
                raise SystemExit(f"simulate worker: unknown frame {op!r}")
    except KeyboardInterrupt:  # pragma: no cover - the parent is going down
        return


class _WorkerHandle:
    """The parent's end of one worker: a process, its pipe and a writer thread (no deadlock on
    full pipes: the main thread only ever reads)."""

    def __init__(
        self, mp: Any, index: int, ids: Sequence[str], config: dict[str, Any], params_wire: bytes
    ) -> None:
        self.index = index
        self.ids = list(ids)
        parent, child = mp.Pipe()
        payload = json.dumps({**config, "ids": self.ids}).encode()
        self.process = mp.Process(
            target=_worker_main, args=(child, payload, params_wire), name=f"fedcast-sim-{index}", daemon=True
        )
        self.process.start()
        child.close()
        self.conn: Connection = parent
        self.outstanding = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write, name=f"fedcast-sim-writer-{index}", daemon=True)
        self._writer.start()

    def _write(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is None:
                return
            try:
                self.conn.send_bytes(frame)
            except (OSError, ValueError):
                return

    def send(self, frame: bytes, *, reply: bool = True) -> None:
        if reply:
            self.outstanding += 1
        self._queue.put(frame)

    def recv(self, timeout: float | None = None) -> bytes:
        if timeout is not None and not self.conn.poll(timeout):
            raise InternalError(f"simulation worker {self.index} did not answer in {timeout:.0f} s")
        try:
            return self.conn.recv_bytes()
        except (EOFError, OSError) as exc:
            raise InternalError(f"simulation worker {self.index} died") from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._queue.put(b"Q")
            self._queue.put(None)
            self._writer.join(timeout=5)
        self.process.join(timeout=5)
        if self.process.is_alive():  # pragma: no cover - a wedged worker
            self.process.terminate()
            self.process.join(timeout=5)
        with contextlib.suppress(OSError):
            self.conn.close()


def default_workers() -> int:
    """Worker processes to use: one per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class ProtocolSum:
    """The real protocol as a :class:`~fedcast.shared.secure_sum.SecureSum` (see the module doc).

    ``params``: group, encoding and ``max_clients`` (default: a fresh ``modulus_bits`` N, the
    default encoding, ``max_clients = n_clients``). ``workers``: client processes (default one
    per CPU). ``seed``: the sealed model's random start and the clients' stochastic rounding
    (OS entropy if None; keys always come from the OS CSPRNG). ``min_online``: what every
    client and the aggregator enforce (default 3, the protocol's; it sizes the proof sample).
    ``misbehave``: {client index: Misbehavior}, for tests.
    """

    def __init__(
        self,
        params: SystemParams | None = None,
        *,
        n_clients: int,
        workers: int | None = None,
        seed: int | None = None,
        modulus_bits: int = DEFAULT_MODULUS_BITS,
        min_online: int | None = None,
        check_all_proofs: bool = False,
        table_memory_bytes: int = DEFAULT_TABLE_MEMORY_BYTES,
        misbehave: Mapping[int, Misbehavior | str] | None = None,
        worker_timeout_s: float = 600.0,
    ) -> None:
        if n_clients < 2:
            raise ConfigurationError("a federation needs at least two clients")
        group = params.group if params is not None else generate_group(modulus_bits)
        if params is None:
            params = SystemParams(group, FixedPointEncoding(), max_clients=n_clients)
        if n_clients > params.max_clients:
            raise ConfigurationError(f"{n_clients} clients exceed max_clients={params.max_clients}")
        self.params = params
        self.n_clients = n_clients
        self.ids = [f"c{i:05d}" for i in range(n_clients)]
        self.min_online = min(DEFAULT_MIN_ONLINE, n_clients) if min_online is None else min_online
        self._timeout = worker_timeout_s
        self._rng = np.random.default_rng(seed)
        self._ctx = serde.WireContext.from_group(group)
        self._secret = AggregatorSecretKey.generate(group)
        self._signer = SigningKeyPair.generate()
        self._keyserver = SigningKeyPair.generate()
        self._public = self._secret.public(federation=FEDERATION, verify_key=self._signer.verify_key)
        self._registry: dict[str, RegistryEntry] = {}
        self._machine: AggregatorMachine | None = None
        self._held: list[Outgoing] = []
        self._now = 0.0
        self._n: int | None = None
        self._closed = False
        self._last = RoundStats()
        self.last_timing = RoundTiming()
        self.last_members: tuple[int, ...] = ()
        self.clipped_total = 0
        self.refusals: list[tuple[str, str]] = []  # (sender, reason) refused at the aggregator's gate
        count = max(1, min(default_workers() if workers is None else workers, n_clients))
        bad = {self.ids[int(k)]: Misbehavior(v).value for k, v in dict(misbehave or {}).items()}
        config = {
            "keyserver_key": self._keyserver.verify_key.hex(),
            "min_online": self.min_online,
            "check_all_proofs": check_all_proofs,
            "table_memory_bytes": table_memory_bytes,
            "allow_insecure": group.insecure,
            "misbehave": bad,
            "seed": seed,
        }
        mp = multiprocessing.get_context("spawn")
        shares = [self.ids[k * n_clients // count : (k + 1) * n_clients // count] for k in range(count)]
        self._owner: dict[str, tuple[_WorkerHandle, int]] = {}
        self._workers: list[_WorkerHandle] = []
        try:
            params_wire = self._keyserver_reply(MessageType.PARAMS, self._params_reply())
            for k, share in enumerate(shares):
                handle = _WorkerHandle(mp, k, share, config, params_wire)
                self._workers.append(handle)
                self._owner.update({cid: (handle, j) for j, cid in enumerate(share)})
            for handle in self._workers:
                self._enroll(handle)
        except BaseException:
            self.close()
            raise

    # -- the key service's part -------------------------------------------------------------

    def _params_reply(self) -> ParamsReply:
        p, pub = self.params, self._public
        info = AggregatorInfo(
            int(pub.beta), pub.beta_proof, int(pub.delivery), pub.delivery_proof, self._signer.verify_key
        )
        return ParamsReply(
            int(p.group.n), p.encoding.frac_bits, float(p.encoding.clip), p.max_clients, self.min_online, info
        )

    def _keyserver_reply(self, mtype: MessageType, body: Any) -> bytes:
        return serde.encode(Header(mtype, FEDERATION, 0, 0, KEYSERVER), body, self._keyserver, self._ctx)

    def _enroll(self, handle: _WorkerHandle) -> None:
        """Check every ENROLL of a worker's clients as the key service does, and register them."""
        frame = handle.recv(self._timeout)
        if frame[:1] != b"E":
            raise InternalError(f"simulation worker {handle.index} failed to start")
        group = self.params.group
        for raw in _unpack_blobs(frame[1:])[0]:
            msg = serde.decode(raw, self._ctx)
            body = msg.body
            cid = msg.header.sender
            if not isinstance(body, EnrollRequest) or cid not in handle.ids or body.token != _TOKEN:
                raise InternalError(f"a simulated client sent an unexpected enrollment ({cid!r})")
            _verify_wire(raw, msg, body.verify_key, self._ctx)
            group.received(body.elgamal_public, f"public key of {cid!r}")
            verify_possession(
                group, body.elgamal_public, body.proof, enrollment_context(FEDERATION, cid, body.verify_key)
            )
            self._registry[cid] = RegistryEntry(cid, body.elgamal_public, body.verify_key, False)

    # -- SecureSum -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return "protocol"

    @property
    def last_round(self) -> RoundStats:
        return self._last

    @property
    def workers(self) -> int:
        return len(self._workers)

    def _deploy(self, n: int) -> AggregatorMachine:
        """Tables in every worker (in parallel) and the aggregator's machine, for vectors of n."""
        entries = tuple(self._registry[cid] for cid in self.ids)
        keys_wire = self._keyserver_reply(MessageType.KEYS, KeysReply(entries))
        for handle in self._workers:
            handle.send(b"K" + _u32(n) + keys_wire)
        spec = _spec(n)
        task = _RunningTotal(spec, self._rng)
        config = RoundConfig(
            min_online=self.min_online,
            max_online=self.n_clients,
            expected_clients=self.n_clients,
            max_attempts=3,
        )
        verify_keys = {cid: e.verify_key for cid, e in self._registry.items()}
        ctx = self._ctx

        def verify_first(m: str, r: int, a: int, first: serde.FirstComponentSigned, sig: bytes) -> None:
            serde.verify_first(verify_keys[m], sig, FEDERATION, r, a, m, first, ctx)

        machine = AggregatorMachine(
            federation=FEDERATION,
            params=self.params,
            secret=self._secret,
            task=task,
            config=config,
            verify_first=verify_first,
            model=task.initial_model(),
            clock=lambda: self._now,
        )
        for handle in self._workers:
            self._expect(handle, b"k")
        self._n = n
        return machine

    def _expect(self, handle: _WorkerHandle, op: bytes) -> None:
        frame = handle.recv(self._timeout)
        handle.outstanding -= 1
        if frame[:1] != op:
            raise InternalError(f"simulation worker {handle.index} answered {frame[:1]!r}, not {op!r}")

    def sum(self, vectors: Sequence[FloatArray]) -> FloatArray:
        """One round of the protocol over ``vectors`` (client i uploads ``vectors[i]``)."""
        if self._closed:
            raise ConfigurationError("this ProtocolSum is closed")
        n = check_vectors(vectors, min_clients=max(2, self.min_online))
        if len(vectors) > self.n_clients:
            raise ConfigurationError(f"{len(vectors)} vectors for a federation of {self.n_clients} clients")
        if self._n is not None and n != self._n:
            raise ConfigurationError(f"vectors of length {n}; this federation was set up for {self._n}")
        start, cpu_start = time.perf_counter(), time.process_time()
        timing = RoundTiming()
        if self._machine is None:
            self._machine = self._deploy(n)
            timing.phases["setup"] = time.perf_counter() - start
        machine = self._machine
        machine.config = replace(machine.config, expected_clients=max(len(vectors), self.min_online))
        participants = len(vectors)
        matrix = np.asarray(vectors, dtype="<f8")
        for handle in self._workers:
            first = self.ids.index(handle.ids[0])
            rows = matrix[first : min(first + len(handle.ids), participants)]
            rows = rows if first < participants else matrix[:0]
            handle.send(b"V" + _u32(len(rows)) + np.ascontiguousarray(rows).tobytes())
        for handle in self._workers:
            self._expect(handle, b"v")
        outs, self._held = (self._held or machine.start_round()), []
        state = _RoundState(timing)
        self._pump(machine, outs, state)
        stats = RoundStats(n_clients=len(state.members), n_params=n)
        members = state.members
        stats.client_seconds = [state.upload_seconds.get(m, 0.0) for m in members]
        stats.respond_seconds = [state.respond_seconds.get(m, 0.0) for m in members]
        stats.upload_bytes = [state.upload_bytes.get(m, 0) for m in members]
        stats.aggregate_seconds = state.aggregate_seconds
        stats.decrypt_seconds = state.decrypt_seconds
        stats.clipped_values = sum(state.clipped.get(m, 0) for m in members)
        self._last = stats
        self.clipped_total += stats.clipped_values
        self.last_members = tuple(self.ids.index(m) for m in members)
        timing.total = time.perf_counter() - start
        timing.main_cpu = time.process_time() - cpu_start
        self.last_timing = timing
        assert state.aggregate is not None
        return state.aggregate

    # -- the message pump ----------------------------------------------------------------------

    def _route(self, outs: Iterable[Outgoing], state: _RoundState) -> None:
        """Encode each message once (identical messages once in all) and hand it to the workers."""
        encoded: dict[tuple[int, MessageType, int, int], bytes] = {}
        by_worker: dict[int, dict[bytes, list[int]]] = {}
        bodies: list[Any] = []  # keep the bodies alive while their ids are keys
        for out in outs:
            key = (id(out.body), out.type, out.round, out.attempt)
            data = encoded.get(key)
            if data is None:
                start = time.perf_counter()
                header = Header(out.type, FEDERATION, out.round, out.attempt, AGGREGATOR)
                data = encoded[key] = serde.encode(header, out.body, self._signer, self._ctx)
                bodies.append(out.body)
                state.add("encode", time.perf_counter() - start)
            if out.type == MessageType.CHALLENGE and state.challenge_sent is None:
                state.challenge_sent = time.perf_counter()
                state.add("uploads_done", state.challenge_sent - state.started)
            if out.type == MessageType.ENVELOPE and "ready_done" not in state.timing.phases:
                state.add("ready_done", time.perf_counter() - state.started)
            if out.endpoint is None:
                targets = [(h, list(range(len(h.ids)))) for h in self._workers]
            else:
                handle, j = self._owner[out.endpoint.removeprefix(client_endpoint(""))]
                targets = [(handle, [j])]
            for handle, local in targets:
                by_worker.setdefault(handle.index, {}).setdefault(data, []).extend(local)
        for index, messages in by_worker.items():
            handle = self._workers[index]
            for data, local in messages.items():
                for k in range(0, len(local), _CHUNK):
                    chunk = local[k : k + _CHUNK]
                    handle.send(b"D" + _u32(len(chunk)) + b"".join(_u32(j) for j in chunk) + data)

    def _pump(self, machine: AggregatorMachine, outs: list[Outgoing], state: _RoundState) -> None:
        self._route(outs, state)
        idle_polls = 0
        while not state.done or any(h.outstanding for h in self._workers):
            if machine.ready_to_finish and not state.done:
                self._route(self._finish(machine, state), state)
                continue
            busy = [h for h in self._workers if h.outstanding]
            if not busy:
                if state.done:
                    break
                idle_polls += 1
                if idle_polls > _MAX_IDLE_POLLS or machine.deadline is None:
                    raise InternalError(f"the simulated round stalled in stage {machine.stage}")
                self._now = max(self._now, machine.deadline)  # nobody will answer: let time pass
                self._route(machine.poll(self._now), state)
                continue
            ready = wait([h.conn for h in busy], timeout=self._timeout)
            if not ready:
                raise InternalError(f"no simulation worker answered in {self._timeout:.0f} s")
            for handle in busy:
                if handle.conn in ready:
                    frame = handle.recv()
                    handle.outstanding -= 1
                    before = len(state.replies)
                    self._route(self._receive(machine, frame, state, handle.index), state)
                    if len(state.replies) > before:
                        idle_polls = 0

    def _receive(
        self, machine: AggregatorMachine, frame: bytes, state: _RoundState, worker: int
    ) -> list[Outgoing]:
        if frame[:1] != b"R":
            raise InternalError(f"unexpected worker frame {frame[:1]!r}")
        blobs, _ = _unpack_blobs(frame[1:])
        report = json.loads(blobs[0])
        kind = report["type"]
        for cid, seconds in report["seconds"].items():
            if kind == MessageType.ENVELOPE.value:
                state.upload_seconds[cid] = seconds
            elif kind == MessageType.CHALLENGE.value:
                state.respond_seconds[cid] = seconds
            if kind:
                state.worker(kind, seconds)
            cpu = state.timing.worker_cpu
            cpu.extend([0.0] * (worker + 1 - len(cpu)))
            cpu[worker] += seconds
        state.clipped.update(report["clipped"])
        for cid, why in report["refused"].items():
            state.timing.refusals[f"{cid}: {kind or 'message'}"] = why
        out: list[Outgoing] = []
        for raw in blobs[1:]:
            state.replies.append(len(raw))
            start = time.perf_counter()
            out.extend(self._admit(machine, raw, state))
            elapsed = time.perf_counter() - start
            state.aggregate_seconds += elapsed
            state.add("aggregator", elapsed)
        return out

    def _key_of(self, sender: str) -> bytes:
        entry = self._registry.get(sender)
        if entry is None or entry.revoked:
            raise MalformedMessageError(f"unknown sender {sender!r}")
        return entry.verify_key

    def _admit(self, machine: AggregatorMachine, raw: bytes, state: _RoundState) -> list[Outgoing]:
        """The aggregator service's gate and dispatch for one message from a client."""
        try:
            limits = state.limits(self._ctx, self.params, self._n or 1, self.n_clients)
            msg = _gate(raw, ctx=self._ctx, limits=limits, accepts=_AGGREGATOR_ACCEPTS, key_of=self._key_of)
            h, body, sender = msg.header, msg.body, msg.header.sender
            if h.type == MessageType.READY:
                return machine.on_ready(sender, h.round, h.attempt, self._registry[sender])
            if h.type == MessageType.UPLOAD:
                assert isinstance(body, Upload)
                state.upload_bytes[sender] = len(raw)
                return machine.on_upload(sender, h.round, h.attempt, body)
            assert isinstance(body, Response)
            return machine.on_response(sender, h.round, h.attempt, body, raw)
        except FedcastError as exc:
            self.refusals.append((_sender_of(raw), f"{exc.reason}: {exc}"))
            return []

    def _finish(self, machine: AggregatorMachine, state: _RoundState) -> list[Outgoing]:
        start = time.perf_counter()
        if state.challenge_sent is not None:
            state.add("challenge_to_last_response", start - state.challenge_sent)
        try:
            outcome = machine.finish()
        except DecryptionError as exc:
            state.decrypt_seconds += time.perf_counter() - start
            state.timing.attempts += 1
            return machine.decryption_failed(str(exc))
        state.decrypt_seconds += time.perf_counter() - start
        state.add("decrypt", time.perf_counter() - start)
        machine.adopt(outcome)
        outs = machine.checkpointed()
        machine.drain_events()
        state.members = outcome.members
        state.aggregate = outcome.aggregate
        state.done = True
        result = [o for o in outs if o.type == MessageType.RESULT]
        self._held = [o for o in outs if o.type != MessageType.RESULT]  # the next ANNOUNCE
        return result

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the worker processes (safe to call twice)."""
        self._closed = True
        workers, self._workers = self._workers, []
        for handle in workers:
            handle.close()

    def __enter__(self) -> ProtocolSum:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort if close() was forgotten
        with contextlib.suppress(Exception):
            self.close()


def _sender_of(raw: bytes) -> str:
    try:
        return serde.peek_header(raw).sender
    except FedcastError:
        return "?"


@dataclass
class _RoundState:
    timing: RoundTiming
    started: float = field(default_factory=time.perf_counter)
    done: bool = False
    members: tuple[str, ...] = ()
    aggregate: FloatArray | None = None
    challenge_sent: float | None = None
    replies: list[int] = field(default_factory=list)
    upload_seconds: dict[str, float] = field(default_factory=dict)
    respond_seconds: dict[str, float] = field(default_factory=dict)
    upload_bytes: dict[str, int] = field(default_factory=dict)
    clipped: dict[str, int] = field(default_factory=dict)
    aggregate_seconds: float = 0.0
    decrypt_seconds: float = 0.0
    _limits: serde.SizeLimits | None = None

    def add(self, phase: str, seconds: float) -> None:
        self.timing.phases[phase] = self.timing.phases.get(phase, 0.0) + seconds

    def worker(self, kind: str, seconds: float) -> None:
        self.timing.worker_seconds[kind] = self.timing.worker_seconds.get(kind, 0.0) + seconds

    def limits(self, ctx: serde.WireContext, params: SystemParams, n: int, members: int) -> serde.SizeLimits:
        if self._limits is None:
            self._limits = serde.SizeLimits(ctx, n_segments=params.n_segments(n), max_members=members)
        return self._limits
