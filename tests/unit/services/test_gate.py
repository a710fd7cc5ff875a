"""The message gate under overload: header checks before the body, per-type sizes, unknown senders."""

from __future__ import annotations

from typing import Any

import pytest

from fedcast.services import runtime
from fedcast.services.runtime import (
    SENDER_LOOKUP_BUDGET,
    SENDER_LOOKUP_INTERVAL_S,
    UNKNOWN_SENDER_TTL_S,
    MessageGate,
    Outbox,
    SenderLookups,
    attempt_screen,
)
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.errors import FedcastError, StaleMessageError, UnknownSenderError
from fedcast.shared.metrics import MESSAGES_REJECTED
from fedcast.shared.protocol.outgoing import Outgoing
from fedcast.shared.transport.base import AGGREGATOR, Delivery
from fedcast.shared.transport.inprocess import InProcessBroker, InProcessTransport
from fedcast.shared.wire import serde
from fedcast.shared.wire.messages import Header, MessageType, Ready
from fedcast.shared.wire.reader import pack
from fedcast.shared.wire.serde import SizeLimits, WireContext

SERVICE = "gate-overload-test"


def _rejected(reason: str) -> float:
    return float(MESSAGES_REJECTED.labels(SERVICE, reason)._value.get())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Keys:
    """A key lookup that counts its calls (each would be a key-service request)."""

    def __init__(self, **keys: bytes) -> None:
        self.keys = dict(keys)
        self.calls: list[str] = []

    async def __call__(self, sender: str) -> bytes | None:
        self.calls.append(sender)
        return self.keys.get(sender)


