"""``fedcast bench scale``: aggregator cost as the federation grows, and a Pi-class edge client.

Three kinds of rows:

* ``client``: one edge client per parameter count n, in its own subprocess:
  check the aggregator's public key (both proofs) and build the client tables
  (B = lift(beta^2) and H_j = lift(h_j) with comb tables, once per deployment),
  then a full round: open the AES envelope with the model, train (FedMF, one
  production line, 100 latent dims), encode, pack, encrypt (key segment, data
  segments, A_i, B_i and the proof of knowledge of r2), and answer a challenge
  of ``members`` real first components, each with its real proof in this
  attempt's context: :func:`check_challenge` batch-verifies them all
  (``proofs s``) before T_i and its equality proof are computed.
  ``peak RSS`` is the subprocess's high-water RSS (``VmHWM``).
* ``aggregator``: N clients x n parameters. The aggregator runs in its own
  process (``python -m fedcast.bench.scale --aggregator-child``), so its peak
  RSS is its own. It builds its decryptor (comb tables of H_j^-1, set-up, not
  timed), then receives each upload as fixed-width bytes (the wire widths),
  screens and folds it (one core, :class:`SerialFolder`), batch-verifies the N
  proofs of knowledge (``proofs s``), issues the challenge, folds N responses,
  decrypts, unpacks and decodes, and checks the result against the expected
  sum. The N uploads are N real encryptions by N real member keys of N
  different vectors (the aggregator's fold cost does not depend on the
  plaintext, but nothing is re-used or re-randomized); responses are the real
  ``T_i = (R^2)^sk_i`` with their equality proofs, without the client-side
  challenge checks (a client cost, measured in the ``client`` rows and in
  ``bench fedmf``). A cell whose projected upload generation (N x the measured
  client encryption time) exceeds the per-cell budget is skipped and listed
  with its projection; so is a cell whose aggregator state would not fit the
  memory cap.
* ``pi``: the ``client`` round under ``taskset -c 0`` and ``RLIMIT_AS`` (512 MB
  by default, set in the subprocess before Python starts), at the Pi table
  budget (64 MB) and at the default budget. A round that fails under the limit
  is reported as failed, with the error.

``aggregate s`` = screen + fold every upload + verify the proofs + challenge +
fold responses (what ``bench crypto`` reports); ``decrypt s`` = decrypt +
unpack + decode; ``parse s`` (JSON only) = bytes to integers.

The aggregator's public key reaches the client subprocess as plain JSON (beta,
D and their proofs in hex) and is re-verified there with
:meth:`AggregatorPublicKey.verified`, as a client does with the key service's
reply; the aggregator subprocess gets its secret key document.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from gmpy2 import mpz

from fedcast.shared.crypto.delivery import delivery_key, open_model, seal_model
from fedcast.shared.crypto.elgamal import (
    DEFAULT_MIN_ONLINE,
    DEFAULT_TABLE_MEMORY_BYTES,
    Aggregation,
    AttemptContext,
    ClientCiphertext,
    ClientTables,
    Decryptor,
    ElGamalClient,
    OnlineSet,
    ProofSampler,
    SignedFirst,
    check_challenge,
    compute_challenge,
    respond_to,
)
from fedcast.shared.crypto.group import DEFAULT_MODULUS_BITS, GroupParams
from fedcast.shared.crypto.keys import AggregatorPublicKey, AggregatorSecretKey, ClientKeyPair
from fedcast.shared.crypto.modulus import generate_group, insecure_test_group
from fedcast.shared.crypto.proofs import RESPONSE_BITS, DlogProof, EqualityProof, prove_dlog
from fedcast.shared.encoding import FixedPointEncoding
from fedcast.shared.errors import ConfigurationError, InternalError
from fedcast.shared.learning.data import RatingData
from fedcast.shared.learning.fedmf import FedMFClient
from fedcast.shared.learning.mf import MFConfig
from fedcast.shared.learning.tasks import model_from_bytes, model_to_bytes
from fedcast.shared.params import SystemParams
from fedcast.shared.protocol.client import model_digest

__all__ = [
    "JSON_KEYS",
    "TABLE_COLUMNS",
    "ScaleBenchConfig",
    "client_round",
    "main",
    "run_scale_bench",
    "scale_notes",
]

JSON_KEYS = (
    "kind",
    "n_clients",
    "n_params",
    "table_budget_mb",
    "limits",
    "status",
    "client_encrypt_s",
    "round_s",
    "respond_s",
    "proofs_s",
    "members",
    "tables_s",
    "aggregate_s",
    "decrypt_s",
    "parse_s",
    "peak_rss_mb",
    "rss_delta_mb",
    "projected_s",
    "detail",
)

TABLE_COLUMNS = [
    ("kind", "kind"),
    ("n_clients", "clients"),
    ("n_params", "params"),
    ("table_budget_mb", "tables MB"),
    ("limits", "limits"),
    ("status", "status"),
    ("client_encrypt_s", "encrypt s"),
    ("round_s", "round s"),
    ("proofs_s", "proofs s"),
    ("aggregate_s", "aggregate s"),
    ("decrypt_s", "decrypt s"),
    ("peak_rss_mb", "peak RSS MB"),
    ("rss_delta_mb", "RSS delta MB"),
    ("projected_s", "projected s"),
]

_MB = 1024 * 1024
_LATENT_DIM = 100


#: The simulated federation: the aggregator key's proofs and every attempt context name it.
_FEDERATION = "fedcast-bench-scale"
#: The simulated aggregator's Ed25519 verify key (it only binds the key proofs here).
_VERIFY_KEY = bytes(32)
_RESPONSE_BYTES = (RESPONSE_BITS + 7) // 8


@dataclass(frozen=True)
class ScaleBenchConfig:
    n_clients: tuple[int, ...] = (10, 100, 1000)
    n_params: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    modulus_bits: int = DEFAULT_MODULUS_BITS
    insecure_group: bool = False  # tests only
    #: Fixed-base table budget of each party (client tables; the aggregator's decryptor).
    table_memory_bytes: int = DEFAULT_TABLE_MEMORY_BYTES
    #: A cell is skipped when N x (measured client encryption) exceeds this.
    cell_budget_s: float = 600.0
    #: A cell is skipped when the aggregator's state (~2 uploads) would exceed this.
    memory_cap_bytes: int = 4 * 1024 * _MB
    challenge_members: int = 100  # members whose first components and proofs a client checks
    pi: bool = True
    pi_params: int = 100_000
    pi_address_space_mb: int = 512
    pi_table_budgets_mb: tuple[int, ...] = (64, DEFAULT_TABLE_MEMORY_BYTES // _MB)
    seed: int = 0

    def __post_init__(self) -> None:
        # Clients refuse an online set below their minimum (DEFAULT_MIN_ONLINE unless configured).
        if any(n < DEFAULT_MIN_ONLINE for n in self.n_clients):
            raise ConfigurationError(f"every aggregator cell needs at least {DEFAULT_MIN_ONLINE} clients")
        if self.challenge_members < DEFAULT_MIN_ONLINE:
            raise ConfigurationError(f"a challenge lists at least {DEFAULT_MIN_ONLINE} members")
        if any(n < 1 for n in self.n_params) or self.pi_params < 1:
            raise ConfigurationError("parameter counts must be >= 1")

    @classmethod
    def quick(cls) -> ScaleBenchConfig:
        """About a minute: 10 clients x 10,000 params, the Pi run at 10,000 params."""
        return cls(n_clients=(10,), n_params=(10_000,), pi_params=10_000)

    @classmethod
    def small(cls) -> ScaleBenchConfig:
        """For tests: an insecure 512-bit group, tiny sizes, a Pi run with a loose limit."""
        return cls(
            n_clients=(3, 5),
            n_params=(200, 1000),
            insecure_group=True,
            table_memory_bytes=4 * _MB,
            cell_budget_s=60.0,
            challenge_members=5,
            pi_params=1000,
            pi_address_space_mb=4096,
            pi_table_budgets_mb=(1, 4),
        )


# -- processes ------------------------------------------------------------------------------


def _peak_rss_bytes() -> int:
    """This process's peak resident set since it exec'd.

    Linux ``VmHWM`` (per address space, so it restarts at exec); not ``ru_maxrss``,
    which Linux carries across exec and would include the parent's RSS at fork.
    Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS) is the fallback.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return _peak_rss_bytes()


