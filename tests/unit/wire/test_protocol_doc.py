"""docs/PROTOCOL.md section 9 (the worked example) against the specification and the reference code.

Three things are checked. (1) Every hex value of section 9 (``kat`` blocks: ``name = hex``
lines; ``dump`` blocks: annotated messages, the hex before the comments) equals what
``worked_example.compute()`` derives from the specification with fixed randomness, and
section 9 documents exactly those values. (2) The reference code agrees with that derivation:
it derives the same g and h_j, contexts and digests, encodes the same bytes, verifies the
example's proofs, opens the sealed model and decrypts the example's aggregate to the
documented sum. (3) Proofs made by the reference code verify under the equations the
document states. So the document cannot drift from the code unnoticed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

import numpy as np
import pytest
from gmpy2 import mpz

from fedcast.shared.crypto.delivery import delivery_key, open_model
from fedcast.shared.crypto.elgamal import (
    Aggregation,
    AttemptContext,
    ClientAttempt,
    ClientCiphertext,
    Decryptor,
    OnlineSet,
    ProofSampler,
    SignedFirst,
    challenge_digest,
    check_challenge,
    proof_sample_size,
)
from fedcast.shared.crypto.group import GroupParams, fdh, frame
from fedcast.shared.crypto.keys import (
    AggregatorPublicKey,
    AggregatorSecretKey,
    ClientKeyPair,
    aggregator_key_context,
)
from fedcast.shared.crypto.pok import enrollment_context, verify_possession
from fedcast.shared.crypto.proofs import DlogProof, EqualityProof, prove_dlog, prove_equality
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.encoding import FixedPointEncoding
from fedcast.shared.errors import SignatureError
from fedcast.shared.learning.tasks import model_to_bytes
from fedcast.shared.params import SystemParams
from fedcast.shared.protocol.client import firsts_binding, model_digest
from fedcast.shared.wire import serde
from fedcast.shared.wire.messages import (
    Challenge,
    EnrollRequest,
    FirstComponent,
    Header,
    MessageType,
    Ready,
    Response,
    Upload,
)
from tests.unit.wire import worked_example as wx

DOC = Path(__file__).resolve().parents[3] / "docs" / "PROTOCOL.md"
_BLOCK = re.compile(r"^```(kat|dump)(?: (\S+))?\n(.*?)^```$", re.S | re.M)
_HEX = re.compile(r"[0-9a-f]+")


def section_9(text: str) -> str:
    start = text.index("\n## 9. Worked example")
    return text[start:]


def parse(section: str) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(kat values, dumps) of the worked example; raises on anything that does not parse."""
    values: dict[str, bytes] = {}
    dumps: dict[str, bytes] = {}
    for kind, name, body in _BLOCK.findall(section):
        if kind == "kat":
            current: str | None = None
            chunks: dict[str, list[str]] = {}
            for line in body.splitlines():
                match = re.fullmatch(r"(\S+) = ([0-9a-f]+)", line)
                if match:
                    current = match.group(1)
                    assert current not in chunks and current not in values, f"{current} documented twice"
                    chunks[current] = [match.group(2)]
                else:
                    assert current is not None and line.startswith(" "), (
                        f"stray line in a kat block: {line!r}"
                    )
                    assert _HEX.fullmatch(line.strip()), f"not hex: {line!r}"
                    chunks[current].append(line.strip())
            values.update({key: bytes.fromhex("".join(parts)) for key, parts in chunks.items()})
        else:
            assert name and name not in dumps, f"dump {name!r} missing a name or documented twice"
            hex_parts = []
            for line in body.splitlines():
                head = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
                assert re.fullmatch(r"[0-9a-f]{2}( [0-9a-f]{2})*|[0-9a-f]+", head), f"not hex: {line!r}"
                hex_parts.append(head.replace(" ", ""))
            dumps[name] = bytes.fromhex("".join(hex_parts))
    return values, dumps


@pytest.fixture(scope="module")
def example() -> wx.Example:
    return wx.compute()


@pytest.fixture(scope="module")
def documented() -> tuple[dict[str, bytes], dict[str, bytes]]:
    return parse(section_9(DOC.read_text(encoding="utf-8")))


# -- (1) the document ------------------------------------------------------------------------------


def test_the_document_is_version_2() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert text.startswith("# fedcast protocol, version 2\n")
    # the sections other code refers to by number
    for heading in ("### 5.4 Dropouts", "### 7.9 Model delivery", "## 9. Worked example"):
        assert heading in text


