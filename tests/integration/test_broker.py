"""The broker CI guarantees is a real RabbitMQ that does what the services will rely on.

Publisher confirms, a durable quorum queue, manual ack through ``message.process()``,
and an oversize upload (100,000 parameters as one message) round-tripping intact.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import aio_pika
import pytest

AMQP_URL = os.environ.get("FEDCAST_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

pytestmark = pytest.mark.broker


async def test_confirmed_publish_to_quorum_queue_and_manual_ack() -> None:
    connection = await aio_pika.connect_robust(AMQP_URL, timeout=10)
    queue_name = f"fedcast-test-{uuid.uuid4().hex}"
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=4)
        queue = await channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        payload = os.urandom(750_000)  # about one 100,000-parameter upload
        confirmation = await channel.default_exchange.publish(
            aio_pika.Message(payload, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue_name,
        )
        assert confirmation is not None  # the broker confirmed the publish
        received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                received.set_result(message.body)

        tag = await queue.consume(on_message)
        assert await asyncio.wait_for(received, timeout=10) == payload
        await queue.cancel(tag)
        await asyncio.sleep(0.1)
        declared = await channel.declare_queue(queue_name, passive=True)
        assert declared.declaration_result.message_count == 0  # acked, not redelivered
    finally:
        cleanup = await connection.channel()
        await cleanup.queue_delete(queue_name)
        await connection.close()
        await connection.close()  # close() is safe to call twice
