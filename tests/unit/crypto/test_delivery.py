"""Model delivery: DH on squares + HKDF, AES-256-GCM bound to federation, round and client."""

from __future__ import annotations

import gmpy2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedcast.shared.crypto.delivery import delivery_key, open_model, seal_model
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.keys import AggregatorSecretKey, ClientKeyPair
from fedcast.shared.errors import DeliveryError, InvalidGroupElementError

BINDING = {"federation_id": "plant-7", "round_id": 12, "client_id": "line-3"}


def _keys(group: GroupParams) -> tuple[bytes, bytes, AggregatorSecretKey, ClientKeyPair]:
    agg = AggregatorSecretKey.generate(group)
    client = ClientKeyPair.generate(group)
    public = agg.public(federation="plant-7", verify_key=bytes(32))
    return (
        delivery_key(group, agg.delivery_secret, client.public),
        delivery_key(group, client.secret, public.delivery),
        agg,
        client,
    )


def test_both_sides_derive_the_same_key(group_2048: GroupParams) -> None:
    k_agg, k_client, agg, client = _keys(group_2048)
    assert k_agg == k_client and len(k_agg) == 32
    # The shared value is g^(2 delta sk): DH on the squares of the public keys.
    n = group_2048.n
    shared = gmpy2.powmod(group_2048.g, 2 * agg.delivery_secret * client.secret, n)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"fedcast/v2/model-delivery")
    assert k_agg == hkdf.derive(int(shared).to_bytes(group_2048.element_bytes, "big"))


def test_a_sign_flipped_public_key_gives_the_same_key(small_group: GroupParams) -> None:
    n = small_group.n
    k, _, agg, client = _keys(small_group)
    assert delivery_key(small_group, agg.delivery_secret, n - client.public) == k
    delivery = small_group.power(agg.delivery_secret)
    assert delivery_key(small_group, client.secret, n - delivery) == k


def test_seal_and_open_round_trip_with_fresh_nonces(small_group: GroupParams) -> None:
    k, k_client, _, _ = _keys(small_group)
    envelope = seal_model(k, b"model bytes", **BINDING)
    assert open_model(k_client, envelope, **BINDING) == b"model bytes"
    assert seal_model(k, b"model bytes", **BINDING)[:12] != envelope[:12]
    assert open_model(k, seal_model(k, b"", **BINDING), **BINDING) == b""


@pytest.mark.parametrize("field", ["federation_id", "round_id", "client_id"])
def test_envelope_is_bound_to_its_context(small_group: GroupParams, field: str) -> None:
    k, _, _, _ = _keys(small_group)
    envelope = seal_model(k, b"w", **BINDING)
    other = {**BINDING, field: BINDING[field] + 1 if field == "round_id" else BINDING[field] + "x"}
    with pytest.raises(DeliveryError):
        open_model(k, envelope, **other)


@pytest.mark.parametrize("position", [0, 11, 12, -17, -1])  # nonce, ciphertext, tag
def test_tampering_is_refused(small_group: GroupParams, position: int) -> None:
    k, _, _, _ = _keys(small_group)
    envelope = bytearray(seal_model(k, b"weights and biases", **BINDING))
    envelope[position] ^= 1
    with pytest.raises(DeliveryError):
        open_model(k, bytes(envelope), **BINDING)


def test_other_keys_and_malformed_input_are_refused(small_group: GroupParams) -> None:
    k, _, agg, _ = _keys(small_group)
    envelope = seal_model(k, b"weights", **BINDING)
    stranger = ClientKeyPair.generate(small_group)
    delivery = small_group.power(agg.delivery_secret)
    with pytest.raises(DeliveryError):
        open_model(delivery_key(small_group, stranger.secret, delivery), envelope, **BINDING)
    with pytest.raises(DeliveryError):
        open_model(k, envelope[:27], **BINDING)
    with pytest.raises(DeliveryError):
        seal_model(b"short key", b"x", **BINDING)
    with pytest.raises(DeliveryError):
        open_model(b"short key", envelope, **BINDING)


@pytest.mark.parametrize("peer", ["n-1", "1", "0", "n"])
def test_invalid_peer_keys_are_refused(small_group: GroupParams, peer: str) -> None:
    n = small_group.n
    value = {"n-1": n - 1, "1": 1, "0": 0, "n": n}[peer]
    with pytest.raises(InvalidGroupElementError):
        delivery_key(small_group, 5, value)