def test_the_parser_refuses_what_it_cannot_read() -> None:
    with pytest.raises(AssertionError):
        parse("```kat\nname = 00ff\nstray\n```\n")
    with pytest.raises(AssertionError):
        parse("```kat\nname = 00\nname = 01\n```\n")
    with pytest.raises(AssertionError):
        parse("```dump x\nzz  not hex\n```\n")
    assert parse("```kat\na = 00ff\n    ee\n```\n```dump m\n98  array\n   0102\n```\n") == (
        {"a": bytes.fromhex("00ffee")},
        {"m": bytes.fromhex("980102")},
    )


def test_every_documented_value_is_the_computed_one(
    example: wx.Example, documented: tuple[dict[str, bytes], dict[str, bytes]]
) -> None:
    values, dumps = documented
    assert dumps, "no message dumps found in section 9"
    assert set(values) | set(dumps) == set(example.values), (
        "section 9 and worked_example.py list other values"
    )
    for name, value in values.items():
        assert value == example.values[name], f"{name} in docs/PROTOCOL.md is not what the code computes"
    for name, value in dumps.items():
        assert value == example.values[name], f"the dump of {name} in docs/PROTOCOL.md is not the message"


def test_the_document_is_the_generator_output(example: wx.Example) -> None:
    """Every block is exactly what the generator prints, labels and line breaks included."""
    text = DOC.read_text(encoding="utf-8")
    assert wx.refresh(text, example) == text


# -- (2) the reference code agrees with the example -----------------------------------------------


def test_group_derivation(example: wx.Example, small_group: GroupParams) -> None:
    ints = example.ints
    assert example.n == int(small_group.n)
    assert ints["g"] == int(small_group.g) == ints["g_x"] ** 2 % example.n
    assert int(fdh(small_group.n, b"fedcast/v2/g")) == ints["g"]
    assert [int(h) for h in small_group.segment_bases(wx.FEDERATION, 2)] == [ints["h_1"], ints["h_2"]]
    assert (
        wx.frame(b"a", b"", b"bc")
        == frame(b"a", b"", b"bc")
        == bytes.fromhex("000000016100000000000000026263")
    )


def test_ready_and_enroll(example: wx.Example, small_group: GroupParams) -> None:
    v, ints = example.values, example.ints
    ctx = serde.WireContext.from_group(small_group)
    ready = serde.decode(v["ready"], None)
    assert ready.body == Ready() and serde.signing_bytes(ready, None) == v["ready_signing_bytes"]
    serde.verify(ready, wx.CLIENT_KEY.verify_key, None)
    keypair = ClientKeyPair.from_secret(small_group, ints["sk_1"])
    assert int(keypair.public) == ints["pk_1"]
    context = enrollment_context(wx.FEDERATION, "client-0001", wx.CLIENT_KEY.verify_key)
    assert context == v["enroll_context"]
    verify_possession(small_group, ints["pk_1"], DlogProof(ints["enroll_t"], ints["enroll_z"]), context)
    enroll = serde.decode(v["enroll"], ctx)
    serde.verify(enroll, wx.CLIENT_KEY.verify_key, ctx)
    assert enroll.body == EnrollRequest(
        wx.TOKEN, ints["pk_1"], wx.CLIENT_KEY.verify_key, DlogProof(ints["enroll_t"], ints["enroll_z"])
    )
    assert ints["enroll_c"] < 2**128 and ints["enroll_k"] < 2**512 and ints["response_c_1"] < 2**128
    assert ints["enroll_z"] == ints["enroll_k"] + ints["enroll_c"] * ints["sk_1"] < 2**513


def test_aggregator_keys(example: wx.Example, small_group: GroupParams) -> None:
    v, ints = example.values, example.ints
    secret = AggregatorSecretKey.from_secrets(small_group, ints["alpha"], ints["delta"])
    assert int(small_group.power(secret.alpha)) == ints["beta"]
    assert int(small_group.power(secret.delivery_secret)) == ints["D"]
    assert (
        frame(b"beta", aggregator_key_context(wx.FEDERATION, wx.AGGREGATOR_KEY.verify_key))
        == v["beta_context"]
    )
    public = AggregatorPublicKey.verified(
        small_group,
        ints["beta"],
        ints["D"],
        example.proofs["beta"],  # type: ignore[arg-type]
        example.proofs["delivery"],  # type: ignore[arg-type]
        federation=wx.FEDERATION,
        verify_key=wx.AGGREGATOR_KEY.verify_key,
    )
    assert int(public.beta) == ints["beta"]


