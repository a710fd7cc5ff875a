"""The crypto every client must do in one round, primitive by primitive: a floor under a round.

``fedcast bench simulate --floor`` times, one client at a time on the real code paths and the
real group, only what docs/PROTOCOL.md section 5.3 makes *every* member compute in a round of
|S| members: encrypting its upload, the element rule on every first component, the batch test
of its keyed sample of proofs, the equal-squares check and R, the Ed25519 signatures of the
sample and of the CHALLENGE, the keyed sample itself, and its share T_i with its proof. No
message is encoded or parsed, nothing is stored, the aggregator costs nothing.

On c cores, K simulated clients therefore cannot finish a round in less than
K x (the sum) / c seconds, however the simulation is written: this is the number to hold a
target against (docs/BENCHMARKS.md). Each step is timed ``repeats`` times with
``time.process_time`` (CPU seconds); rows report the median and the minimum.
"""

from __future__ import annotations

import os
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedcast.shared.crypto.elgamal import (
    DEFAULT_MIN_ONLINE,
    AttemptContext,
    ClientTables,
    ElGamalClient,
    OnlineSet,
    ProofSampler,
    compute_challenge,
    proof_sample_size,
    respond_to,
)
from fedcast.shared.crypto.group import DEFAULT_MODULUS_BITS
from fedcast.shared.crypto.keys import AggregatorSecretKey, ClientKeyPair
from fedcast.shared.crypto.modulus import generate_group, insecure_test_group
from fedcast.shared.crypto.proofs import DlogStatement, dlog_failures, prove_dlog
from fedcast.shared.crypto.signing import SigningKeyPair, verify_signature
from fedcast.shared.encoding import FixedPointEncoding
from fedcast.shared.params import SystemParams
from fedcast.shared.wire import serde
from fedcast.shared.wire.messages import Challenge, FirstComponent, Header, MessageType

__all__ = ["FLOOR_COLUMNS", "FloorConfig", "floor_notes", "run_floor"]

FLOOR_COLUMNS = (
    ("step", "step (per client per round)"),
    ("count", "count"),
    ("ms", "ms (median)"),
    ("ms_min", "ms (min)"),
)
_FEDERATION = "floor-bench"


@dataclass(frozen=True)
class FloorConfig:
    members: int = 943
    params: int = 8410
    modulus_bits: int = DEFAULT_MODULUS_BITS
    insecure_test_group: bool = False
    repeats: int = 15
    min_online: int = DEFAULT_MIN_ONLINE
    cores: int | None = None  # default: os.cpu_count()


def _timed(step: Callable[[], Any], repeats: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeats):
        start = time.process_time()
        step()
        samples.append(time.process_time() - start)
    return 1e3 * statistics.median(samples), 1e3 * min(samples)


