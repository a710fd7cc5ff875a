"""KeyServiceHandler: every request type, and every refusal with its reason code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.keyserver.handlers import MAX_KEYS_PER_REQUEST, KeyServiceHandler, error_reply, reply_type
from services.keyserver.store import RegistryStore
from shared.crypto.group import GroupParams
from shared.crypto.keys import ClientKeyPair
from shared.crypto.pok import enrollment_context, prove_possession
from shared.crypto.signing import SigningKeyPair
from shared.errors import InvalidGroupElementError
from shared.params import SystemParams
from shared.wire.messages import (
    Ack,
    AggregatorInfo,
    EnrollRequest,
    ErrorReply,
    KeysReply,
    KeysRequest,
    MessageType,
    ParamsReply,
    ParamsRequest,
    RegisterAggregator,
    RevokeRequest,
    RoundResult,
    RoundStatus,
)
from tests.unit.keyserver.helpers import ADMIN_TOKEN, AGGREGATOR_TOKEN, FEDERATION, aggregator_info, signed


class Env:
    def __init__(self, group: GroupParams, store: RegistryStore, **tokens: str) -> None:
        self.group = group
        self.store = store
        self.params = SystemParams(group, max_clients=16)
        settings = {"admin_token": ADMIN_TOKEN, "aggregator_token": AGGREGATOR_TOKEN} | tokens
        self.handler = KeyServiceHandler(store, self.params, federation=FEDERATION, min_online=3, **settings)

    def enroll(
        self,
        client_id: str,
        token: str,
        signer: SigningKeyPair | None = None,
        *,
        keypair: ClientKeyPair | None = None,
        pk: int | None = None,
        vk: bytes | None = None,
        proof: tuple[int, int] | None = None,
    ) -> object:
        """Send ENROLL signed by ``signer``, carrying ``vk`` (default: the signer's own key).

        The proof of possession is computed for ``keypair`` (a fresh one by default) unless
        ``proof`` is given; ``pk`` overrides the public key sent (for refusal tests).
        """
        signer = signer or SigningKeyPair.generate()
        keypair = keypair or ClientKeyPair.generate(self.group)
        verify_key = signer.verify_key if vk is None else vk
        if proof is None:
            proof = prove_possession(keypair, enrollment_context(FEDERATION, client_id, verify_key))
        public = int(keypair.public) if pk is None else pk
        body = EnrollRequest(token, public, verify_key, *proof)
        return self.handler.handle(signed(MessageType.ENROLL, body, signer, self.group, sender=client_id))


@pytest.fixture
def env(small_group: GroupParams, tmp_path: Path) -> Iterator[Env]:
    with RegistryStore(tmp_path / "registry.sqlite3") as store:
        yield Env(small_group, store)


def refused(reply: object, reason: str) -> None:
    assert isinstance(reply, ErrorReply), reply
    assert reply.reason == reason, reply


def test_get_params_before_and_after_the_aggregator_registers(env: Env) -> None:
    request = signed(MessageType.GET_PARAMS, ParamsRequest(), SigningKeyPair.generate(), env.group)
    reply = env.handler.handle(request)
    assert isinstance(reply, ParamsReply)
    assert (reply.p, reply.q, reply.g) == (env.group.p, env.group.q, env.group.g)
    assert (reply.frac_bits, reply.clip) == (env.params.encoding.frac_bits, env.params.encoding.clip)
    assert (reply.max_clients, reply.min_online, reply.aggregator) == (16, 3, None)
    signer = SigningKeyPair.generate()
    info = aggregator_info(env.group, signer)
    body = RegisterAggregator(AGGREGATOR_TOKEN, info)
    assert env.handler.handle(signed(MessageType.REGISTER_AGGREGATOR, body, signer, env.group)) == Ack()
    reply = env.handler.handle(request)
    assert isinstance(reply, ParamsReply) and reply.aggregator == info


def test_enroll_and_get_keys(env: Env) -> None:
    token = env.store.provision_device("c1")
    signer = SigningKeyPair.generate()
    keypair = ClientKeyPair.generate(env.group)
    pk = int(keypair.public)
    assert env.enroll("c1", token, signer, keypair=keypair) == Ack()
    assert env.enroll("c1", token, signer, keypair=keypair) == Ack()  # idempotent
    request = KeysRequest(("c1", "unknown"))
    reply = env.handler.handle(signed(MessageType.GET_KEYS, request, signer, env.group))
    assert isinstance(reply, KeysReply)
    [entry] = reply.entries
    assert (entry.client_id, entry.elgamal_public, entry.verify_key, entry.revoked) == (
        "c1",
        pk,
        signer.verify_key,
        False,
    )


def test_enroll_refusals(env: Env) -> None:
    token = env.store.provision_device("c1")
    refused(env.enroll("c1", "wrong-token-0123456789"), "enrollment_refused")
    refused(env.enroll("c9", token), "enrollment_refused")  # token of another device
    # Signed by a key other than the one it registers: no proof of possession.
    other = SigningKeyPair.generate()
    refused(env.enroll("c1", token, vk=other.verify_key), "bad_signature")
    refused(env.enroll("c1", token, pk=int(env.group.p) - 1), "invalid_group_element")  # order 2
    # A rogue key g^x / pk_A (no knowledge of its log) fails the proof of possession.
    victim = ClientKeyPair.generate(env.group)
    rogue = int(env.group.power(12345) * pow(int(victim.public), -1, int(env.group.p)) % env.group.p)
    refused(env.enroll("c1", token, pk=rogue), "invalid_key")
    # A valid proof bound to another client id does not transfer.
    signer = SigningKeyPair.generate()
    keypair = ClientKeyPair.generate(env.group)
    foreign = prove_possession(keypair, enrollment_context(FEDERATION, "c9", signer.verify_key))
    refused(env.enroll("c1", token, signer, keypair=keypair, proof=foreign), "invalid_key")
    assert env.store.entries(["c1"]) == []  # nothing refused left a trace
    assert env.enroll("c1", token) == Ack()
    refused(env.enroll("c1", token), "enrollment_refused")  # already enrolled with other keys
    env.store.revoke("c1")
    refused(env.enroll("c1", token), "enrollment_refused")


def test_register_aggregator_refusals(env: Env) -> None:
    signer = SigningKeyPair.generate()
    info = aggregator_info(env.group, signer)

    def register(token: str, info: AggregatorInfo, by: SigningKeyPair = signer) -> object:
        body = RegisterAggregator(token, info)
        return env.handler.handle(signed(MessageType.REGISTER_AGGREGATOR, body, by, env.group))

    refused(register("wrong-token-0123456789", info), "not_authorized")
    refused(register(ADMIN_TOKEN, info), "not_authorized")  # the admin token is not the aggregator's
    refused(register(AGGREGATOR_TOKEN, info, by=SigningKeyPair.generate()), "bad_signature")
    bad_beta = AggregatorInfo((*info.betas[:-1], int(env.group.p) - 1), info.delivery, info.verify_key)
    refused(register(AGGREGATOR_TOKEN, bad_beta), "invalid_group_element")
    bad_delivery = AggregatorInfo(info.betas, int(env.group.p) - 1, info.verify_key)
    refused(register(AGGREGATOR_TOKEN, bad_delivery), "invalid_group_element")
    twice = AggregatorInfo((info.betas[0], info.betas[0]), info.delivery, info.verify_key)
    refused(register(AGGREGATOR_TOKEN, twice), "invalid_key")  # equal betas leak m_j - m_k
    assert env.store.aggregator() is None
    assert register(AGGREGATOR_TOKEN, info) == Ack()
    assert register(AGGREGATOR_TOKEN, info) == Ack()
    assert env.store.aggregator() == info


def test_empty_configured_token_disables_the_operation(small_group: GroupParams, tmp_path: Path) -> None:
    with RegistryStore(tmp_path / "r.sqlite3") as store:
        env = Env(small_group, store, admin_token="", aggregator_token="")
        env.store.provision_device("c1")
        signer = SigningKeyPair.generate()
        body = RevokeRequest("x" * 20, "c1")
        refused(env.handler.handle(signed(MessageType.REVOKE, body, signer, env.group)), "not_authorized")
        register = RegisterAggregator("x" * 20, aggregator_info(env.group, signer))
        reply = env.handler.handle(signed(MessageType.REGISTER_AGGREGATOR, register, signer, env.group))
        refused(reply, "not_authorized")


def test_revoke(env: Env) -> None:
    token = env.store.provision_device("c1")
    env.enroll("c1", token)
    operator = SigningKeyPair.generate()

    def revoke(token: str, client_id: str) -> object:
        body = RevokeRequest(token, client_id)
        return env.handler.handle(signed(MessageType.REVOKE, body, operator, env.group, sender="ops"))

    refused(revoke(AGGREGATOR_TOKEN, "c1"), "not_authorized")
    refused(revoke(ADMIN_TOKEN, "nobody"), "registry_error")
    assert revoke(ADMIN_TOKEN, "c1") == Ack()
    assert revoke(ADMIN_TOKEN, "c1") == Ack()  # idempotent
    assert env.store.entries(["c1"])[0].revoked


def test_header_and_type_refusals(env: Env) -> None:
    signer = SigningKeyPair.generate()
    other = signed(MessageType.GET_PARAMS, ParamsRequest(), signer, env.group, federation="other")
    refused(env.handler.handle(other), "malformed")
    in_round = signed(MessageType.GET_PARAMS, ParamsRequest(), signer, env.group, round=3)
    refused(env.handler.handle(in_round), "malformed")
    not_a_request = signed(MessageType.ACK, Ack(), signer, env.group)
    refused(env.handler.handle(not_a_request), "malformed")
    result = signed(MessageType.RESULT, RoundResult(RoundStatus.FAILED, (), "x"), signer, env.group)
    refused(env.handler.handle(result), "malformed")
    too_many = KeysRequest(tuple(f"c{i}" for i in range(MAX_KEYS_PER_REQUEST + 1)))
    refused(env.handler.handle(signed(MessageType.GET_KEYS, too_many, signer, env.group)), "malformed")


def test_reply_helpers() -> None:
    assert reply_type(Ack()) is MessageType.ACK
    assert reply_type(ErrorReply("x", "y")) is MessageType.ERROR
    with pytest.raises(TypeError):
        reply_type(ParamsRequest())
    reply = error_reply(InvalidGroupElementError("bad\x1b[2J value " + "y" * 1000))
    assert reply.reason == "invalid_group_element"
    assert "\x1b" not in reply.message and len(reply.message) <= 500


def test_handler_repr_hides_tokens(env: Env) -> None:
    assert ADMIN_TOKEN not in repr(env.handler) and AGGREGATOR_TOKEN not in repr(env.handler)