def test_model_delivery(example: wx.Example, small_group: GroupParams) -> None:
    v, ints = example.values, example.ints
    assert model_to_bytes(np.array(wx.MODEL)) == v["model_bytes"]
    assert model_digest(v["model_bytes"]) == v["model_digest"]
    key = delivery_key(small_group, ints["delta"], ints["pk_1"])
    assert key == v["delivery_key_1"] == delivery_key(small_group, ints["sk_1"], ints["D"])
    opened = open_model(
        key, v["sealed_model_1"], federation_id=wx.FEDERATION, round_id=wx.ROUND, client_id="client-0001"
    )
    assert opened == v["model_bytes"]
    assert v["sealed_model_1"][:12] == v["delivery_nonce_1"]


def test_packing_and_encoding(example: wx.Example, small_group: GroupParams) -> None:
    params = SystemParams(small_group, FixedPointEncoding(wx.FRAC_BITS, wx.CLIP), wx.MAX_CLIENTS)
    assert (params.layout.slot_bits, params.layout.slots_per_segment) == (29, 17)
    encoded = params.encoding.encode(np.array(wx.VECTORS["client-0001"]), np.random.default_rng(1))
    assert encoded.values.tolist() == [294912, 180224, 458752, 262144]
    assert [int(m) for m in params.layout.pack(encoded.values)] == [example.ints["m_1"]]
    text = " ".join(DOC.read_text(encoding="utf-8").split())
    for member, vector in wx.VECTORS.items():
        values = params.encoding.encode(np.array(vector), np.random.default_rng(2)).values.tolist()
        row = f"| {member} | ({', '.join(str(x) for x in vector)}) | ({', '.join(str(x) for x in values)}) |"
        assert row in text, row