def run_floor(config: FloorConfig, progress: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """One row per step, then the total and the floor of a round on ``cores`` cores."""
    if config.members < 2 or config.repeats < 1:
        raise ValueError("need at least 2 members and 1 repeat")
    group = insecure_test_group(512) if config.insecure_test_group else generate_group(config.modulus_bits)
    params = SystemParams(group, FixedPointEncoding(), max_clients=max(2, config.members))
    n_segments = params.n_segments(config.params)
    progress(f"keys of {config.members} members, tables of {n_segments} segments")
    members = [f"c{i:04d}" for i in range(config.members)]
    keys = {m: ClientKeyPair.generate(group) for m in members}
    signer = SigningKeyPair.generate()
    aggregator = AggregatorSecretKey.generate(group).public(
        federation=_FEDERATION, verify_key=signer.verify_key
    )
    tables = ClientTables(aggregator, federation=_FEDERATION, n_segments=n_segments)
    online = OnlineSet.from_registry(group, {m: keys[m].public for m in members})
    context = AttemptContext(_FEDERATION, secrets.token_bytes(32), 1, 0, online.members)
    me = members[0]
    client = ElGamalClient(keys[me], aggregator, tables)
    limit = 1 << group.plaintext_bits
    segments = [secrets.randbelow(limit) for _ in range(n_segments)]
    pk_s = online.aggregate_key

    def encrypt() -> Any:
        return client.encrypt(
            segments, online, context, client_id=me, claimed_aggregate_key=pk_s, min_online=config.min_online
        )

    _, attempt = encrypt()
    progress("the other members' first components, proofs and signatures; the CHALLENGE")
    ctx = serde.WireContext.from_group(group)
    r2s = {m: group.random_exponent() for m in members[1:]}
    firsts = [attempt.first] + [group.power(r2s[m]) for m in members[1:]]
    items = []
    for i, m in enumerate(members):
        # the client's own proof is not checked by itself: any valid-looking one will do here
        proof = prove_dlog(group, r2s.get(m, 1), firsts[i], context.first_context(m))
        signed = serde.FirstComponentSigned(int(firsts[i]), proof, context.digest)
        items.append(
            FirstComponent(
                m, int(firsts[i]), proof, serde.sign_first(signer, _FEDERATION, 1, 0, m, signed, ctx)
            )
        )
    challenge = compute_challenge(group, firsts)
    header = Header(MessageType.CHALLENGE, _FEDERATION, 1, 0, "aggregator")
    challenge_wire = serde.encode(header, Challenge(int(challenge), tuple(items)), signer, ctx)
    challenge_msg = serde.decode(challenge_wire, ctx)
    challenge_signed = serde.signing_bytes(challenge_msg, ctx)  # a receiver takes them off the wire
    by_member = {item.member: item for item in items}
    k = proof_sample_size(config.members, config.min_online)
    chosen = ProofSampler.for_client(keys[me]).choose(attempt, int(challenge), config.min_online)
    statements = [
        DlogStatement(by_member[m].value, by_member[m].proof, context.first_context(m)) for m in chosen
    ]
    n = group.n

    def element_rule() -> None:
        _, bad = group.screen_elements(firsts, str)
        assert not bad

    def batch() -> None:
        assert not dlog_failures(group, statements, publics_screened=True)

    def squares_and_r() -> None:
        squares = {v * v % n for v in firsts}
        assert len(squares) == len(firsts) and compute_challenge(group, firsts) == challenge

    def signatures_step() -> None:
        verify_signature(signer.verify_key, challenge_msg.signature, challenge_signed)
        for m in chosen:
            item = by_member[m]
            signed = serde.FirstComponentSigned(item.value, item.proof, context.digest)
            serde.verify_first(signer.verify_key, item.signature, _FEDERATION, 1, 0, m, signed, ctx)

    def keyed_sample() -> None:  # a fresh sampler: choose() remembers its last answer
        ProofSampler.for_client(keys[me]).choose(attempt, int(challenge), config.min_online)

    r_square = challenge * challenge % n
    steps: list[tuple[str, int, Callable[[], Any]]] = [
        (
            f"encrypt: {n_segments} data + 1 key segment mod N^2, A_i, B_i, proof of r2",
            n_segments + 1,
            encrypt,
        ),
        ("element rule (Jacobi) on every first component", config.members, element_rule),
        (f"batch test of the {k} sampled proofs (element rule on their commitments)", k, batch),
        ("equal squares and R = prod A_j", config.members, squares_and_r),
        (f"Ed25519: the {k} sampled first components and the CHALLENGE", k + 1, signatures_step),
        ("keyed sample: HMAC-SHA256 of every other member, sorted", config.members - 1, keyed_sample),
        ("T_i = (R^2)^sk_i and its equality proof", 1, lambda: respond_to(keys[me], attempt, r_square)),
    ]
    rows: list[dict[str, Any]] = []
    for name, count, step in steps:
        progress(name)
        median, minimum = _timed(step, config.repeats)
        rows.append({"step": name, "count": count, "ms": median, "ms_min": minimum})
    total = sum(row["ms"] for row in rows)
    total_min = sum(row["ms_min"] for row in rows)
    cores = config.cores or os.cpu_count() or 1
    rows.append(
        {
            "step": "total per client per round",
            "count": "",
            "ms": total,
            "ms_min": total_min,
            "clients": config.members,
            "cores": cores,
            "floor_round_s": config.members * total / 1e3 / cores,
            "floor_round_s_min": config.members * total_min / 1e3 / cores,
            "modulus_bits": group.modulus_bits,
            "n_segments": n_segments,
            "sample": k,
        }
    )
    return rows


def floor_notes(config: FloorConfig, rows: list[dict[str, Any]]) -> list[str]:
    last = rows[-1]
    return [
        f"|S| = {config.members}, {config.params:,} values in {last['n_segments']} segments, "
        f"|N| = {last['modulus_bits']}, keyed sample of {last['sample']} proofs and signatures; "
        f"CPU ms per client per round, {config.repeats} repeats each, one step at a time",
        "only the crypto docs/PROTOCOL.md section 5.3 makes every member compute: no wire codec, "
        "no ledger, no aggregator",
        f"floor of a round of {last['clients']} such clients on {last['cores']} cores: "
        f"{last['floor_round_s']:.1f} s (from the minima: {last['floor_round_s_min']:.1f} s); no "
        "simulation of them on these cores can be faster",
    ]
