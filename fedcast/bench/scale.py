"""``fedcast bench scale``: aggregator cost as the federation grows, and a Pi-class edge client.

Three kinds of rows:

* ``client``: one edge client per parameter count n, in its own subprocess:
  build the fixed-base tables (once per deployment), then a full round: open
  the AES envelope with the model, train (FedMF, one production line, 100 latent
  dims), encode, pack, encrypt, and answer a challenge of ``members`` real
  first components (all checked, as :func:`respond_to_challenge` does).
  ``peak RSS`` is the subprocess's high-water RSS (``VmHWM``).
* ``aggregator``: N clients x n parameters. The aggregator runs in its own
  process (``python -m fedcast.bench.scale --aggregator-child``), so its peak
  RSS is its own. It receives each upload as fixed-width bytes (the wire
  widths), validates and folds it, issues the challenge, folds N responses,
  decrypts, unpacks and decodes, and checks the result against the expected
  sum. The N uploads are N real encryptions by N real member keys of N
  different vectors (the aggregator's fold cost does not depend on the
  plaintext, but nothing is re-used or re-randomized); responses are
  ``R^sk_i`` computed with the real secret keys, without the client-side
  challenge checks (a client cost, measured in the ``client`` rows and in
  ``bench fedmf``). A cell whose projected upload generation (N x the measured
  client encryption time) exceeds the per-cell budget is skipped and listed
  with its projection; so is a cell whose aggregator state would not fit the
  memory cap.
* ``pi``: the ``client`` round under ``taskset -c 0`` and ``RLIMIT_AS`` (512 MB
  by default, set in the subprocess before Python starts), at the Pi table
  budget (64 MB) and at the default budget. A round that fails under the limit
  is reported as failed, with the error.

``aggregate s`` = validate + fold every upload + challenge + fold responses
(what ``bench crypto`` reports); ``decrypt s`` = decrypt + unpack + decode;
``parse s`` (JSON only) = bytes to integers.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np
from gmpy2 import mpz

from shared.crypto.delivery import delivery_key, open_model, seal_model
from shared.crypto.elgamal import (
    DEFAULT_TABLE_MEMORY_BYTES,
    Aggregation,
    ClientCiphertext,
    Decryptor,
    ElGamalClient,
    OnlineSet,
    lifted_bases,
)
from shared.crypto.group import DEFAULT_MODULUS_BITS, GroupParams
from shared.crypto.keys import AggregatorPublicKey, AggregatorSecretKey, ClientKeyPair
from shared.crypto.modulus import generate_group, insecure_test_group
from shared.encoding import FixedPointEncoding
from shared.learning.data import RatingData
from shared.learning.fedmf import FedMFClient
from shared.learning.mf import MFConfig
from shared.learning.tasks import model_from_bytes, model_to_bytes
from shared.params import SystemParams

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
    ("aggregate_s", "aggregate s"),
    ("decrypt_s", "decrypt s"),
    ("peak_rss_mb", "peak RSS MB"),
    ("rss_delta_mb", "RSS delta MB"),
    ("projected_s", "projected s"),
]

_MB = 1024 * 1024
_LATENT_DIM = 100


@dataclass(frozen=True)
class ScaleBenchConfig:
    n_clients: tuple[int, ...] = (10, 100, 1000)
    n_params: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    modulus_bits: int = DEFAULT_MODULUS_BITS
    insecure_group: bool = False  # tests only
    table_memory_bytes: int = DEFAULT_TABLE_MEMORY_BYTES
    #: A cell is skipped when N x (measured client encryption) exceeds this.
    cell_budget_s: float = 600.0
    #: A cell is skipped when the aggregator's state (~2 uploads) would exceed this.
    memory_cap_bytes: int = 4 * 1024 * _MB
    challenge_members: int = 100  # members whose first components a client checks
    pi: bool = True
    pi_params: int = 100_000
    pi_address_space_mb: int = 512
    pi_table_budgets_mb: tuple[int, ...] = (64, DEFAULT_TABLE_MEMORY_BYTES // _MB)
    seed: int = 0

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
        return insecure_test_group(512, 128, seed=config.seed)
    return generate_group(config.modulus_bits)


def _group_from_dict(data: dict[str, Any]) -> GroupParams:
    return GroupParams.from_dict(data, allow_insecure=True, check_primes=False)


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
    (d = 100, or 1 if n is not a multiple); the line has 200 ratings.
    """
    rss_start = _current_rss_bytes()
    rng = np.random.default_rng(seed)
    d = _LATENT_DIM if n_params % _LATENT_DIM == 0 else 1
    n_items = n_params // d
    params = SystemParams(group, FixedPointEncoding(), max_clients=max(max_clients, members))
    start = time.perf_counter()
    bases = lifted_bases(aggregator, table_memory_bytes)
    tables_s = time.perf_counter() - start
    keypairs = [ClientKeyPair.generate(group) for _ in range(max(2, members))]
    me = keypairs[0]
    client = ElGamalClient(me, aggregator, bases=bases)
    ids = [f"line-{i:05d}" for i in range(len(keypairs))]
    online = OnlineSet.from_registry(group, {i: kp.public for i, kp in zip(ids, keypairs, strict=True)})
    key = delivery_key(group, me.secret, aggregator.delivery)
    n_ratings = min(200, n_items)
    items = np.sort(rng.choice(n_items, n_ratings, replace=False)).astype(np.int64)
    data = RatingData(np.zeros(n_ratings, dtype=np.int64), items, rng.uniform(1, 5, n_ratings), 1, n_items)
    mf = MFConfig(latent_dim=d, learning_rate=0.001, reg_user=0.05, reg_item=0.05)
    line = FedMFClient(0, data, np.array([0]), rng.normal(0.17, 0.05, (1, d)), mf)
    envelope = seal_model(
        key, model_to_bytes(rng.normal(0.17, 0.05, n_params)), federation_id="f", round_id=1, client_id=ids[0]
    )
    t0 = time.perf_counter()
    model = model_from_bytes(
        open_model(key, envelope, federation_id="f", round_id=1, client_id=ids[0]), n_params
    )
    t1 = time.perf_counter()
    upload, _ = line.compute_update(model.reshape(n_items, d))
    t2 = time.perf_counter()
    encoded = params.encoding.encode(upload.gradient, rng)
    segments = params.layout.pack(encoded.values)
    ciphertext, attempt = client.encrypt(
        segments, online, client_id=ids[0], claimed_aggregate_key=online.aggregate_key
    )
    t3 = time.perf_counter()
    # The other members' first components: real group elements g^r2.
    firsts = {m: (ciphertext.first if m == ids[0] else group.power(group.random_exponent())) for m in ids}
    challenge = mpz(1)
    for value in firsts.values():
        challenge = challenge * value % group.p
    t4 = time.perf_counter()
    client.respond(attempt, challenge, firsts)
    t5 = time.perf_counter()
    return {
        "n_params": n_params,
        "tables_s": tables_s,
        "open_s": t1 - t0,
        "train_s": t2 - t1,
        "client_encrypt_s": t3 - t2,
        "respond_s": t5 - t4,
        "round_s": (t1 - t0) + (t2 - t1) + (t3 - t2) + (t5 - t4),
        "members": len(ids),
        "tables": bases.n_tabulated,
        "segments": len(bases),
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
                    "aggregator": aggregator.to_dict(),
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
    """``--aggregator-child``: the aggregator alone, fed fixed-width uploads over a pipe; times and RSS."""
    secret: AggregatorSecretKey = conn.recv()
    n_params, n_clients = conn.recv()
    group = secret.group
    params = SystemParams(group, FixedPointEncoding(), max_clients=max(1000, n_clients))
    decryptor = Decryptor(secret)
    registry = conn.recv()
    online = OnlineSet.from_registry(group, registry)
    u = secret.n_segments
    aggregation = Aggregation(online, u)
    width, element = group.ciphertext_bytes, group.element_bytes
    rss_start = _current_rss_bytes()
    aggregate_s = parse_s = 0.0
    for _ in range(n_clients):
        client_id = conn.recv()
        blob = conn.recv_bytes()
        start = time.perf_counter()
        segments = tuple(mpz(int.from_bytes(blob[k * width : (k + 1) * width], "big")) for k in range(u))
        tail = u * width
        first = mpz(int.from_bytes(blob[tail : tail + element], "big"))
        second = mpz(int.from_bytes(blob[tail + element : tail + 2 * element], "big"))
        del blob
        mid = time.perf_counter()
        aggregation.add_upload(client_id, ClientCiphertext(segments, first, second))
        done = time.perf_counter()
        parse_s += mid - start
        aggregate_s += done - mid
        del segments
        conn.send(True)
    start = time.perf_counter()
    challenge, _ = aggregation.challenge()
    aggregate_s += time.perf_counter() - start
    conn.send(int(challenge))
    responses: dict[str, int] = conn.recv()
    start = time.perf_counter()
    for client_id, share in responses.items():
        aggregation.add_response(client_id, share)
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
            "decrypt_s": decrypt_s,
            "parse_s": parse_s,
            "peak_rss_mb": peak / _MB,
            "rss_delta_mb": (peak - rss_start) / _MB,
            "max_abs_error": float(np.max(np.abs(total - expected))),
        }
    )


