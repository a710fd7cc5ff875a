"""``fedcast bench fedmf``: the FedMF paper's Table 1 workload, Paillier as published vs fedcast.

Workload (FedMF paper, section 6): 610 users, one user per device, the top
40 / 80 / 160 items, latent dimension 100; one *iteration* applies every user's
item gradient once. Data is ml-latest-small (``--movielens ratings.csv``: the
items with the most ratings are kept, as the paper restricts to the top items)
or the seeded synthetic generator with the same number of users and exactly as
many ratings as Table 1 lists for that item count (8,307 ratings for 40 items,
i.e. 13.6 per user; 22.7 per user at 80 items, 36.5 at 160; other item counts
are interpolated log-log from Table 1).

Schemes, all in one run and on the same data:

* ``plaintext``: FedMF with a float32 upload and no protection.
* ``paillier-<bits>-full|part``: the paper's protocol with python-paillier
  (:class:`fedcast.shared.crypto.paillier.PaillierKeys`, one ciphertext per value). The
  item matrix is kept *encrypted at the server*: every user decrypts all of
  ``C_V`` (``n_items x d`` values, in FullText and PartText alike, as the
  paper's published code does), trains, and encrypts its update (FullText: all
  ``n_items x d`` values; PartText: only the rows of the items it rated); the
  server adds each encrypted update into ``C_V`` (one multiplication mod n^2 per
  value; the user encrypts ``-gamma * G`` so the server never negates). Per-value
  costs do not depend on the values, so when a full run exceeds the time budget,
  a few whole users are measured and the rest extrapolated (``extrapolated``).
* ``elgamal-<bits>``: fedcast. One online set of all users (``max_clients`` =
  users). Each user opens its AES-256-GCM envelope holding V in the clear,
  trains, encodes (clip chosen from the first iteration's gradient range),
  packs and encrypts its full item gradient (FullText by construction), and
  answers the challenge (after checking all N first components); the
  aggregator seals V to every member (deriving each member's delivery key, as
  :mod:`fedcast.shared.protocol.aggregator` does every round), validates and folds the
  uploads, issues the challenge, folds the responses and decrypts only the sum.
  Every user and every iteration is measured; nothing is extrapolated.

Reported per scheme and item count: user seconds per user (mean, max), server
seconds per iteration, the paper's time per iteration (slowest user + server:
users run in parallel), the single-core total (every user one after another
plus the server), and bytes uploaded per user. ElGamal bytes are the exact
wire sizes of the Upload and Response messages (:mod:`fedcast.shared.wire.serde`,
signatures and framing included); Paillier bytes are the raw ciphertexts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gmpy2 import mpz

from fedcast.services.aggregator.foldpool import ProcessFolder, default_workers
from fedcast.shared.crypto.delivery import delivery_key, open_model, seal_model
from fedcast.shared.crypto.elgamal import (
    DEFAULT_MIN_ONLINE,
    DEFAULT_TABLE_MEMORY_BYTES,
    Aggregation,
    AttemptContext,
    ClientAttempt,
    ClientCiphertext,
    ClientTables,
    Decryptor,
    ElGamalClient,
    OnlineSet,
    SerialFolder,
    check_challenge,
    proof_sample_size,
)
from fedcast.shared.crypto.group import DEFAULT_MODULUS_BITS, GroupParams
from fedcast.shared.crypto.keys import AggregatorSecretKey, ClientKeyPair
from fedcast.shared.crypto.modulus import generate_group, insecure_test_group
from fedcast.shared.crypto.paillier import PaillierKeys
from fedcast.shared.crypto.proofs import RESPONSE_BITS, DlogProof, DlogStatement, EqualityProof
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.encoding import FixedPointEncoding
from fedcast.shared.learning.data import RatingData, SyntheticConfig, make_synthetic, train_test_split
from fedcast.shared.learning.fedmf import FedMFClient
from fedcast.shared.learning.loaders import load_movielens_latest_small
from fedcast.shared.learning.mf import MFConfig, MFModel, evaluate, init_model
from fedcast.shared.learning.tasks import model_from_bytes, model_to_bytes
from fedcast.shared.params import SystemParams
from fedcast.shared.protocol.client import model_digest
from fedcast.shared.wire.codec import WireContext
from fedcast.shared.wire.messages import Header, MessageType, Response, Upload
from fedcast.shared.wire.serde import FirstComponentSigned, encode, sign_first, verify_first

__all__ = [
    "JSON_KEYS",
    "PAPER_RATINGS",
    "REFERENCE",
    "TABLE_COLUMNS",
    "FedMFBenchConfig",
    "fedmf_notes",
    "load_workload",
    "paper_rating_count",
    "run_fedmf_bench",
]

#: Table 1 of the FedMF paper: ratings of the 610 users on the top-k items of ml-latest-small.
PAPER_RATINGS: dict[int, int] = {
    40: 8307,
    50: 9807,
    60: 11214,
    80: 13817,
    160: 22282,
    320: 34172,
    640: 49706,
    1280: 67558,
    2560: 83616,
}
_PAPER_USERS = 610

#: The paper's own published code (Di-Chai/FedMF, FedMF_Full.py) measured on this project's
#: machine, 610-user equivalent, FullText, 40 items, 1024-bit Paillier.
REFERENCE: dict[str, float] = {
    "users": _PAPER_USERS,
    "items": 40,
    "iteration_s": 79.0,
    "single_core_s": 3800.0,
    "user_s": 6.1,
    "upload_bytes": 1.0e6,
}

JSON_KEYS = (
    "scheme",
    "key_bits",
    "text",
    "items",
    "n_users",
    "n_ratings",
    "latent_dim",
    "values_per_user",
    "user_s_mean",
    "user_s_max",
    "server_s",
    "iteration_s",
    "single_core_s",
    "upload_bytes",
    "users_measured",
    "extrapolated",
    "iterations",
    "user_breakdown_s",
    "server_breakdown_s",
    "protocol_extras",
    "setup_s",
    "clip",
    "clipped",
    "rmse_start",
    "rmse",
    "speedup_iteration",
    "speedup_single_core",
    "bytes_ratio",
)

TABLE_COLUMNS = [
    ("scheme", "scheme"),
    ("items", "items"),
    ("user_s_mean", "user s"),
    ("user_s_max", "user max s"),
    ("server_s", "server s"),
    ("iteration_s", "iteration s"),
    ("single_core_s", "1-core total s"),
    ("upload_bytes", "B/user"),
    ("rmse", "RMSE"),
    ("speedup_iteration", "x ref iter"),
    ("speedup_single_core", "x ref total"),
    ("bytes_ratio", "x ref bytes"),
    ("users_measured", "users measured"),
    ("extrapolated", "extrapolated"),
]


@dataclass(frozen=True)
class FedMFBenchConfig:
    """Sizes and knobs; the defaults are the paper's workload (``small`` is for tests)."""

    n_users: int = _PAPER_USERS
    item_counts: tuple[int, ...] = (40, 80, 160)
    latent_dim: int = 100
    iterations: int = 1
    modulus_bits: int = DEFAULT_MODULUS_BITS
    insecure_group: bool = False  # tests only: a 512-bit insecure_test_group
    paillier_bits: tuple[int, ...] = (1024, 2048)
    paillier_texts: tuple[str, ...] = ("full", "part")
    #: Per Paillier setting: whole users are measured until this many seconds have been
    #: spent (at least one); the rest is extrapolated from the measured per-value costs.
    paillier_budget_s: float = 20.0
    frac_bits: int = 16
    movielens: str | None = None
    test_fraction: float = 0.2
    learning_rate: float = 0.001
    reg: float = 0.05
    table_memory_bytes: int = DEFAULT_TABLE_MEMORY_BYTES
    #: Fold helper processes of the aggregator (services/aggregator/foldpool.py): one per extra core.
    fold_workers: int = field(default_factory=default_workers)
    seed: int = 0

    @classmethod
    def quick(cls) -> FedMFBenchConfig:
        """About a minute: 61 users (a tenth), 40 items, real 2048-bit group, 1024-bit Paillier only."""
        return cls(n_users=61, item_counts=(40,), paillier_bits=(1024,), paillier_budget_s=5.0)

    @classmethod
    def small(cls) -> FedMFBenchConfig:
        """Seconds, not minutes: 20 users, 5 items, 4 dims, 512-bit Paillier, insecure group."""
        return cls(
            n_users=20,
            item_counts=(5,),
            latent_dim=4,
            iterations=2,
            insecure_group=True,
            paillier_bits=(512,),
            paillier_budget_s=5.0,
            learning_rate=0.01,
        )

    def mf_config(self) -> MFConfig:
        # Factors start near sqrt(3/d) so that <u, v> starts near the middle of the ratings.
        # Plain gradient descent (eq. 3/4): the paper's algorithm, which this benchmark times
        # and whose server update it applies.
        return MFConfig(
            optimizer="gd",
            latent_dim=self.latent_dim,
            learning_rate=self.learning_rate,
            reg_user=self.reg,
            reg_item=self.reg,
            init_mean=math.sqrt(3.0 / self.latent_dim),
            init_scale=0.05,
            epochs=self.iterations,
            seed=self.seed,
        )


