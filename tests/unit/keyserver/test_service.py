"""KeyServer + KeyServiceClient end to end over the in-process transport."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import fedcast.shared.crypto.modulus
from fedcast.services.keyserver.client import KeyServiceClient
from fedcast.services.keyserver.service import (
    PARAMS_FILE,
    REGISTRY_FILE,
    SIGNING_KEY_FILE,
    VERIFY_KEY_FILE,
    KeyServer,
    KeyServerConfig,
)
from fedcast.services.keyserver.store import DeviceStatus
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.keys import ClientKeyPair
from fedcast.shared.crypto.proofs import DlogProof
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.errors import (
    ConfigurationError,
    EnrollmentRefusedError,
    InsecureParametersError,
    LegacyStateError,
    NotAuthorizedError,
    RegistryError,
    SignatureError,
)
from fedcast.shared.transport.base import KEYSERVER
from fedcast.shared.transport.inprocess import InProcessBroker, InProcessTransport
from fedcast.shared.wire.codec import WireContext
from fedcast.shared.wire.messages import (
    EnrollRequest,
    ErrorReply,
    Header,
    MessageType,
    ParamsReply,
    RegistryEntry,
)
from fedcast.shared.wire.serde import decode, encode
from tests.conftest import stored_modulus
from tests.unit.keyserver.helpers import (
    ADMIN_TOKEN,
    AGGREGATOR_TOKEN,
    FEDERATION,
    aggregator_info,
    write_v1_registry,
)


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
    assert client.aggregator_key is not None and int(client.aggregator_key.beta) == info.beta

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
        EnrollRequest(token, int(group.g), a.verify_key, DlogProof(int(group.g), 0)),
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


async def test_client_refuses_insecure_group_unless_allowed(h: Harness) -> None:
    client = await h.client("c1", allow_insecure_test_group=False)
    with pytest.raises(InsecureParametersError):
        await client.get_params()


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


# -- state on disk: legacy files, the modulus, and its factors ------------------------------------


async def failed_start(tmp_path: Path, **overrides: object) -> BaseException:
    """Start a key service expected to refuse its state; the exception it raised."""
    h = Harness(tmp_path)
    try:
        with pytest.raises(Exception) as info:
            await h.start(**overrides)
    finally:
        await h.close()
    return info.value


def v1_params_document() -> dict[str, Any]:
    """system-params.json as protocol version 1 wrote it (a public prime p, q | p - 1, g)."""
    p = 2**127 - 1
    return {
        "format": "fedcast.system-params",
        "version": 1,
        "group": {"p": format(p, "x"), "q": format(p // 2, "x"), "g": "3", "insecure": True},
        "frac_bits": 16,
        "clip": 4.0,
        "max_clients": 16,
    }


@pytest.mark.parametrize("where", ["document", "group"])
async def test_v1_system_params_are_refused_with_what_to_do(tmp_path: Path, where: str) -> None:
    state = tmp_path / "keyserver"
    state.mkdir(mode=0o700)
    document = v1_params_document()
    if where == "group":  # a version-2 wrapper around a version-1 group is refused too
        document["version"] = 2
    (state / PARAMS_FILE).write_text(json.dumps(document))
    before = (state / PARAMS_FILE).read_bytes()
    error = await failed_start(tmp_path)
    assert isinstance(error, LegacyStateError), error
    message = str(error)
    assert "version 1" in message or "version-1" in message
    assert "new" in message and "docs/SECURITY.md" in message  # says what to do
    assert (state / PARAMS_FILE).read_bytes() == before  # refused, never converted
    assert not (state / REGISTRY_FILE).exists()  # nothing else was started on top of it


async def test_v1_registry_with_enrolled_keys_is_refused_at_start(tmp_path: Path) -> None:
    state = tmp_path / "keyserver"
    state.mkdir(mode=0o700)
    write_v1_registry(state / REGISTRY_FILE, enrolled=True)
    error = await failed_start(tmp_path, federation="f1")
    assert isinstance(error, LegacyStateError) and "re-provision" in str(error)


async def test_v1_registry_with_provisioned_devices_only_is_migrated_at_start(tmp_path: Path) -> None:
    state = tmp_path / "keyserver"
    state.mkdir(mode=0o700)
    token = write_v1_registry(state / REGISTRY_FILE)
    h = Harness(tmp_path)
    server = await h.start(federation="f1")
    client = KeyServiceClient(
        await h.transport(),
        "f1",
        "c1",
        SigningKeyPair.generate(),
        keyserver_verify_key=server.verify_key,
        timeout=2,
        allow_insecure_test_group=True,
    )
    params, _, _ = await client.get_params()
    await client.enroll(token, ClientKeyPair.generate(params.group))  # the version-1 token still works
    assert server.store.status("c1") is DeviceStatus.ENROLLED
    await h.close()


async def test_a_supplied_modulus_is_used_and_another_one_later_is_refused(tmp_path: Path) -> None:
    n = stored_modulus(512)
    h = Harness(tmp_path)
    server = await h.start(modulus=n)
    assert server.params.group.n == n
    stored = json.loads((h.state_dir / PARAMS_FILE).read_text())
    assert int(stored["group"]["n"], 16) == n
    client = await h.client("c1")
    params, _, _ = await client.get_params()
    assert params.group.n == n
    await h.close()

    h2 = Harness(tmp_path)
    assert (await h2.start(modulus=n)).params.group.n == n  # the same N again: fine
    await h2.close()
    error = await failed_start(tmp_path, modulus=stored_modulus(1024))
    assert isinstance(error, ConfigurationError) and "modulus" in str(error)
    assert int(json.loads((h.state_dir / PARAMS_FILE).read_text())["group"]["n"], 16) == n


async def test_a_registry_bound_to_another_modulus_is_refused(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start(modulus=stored_modulus(512))
    await h.close()
    (h.state_dir / PARAMS_FILE).unlink()  # parameters replaced, registry kept: keys of another N
    error = await failed_start(tmp_path, modulus=stored_modulus(1024))
    assert isinstance(error, ConfigurationError) and "another modulus" in str(error)


def _record_safe_primes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every safe prime generate_group / insecure_test_group draws (the only way to see P and Q)."""
    primes: list[int] = []
    real = fedcast.shared.crypto.modulus._safe_prime

    def recording(*args: Any, **kwargs: Any) -> Any:
        prime = real(*args, **kwargs)
        primes.append(int(prime))
        return prime

    monkeypatch.setattr(fedcast.shared.crypto.modulus, "_safe_prime", recording)
    return primes