class Spies:
    """Replace the gate's body decoder and signature check by recorders that fail the test if used."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.decoded = 0
        self.verified = 0
        real_decode, real_verify = serde.decode, serde.verify

        def decode(*args: Any, **kwargs: Any) -> Any:
            self.decoded += 1
            return real_decode(*args, **kwargs)

        def verify(*args: Any, **kwargs: Any) -> None:
            self.verified += 1
            real_verify(*args, **kwargs)

        monkeypatch.setattr(runtime, "decode", decode)
        monkeypatch.setattr(runtime, "verify", verify)


def _raw(
    mtype: MessageType, round_id: int, attempt: int, sender: str, body: bytes, signature: bytes
) -> bytes:
    """A message with a valid header and whatever body and signature bytes are given."""
    head = [2, mtype.value, "fed", round_id, attempt, sender]
    return b"\x98" + b"".join(pack(v) for v in head) + body + signature


def _ready(ctx: WireContext, sender: str, signer: SigningKeyPair, round_id: int = 5) -> bytes:
    out = Outgoing(AGGREGATOR, MessageType.READY, round_id, 2, Ready())
    return Outbox("t", InProcessTransport(InProcessBroker()), "fed", sender, signer, ctx).encode(out)


@pytest.fixture
def ctx(small_group: GroupParams) -> WireContext:
    return WireContext.from_group(small_group)


# -- header checks before the body ------------------------------------------------------------------


async def test_a_stale_upload_is_refused_from_its_header(
    ctx: WireContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    spies = Spies(monkeypatch)
    alice = SigningKeyPair.generate()
    keys = Keys(alice=alice.verify_key)
    current = (5, 2, MessageType.UPLOAD)
    gate = MessageGate(
        SERVICE,
        "fed",
        ctx,
        {MessageType.READY, MessageType.UPLOAD, MessageType.RESPONSE},
        keys,
        screen=attempt_screen(lambda: current),
    )
    # a 2 MB round-1 upload whose body is garbage and whose signature is wrong
    garbage = _raw(MessageType.UPLOAD, 1, 0, "alice", b"\xc1" * 2_000_000, pack(b"\x00" * 64))
    stale, bad_signature = _rejected("stale"), _rejected("bad_signature")
    assert await gate.admit(Delivery(garbage, AGGREGATOR)) is None
    assert _rejected("stale") == stale + 1
    assert _rejected("bad_signature") == bad_signature
    assert (spies.decoded, spies.verified, keys.calls) == (0, 0, [])
    # the same for another attempt of the current round, and for a type the stage does not expect
    for mtype, round_id, attempt in ((MessageType.UPLOAD, 5, 1), (MessageType.RESPONSE, 5, 2)):
        assert (
            await gate.admit(Delivery(_raw(mtype, round_id, attempt, "alice", b"", b""), AGGREGATOR)) is None
        )
    assert _rejected("stale") == stale + 3
    assert (spies.decoded, spies.verified, keys.calls) == (0, 0, [])
    # the screen is what refused them: a current READY gets through every step
    current = (5, 2, MessageType.READY)
    assert await gate.admit(Delivery(_ready(ctx, "alice", alice), AGGREGATOR)) is not None
    assert (spies.decoded, spies.verified, keys.calls) == (1, 1, ["alice"])


async def test_without_a_screen_the_stale_upload_costs_a_decode(
    ctx: WireContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control experiment for the test above: the same message, no screen.
    spies = Spies(monkeypatch)
    keys = Keys(alice=SigningKeyPair.generate().verify_key)
    gate = MessageGate(SERVICE, "fed", ctx, {MessageType.UPLOAD}, keys)
    garbage = _raw(MessageType.UPLOAD, 1, 0, "alice", b"\xc1" * 1000, pack(b"\x00" * 64))
    assert await gate.admit(Delivery(garbage, AGGREGATOR)) is None
    assert (spies.decoded, keys.calls) == (1, ["alice"])


async def test_another_federation_or_type_is_refused_before_the_body(
    ctx: WireContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    spies = Spies(monkeypatch)
    keys = Keys()
    gate = MessageGate(SERVICE, "fed", ctx, {MessageType.READY}, keys)
    other_fed = b"\x98" + b"".join(pack(v) for v in [2, "ready", "other", 5, 2, "alice"]) + b"\xc1" * 100
    other_type = _raw(MessageType.ANNOUNCE, 5, 2, "alice", b"\xc1" * 100, b"")
    malformed = _rejected("malformed")
    for data in (other_fed, other_type):
        assert await gate.admit(Delivery(data, AGGREGATOR)) is None
    assert _rejected("malformed") == malformed + 2
    assert (spies.decoded, spies.verified, keys.calls) == (0, 0, [])


def test_attempt_screen() -> None:
    screen = attempt_screen(lambda: (5, 2, MessageType.UPLOAD))
    screen(Header(MessageType.UPLOAD, "fed", 5, 2, "alice"))
    for header in (
        Header(MessageType.UPLOAD, "fed", 5, 1, "alice"),
        Header(MessageType.UPLOAD, "fed", 4, 2, "alice"),
        Header(MessageType.UPLOAD, "fed", 6, 0, "alice"),
        Header(MessageType.READY, "fed", 5, 2, "alice"),
    ):
        with pytest.raises(StaleMessageError):
            screen(header)
    idle = attempt_screen(lambda: (5, 2, None))  # a stage that takes nothing (decrypting, ...)
    with pytest.raises(StaleMessageError, match="not expected"):
        idle(Header(MessageType.UPLOAD, "fed", 5, 2, "alice"))


# -- size per type ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mtype", [MessageType.READY, MessageType.UPLOAD, MessageType.RESPONSE])
async def test_an_oversize_message_of_each_type_is_refused_before_decoding(
    ctx: WireContext, mtype: MessageType, monkeypatch: pytest.MonkeyPatch
) -> None:
    spies = Spies(monkeypatch)
    keys = Keys(alice=SigningKeyPair.generate().verify_key)
    limits = SizeLimits(ctx, n_segments=3, max_members=10)
    gate = MessageGate(
        SERVICE,
        "fed",
        ctx,
        {MessageType.READY, MessageType.UPLOAD, MessageType.RESPONSE},
        keys,
        limits=limits,
    )
    head = _raw(mtype, 5, 2, "alice", b"", b"")
    limit = limits.limit(mtype)
    oversize = _rejected("oversize")
    assert await gate.admit(Delivery(head + b"\xc1" * (limit + 1 - len(head)), AGGREGATOR)) is None
    assert _rejected("oversize") == oversize + 1
    assert (spies.decoded, spies.verified, keys.calls) == (0, 0, [])
    # one byte less is not refused for its size: it is looked up and decoded (and is garbage)
    malformed = _rejected("malformed")
    assert await gate.admit(Delivery(head + b"\xc1" * (limit - len(head)), AGGREGATOR)) is None
    assert _rejected("malformed") == malformed + 1 and _rejected("oversize") == oversize + 1
    assert (spies.decoded, keys.calls) == (1, ["alice"])


async def test_the_default_limits_bound_the_fixed_size_types(ctx: WireContext) -> None:
    # With no counts given, a READY is still bounded by its schema: a 50 kB one is refused.
    gate = MessageGate(SERVICE, "fed", ctx, {MessageType.READY}, Keys())
    oversize = _rejected("oversize")
    assert (
        await gate.admit(Delivery(_raw(MessageType.READY, 5, 2, "x", b"\x90" * 50_000, b""), AGGREGATOR))
        is None
    )
    assert _rejected("oversize") == oversize + 1


# -- unknown senders --------------------------------------------------------------------------------


async def test_a_flood_of_unknown_senders_costs_at_most_the_budget(ctx: WireContext) -> None:
    clock = Clock()
    alice = SigningKeyPair.generate()
    keys = Keys(alice=alice.verify_key)
    lookups = SenderLookups(budget=10, interval_s=1.0, clock=clock)
    gate = MessageGate(SERVICE, "fed", ctx, {MessageType.READY}, keys, lookups=lookups)
    assert await gate.admit(Delivery(_ready(ctx, "alice", alice), AGGREGATOR)) is not None  # 1 of 10
    mallory = SigningKeyPair.generate()
    flood = [_ready(ctx, f"invented-{i}", mallory) for i in range(500)]
    unknown = _rejected("unknown_sender")
    for data in flood:
        assert await gate.admit(Delivery(data, AGGREGATOR)) is None
    assert _rejected("unknown_sender") == unknown + 500  # every one refused and counted
    assert len(keys.calls) == 10  # alice, and 9 invented ids: the budget
    # a sender known to be registered is not budgeted
    assert await gate.admit(Delivery(_ready(ctx, "alice", alice), AGGREGATOR)) is not None
    assert keys.calls[-1] == "alice"
    # the budget refills evenly: half an interval, half the budget; the ids already asked
    # about stay cached
    clock.now += 0.5
    for data in flood:
        assert await gate.admit(Delivery(data, AGGREGATOR)) is None
    invented = [c for c in keys.calls if c.startswith("invented-")]
    assert len(invented) == 9 + 5 and len(set(invented)) == len(invented)
    clock.now += 100.0  # never more than the whole budget at once
    for data in flood:
        assert await gate.admit(Delivery(data, AGGREGATOR)) is None
    assert len([c for c in keys.calls if c.startswith("invented-")]) == 9 + 5 + 10


async def test_the_negative_cache_expires_so_a_late_enrollment_is_found() -> None:
    clock = Clock()
    keys = Keys()
    lookups = SenderLookups(ttl_s=30.0, budget=1000, clock=clock)
    with pytest.raises(UnknownSenderError):
        await lookups.key_of("device-7", keys)
    keys.keys["device-7"] = b"k" * 32  # the device enrolls
    clock.now += 29.9
    with pytest.raises(UnknownSenderError, match="cached"):
        await lookups.key_of("device-7", keys)
    assert keys.calls == ["device-7"]
    clock.now += 0.1
    assert await lookups.key_of("device-7", keys) == b"k" * 32
    assert keys.calls == ["device-7"] * 2


async def test_a_revoked_sender_is_no_longer_known() -> None:
    clock = Clock()
    keys = Keys(dev=b"k" * 32)
    lookups = SenderLookups(ttl_s=30.0, budget=1, clock=clock)
    assert await lookups.key_of("dev", keys) == b"k" * 32  # spends the budget of this interval
    assert await lookups.key_of("dev", keys) == b"k" * 32  # known: not budgeted
    del keys.keys["dev"]  # revoked
    with pytest.raises(UnknownSenderError):
        await lookups.key_of("dev", keys)
    with pytest.raises(UnknownSenderError, match="cached"):
        await lookups.key_of("dev", keys)
    assert keys.calls == ["dev"] * 3


async def test_failed_lookups_are_not_cached_and_caches_are_bounded() -> None:
    clock = Clock()
    lookups = SenderLookups(budget=1000, max_entries=3, clock=clock)
    calls: list[str] = []

    async def broken(sender: str) -> bytes | None:
        calls.append(sender)
        raise FedcastError("key service unreachable")

    for _ in range(2):
        with pytest.raises(FedcastError, match="unreachable"):
            await lookups.key_of("dev", broken)
    assert calls == ["dev", "dev"]
    keys = Keys()
    for i in range(5):
        with pytest.raises(UnknownSenderError):
            await lookups.key_of(f"x{i}", keys)
    assert len(lookups._unknown) == 3 and list(lookups._unknown) == ["x2", "x3", "x4"]
    with pytest.raises(UnknownSenderError):
        await lookups.key_of("x0", keys)  # evicted: asked again
    assert keys.calls.count("x0") == 2


def test_the_defaults_are_named_and_sane() -> None:
    assert UNKNOWN_SENDER_TTL_S == 30.0
    assert SENDER_LOOKUP_BUDGET / SENDER_LOOKUP_INTERVAL_S == 100.0  # per second, sustained
    assert SENDER_LOOKUP_BUDGET >= 1000  # a full default online set of READYs at once
    with pytest.raises(FedcastError):
        SenderLookups(interval_s=0)
    gate = MessageGate(SERVICE, "fed", WireContext(64, 128), {MessageType.READY}, Keys())
    assert isinstance(gate.lookups, SenderLookups)
    assert gate.lookups is not MessageGate(SERVICE, "fed", WireContext(64, 128), set(), Keys()).lookups
