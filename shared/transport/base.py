"""The transport interface: opaque bytes between named endpoints of one federation.

Protocol code never sees a broker. Two implementations run the very same
services: :mod:`fedcast.shared.transport.inprocess` (asyncio queues; the embedded
default of ``fedcast demo`` and fast unit tests) and :mod:`fedcast.shared.transport.amqp`
(RabbitMQ through aio-pika).

Endpoints are logical names: ``"keyserver"``, ``"aggregator"`` and
``"client.<client id>"``. A client endpoint consumed with ``broadcast=True``
also receives everything sent with :meth:`Transport.broadcast`.

Delivery semantics, identical in both implementations:

* :meth:`Transport.send` returns once the message is safely queued (publisher
  confirm on AMQP); messages to one endpoint keep their order.
* A handler is called once per message, at most ``prefetch`` concurrently per
  endpoint. The message is acknowledged when the handler returns **or raises**:
  a message that makes a handler fail is dropped, never redelivered in a loop
  (the service counts and logs it). Only a crash of the process before the
  handler finished leads to a redelivery (``Delivery.redelivered``).
* :meth:`Transport.close` interrupts the handlers still running (their messages
  are redelivered to the next consumer): a clean shutdown never makes a handler
  send on a closed transport and log that as a failure.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = [
    "AGGREGATOR",
    "KEYSERVER",
    "Delivery",
    "Handler",
    "Transport",
    "UnroutableBroadcasts",
    "client_endpoint",
]

KEYSERVER = "keyserver"
AGGREGATOR = "aggregator"


def client_endpoint(client_id: str) -> str:
    """The endpoint name of one edge client."""
    return f"client.{client_id}"


@dataclass(frozen=True)
class Delivery:
    """One received message."""

    body: bytes
    endpoint: str
    reply_to: str | None = None
    correlation_id: str | None = None
    redelivered: bool = False


Handler = Callable[[Delivery], Awaitable[None]]


class UnroutableBroadcasts:
    """Counts broadcasts that reached no endpoint, logging only the first of each stretch.

    No client has bound its queue yet at start-up, and the aggregator re-announces every
    ready window while it waits: one INFO line says so, the repeats go to DEBUG (the count
    shows how many), and the next stretch after a routed broadcast is reported again.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._quiet = False
        self.count = 0

    def unroutable(self, detail: str) -> None:
        self.count += 1
        if self._quiet:
            self._log.debug("broadcast reached no endpoint (%s); %d so far", detail, self.count)
            return
        self._quiet = True
        self._log.info(
            "broadcast reached no endpoint (%s): no consumer has bound its queue yet; not an error, "
            "repeats are counted and logged at DEBUG",
            detail,
        )

    def routed(self) -> None:
        self._quiet = False


class Transport(ABC):
    """Moves bytes between endpoints; one instance (one connection) per process."""

    @abstractmethod
    async def connect(self) -> None:
        """Open the connection and declare the federation's exchanges."""

    @abstractmethod
    async def close(self) -> None:
        """Stop consumers and close the connection; safe to call more than once."""

    @abstractmethod
    async def send(self, endpoint: str, body: bytes, *, correlation_id: str | None = None) -> None:
        """Queue ``body`` for ``endpoint`` (confirmed by the broker before returning)."""

    @abstractmethod
    async def broadcast(self, body: bytes, *, expiration: float | None = None) -> None:
        """Queue ``body`` for every endpoint consumed with ``broadcast=True``.

        ``expiration`` (seconds): a copy still waiting in a queue after that long is dropped
        unread, so a consumer that comes back finds no backlog of messages that are stale by
        then (the aggregator's announcements, re-sent every ready window). A broadcast that
        reaches no endpoint (none consumed with ``broadcast=True`` yet) is not an error: it is
        counted in ``unroutable_broadcasts`` and logged once, then at DEBUG.
        """

    @abstractmethod
    async def consume(
        self, endpoint: str, handler: Handler, *, broadcast: bool = False, prefetch: int = 8
    ) -> None:
        """Declare ``endpoint``'s durable queue and run ``handler`` for each message.

        Consumers survive reconnects (they are restored with the connection).
        """

    @abstractmethod
    async def request(self, endpoint: str, body: bytes, *, timeout: float) -> bytes:
        """RPC: send with reply_to and a fresh correlation id; return the reply body.

        Raises :class:`fedcast.shared.errors.RequestTimeoutError` after ``timeout`` seconds.
        """

    @abstractmethod
    async def reply(self, request: Delivery, body: bytes) -> None:
        """Answer an RPC ``request`` (to its reply_to, with its correlation id)."""
