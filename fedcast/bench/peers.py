"""``fedcast bench peers``: Flower's SecAgg+ next to fedcast's ElGamal sum, same N and n.

Flower side: Flower's own :class:`SecAggPlusWorkflow` (server) and
``secaggplus_mod`` (client) run one round in this process. A minimal in-memory
grid stands in for the SuperLink: ``send_and_receive`` serializes every message
with Flower's protobuf serde (so nothing is shared by reference, and the wire
size is Flower's), runs the destination node's ``ClientApp`` (a ``NumPyClient``
whose ``fit`` returns a fixed random vector, wrapped by the mod) synchronously,
and serializes the reply back. No Ray, no network, no threads: one core.

* client s: the time inside one node's ``ClientApp`` calls over the four
  SecAgg+ stages (key generation, secret sharing, masking, unmasking), mean over
  the nodes;
* server s: the workflow's wall time minus every node's ClientApp time and the
  grid's protobuf (de)serialization (reported separately as ``serde_s``, counted
  on neither side, as fedcast's rows count no wire encoding either);
* upload B: the serialized stage-2 reply (the masked vector) of one node;
  sent B: all four replies of one node.

fedcast side: :class:`fedcast.shared.schemes.ElGamalSum` (scheme v2) on a real RSA
modulus (2048-bit by default) over the same N random vectors: client s is
encode + pack + encrypt (key segment, data segments, A_i, B_i, the proof of
knowledge of r2) + answer the challenge (the element rule on every member's A_j,
the batch-verified proofs of the client's keyed sample: all of them below 90
members, 88 of 99 at 100, T_i with its equality proof); server s is screening and
folding uploads, folding responses, decrypting, unpacking and decoding (the
aggregator's own proof check runs only when a member is silent at the deadline,
as the protocol's default, and is not counted); upload B is the raw upload (key
segment and u data segments mod N^2, A_i, B_i and the proof), sent B adds the
raw response (T_i, its proof and the challenge digest). Fixed-base tables are
built once per deployment and not counted (as in ``fedcast bench crypto``).

Collusion and dropout tolerance are derived from each setting's parameters
(Flower's effective share count k and threshold t as its workflow chose them;
fedcast's from the smallest online set its clients accept, ``min_online``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcast.shared.crypto.elgamal import DEFAULT_MIN_ONLINE, DEFAULT_TABLE_MEMORY_BYTES, MIN_ONLINE
from fedcast.shared.crypto.group import DEFAULT_MODULUS_BITS
from fedcast.shared.crypto.modulus import generate_group
from fedcast.shared.crypto.proofs import RESPONSE_BITS
from fedcast.shared.errors import ConfigurationError
from fedcast.shared.params import SystemParams
from fedcast.shared.schemes import ElGamalSum

__all__ = [
    "FLOWER_REQUIREMENT",
    "JSON_KEYS",
    "SETTINGS",
    "TABLE_COLUMNS",
    "PeersBenchConfig",
    "flower_version",
    "notes",
    "run_peers_bench",
]

#: What the ``peers`` extra installs (1.42 does not install on this platform).
FLOWER_REQUIREMENT = "flwr==1.41.*"

#: Setting name -> (num_shares, reconstruction_threshold) as passed to SecAggPlusWorkflow;
#: floats are fractions of N (Flower's own convention); ``fedcast`` is ours.
SETTINGS: dict[str, tuple[int | float, int | float] | None] = {
    "flower-3/2": (3, 2),  # Flower's example setting
    "flower-all/half": (1.0, 0.5),  # every node shares with all others, threshold N/2
    "fedcast": None,
}

JSON_KEYS = (
    "system",
    "setting",
    "n_params",
    "n_clients",
    "client_s",
    "server_s",
    "upload_bytes",
    "client_sent_bytes",
    "serde_s",
    "shares",
    "threshold",
    "collusion",
    "dropouts",
    "version",
)

TABLE_COLUMNS = [
    ("setting", "setting"),
    ("n_params", "params"),
    ("n_clients", "clients"),
    ("client_s", "client s"),
    ("server_s", "server s"),
    ("upload_bytes", "upload B"),
    ("client_sent_bytes", "sent B"),
    ("collusion", "collusion tolerance"),
    ("dropouts", "dropout tolerance"),
]

_NODE_ID_BASE = 1000  # Flower reserves node id 1 for the SuperLink


@dataclass(frozen=True)
class PeersBenchConfig:
    """Cells: every setting x n_params x n_clients (one round each)."""

    n_clients: tuple[int, ...] = (10, 50, 100)
    n_params: tuple[int, ...] = (10_000, 100_000)
    settings: tuple[str, ...] = ("flower-3/2", "flower-all/half", "fedcast")
    modulus_bits: int = DEFAULT_MODULUS_BITS
    table_memory_bytes: int = DEFAULT_TABLE_MEMORY_BYTES
    #: The smallest online set fedcast's clients accept (the deployed default); it bounds the
    #: collusion fedcast tolerates, since the aggregator chooses S.
    min_online: int = DEFAULT_MIN_ONLINE
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [s for s in self.settings if s not in SETTINGS]
        if unknown:
            raise ConfigurationError(f"unknown settings {unknown}; choose from {sorted(SETTINGS)}")
        if not self.n_clients or min(self.n_clients) < 3:
            raise ConfigurationError("SecAgg+ needs at least 3 clients per cell")
        if self.min_online < MIN_ONLINE:
            raise ConfigurationError(f"min_online must be >= {MIN_ONLINE}")
        if "fedcast" in self.settings and min(self.n_clients) < self.min_online:
            raise ConfigurationError(
                f"fedcast's clients refuse fewer than min_online={self.min_online} members"
            )
        if not self.n_params or min(self.n_params) < 1:
            raise ConfigurationError("n_params must be >= 1")

    @classmethod
    def quick(cls) -> PeersBenchConfig:
        return cls(n_clients=(10,), n_params=(10_000,))


def flower_version() -> str | None:
    """The installed flwr version, or None when Flower is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flwr")
    except PackageNotFoundError:
        return None


