"""One broker user per party, with the least rights, and TLS: on a private RabbitMQ node (issue 11).

The node runs the management plugin (the provisioning tool's API) and, for the TLS test,
only a TLS listener. ``fedcast broker`` provisioning (fedcast/broker_cli.py) makes the
topology and the users; each refusal below is the broker's own ACCESS_REFUSED, shown with a
device's real credentials.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import aiormq.exceptions
import pytest

from fedcast.broker_cli import provision_device, provision_services, remove_device
from fedcast.shared.errors import TransportError
from fedcast.shared.keystore import write_bytes_atomic
from fedcast.shared.tls import TlsSettings, issue, make_ca
from fedcast.shared.transport.amqp import AmqpConfig, AmqpTransport
from fedcast.shared.transport.base import Delivery
from fedcast.shared.transport.brokeradmin import BrokerAdmin

from .private_broker import PrivateBroker, rabbitmq_server, stop_processes

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(rabbitmq_server() is None, reason="rabbitmq-server is not installed: no private node"),
]


@dataclass
class Provisioned:
    broker: PrivateBroker
    admin: BrokerAdmin
    federation: str
    services: dict[str, dict[str, str]]
    devices: dict[str, dict[str, str]]

    def url(self, party: str) -> str:
        creds = self.services.get(party) or self.devices[party]
        return self.broker.url_for(creds["user"], creds["password"])


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provisioned]:
    broker = PrivateBroker(tmp_path_factory.mktemp("broker"), management=True)
    broker.start()
    try:
        admin = BrokerAdmin(broker.admin_url)
        federation = f"perm-{uuid.uuid4().hex[:8]}"
        services = provision_services(admin, federation)
        devices = {cid: provision_device(admin, federation, cid) for cid in ("line-0", "line-1")}
        yield Provisioned(broker, admin, federation, services, devices)
    finally:
        broker.stop()


def _transport(p: Provisioned, party: str, identity: str) -> AmqpTransport:
    config = AmqpConfig(p.url(party), p.federation, declare=False, identity=identity, connect_timeout=5)
    return AmqpTransport.from_config(config)


async def test_each_party_can_do_its_job_with_its_own_user(provisioned: Provisioned) -> None:
    """A device sends to the aggregator and receives the aggregator's sends and broadcasts;
    it requests from the key service and gets the answer on its reply queue. Nobody declares."""
    p = provisioned
    device = _transport(p, "line-0", "client.line-0")
    aggregator = _transport(p, "aggregator", "aggregator")
    keyserver = _transport(p, "keyserver", "keyserver")
    got: dict[str, asyncio.Queue[bytes]] = {name: asyncio.Queue() for name in ("device", "aggregator")}

    async def at_device(d: Delivery) -> None:
        await got["device"].put(d.body)

    async def at_aggregator(d: Delivery) -> None:
        await got["aggregator"].put(d.body)

    async def at_keyserver(d: Delivery) -> None:
        await keyserver.reply(d, b"params:" + d.body)

    try:
        for t in (device, aggregator, keyserver):
            await t.connect()
        await device.consume("client.line-0", at_device, broadcast=True)
        await aggregator.consume("aggregator", at_aggregator)
        await keyserver.consume("keyserver", at_keyserver)
        await device.send("aggregator", b"ready")
        assert await asyncio.wait_for(got["aggregator"].get(), 10) == b"ready"
        await aggregator.send("client.line-0", b"envelope")
        await aggregator.broadcast(b"announce")
        received = {await asyncio.wait_for(got["device"].get(), 10) for _ in range(2)}
        assert received == {b"envelope", b"announce"}
        assert await device.request("keyserver", b"get", timeout=10) == b"params:get"
        assert await aggregator.request("keyserver", b"keys", timeout=10) == b"params:keys"
    finally:
        for t in (device, aggregator, keyserver):
            await t.close()


Action = Callable[[aio_pika.abc.AbstractChannel], Awaitable[object]]


async def _as_device(p: Provisioned, action: Action) -> None:
    connection = await aio_pika.connect(p.url("line-0"), timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await action(channel)
    finally:
        await connection.close()


def _refusals(p: Provisioned) -> dict[str, Action]:
    f = p.federation

    async def read_another_devices_queue(ch: aio_pika.abc.AbstractChannel) -> None:
        queue = await ch.declare_queue(f"fedcast.{f}.client.line-1", passive=True)

        async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            return None

        await queue.consume(ignore)

    async def publish_to_another_device(ch: aio_pika.abc.AbstractChannel) -> None:
        exchange = await ch.get_exchange(f"fedcast.{f}", ensure=False)
        await exchange.publish(aio_pika.Message(b"forged"), routing_key="client.line-1")

    async def publish_to_the_broadcast(ch: aio_pika.abc.AbstractChannel) -> None:
        exchange = await ch.get_exchange(f"fedcast.{f}.broadcast", ensure=False)
        await exchange.publish(aio_pika.Message(b"forged"), routing_key="")

    async def publish_through_the_default_exchange(ch: aio_pika.abc.AbstractChannel) -> None:
        await ch.default_exchange.publish(aio_pika.Message(b"x"), routing_key=f"fedcast.{f}.client.line-1")

    async def purge_the_aggregators_queue(ch: aio_pika.abc.AbstractChannel) -> None:
        queue = await ch.declare_queue(f"fedcast.{f}.aggregator", passive=True)
        await queue.purge()

    async def delete_the_aggregators_queue(ch: aio_pika.abc.AbstractChannel) -> None:
        await ch.queue_delete(f"fedcast.{f}.aggregator")

    async def delete_an_exchange(ch: aio_pika.abc.AbstractChannel) -> None:
        await ch.exchange_delete(f"fedcast.{f}.broadcast")

    async def declare_a_queue(ch: aio_pika.abc.AbstractChannel) -> None:
        await ch.declare_queue(f"fedcast.{f}.client.evil", durable=True)

    async def bind_its_queue_to_another_key(ch: aio_pika.abc.AbstractChannel) -> None:
        queue = await ch.declare_queue(f"fedcast.{f}.client.line-0", passive=True)
        await queue.bind(f"fedcast.{f}", routing_key="client.line-1")

    return {
        fn.__name__: fn
        for fn in (
            read_another_devices_queue,
            publish_to_another_device,
            publish_to_the_broadcast,
            publish_through_the_default_exchange,
            purge_the_aggregators_queue,
            delete_the_aggregators_queue,
            delete_an_exchange,
            declare_a_queue,
            bind_its_queue_to_another_key,
        )
    }


REFUSALS = [
    "read_another_devices_queue",
    "publish_to_another_device",
    "publish_to_the_broadcast",
    "publish_through_the_default_exchange",
    "purge_the_aggregators_queue",
    "delete_the_aggregators_queue",
    "delete_an_exchange",
    "declare_a_queue",
    "bind_its_queue_to_another_key",
]


@pytest.mark.parametrize("attempt", REFUSALS)
async def test_a_devices_credentials_are_refused_everything_else(
    provisioned: Provisioned, attempt: str
) -> None:
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused, match="ACCESS_REFUSED"):
        await _as_device(provisioned, _refusals(provisioned)[attempt])


async def test_the_transport_reports_a_refused_send_as_a_transport_error(provisioned: Provisioned) -> None:
    device = _transport(provisioned, "line-0", "client.line-0")
    try:
        await device.connect()
        with pytest.raises(TransportError, match="ACCESS_REFUSED"):
            await device.send("client.line-1", b"forged")
    finally:
        await device.close()


def test_a_device_cannot_reach_the_management_api(provisioned: Provisioned) -> None:
    creds = provisioned.devices["line-0"]
    token = base64.b64encode(f"{creds['user']}:{creds['password']}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{provisioned.broker.management_port}/api/overview",
        headers={"Authorization": f"Basic {token}"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401


async def test_removing_a_device_closes_its_connection_and_locks_it_out(provisioned: Provisioned) -> None:
    p = provisioned
    extra = provision_device(p.admin, p.federation, "line-9")
    p.devices["line-9"] = extra
    connection = await aio_pika.connect(p.url("line-9"), timeout=10)
    closed = asyncio.Event()
    connection.close_callbacks.add(lambda *args: closed.set())
    assert remove_device(p.admin, p.federation, "line-9") is True
    await asyncio.wait_for(closed.wait(), 10)  # CONNECTION_FORCED: the user is deleted
    device = _transport(p, "line-9", "client.line-9")
    with pytest.raises(TransportError):
        await device.connect()
    await device.close()
    assert remove_device(p.admin, p.federation, "line-9") is False


# -- TLS ------------------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    other_ca: Path
    server: tuple[Path, Path]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = make_ca()
    server = issue(ca, "localhost", dns=["localhost"], ips=["127.0.0.1"], server=True)
    other = make_ca("another CA")
    for name, data, secret in (
        ("ca.pem", ca.cert_pem, False),
        ("server.pem", server.cert_pem, False),
        ("server-key.pem", server.key_pem, True),
        ("other-ca.pem", other.cert_pem, False),
    ):
        write_bytes_atomic(root / name, data, secret=secret)
    return Pki(root / "ca.pem", root / "other-ca.pem", (root / "server.pem", root / "server-key.pem"))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedcast.cli", *args]


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_a_round_over_tls_with_one_broker_user_per_party(tmp_path: Path, pki: Pki) -> None:
    """The broker listens on TLS only; the key service, the aggregator and three edges run as
    `fedcast` processes, each with its own broker user, declaring nothing, pinning our CA.

    Proves: rounds complete end to end with the least rights and over TLS only.
    """
    broker = PrivateBroker(tmp_path / "broker", management=True, tls=(pki.ca, *pki.server))
    broker.start()
    procs: list[subprocess.Popen[bytes]] = []
    federation = f"tls-{uuid.uuid4().hex[:8]}"
    try:
        admin = BrokerAdmin(broker.admin_url)
        services = provision_services(admin, federation)
        ids = [f"line-{i}" for i in range(3)]
        creds = {**services, **{cid: provision_device(admin, federation, cid) for cid in ids}}

        def env(party: str, **extra: str) -> dict[str, str]:
            return {
                **os.environ,
                "FEDCAST_AMQP_URL": broker.url_for(
                    creds[party]["user"], creds[party]["password"], "localhost"
                ),
                "FEDCAST_AMQP_CA_FILE": str(pki.ca),
                "FEDCAST_AMQP_DECLARE": "0",
                "FEDCAST_FEDERATION": federation,
                "FEDCAST_METRICS_PORT": "0",
                "FEDCAST_LOG_LEVEL": "INFO",
                "FEDCAST_TASK_N_ITEMS": "20",
                "FEDCAST_TASK_LATENT_DIM": "3",
                **extra,
            }

        def spawn(name: str, args: list[str], environment: dict[str, str]) -> subprocess.Popen[bytes]:
            log = (tmp_path / f"{name}.log").open("ab")
            proc = subprocess.Popen(args, env=environment, stdout=log, stderr=subprocess.STDOUT)
            procs.append(proc)
            return proc

        token = "aggregator-token-" + uuid.uuid4().hex
        ks_env = env("keyserver", FEDCAST_STATE_DIR=str(tmp_path / "ks"), FEDCAST_AGGREGATOR_TOKEN=token)
        spawn("keyserver", _cli("keyserver"), ks_env)
        _wait_for(lambda: (tmp_path / "ks" / "verify-key.json").exists(), "the key service", 90)
        verify_key = subprocess.run(
            _cli("keyserver", "verify-key"), env=ks_env, check=True, capture_output=True, text=True
        ).stdout.strip()
        for i, cid in enumerate(ids):
            enrollment = subprocess.run(
                _cli("keyserver", "add-device", cid), env=ks_env, check=True, capture_output=True, text=True
            ).stdout.strip()
            spawn(
                cid,
                _cli("edge"),
                env(
                    cid,
                    FEDCAST_CLIENT_ID=cid,
                    FEDCAST_STATE_DIR=str(tmp_path / cid),
                    FEDCAST_KEYSERVER_VERIFY_KEY=verify_key,
                    FEDCAST_ENROLLMENT_TOKEN=enrollment,
                    FEDCAST_SYNTHETIC_SHARD=str(i),
                    FEDCAST_SYNTHETIC_SHARDS="3",
                    FEDCAST_TABLE_MEMORY_MB="16",
                ),
            )
        aggregator = spawn(
            "aggregator",
            _cli("aggregator"),
            env(
                "aggregator",
                FEDCAST_STATE_DIR=str(tmp_path / "agg"),
                FEDCAST_AGGREGATOR_TOKEN=token,
                FEDCAST_KEYSERVER_VERIFY_KEY=verify_key,
                FEDCAST_EXPECTED_CLIENTS="3",
                FEDCAST_READY_WINDOW_S="3",
                FEDCAST_ROUNDS="2",
                FEDCAST_TABLE_MEMORY_MB="16",
            ),
        )
        try:
            code = aggregator.wait(timeout=180)
        except subprocess.TimeoutExpired:
            code = None
        log = (tmp_path / "aggregator.log").read_text(errors="replace")
        assert code == 0, log[-4000:]
        assert log.count("complete with 3 members") == 2, log[-4000:]
        assert "ACCESS_REFUSED" not in "".join(
            (tmp_path / f"{n}.log").read_text(errors="replace") for n in ("keyserver", *ids)
        )
    finally:
        stop_processes(procs)
        broker.stop()


async def test_a_broker_certificate_from_another_ca_is_refused(tmp_path: Path, pki: Pki) -> None:
    broker = PrivateBroker(tmp_path / "broker", tls=(pki.ca, *pki.server))
    broker.start()
    try:
        good = AmqpTransport.from_config(
            AmqpConfig(broker.url_for("guest", "guest", "localhost"), "tls-ok", tls=TlsSettings(pki.ca))
        )
        await good.connect()  # our CA: accepted (guest works on loopback)
        await good.close()
        wrong = AmqpTransport.from_config(
            AmqpConfig(
                broker.url_for("guest", "guest", "localhost"),
                "tls-ok",
                tls=TlsSettings(pki.other_ca),
                connect_timeout=5,
            )
        )
        with pytest.raises(TransportError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await wrong.connect()
        await wrong.close()
        with pytest.raises(Exception, match="amqps:// needs the broker's CA"):
            AmqpConfig(broker.url_for("guest", "guest", "localhost"), "tls-ok")
    finally:
        broker.stop()


def test_provisioning_output_is_json_with_one_user_per_party(provisioned: Provisioned) -> None:
    assert set(provisioned.services) == {"aggregator", "keyserver"}
    users = {c["user"] for c in [*provisioned.services.values(), *provisioned.devices.values()]}
    assert len(users) == len(provisioned.services) + len(provisioned.devices)  # nobody shares a login
    json.dumps(provisioned.services)


def test_revoking_at_the_key_service_deletes_the_broker_user(
    tmp_path: Path, provisioned: Provisioned
) -> None:
    p = provisioned
    env = {
        **os.environ,
        "FEDCAST_STATE_DIR": str(tmp_path / "ks"),
        "FEDCAST_FEDERATION": p.federation,
        "FEDCAST_BROKER_ADMIN_URL": p.broker.admin_url,
    }
    subprocess.run(_cli("keyserver", "add-device", "line-5"), env=env, check=True, capture_output=True)
    provision_device(p.admin, p.federation, "line-5")
    done = subprocess.run(_cli("keyserver", "revoke", "line-5"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "broker user of line-5 deleted" in done.stdout
    assert remove_device(p.admin, p.federation, "line-5") is False  # already gone


async def test_a_reply_goes_only_to_a_reply_key(provisioned: Provisioned) -> None:
    """A requester cannot make the key service publish into another party's queue by its reply_to."""
    keyserver = _transport(provisioned, "keyserver", "keyserver")
    try:
        await keyserver.connect()
        for target in ("client.line-1", "aggregator", "fedcast.x.client.line-1"):
            with pytest.raises(TransportError, match=r"not a reply\.<name> routing key"):
                await keyserver.reply(
                    Delivery(b"req", "keyserver", reply_to=target, correlation_id="c"), b"x"
                )
    finally:
        await keyserver.close()
