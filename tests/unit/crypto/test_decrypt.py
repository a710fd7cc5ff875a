"""The aggregator's decryption: every failure is a DecryptionError, wrong shares are named, persistence."""

from __future__ import annotations

import dataclasses
import json

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpz

from fedcast.shared.crypto.elgamal import Aggregation, Decryptor
from fedcast.shared.crypto.group import EXPONENT_BITS, GroupParams
from fedcast.shared.crypto.keys import AggregatorSecretKey
from fedcast.shared.crypto.proofs import prove_equality
from fedcast.shared.errors import DecryptionError, InvalidGroupElementError, ProtocolOrderError

from .helpers import FEDERATION, Federation, Upload

N_PARAMS = 50  # three segments with the 512-bit group


def vectors(fed: Federation) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {cid: rng.normal(0, 1, N_PARAMS) for cid in fed.online.members}


@pytest.fixture
def fed(small_group: GroupParams) -> Federation:
    federation = Federation.create(small_group, 4, N_PARAMS)
    assert federation.n_segments >= 3
    return federation


def respond(fed: Federation, upload: Upload, wrong: dict[str, mpz] | None = None) -> None:
    """Every member answers; members in ``wrong`` send that share instead (with their honest proof)."""
    challenge, firsts = upload.aggregation.challenge()
    for cid, attempt in upload.attempts.items():
        share, proof = fed.clients[cid].respond(attempt, challenge, firsts)
        upload.aggregation.add_response(cid, (wrong or {}).get(cid, share), proof)


def test_honest_round_has_no_culprits(fed: Federation) -> None:
    sums, upload = fed.run_round(vectors(fed))
    assert np.array_equal(sums, upload.expected)
    assert upload.aggregation.share_culprits() == {} and upload.aggregation.culprits == {}


@pytest.mark.parametrize("culprit", ["c0", "c2", "c3"])
def test_a_wrong_share_fails_decryption_and_is_named(fed: Federation, culprit: str) -> None:
    upload = fed.upload_all(vectors(fed))
    respond(fed, upload, {culprit: fed.group.power(5)})  # a valid element, not (R^2)^sk
    with pytest.raises(DecryptionError):
        upload.aggregation.decrypt(fed.decryptor)
    assert set(upload.aggregation.share_culprits()) == {culprit}
    assert set(upload.aggregation.culprits) == {culprit}


def test_two_wrong_shares_are_both_named(fed: Federation) -> None:
    upload = fed.upload_all(vectors(fed))
    n = fed.group.n
    challenge, _ = upload.aggregation.challenge()
    honest_c1 = gmpy2.powmod(challenge * challenge % n, fed.keypairs["c1"].secret, n)
    respond(fed, upload, {"c1": honest_c1 * fed.group.g % n, "c3": fed.group.power(7)})
    with pytest.raises(DecryptionError):
        upload.aggregation.decrypt(fed.decryptor)
    assert set(upload.aggregation.share_culprits()) == {"c1", "c3"}


def test_a_sign_flipped_share_is_the_same_share(fed: Federation) -> None:
    """Only T^2 is used: a member that sends -T (proven as sent) decrypts like one that sends T."""
    upload = fed.upload_all(vectors(fed))
    challenge, firsts = upload.aggregation.challenge()
    n = fed.group.n
    for cid, attempt in upload.attempts.items():
        share, proof = fed.clients[cid].respond(attempt, challenge, firsts)
        if cid == "c1":
            kp = fed.keypairs[cid]
            share = n - share
            proof = prove_equality(
                fed.group, kp.secret, kp.public, challenge**2 % n, share, fed.context.response_context(cid)
            )
        upload.aggregation.add_response(cid, share, proof)
    sums = upload.aggregation.decrypt(fed.decryptor)
    assert np.array_equal(fed.params.layout.unpack(sums, N_PARAMS, n_clients=4), upload.expected)
    assert upload.aggregation.share_culprits() == {}


