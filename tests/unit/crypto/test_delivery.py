"""Model delivery: per-client keys from DH + HKDF, AES-256-GCM bound to federation, round, client."""

from __future__ import annotations

import pytest

from shared.crypto.delivery import delivery_key, open_model, seal_model
from shared.crypto.group import GroupParams
from shared.crypto.keys import AggregatorSecretKey, ClientKeyPair
from shared.errors import DeliveryError, InvalidGroupElementError

BINDING = {"federation_id": "plant-7", "round_id": 12, "client_id": "line-3"}


def _keys(group: GroupParams) -> tuple[bytes, bytes, AggregatorSecretKey, ClientKeyPair]:
    agg = AggregatorSecretKey.generate(group, 1)
    client = ClientKeyPair.generate(group)
    k_agg = delivery_key(group, agg.delivery_secret, client.public)
    k_client = delivery_key(group, client.secret, agg.public.delivery)
    return k_agg, k_client, agg, client


def test_both_sides_derive_the_same_key_and_round_trip(group_2048: GroupParams) -> None:
    k_agg, k_client, _, _ = _keys(group_2048)
    assert k_agg == k_client and len(k_agg) == 32
    envelope = seal_model(k_agg, b"model bytes", **BINDING)
    assert open_model(k_client, envelope, **BINDING) == b"model bytes"
    assert seal_model(k_agg, b"model bytes", **BINDING) != envelope  # fresh nonce


@pytest.mark.parametrize("field", ["federation_id", "round_id", "client_id"])
def test_envelope_is_bound_to_its_context(small_group: GroupParams, field: str) -> None:
    k, _, _, _ = _keys(small_group)
    envelope = seal_model(k, b"w", **BINDING)
    other = {**BINDING, field: BINDING[field] + 1 if field == "round_id" else BINDING[field] + "x"}
    with pytest.raises(DeliveryError):
        open_model(k, envelope, **other)


def test_other_clients_and_tampering_fail(small_group: GroupParams) -> None:
    k, _, agg, _ = _keys(small_group)
    envelope = seal_model(k, b"weights", **BINDING)
    stranger = ClientKeyPair.generate(small_group)
    with pytest.raises(DeliveryError):
        open_model(delivery_key(small_group, stranger.secret, agg.public.delivery), envelope, **BINDING)
    flipped = envelope[:-1] + bytes([envelope[-1] ^ 1])
    with pytest.raises(DeliveryError):
        open_model(k, flipped, **BINDING)
    with pytest.raises(DeliveryError):
        open_model(k, b"short", **BINDING)
    with pytest.raises(DeliveryError):
        seal_model(b"short key", b"x", **BINDING)


def test_invalid_peer_key_is_rejected(small_group: GroupParams) -> None:
    with pytest.raises(InvalidGroupElementError):
        delivery_key(small_group, 5, small_group.p - 1)
