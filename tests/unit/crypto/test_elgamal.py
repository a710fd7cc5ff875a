"""The multi-key ElGamal scheme end to end, its known answers, and every refusal."""

from __future__ import annotations

import dataclasses
import hashlib

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpz
from hypothesis import given
from hypothesis import strategies as st

from shared.crypto.elgamal import (
    Aggregation,
    ClientCiphertext,
    Decryptor,
    ElGamalClient,
    OnlineSet,
    compute_challenge,
)
from shared.crypto.group import GroupParams, insecure_test_group
from shared.crypto.keys import AggregatorSecretKey, ClientKeyPair
from shared.errors import (
    AggregateKeyMismatchError,
    ChallengeRejectedError,
    CiphertextShapeError,
    DecryptionError,
    InvalidGroupElementError,
    NotAMemberError,
    OnlineSetTooSmallError,
    ProtocolOrderError,
    SlotOverflowError,
)

from .helpers import Federation


def _vectors(n_clients: int, n: int, seed: int = 1, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"c{i}": rng.normal(0, scale, n) for i in range(n_clients)}


# -- round trips ---------------------------------------------------------------------------------


@given(data=st.data())
def test_round_trip_equals_sum_of_quantized_inputs(small_group: GroupParams, data: st.DataObject) -> None:
    """encode -> pack -> encrypt -> aggregate -> challenge -> decrypt -> unpack == sum of encodings."""
    n_clients = data.draw(st.integers(2, 6), label="n_clients")
    k = Federation.create(small_group, 2, 1).params.layout.slots_per_segment
    n = data.draw(st.sampled_from([1, k - 1, k, k + 1, 4 * k + 3]), label="n")
    fed = Federation.create(small_group, n_clients, n)
    limit = 2 * fed.params.encoding.clip  # values at +-C and beyond: clipped and counted
    vectors = {
        cid: np.array(data.draw(st.lists(st.floats(-limit, limit), min_size=n, max_size=n)))
        for cid in fed.online.members
    }
    aggregation, attempts, _, expected = fed.upload_all(vectors, seed=data.draw(st.integers(0, 99)))
    fed.respond_all(aggregation, attempts)
    sums = fed.params.layout.unpack(aggregation.decrypt(fed.secret), n, n_clients=n_clients)
    assert np.array_equal(sums, expected)
    decoded = fed.params.encoding.decode_sum(sums, n_clients)
    clipped = sum(np.clip(v, -fed.params.encoding.clip, fed.params.encoding.clip) for v in vectors.values())
    assert np.all(np.abs(decoded - clipped) <= n_clients / fed.params.encoding.scale)


@pytest.mark.slow
def test_round_trip_2048(group_2048: GroupParams) -> None:
    fed = Federation.create(group_2048, 3, 500)
    aggregation, attempts, cts, expected = fed.upload_all(_vectors(3, 500))
    assert all(len(ct.segments) == fed.params.n_segments(500) for ct in cts.values())
    fed.respond_all(aggregation, attempts)
    sums = fed.params.layout.unpack(aggregation.decrypt(Decryptor(fed.secret)), 500, n_clients=3)
    assert np.array_equal(sums, expected)


def test_printed_decryption_formula_does_not_round_trip(group_2048: GroupParams) -> None:
    """Crypto note 1: (d/T)^-alpha mod p^2 without the lift decrypts to garbage; with it, exactly."""
    g, p, p2, q = group_2048.g, group_2048.p, group_2048.p2, group_2048.q
    alpha, sk1, sk2 = mpz(123456789), mpz(987654321), mpz(55555)
    beta = gmpy2.powmod(g, alpha, p)
    pk_s = gmpy2.powmod(g, sk1 + sk2, p)
    ms, r1s, r2s = [mpz(17), mpz(25)], [mpz(1111), mpz(2222)], [mpz(333), mpz(444)]
    # As printed: E_i1 = (p+1)^m * beta^r1 mod p^2 with beta taken mod p.
    e_printed = [gmpy2.powmod(p + 1, m, p2) * gmpy2.powmod(beta, r1, p2) % p2 for m, r1 in zip(ms, r1s)]
    e_lifted = [(1 + m * p) * gmpy2.powmod(group_2048.lift(beta), r1, p2) % p2 for m, r1 in zip(ms, r1s)]
    d = gmpy2.powmod(g, sum(r1s), p) * gmpy2.powmod(pk_s, sum(r2s), p) % p
    t = gmpy2.powmod(gmpy2.powmod(g, sum(r2s), p), sk1 + sk2, p)
    x = d * gmpy2.invert(t, p) % p
    agg_printed = e_printed[0] * e_printed[1] % p2
    y = agg_printed * gmpy2.powmod(gmpy2.invert(x, p2), alpha, p2) % p2
    assert y % p != 1 or (y - 1) // p != 42  # garbage
    agg = e_lifted[0] * e_lifted[1] % p2
    y = agg * gmpy2.powmod(group_2048.lift(x), q - alpha, p2) % p2
    assert (y - 1) // p == 42