# -- data ------------------------------------------------------------------------------------------


def paper_rating_count(n_items: int, n_users: int = _PAPER_USERS) -> int:
    """Table 1's rating count for ``n_items`` (log-log interpolation), scaled to ``n_users``."""
    xs = sorted(PAPER_RATINGS)
    lx = np.log(np.array(xs, dtype=np.float64))
    ly = np.log(np.array([PAPER_RATINGS[x] for x in xs], dtype=np.float64))
    x = math.log(n_items)
    if x <= lx[0]:
        y = ly[0] + (x - lx[0]) * (ly[1] - ly[0]) / (lx[1] - lx[0])
    elif x >= lx[-1]:
        y = ly[-1] + (x - lx[-1]) * (ly[-1] - ly[-2]) / (lx[-1] - lx[-2])
    else:
        y = float(np.interp(x, lx, ly))
    count = round(math.exp(y) * n_users / _PAPER_USERS)
    return int(min(max(count, n_users), n_users * n_items))


def _top_items(data: RatingData, n_items: int) -> RatingData:
    counts = np.bincount(data.items, minlength=data.n_items)
    keep_items = np.sort(np.argsort(-counts, kind="stable")[:n_items])
    index = np.full(data.n_items, -1, dtype=np.int64)
    index[keep_items] = np.arange(keep_items.size)
    mask = index[data.items] >= 0
    return RatingData(
        data.users[mask], index[data.items[mask]], data.ratings[mask], data.n_users, int(keep_items.size)
    )


