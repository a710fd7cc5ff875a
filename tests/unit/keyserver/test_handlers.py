"""KeyServiceHandler: every request type, and every refusal with its reason code."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import gmpy2
import pytest

from fedcast.services.keyserver.handlers import (
    MAX_KEYS_PER_REQUEST,
    KeyServiceHandler,
    error_reply,
    reply_type,
)
from fedcast.services.keyserver.store import DeviceStatus, RegistryStore
from fedcast.shared.crypto.group import GroupParams, frame
from fedcast.shared.crypto.keys import (
    AggregatorPublicKey,
    AggregatorSecretKey,
    ClientKeyPair,
    aggregator_key_context,
)
from fedcast.shared.crypto.pok import enrollment_context, prove_possession
from fedcast.shared.crypto.proofs import DlogProof, prove_dlog
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.errors import InvalidGroupElementError
from fedcast.shared.params import SystemParams
from fedcast.shared.wire.messages import (
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
from tests.unit.wire.strategies import IDENTITY_VERIFY_KEY, identity_key_forgery


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
        proof: DlogProof | None = None,
        signature: bytes | None = None,
    ) -> object:
        """Send ENROLL signed by ``signer``, carrying ``vk`` (default: the signer's own key).

        The proof of possession is computed for ``keypair`` (a fresh one by default) unless
        ``proof`` is given; ``pk`` overrides the public key sent and ``signature`` the
        request's signature (for refusal tests).
        """
        signer = signer or SigningKeyPair.generate()
        keypair = keypair or ClientKeyPair.generate(self.group)
        verify_key = signer.verify_key if vk is None else vk
        if proof is None:
            proof = prove_possession(keypair, enrollment_context(FEDERATION, client_id, verify_key))
        public = int(keypair.public) if pk is None else pk
        body = EnrollRequest(token, public, verify_key, proof)
        msg = signed(MessageType.ENROLL, body, signer, self.group, sender=client_id)
        if signature is not None:
            msg = dataclasses.replace(msg, signature=signature)
        return self.handler.handle(msg)

    def register(self, info: AggregatorInfo, by: SigningKeyPair, token: str = AGGREGATOR_TOKEN) -> object:
        body = RegisterAggregator(token, info)
        return self.handler.handle(
            signed(MessageType.REGISTER_AGGREGATOR, body, by, self.group, sender="aggregator")
        )


@pytest.fixture
def env(small_group: GroupParams, tmp_path: Path) -> Iterator[Env]:
    with RegistryStore(tmp_path / "registry.sqlite3") as store:
        yield Env(small_group, store)


def refused(reply: object, reason: str) -> None:
    assert isinstance(reply, ErrorReply), reply
    assert reply.reason == reason, reply


def test_params_reply_carries_the_modulus_and_nothing_of_a_prime_group() -> None:
    # Only N travels: g and the segment bases are derived from it; no p, q, g fields.
    assert [f.name for f in dataclasses.fields(ParamsReply)] == [
        "modulus",
        "frac_bits",
        "clip",
        "max_clients",
        "min_online",
        "aggregator",
    ]


def test_get_params_before_and_after_the_aggregator_registers(env: Env) -> None:
    request = signed(MessageType.GET_PARAMS, ParamsRequest(), SigningKeyPair.generate(), env.group)
    reply = env.handler.handle(request)
    assert isinstance(reply, ParamsReply)
    assert reply.modulus == int(env.group.n)
    assert (reply.frac_bits, reply.clip) == (env.params.encoding.frac_bits, env.params.encoding.clip)
    assert (reply.max_clients, reply.min_online, reply.aggregator) == (16, 3, None)
    signer = SigningKeyPair.generate()
    info = aggregator_info(env.group, signer)
    assert env.register(info, signer) == Ack()
    reply = env.handler.handle(request)
    assert isinstance(reply, ParamsReply) and reply.aggregator == info
    # The proofs are served as registered: any client can verify them again.
    key = AggregatorPublicKey.verified(
        env.group,
        reply.aggregator.beta,
        reply.aggregator.delivery,
        reply.aggregator.beta_proof,
        reply.aggregator.delivery_proof,
        federation=FEDERATION,
        verify_key=signer.verify_key,
    )
    assert int(key.beta) == info.beta


def test_get_params_and_get_keys_are_answered_without_checking_the_request_signature(env: Env) -> None:
    """Specified behaviour (handlers.py docstring): public answers, signed replies, no side effects."""
    token = env.store.provision_device("c1")
    assert env.enroll("c1", token) == Ack()
    garbage = b"\x00" * 64
    for mtype, body, expected in (
        (MessageType.GET_PARAMS, ParamsRequest(), ParamsReply),
        (MessageType.GET_KEYS, KeysRequest(("c1",)), KeysReply),
    ):
        msg = signed(mtype, body, SigningKeyPair.generate(), env.group, sender="not-enrolled")
        reply = env.handler.handle(dataclasses.replace(msg, signature=garbage))
        assert isinstance(reply, expected), reply
    keys = env.handler.handle(
        dataclasses.replace(
            signed(MessageType.GET_KEYS, KeysRequest(("c1",)), SigningKeyPair.generate(), env.group),
            signature=garbage,
        )
    )
    assert isinstance(keys, KeysReply) and [e.client_id for e in keys.entries] == ["c1"]


def test_enroll_with_a_bad_signature_is_refused(env: Env) -> None:
    token = env.store.provision_device("c1")
    refused(env.enroll("c1", token, signature=b"\x00" * 64), "bad_signature")
    assert env.store.status("c1") is DeviceStatus.PROVISIONED
    assert env.enroll("c1", token) == Ack()


def test_enroll_with_a_small_order_verify_key_is_refused(env: Env) -> None:
    """The neutral element as verify key would let anyone sign as that member (one signature
    fits every message): its ENROLL, signed with exactly that universal forgery, is refused."""
    token = env.store.provision_device("c1")
    forged = identity_key_forgery()
    refused(env.enroll("c1", token, vk=IDENTITY_VERIFY_KEY, signature=forged), "bad_signature")
    assert env.store.status("c1") is DeviceStatus.PROVISIONED


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


def test_enroll_proof_bound_to_another_identity_is_refused(env: Env) -> None:
    token = env.store.provision_device("c1")
    signer = SigningKeyPair.generate()
    keypair = ClientKeyPair.generate(env.group)
    # A valid proof for the same key, bound to another client id ...
    other_id = prove_possession(keypair, enrollment_context(FEDERATION, "c9", signer.verify_key))
    refused(env.enroll("c1", token, signer, keypair=keypair, proof=other_id), "invalid_key")
    # ... to another verify key ...
    other_vk = prove_possession(
        keypair, enrollment_context(FEDERATION, "c1", SigningKeyPair.generate().verify_key)
    )
    refused(env.enroll("c1", token, signer, keypair=keypair, proof=other_vk), "invalid_key")
    # ... or to another federation: none transfers.
    other_fed = prove_possession(keypair, enrollment_context("other-fed", "c1", signer.verify_key))
    refused(env.enroll("c1", token, signer, keypair=keypair, proof=other_fed), "invalid_key")
    assert env.store.entries(["c1"]) == []
    assert env.enroll("c1", token, signer, keypair=keypair) == Ack()  # the bound proof goes through


def test_enroll_refusals(env: Env) -> None:
    token = env.store.provision_device("c1")
    n = int(env.group.n)
    refused(env.enroll("c1", "wrong-token-0123456789"), "enrollment_refused")
    refused(env.enroll("c9", token), "enrollment_refused")  # token of another device
    # Signed by a key other than the one it registers: no proof of possession.
    other = SigningKeyPair.generate()
    refused(env.enroll("c1", token, vk=other.verify_key), "bad_signature")
    # N - 1 passes 1 < x < N, gcd and Jacobi (+1 for N = PQ, P = Q = 3 mod 4) but squares to 1.
    assert gmpy2.jacobi(n - 1, n) == 1
    refused(env.enroll("c1", token, pk=n - 1), "invalid_group_element")
    refused(env.enroll("c1", token, pk=1), "invalid_group_element")
    jacobi_minus = next(x for x in range(2, 1000) if gmpy2.jacobi(x, n) == -1)
    refused(env.enroll("c1", token, pk=jacobi_minus), "invalid_group_element")
    # A rogue key g^x / pk_A (no knowledge of its log) fails the proof of possession.
    victim = ClientKeyPair.generate(env.group)
    rogue = int(env.group.power(12345) * pow(int(victim.public), -1, n) % n)
    refused(env.enroll("c1", token, pk=rogue), "invalid_key")
    assert env.store.entries(["c1"]) == []  # nothing refused left a trace
    assert env.enroll("c1", token) == Ack()
    refused(env.enroll("c1", token), "enrollment_refused")  # already enrolled with other keys
    env.store.revoke("c1")
    refused(env.enroll("c1", token), "enrollment_refused")


def test_register_aggregator_with_valid_proofs(env: Env) -> None:
    signer = SigningKeyPair.generate()
    info = aggregator_info(env.group, signer)
    assert env.register(info, signer) == Ack()
    assert env.register(info, signer) == Ack()  # idempotent
    assert env.store.aggregator() == info


def test_register_aggregator_refusals(env: Env) -> None:
    signer = SigningKeyPair.generate()
    secret = AggregatorSecretKey.generate(env.group)
    info = aggregator_info(env.group, signer, secret=secret)
    n = int(env.group.n)

    refused(env.register(info, signer, "wrong-token-0123456789"), "not_authorized")
    refused(
        env.register(info, signer, ADMIN_TOKEN), "not_authorized"
    )  # the admin token is not the aggregator's
    refused(env.register(info, SigningKeyPair.generate()), "bad_signature")
    # The two proofs swapped: each is bound to its own key's role.
    swapped = dataclasses.replace(info, beta_proof=info.delivery_proof, delivery_proof=info.beta_proof)
    refused(env.register(swapped, signer), "invalid_key")
    # Valid proofs of another federation (replayed from there) do not transfer.
    foreign = aggregator_info(env.group, signer, federation="other-fed", secret=secret)
    assert (foreign.beta, foreign.delivery) == (info.beta, info.delivery)
    refused(env.register(foreign, signer), "invalid_key")
    # Proofs made for another verify key, re-signed by this one.
    stolen = aggregator_info(env.group, SigningKeyPair.generate(), secret=secret)
    refused(env.register(dataclasses.replace(stolen, verify_key=signer.verify_key), signer), "invalid_key")
    # beta = N - 1 would expose every s and m: refused by the element rule.
    refused(env.register(dataclasses.replace(info, beta=n - 1), signer), "invalid_key")
    refused(env.register(dataclasses.replace(info, delivery=n - 1), signer), "invalid_key")
    # beta and D equal (both proofs genuine, same secret): refused.
    context = aggregator_key_context(FEDERATION, signer.verify_key)
    same = dataclasses.replace(
        info,
        delivery=info.beta,
        delivery_proof=prove_dlog(env.group, secret.alpha, info.beta, frame(b"delivery", context)),
    )
    refused(env.register(same, signer), "invalid_key")
    assert env.store.aggregator() is None
    assert env.register(info, signer) == Ack()
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
