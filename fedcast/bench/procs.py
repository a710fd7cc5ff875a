"""Processes, a byte-counting relay and broker clean-up for benches that run real parties.

Used by ``fedcast bench e2e``: every party is its own subprocess (killed with the
bench, stopped with SIGTERM first), and all of them reach the broker through one
TCP relay in the bench process that counts the bytes in both directions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from fedcast.shared.errors import FedcastError

__all__ = [
    "Cell",
    "Child",
    "CountingRelay",
    "E2EBenchError",
    "base_env",
    "delete_topology",
    "free_port",
    "peak_rss_mb",
    "proxied",
    "run_cli",
    "tail_log",
    "watch_children",
]


class E2EBenchError(FedcastError):
    """A cell of the end-to-end bench failed (a process died, a timeout); the message says which."""

    reason = "bench_failed"


# -- the byte counter ----------------------------------------------------------------------------


class CountingRelay:
    """A TCP relay to the broker that counts bytes in both directions (all connections)."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self.published = 0  # processes -> broker
        self.delivered = 0  # broker -> processes
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def snapshot(self) -> tuple[int, int]:
        return self.published, self.delivered

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._relay(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection(self._host, self._port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pump(reader, broker_writer, up=True), self._pump(broker_reader, writer, up=False)
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        try:
            while data := await reader.read(1 << 16):
                if up:
                    self.published += len(data)
                else:
                    self.delivered += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# -- processes -------------------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM if the bench process dies (no orphans after a kill -9)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path


@dataclass
class Cell:
    """Everything one cell started, so that it can all be stopped and removed."""

    root: Path
    federation: str
    children: list[Child] = field(default_factory=list)
    files: list[IO[bytes]] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    tasks: list[asyncio.Future[Any]] = field(default_factory=list)  # cancelled after the children stop

    async def spawn(
        self, name: str, argv: Sequence[str], env: dict[str, str], *, pipe: str | None = None
    ) -> Child:
        """Start ``argv``; its output goes to ``<root>/logs/<name>.log`` except the piped stream."""
        log_path = self.root / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("wb")
        self.files.append(log)
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if pipe == "stdout" else log,
            stderr=asyncio.subprocess.PIPE if pipe == "stderr" else log,
            start_new_session=True,  # a Ctrl-C reaches the bench, which stops the children in order
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    async def stop(self) -> None:
        """SIGTERM every running child (services shut down cleanly), SIGKILL after 15 s."""
        running = [c for c in self.children if c.process.returncode is None]
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        if running:
            done, pending = await asyncio.wait(
                [asyncio.ensure_future(c.process.wait()) for c in running], timeout=15
            )
            del done
            for child in running:
                if child.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.process.kill()
            await asyncio.gather(*pending, return_exceptions=True)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for log in self.files:
            log.close()


def tail_log(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


async def watch_children(children: Sequence[Child]) -> None:
    """Raise as soon as any of ``children`` exits (they should run until stopped)."""
    waits = {asyncio.ensure_future(c.process.wait()): c for c in children}
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        child = waits[next(iter(done))]
        raise E2EBenchError(
            f"{child.name} exited early with code {child.process.returncode}; "
            f"last lines of {child.log_path}:\n{tail_log(child.log_path)}"
        )
    finally:
        for task in waits:
            task.cancel()


async def run_cli(argv: Sequence[str], env: dict[str, str]) -> str:
    """Run a short ``fedcast`` command; its stdout, or E2EBenchError with its stderr."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise E2EBenchError(f"{' '.join(argv[2:])} failed: {err.decode(errors='replace').strip()}")
    return out.decode().strip()


def base_env() -> dict[str, str]:
    """This environment without any FEDCAST_* variable (each child gets exactly its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDCAST_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def proxied(url: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def delete_topology(url: str, federation: str, endpoints: Sequence[str]) -> None:
    """Remove the federation's queues and both exchanges from the broker (best effort)."""
    import aio_pika

    try:
        connection = await aio_pika.connect(url, timeout=10)
    except Exception:
        return
    async with connection:
        for name in [f"fedcast.{federation}.{e}" for e in endpoints] + [
            f"fedcast.{federation}.broadcast",
            f"fedcast.{federation}",
        ]:
            try:
                channel = await connection.channel()
                if name.endswith(".broadcast") or name == f"fedcast.{federation}":
                    await channel.exchange_delete(name)
                else:
                    await channel.queue_delete(name)
                await channel.close()
            except Exception:  # noqa: S112 - an absent queue or exchange is fine
                continue


def peak_rss_mb(children: Sequence[Child]) -> float:
    """The largest VmHWM (peak resident set) among running ``children``, in MiB (0 if unknown)."""
    peak = 0
    for child in children:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{child.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
    return peak / 1024
