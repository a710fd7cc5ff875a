"""The v2 scheme end to end: round trips, the client's refusals, fresh randomness, upload screening."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from gmpy2 import mpz
from hypothesis import given
from hypothesis import strategies as st

from fedcast.shared.crypto.elgamal import Aggregation, ElGamalClient, OnlineSet
from fedcast.shared.crypto.group import EXPONENT_BITS, GroupParams
from fedcast.shared.crypto.keys import AggregatorSecretKey, ClientKeyPair
from fedcast.shared.crypto.proofs import DlogProof
from fedcast.shared.errors import (
    AggregateKeyMismatchError,
    CiphertextShapeError,
    InvalidGroupElementError,
    InvalidProofError,
    NotAMemberError,
    OnlineSetTooSmallError,
    PackingError,
    ProtocolOrderError,
)
from fedcast.shared.params import SystemParams

from .helpers import FEDERATION, VERIFY_KEY, Federation, context_for

# -- round trips -----------------------------------------------------------------------------------

_FEDERATIONS: dict[tuple[int, int], Federation] = {}


def _federation(group: GroupParams, n_clients: int, n: int) -> Federation:
    """Deployments are reused across hypothesis examples (keys and tables cost more than a round)."""
    key = (n_clients, n)
    if key not in _FEDERATIONS or _FEDERATIONS[key].group != group:
        _FEDERATIONS[key] = Federation.create(group, n_clients, n)
    return _FEDERATIONS[key]


@given(data=st.data())
def test_round_trip_equals_the_sum_of_the_encodings(small_group: GroupParams, data: st.DataObject) -> None:
    """encode -> pack -> encrypt -> aggregate -> challenge -> respond -> decrypt -> unpack -> decode."""
    k = SystemParams(small_group, max_clients=16).layout.slots_per_segment  # as Federation.create
    n_clients = data.draw(st.integers(2, 6), label="n_clients")
    n = data.draw(st.sampled_from([1, k - 1, k, k + 1, 5 * k + 3]), label="n")
    fed = _federation(small_group, n_clients, n)
    clip = fed.params.encoding.clip
    values = st.floats(-3 * clip, 3 * clip, allow_nan=False)  # beyond +-clip: clipped and counted
    vectors = {
        cid: np.array(data.draw(st.lists(values, min_size=n, max_size=n), label=cid))
        for cid in fed.online.members
    }
    sums, upload = fed.run_round(vectors, seed=data.draw(st.integers(0, 99), label="seed"))
    assert np.array_equal(sums, upload.expected)
    assert upload.clipped == sum(int(np.count_nonzero(np.abs(v) > clip)) for v in vectors.values())
    decoded = fed.params.encoding.decode_sum(sums, n_clients)
    exact = sum(np.clip(v, -clip, clip) for v in vectors.values())
    assert np.all(np.abs(decoded - exact) <= n_clients / fed.params.encoding.scale)


@pytest.mark.slow
def test_round_trip_2048(group_2048: GroupParams) -> None:
    fed = Federation.create(group_2048, 3, 500)
    rng = np.random.default_rng(1)
    sums, upload = fed.run_round({cid: rng.normal(0, 1, 500) for cid in fed.online.members})
    assert np.array_equal(sums, upload.expected)
    assert all(len(ct.segments) == fed.n_segments for ct in upload.ciphertexts.values())
    assert fed.n_segments == fed.params.n_segments(500) > 1


# -- fresh randomness ------------------------------------------------------------------------------


def test_two_encryptions_of_the_same_segments_differ_in_every_component(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3, 50)
    segments = fed.zero_segments()
    a, _ = fed.encrypt("c0", segments)
    b, _ = fed.encrypt("c0", segments)
    assert a.key_segment != b.key_segment and a.first != b.first and a.second != b.second
    assert all(x != y for x, y in zip(a.segments, b.segments, strict=True))
    assert a.proof.commitment != b.proof.commitment and a.proof.response != b.proof.response
    assert len(set(a.segments)) == len(a.segments)  # equal plaintexts, different bases h_j


def test_each_encryption_draws_three_fresh_full_width_exponents(
    small_group: GroupParams, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed = Federation.create(small_group, 3, 10)
    drawn: list[tuple[int, mpz]] = []
    real = GroupParams.random_exponent

    def spy(self: GroupParams, bits: int = EXPONENT_BITS) -> mpz:
        value = real(self, bits)
        drawn.append((bits, value))
        return value

    monkeypatch.setattr(GroupParams, "random_exponent", spy)
    first, _ = fed.encrypt("c0", fed.zero_segments())
    second, _ = fed.encrypt("c0", fed.zero_segments())
    assert [bits for bits, _ in drawn] == [EXPONENT_BITS] * 6  # s, r1, r2 per call, 256 bits
    assert len({value for _, value in drawn}) == 6
    assert first.first == small_group.power(drawn[2][1]) and second.first == small_group.power(drawn[5][1])


# -- what a client refuses to encrypt for ----------------------------------------------------------


def test_client_refuses_a_set_below_its_minimum(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 2, 10)
    client, segments = fed.clients["c0"], fed.zero_segments()
    key = fed.online.aggregate_key
    with pytest.raises(OnlineSetTooSmallError):  # the clients' default minimum is 3
        client.encrypt(segments, fed.online, fed.context, client_id="c0", claimed_aggregate_key=key)
    with pytest.raises(OnlineSetTooSmallError):  # never below 2, whatever is configured
        alone = OnlineSet.from_registry(small_group, {"c0": client.keypair.public})
        client.encrypt(
            segments,
            alone,
            context_for(("c0",)),
            client_id="c0",
            claimed_aggregate_key=alone.aggregate_key,
            min_online=1,
        )
    client.encrypt(segments, fed.online, fed.context, client_id="c0", claimed_aggregate_key=key, min_online=2)


def test_client_refuses_a_context_or_key_that_does_not_describe_s(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3, 10)
    client, segments, key = fed.clients["c0"], fed.zero_segments(), fed.online.aggregate_key
    kwargs = {"client_id": "c0", "claimed_aggregate_key": key, "min_online": 2}
    for context in (context_for(("c0", "c1")), context_for(fed.online.members, federation="plant-8")):
        with pytest.raises(NotAMemberError):
            client.encrypt(segments, fed.online, context, **kwargs)  # type: ignore[arg-type]
    keys = {m: fed.online.key_of(m) for m in fed.online.members}
    forged = OnlineSet.from_registry(small_group, {**keys, "c0": ClientKeyPair.generate(small_group).public})
    with pytest.raises(NotAMemberError):  # S lists c0 under a key the aggregator substituted
        client.encrypt(
            segments, forged, fed.context, client_id="c0", claimed_aggregate_key=forged.aggregate_key
        )
    with pytest.raises(NotAMemberError):
        client.encrypt(segments, fed.online, fed.context, client_id="stranger", claimed_aggregate_key=key)
    n = small_group.n
    unsquared = small_group.product([fed.online.key_of(m) for m in fed.online.members])
    for wrong in (key * small_group.g % n, unsquared, client.keypair.public_square):
        with pytest.raises(AggregateKeyMismatchError):
            client.encrypt(segments, fed.online, fed.context, **{**kwargs, "claimed_aggregate_key": wrong})


def test_client_refuses_segments_of_the_wrong_shape_or_range(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3, 10)
    segments = fed.zero_segments()
    with pytest.raises(CiphertextShapeError):
        fed.encrypt("c0", [*segments, mpz(0)])
    for bad in (mpz(-1), mpz(1) << small_group.plaintext_bits):
        with pytest.raises(PackingError):
            fed.encrypt("c0", [bad, *segments[1:]])


def test_online_sets_refuse_invalid_and_duplicate_keys(small_group: GroupParams) -> None:
    n = small_group.n
    kp = ClientKeyPair.generate(small_group)
    with pytest.raises(InvalidGroupElementError):
        OnlineSet.from_registry(small_group, {"a": kp.public, "b": n - 1})
    for twin in (kp.public, n - kp.public):  # the same key, or its sign flip (same square)
        with pytest.raises(AggregateKeyMismatchError):
            OnlineSet.from_registry(small_group, {"a": kp.public, "b": twin})
    other = ClientKeyPair.generate(small_group)
    online = OnlineSet.from_registry(small_group, {"b": other.public, "a": kp.public})
    assert online.members == ("a", "b")
    assert online.aggregate_key == kp.public_square * other.public_square % n


def test_parties_of_different_groups_are_refused(small_group: GroupParams, group_1024: GroupParams) -> None:
    fed = Federation.create(small_group, 2, 10)
    with pytest.raises(AggregateKeyMismatchError):
        ElGamalClient(ClientKeyPair.generate(group_1024), fed.public, fed.tables)
    other = AggregatorSecretKey.generate(group_1024).public(federation=FEDERATION, verify_key=VERIFY_KEY)
    with pytest.raises(AggregateKeyMismatchError):
        ElGamalClient(fed.keypairs["c0"], other, fed.tables)


# -- what the aggregator refuses on upload ---------------------------------------------------------


def test_aggregation_refuses_too_small_or_mismatched_sets(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3, 10)
    alone = OnlineSet.from_registry(small_group, {"c0": fed.keypairs["c0"].public})
    with pytest.raises(OnlineSetTooSmallError):
        Aggregation(alone, context_for(("c0",)), 1, min_online=1)
    with pytest.raises(OnlineSetTooSmallError):
        Aggregation(fed.online, fed.context, 1, min_online=4)
    with pytest.raises(NotAMemberError):
        Aggregation(fed.online, context_for(("c0", "c1")), 1)
    with pytest.raises(CiphertextShapeError):
        Aggregation(fed.online, fed.context, 0)


def test_malformed_uploads_are_refused_without_poisoning_the_sum(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3, 10)
    n, n2 = small_group.n, small_group.n2
    upload = fed.upload_all({cid: np.full(10, 0.5) for cid in ("c0", "c1")})
    segments = [mpz(x) for x in fed.params.layout.pack(fed.params.encoding.encode(np.full(10, 0.25)).values)]
    good, upload.attempts["c2"] = fed.encrypt("c2", segments)
    copied = upload.ciphertexts["c0"].first
    bad_uploads = [
        (dataclasses.replace(good, segments=()), CiphertextShapeError),
        (dataclasses.replace(good, segments=(*good.segments, mpz(5))), CiphertextShapeError),
        (dataclasses.replace(good, key_segment=n2), CiphertextShapeError),
        (dataclasses.replace(good, key_segment=mpz(0)), CiphertextShapeError),
        (dataclasses.replace(good, segments=(n2 + 1, *good.segments[1:])), CiphertextShapeError),
        (dataclasses.replace(good, first=n - 1), InvalidGroupElementError),
        (dataclasses.replace(good, second=mpz(0)), InvalidGroupElementError),
        (dataclasses.replace(good, second=n + 4), InvalidGroupElementError),
        (dataclasses.replace(good, first=copied), ProtocolOrderError),
        (dataclasses.replace(good, first=n - copied), ProtocolOrderError),  # a copy with its sign flipped
    ]
    for bad, error in bad_uploads:
        with pytest.raises(error):
            upload.aggregation.add_upload("c2", bad)
    with pytest.raises(NotAMemberError):
        upload.aggregation.add_upload("mallory", good)
    with pytest.raises(ProtocolOrderError):  # a duplicate upload
        upload.aggregation.add_upload("c0", upload.ciphertexts["c0"])
    with pytest.raises(ProtocolOrderError):
        upload.aggregation.challenge()  # c2 has not uploaded yet
    upload.aggregation.add_upload("c2", good)
    upload.ciphertexts["c2"] = good
    fed.respond_all(upload)
    sums = fed.params.layout.unpack(upload.aggregation.decrypt(fed.decryptor), 10, n_clients=3)
    assert np.array_equal(fed.params.encoding.decode_sum(sums, 3), np.full(10, 1.25))


def test_an_upload_with_a_bad_proof_is_named_and_stops_the_attempt(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 4, 10)
    upload = fed.upload_all({cid: np.zeros(10) for cid in ("c0", "c1", "c3")})
    ct, _ = fed.encrypt("c2", fed.zero_segments())
    forged = dataclasses.replace(ct, proof=DlogProof(ct.proof.commitment, ct.proof.response + 1))
    upload.aggregation.add_upload("c2", forged)  # screened and folded; the proof is batched later
    assert set(upload.aggregation.verify_uploads()) == {"c2"}
    assert set(upload.aggregation.culprits) == {"c2"}
    with pytest.raises(InvalidProofError, match="c2"):
        upload.aggregation.challenge()  # the protocol retries without c2
    assert upload.aggregation.verify_uploads() == {}  # the honest proofs were checked and passed