def _require_flower() -> str:
    found = flower_version()
    if found is None:
        raise ConfigurationError(
            "Flower is not installed; `pip install 'fedcast[peers]'` "
            f"(or '{FLOWER_REQUIREMENT}') to compare with its SecAgg+"
        )
    return found


def _flower_tolerance(shares: int, threshold: int, n_clients: int) -> tuple[str, str]:
    """(collusion, dropout) tolerance of SecAgg+ with k shares per neighbourhood and threshold t.

    A node's mask seed and key are Shamir-shared t-of-k among itself and its k-1
    neighbours: t colluding neighbours give the server both secrets of a node, so
    t-1 are tolerated; a round survives as long as every neighbourhood keeps t live
    nodes, i.e. at most k-t dropouts in any neighbourhood (repaired in the round).
    """
    where = "" if shares >= n_clients else " neighbours"
    collusion = f"server + {threshold - 1} (breaks at {threshold}{where})"
    scope = "in all" if shares >= n_clients else f"per {shares}-nbhd"
    return collusion, f"{shares - threshold} {scope}, in-round"


def _fedcast_tolerance(min_online: int) -> tuple[str, str]:
    """(collusion, dropout) tolerance of fedcast whose clients accept no S smaller than ``min_online``.

    The aggregator chooses S: with S = {victim} + colluders the sum is the victim's
    input (in any secure aggregation), so an honest client is safe while fewer than
    min_online - 1 clients collude with the aggregator (crypto note section 1). A
    dropout before the challenge fails the attempt, which is retried with the
    survivors while at least min_online remain; after the challenge a member is
    waited for (a retry could difference two answers, crypto note 0.3).
    """
    return (
        f"aggregator + {min_online - 2} (min |S| {min_online} - 2)",
        f"before the challenge, >= {min_online} left; retry",
    )


