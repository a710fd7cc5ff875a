"""In-process transport: asyncio queues with the AMQP transport's delivery semantics.

One :class:`InProcessBroker` per process (per demo) holds the queues; every
service gets its own :class:`InProcessTransport` on that broker, exactly as every
service would get its own connection to RabbitMQ. What carries over from AMQP:

* an endpoint's queue exists from its first ``send`` or first ``consume`` and
  outlives consumers, so messages sent before the consumer starts wait for it;
* ``broadcast`` reaches every endpoint ever consumed with ``broadcast=True``
  (a binding belongs to the broker, not to the consumer);
* at most ``prefetch`` handlers run at once per consumer, started in FIFO order;
* a handler that raises is counted and logged, and its message is dropped
  (acked), never redelivered;
* a message whose handler was cancelled by :meth:`InProcessTransport.close`
  goes back to the front of its queue with ``redelivered=True``, as an unacked
  AMQP message does when its channel closes;
* an RPC request expires in the queue once its requester has stopped waiting, and a
  broadcast given an ``expiration`` once that has passed (dropped unread, at the head);
* a broadcast that reaches no endpoint is counted (``unroutable_broadcasts``), not raised.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from fedcast.shared.errors import ConfigurationError, RequestTimeoutError, TransportError
from fedcast.shared.transport.base import Delivery, Handler, Transport, UnroutableBroadcasts

__all__ = ["InProcessBroker", "InProcessTransport", "SendHook"]

log = logging.getLogger(__name__)

SendHook = Callable[[str, int], None]
"""``on_send(endpoint, n_bytes)``: called once per message copy put on a queue."""

# The same names the AMQP transport accepts (they become queue names and routing keys there).
_ENDPOINT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MAX_EXPIRATION_S = 2**32 / 1000 - 1  # as on AMQP: a 32-bit count of milliseconds


def _check_endpoint(endpoint: str) -> None:
    if not _ENDPOINT.fullmatch(endpoint):
        raise TransportError(f"invalid endpoint name {endpoint!r}")


@dataclass(frozen=True)
class _Queued:
    delivery: Delivery
    expires_at: float | None = None  # loop time; RPC requests and broadcasts given an expiration


class _EndpointQueue:
    """A FIFO with a front door for redeliveries (``asyncio.Queue`` cannot push to the front)."""

    def __init__(self) -> None:
        self._items: deque[_Queued] = deque()
        self._nonempty = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: _Queued, *, front: bool = False) -> None:
        if front:
            self._items.appendleft(item)
        else:
            self._items.append(item)
        self._nonempty.set()

    async def get(self) -> _Queued:
        # No await between the emptiness check and clear(): competing getters cannot lose a wakeup.
        while not self._items:
            self._nonempty.clear()
            await self._nonempty.wait()
        return self._items.popleft()


class InProcessBroker:
    """The queues, broadcast bindings and reply routes shared by the transports of one process."""

    def __init__(self) -> None:
        self._queues: dict[str, _EndpointQueue] = {}
        self._broadcast: set[str] = set()
        self._reply_routes: dict[str, Callable[[str | None, bytes], None]] = {}

    def queue(self, endpoint: str) -> _EndpointQueue:
        """The endpoint's queue, created on first use (like a durable queue declared idempotently)."""
        queue = self._queues.get(endpoint)
        if queue is None:
            queue = self._queues[endpoint] = _EndpointQueue()
        return queue

    def depth(self, endpoint: str) -> int:
        """Messages waiting in ``endpoint``'s queue, not counting those being handled.

        Expired requests are dropped lazily, when they reach the head (as in a quorum queue), so
        they count until a consumer gets there.
        """
        queue = self._queues.get(endpoint)
        return 0 if queue is None else len(queue)

    def bind_broadcast(self, endpoint: str) -> None:
        """From now on ``endpoint`` receives every broadcast."""
        self.queue(endpoint)
        self._broadcast.add(endpoint)

    def broadcast_endpoints(self) -> list[str]:
        """The endpoints a broadcast reaches, sorted."""
        return sorted(self._broadcast)