def test_the_attempt_decrypts_with_the_reference_code(example: wx.Example, small_group: GroupParams) -> None:
    """The example's uploads, challenge and responses go through the reference aggregator."""
    v, ints, proofs = example.values, example.ints, example.proofs
    ctx = serde.WireContext.from_group(small_group)
    registry = {
        m: int(ClientKeyPair.from_secret(small_group, ints[f"sk_{i}"]).public)
        for i, m in enumerate(wx.MEMBERS, 1)
    }
    online = OnlineSet.from_registry(small_group, registry)
    assert int(online.aggregate_key) == ints["aggregate_key"]
    context = AttemptContext(wx.FEDERATION, v["model_digest"], wx.ROUND, wx.ATTEMPT, wx.MEMBERS)
    assert context.digest == v["attempt_digest"]
    assert context.first_context("client-0001") == v["first_context_1"]
    assert context.response_context("client-0001") == v["response_context_1"]

    upload = serde.decode(v["upload_1"], ctx)
    serde.verify(upload, wx.CLIENT_KEY.verify_key, ctx)
    assert isinstance(upload.body, Upload)
    assert upload.body.key_segment == ints["K_1"] and upload.body.segments == (ints["E_11"],)
    # the upload names the attempt its proof was made for: the real AttemptContext.digest
    assert upload.body.context_digest == context.digest == v["attempt_digest"]
    # the first-component signature covers A_1, its proof and the attempt digest (section 4)
    assert upload.body.first_proof == proofs["first_1"]
    signed = serde.FirstComponentSigned(ints["A_1"], upload.body.first_proof, context.digest)
    first_bytes = serde.first_component_bytes(wx.FEDERATION, wx.ROUND, wx.ATTEMPT, "client-0001", signed, ctx)
    assert first_bytes == v["first_signing_bytes_1"]
    first_args = (wx.FEDERATION, wx.ROUND, wx.ATTEMPT, "client-0001")
    serde.verify_first(wx.CLIENT_KEY.verify_key, upload.body.first_signature, *first_args, signed, ctx)
    # a member shown another S (another attempt digest) checks it against its own digest: refused
    other_context = AttemptContext(wx.FEDERATION, v["model_digest"], wx.ROUND, wx.ATTEMPT, wx.MEMBERS[:2])
    with pytest.raises(SignatureError):
        serde.verify_first(
            wx.CLIENT_KEY.verify_key,
            upload.body.first_signature,
            *first_args,
            serde.FirstComponentSigned(ints["A_1"], upload.body.first_proof, other_context.digest),
            ctx,
        )

    aggregation = Aggregation(online, context, 1)
    for i, member in enumerate(wx.MEMBERS, 1):
        proof = proofs[f"first_{i}"]
        assert isinstance(proof, DlogProof)
        ciphertext = ClientCiphertext(
            mpz(ints[f"K_{i}"]), (mpz(ints[f"E_{i}1"]),), mpz(ints[f"A_{i}"]), mpz(ints[f"B_{i}"]), proof
        )
        aggregation.add_upload(member, ciphertext)
    assert aggregation.verify_uploads() == {}  # the documented proof hash is the code's
    r, firsts = aggregation.challenge()
    assert int(r) == ints["R"]
    assert challenge_digest(small_group, r) == v["challenge_digest"]
    listed = tuple(FirstComponent(m, int(f.value), f.proof, b"\x00" * 64) for m, f in firsts.items())
    assert firsts_binding(Challenge(int(r), listed)) == v["firsts_binding_1"]
    client_view = ClientAttempt("client-0001", online, context, mpz(ints["A_1"]))
    signed = {m: SignedFirst(f.value, f.proof) for m, f in firsts.items()}
    assert int(check_challenge(small_group, client_view, ints["R"], signed)) == ints["R"] ** 2 % example.n

    response = serde.decode(v["response_1"], ctx)
    serde.verify(response, wx.CLIENT_KEY.verify_key, ctx)
    assert isinstance(response.body, Response) and response.body.challenge_digest == v["challenge_digest"]
    for i, member in enumerate(wx.MEMBERS, 1):
        proof = proofs[f"response_{i}"]
        assert isinstance(proof, EqualityProof)
        aggregation.add_response(member, ints[f"T_{i}"], proof)
    assert response.body.proof == proofs["response_1"] and response.body.share == ints["T_1"]

    secret = AggregatorSecretKey.from_secrets(small_group, ints["alpha"], ints["delta"])
    decryptor = Decryptor(secret, federation=wx.FEDERATION, n_segments=1, max_members=wx.MAX_CLIENTS)
    sums = aggregation.decrypt(decryptor)
    assert [int(s) for s in sums] == [ints["M_1"]]
    assert aggregation.share_culprits() == {}  # every documented response proof verifies
    params = SystemParams(small_group, FixedPointEncoding(wx.FRAC_BITS, wx.CLIP), wx.MAX_CLIENTS)
    slots = params.layout.unpack(sums, 4, n_clients=3)
    assert slots.tolist() == [622592, 819200, 917504, 1040384]
    assert params.encoding.decode_sum(slots, 3).tolist() == [-2.5, 0.5, 2.0, 3.875]
    expected = np.sum([wx.VECTORS[m] for m in wx.MEMBERS], axis=0)
    assert params.encoding.decode_sum(slots, 3).tolist() == expected.tolist()


def test_the_documented_proof_sample_is_the_reference_sampler(
    example: wx.Example, small_group: GroupParams
) -> None:
    """Section 5.3's sampling rule, with section 9.7's key, is what the reference client checks."""
    v, ints = example.values, example.ints
    keypair = ClientKeyPair.from_secret(small_group, ints["sk_1"])
    sampler = ProofSampler.for_client(keypair)
    registry = {
        m: ClientKeyPair.from_secret(small_group, ints[f"sk_{i}"]).public for i, m in enumerate(wx.MEMBERS, 1)
    }
    online = OnlineSet.from_registry(small_group, registry)
    context = AttemptContext(wx.FEDERATION, v["model_digest"], wx.ROUND, wx.ATTEMPT, wx.MEMBERS)
    attempt = ClientAttempt("client-0001", online, context, mpz(ints["A_1"]), 3)
    assert proof_sample_size(3, 3) == 2  # the example: both other proofs
    assert sorted(sampler.choose(attempt, ints["R"], 3)) == ["client-0002", "client-0003"]
    # 100 members (k = 89 of 99): the 89 smallest ranks under the documented key and HMAC input
    members = ("client-0001", *(f"client-{i:04d}" for i in range(2, 101)))
    keys = {m: ClientKeyPair.generate(small_group).public for m in members[1:]}
    big = OnlineSet.from_registry(small_group, {"client-0001": keypair.public, **keys})
    big_context = AttemptContext(wx.FEDERATION, v["model_digest"], wx.ROUND, wx.ATTEMPT, big.members)
    big_attempt = ClientAttempt("client-0001", big, big_context, mpz(ints["A_1"]), 3)

    def rank(member: str) -> bytes:
        message = big_context.digest + v["R"] + member.encode()
        return hmac.new(v["sample_key_1"], message, hashlib.sha256).digest()

    expected = sorted(members[1:], key=rank)[: proof_sample_size(100, 3)]
    assert len(expected) == 89 and sampler.choose(big_attempt, ints["R"], 3) == expected