def _group(config: ScaleBenchConfig) -> GroupParams:
    if config.insecure_group:
        return insecure_test_group(512, seed=config.seed)
    return generate_group(config.modulus_bits)


def _group_from_dict(data: Mapping[str, Any]) -> GroupParams:
    return GroupParams.from_dict(dict(data), allow_insecure=True)


def _public_values(public: AggregatorPublicKey) -> dict[str, Any]:
    """The aggregator's public values as plain JSON (hex): what a key-service reply carries."""
    return {
        "beta": format(public.beta, "x"),
        "delivery": format(public.delivery, "x"),
        "beta_proof": [format(public.beta_proof.commitment, "x"), format(public.beta_proof.response, "x")],
        "delivery_proof": [
            format(public.delivery_proof.commitment, "x"),
            format(public.delivery_proof.response, "x"),
        ],
    }


def _public_from_values(group: GroupParams, values: Mapping[str, Any]) -> AggregatorPublicKey:
    """Inverse of :func:`_public_values`, checking both proofs as a client does."""

    def proof(pair: Sequence[str]) -> DlogProof:
        return DlogProof(int(pair[0], 16), int(pair[1], 16))

    return AggregatorPublicKey.verified(
        group,
        mpz(int(values["beta"], 16)),
        mpz(int(values["delivery"], 16)),
        proof(values["beta_proof"]),
        proof(values["delivery_proof"]),
        federation=_FEDERATION,
        verify_key=_VERIFY_KEY,
    )