class InProcessTransport(Transport):
    """A :class:`Transport` over an :class:`InProcessBroker`; one per service, like a connection."""

    def __init__(self, broker: InProcessBroker, *, on_send: SendHook | None = None) -> None:
        self._broker = broker
        self._on_send = on_send
        self._connected = False
        self._closed = False
        self._reply_address = f"reply.{uuid.uuid4().hex}"
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._dispatchers: list[asyncio.Task[None]] = []
        self._inflight: dict[asyncio.Task[None], tuple[_EndpointQueue, Delivery]] = {}
        self._unroutable = UnroutableBroadcasts(log)
        self.handler_errors = 0
        """Messages whose handler raised (each dropped after one log line)."""

    @property
    def unroutable_broadcasts(self) -> int:
        """Broadcasts that reached no endpoint (none consumed with ``broadcast=True`` yet)."""
        return self._unroutable.count

    async def connect(self) -> None:
        """Attach to the broker; idempotent while open."""
        if self._closed:
            raise TransportError("transport is closed")
        self._broker._reply_routes[self._reply_address] = self._on_reply
        self._connected = True

    async def close(self) -> None:
        """Cancel consumers, requeue interrupted messages, fail pending requests; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._broker._reply_routes.pop(self._reply_address, None)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(TransportError("transport closed while waiting for a reply"))
        interrupted = list(self._inflight.items())
        tasks = [*self._dispatchers, *self._inflight]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Reversed + front door: interrupted messages return in their original order.
        for task, (queue, delivery) in reversed(interrupted):
            if task.cancelled():
                queue.put(_Queued(dataclasses.replace(delivery, redelivered=True)), front=True)
        self._dispatchers.clear()

    async def send(self, endpoint: str, body: bytes, *, correlation_id: str | None = None) -> None:
        """Append ``body`` to ``endpoint``'s queue (created if needed)."""
        self._put(endpoint, body, correlation_id=correlation_id)

    async def broadcast(self, body: bytes, *, expiration: float | None = None) -> None:
        """Append ``body`` to the queue of every endpoint bound for broadcasts.

        Copies still queued ``expiration`` seconds from now are dropped unread.
        """
        self._check_open()
        if expiration is not None:
            if not expiration > 0 or math.isnan(expiration):
                raise ConfigurationError(
                    f"expiration must be a positive number of seconds, got {expiration!r}"
                )
            expiration = min(expiration, _MAX_EXPIRATION_S)
        endpoints = self._broker.broadcast_endpoints()
        if not endpoints:
            self._unroutable.unroutable("no endpoint bound for broadcasts")
            return
        self._unroutable.routed()
        expires_at = None if expiration is None else asyncio.get_running_loop().time() + expiration
        for endpoint in endpoints:
            self._put(endpoint, body, expires_at=expires_at)

    async def consume(
        self, endpoint: str, handler: Handler, *, broadcast: bool = False, prefetch: int = 8
    ) -> None:
        """Start a consumer task on ``endpoint``'s queue running at most ``prefetch`` handlers."""
        self._check_open()
        _check_endpoint(endpoint)
        if prefetch < 1:
            raise ConfigurationError(f"prefetch must be at least 1, got {prefetch}")
        if broadcast:
            self._broker.bind_broadcast(endpoint)
        queue = self._broker.queue(endpoint)
        task = asyncio.create_task(self._dispatch(queue, handler, prefetch), name=f"consume:{endpoint}")
        self._dispatchers.append(task)

    async def request(self, endpoint: str, body: bytes, *, timeout: float) -> bytes:
        """Send with a reply address and a fresh correlation id; wait ``timeout`` s for the reply."""
        self._check_open()
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            expires_at = asyncio.get_running_loop().time() + timeout
            self._put(
                endpoint,
                body,
                correlation_id=correlation_id,
                reply_to=self._reply_address,
                expires_at=expires_at,
            )
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise RequestTimeoutError(f"no reply from {endpoint!r} within {timeout} s") from exc
        finally:
            del self._pending[correlation_id]

    async def reply(self, request: Delivery, body: bytes) -> None:
        """Answer ``request``; a reply to a requester that has gone away is dropped, as on AMQP."""
        self._check_open()
        if request.reply_to is None:
            raise TransportError("cannot reply to a message without reply_to")
        if self._on_send is not None:
            self._on_send(request.reply_to, len(body))
        route = self._broker._reply_routes.get(request.reply_to)
        if route is None:
            log.debug("reply to %s dropped: requester is gone", request.reply_to)
            return
        route(request.correlation_id, bytes(body))

    # -- internals ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("transport is closed")
        if not self._connected:
            raise TransportError("transport is not connected")

    def _put(
        self,
        endpoint: str,
        body: bytes,
        *,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expires_at: float | None = None,
    ) -> None:
        self._check_open()
        _check_endpoint(endpoint)
        # bytes() so that a caller mutating a bytearray afterwards cannot change a queued message.
        delivery = Delivery(bytes(body), endpoint, reply_to=reply_to, correlation_id=correlation_id)
        self._broker.queue(endpoint).put(_Queued(delivery, expires_at))
        if self._on_send is not None:
            self._on_send(endpoint, len(body))

    def _on_reply(self, correlation_id: str | None, body: bytes) -> None:
        future = self._pending.get(correlation_id or "")
        if future is None or future.done():
            log.debug("late or unknown reply %s dropped", correlation_id)
            return
        future.set_result(body)

    async def _dispatch(self, queue: _EndpointQueue, handler: Handler, prefetch: int) -> None:
        # A slot is taken *before* a message is dequeued: a waiting message stays in the queue
        # (where a competing consumer can get it) instead of in this task.
        slots = asyncio.Semaphore(prefetch)
        loop = asyncio.get_running_loop()

        def _done(task: asyncio.Task[None]) -> None:
            self._inflight.pop(task, None)
            slots.release()

        while True:
            await slots.acquire()
            try:
                item = await queue.get()
            except BaseException:
                slots.release()
                raise
            if item.expires_at is not None and loop.time() >= item.expires_at:
                slots.release()
                log.debug("expired message for %s dropped", item.delivery.endpoint)
                continue
            task = asyncio.create_task(self._handle(handler, item.delivery))
            self._inflight[task] = (queue, item.delivery)
            task.add_done_callback(_done)

    async def _handle(self, handler: Handler, delivery: Delivery) -> None:
        try:
            await handler(delivery)
        except Exception:
            # Acked anyway: a poison message must not be redelivered in a loop.
            self.handler_errors += 1
            log.exception("handler for %s failed; message dropped", delivery.endpoint)
