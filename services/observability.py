"""Operator endpoints of every fedcast process: ``/metrics``, ``/healthz``, ``/readyz``, and the Pushgateway.

:class:`MetricsServer` is a deliberately small HTTP/1.1 server on the service's own
asyncio loop (``asyncio.start_server``), not prometheus_client's WSGI app in a thread:

* ``/healthz`` must mean "the event loop is alive". Answered *by* the loop, a stuck loop
  (a CPU-bound call that should have gone to a thread) fails the liveness probe, as it
  should; a server thread would keep answering 200 while the service is wedged.
* ``/readyz`` calls the service's ``ready()`` on the loop that owns the service's state,
  so it never reads that state from another thread.
* No extra thread per process: edge devices are Raspberry-Pi class.

The exposition itself (:func:`prometheus_client.generate_latest`) walks every
collector and formats text; it runs in a worker thread so that a large registry
never stalls message handling. The registry is thread-safe (metrics take a lock
per update), so this is the one place where a thread is the right tool.

Requests are bounded: at most :data:`MAX_REQUEST_BYTES` of request line and
headers, read within :data:`READ_TIMEOUT_S`, at most :data:`MAX_CONNECTIONS` at
once; anything else gets 4xx and the connection is closed (``Connection: close``
on every response, so a client cannot pin a slot with keep-alive).

:class:`PushgatewayPusher` serves edge devices behind NAT that Prometheus cannot
scrape: it PUTs the whole registry to the Pushgateway every interval (in a worker
thread, with a timeout), logs failures at most once a minute, never raises into
the service, and deletes its group on a clean shutdown so that a decommissioned
device does not linger in the dashboards.

Environment (:meth:`ObservabilityConfig.from_env`):

===============================  ============================================================
``FEDCAST_METRICS_PORT``         HTTP port of the three endpoints (9100; ``0`` disables)
``FEDCAST_METRICS_HOST``         address to bind (``127.0.0.1``: this host only; ``0.0.0.0`` where a
                                scraper on the network must reach it, guarded: docs/METRICS.md)
``FEDCAST_PUSHGATEWAY_URL``      Pushgateway base URL, e.g. ``http://pushgateway:9091`` (unset: off)
``FEDCAST_PUSH_INTERVAL_S``      seconds between pushes (15)
===============================  ============================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.exposition import delete_from_gateway, push_to_gateway
from prometheus_client.registry import CollectorRegistry

from fedcast.services.envconfig import env_float, env_int, env_str
from fedcast.shared import errors
from fedcast.shared.errors import ConfigurationError, WireError
from fedcast.shared.metrics import (
    CHALLENGE_RESENDS,
    CHECKPOINTS_DAMAGED,
    CLIPPED_VALUES,
    DROPOUTS,
    LAST_ROUND_COMPLETED,
    MESSAGES_REJECTED,
    ROUND_RETRIES,
    ROUND_STARTED,
    ROUNDS_COMPLETED,
    WAITING_FOR_CLIENTS,
)
from fedcast.shared.protocol.outgoing import Event

__all__ = [
    "DEFAULT_METRICS_PORT",
    "EDGE_PUSH_JOB",
    "MAX_CONNECTIONS",
    "MAX_REQUEST_BYTES",
    "READ_TIMEOUT_S",
    "MetricsServer",
    "ObservabilityConfig",
    "PushgatewayPusher",
    "initialize_series",
    "record_round_progress",
]

log = logging.getLogger(__name__)

DEFAULT_METRICS_PORT: Final = 9100
EDGE_PUSH_JOB: Final = "fedcast-edge"
MAX_REQUEST_BYTES: Final = 8192
"""Request line plus headers; probes and Prometheus send a few hundred bytes."""
READ_TIMEOUT_S: Final = 5.0
"""A client that has not sent its headers by then is dropped (no slowloris)."""
MAX_CONNECTIONS: Final = 64
"""Connections served at once; more are closed with 503 without reading them."""

_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_TEXT: Final = "text/plain; charset=utf-8"
_LOG_FAILURE_EVERY_S: Final = 60.0


#: The message gate's rejection reasons (WireError and its subclasses): malformed, stale, ...
_GATE_REASONS: Final = tuple(
    sorted(
        {
            cls.reason
            for cls in (getattr(errors, name) for name in errors.__all__)
            if isinstance(cls, type) and issubclass(cls, WireError) and cls is not WireError
        }
    )
)


def initialize_series(service: str) -> None:
    """Export 0 for the series a healthy service may never move, from the start.

    A labelled series appears only once ``labels()`` was called. Until then a panel
    on it shows "No data", and worse, ``increase()`` cannot see the first event: a
    series born at 1 has no earlier sample to increase from, so the first rejected
    message of a process would never show up in "rejects by reason". The label
    values here are small closed sets (the gate's wire-level rejection reasons, the
    aggregator's three dropout phases): a handful of series per process. Call it
    before the first scrape, i.e. before starting the metrics server. Idempotent.
    """
    for reason in _GATE_REASONS:
        MESSAGES_REJECTED.labels(service, reason)
    if service == "aggregator":
        ROUND_RETRIES.labels(service)
        ROUNDS_COMPLETED.labels(service)
        CHALLENGE_RESENDS.labels(service)
        CHECKPOINTS_DAMAGED.labels(service)
        # The phases AggregatorMachine drops members in: before the challenge (silent, or a bad
        # proof of r2 when checked eagerly), at the response deadline (a bad proof of r2 found by
        # the lazy check) and after a failed decryption (a wrong share named by its proof).
        # Silence after the challenge alone drops nobody: the challenge is sent again.
        for phase in ("upload", "response", "decrypt"):
            DROPOUTS.labels(service, phase)
        # 0 until a ready window closes with too few clients. labels() creates the child at 0 and
        # never resets one that exists, so a late call cannot hide a waiting aggregator. The two
        # timestamps are left out on purpose: 0 would read as "1970", an eternity ago; they
        # appear when the first round is taken up and completed (record_round_progress).
        WAITING_FOR_CLIENTS.labels(service)
    elif service == "edge":
        CLIPPED_VALUES.labels(service)


#: Per service label: the recorder (its id) and the round its round-started time belongs to.
_PROGRESS_ROUND: dict[str, tuple[int, int]] = {}


def record_round_progress(
    service: str,
    events: Iterable[Event],
    *,
    source: object = None,
    clock: Callable[[], float] | None = None,
) -> None:
    """Set the progress gauges from the aggregator machine's events, in the order they happened.

    * ``fedcast_round_started_timestamp_seconds``: set when the first event of a round
      is recorded: the round was announced (the next round is announced in the same breath
      as the previous one completes) or a persisted attempt of it resumed. Attempts,
      retries, back-offs and restarts of the same round keep it, so its age is how long the
      round has gone without completing.
    * ``fedcast_last_round_completed_timestamp_seconds``: set on ``round_completed``.
    * ``fedcast_waiting_for_clients``: 1 on ``ready_window_extended`` (the ready window closed
      with fewer than ``min_online`` clients ready: the announcement goes out again), 0 once
      an online set is fixed (``online_set_fixed``) or a persisted attempt with its members
      resumes (``attempt_resumed``).

    ``source`` is the recording service (one aggregator per process, but tests and repeated
    demos run several in turn): a new source's first round counts as started even if its
    round id equals the last one seen. ``clock`` gives wall-clock time (``time.time``), as
    PromQL's ``time()`` compares it.
    """
    now = time.time if clock is None else clock
    previous = _PROGRESS_ROUND.get(service)
    if previous is not None and previous[0] != id(source):
        WAITING_FOR_CLIENTS.labels(service).set(0)  # a new aggregator has not waited yet
    for event in events:
        key = (id(source), event.round)
        if _PROGRESS_ROUND.get(service) != key:
            _PROGRESS_ROUND[service] = key
            ROUND_STARTED.labels(service).set(now())
        if event.kind == "round_completed":
            LAST_ROUND_COMPLETED.labels(service).set(now())
        elif event.kind == "ready_window_extended":
            WAITING_FOR_CLIENTS.labels(service).set(1)
        elif event.kind in ("online_set_fixed", "attempt_resumed"):
            WAITING_FOR_CLIENTS.labels(service).set(0)


@dataclass(frozen=True)
class ObservabilityConfig:
    """Where to serve the endpoints and whether to push; validated on construction."""

    metrics_port: int = DEFAULT_METRICS_PORT
    # Local by default: /metrics tells an edge's model quality on its own data (docs/METRICS.md).
    # Kubernetes and compose set 0.0.0.0 where a NetworkPolicy or the compose network guards it.
    metrics_host: str = "127.0.0.1"
    pushgateway_url: str | None = None
    push_interval_s: float = 15.0

    def __post_init__(self) -> None:
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigurationError(f"FEDCAST_METRICS_PORT must be in 0..65535, got {self.metrics_port}")
        if not self.metrics_host:
            raise ConfigurationError("FEDCAST_METRICS_HOST must not be empty")
        if self.pushgateway_url is not None and not self.pushgateway_url.startswith(("http://", "https://")):
            raise ConfigurationError("FEDCAST_PUSHGATEWAY_URL must start with http:// or https://")
        if not 1.0 <= self.push_interval_s <= 3600.0:
            raise ConfigurationError("FEDCAST_PUSH_INTERVAL_S must be in 1..3600")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> ObservabilityConfig:
        """Read the ``FEDCAST_METRICS_*`` and ``FEDCAST_PUSH*`` variables; ``overrides`` win."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "metrics_port": env_int(env, "FEDCAST_METRICS_PORT", DEFAULT_METRICS_PORT),
            "metrics_host": env_str(env, "FEDCAST_METRICS_HOST", "127.0.0.1"),
            "pushgateway_url": env_str(env, "FEDCAST_PUSHGATEWAY_URL") or None,
            "push_interval_s": env_float(env, "FEDCAST_PUSH_INTERVAL_S", 15.0),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _is_ready(ready: Callable[[], bool]) -> bool:
    try:
        return bool(ready())
    except Exception:  # a readiness check that fails means "not ready", never a 500 loop
        log.exception("readiness check failed")
        return False


class MetricsServer:
    """``GET``/``HEAD`` of ``/metrics``, ``/healthz`` and ``/readyz`` on the running event loop.

    ``ready`` is called on the loop for each ``/readyz``; it must be cheap and must not block.
    ``port=0`` binds an ephemeral port (tests; :attr:`port` tells which once started).
    """

    def __init__(
        self,
        ready: Callable[[], bool],
        *,
        port: int = DEFAULT_METRICS_PORT,
        host: str = "127.0.0.1",  # as ObservabilityConfig.metrics_host
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.ready = ready
        self.host = host
        self._requested_port = port
        self._registry = registry
        self._server: asyncio.Server | None = None
        self._bound_port: int | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._closed = False

    @property
    def port(self) -> int:
        """The bound port (the requested one, or the ephemeral one chosen for ``port=0``)."""
        return self._requested_port if self._bound_port is None else self._bound_port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9100`` (for logs and tests)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and start serving; idempotent. Raises ConfigurationError if the port is taken."""
        if self._closed:
            raise RuntimeError("metrics server is closed")
        if self._server is not None:
            return
        try:
            self._server = await asyncio.start_server(
                self._on_connection, self.host, self._requested_port, limit=MAX_REQUEST_BYTES
            )
        except OSError as exc:  # typically two services on one host with the default port
            raise ConfigurationError(
                f"cannot serve metrics on {self.host}:{self._requested_port}: {exc.strerror or exc}; "
                "set FEDCAST_METRICS_PORT (0 disables)"
            ) from exc
        self._bound_port = int(self._server.sockets[0].getsockname()[1])
        log.info("metrics, healthz and readyz on %s", self.url)

    async def close(self) -> None:
        """Stop listening and drop open connections; idempotent."""
        if self._closed:
            return
        self._closed = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        # Aborting the sockets ends every handler through its own error path (EOF while reading,
        # ConnectionError while writing); cancelling them instead would make asyncio's stream
        # machinery log the CancelledError as an unhandled exception.
        for writer in self._connections.values():
            writer.transport.abort()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # -- one connection --------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            if len(self._connections) > MAX_CONNECTIONS:
                await self._respond(writer, 503, b"too many connections\n", head=False)
            else:
                await self._serve_one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away or stopped reading; nothing more to answer
        except Exception:
            # A bug here must cost one response, never the server (or the service's loop).
            log.exception("metrics endpoint failed")
            with contextlib.suppress(Exception):
                await self._respond(writer, 500, b"internal error\n", head=False)
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                raw = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            await self._respond(writer, 408, b"request timeout\n", head=False)
            return
        except asyncio.LimitOverrunError:
            await self._respond(writer, 431, b"request too large\n", head=False)
            return
        request_line = raw.split(b"\r\n", 1)[0]
        parts = request_line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            await self._respond(writer, 400, b"bad request\n", head=False)
            return
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        head = method == b"HEAD"
        if method not in (b"GET", b"HEAD"):
            await self._respond(writer, 405, b"only GET and HEAD\n", head=False, extra=("Allow: GET, HEAD",))
            return
        if target == b"/metrics":
            # Collecting and formatting every series is CPU work: off the loop (see module docstring).
            body = await asyncio.to_thread(generate_latest, self._registry)
            await self._respond(writer, 200, body, head=head, content_type=CONTENT_TYPE_LATEST)
        elif target == b"/healthz":
            await self._respond(writer, 200, b"ok\n", head=head)  # answering at all proves the loop runs
        elif target == b"/readyz":
            if _is_ready(self.ready):
                await self._respond(writer, 200, b"ready\n", head=head)
            else:
                await self._respond(writer, 503, b"not ready\n", head=head)
        else:
            await self._respond(writer, 404, b"not found\n", head=head)

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        *,
        head: bool,
        content_type: str = _TEXT,
        extra: tuple[str, ...] = (),
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {_REASONS[status]}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *extra,
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
        if not head:  # HEAD: the same headers (Content-Length included), no body
            writer.write(body)
        async with asyncio.timeout(READ_TIMEOUT_S):  # a client that stops reading cannot hold us
            await writer.drain()


class PushgatewayPusher:
    """Push ``registry`` to a Pushgateway every ``interval_s`` under ``job`` and ``instance``.

    Each push is a PUT of the whole registry (it replaces the group, so series the
    process no longer has disappear too) made in a worker thread with ``timeout_s``.
    Failures never raise into the service; they are logged at most once a minute
    with the count of failures since the last log line. :meth:`close` stops the
    loop and, by default, deletes the group.
    """

    def __init__(
        self,
        url: str,
        *,
        instance: str,
        job: str = EDGE_PUSH_JOB,
        interval_s: float = 15.0,
        timeout_s: float = 5.0,
        registry: CollectorRegistry = REGISTRY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not instance:
            raise ConfigurationError("the Pushgateway grouping key needs an instance (the client id)")
        if interval_s <= 0 or timeout_s <= 0:
            raise ConfigurationError("push interval and timeout must be positive")
        self.url = url
        self.job = job
        self.instance = instance
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._registry = registry
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._last_failure_log: float | None = None
        self._failures_unlogged = 0
        self.pushes = 0
        """Successful pushes so far."""
        self.failures = 0
        """Failed pushes so far (each one logged or counted into the next log line)."""

    @property
    def grouping_key(self) -> dict[str, str]:
        """The group this process owns on the Pushgateway."""
        return {"instance": self.instance}

    async def start(self) -> None:
        """Start the push loop (first push right away); idempotent."""
        if self._closed:
            raise RuntimeError("pusher is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"pushgateway-{self.instance}")

    async def push_once(self) -> bool:
        """One push now; True on success. Never raises (except cancellation)."""
        try:
            await asyncio.to_thread(
                push_to_gateway,
                self.url,
                job=self.job,
                registry=self._registry,
                grouping_key=self.grouping_key,
                timeout=self.timeout_s,
            )
        except Exception as exc:  # urllib's errors vary (URLError, HTTPError, OSError, ...)
            self._failed("push to", exc)
            return False
        self.pushes += 1
        return True

    async def delete(self) -> bool:
        """Delete this process's group from the Pushgateway; True on success. Never raises."""
        try:
            await asyncio.to_thread(
                delete_from_gateway,
                self.url,
                job=self.job,
                grouping_key=self.grouping_key,
                timeout=self.timeout_s,
            )
        except Exception as exc:
            self._failed("delete group on", exc)
            return False
        return True

    async def close(self, *, delete: bool = True) -> None:
        """Stop pushing and (by default) delete the group; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if delete:
            await self.delete()

    async def _loop(self) -> None:
        while True:
            await self.push_once()
            await asyncio.sleep(self.interval_s)

    def _failed(self, what: str, exc: Exception) -> None:
        self.failures += 1
        now = self._clock()
        if self._last_failure_log is not None and now - self._last_failure_log < _LOG_FAILURE_EVERY_S:
            self._failures_unlogged += 1
            return
        suppressed, self._failures_unlogged = self._failures_unlogged, 0
        self._last_failure_log = now
        log.warning(
            "cannot %s the Pushgateway %s (%s: %s)%s",
            what,
            self.url,
            type(exc).__name__,
            exc,
            f"; {suppressed} more failures since the last warning" if suppressed else "",
        )