class _Flower:
    """Flower's modules, imported once (only when a Flower cell runs)."""

    def __init__(self) -> None:
        import flwr.app as app  # type: ignore[import-not-found, unused-ignore]
        import flwr.client as client  # type: ignore[import-not-found, unused-ignore]
        import flwr.client.mod as mod  # type: ignore[import-not-found, unused-ignore]
        import flwr.clientapp as clientapp  # type: ignore[import-not-found, unused-ignore]
        import flwr.common as common  # type: ignore[import-not-found, unused-ignore]
        import flwr.common.serde as serde  # type: ignore[import-not-found, unused-ignore]
        import flwr.compat.common.recorddict_compat as compat  # type: ignore[import-not-found, unused-ignore]
        import flwr.proto.message_pb2 as message_pb2  # type: ignore[import-not-found, unused-ignore]
        import flwr.server.client_manager as client_manager  # type: ignore[import-not-found, unused-ignore]
        import flwr.server.compat.grid_client_proxy as proxy  # type: ignore[import-not-found, unused-ignore]
        import flwr.server.compat.legacy_context as legacy  # type: ignore[import-not-found, unused-ignore]
        import flwr.server.strategy as strategy  # type: ignore[import-not-found, unused-ignore]
        import flwr.server.workflow as workflow  # type: ignore[import-not-found, unused-ignore]
        import flwr.server.workflow.constant as constant  # type: ignore[import-not-found, unused-ignore]
        import flwr.supercore.task_identity as task_identity  # type: ignore[import-not-found, unused-ignore]
        from flwr.common.secure_aggregation import (  # type: ignore[import-not-found, unused-ignore]
            secaggplus_constants,
        )

        self.app: Any = app
        self.client: Any = client
        self.mod: Any = mod
        self.clientapp: Any = clientapp
        self.common: Any = common
        self.serde: Any = serde
        self.compat: Any = compat
        self.message_pb2: Any = message_pb2
        self.client_manager: Any = client_manager
        self.proxy: Any = proxy
        self.legacy: Any = legacy
        self.strategy: Any = strategy
        self.workflow: Any = workflow
        self.constant: Any = constant
        self.task_identity: Any = task_identity.TaskIdentity
        self.sa: Any = secaggplus_constants


class _InMemoryGrid:
    """The part of Flower's ``Grid`` the SecAgg+ workflow uses, delivering synchronously.

    Duck-typed rather than subclassing ``flwr.serverapp.grid.Grid`` (the workflow
    only calls ``send_and_receive``); push/pull are not needed and refuse.
    """

    def __init__(self, fl: _Flower, apps: dict[int, Any]) -> None:
        self._fl = fl
        self._apps = apps
        self._contexts = {nid: fl.app.Context(1, nid, {}, fl.app.RecordDict(), {}) for nid in apps}
        self.client_seconds = dict.fromkeys(apps, 0.0)
        self.sent_bytes: dict[int, list[int]] = {nid: [] for nid in apps}
        self.serde_seconds = 0.0
        self.shares = 0
        self.threshold = 0
        self.run: Any = None

    def set_run(self, run: Any) -> None:
        self.run = run

    def get_node_ids(self) -> list[int]:
        return list(self._apps)

    def create_message(
        self, content: Any, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Any:
        return self._fl.app.Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def push_messages(self, messages: Any) -> Any:
        raise NotImplementedError("the in-memory bench grid only supports send_and_receive")

    def pull_messages(self, message_ids: Any) -> Any:
        raise NotImplementedError("the in-memory bench grid only supports send_and_receive")

    def _over_the_wire(self, message: Any) -> tuple[Any, int]:
        """Assign a message id and pass ``message`` through Flower's protobuf serde."""
        fl = self._fl
        start = time.perf_counter()
        message.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # as Flower's InMemoryGrid does
        data = fl.serde.message_to_proto(message).SerializeToString()
        copy = fl.serde.message_from_proto(fl.message_pb2.Message.FromString(data))
        self.serde_seconds += time.perf_counter() - start
        return copy, len(data)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Any]:
        del timeout  # every node answers synchronously
        replies = []
        for message in messages:
            inbound, _ = self._over_the_wire(message)
            nid = int(inbound.metadata.dst_node_id)
            configs = inbound.content.config_records.get(self._fl.sa.RECORD_KEY_CONFIGS)
            if configs is not None and self._fl.sa.Key.SHARE_NUMBER in configs:
                self.shares = int(configs[self._fl.sa.Key.SHARE_NUMBER])
                self.threshold = int(configs[self._fl.sa.Key.THRESHOLD])
            start = time.perf_counter()
            reply = self._apps[nid](inbound, self._contexts[nid])
            self.client_seconds[nid] += time.perf_counter() - start
            outbound, size = self._over_the_wire(reply)
            self.sent_bytes[nid].append(size)
            replies.append(outbound)
        return replies