# -- known-answer vector -------------------------------------------------------------------------


def _reference_encrypt(group: GroupParams, m: list[int], betas: list[int], pk_s: int, r1: int, r2: int):
    """The formulas of crypto note 1 with plain Python pow and lift(x) = x^p mod p^2."""
    p, p2 = int(group.p), int(group.p2)
    lifted = [pow(b, p, p2) for b in betas]
    body = [(1 + mj * p) * pow(bj, r1, p2) % p2 for mj, bj in zip(m, lifted, strict=True)]
    return body, pow(int(group.g), r2, p), pow(int(group.g), r1, p) * pow(pk_s, r2, p) % p


def test_known_answer_full_round() -> None:
    group = insecure_test_group(512, 128, seed=0)
    secret = AggregatorSecretKey.from_secrets(group, [3, 5, 7], 11)
    kps = [ClientKeyPair.from_secret(group, s) for s in (13, 17)]
    online = OnlineSet.from_registry(group, {"a": kps[0].public, "b": kps[1].public})
    plaintexts = {"a": [1, 2, 3], "b": [10, 20, 30]}
    randomness = {"a": (101, 103), "b": (107, 109)}
    aggregation = Aggregation(online, 3)
    attempts = {}
    digest = hashlib.sha256()
    for cid, kp in zip(("a", "b"), kps, strict=True):
        client = ElGamalClient(kp, secret.public)
        ct, attempts[cid] = client.encrypt(
            plaintexts[cid],
            online,
            client_id=cid,
            claimed_aggregate_key=online.aggregate_key,
            _randomness=randomness[cid],
        )
        body, a, b = _reference_encrypt(
            group,
            plaintexts[cid],
            [int(x) for x in secret.public.betas],
            int(online.aggregate_key),
            *randomness[cid],
        )
        assert [int(x) for x in ct.segments] == body and ct.first == a and ct.second == b
        for x in (*ct.segments, ct.first, ct.second):
            digest.update(int(x).to_bytes(128, "big"))
        aggregation.add_upload(cid, ct)
    # Pinned: the deterministic test group, keys and randomness give exactly these bytes.
    assert digest.hexdigest() == KAT_DIGEST
    challenge, firsts = aggregation.challenge()
    assert challenge == gmpy2.powmod(group.g, 103 + 109, group.p)
    for cid, kp in zip(("a", "b"), kps, strict=True):
        aggregation.add_response(
            cid, ElGamalClient(kp, secret.public).respond(attempts[cid], challenge, firsts)
        )
    assert aggregation.decrypt(secret) == [11, 22, 33]


KAT_DIGEST = "c88183da6c5a8540585f102059039bc8d1356cb00e09c5de96edf8a9ade89e3e"


# -- refusals by the client ----------------------------------------------------------------------


def _setup(group: GroupParams, n_clients: int = 3):
    fed = Federation.create(group, n_clients, 10)
    segments = fed.params.layout.pack(np.zeros(10, dtype=np.uint64))
    return fed, segments


def test_client_refuses_single_member_set(small_group: GroupParams) -> None:
    fed, segments = _setup(small_group)
    client = fed.clients["c0"]
    alone = OnlineSet.from_registry(small_group, {"c0": client.keypair.public})
    with pytest.raises(OnlineSetTooSmallError):
        client.encrypt(segments, alone, client_id="c0", claimed_aggregate_key=client.keypair.public)