def _serialize(group: GroupParams, ciphertext: ClientCiphertext) -> bytes:
    width, element = group.ciphertext_bytes, group.element_bytes
    parts = [int(s).to_bytes(width, "big") for s in ciphertext.segments]
    parts.append(int(ciphertext.first).to_bytes(element, "big"))
    parts.append(int(ciphertext.second).to_bytes(element, "big"))
    return b"".join(parts)


def _aggregator_cell(
    group: GroupParams,
    secret: AggregatorSecretKey,
    bases: Any,
    keypairs: Sequence[ClientKeyPair],
    n_params: int,
    n_clients: int,
    seed: int,
) -> dict[str, Any]:
    """N real clients encrypt N different vectors; the aggregator process folds and decrypts."""
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
        parent.send(secret)
        parent.send((n_params, n_clients))
        params = SystemParams(group, FixedPointEncoding(), max_clients=max(1000, n_clients))
        ids = [f"client-{i:05d}" for i in range(n_clients)]
        members = keypairs[:n_clients]
        registry = {i: kp.public for i, kp in zip(ids, members, strict=True)}
        parent.send(registry)
        online = OnlineSet.from_registry(group, registry)
        pk_s = online.aggregate_key
        rng = np.random.default_rng([seed, n_clients, n_params])
        expected = np.zeros(n_params)
        encrypt_s = 0.0
        for cid, keypair in zip(ids, members, strict=True):
            client = ElGamalClient(keypair, secret.public, bases=bases)
            start = time.perf_counter()
            encoded = params.encoding.encode(rng.normal(0.0, 0.5, n_params), rng)
            ciphertext, _ = client.encrypt(
                params.layout.pack(encoded.values), online, client_id=cid, claimed_aggregate_key=pk_s
            )
            encrypt_s += time.perf_counter() - start
            expected += params.encoding.decode(encoded.values)
            parent.send(cid)
            parent.send_bytes(_serialize(group, ciphertext))
            parent.recv()  # the aggregator folded it: no overlap with the next encryption
        challenge = mpz(parent.recv())
        parent.send(
            {
                cid: int(gmpy2.powmod(challenge, kp.secret, group.p))
                for cid, kp in zip(ids, members, strict=True)
            }
        )
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
    keypairs = [ClientKeyPair.generate(group) for _ in range(max(config.n_clients, default=2))]
    budget_mb = config.table_memory_bytes // _MB
    params = SystemParams(
        group, FixedPointEncoding(), max_clients=max(1000, max(config.n_clients, default=2))
    )
    for n in config.n_params:
        u = params.layout.n_segments(n)
        report(f"n={n:,}: aggregator keys for {u} segments")
        secret = AggregatorSecretKey.generate(group, u)
        report(f"n={n:,}: client subprocess (tables {budget_mb} MB)")
        client = _run_client_subprocess(
            group,
            secret.public,
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
                detail=f"respond checks {config.challenge_members} members"
                if client["status"] == "ok"
                else client.get("detail", ""),
            )
        )
        per_client = float(client.get("client_encrypt_s") or 0.0)
        bases = None
        for n_clients in config.n_clients:
            projected = n_clients * per_client
            state_bytes = 2 * u * group.ciphertext_bytes
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
            if bases is None:
                bases = lifted_bases(secret.public, config.table_memory_bytes)
            report(f"N={n_clients} n={n:,}: {n_clients} encryptions (~{projected:,.0f} s), aggregator")
            cell = _aggregator_cell(group, secret, bases, keypairs, n, n_clients, config.seed)
            rows.append(
                _row(
                    "aggregator",
                    n_clients=n_clients,
                    n_params=n,
                    table_budget_mb=budget_mb,
                    projected_s=projected,
                    measured=cell,
                    detail=f"max |sum error| {cell['max_abs_error']:.2e}",
                )
            )
        del bases, secret
    if config.pi:
        n = config.pi_params
        u = params.layout.n_segments(n)
        secret = AggregatorSecretKey.generate(group, u)
        for table_mb in config.pi_table_budgets_mb:
            report(
                f"pi: n={n:,}, tables {table_mb} MB, taskset -c 0, RLIMIT_AS {config.pi_address_space_mb} MB"
            )
            result = _run_client_subprocess(
                group,
                secret.public,
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
        "client/pi rows: one subprocess per row; tables built once (tables_s in JSON), then one round = "
        f"open envelope + train + encode/pack/encrypt + answer a challenge over {config.challenge_members} "
        "members; peak RSS = VmHWM of that subprocess (interpreter and numpy included)",
        "aggregator rows: the aggregator runs alone in its own process fed fixed-width uploads; N real "
        "clients encrypt N different vectors with their own keys (no re-use); responses are R^sk_i with "
        "the real keys, client-side challenge checks skipped (a client cost); RSS delta = peak minus the "
        "RSS after key set-up; every decrypted sum is checked against the expected sum",
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
    aggregator = AggregatorPublicKey.from_dict(spec["aggregator"], group)
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