def _flower_round(
    fl: _Flower, setting: tuple[int | float, int | float], vectors: Sequence[np.ndarray]
) -> tuple[_InMemoryGrid, float, np.ndarray]:
    """One SecAgg+ round over ``vectors``; returns the grid (its counters), wall seconds, the mean."""
    n_clients, n = len(vectors), int(vectors[0].size)

    class _Client(fl.client.NumPyClient):  # type: ignore[misc, name-defined]
        def __init__(self, vector: np.ndarray) -> None:
            self.vector = vector

        def fit(self, parameters: Any, config: Any) -> tuple[list[np.ndarray], int, dict[str, Any]]:
            del parameters, config
            return [self.vector], 1, {}

    def app_for(vector: np.ndarray) -> Any:
        return fl.clientapp.ClientApp(
            client_fn=lambda context: _Client(vector).to_client(), mods=[fl.mod.secaggplus_mod]
        )

    apps = {_NODE_ID_BASE + i: app_for(v) for i, v in enumerate(vectors)}
    grid = _InMemoryGrid(fl, apps)
    manager = fl.client_manager.SimpleClientManager()
    for nid in apps:
        manager.register(fl.proxy.GridClientProxy(nid, grid, 1))
    strategy = fl.strategy.FedAvg(
        min_fit_clients=n_clients,
        min_available_clients=n_clients,
        fit_metrics_aggregation_fn=lambda metrics: {},
    )
    context = fl.legacy.LegacyContext(
        fl.app.Context(1, 1, {}, fl.app.RecordDict(), {}), strategy=strategy, client_manager=manager
    )
    key = fl.constant.Key.CURRENT_ROUND
    context.state.config_records[fl.constant.MAIN_CONFIGS_RECORD] = fl.app.ConfigRecord({key: 1})
    initial = fl.common.ndarrays_to_parameters([np.zeros(n, dtype=np.float32)])
    context.state.array_records[fl.constant.MAIN_PARAMS_RECORD] = fl.compat.parameters_to_arrayrecord(
        initial, keep_input=True
    )
    workflow = fl.workflow.SecAggPlusWorkflow(setting[0], setting[1])
    start = time.perf_counter()
    workflow(grid, context)
    wall = time.perf_counter() - start
    record = context.state.array_records[fl.constant.MAIN_PARAMS_RECORD]
    params = fl.compat.arrayrecord_to_parameters(record, keep_input=True)
    mean = np.asarray(fl.common.parameters_to_ndarrays(params)[0], dtype=np.float64)
    return grid, wall, mean


def _flower_row(fl: _Flower, name: str, vectors: Sequence[np.ndarray], version: str) -> dict[str, Any]:
    setting = SETTINGS[name]
    assert setting is not None
    grid, wall, mean = _flower_round(fl, setting, vectors)
    n_clients, n = len(vectors), int(vectors[0].size)
    expected = np.mean(np.stack(vectors), axis=0)
    if mean.shape != expected.shape or not np.allclose(mean, expected, atol=0.05):
        raise ConfigurationError(f"Flower's SecAgg+ round did not produce the mean ({name}, N={n_clients})")
    clients = sum(grid.client_seconds.values())
    collusion, dropouts = _flower_tolerance(grid.shares, grid.threshold, n_clients)
    first = next(iter(grid.sent_bytes.values()))
    return {
        "system": "flower-secagg+",
        "setting": name,
        "n_params": n,
        "n_clients": n_clients,
        "client_s": clients / n_clients,
        "server_s": wall - clients - grid.serde_seconds,
        "upload_bytes": first[2] if len(first) > 2 else 0,  # stage 2: the masked vector
        "client_sent_bytes": sum(first),
        "serde_s": grid.serde_seconds,
        "shares": grid.shares,
        "threshold": grid.threshold,
        "collusion": collusion,
        "dropouts": dropouts,
        "version": version,
    }


def _fedcast_row(scheme: ElGamalSum, vectors: Sequence[np.ndarray], min_online: int) -> dict[str, Any]:
    n_clients, n = len(vectors), int(vectors[0].size)
    total = scheme.sum([np.asarray(v, dtype=np.float64) for v in vectors])
    expected = np.sum(np.stack(vectors).astype(np.float64), axis=0)
    if not np.allclose(total, expected, atol=1e-2 * n_clients):
        raise ConfigurationError("fedcast's ElGamal sum did not match the plaintext sum")
    stats = scheme.last_round
    group = scheme.params.group
    # Response: T_i, the equality proof (t1, t2 mod N and its response z) and the challenge digest.
    response_bytes = 3 * group.element_bytes + (RESPONSE_BITS + 7) // 8 + 32
    client_s = float(np.mean(stats.client_seconds)) + float(np.mean(stats.respond_seconds))
    collusion, dropouts = _fedcast_tolerance(min_online)
    return {
        "system": "fedcast",
        "setting": "fedcast",
        "n_params": n,
        "n_clients": n_clients,
        "client_s": client_s,
        "server_s": stats.aggregate_seconds + stats.decrypt_seconds,
        "upload_bytes": int(stats.upload_bytes[0]),
        "client_sent_bytes": int(stats.upload_bytes[0]) + response_bytes,
        "serde_s": 0.0,
        "shares": 0,
        "threshold": 0,
        "collusion": collusion,
        "dropouts": dropouts,
        "version": f"elgamal v2 |N|={group.modulus_bits}",
    }