def test_client_refuses_set_below_configured_minimum(small_group: GroupParams) -> None:
    fed, segments = _setup(small_group, 3)
    with pytest.raises(OnlineSetTooSmallError):
        fed.clients["c0"].encrypt(
            segments, fed.online, client_id="c0", claimed_aggregate_key=fed.online.aggregate_key, min_online=4
        )


def test_client_refuses_wrong_aggregate_key(small_group: GroupParams) -> None:
    fed, segments = _setup(small_group)
    wrong = fed.online.aggregate_key * small_group.power(2) % small_group.p
    with pytest.raises(AggregateKeyMismatchError):
        fed.clients["c0"].encrypt(segments, fed.online, client_id="c0", claimed_aggregate_key=wrong)
    # pk_S equal to the client's own key (paper Algorithm 1, line 5) is refused as well
    with pytest.raises(AggregateKeyMismatchError):
        fed.clients["c0"].encrypt(
            segments, fed.online, client_id="c0", claimed_aggregate_key=fed.clients["c0"].keypair.public
        )


def test_client_refuses_set_that_lists_it_under_another_key(small_group: GroupParams) -> None:
    fed, segments = _setup(small_group)
    keys = {m: fed.online.key_of(m) for m in fed.online.members}
    keys["c0"] = ClientKeyPair.generate(small_group).public  # the aggregator substitutes c0's key
    forged = OnlineSet.from_registry(small_group, keys)
    with pytest.raises(NotAMemberError):
        fed.clients["c0"].encrypt(
            segments, forged, client_id="c0", claimed_aggregate_key=forged.aggregate_key
        )
    with pytest.raises(NotAMemberError):
        fed.clients["c0"].encrypt(
            segments, fed.online, client_id="stranger", claimed_aggregate_key=fed.online.aggregate_key
        )


def test_client_refuses_wrong_segment_count(small_group: GroupParams) -> None:
    fed, segments = _setup(small_group)
    with pytest.raises(CiphertextShapeError):
        fed.clients["c0"].encrypt(
            [*segments, 0], fed.online, client_id="c0", claimed_aggregate_key=fed.online.aggregate_key
        )


def test_encryption_is_randomized(small_group: GroupParams) -> None:
    fed, segments = _setup(small_group)
    kwargs = {"client_id": "c0", "claimed_aggregate_key": fed.online.aggregate_key}
    a, _ = fed.clients["c0"].encrypt(segments, fed.online, **kwargs)
    b, _ = fed.clients["c0"].encrypt(segments, fed.online, **kwargs)
    assert a.first != b.first and a.second != b.second and a.segments != b.segments


# -- the challenge (crypto note section 5) -------------------------------------------------------


