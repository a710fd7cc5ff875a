"""The key service over the real RabbitMQ: enroll, get params, get keys, refusals, garbage.

Each test runs in a federation of its own (random id); the fixture closes the
transports and deletes the federation's queues and exchanges afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
from prometheus_client import REGISTRY

from fedcast.services.keyserver.client import KeyServiceClient
from fedcast.services.keyserver.service import KeyServer, KeyServerConfig
from fedcast.shared.crypto.keys import ClientKeyPair
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.errors import EnrollmentRefusedError
from fedcast.shared.transport.amqp import AmqpConfig, AmqpTransport
from fedcast.shared.transport.base import KEYSERVER

AMQP_URL = os.environ.get("FEDCAST_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ADMIN_TOKEN = "admin-token-0123456789"

pytestmark = pytest.mark.broker


class Fed:
    def __init__(self, state_dir: Path) -> None:
        self.id = f"test-ks-{uuid.uuid4().hex[:12]}"
        self.state_dir = state_dir
        self.transports: list[AmqpTransport] = []
        self.server: KeyServer | None = None

    async def transport(self, name: str) -> AmqpTransport:
        config = AmqpConfig(AMQP_URL, self.id, connection_name=f"fedcast-test-{self.id}-{name}")
        transport = AmqpTransport.from_config(config)
        self.transports.append(transport)
        await transport.connect()
        return transport

    async def client(self, sender: str, signer: SigningKeyPair | None = None) -> KeyServiceClient:
        assert self.server is not None
        return KeyServiceClient(
            await self.transport(sender),
            self.id,
            sender,
            signer or SigningKeyPair.generate(),
            keyserver_verify_key=self.server.verify_key,
            timeout=5.0,
            allow_insecure_test_group=True,
        )

    async def cleanup(self) -> None:
        if self.server is not None:
            await self.server.stop()
        for transport in self.transports:
            await transport.close()
        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel()
            await channel.queue_delete(f"fedcast.{self.id}.{KEYSERVER}")
            await channel.exchange_delete(f"fedcast.{self.id}")
            await channel.exchange_delete(f"fedcast.{self.id}.broadcast")
        finally:
            await connection.close()


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Fed]:
    federation = Fed(tmp_path / "keyserver")
    config = KeyServerConfig(
        federation.state_dir,
        federation=federation.id,
        max_clients=16,
        admin_token=ADMIN_TOKEN,
        allow_insecure_test_group=True,
    )
    try:
        federation.server = KeyServer(config, await federation.transport("keyserver"))
        await federation.server.start()
        yield federation
    finally:
        await federation.cleanup()


def rejected(reason: str) -> float:
    labels = {"service": "keyserver", "reason": reason}
    return REGISTRY.get_sample_value("fedcast_messages_rejected_total", labels) or 0.0


async def test_enroll_get_params_get_keys(fed: Fed) -> None:
    assert fed.server is not None
    tokens = {cid: fed.server.store.provision_device(cid) for cid in ("c1", "c2")}
    publics = {}
    for cid, token in tokens.items():
        client = await fed.client(cid)
        params, aggregator, min_online = await client.get_params()
        assert params == fed.server.params and aggregator is None and min_online == 3  # the default
        keys = ClientKeyPair.generate(params.group)
        await client.enroll(token, keys)
        publics[cid] = int(keys.public)
    reader = await fed.client("aggregator")
    entries = await reader.get_keys(["c1", "c2", "c3"])
    assert {cid: e.elgamal_public for cid, e in entries.items()} == publics
    ops = await fed.client("ops")
    await ops.revoke(ADMIN_TOKEN, "c2")
    assert (await reader.get_keys(["c2"]))["c2"].revoked


async def test_refusals_and_garbage_over_the_broker(fed: Fed) -> None:
    assert fed.server is not None
    fed.server.store.provision_device("c1")
    client = await fed.client("c1")
    before = rejected("enrollment_refused"), rejected("malformed")
    with pytest.raises(EnrollmentRefusedError):
        await client.enroll("wrong-token-0123456789", ClientKeyPair.from_secret(fed.server.params.group, 1))
    raw = await fed.transport("raw")
    await raw.send(KEYSERVER, b"\xc1 garbage")
    await client.get_params()  # still serving
    assert rejected("enrollment_refused") == before[0] + 1
    async with asyncio.timeout(5):  # handled in a worker thread: may finish after the next request
        while rejected("malformed") != before[1] + 1:
            await asyncio.sleep(0.01)