def load_workload(config: FedMFBenchConfig, n_items: int) -> tuple[RatingData, str]:
    """(ratings, description): the top ``n_items`` of ml-latest-small, or the synthetic stand-in."""
    if config.movielens:
        data = _top_items(load_movielens_latest_small(config.movielens), n_items)
        return data, f"ml-latest-small top {n_items} items ({Path(config.movielens).name})"
    target = paper_rating_count(n_items, config.n_users)
    per_user = target / config.n_users
    synthetic = SyntheticConfig(
        n_users=config.n_users,
        n_items=n_items,
        ratings_per_user=max(2, min(n_items, math.ceil(1.5 * per_user))),
        seed=config.seed,
    )
    data = make_synthetic(synthetic)
    if data.n_ratings > target:
        rng = np.random.default_rng([config.seed, n_items])
        data = data.select(np.sort(rng.choice(data.n_ratings, target, replace=False)))
    return data, f"synthetic, {data.n_ratings} ratings ({data.n_ratings / config.n_users:.1f} per user)"


# -- shared helpers ----------------------------------------------------------------------------


@dataclass
class _Users:
    """The federation's users: one FedMFClient per user, plus the train/test split."""

    data: RatingData
    test: RatingData
    init: MFModel
    clients: list[FedMFClient]
    mf: MFConfig


def _users(data: RatingData, config: FedMFBenchConfig) -> _Users:
    mf = config.mf_config()
    train, test = train_test_split(data, test_fraction=config.test_fraction, seed=config.seed)
    init = init_model(data.n_users, data.n_items, mf)
    clients = [
        FedMFClient(i, train, np.array([i]), init.user_factors[i : i + 1], mf) for i in range(data.n_users)
    ]
    return _Users(train, test, init, clients, mf)


def _rmse(users: _Users, v: np.ndarray[Any, Any]) -> float:
    u = np.vstack([c.user_factors for c in users.clients])
    return float(evaluate(MFModel(u, v), users.test).rmse)


def _server_update(v: np.ndarray[Any, Any], aggregate: np.ndarray[Any, Any], mf: MFConfig) -> Any:
    return v - mf.learning_rate * (aggregate.reshape(v.shape) + 2.0 * mf.reg_item * v)


@dataclass
class _Timing:
    """One scheme at one item count: per-iteration user and server seconds."""

    user_s: list[list[float]] = field(default_factory=list)  # [iteration][user]
    server_s: list[float] = field(default_factory=list)
    user_parts: dict[str, float] = field(default_factory=dict)  # summed over users and iterations
    server_parts: dict[str, float] = field(default_factory=dict)

    def add(self, parts: dict[str, float], key: str, seconds: float) -> None:
        parts[key] = parts.get(key, 0.0) + seconds


def _row_from_timing(
    scheme: str, key_bits: int, text: str, data: RatingData, config: FedMFBenchConfig, timing: _Timing
) -> dict[str, Any]:
    users = np.array(timing.user_s)  # iterations x users
    n_iter = len(timing.server_s)
    user_mean = float(users.mean())
    user_max = float(np.mean(users.max(axis=1)))
    server = float(np.mean(timing.server_s))
    per_user_iter = n_iter * data.n_users
    return {
        "scheme": scheme,
        "key_bits": key_bits,
        "text": text,
        "items": data.n_items,
        "n_users": data.n_users,
        "n_ratings": 0,
        "latent_dim": config.latent_dim,
        "user_s_mean": user_mean,
        "user_s_max": user_max,
        "server_s": server,
        "iteration_s": user_max + server,
        "single_core_s": float(np.mean(users.sum(axis=1))) + server,
        "users_measured": data.n_users,
        "extrapolated": False,
        "iterations": n_iter,
        "user_breakdown_s": {k: v / per_user_iter for k, v in timing.user_parts.items()},
        "server_breakdown_s": {k: v / n_iter for k, v in timing.server_parts.items()},
        "protocol_extras": {},
    }