def _cell_digest(n_clients: int, n_params: int) -> bytes:
    """The model digest an aggregator cell's attempt is bound to (a stand-in: no model is sent)."""
    return hashlib.sha256(b"fedcast bench scale model %d %d" % (n_clients, n_params)).digest()


# -- one client round ------------------------------------------------------------------------


def client_round(
    group: GroupParams,
    aggregator: AggregatorPublicKey,
    n_params: int,
    table_memory_bytes: int,
    members: int,
    seed: int = 0,
    max_clients: int = 1000,
) -> dict[str, Any]:
    """Tables once, then one full round of one client; seconds of each step and peak RSS.

    The model is a FedMF item matrix of ``n_params / d`` items x ``d`` dims
    (d = 100, or 1 if n is not a multiple); the line has 200 ratings. The other
    ``members - 1`` members' first components are real ``g^r2`` with real proofs in
    this attempt's context (made before the clock starts: another member's work).
    """
    rss_start = _current_rss_bytes()
    rng = np.random.default_rng(seed)
    d = _LATENT_DIM if n_params % _LATENT_DIM == 0 else 1
    n_items = n_params // d
    n_members = max(DEFAULT_MIN_ONLINE, members)
    params = SystemParams(group, FixedPointEncoding(), max_clients=max(max_clients, n_members))
    u = params.layout.n_segments(n_params)
    start = time.perf_counter()
    tables = ClientTables(
        aggregator, federation=_FEDERATION, n_segments=u, table_memory_bytes=table_memory_bytes
    )
    tables_s = time.perf_counter() - start
    keypairs = [ClientKeyPair.generate(group) for _ in range(n_members)]
    me = keypairs[0]
    client = ElGamalClient(me, aggregator, tables)
    ids = [f"line-{i:05d}" for i in range(n_members)]
    online = OnlineSet.from_registry(group, {i: kp.public for i, kp in zip(ids, keypairs, strict=True)})
    key = delivery_key(group, me.secret, aggregator.delivery)
    n_ratings = min(200, n_items)
    items = np.sort(rng.choice(n_items, n_ratings, replace=False)).astype(np.int64)
    data = RatingData(np.zeros(n_ratings, dtype=np.int64), items, rng.uniform(1, 5, n_ratings), 1, n_items)
    mf = MFConfig(latent_dim=d, learning_rate=0.001, reg_user=0.05, reg_item=0.05)
    line = FedMFClient(0, data, np.array([0]), rng.normal(0.17, 0.05, (1, d)), mf)
    envelope = seal_model(
        key,
        model_to_bytes(rng.normal(0.17, 0.05, n_params)),
        federation_id=_FEDERATION,
        round_id=1,
        client_id=ids[0],
    )
    t0 = time.perf_counter()
    opened = open_model(key, envelope, federation_id=_FEDERATION, round_id=1, client_id=ids[0])
    model = model_from_bytes(opened, n_params)
    context = AttemptContext(_FEDERATION, model_digest(opened), 1, 0, online.members)
    t1 = time.perf_counter()
    upload, _ = line.compute_update(model.reshape(n_items, d))
    t2 = time.perf_counter()
    encoded = params.encoding.encode(upload.gradient, rng)
    segments = params.layout.pack(encoded.values)
    ciphertext, attempt = client.encrypt(
        segments, online, context, client_id=ids[0], claimed_aggregate_key=online.aggregate_key
    )
    t3 = time.perf_counter()
    firsts = {ids[0]: SignedFirst(int(ciphertext.first), ciphertext.proof)}
    for member in ids[1:]:
        r2 = group.random_exponent()
        first = group.power(r2)
        firsts[member] = SignedFirst(int(first), prove_dlog(group, r2, first, context.first_context(member)))
    challenge = compute_challenge(group, [firsts[m].value for m in online.members])
    # ElGamalClient.respond, in its two steps: check_challenge (every member's A_j, and the proofs
    # of the client's keyed sample, batch-verified), then T_i = (R^2)^sk_i with its equality proof.
    t4 = time.perf_counter()
    r_square = check_challenge(group, attempt, challenge, firsts, sampler=ProofSampler.for_client(me))
    t5 = time.perf_counter()
    respond_to(me, attempt, r_square)
    t6 = time.perf_counter()
    return {
        "n_params": n_params,
        "tables_s": tables_s,
        "open_s": t1 - t0,
        "train_s": t2 - t1,
        "client_encrypt_s": t3 - t2,
        "proofs_s": t5 - t4,
        "respond_s": t6 - t4,
        "round_s": (t3 - t0) + (t6 - t4),
        "members": n_members,
        "segments": u + 1,
        "tables": tables.key_base.n_tabulated + tables.data_bases.n_tabulated,
        "peak_rss_mb": _peak_rss_bytes() / _MB,
        "rss_delta_mb": (_peak_rss_bytes() - rss_start) / _MB,
    }