def _assert_factors_never_stored(state_dir: Path, n: int, primes: list[int], log_text: str) -> None:
    assert any(n % p == 0 and 1 < p < n for p in primes), "the recorded primes include N's factors"
    contents = {path: path.read_bytes() for path in state_dir.rglob("*") if path.is_file()}
    assert {PARAMS_FILE, REGISTRY_FILE, SIGNING_KEY_FILE, VERIFY_KEY_FILE} <= {p.name for p in contents}
    assert any(format(n, "x").encode() in data for data in contents.values())  # the scan can see N
    for prime in primes:
        forms = {
            format(prime, "x"),
            format(prime, "X"),
            str(prime),
            format(prime - 1, "x"),  # phi(N) would follow from P - 1 and Q - 1
            format((prime - 1) // 2, "x"),  # ... or from p' and q'
        }
        raw = prime.to_bytes((prime.bit_length() + 7) // 8, "big")
        for path, data in contents.items():
            assert raw not in data, path
            for form in forms:
                assert form.encode() not in data, path
        for form in forms:
            assert form not in log_text


async def test_the_factors_of_a_generated_modulus_never_reach_a_file_or_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    primes = _record_safe_primes(monkeypatch)
    h = Harness(tmp_path)
    server = await h.start()
    h.server.store.provision_device("c1")  # type: ignore[union-attr]
    n = int(server.params.group.n)
    await h.close()
    _assert_factors_never_stored(h.state_dir, n, primes, caplog.text)


async def test_real_2048_bit_modulus_is_generated_once_without_storing_its_factors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    primes = _record_safe_primes(monkeypatch)
    h = Harness(tmp_path)
    server = await h.start(allow_insecure_test_group=False)
    group = server.params.group
    assert group.modulus_bits == 2048 and not group.insecure
    assert sorted(p.bit_length() for p in primes[-2:]) == [1024, 1024]
    stored = json.loads((h.state_dir / PARAMS_FILE).read_text())
    assert int(stored["group"]["n"], 16) == group.n and set(stored["group"]) == {
        "format",
        "version",
        "n",
        "insecure",
    }
    client = await h.client("c1", allow_insecure_test_group=False)
    params, _, _ = await client.get_params()
    assert params == server.params
    await h.close()
    _assert_factors_never_stored(h.state_dir, int(group.n), primes, caplog.text)
    assert "modulus generation" in caplog.text  # progress was logged, without the primes
    primes.clear()
    h2 = Harness(tmp_path)
    assert (await h2.start(allow_insecure_test_group=False)).params == server.params
    await h2.close()
    assert primes == []  # loaded and validated, not generated again