# -- plaintext ---------------------------------------------------------------------------------


def _run_plaintext(data: RatingData, config: FedMFBenchConfig) -> tuple[dict[str, Any], list[Any]]:
    users = _users(data, config)
    v = users.init.item_factors.copy()
    timing = _Timing()
    rmse_start = _rmse(users, v)
    history = [v.copy()]
    for _ in range(config.iterations):
        times, pending, uploads = [], [], []
        for client in users.clients:
            start = time.perf_counter()
            upload, new_u = client.compute_update(v)
            wire = upload.gradient.astype(np.float32)  # what an unprotected client would send
            times.append(time.perf_counter() - start)
            uploads.append(wire)
            pending.append(new_u)
        start = time.perf_counter()
        total = np.sum(np.array(uploads, dtype=np.float64), axis=0)
        v = _server_update(v, total, users.mf)
        timing.server_s.append(time.perf_counter() - start)
        timing.user_s.append(times)
        for client, new_u in zip(users.clients, pending, strict=True):
            client.commit(new_u)
        history.append(v.copy())
    row = _row_from_timing("plaintext", 0, "full", data, config, timing)
    row.update(
        values_per_user=data.n_items * config.latent_dim,
        upload_bytes=4.0 * data.n_items * config.latent_dim,
        setup_s=0.0,
        clip=None,
        clipped=0,
        rmse_start=rmse_start,
        rmse=_rmse(users, v),
    )
    return row, history


# -- fedcast ElGamal ---------------------------------------------------------------------------


def _group(config: FedMFBenchConfig) -> GroupParams:
    return (
        insecure_test_group(512, seed=config.seed)
        if config.insecure_group
        else generate_group(config.modulus_bits)
    )


def _choose_clip(data: RatingData, config: FedMFBenchConfig) -> float:
    """Clip bound C: the next power of two above twice the first iteration's largest |gradient|."""
    users = _users(data, config)
    v = users.init.item_factors
    largest = max(float(np.max(np.abs(c.compute_update(v)[0].gradient), initial=0.0)) for c in users.clients)
    return float(2.0 ** math.ceil(math.log2(max(2.0 * largest, 2.0**-8))))


def _wire_bytes(group: GroupParams, n_segments: int) -> int:
    """Exact bytes of one member's Upload plus Response message (header, body, signatures)."""
    ctx = WireContext.from_group(group)
    signer = SigningKeyPair.generate()
    element = int(group.n - 2)
    segment = int(group.n2 - 2)
    response = (1 << RESPONSE_BITS) - 1
    upload = Upload(
        segment,
        tuple([segment] * n_segments),
        element,
        element,
        DlogProof(element, response),
        bytes(64),
        bytes(32),
    )
    reply = Response(element, EqualityProof(element, element, response), bytes(32))
    header = Header(MessageType.UPLOAD, "fedcast-bench", 1, 0, "user-00000")
    response_header = Header(MessageType.RESPONSE, "fedcast-bench", 1, 0, "user-00000")
    return len(encode(header, upload, signer, ctx)) + len(encode(response_header, reply, signer, ctx))


