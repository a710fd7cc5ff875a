"""KeyServer + KeyServiceClient end to end over the in-process transport."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.keyserver.client import KeyServiceClient, error_for
from services.keyserver.service import (
    PARAMS_FILE,
    SIGNING_KEY_FILE,
    VERIFY_KEY_FILE,
    KeyServer,
    KeyServerConfig,
)
from services.keyserver.store import DeviceStatus
from shared.crypto.group import GroupParams, insecure_test_group
from shared.crypto.keys import ClientKeyPair
from shared.crypto.signing import SigningKeyPair
from shared.errors import (
    ConfigurationError,
    EnrollmentRefusedError,
    InsecureParametersError,
    InternalError,
    InvalidGroupElementError,
    InvalidParametersError,
    NotAuthorizedError,
    RegistryError,
    RequestTimeoutError,
    SignatureError,
)
from shared.transport.base import KEYSERVER, Delivery
from shared.transport.inprocess import InProcessBroker, InProcessTransport
from shared.wire.codec import WireContext
from shared.wire.messages import (
    EnrollRequest,
    ErrorReply,
    Header,
    KeysReply,
    MessageType,
    ParamsReply,
    RegistryEntry,
)
from shared.wire.serde import decode, encode
from tests.unit.keyserver.helpers import ADMIN_TOKEN, AGGREGATOR_TOKEN, FEDERATION, aggregator_info


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for ``condition``: requests are handled in worker threads, so completion order varies."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def rejected(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "fedcast_messages_rejected_total", {"service": "keyserver", "reason": reason}
    )
    return value or 0.0


def config(state_dir: Path, **overrides: object) -> KeyServerConfig:
    settings: dict[str, object] = {
        "federation": FEDERATION,
        "max_clients": 16,
        "min_online": 2,
        "admin_token": ADMIN_TOKEN,
        "aggregator_token": AGGREGATOR_TOKEN,
        "allow_insecure_test_group": True,
    } | overrides
    return KeyServerConfig(state_dir, **settings)  # type: ignore[arg-type]


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.broker = InProcessBroker()
        self.state_dir = tmp_path / "keyserver"
        self.transports: list[InProcessTransport] = []
        self.server: KeyServer | None = None

    async def transport(self) -> InProcessTransport:
        transport = InProcessTransport(self.broker)
        await transport.connect()
        self.transports.append(transport)
        return transport

    async def start(self, **overrides: object) -> KeyServer:
        self.server = KeyServer(config(self.state_dir, **overrides), await self.transport())
        await self.server.start()
        return self.server

    async def client(
        self, sender: str, signer: SigningKeyPair | None = None, **kw: object
    ) -> KeyServiceClient:
        assert self.server is not None
        settings: dict[str, object] = {
            "keyserver_verify_key": self.server.verify_key,
            "timeout": 2.0,
            "allow_insecure_test_group": True,
        } | kw
        return KeyServiceClient(
            await self.transport(),
            FEDERATION,
            sender,
            signer or SigningKeyPair.generate(),
            **settings,  # type: ignore[arg-type]
        )

    async def close(self) -> None:
        if self.server is not None:
            await self.server.stop()
        for transport in self.transports:
            await transport.close()


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    await harness.start()
    yield harness
    await harness.close()


async def test_full_flow(h: Harness, small_group: GroupParams) -> None:
    assert h.server is not None
    token = h.server.store.provision_device("c1")
    client = await h.client("c1")
    params, aggregator, min_online = await client.get_params()
    assert params == h.server.params and aggregator is None and min_online == 2
    keys = ClientKeyPair.generate(params.group)
    await client.enroll(token, keys)
    await client.enroll(token, keys)  # idempotent

    agg_signer = SigningKeyPair.generate()
    agg = await h.client("aggregator", agg_signer)
    info = aggregator_info(params.group, agg_signer)
    await agg.register_aggregator(AGGREGATOR_TOKEN, info)
    _, aggregator, _ = await client.get_params()
    assert aggregator == info

    entries = await agg.get_keys(["c1", "c2", "c1"])
    assert entries == {"c1": RegistryEntry("c1", int(keys.public), client._signer.verify_key, False)}

    ops = await h.client("ops")
    with pytest.raises(NotAuthorizedError):
        await ops.revoke(AGGREGATOR_TOKEN, "c1")
    with pytest.raises(RegistryError):
        await ops.revoke(ADMIN_TOKEN, "nobody")
    await ops.revoke(ADMIN_TOKEN, "c1")
    assert (await agg.get_keys(["c1"]))["c1"].revoked
    assert h.server.store.status("c1") is DeviceStatus.REVOKED
    with pytest.raises(EnrollmentRefusedError, match="revoked"):
        await client.enroll(token, keys)


async def test_concurrent_enrollments(h: Harness) -> None:
    assert h.server is not None
    ids = [f"c{i}" for i in range(24)]
    tokens = {cid: h.server.store.provision_device(cid) for cid in ids}
    clients = {cid: await h.client(cid) for cid in ids}
    group = h.server.params.group
    keypairs = {cid: ClientKeyPair.generate(group) for cid in ids}
    publics = {cid: int(kp.public) for cid, kp in keypairs.items()}
    await asyncio.gather(*(clients[c].enroll(tokens[c], keypairs[c]) for c in ids))
    entries = await clients["c0"].get_keys(ids)
    assert {c: e.elgamal_public for c, e in entries.items()} == publics


async def test_typed_refusals_reach_the_client(h: Harness) -> None:
    assert h.server is not None
    token = h.server.store.provision_device("c1")
    client = await h.client("c1")
    before = rejected("enrollment_refused")
    with pytest.raises(EnrollmentRefusedError):
        await client.enroll("wrong-token-0123456789", ClientKeyPair.from_secret(h.server.params.group, 1))
    assert rejected("enrollment_refused") == before + 1
    await client.enroll(token, ClientKeyPair.from_secret(h.server.params.group, 1))
    other = await h.client("c1")  # same id, other keys
    with pytest.raises(EnrollmentRefusedError, match="other keys"):
        await other.enroll(token, ClientKeyPair.from_secret(h.server.params.group, 1))
    agg = await h.client("aggregator")
    info = aggregator_info(h.server.params.group, SigningKeyPair.generate())
    with pytest.raises(ConfigurationError):  # must be signed by the key it registers
        await agg.register_aggregator(AGGREGATOR_TOKEN, info)


async def test_garbage_and_forged_enroll_are_counted_and_service_keeps_serving(h: Harness) -> None:
    assert h.server is not None
    token = h.server.store.provision_device("c1")
    group = h.server.params.group
    ctx = WireContext.from_group(group)
    raw = await h.transport()
    malformed, bad_sig = rejected("malformed"), rejected("bad_signature")

    await raw.send(KEYSERVER, b"\xc1 not msgpack")  # no reply_to: nobody to answer
    reply = decode(await raw.request(KEYSERVER, b"\x98garbage", timeout=2), None)
    assert isinstance(reply.body, ErrorReply) and reply.body.reason == "malformed"

    # An ENROLL carrying key A but signed by B: no proof of possession.
    a, b = SigningKeyPair.generate(), SigningKeyPair.generate()
    forged = encode(
        Header(MessageType.ENROLL, FEDERATION, 0, 0, "c1"),
        EnrollRequest(token, int(group.g), a.verify_key, int(group.g), 0),
        b,
        ctx,
    )
    reply = decode(await raw.request(KEYSERVER, forged, timeout=2), ctx)
    assert isinstance(reply.body, ErrorReply) and reply.body.reason == "bad_signature"

    client = await h.client("c1", a)
    await client.get_params()  # still serving
    await client.enroll(token, ClientKeyPair.from_secret(group, 1))  # the genuine request goes through
    await eventually(lambda: rejected("malformed") == malformed + 2)
    assert rejected("bad_signature") == bad_sig + 1
    assert h.server.store.status("c1") is DeviceStatus.ENROLLED


async def test_rejections_log_one_warning_per_reason(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    raw = await h.transport()
    before = rejected("malformed")
    for _ in range(5):
        await raw.send(KEYSERVER, b"\xc1")
    await eventually(lambda: rejected("malformed") == before + 5)
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "[malformed]" in r.getMessage()]
    assert len(warnings) == 1


async def test_client_rejects_replies_not_signed_by_the_pinned_key(h: Harness) -> None:
    client = await h.client("c1", keyserver_verify_key=SigningKeyPair.generate().verify_key)
    with pytest.raises(SignatureError):
        await client.get_params()


async def test_trust_on_first_use(h: Harness) -> None:
    assert h.server is not None
    client = await h.client("c1", keyserver_verify_key=None)
    if "verify_key" not in ParamsReply.__dataclass_fields__:
        # Protocol v1's PARAMS does not advertise the key: TOFU is refused, a pin is required.
        with pytest.raises(SignatureError, match="does not advertise"):
            await client.get_params()
        assert client.keyserver_verify_key is None
    else:
        await client.get_params()
        assert client.keyserver_verify_key == h.server.verify_key


async def test_timeouts_are_retried_then_raised(tmp_path: Path) -> None:
    broker = InProcessBroker()
    transport = InProcessTransport(broker)
    await transport.connect()
    client = KeyServiceClient(
        transport,
        FEDERATION,
        "c1",
        SigningKeyPair.generate(),
        keyserver_verify_key=b"k" * 32,
        timeout=0.05,
        retries=2,
        backoff=0.01,
    )
    start = time.monotonic()
    with pytest.raises(RequestTimeoutError):
        await client.get_params()
    assert time.monotonic() - start >= 0.15
    assert broker.depth(KEYSERVER) == 3  # one request per attempt (expired, nobody consumed them)
    await transport.close()


class FakeKeyServer:
    """Answers every request with one canned reply, signed with a key the client pins."""

    def __init__(self, transport: InProcessTransport, group: GroupParams, reply: object) -> None:
        self.signer = SigningKeyPair.generate()
        self.transport = transport
        self.ctx = WireContext.from_group(group)
        self.reply = reply

    async def handle(self, delivery: Delivery) -> None:
        mtype = MessageType.PARAMS if isinstance(self.reply, ParamsReply) else MessageType.KEYS
        header = Header(mtype, FEDERATION, 0, 0, "keyserver")
        await self.transport.reply(delivery, encode(header, self.reply, self.signer, self.ctx))  # type: ignore[arg-type]


def params_reply(group: GroupParams, **overrides: object) -> ParamsReply:
    fields: dict[str, object] = {
        "p": int(group.p),
        "q": int(group.q),
        "g": int(group.g),
        "frac_bits": 16,
        "clip": 4.0,
        "max_clients": 16,
        "min_online": 2,
        "aggregator": None,
    } | overrides
    return ParamsReply(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("what", ["beta", "entry"])
async def test_client_checks_every_element_it_receives(small_group: GroupParams, what: str) -> None:
    broker = InProcessBroker()
    server_side, client_side = InProcessTransport(broker), InProcessTransport(broker)
    await server_side.connect()
    await client_side.connect()
    bad = int(small_group.p) - 1  # order 2: not in the subgroup
    if what == "beta":
        info = aggregator_info(small_group, SigningKeyPair.generate())
        reply: object = params_reply(
            small_group, aggregator=type(info)((bad,), info.delivery, info.verify_key)
        )
    else:
        reply = params_reply(small_group)
    fake = FakeKeyServer(server_side, small_group, reply)
    await server_side.consume(KEYSERVER, fake.handle)
    client = KeyServiceClient(
        client_side,
        FEDERATION,
        "c1",
        SigningKeyPair.generate(),
        keyserver_verify_key=fake.signer.verify_key,
        timeout=2,
        allow_insecure_test_group=True,
    )
    if what == "beta":
        with pytest.raises(InvalidGroupElementError):
            await client.get_params()
    else:
        await client.get_params()
        fake.reply = KeysReply((RegistryEntry("c1", bad, b"v" * 32, False),))
        with pytest.raises(InvalidGroupElementError):
            await client.get_keys(["c1"])
    await server_side.close()
    await client_side.close()


async def test_client_refuses_insecure_group_unless_allowed(h: Harness) -> None:
    client = await h.client("c1", allow_insecure_test_group=False)
    with pytest.raises(InsecureParametersError):
        await client.get_params()


async def test_client_refuses_a_changed_group(small_group: GroupParams) -> None:
    broker = InProcessBroker()
    server_side, client_side = InProcessTransport(broker), InProcessTransport(broker)
    await server_side.connect()
    await client_side.connect()
    fake = FakeKeyServer(server_side, small_group, params_reply(small_group))
    await server_side.consume(KEYSERVER, fake.handle)
    client = KeyServiceClient(
        client_side,
        FEDERATION,
        "c1",
        SigningKeyPair.generate(),
        keyserver_verify_key=fake.signer.verify_key,
        timeout=2,
        allow_insecure_test_group=True,
    )
    await client.get_params()
    await client.get_params()  # the same group again: fine
    fake.reply = params_reply(insecure_test_group(seed=1))
    with pytest.raises(InvalidParametersError, match="changed"):
        await client.get_params()
    await server_side.close()
    await client_side.close()


def test_client_checks_the_pinned_key_length() -> None:
    with pytest.raises(ConfigurationError):
        KeyServiceClient(
            InProcessTransport(InProcessBroker()),
            FEDERATION,
            "c1",
            SigningKeyPair.generate(),
            keyserver_verify_key=b"x",
        )


def test_error_for_maps_reason_codes_back() -> None:
    assert type(error_for(ErrorReply("not_authorized", "x"))) is NotAuthorizedError
    assert type(error_for(ErrorReply("invalid_group_element", "x"))) is InvalidGroupElementError
    assert type(error_for(ErrorReply("internal_error", "boom"))) is InternalError
    unknown = error_for(ErrorReply("no_such_reason", "boom"))
    assert type(unknown) is RegistryError and "no_such_reason" in str(unknown)


async def test_state_persists_across_restarts(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    server = await h.start()
    token = server.store.provision_device("c1")
    client = await h.client("c1")
    await client.get_params()
    await client.enroll(token, ClientKeyPair.from_secret(server.params.group, 1))
    verify_key, params = server.verify_key, server.params
    await h.close()

    key_file = h.state_dir / SIGNING_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(h.state_dir.stat().st_mode) == 0o700
    public = json.loads((h.state_dir / VERIFY_KEY_FILE).read_text())
    assert bytes.fromhex(public["verify_key"]) == verify_key
    assert "secret" not in public

    h2 = Harness(tmp_path)
    server = await h2.start()
    assert server.verify_key == verify_key and server.params == params
    client = await h2.client("c1", client._signer)
    await client.enroll(
        token, ClientKeyPair.from_secret(server.params.group, 1)
    )  # still enrolled: idempotent
    await h2.close()

    with pytest.raises(ConfigurationError, match="max_clients: stored 16, configured 32"):
        await Harness(tmp_path).start(max_clients=32)
    with pytest.raises(ConfigurationError, match="belongs to federation"):
        await Harness(tmp_path).start(federation="another")


async def test_device_tokens_imported_on_start(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"c1": "token-of-c1-0123456789"}))
    h = Harness(tmp_path)
    server = await h.start(device_tokens=tokens)
    client = await h.client("c1")
    await client.enroll("token-of-c1-0123456789", ClientKeyPair.from_secret(server.params.group, 1))
    assert server.store.status("c1") is DeviceStatus.ENROLLED
    await h.close()


async def test_run_serves_until_stopped(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    server = KeyServer(config(h.state_dir), await h.transport())
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop))
    for _ in range(100):
        if (h.state_dir / VERIFY_KEY_FILE).exists() and server._handler is not None:
            break
        await asyncio.sleep(0.01)
    client = KeyServiceClient(
        await h.transport(),
        FEDERATION,
        "c1",
        SigningKeyPair.generate(),
        keyserver_verify_key=server.verify_key,
        timeout=2,
        allow_insecure_test_group=True,
    )
    await client.get_params()
    stop.set()
    await asyncio.wait_for(task, 5)
    with pytest.raises(ConfigurationError):
        server.store  # closed on stop
    await h.close()


async def test_real_2048_bit_group_is_generated_once_and_validated_on_load(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    start = time.monotonic()
    server = await h.start(allow_insecure_test_group=False)
    generated = time.monotonic() - start
    group = server.params.group
    assert group.p.bit_length() == 2048 and group.q.bit_length() == 256 and not group.insecure
    stored = json.loads((h.state_dir / PARAMS_FILE).read_text())
    assert int(stored["group"]["p"], 16) == group.p
    client = await h.client("c1", allow_insecure_test_group=False)
    params, _, _ = await client.get_params()
    assert params == server.params
    await h.close()
    h2 = Harness(tmp_path)
    assert (await h2.start(allow_insecure_test_group=False)).params == server.params
    await h2.close()
    assert generated < 60