def test_challenge_attack_works_without_the_check_and_fails_with_it(small_group: GroupParams) -> None:
    """An aggregator that sends R' = A_k instead of prod A_i learns client k's own gradient.

    Without the client-side check the shares unmask g^(r_k1) and the aggregator decrypts
    client k alone; with the check every client refuses R'.
    """
    fed = Federation.create(small_group, 3, 10)
    vectors = _vectors(3, 10, seed=5)
    aggregation, attempts, cts, _ = fed.upload_all(vectors)
    _, firsts = aggregation.challenge()
    victim = "c1"
    malicious_r = firsts[victim]
    # Unchecked clients: T_i = R'^sk_i.
    shares = [gmpy2.powmod(malicious_r, c.keypair.secret, small_group.p) for c in fed.clients.values()]
    t = compute_challenge(small_group, shares)  # product of shares = pk_S^(r_k2)
    g_r1 = cts[victim].second * gmpy2.invert(t, small_group.p) % small_group.p
    unmask = Decryptor(fed.secret).unmask_powers(small_group.lift(g_r1))
    p, p2 = small_group.p, small_group.p2
    leaked = [(e * u % p2 - 1) // p for e, u in zip(cts[victim].segments, unmask, strict=True)]
    rng = np.random.default_rng(0)
    victim_encoding = None
    for cid, vec in vectors.items():  # replay upload_all's rounding stream to get the victim's encoding
        enc = fed.params.encoding.encode(vec, rng).values
        if cid == victim:
            victim_encoding = enc
    assert victim_encoding is not None
    assert np.array_equal(fed.params.layout.unpack(leaked, 10, n_clients=1), victim_encoding)
    # With the check: every client refuses R'.
    for cid, attempt in attempts.items():
        with pytest.raises(ChallengeRejectedError):
            fed.clients[cid].respond(attempt, malicious_r, firsts)


def test_client_refuses_member_list_that_is_not_s(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3, 10)
    aggregation, attempts, _, _ = fed.upload_all(_vectors(3, 10))
    _, firsts = aggregation.challenge()
    partial = {m: a for m, a in firsts.items() if m != "c2"}
    with pytest.raises(ChallengeRejectedError, match="member list"):
        fed.clients["c0"].respond(attempts["c0"], compute_challenge(small_group, partial.values()), partial)
    extra = {**firsts, "c9": small_group.power(3)}
    with pytest.raises(ChallengeRejectedError, match="member list"):
        fed.clients["c0"].respond(attempts["c0"], compute_challenge(small_group, extra.values()), extra)


def test_client_refuses_when_its_own_first_component_was_replaced(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3, 10)
    aggregation, attempts, _, _ = fed.upload_all(_vectors(3, 10))
    _, firsts = aggregation.challenge()
    forged = {**firsts, "c0": small_group.power(42)}
    with pytest.raises(ChallengeRejectedError, match="not ours"):
        fed.clients["c0"].respond(attempts["c0"], compute_challenge(small_group, forged.values()), forged)


def test_client_answers_at_most_once_per_attempt(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 2, 10)
    aggregation, attempts, _, _ = fed.upload_all(_vectors(2, 10))
    challenge, firsts = aggregation.challenge()
    fed.clients["c0"].respond(attempts["c0"], challenge, firsts)
    with pytest.raises(ChallengeRejectedError, match="already"):
        fed.clients["c0"].respond(attempts["c0"], challenge, firsts)


def test_client_refuses_invalid_elements_in_challenge(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 2, 10)
    aggregation, attempts, _, _ = fed.upload_all(_vectors(2, 10))
    _, firsts = aggregation.challenge()
    bad = {**firsts, "c1": small_group.p - 1}
    with pytest.raises(InvalidGroupElementError):
        fed.clients["c0"].respond(attempts["c0"], compute_challenge(small_group, bad.values()), bad)


# -- refusals and failures at the aggregator -----------------------------------------------------


def test_decryption_without_the_right_alphas_fails(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3, 40)
    aggregation, attempts, _, _ = fed.upload_all(_vectors(3, 40))
    fed.respond_all(aggregation, attempts)
    other = AggregatorSecretKey.generate(small_group, fed.secret.n_segments)
    with pytest.raises(DecryptionError):
        aggregation.decrypt(other)
    assert aggregation.decrypt(fed.secret)  # the right key still works


def test_tampered_ciphertext_does_not_decrypt_to_the_true_sum(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3, 40)
    vectors = _vectors(3, 40)
    p, p2 = small_group.p, small_group.p2
    # (a) a random replacement: detected (L's input is not 1 mod p).
    aggregation, attempts, cts, _ = Federation.upload_all(
        fed, {k: v for k, v in vectors.items() if k != "c2"}
    )
    ct = fed.clients["c2"].encrypt(
        fed.params.layout.pack(fed.params.encoding.encode(vectors["c2"]).values),
        fed.online,
        client_id="c2",
        claimed_aggregate_key=fed.online.aggregate_key,
    )
    tampered = ClientCiphertext((ct[0].segments[0] * 7 % p2, *ct[0].segments[1:]), ct[0].first, ct[0].second)
    aggregation.add_upload("c2", tampered)
    attempts["c2"] = ct[1]
    fed.respond_all(aggregation, attempts)
    with pytest.raises(DecryptionError):
        aggregation.decrypt(fed.secret)
    # (b) a malleability tamper (x (1+p)) shifts the plaintext: never the true sum.
    aggregation, attempts, cts, expected = fed.upload_all(vectors)
    fed.respond_all(aggregation, attempts)
    honest = aggregation.decrypt(fed.secret)
    aggregation2 = Aggregation(fed.online, fed.secret.n_segments)
    for cid, c in cts.items():
        if cid == "c0":
            c = ClientCiphertext((c.segments[0] * (1 + p) % p2, *c.segments[1:]), c.first, c.second)
        aggregation2.add_upload(cid, c)
    for cid, attempt in attempts.items():
        attempt.answered = False
    fed.respond_all(aggregation2, attempts)
    try:
        got = fed.params.layout.unpack(aggregation2.decrypt(fed.secret), 40, n_clients=3)
    except (DecryptionError, SlotOverflowError):
        return
    assert not np.array_equal(got, expected)
    assert honest != aggregation2.decrypt(fed.secret)


def _q_prime_part(group: GroupParams) -> mpz:
    """An element of order q' = (p-1)/2q: a quadratic residue that is not in the order-q subgroup."""
    return gmpy2.powmod(mpz(3), 2 * group.q, group.p)


@pytest.mark.parametrize("bad", ["wrong_share", "outside_subgroup"])
def test_a_bad_share_never_decrypts(small_group: GroupParams, bad: str) -> None:
    """A valid element that is not R^sk_i fails decryption; an element outside the order-q
    subgroup (a quadratic residue, so it passes the screen) is caught before decrypting."""
    fed = Federation.create(small_group, 3, 10)
    aggregation, attempts, _, _ = fed.upload_all(_vectors(3, 10))
    challenge, firsts = aggregation.challenge()
    for cid, attempt in attempts.items():
        t = fed.clients[cid].respond(attempt, challenge, firsts)
        if cid == "c1":
            t = (
                small_group.power(5)
                if bad == "wrong_share"
                else t * _q_prime_part(small_group) % small_group.p
            )
        aggregation.add_response(cid, t)
    if bad == "wrong_share":
        assert aggregation.verify_responses() == {}
        with pytest.raises(DecryptionError):
            aggregation.decrypt(fed.secret)
    else:
        assert aggregation.verify_responses().keys() == {"c1"}
        with pytest.raises(InvalidGroupElementError, match="c1"):
            aggregation.decrypt(fed.secret)


def test_aggregator_rejects_malformed_uploads_without_poisoning(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3, 10)
    vectors = _vectors(3, 10)
    aggregation, attempts, cts, expected = fed.upload_all({k: v for k, v in vectors.items() if k != "c2"})
    good, attempt = fed.clients["c2"].encrypt(
        fed.params.layout.pack(fed.params.encoding.encode(vectors["c2"], np.random.default_rng(9)).values),
        fed.online,
        client_id="c2",
        claimed_aggregate_key=fed.online.aggregate_key,
    )
    p, p2 = small_group.p, small_group.p2
    bad_uploads = [
        (ClientCiphertext(good.segments[:-1], good.first, good.second), CiphertextShapeError),
        (ClientCiphertext((*good.segments, mpz(5)), good.first, good.second), CiphertextShapeError),
        (ClientCiphertext((p2 + 1, *good.segments[1:]), good.first, good.second), CiphertextShapeError),
        (ClientCiphertext((p * 3, *good.segments[1:]), good.first, good.second), CiphertextShapeError),
        (ClientCiphertext(good.segments, p - 1, good.second), InvalidGroupElementError),
        (ClientCiphertext(good.segments, good.first, mpz(0)), InvalidGroupElementError),
        (ClientCiphertext(good.segments, good.first, p + 4), InvalidGroupElementError),
        (ClientCiphertext(good.segments, cts["c0"].first, good.second), ProtocolOrderError),
    ]
    for upload, error in bad_uploads:
        with pytest.raises(error):
            aggregation.add_upload("c2", upload)
    with pytest.raises(NotAMemberError):
        aggregation.add_upload("mallory", good)
    with pytest.raises(ProtocolOrderError):
        aggregation.add_upload("c0", cts["c0"])
    with pytest.raises(ProtocolOrderError):
        aggregation.challenge()  # c2 has not uploaded yet
    with pytest.raises(ProtocolOrderError):
        aggregation.add_response("c0", small_group.power(2))
    aggregation.add_upload("c2", good)
    attempts["c2"] = attempt
    challenge, firsts = aggregation.challenge()
    with pytest.raises(InvalidGroupElementError):
        aggregation.add_response("c0", small_group.p - 1)
    with pytest.raises(ProtocolOrderError):
        aggregation.decrypt(fed.secret)
    for cid, att in attempts.items():
        aggregation.add_response(cid, fed.clients[cid].respond(att, challenge, firsts))
    with pytest.raises(ProtocolOrderError):
        aggregation.add_response("c0", small_group.power(2))
    sums = fed.params.layout.unpack(aggregation.decrypt(fed.secret), 10, n_clients=3)
    expected = expected + fed.params.encoding.encode(vectors["c2"], np.random.default_rng(9)).values
    assert np.array_equal(sums, expected)


@pytest.mark.parametrize("component", ["first", "second"])
def test_an_upload_element_outside_the_subgroup_is_caught_by_the_batch_check(
    small_group: GroupParams, component: str
) -> None:
    fed = Federation.create(small_group, 4, 10)
    vectors = _vectors(4, 10)
    aggregation, _, _, _ = fed.upload_all({k: v for k, v in vectors.items() if k != "c3"})
    ct, _ = fed.clients["c3"].encrypt(
        fed.params.layout.pack(fed.params.encoding.encode(vectors["c3"]).values),
        fed.online,
        client_id="c3",
        claimed_aggregate_key=fed.online.aggregate_key,
    )
    z = _q_prime_part(small_group)
    bad = getattr(ct, component) * z % small_group.p
    assert gmpy2.jacobi(bad, small_group.p) == 1  # passes the per-element screen ...
    tampered = dataclasses.replace(ct, **{component: bad})
    aggregation.add_upload("c3", tampered)  # ... so it is folded in, pending the batch test
    assert aggregation.verify_uploads() == {
        "c3": f"{'A' if component == 'first' else 'B'} of 'c3' is not in the order-q subgroup"
    }
    assert aggregation.culprits.keys() == {"c3"}
    with pytest.raises(InvalidGroupElementError, match="c3"):
        aggregation.challenge()  # the attempt cannot complete: the protocol retries without c3
    # The honest members' elements were all in the batch and passed.
    assert aggregation.verify_uploads() == {}


def test_client_refuses_a_first_component_outside_the_subgroup(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3, 10)
    aggregation, attempts, _, _ = fed.upload_all(_vectors(3, 10))
    _, firsts = aggregation.challenge()
    # A quadratic residue with an order-q' component: only the batch test can see it.
    bad = {**firsts, "c2": firsts["c2"] * _q_prime_part(small_group) % small_group.p}
    with pytest.raises(InvalidGroupElementError, match="c2"):
        fed.clients["c0"].respond(attempts["c0"], compute_challenge(small_group, bad.values()), bad)
    assert not attempts["c0"].answered  # refused before answering: it may still answer the honest one


def test_a_round_in_a_dsa_group_checks_elements_one_by_one(group_2048_dsa: GroupParams) -> None:
    """Groups generated before p = 2qq' + 1 (DSA parameters) keep working, without batch tests."""
    fed = Federation.create(group_2048_dsa, 3, 100)
    vectors = _vectors(3, 100)
    aggregation, attempts, cts, expected = fed.upload_all(vectors)
    fed.respond_all(aggregation, attempts)
    sums = fed.params.layout.unpack(aggregation.decrypt(fed.secret), 100, n_clients=3)
    assert np.array_equal(sums, expected)
    stray = gmpy2.powmod(2, group_2048_dsa.q, group_2048_dsa.p)  # order divides (p-1)/q
    tampered = dataclasses.replace(cts["c0"], first=cts["c0"].first * stray % group_2048_dsa.p)
    with pytest.raises(InvalidGroupElementError):  # caught on arrival, nothing folded
        Aggregation(fed.online, fed.secret.n_segments).add_upload("c0", tampered)


def test_aggregation_refuses_too_small_sets(small_group: GroupParams) -> None:
    kp = ClientKeyPair.generate(small_group)
    with pytest.raises(OnlineSetTooSmallError):
        Aggregation(OnlineSet.from_registry(small_group, {"a": kp.public}), 3)


def test_online_set_rejects_bad_and_duplicate_keys(small_group: GroupParams) -> None:
    kp = ClientKeyPair.generate(small_group)
    with pytest.raises(InvalidGroupElementError):
        OnlineSet.from_registry(small_group, {"a": kp.public, "b": small_group.p - 1})
    with pytest.raises(AggregateKeyMismatchError):
        OnlineSet.from_registry(small_group, {"a": kp.public, "b": kp.public})
