"""The plaintext FedAvg-style runner of ``fedcast bench e2e`` (the baseline's processes).

``python -m fedcast.bench.e2e_plaintext plaintext-aggregator|plaintext-edge ...``
over :class:`fedcast.shared.transport.amqp.AmqpTransport`: the aggregator broadcasts the
float32 model with the announcement, each edge trains the FedMF client task and
sends its float32 update, the aggregator sums them, applies the server step and
broadcasts the result, printing one JSON line per round. No signatures, no key
service, no challenge: the lower bound of a round over the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fedcast.bench.procs import E2EBenchError

__all__ = ["decode_message", "encode_message", "main"]


_HELLO, _ANNOUNCE, _UPLOAD, _RESULT = range(1, 5)
_HEADER = struct.Struct(">4sBIB")  # magic, type, round, sender length; then sender, then payload
_MAGIC = b"FCPT"


def encode_message(kind: int, round_id: int, sender: str, payload: bytes = b"") -> bytes:
    name = sender.encode()
    return _HEADER.pack(_MAGIC, kind, round_id, len(name)) + name + payload


def decode_message(data: bytes) -> tuple[int, int, str, bytes]:
    magic, kind, round_id, length = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise E2EBenchError("not a plaintext-runner message")
    start = _HEADER.size
    return kind, round_id, data[start : start + length].decode(), data[start + length :]


def _runner_spec(args: argparse.Namespace) -> Any:
    from fedcast.shared.learning.tasks import TaskSpec

    return TaskSpec(name="fedmf", n_items=args.n_items, latent_dim=args.latent_dim, seed=args.seed)


async def _runner_aggregator(args: argparse.Namespace) -> None:
    """Announce (with the float32 model) -> N float32 uploads -> sum, apply -> result; repeat."""
    from fedcast.shared.learning.tasks import FedMFServerTask
    from fedcast.shared.transport.amqp import AmqpTransport
    from fedcast.shared.transport.base import AGGREGATOR, Delivery

    server = FedMFServerTask(_runner_spec(args))
    model = server.initial_model()
    transport = AmqpTransport(args.amqp, args.federation, connection_name="fedcast-bench-aggregator")
    await transport.connect()
    hello: set[str] = set()
    uploads: dict[str, np.ndarray] = {}
    current = 0
    wake = asyncio.Event()

    async def on_delivery(delivery: Delivery) -> None:
        kind, round_id, sender, payload = decode_message(delivery.body)
        if kind == _HELLO:
            hello.add(sender)
        elif kind == _UPLOAD and round_id == current:
            uploads[sender] = np.frombuffer(payload, dtype="<f4")
        wake.set()

    async def until(condition: Callable[[], bool]) -> None:
        while not condition():
            await wake.wait()
            wake.clear()

    try:
        await transport.consume(AGGREGATOR, on_delivery)
        await until(lambda: len(hello) >= args.clients)
        for round_id in range(1, args.rounds + 1):
            current = round_id
            start = time.monotonic()
            await transport.broadcast(
                encode_message(_ANNOUNCE, round_id, "aggregator", model.astype("<f4").tobytes())
            )
            await until(lambda: len(uploads) >= args.clients)
            total = np.sum([u.astype(np.float64) for u in uploads.values()], axis=0)
            model = server.apply(model, total, len(uploads))
            seconds = time.monotonic() - start
            members = len(uploads)
            uploads.clear()
            await transport.broadcast(encode_message(_RESULT, round_id, "aggregator"))
            print(json.dumps({"round": round_id, "members": members, "seconds": seconds}), flush=True)
    finally:
        await transport.close()


async def _runner_edge(args: argparse.Namespace) -> None:
    """Train the FedMF client task on each announced model; send the float32 update."""
    from fedcast.services.edge_client.data import DataSource, client_task
    from fedcast.services.runtime import install_stop_signals
    from fedcast.shared.transport.amqp import AmqpTransport
    from fedcast.shared.transport.base import AGGREGATOR, Delivery, client_endpoint

    source = DataSource(
        shard=args.shard, n_shards=args.clients, users_per_client=args.users_per_client, seed=args.seed
    )
    task = await asyncio.to_thread(client_task, _runner_spec(args), source)
    transport = AmqpTransport(args.amqp, args.federation, connection_name=f"fedcast-bench-{args.client_id}")
    await transport.connect()
    stop = asyncio.Event()
    install_stop_signals(stop)
    lock = asyncio.Lock()
    pending: dict[int, Any] = {}

    async def on_delivery(delivery: Delivery) -> None:
        kind, round_id, _, payload = decode_message(delivery.body)
        async with lock:
            if kind == _ANNOUNCE:
                model = np.frombuffer(payload, dtype="<f4").astype(np.float64)
                update = await asyncio.to_thread(task.local_update, model)
                pending[round_id] = update.pending
                body = np.asarray(update.vector, dtype="<f4").tobytes()
                await transport.send(AGGREGATOR, encode_message(_UPLOAD, round_id, args.client_id, body))
            elif kind == _RESULT and round_id in pending:
                task.commit(pending.pop(round_id))

    try:
        await transport.consume(client_endpoint(args.client_id), on_delivery, broadcast=True, prefetch=4)
        await transport.send(AGGREGATOR, encode_message(_HELLO, 0, args.client_id))
        await stop.wait()
    finally:
        await transport.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fedcast.bench.e2e_plaintext plaintext-aggregator|plaintext-edge ...``."""
    parser = argparse.ArgumentParser(prog="python -m fedcast.bench.e2e_plaintext")
    parser.add_argument("role", choices=("plaintext-aggregator", "plaintext-edge"))
    parser.add_argument("--amqp", required=True)
    parser.add_argument("--federation", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--n-items", type=int, required=True)
    parser.add_argument("--latent-dim", type=int, required=True)
    parser.add_argument("--users-per-client", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--client-id", default="")
    parser.add_argument("--shard", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_runner_aggregator(args) if args.role == "plaintext-aggregator" else _runner_edge(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