def _run_client_subprocess(
    group: GroupParams,
    aggregator: AggregatorPublicKey,
    n_params: int,
    table_memory_bytes: int,
    members: int,
    *,
    address_space_mb: int | None = None,
    one_core: bool = False,
    seed: int = 0,
    max_clients: int = 1000,
) -> dict[str, Any]:
    """``python -m fedcast.bench.scale --client-child ARGS`` with optional taskset / RLIMIT_AS."""
    with tempfile.TemporaryDirectory(prefix="fedcast-scale-") as tmp:
        args_path = Path(tmp) / "args.json"
        args_path.write_text(
            json.dumps(
                {
                    "group": group.to_dict(),
                    "aggregator": _public_values(aggregator),
                    "n_params": n_params,
                    "table_memory_bytes": table_memory_bytes,
                    "members": members,
                    "seed": seed,
                    "max_clients": max_clients,
                }
            )
        )
        command = [sys.executable, "-m", "fedcast.bench.scale", "--client-child", str(args_path)]
        taskset = shutil.which("taskset")
        if one_core and taskset:
            command = [taskset, "-c", "0", *command]
        limit = None if address_space_mb is None else address_space_mb * _MB

        def limits() -> None:  # runs in the child between fork and exec
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            if one_core and not taskset and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, {0})

        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        proc = subprocess.run(  # noqa: S603 - our own interpreter and module, fixed arguments
            command, capture_output=True, text=True, env=env, preexec_fn=limits, check=False
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {"status": "failed", "detail": tail[:200]}
    result: dict[str, Any] = json.loads(lines[-1])
    result["status"] = "ok"
    return result


# -- the aggregator process -------------------------------------------------------------------


class _Duplex:
    """Two one-way pipes as one connection (send/recv of our own objects between our own processes)."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._in = Connection(read_fd, writable=False)
        self._out = Connection(write_fd, readable=False)

    def send(self, obj: Any) -> None:
        self._out.send(obj)

    def send_bytes(self, data: bytes) -> None:
        self._out.send_bytes(data)

    def recv(self) -> Any:
        return self._in.recv()

    def recv_bytes(self) -> bytes:
        return self._in.recv_bytes()

    def close(self) -> None:
        self._in.close()
        self._out.close()


def _aggregator_child(conn: _Duplex) -> None:
    """``--aggregator-child``: the aggregator alone, fed fixed-width uploads over a pipe; times and RSS.

    Everything crossing the pipe is plain data (dicts of hex strings, ints, bytes): the
    group and the secret-key document first, then the uploads, then the responses.
    """
    setup: dict[str, Any] = conn.recv()
    group = _group_from_dict(setup["group"])
    secret = AggregatorSecretKey.from_secret_dict(setup["secret"], group)
    n_params, n_clients = int(setup["n_params"]), int(setup["n_clients"])
    params = SystemParams(group, FixedPointEncoding(), max_clients=int(setup["max_clients"]))
    u = params.layout.n_segments(n_params)
    decryptor = Decryptor(
        secret,
        federation=_FEDERATION,
        n_segments=u,
        max_members=params.max_clients,
        table_memory_bytes=int(setup["table_memory_bytes"]),
    )
    online = OnlineSet.from_registry(group, {m: mpz(int(pk, 16)) for m, pk in setup["registry"].items()})
    context = AttemptContext(_FEDERATION, bytes.fromhex(setup["digest"]), 1, 0, online.members)
    aggregation = Aggregation(online, context, u)
    width, element = group.ciphertext_bytes, group.element_bytes
    rss_start = _current_rss_bytes()
    aggregate_s = parse_s = 0.0

    def number(blob: bytes, offset: int, size: int) -> mpz:
        return mpz(int.from_bytes(blob[offset : offset + size], "big"))

    for _ in range(n_clients):
        client_id = conn.recv()
        blob = conn.recv_bytes()
        start = time.perf_counter()
        key_segment = number(blob, 0, width)
        segments = tuple(number(blob, (k + 1) * width, width) for k in range(u))
        tail = (u + 1) * width
        first, second, commitment = (number(blob, tail + i * element, element) for i in range(3))
        response = number(blob, tail + 3 * element, _RESPONSE_BYTES)
        del blob
        ciphertext = ClientCiphertext(
            key_segment, segments, first, second, DlogProof(int(commitment), int(response))
        )
        mid = time.perf_counter()
        aggregation.add_upload(client_id, ciphertext)
        done = time.perf_counter()
        parse_s += mid - start
        aggregate_s += done - mid
        del segments, ciphertext
        conn.send(True)
    start = time.perf_counter()
    # The aggregator's default is lazy: it checks the N proofs only when a member is silent at the
    # response deadline. Measured apart (proofs s), not in aggregate s.
    if aggregation.verify_uploads():
        raise InternalError("a proof of knowledge of r2 failed in the benchmark")
    proofs_s = time.perf_counter() - start
    start = time.perf_counter()
    challenge, _ = aggregation.challenge(verify=False)
    aggregate_s += time.perf_counter() - start
    conn.send(int(challenge))
    responses: dict[str, tuple[int, int, int, int]] = conn.recv()
    start = time.perf_counter()
    for client_id, (share, t1, t2, z) in responses.items():
        aggregation.add_response(client_id, mpz(share), EqualityProof(t1, t2, z))
    aggregate_s += time.perf_counter() - start
    start = time.perf_counter()
    sums = params.layout.unpack(aggregation.decrypt(decryptor), n_params, n_clients=n_clients)
    total = params.encoding.decode_sum(sums, n_clients)
    decrypt_s = time.perf_counter() - start
    expected = conn.recv()
    peak = _peak_rss_bytes()
    conn.send(
        {
            "aggregate_s": aggregate_s,
            "proofs_s": proofs_s,
            "decrypt_s": decrypt_s,
            "parse_s": parse_s,
            "peak_rss_mb": peak / _MB,
            "rss_delta_mb": (peak - rss_start) / _MB,
            "max_abs_error": float(np.max(np.abs(total - expected))),
        }
    )


def _serialize(group: GroupParams, ciphertext: ClientCiphertext) -> bytes:
    """K_i, the data segments, A_i, B_i and A_i's proof (t, z) at their fixed wire widths."""
    width, element = group.ciphertext_bytes, group.element_bytes
    parts = [int(ciphertext.key_segment).to_bytes(width, "big")]
    parts += [int(s).to_bytes(width, "big") for s in ciphertext.segments]
    parts += [int(x).to_bytes(element, "big") for x in (ciphertext.first, ciphertext.second)]
    parts.append(int(ciphertext.proof.commitment).to_bytes(element, "big"))
    parts.append(int(ciphertext.proof.response).to_bytes(_RESPONSE_BYTES, "big"))
    return b"".join(parts)


def _aggregator_cell(
    secret: AggregatorSecretKey,
    public: AggregatorPublicKey,
    tables: ClientTables,
    keypairs: Sequence[ClientKeyPair],
    n_params: int,
    n_clients: int,
    params: SystemParams,
    config: ScaleBenchConfig,
) -> dict[str, Any]:
    """N real clients encrypt N different vectors; the aggregator process folds and decrypts.

    ``params`` is the run's (its ``max_clients`` sizes the slots, hence the segment count of
    ``tables``); the aggregator process builds the same from ``max_clients``.
    """
    group = secret.group
    child_read, parent_write = os.pipe()
    parent_read, child_write = os.pipe()
    command = [
        sys.executable,
        "-m",
        "fedcast.bench.scale",
        "--aggregator-child",
        str(child_read),
        str(child_write),
    ]
    process = subprocess.Popen(command, pass_fds=(child_read, child_write))  # noqa: S603 - our own module
    os.close(child_read)
    os.close(child_write)
    parent = _Duplex(parent_read, parent_write)
    try:
        ids = [f"client-{i:05d}" for i in range(n_clients)]
        members = keypairs[:n_clients]
        registry = {i: kp.public for i, kp in zip(ids, members, strict=True)}
        digest = _cell_digest(n_clients, n_params)
        parent.send(
            {
                "group": group.to_dict(),
                "secret": secret.to_secret_dict(),
                "n_params": n_params,
                "n_clients": n_clients,
                "max_clients": params.max_clients,
                "table_memory_bytes": config.table_memory_bytes,
                "registry": {i: format(pk, "x") for i, pk in registry.items()},
                "digest": digest.hex(),
            }
        )
        online = OnlineSet.from_registry(group, registry)
        context = AttemptContext(_FEDERATION, digest, 1, 0, online.members)
        pk_s = online.aggregate_key
        rng = np.random.default_rng([config.seed, n_clients, n_params])
        expected = np.zeros(n_params)
        encrypt_s = 0.0
        attempts = []
        for cid, keypair in zip(ids, members, strict=True):
            client = ElGamalClient(keypair, public, tables)
            start = time.perf_counter()
            encoded = params.encoding.encode(rng.normal(0.0, 0.5, n_params), rng)
            ciphertext, attempt = client.encrypt(
                params.layout.pack(encoded.values), online, context, client_id=cid, claimed_aggregate_key=pk_s
            )
            encrypt_s += time.perf_counter() - start
            attempts.append(attempt)
            expected += params.encoding.decode(encoded.values)
            parent.send(cid)
            parent.send_bytes(_serialize(group, ciphertext))
            parent.recv()  # the aggregator folded it: no overlap with the next encryption
        challenge = mpz(parent.recv())
        r_square = challenge * challenge % group.n
        responses = {}
        for cid, keypair, attempt in zip(ids, members, attempts, strict=True):
            share, proof = respond_to(keypair, attempt, r_square)
            responses[cid] = (int(share), proof.commitment_g, proof.commitment_h, proof.response)
        parent.send(responses)
        parent.send(expected)
        result: dict[str, Any] = parent.recv()
    finally:
        parent.close()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:  # pragma: no cover - only on a crash mid-protocol
            process.kill()
            process.wait()
    result["client_encrypt_s"] = encrypt_s / n_clients
    return result


# -- the bench ------------------------------------------------------------------------------


def _row(kind: str, measured: dict[str, Any] | None = None, **values: Any) -> dict[str, Any]:
    """A row with every JSON key; ``measured`` contributes only the keys the row does not set."""
    row: dict[str, Any] = dict.fromkeys(JSON_KEYS)
    row.update(kind=kind, status="ok", detail="", limits="")
    row.update({k: v for k, v in (measured or {}).items() if k in JSON_KEYS and k not in values})
    row.update(values)
    return row


def run_scale_bench(
    config: ScaleBenchConfig, *, progress: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Client rows per n, aggregator rows per (N, n) (measured or skipped), then the Pi rows."""
    report = progress or (lambda _message: None)
    group = _group(config)
    rows: list[dict[str, Any]] = []
    # One aggregator key for the whole run (v2 has one alpha whatever the segment count).
    secret = AggregatorSecretKey.generate(group)
    public = secret.public(federation=_FEDERATION, verify_key=_VERIFY_KEY)
    keypairs = [ClientKeyPair.generate(group) for _ in range(max(config.n_clients, default=0))]
    budget_mb = config.table_memory_bytes // _MB
    params = SystemParams(
        group, FixedPointEncoding(), max_clients=max(1000, max(config.n_clients, default=0))
    )
    for n in config.n_params:
        u = params.layout.n_segments(n)
        report(f"n={n:,}: client subprocess ({u} data segments + key segment, tables {budget_mb} MB)")
        client = _run_client_subprocess(
            group,
            public,
            n,
            config.table_memory_bytes,
            config.challenge_members,
            seed=config.seed,
            max_clients=params.max_clients,
        )
        rows.append(
            _row(
                "client",
                n_clients=1,
                n_params=n,
                table_budget_mb=budget_mb,
                measured=client,
                detail=f"respond checks {client['members']} members' proofs"
                if client["status"] == "ok"
                else client.get("detail", ""),
            )
        )
        per_client = float(client.get("client_encrypt_s") or 0.0)
        tables: ClientTables | None = None
        for n_clients in config.n_clients:
            projected = n_clients * per_client
            state_bytes = 2 * (u + 1) * group.ciphertext_bytes
            if client["status"] != "ok" or projected > config.cell_budget_s:
                reason = f"projected upload generation {projected:,.0f} s > budget {config.cell_budget_s:g} s"
                if client["status"] != "ok":
                    reason = "client measurement failed"
                rows.append(
                    _row(
                        "aggregator",
                        n_clients=n_clients,
                        n_params=n,
                        status="skipped",
                        projected_s=projected,
                        detail=reason,
                    )
                )
                report(f"N={n_clients} n={n:,}: skipped ({reason})")
                continue
            if state_bytes > config.memory_cap_bytes:
                rows.append(
                    _row(
                        "aggregator",
                        n_clients=n_clients,
                        n_params=n,
                        status="skipped",
                        detail=f"aggregator state {state_bytes / _MB:,.0f} MB > memory cap",
                    )
                )
                continue
            if tables is None:  # the simulated clients' tables, shared (built once per deployment)
                tables = ClientTables(
                    public, federation=_FEDERATION, n_segments=u, table_memory_bytes=config.table_memory_bytes
                )
            report(f"N={n_clients} n={n:,}: {n_clients} encryptions (~{projected:,.0f} s), aggregator")
            cell = _aggregator_cell(secret, public, tables, keypairs, n, n_clients, params, config)
            rows.append(
                _row(
                    "aggregator",
                    n_clients=n_clients,
                    n_params=n,
                    table_budget_mb=budget_mb,
                    projected_s=projected,
                    members=n_clients,
                    measured=cell,
                    detail=f"max |sum error| {cell['max_abs_error']:.2e}",
                )
            )
        del tables
    if config.pi:
        n = config.pi_params
        for table_mb in config.pi_table_budgets_mb:
            report(
                f"pi: n={n:,}, tables {table_mb} MB, taskset -c 0, RLIMIT_AS {config.pi_address_space_mb} MB"
            )
            result = _run_client_subprocess(
                group,
                public,
                n,
                table_mb * _MB,
                config.challenge_members,
                address_space_mb=config.pi_address_space_mb,
                one_core=True,
                seed=config.seed,
                max_clients=params.max_clients,
            )
            rows.append(
                _row(
                    "pi",
                    n_clients=1,
                    n_params=n,
                    table_budget_mb=table_mb,
                    limits=f"1 core, AS {config.pi_address_space_mb} MB",
                    measured=result,
                )
            )
    return rows


def scale_notes(config: ScaleBenchConfig) -> list[str]:
    return [
        "client/pi rows: one subprocess per row; the aggregator key's proofs are checked and the tables "
        "(key segment base + one per data segment) built once (tables_s in JSON), then one round = open "
        "envelope + train + encode/pack/encrypt + answer a challenge over "
        f"{max(DEFAULT_MIN_ONLINE, config.challenge_members)} members; proofs s = check_challenge "
        "(the element rule on every member's A_j, the proofs of the client's keyed sample "
        "batch-verified: all of them below ~90 members); peak RSS = VmHWM of that "
        "subprocess (interpreter and numpy included)",
        "aggregator rows: the aggregator runs alone in its own process, one core (serial folding), fed "
        "fixed-width uploads; N real clients encrypt N different vectors with their own keys (no re-use); "
        "responses are (R^2)^sk_i with the real keys and real equality proofs, client-side challenge "
        "checks skipped (a client cost); proofs s = the N proofs of knowledge batch-verified, the "
        "aggregator's lazy check when a member is silent at the deadline (not in aggregate s); "
        "RSS delta = peak minus the RSS after key and decryptor set-up; every decrypted "
        "sum is checked against the expected sum",
        f"cells whose projected upload generation (N x measured client encrypt s) exceeds "
        f"{config.cell_budget_s:g} s are skipped and listed with the projection",
        f"pi rows: taskset -c 0 and RLIMIT_AS {config.pi_address_space_mb} MB on the subprocess, "
        "OPENBLAS/OMP threads 1",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Subprocess entry points: ``--client-child ARGS.json`` and ``--aggregator-child READ_FD WRITE_FD``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 3 and args[0] == "--aggregator-child":
        conn = _Duplex(int(args[1]), int(args[2]))
        try:
            _aggregator_child(conn)
        finally:
            conn.close()
        return 0
    if len(args) != 2 or args[0] != "--client-child":
        print(
            "usage: python -m fedcast.bench.scale --client-child ARGS.json | --aggregator-child R W",
            file=sys.stderr,
        )
        return 2
    spec = json.loads(Path(args[1]).read_text())
    group = _group_from_dict(spec["group"])
    aggregator = _public_from_values(group, spec["aggregator"])
    result = client_round(
        group,
        aggregator,
        int(spec["n_params"]),
        int(spec["table_memory_bytes"]),
        int(spec["members"]),
        int(spec["seed"]),
        int(spec["max_clients"]),
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