def test_the_documented_firsts_binding_is_the_client_s(example: wx.Example) -> None:
    """Section 5.3's binding: members sorted, (u32 length, id, A with one leading zero byte)."""
    ints = example.ints
    proof = DlogProof(1, 2)
    firsts = [FirstComponent(m, ints[f"A_{i}"], proof, b"\x00" * 64) for i, m in enumerate(wx.MEMBERS, 1)]
    binding = firsts_binding(Challenge(ints["R"], tuple(firsts)))
    assert binding == example.values["firsts_binding_1"]
    # the order of the list, the proofs, the signatures and R do not enter; the members and A do
    other = [FirstComponent(f.member, f.value, DlogProof(3, 4), b"\x01" * 64) for f in reversed(firsts)]
    assert firsts_binding(Challenge(5, tuple(other))) == binding
    changed = [*firsts[:2], FirstComponent("client-0003", ints["A_3"] + 1, proof, b"\x00" * 64)]
    assert firsts_binding(Challenge(ints["R"], tuple(changed))) != binding
    renamed = [*firsts[:2], FirstComponent("client-0004", ints["A_3"], proof, b"\x00" * 64)]
    assert firsts_binding(Challenge(ints["R"], tuple(renamed))) != binding
    # the bytes for small A, as documented: A = 0x0100 is 01 00 (length 2), A = 0xff is ff (length 1)
    stream = (
        b"fedcast/v2/firsts-binding"
        + b"\x00\x00\x00\x01a\x00\x00\x00\x02\x01\x00"
        + b"\x00\x00\x00\x01b\x00\x00\x00\x01\xff"
    )
    expected = hashlib.sha256(stream).digest()
    small = (FirstComponent("b", 0xFF, proof, b"\x00" * 64), FirstComponent("a", 0x100, proof, b"\x00" * 64))
    assert firsts_binding(Challenge(1, small)) == expected


def test_a_wrong_documented_value_would_be_caught(example: wx.Example, small_group: GroupParams) -> None:
    """The cross-checks can fail: a proof over another context, or a changed share, is refused."""
    ints = example.ints
    bad = DlogProof(ints["enroll_t"], ints["enroll_z"] + 1)
    with pytest.raises(Exception, match="proof"):
        verify_possession(small_group, ints["pk_1"], bad, example.values["enroll_context"])
    online = OnlineSet.from_registry(
        small_group,
        {
            m: int(ClientKeyPair.from_secret(small_group, ints[f"sk_{i}"]).public)
            for i, m in enumerate(wx.MEMBERS, 1)
        },
    )
    context = AttemptContext(
        wx.FEDERATION, example.values["model_digest"], wx.ROUND, wx.ATTEMPT + 1, wx.MEMBERS
    )
    aggregation = Aggregation(online, context, 1)  # attempt 1: the attempt-0 proofs must fail
    for i, member in enumerate(wx.MEMBERS, 1):
        proof = example.proofs[f"first_{i}"]
        assert isinstance(proof, DlogProof)
        aggregation.add_upload(
            member,
            ClientCiphertext(
                mpz(ints[f"K_{i}"]), (mpz(ints[f"E_{i}1"]),), mpz(ints[f"A_{i}"]), mpz(ints[f"B_{i}"]), proof
            ),
        )
    assert set(aggregation.verify_uploads()) == set(wx.MEMBERS)


# -- (3) the reference prover against the documented verification equations ------------------------


def _documented_dlog_ok(n: int, g: int, x: int, proof: DlogProof, context: bytes) -> bool:
    e = (n.bit_length() + 7) // 8
    c = int.from_bytes(
        hashlib.sha256(
            wx.frame(
                b"fedcast/v2/proof/dlog", *(v.to_bytes(e, "big") for v in (n, x, proof.commitment)), context
            )
        ).digest()[:16],  # c: the first 16 bytes of the hash (128 bits)
        "big",
    )
    big_g = g * g % n
    lhs = pow(big_g, proof.response, n)
    rhs = proof.commitment * pow(x, 2 * c, n) % n
    return proof.response < 2**513 and lhs * lhs % n == rhs * rhs % n