def _run_elgamal(
    data: RatingData, config: FedMFBenchConfig, group: GroupParams, progress: Callable[[str], None]
) -> tuple[dict[str, Any], list[Any]]:
    setup_start = time.perf_counter()
    clip = _choose_clip(data, config)
    encoding = FixedPointEncoding(config.frac_bits, clip)
    params = SystemParams(group, encoding, max_clients=max(2, data.n_users))
    layout = params.layout
    users = _users(data, config)
    n_values = data.n_items * config.latent_dim
    u = layout.n_segments(n_values)
    federation = "fedcast-bench"
    secret = AggregatorSecretKey.generate(group)
    public = secret.public(federation=federation, verify_key=bytes(32))
    decryptor = Decryptor(
        secret,
        federation=federation,
        n_segments=u,
        max_members=params.max_clients,
        table_memory_bytes=config.table_memory_bytes,
    )
    tables = ClientTables(
        public, federation=federation, n_segments=u, table_memory_bytes=config.table_memory_bytes
    )
    keypairs = [ClientKeyPair.generate(group) for _ in range(data.n_users)]
    clients = [ElGamalClient(kp, public, tables) for kp in keypairs]
    ids = [f"user-{i:05d}" for i in range(data.n_users)]
    online = OnlineSet.from_registry(group, {i: kp.public for i, kp in zip(ids, keypairs, strict=True)})
    pk_s = online.aggregate_key
    client_keys = [delivery_key(group, kp.secret, public.delivery) for kp in keypairs]  # cached
    # The deployed protocol layer's own work is measured too: each member's Ed25519 key signs
    # its first component, the aggregator checks every upload's signature and each member the
    # signatures of its keyed sample, and both re-check the registered keys every round.
    signers = [SigningKeyPair.generate() for _ in ids]
    verify_keys = {cid: signer.verify_key for cid, signer in zip(ids, signers, strict=True)}
    registry = dict(zip(online.members, online.public_keys, strict=True))
    ctx = WireContext.from_group(group)
    folder = ProcessFolder(group.n2, workers=config.fold_workers)
    fold_workers = folder.workers
    setup_s = time.perf_counter() - setup_start
    rng = np.random.default_rng([config.seed, 7])

    v = users.init.item_factors.copy()
    rmse_start = _rmse(users, v)
    history = [v.copy()]
    timing = _Timing()
    clipped = 0
    serial_fold_s: list[float] = []
    last_firsts: dict[str, Any] = {}
    # The aggregator derives each member's delivery key once and caches it (the keys are
    # long-lived), so it is deployment set-up, not per-iteration work.
    server_keys = [delivery_key(group, secret.delivery_secret, pk) for pk in online.public_keys]
    try:
        for iteration in range(config.iterations):
            progress(f"elgamal items={data.n_items} iteration {iteration + 1}/{config.iterations}")
            sp, up = timing.server_parts, timing.user_parts
            times = [0.0] * data.n_users
            # Server: seal V to every member with its cached delivery key, as the aggregator does.
            start = time.perf_counter()
            plaintext = model_to_bytes(v.reshape(-1))
            digest = model_digest(plaintext)
            envelopes = [
                seal_model(key, plaintext, federation_id=federation, round_id=iteration, client_id=cid)
                for cid, key in zip(online.members, server_keys, strict=True)
            ]
            context = AttemptContext(federation, digest, iteration, 0, online.members)
            aggregation = Aggregation(online, context, u, folder=folder, verifier=folder.dlog_failures)
            server = time.perf_counter() - start
            timing.add(sp, "seal", server)
            attempts: list[ClientAttempt] = []
            signatures: dict[str, bytes] = {}
            pending = []
            uploaded: list[tuple[mpz, ...]] = []
            ciphertexts: list[ClientCiphertext] = []
            for i, (cid, client) in enumerate(zip(ids, clients, strict=True)):
                t0 = time.perf_counter()
                opened = open_model(
                    client_keys[i], envelopes[i], federation_id=federation, round_id=iteration, client_id=cid
                )
                model = model_from_bytes(opened, n_values).reshape(v.shape)
                own_context = AttemptContext(federation, model_digest(opened), iteration, 0, online.members)
                OnlineSet.from_registry(group, registry)  # every registered key, each envelope
                t1 = time.perf_counter()
                upload, new_u = users.clients[i].compute_update(model)
                t2 = time.perf_counter()
                encoded = encoding.encode(upload.gradient, rng)
                segments = layout.pack(encoded.values)
                ciphertext, attempt = client.encrypt(
                    segments,
                    online,
                    own_context,
                    client_id=cid,
                    claimed_aggregate_key=pk_s,
                    min_online=DEFAULT_MIN_ONLINE,
                )
                signed = FirstComponentSigned(int(ciphertext.first), ciphertext.proof, own_context.digest)
                signatures[cid] = sign_first(signers[i], federation, iteration, 0, cid, signed, ctx)
                t3 = time.perf_counter()
                clipped += encoded.clipped
                attempts.append(attempt)
                pending.append(new_u)
                uploaded.append(ciphertext.segments)
                ciphertexts.append(ciphertext)
                timing.add(up, "open_envelope", t1 - t0)
                timing.add(up, "train", t2 - t1)
                timing.add(up, "encrypt", t3 - t2)
                times[i] += t3 - t0
            # The server's work starts once every user has uploaded (the paper's model: slowest
            # user + server), so folding helpers cannot hide their work behind the users'.
            start = time.perf_counter()
            OnlineSet.from_registry(group, registry)
            for cid, ciphertext in zip(ids, ciphertexts, strict=True):
                signed = FirstComponentSigned(int(ciphertext.first), ciphertext.proof, context.digest)
                verify_first(verify_keys[cid], signatures[cid], federation, iteration, 0, cid, signed, ctx)
            elapsed = time.perf_counter() - start
            timing.add(sp, "check_uploads", elapsed)
            server += elapsed
            start = time.perf_counter()
            for cid, ciphertext in zip(ids, ciphertexts, strict=True):
                aggregation.add_upload(cid, ciphertext)
            elapsed = time.perf_counter() - start
            timing.add(sp, "fold_uploads", elapsed)
            server += elapsed
            start = time.perf_counter()
            # As the aggregator does by default: collect the helpers' products and send the challenge;
            # the proofs are the members' to check (the aggregator's check runs only when a member
            # is silent at the deadline: its cost is reported apart, in protocol_extras).
            challenge, firsts = aggregation.challenge(verify=False)
            elapsed = time.perf_counter() - start
            timing.add(sp, "challenge", elapsed)
            server += elapsed
            last_firsts = firsts
            for i, client in enumerate(clients):
                t0 = time.perf_counter()
                share, proof = client.respond(attempts[i], challenge, firsts)
                for m in client.sampler.choose(attempts[i], int(challenge), attempts[i].min_online):
                    signed = FirstComponentSigned(int(firsts[m].value), firsts[m].proof, context.digest)
                    verify_first(verify_keys[m], signatures[m], federation, iteration, 0, m, signed, ctx)
                elapsed = time.perf_counter() - t0
                timing.add(up, "respond", elapsed)
                times[i] += elapsed
                start = time.perf_counter()
                aggregation.add_response(ids[i], share, proof)
                elapsed = time.perf_counter() - start
                timing.add(sp, "fold_responses", elapsed)
                server += elapsed
            start = time.perf_counter()
            sums = layout.unpack(aggregation.decrypt(decryptor), n_values, n_clients=data.n_users)
            total = encoding.decode_sum(sums, data.n_users)
            t1 = time.perf_counter()
            v = _server_update(v, total, users.mf)
            t2 = time.perf_counter()
            timing.add(sp, "decrypt", t1 - start)
            timing.add(sp, "update", t2 - t1)
            server += t2 - start
            for client_mf, new_u in zip(users.clients, pending, strict=True):
                client_mf.commit(new_u)
            timing.user_s.append(times)
            timing.server_s.append(server)
            history.append(v.copy())
            serial_fold_s.append(_serial_fold_seconds(group, u, uploaded))
        # Not in the totals: what the aggregator's proof check costs when a member's silence
        # triggers it, and what a client pays to check every proof and signature instead of its
        # sample.
        statements = [
            DlogStatement(f.value, f.proof, context.first_context(m)) for m, f in last_firsts.items()
        ]
        start = time.perf_counter()
        folder.dlog_failures(group, statements)
        lazy_check_s = time.perf_counter() - start
        start = time.perf_counter()
        check_challenge(group, attempts[0], challenge, last_firsts)
        for m, first in last_firsts.items():
            signed = FirstComponentSigned(int(first.value), first.proof, context.digest)
            verify_first(verify_keys[m], signatures[m], federation, config.iterations - 1, 0, m, signed, ctx)
        all_proofs_s = time.perf_counter() - start
    finally:
        folder.close()
    row = _row_from_timing(f"elgamal-{group.modulus_bits}", group.modulus_bits, "full", data, config, timing)
    # Single-core total: the folding the helper processes did in parallel is counted as if one core
    # had done it all (measured again, serially, on the same uploads).
    parallel_fold = timing.server_parts.get("fold_uploads", 0.0) / max(1, len(timing.server_s))
    row["single_core_s"] += float(np.mean(serial_fold_s)) - parallel_fold
    row.update(
        values_per_user=n_values,
        upload_bytes=float(_wire_bytes(group, u)),
        setup_s=setup_s,
        clip=clip,
        clipped=clipped,
        rmse_start=rmse_start,
        rmse=_rmse(users, v),
        fold_workers=fold_workers,
        serial_fold_s=float(np.mean(serial_fold_s)),
        protocol_extras={
            "server_proof_check_s": lazy_check_s,
            "client_check_all_s": all_proofs_s,
        },
    )
    return row, history