def _warm_up(
    config: PeersBenchConfig, n: int, scheme: ElGamalSum | None, fl: _Flower | None, rng: np.random.Generator
) -> None:
    """One untimed 3-client round per system and vector length: fedcast's tables for this
    length are built here (once per deployment), and both sides' first-call costs are paid."""
    vectors = [rng.normal(0.0, 0.5, n).astype(np.float32) for _ in range(3)]
    if scheme is not None:
        scheme.sum([v.astype(np.float64) for v in vectors])
    if fl is not None:
        _flower_round(fl, (3, 2), vectors)


def run_peers_bench(
    config: PeersBenchConfig, *, progress: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Run every (n, N, setting) cell, one round each; one row per cell.

    Raises :class:`ConfigurationError` (a clear message) when a Flower setting is
    asked for and Flower is not installed.
    """
    say = progress or (lambda message: None)
    wants_flower = any(SETTINGS[s] is not None for s in config.settings)
    version = _require_flower() if wants_flower else ""
    fl = _Flower() if wants_flower else None
    scheme: ElGamalSum | None = None
    if "fedcast" in config.settings:
        say(f"generating a {config.modulus_bits}-bit RSA modulus")
        params = SystemParams(generate_group(config.modulus_bits), max_clients=max(1000, *config.n_clients))
        scheme = ElGamalSum(params, table_memory_bytes=config.table_memory_bytes, seed=config.seed)
    rng = np.random.default_rng(config.seed)
    rows: list[dict[str, Any]] = []
    flwr_logger = logging.getLogger("flwr")
    previous_level = flwr_logger.level
    identity = fl.task_identity if fl is not None else None
    saved = (None, None, None)
    if identity is not None:
        saved = (identity._task_id, identity._run_id, identity._node_id)
    try:
        flwr_logger.setLevel(logging.WARNING)
        if identity is not None:
            # Messages created by the workflow take run and source node from the task identity,
            # which Flower's server runtime sets (node 1 is the SuperLink).
            identity.task_id, identity.run_id, identity.node_id = 1, 1, 1
        for n in config.n_params:
            _warm_up(config, n, scheme, fl, rng)
            for n_clients in config.n_clients:
                vectors = [rng.normal(0.0, 0.5, n).astype(np.float32) for _ in range(n_clients)]
                for name in config.settings:
                    say(f"{name} n={n:,} N={n_clients}")
                    if SETTINGS[name] is None:
                        assert scheme is not None
                        rows.append(_fedcast_row(scheme, vectors, config.min_online))
                    else:
                        assert fl is not None
                        rows.append(_flower_row(fl, name, vectors, version))
    finally:
        flwr_logger.setLevel(previous_level)
        if identity is not None:
            identity._task_id, identity._run_id, identity._node_id = saved
    return rows


def notes(config: PeersBenchConfig, version: str | None = None) -> Sequence[str]:
    """Footnotes printed under the table."""
    return [
        f"Flower {version or flower_version() or '(not installed)'}: its own SecAggPlusWorkflow and "
        "secaggplus_mod, one round per cell, one process, an in-memory grid (protobuf serde per "
        "message, not counted: serde_s in --json)",
        "flower-3/2: num_shares=3, reconstruction_threshold=2 (Flower's example); "
        "flower-all/half: num_shares=1.0 (all N), threshold 0.5 (N/2)",
        f"fedcast: fedcast.shared.schemes.ElGamalSum (scheme v2), RSA modulus |N|={config.modulus_bits}, "
        f"max_clients={max(1000, *config.n_clients)}; client s = encrypt (with the proof of knowledge "
        "of r2) + respond (the element rule on every A_j, the proofs of its keyed sample: all below 90 "
        "members, 88 of 99 at 100; T_i and its proof), server s = screen/fold + decrypt (the "
        "aggregator's proof check runs only when a member is silent: not counted); tables prebuilt "
        "(not counted); bytes are raw values, no framing",
        f"fedcast tolerance: the aggregator chooses S and clients refuse |S| < {config.min_online} "
        "(min_online), so up to min_online - 2 clients may collude with it (crypto note section 1)",
        "client s: mean per client per round; upload B: the vector upload of one client; "
        "sent B: everything one client sends in the round",
    ]