def _tampered_upload(fed: Federation, **changes: object) -> Upload:
    """c0..c2 upload honestly, c3 uploads its ciphertext with ``changes``; every share is honest."""
    upload = fed.upload_all({cid: v for cid, v in vectors(fed).items() if cid != "c3"})
    ct, upload.attempts["c3"] = fed.encrypt("c3", fed.zero_segments())
    upload.aggregation.add_upload("c3", dataclasses.replace(ct, **{k: v(ct) for k, v in changes.items()}))
    respond(fed, upload)
    return upload


def test_a_tampered_data_segment_is_refused_with_no_culprit(fed: Federation) -> None:
    n2 = fed.group.n2
    upload = _tampered_upload(
        fed, segments=lambda ct: (ct.segments[0], ct.segments[1] * 7 % n2, *ct.segments[2:])
    )
    with pytest.raises(DecryptionError, match="segment 1"):
        upload.aggregation.decrypt(fed.decryptor)
    assert upload.aggregation.share_culprits() == {}  # every share was honest: nobody to name


def test_a_tampered_key_segment_is_refused(fed: Federation) -> None:
    n2 = fed.group.n2
    upload = _tampered_upload(fed, key_segment=lambda ct: ct.key_segment * 7 % n2)
    with pytest.raises(DecryptionError, match="key segment"):
        upload.aggregation.decrypt(fed.decryptor)


def test_the_s_sum_bound_refuses_an_inflated_key_segment(fed: Federation) -> None:
    """(1 + d N) K adds d to s; d = |S| 2^256 pushes s_sum over the bound |S| 2^256."""
    n, n2 = fed.group.n, fed.group.n2
    inflate = (len(fed.online) << EXPONENT_BITS) % n
    upload = _tampered_upload(fed, key_segment=lambda ct: (1 + inflate * n) * ct.key_segment % n2)
    with pytest.raises(DecryptionError, match="out of range"):
        upload.aggregation.decrypt(fed.decryptor)
    # A shift that stays below the bound is still caught, by the data segments' strict L.
    upload = _tampered_upload(fed, key_segment=lambda ct: (1 + n) * ct.key_segment % n2)
    with pytest.raises(DecryptionError, match="data segment"):
        upload.aggregation.decrypt(fed.decryptor)


def test_decryption_needs_the_right_key_and_shape(fed: Federation) -> None:
    _, upload = fed.run_round(vectors(fed))
    other = AggregatorSecretKey.generate(fed.group)
    with pytest.raises(DecryptionError):
        upload.aggregation.decrypt(
            Decryptor(other, federation=FEDERATION, n_segments=fed.n_segments, max_members=16)
        )
    with pytest.raises(DecryptionError):  # the h_j of another federation
        upload.aggregation.decrypt(
            Decryptor(fed.secret, federation="plant-8", n_segments=fed.n_segments, max_members=16)
        )
    with pytest.raises(DecryptionError):
        upload.aggregation.decrypt(Decryptor(fed.secret, federation=FEDERATION, n_segments=1, max_members=16))
    assert upload.aggregation.decrypt(fed.decryptor)  # the right one still works


def test_response_order_and_screening(fed: Federation) -> None:
    upload = fed.upload_all({cid: v for cid, v in vectors(fed).items() if cid != "c3"})
    g, n = fed.group.g, fed.group.n
    proof = fed.public.beta_proof  # any proof object: responses are screened before proofs are read
    with pytest.raises(ProtocolOrderError):
        upload.aggregation.add_response("c0", g, proof)  # type: ignore[arg-type]
    ct, upload.attempts["c3"] = fed.encrypt("c3", fed.zero_segments())
    upload.aggregation.add_upload("c3", ct)
    challenge, firsts = upload.aggregation.challenge()
    for bad in (n - 1, 0, 1, n):
        with pytest.raises(InvalidGroupElementError):
            upload.aggregation.add_response("c0", bad, proof)  # type: ignore[arg-type]
    with pytest.raises(ProtocolOrderError):
        upload.aggregation.decrypt(fed.decryptor)  # responses missing
    upload.aggregation.add_response(
        "c0", *fed.clients["c0"].respond(upload.attempts["c0"], challenge, firsts)
    )
    with pytest.raises(ProtocolOrderError):
        upload.aggregation.add_response("c0", g, proof)  # type: ignore[arg-type]