def _documented_equality_ok(
    n: int, g: int, x: int, h: int, y: int, proof: EqualityProof, context: bytes
) -> bool:
    e = (n.bit_length() + 7) // 8
    parts = (n, x, h, y, proof.commitment_g, proof.commitment_h)
    c = int.from_bytes(
        hashlib.sha256(
            wx.frame(b"fedcast/v2/proof/dleq", *(v.to_bytes(e, "big") for v in parts), context)
        ).digest()[:16],  # c: the first 16 bytes of the hash (128 bits)
        "big",
    )
    z, big_g = proof.response, g * g % n

    def same(a: int, b: int) -> bool:
        return a * a % n == b * b % n

    return (
        z < 2**513
        and same(pow(big_g, z, n), proof.commitment_g * pow(x, 2 * c, n) % n)
        and same(pow(h, z, n), proof.commitment_h * pow(y, c, n) % n)
    )


@pytest.mark.parametrize("trial", range(3))
def test_reference_proofs_verify_under_the_documented_equations(trial: int, small_group: GroupParams) -> None:
    n, g = int(small_group.n), int(small_group.g)
    keypair = ClientKeyPair.generate(small_group)
    context = f"context {trial}".encode()
    proof = prove_dlog(small_group, keypair.secret, keypair.public, context)
    assert proof.response < 2**513
    assert _documented_dlog_ok(n, g, int(keypair.public), proof, context)
    assert not _documented_dlog_ok(n, g, int(keypair.public), proof, context + b"!")
    h = pow(int(small_group.power(small_group.random_exponent())), 2, n)
    share = pow(h, int(keypair.secret), n)
    eq = prove_equality(small_group, keypair.secret, keypair.public, h, share, context)
    assert _documented_equality_ok(n, g, int(keypair.public), h, share, eq, context)
    assert not _documented_equality_ok(n, g, int(keypair.public), h, share * g % n, eq, context)


# -- (4) the other numbers the document states -------------------------------------------------------


def test_documented_sizes_at_2048_bits(group_2048: GroupParams) -> None:
    text = " ".join(DOC.read_text(encoding="utf-8").split())
    ctx = serde.WireContext.from_group(group_2048)
    key = SigningKeyPair.generate()
    e = int(group_2048.n) - 5
    proof = DlogProof(e, 2**512)  # a response that needs all 65 bytes

    def size(mtype: MessageType, body: object, sender: str = "client-0001") -> int:
        header = Header(mtype, wx.FEDERATION, wx.ROUND, wx.ATTEMPT, sender)
        return len(serde.encode(header, body, key, ctx))  # type: ignore[arg-type]

    ready = size(MessageType.READY, Ready())
    enroll = size(MessageType.ENROLL, EnrollRequest(wx.TOKEN, e, key.verify_key, proof))
    response = size(MessageType.RESPONSE, Response(e, EqualityProof(e, e, 2**512), b"\x00" * 32))
    upload = [
        size(MessageType.UPLOAD, Upload(e, (e,) * u, e, e, proof, b"\x00" * 64, b"\x00" * 32))
        for u in (1, 2, 127, 128)
    ]
    fixed = upload[0] - 512
    assert upload == [fixed + 512, fixed + 1024, fixed + 127 * 512, fixed + 128 * 512 + 2]
    challenge = [
        size(
            MessageType.CHALLENGE,
            Challenge(e, tuple(FirstComponent(f"client-{i:04d}", e, proof, b"\x00" * 64) for i in range(m))),
            "aggregator",
        )
        for m in (1, 2, 15, 16)
    ]
    per_member = challenge[1] - challenge[0]
    base = challenge[0] - per_member
    assert challenge[2:] == [base + 15 * per_member, base + 16 * per_member + 2]
    assert (
        f"`ready` {ready} bytes, `enroll` {enroll} bytes, `response` {response} bytes, "
        f"`upload` {fixed:,} + 512 u bytes" in text
    )
    assert f"`challenge` {base} + {per_member} m bytes for m members with 11-character ids (m < 16;" in text
    layout = SystemParams(group_2048).layout
    assert (layout.slot_bits, layout.slots_per_segment) == (29, 70)
    assert "b = 29, k = 70" in text and "E = 256 and C = 512" in text