def _serial_fold_seconds(group: GroupParams, n_segments: int, uploads: Sequence[Sequence[mpz]]) -> float:
    """Seconds to fold the same uploads' data segments on one core (for the single-core total)."""
    folder = SerialFolder(group.n2)
    folder.start(n_segments)
    start = time.perf_counter()
    for segments in uploads:
        folder.fold(segments)
    return time.perf_counter() - start


# -- Paillier as in the paper ------------------------------------------------------------------


def _to_zn(values: np.ndarray[Any, Any], scale: float, n: int) -> list[int]:
    """Fixed-point integers mod n (negative x as n - |x|), the paper's 'max number' convention."""
    return [int(x) % n for x in np.rint(values * scale).astype(np.int64)]


def _from_zn(values: Sequence[int], scale: float, n: int) -> np.ndarray[Any, Any]:
    half = n // 2
    return np.array([(x - n if x > half else x) for x in values], dtype=np.float64) / scale


def _run_paillier(
    data: RatingData,
    config: FedMFBenchConfig,
    keys: PaillierKeys,
    text: str,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Whole users (decrypt C_V, train, encrypt the update) until the budget is spent; server adds.

    The server's one-time encryption of V0 is not an iteration cost: it is made
    with one shared obfuscator to save time (a user's decryption costs the same
    for any ciphertext). Users are measured in order: the one with the most
    rated items first (the PartText maximum), then a seeded random order.
    """
    users = _users(data, config)
    d = config.latent_dim
    n = int(keys.public.n)
    scale = float(1 << config.frac_bits)
    v0 = users.init.item_factors
    r_n = keys.public.raw_encrypt(0, r_value=3)  # 3^n mod n^2: one obfuscator for the setup only
    nsq = int(keys.nsquare)
    start = time.perf_counter()
    c_v: list[Any] = [((1 + m * n) * r_n) % nsq for m in _to_zn(v0.reshape(-1), scale, n)]
    setup_s = time.perf_counter() - start
    n_values = data.n_items * d
    rated = [c.rated_items for c in users.clients]
    enc_counts = np.array([n_values if text == "full" else r.size * d for r in rated], dtype=np.float64)
    rng = np.random.default_rng([config.seed, 11])
    first = int(np.argmax([r.size for r in rated]))
    order = [first] + [int(i) for i in rng.permutation(data.n_users) if i != first]

    dec_s = enc_s = train_s = add_s = 0.0
    dec_n = enc_n = add_n = 0
    measured: list[float] = []
    spent_start = time.perf_counter()
    for i in order:
        t0 = time.perf_counter()
        v_plain = _from_zn(keys.decrypt(c_v), scale, n).reshape(v0.shape)
        t1 = time.perf_counter()
        upload, _ = users.clients[i].compute_update(v_plain)
        step = -users.mf.learning_rate * upload.gradient.reshape(-1, d)
        rows = np.arange(data.n_items) if text == "full" else upload.rated_items
        t2 = time.perf_counter()
        cipher = keys.encrypt(_to_zn(step[rows].reshape(-1), scale, n))
        t3 = time.perf_counter()
        # Server: add into the rows of C_V this upload covers (all rows for FullText).
        positions = (rows[:, None] * d + np.arange(d)[None, :]).reshape(-1)
        start = time.perf_counter()
        target = [c_v[p] for p in positions]
        keys.add_into(target, cipher)
        for p, c in zip(positions, target, strict=True):
            c_v[p] = c
        add_s += time.perf_counter() - start
        add_n += len(cipher)
        dec_s, dec_n = dec_s + (t1 - t0), dec_n + n_values
        train_s += t2 - t1
        enc_s, enc_n = enc_s + (t3 - t2), enc_n + len(cipher)
        measured.append(t3 - t0)
        if time.perf_counter() - spent_start > config.paillier_budget_s:
            break
    k = len(measured)
    progress(f"paillier-{keys.n_bits}-{text} items={data.n_items}: {k} of {data.n_users} users measured")
    per_dec, per_enc, per_add = dec_s / dec_n, enc_s / max(enc_n, 1), add_s / max(add_n, 1)
    extrapolated = k < data.n_users
    if extrapolated:
        predicted = per_dec * n_values + per_enc * enc_counts + train_s / k
        user_mean, user_max = float(predicted.mean()), float(predicted.max())
        user_total = float(predicted.sum())
        server = per_add * float(enc_counts.sum())
    else:
        user_mean, user_max, user_total = (
            float(np.mean(measured)),
            float(np.max(measured)),
            float(sum(measured)),
        )
        server = add_s
    return {
        "scheme": f"paillier-{keys.n_bits}-{text}",
        "key_bits": keys.n_bits,
        "text": text,
        "items": data.n_items,
        "n_users": data.n_users,
        "latent_dim": d,
        "values_per_user": float(enc_counts.mean()),
        "user_s_mean": user_mean,
        "user_s_max": user_max,
        "server_s": server,
        "iteration_s": user_max + server,
        "single_core_s": user_total + server,
        "upload_bytes": float(enc_counts.mean()) * keys.ciphertext_bytes,
        "users_measured": k,
        "extrapolated": extrapolated,
        "iterations": 1,
        "user_breakdown_s": {
            "decrypt_v": per_dec * n_values,
            "train": train_s / k,
            "encrypt": per_enc * float(enc_counts.mean()),
        },
        "server_breakdown_s": {"homomorphic_add": server},
        "per_value_s": {"decrypt": per_dec, "encrypt": per_enc, "add": per_add},
        "protocol_extras": {},
        "setup_s": setup_s,
        "clip": None,
        "clipped": 0,
        "rmse_start": None,
        "rmse": None,
    }


# -- the bench -------------------------------------------------------------------------------


def _compare(row: dict[str, Any]) -> None:
    """Speed-ups against the reference, only for the reference's own workload (610 users, 40 items)."""
    same = row["items"] == REFERENCE["items"] and row["n_users"] == REFERENCE["users"]
    if same and row["iteration_s"] > 0:
        row["speedup_iteration"] = REFERENCE["iteration_s"] / row["iteration_s"]
        row["speedup_single_core"] = REFERENCE["single_core_s"] / row["single_core_s"]
        row["bytes_ratio"] = REFERENCE["upload_bytes"] / row["upload_bytes"]
    else:
        row["speedup_iteration"] = row["speedup_single_core"] = row["bytes_ratio"] = None


def run_fedmf_bench(
    config: FedMFBenchConfig, *, progress: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Every scheme at every item count; one row each (see the module docstring)."""
    report = progress or (lambda _message: None)
    group = _group(config)
    paillier = {}
    for bits in config.paillier_bits:
        report(f"generating a {bits}-bit Paillier key")
        paillier[bits] = PaillierKeys(bits)
    rows: list[dict[str, Any]] = []
    for n_items in config.item_counts:
        data, source = load_workload(config, n_items)
        report(f"items={n_items}: {source}")
        block: list[dict[str, Any]] = []
        plain, plain_history = _run_plaintext(data, config)
        block.append(plain)
        report(f"elgamal items={n_items}: setup")
        secure, secure_history = _run_elgamal(data, config, group, report)
        drift = max(float(np.max(np.abs(a - b))) for a, b in zip(plain_history, secure_history, strict=True))
        secure["max_abs_v_diff"] = drift
        block.append(secure)
        for bits in config.paillier_bits:
            for text in config.paillier_texts:
                block.append(_run_paillier(data, config, paillier[bits], text, report))
        for row in block:
            row["n_ratings"] = data.n_ratings
            row["data"] = source
            _compare(row)
        rows.extend(block)
    return rows


def fedmf_notes(config: FedMFBenchConfig, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Footnotes: what was measured, what was extrapolated, and the comparison with the reference."""
    lines = [
        f"{config.n_users} users (one per device), latent dimension {config.latent_dim}; "
        "iteration = every user's gradient applied once; users run in parallel for 'iteration s' "
        "(slowest user + server, the paper's convention), one after another for '1-core total s'",
        "ratings: "
        + (
            "ml-latest-small, top items"
            if config.movielens
            else "synthetic, Table 1's rating count per item count (8,307/610 = 13.6 per user "
            "at 40 items, 22.7 at 80, 36.5 at 160)"
        ),
        f"plaintext and elgamal: every user of {config.iterations} iteration(s) measured (means over "
        "iterations); elgamal user = open AES envelope and re-check the N registered keys + train + "
        "encode/pack/encrypt/prove and sign the first component (Ed25519) + answer the challenge (the "
        "element rule on every first component; the proofs and signatures of its keyed sample, "
        f"{proof_sample_size(config.n_users, DEFAULT_MIN_ONLINE)} of {config.n_users - 1}); "
        "server = seal V to every member + re-check the registry and the N first-component "
        "signatures + validate/fold uploads (helper processes on the other core) + "
        "challenge + fold responses + decrypt/decode + update V; the server's proof check runs only "
        "when a member is silent at the response timeout (protocol_extras); bytes = Upload + "
        "Response wire messages",
        "paillier (python-paillier, as the paper): user = decrypt all of C_V + train + encrypt the "
        "update (full: all items; part: rated items); server = one homomorphic addition per "
        "uploaded value; bytes = raw ciphertexts. Learning skipped (it adds the same integers)",
    ]
    for row in rows:
        if row.get("extrapolated"):
            per = row["per_value_s"]
            lines.append(
                f"{row['scheme']} items={row['items']}: EXTRAPOLATED from {row['users_measured']} whole "
                f"user(s) measured: {per['decrypt'] * 1e3:.3f} ms/decrypt, {per['encrypt'] * 1e3:.3f} "
                f"ms/encrypt, {per['add'] * 1e6:.1f} us/add, scaled to each of the {row['n_users']} "
                "users' value counts and to every upload"
            )
    for row in rows:
        if row["scheme"].startswith("elgamal"):
            extras = row["protocol_extras"]
            drift = row.get("max_abs_v_diff", float("nan"))
            lines.append(
                f"{row['scheme']} items={row['items']}: clip C={row['clip']:g} (2x the largest first-"
                f"iteration |gradient|, rounded up to a power of two), {row['clipped']} values clipped; "
                f"test RMSE {row['rmse_start']:.6f} -> {row['rmse']:.6f} (plaintext "
                f"{_plain_rmse(rows, row['items']):.6f}), max |V_elgamal - V_plain| = {drift:.2e}"
            )
            if extras:
                lines.append(
                    f"{row['scheme']} items={row['items']}: NOT in the totals: the aggregator's check of "
                    f"the N proofs of knowledge when a member is silent at the deadline "
                    f"({extras['server_proof_check_s']:.3f} s); a client checking every proof and "
                    f"signature instead of its sample ({extras['client_check_all_s']:.3f} s, "
                    "FEDCAST_CHECK_ALL_PROOFS=1)"
                )
    lines.append(
        f"x ref: against the paper's own code measured here (FullText, 40 items, 1024-bit Paillier, "
        f"{REFERENCE['iteration_s']:g} s/iteration, {REFERENCE['single_core_s']:,.0f} s single-core, "
        f"{REFERENCE['user_s']:g} s/user, {REFERENCE['upload_bytes'] / 1e6:.1f} MB/user); "
        "only rows of that workload (610 users, 40 items)"
    )
    return lines


def _plain_rmse(rows: Sequence[dict[str, Any]], items: int) -> float:
    for row in rows:
        if row["scheme"] == "plaintext" and row["items"] == items:
            return float(row["rmse"])
    return float("nan")
