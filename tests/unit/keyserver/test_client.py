"""KeyServiceClient against a fake key service: every reply is validated before anything in it is used."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fedcast.services.keyserver import client as client_module
from fedcast.services.keyserver.client import KeyServiceClient, error_for
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.keys import AggregatorSecretKey
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.errors import (
    ConfigurationError,
    InsecureParametersError,
    InternalError,
    InvalidGroupElementError,
    InvalidKeyError,
    InvalidParametersError,
    MalformedMessageError,
    NotAuthorizedError,
    OversizeMessageError,
    RegistryError,
    RequestTimeoutError,
)
from fedcast.shared.transport.base import KEYSERVER, Delivery
from fedcast.shared.transport.inprocess import InProcessBroker, InProcessTransport
from fedcast.shared.wire import serde
from fedcast.shared.wire.codec import Codec, WireContext
from fedcast.shared.wire.messages import (
    Body,
    ErrorReply,
    Header,
    KeysReply,
    MessageType,
    ParamsReply,
    RegistryEntry,
)
from fedcast.shared.wire.reader import Reader
from fedcast.shared.wire.serde import encode
from tests.conftest import stored_modulus
from tests.unit.keyserver.helpers import FEDERATION, aggregator_info


class FakeKeyServer:
    """Answers every request with one canned reply, signed with a key the client pins."""

    def __init__(self, transport: InProcessTransport, group: GroupParams, reply: Body) -> None:
        self.signer = SigningKeyPair.generate()
        self.transport = transport
        self.ctx = WireContext.from_group(group)
        self.reply = reply

    async def handle(self, delivery: Delivery) -> None:
        mtype = MessageType.PARAMS if isinstance(self.reply, ParamsReply) else MessageType.KEYS
        header = Header(mtype, FEDERATION, 0, 0, "keyserver")
        await self.transport.reply(delivery, encode(header, self.reply, self.signer, self.ctx))


def params_reply(group: GroupParams, **overrides: object) -> ParamsReply:
    fields: dict[str, object] = {
        "modulus": int(group.n),
        "frac_bits": 16,
        "clip": 4.0,
        "max_clients": 16,
        "min_online": 3,
        "aggregator": None,
    } | overrides
    return ParamsReply(**fields)  # type: ignore[arg-type]


class Setup:
    def __init__(self, group: GroupParams) -> None:
        self.group = group
        self.broker = InProcessBroker()
        self.server_side = InProcessTransport(self.broker)
        self.client_side = InProcessTransport(self.broker)
        self.fake = FakeKeyServer(self.server_side, group, params_reply(group))

    async def start(self) -> None:
        await self.server_side.connect()
        await self.client_side.connect()
        await self.server_side.consume(KEYSERVER, self.fake.handle)

    def client(self, *, allow_insecure: bool = True) -> KeyServiceClient:
        return KeyServiceClient(
            self.client_side,
            FEDERATION,
            "c1",
            SigningKeyPair.generate(),
            keyserver_verify_key=self.fake.signer.verify_key,
            timeout=2,
            allow_insecure_test_group=allow_insecure,
        )

    async def close(self) -> None:
        await self.server_side.close()
        await self.client_side.close()


@pytest.fixture
async def setup(small_group: GroupParams) -> AsyncIterator[Setup]:
    s = Setup(small_group)
    await s.start()
    yield s
    await s.close()


async def test_params_build_the_group_from_the_modulus_and_verify_the_aggregator(setup: Setup) -> None:
    aggregator_signer = SigningKeyPair.generate()
    secret = AggregatorSecretKey.generate(setup.group)
    info = aggregator_info(setup.group, aggregator_signer, secret=secret)
    setup.fake.reply = params_reply(setup.group, aggregator=info)
    client = setup.client()
    assert client.aggregator_key is None  # nothing before the first PARAMS
    params, aggregator, min_online = await client.get_params()
    assert params.group == setup.group and params.group.n == setup.group.n
    assert params.group.g == setup.group.g  # derived locally from N, never received
    assert (params.encoding.frac_bits, params.encoding.clip, params.max_clients) == (16, 4.0, 16)
    assert (aggregator, min_online) == (info, 3)
    key = client.aggregator_key
    assert key is not None
    assert (key.beta, key.delivery) == (
        secret.group.power(secret.alpha),
        secret.group.power(secret.delivery_secret),
    )
    assert key.beta_proof == info.beta_proof and key.delivery_proof == info.delivery_proof


async def test_params_without_an_aggregator_leave_the_key_unset(setup: Setup) -> None:
    client = setup.client()
    _, aggregator, _ = await client.get_params()
    assert aggregator is None and client.aggregator_key is None


@pytest.mark.parametrize("wrong", ["swapped", "other-federation", "other-verify-key", "beta-minus-one"])
async def test_a_wrong_aggregator_proof_is_refused(setup: Setup, wrong: str) -> None:
    signer = SigningKeyPair.generate()
    secret = AggregatorSecretKey.generate(setup.group)
    info = aggregator_info(setup.group, signer, secret=secret)
    if wrong == "swapped":
        info = dataclasses.replace(info, beta_proof=info.delivery_proof, delivery_proof=info.beta_proof)
    elif wrong == "other-federation":
        info = aggregator_info(setup.group, signer, secret=secret, federation="other-fed")
    elif wrong == "other-verify-key":
        stolen = aggregator_info(setup.group, SigningKeyPair.generate(), secret=secret)
        info = dataclasses.replace(stolen, verify_key=signer.verify_key)
    else:
        info = dataclasses.replace(info, beta=int(setup.group.n) - 1)
    setup.fake.reply = params_reply(setup.group, aggregator=info)
    client = setup.client()
    with pytest.raises(InvalidKeyError):
        await client.get_params()
    assert client.aggregator_key is None


async def test_a_registry_entry_whose_key_is_n_minus_1_is_refused(setup: Setup) -> None:
    client = setup.client()
    await client.get_params()
    n = int(setup.group.n)
    setup.fake.reply = KeysReply((RegistryEntry("c1", n - 1, b"v" * 32, False),))
    with pytest.raises(InvalidGroupElementError, match="squares to 1"):
        await client.get_keys(["c1"])
    good = int(setup.group.power(12345))
    setup.fake.reply = KeysReply((RegistryEntry("c1", good, b"v" * 32, False),))
    assert (await client.get_keys(["c1"]))["c1"].elgamal_public == good


async def test_an_unrequested_entry_is_refused(setup: Setup) -> None:
    client = setup.client()
    await client.get_params()
    setup.fake.reply = KeysReply((RegistryEntry("c7", int(setup.group.power(5)), b"v" * 32, False),))
    with pytest.raises(MalformedMessageError, match="unrequested"):
        await client.get_keys(["c1"])


async def test_a_keys_reply_longer_than_the_request_allows_is_refused_before_decoding(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = setup.client()
    await client.get_params()
    key = int(setup.group.power(5))
    setup.fake.reply = KeysReply(tuple(RegistryEntry(f"c{i}", key, b"v" * 32, False) for i in range(4)))
    real = serde._BODY_CODECS[MessageType.KEYS]
    reads: list[str] = []

    class Spy(Codec):
        needs_ctx = True

        def encode(self, value: Any, ctx: WireContext | None, what: str) -> Any:
            return real.encode(value, ctx, what)

        def read(self, reader: Reader, ctx: WireContext | None, what: str) -> Any:
            reads.append(what)
            return real.read(reader, ctx, what)

    monkeypatch.setitem(serde._BODY_CODECS, MessageType.KEYS, Spy())
    # four entries cannot be the reply to a request for one id: refused by its length alone
    with pytest.raises(OversizeMessageError, match="keys of"):
        await client.get_keys(["c1"])
    assert reads == []
    # asked for all four, the same reply is read and accepted
    assert sorted(await client.get_keys([f"c{i}" for i in range(4)])) == ["c0", "c1", "c2", "c3"]
    assert reads == ["KeysReply"]


@pytest.mark.parametrize(
    ("modulus", "error"),
    [
        (lambda g: int(g.n) + 1, InvalidParametersError),  # even
        (lambda g: 2**521 - 1, InvalidParametersError),  # a Mersenne prime: version 1's flaw
    ],
    ids=["even", "prime"],
)
async def test_an_unusable_modulus_is_refused(setup: Setup, modulus: object, error: type[Exception]) -> None:
    assert callable(modulus)
    setup.fake.reply = params_reply(setup.group, modulus=modulus(setup.group))
    with pytest.raises(error):
        await setup.client().get_params()


async def test_client_refuses_an_insecure_modulus_unless_allowed(setup: Setup) -> None:
    with pytest.raises(InsecureParametersError):
        await setup.client(allow_insecure=False).get_params()


async def test_client_refuses_a_changed_group(setup: Setup) -> None:
    client = setup.client()
    await client.get_params()
    await client.get_params()  # the same group again: fine
    other = GroupParams.from_modulus(stored_modulus(1024), allow_insecure=True)
    setup.fake.reply = params_reply(other)
    with pytest.raises(InvalidParametersError, match="changed"):
        await client.get_params()


async def test_a_refused_group_change_keeps_the_verified_aggregator_key(setup: Setup) -> None:
    signer = SigningKeyPair.generate()
    setup.fake.reply = params_reply(setup.group, aggregator=aggregator_info(setup.group, signer))
    client = setup.client()
    await client.get_params()
    key = client.aggregator_key
    assert key is not None and key.group == setup.group
    other = GroupParams.from_modulus(stored_modulus(1024), allow_insecure=True)
    setup.fake.reply = params_reply(other, aggregator=aggregator_info(other, signer))
    with pytest.raises(InvalidParametersError, match="changed"):
        await client.get_params()
    assert client.aggregator_key == key  # nothing of the refused reply is kept


async def test_client_refuses_min_online_below_two(setup: Setup) -> None:
    setup.fake.reply = params_reply(setup.group, min_online=1)
    with pytest.raises(InvalidParametersError, match="min_online"):
        await setup.client().get_params()


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
    assert type(error_for(ErrorReply("invalid_key", "x"))) is InvalidKeyError
    assert type(error_for(ErrorReply("internal_error", "boom"))) is InternalError
    unknown = error_for(ErrorReply("no_such_reason", "boom"))
    assert type(unknown) is RegistryError and "no_such_reason" in str(unknown)


async def test_timeouts_are_retried_with_backoff_then_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float) -> None:
        delays.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(client_module.asyncio, "sleep", recording_sleep)
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
    with pytest.raises(RequestTimeoutError):
        await client.get_params()
    assert delays == [0.01, 0.02]  # exponential backoff between the three attempts
    assert broker.depth(KEYSERVER) == 3  # one request per attempt (expired, nobody consumed them)
    await transport.close()