# -- persistence -----------------------------------------------------------------------------------


def test_uploads_state_round_trip_then_decrypts(fed: Federation) -> None:
    upload = fed.upload_all(vectors(fed))
    challenge, firsts = upload.aggregation.challenge()
    state = json.loads(json.dumps(upload.aggregation.uploads_state()))  # plain JSON
    restored = Aggregation.from_uploads_state(fed.online, fed.context, fed.n_segments, state)
    assert restored.challenge() == (challenge, firsts)
    with pytest.raises(ProtocolOrderError):
        restored.add_upload("c0", upload.ciphertexts["c0"])  # nobody uploads twice, even after a restart
    for cid, attempt in upload.attempts.items():
        restored.add_response(cid, *fed.clients[cid].respond(attempt, challenge, firsts))
    sums = fed.params.layout.unpack(restored.decrypt(fed.decryptor), N_PARAMS, n_clients=4)
    assert np.array_equal(sums, upload.expected)


def test_only_complete_uploads_without_culprits_are_persisted_and_restored(fed: Federation) -> None:
    upload = fed.upload_all({cid: v for cid, v in vectors(fed).items() if cid != "c3"})
    with pytest.raises(ProtocolOrderError):
        upload.aggregation.uploads_state()  # c3 missing
    ct, _ = fed.encrypt("c3", fed.zero_segments())
    upload.aggregation.add_upload("c3", ct)
    # The proofs need not be checked yet: by default the aggregator sends (and persists) the
    # challenge unchecked and checks the proofs only if a member stays silent.
    unchecked = upload.aggregation.uploads_state()
    upload.aggregation.challenge(verify=False)
    assert upload.aggregation.uploads_state() == unchecked
    assert upload.aggregation.verify_uploads() == {}
    state = upload.aggregation.uploads_state()
    assert state == unchecked
    n = fed.group.n
    broken = [
        {**state, "e": state["e"][:-1]},
        {**state, "firsts": {m: v for m, v in state["firsts"].items() if m != "c3"}},
        {k: v for k, v in state.items() if k != "k"},
        {**state, "d": "not hex"},
    ]
    for bad in broken:
        with pytest.raises(ProtocolOrderError):
            Aggregation.from_uploads_state(fed.online, fed.context, fed.n_segments, bad)
    minus_one = {
        **state,
        "firsts": {**state["firsts"], "c3": [format(n - 1, "x"), *state["firsts"]["c3"][1:]]},
    }
    with pytest.raises(InvalidGroupElementError):
        Aggregation.from_uploads_state(fed.online, fed.context, fed.n_segments, minus_one)


def test_a_set_with_a_culprit_is_never_persisted(fed: Federation) -> None:
    """An attempt whose proofs named a culprit cannot complete: there is nothing to persist."""
    aggregation = Aggregation(fed.online, fed.context, fed.n_segments)
    for cid in fed.online.members:
        ct, _ = fed.encrypt(cid, fed.zero_segments())
        if cid == "c2":
            bad = dataclasses.replace(ct.proof, response=ct.proof.response + 1)
            ct = dataclasses.replace(ct, proof=bad)
        aggregation.add_upload(cid, ct)
    aggregation.uploads_state()  # unchecked, the culprit is not known yet
    assert set(aggregation.verify_uploads()) == {"c2"}
    with pytest.raises(ProtocolOrderError, match="culprits"):
        aggregation.uploads_state()
