"""Protocol v2 message types: plain frozen dataclasses, no encoding logic.

Every message on the broker is a :class:`Signed` value: a :class:`Header`
(type, protocol version, federation id, round id, attempt, sender), one body
dataclass from this module, and an Ed25519 signature by the sender over the
canonical bytes of header and body. All conversion to and from bytes lives in
:mod:`fedcast.shared.wire.serde`; docs/PROTOCOL.md specifies the bytes.

Big integers are Python ints here; on the wire they are fixed-width big-endian
byte strings (group elements mod N: ceil(|N|/8) bytes; segment ciphertexts mod
N^2: ceil(|N^2|/8) bytes; proof responses: 65 bytes). Proofs are the plain
dataclasses of :mod:`fedcast.shared.crypto.proofs`. Secrets (enrollment and admin
tokens) never appear in a repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from fedcast.shared.crypto.proofs import DlogProof, EqualityProof

__all__ = [
    "KEYSERVER_ROUND",
    "PROTOCOL_VERSION",
    "Ack",
    "AggregatorInfo",
    "Announce",
    "Body",
    "Challenge",
    "EnrollRequest",
    "ErrorReply",
    "FirstComponent",
    "Header",
    "KeysReply",
    "KeysRequest",
    "MemberEnvelope",
    "MessageType",
    "ParamsReply",
    "ParamsRequest",
    "Ready",
    "RegisterAggregator",
    "RegistryEntry",
    "Response",
    "RevokeRequest",
    "RoundResult",
    "RoundStatus",
    "Signed",
    "Upload",
]

PROTOCOL_VERSION = 2
#: Key-service RPCs are not part of a round: they carry round 0, attempt 0.
KEYSERVER_ROUND = 0


class MessageType(StrEnum):
    """The ``type`` field on the wire (short ASCII strings)."""

    ENROLL = "enroll"
    GET_PARAMS = "get_params"
    PARAMS = "params"
    GET_KEYS = "get_keys"
    KEYS = "keys"
    REGISTER_AGGREGATOR = "register_aggregator"
    REVOKE = "revoke"
    ACK = "ack"
    ERROR = "error"
    ANNOUNCE = "announce"
    READY = "ready"
    ENVELOPE = "envelope"
    UPLOAD = "upload"
    CHALLENGE = "challenge"
    RESPONSE = "response"
    RESULT = "result"


class RoundStatus(StrEnum):
    COMPLETE = "complete"  # the aggregate was decrypted and applied
    RETRY = "retry"  # this attempt failed (dropout); a new attempt with the survivors follows
    FAILED = "failed"  # the round is abandoned (too few clients, attempts exhausted)


def _mask(secret: str) -> str:
    return "<redacted>" if secret else "''"


# -- key service ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnrollRequest:
    """Client -> key service: register pk_i and the Ed25519 verify key with a device token.

    Signed with the new verify key itself (possession of the signing key), and
    carrying a proof of knowledge of sk_i (possession of the ElGamal key; see
    fedcast.shared.crypto.pok: it stops rogue-key registrations).
    """

    token: str = field(repr=False)
    elgamal_public: int
    verify_key: bytes  # 32 bytes, raw Ed25519
    proof: DlogProof

    def __repr__(self) -> str:
        return f"EnrollRequest(token={_mask(self.token)}, verify_key={self.verify_key.hex()[:16]}...)"


@dataclass(frozen=True)
class ParamsRequest:
    """Anyone -> key service: send the system parameters and the aggregator's public keys."""


@dataclass(frozen=True)
class AggregatorInfo:
    """The aggregator's public keys as registered at the key service, each with its proof."""

    beta: int  # g^alpha, an element mod N
    beta_proof: DlogProof
    delivery: int  # D = g^delta, an element mod N
    delivery_proof: DlogProof
    verify_key: bytes  # the aggregator's Ed25519 verify key (32 bytes)


@dataclass(frozen=True)
class ParamsReply:
    """Key service -> requester. ``aggregator`` is None until the aggregator registered.

    Only N travels: g and the segment bases are derived by every party itself.
    """

    modulus: int
    frac_bits: int
    clip: float
    max_clients: int
    min_online: int
    aggregator: AggregatorInfo | None


@dataclass(frozen=True)
class KeysRequest:
    """Client or aggregator -> key service: registry entries of these client ids."""

    client_ids: tuple[str, ...]


@dataclass(frozen=True)
class RegistryEntry:
    client_id: str
    elgamal_public: int
    verify_key: bytes
    revoked: bool


@dataclass(frozen=True)
class KeysReply:
    """Entries for the requested ids that exist (unknown ids are simply absent)."""

    entries: tuple[RegistryEntry, ...]


@dataclass(frozen=True)
class RegisterAggregator:
    """Aggregator -> key service: publish beta, D (with proofs) and the aggregator verify key."""

    token: str = field(repr=False)
    info: AggregatorInfo

    def __repr__(self) -> str:
        key = self.info.verify_key.hex()[:16]
        return f"RegisterAggregator(token={_mask(self.token)}, verify_key={key}...)"


@dataclass(frozen=True)
class RevokeRequest:
    """Operator -> key service: revoke a client (needs the admin token)."""

    token: str = field(repr=False)
    client_id: str

    def __repr__(self) -> str:
        return f"RevokeRequest(token={_mask(self.token)}, client_id={self.client_id!r})"


@dataclass(frozen=True)
class Ack:
    """Key service -> requester: the request took effect (or already had: requests are idempotent)."""


@dataclass(frozen=True)
class ErrorReply:
    """Any RPC server -> requester: a typed refusal. ``reason`` is a FedcastError reason code."""

    reason: str
    message: str


# -- rounds --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Announce:
    """Aggregator -> all clients (broadcast): round r, attempt 0 is open; say ready."""

    task: str  # e.g. "fedmf", "fedavg-logreg"
    n_params: int
    ready_window_s: float


@dataclass(frozen=True)
class Ready:
    """Client -> aggregator: online for this round."""


@dataclass(frozen=True)
class Upload:
    """Client -> aggregator: K_i, the u data segments, (A_i, B_i) and A_i's proof of knowledge.

    ``first_signature`` is the member's Ed25519 signature over its first
    component, its proof and ``context_digest`` (see serde.first_component_bytes), so
    the aggregator can forward them in the challenge and every member can check they
    came from i, made for the same attempt context.
    ``context_digest`` names the attempt context the proof was made for
    (``AttemptContext.digest``: federation, model digest, round, attempt, S), so a
    member's signed upload whose proof fails *for that context* proves it cheated,
    while an honest member shown another S by an equivocating aggregator cannot be
    framed.
    """

    key_segment: int
    segments: tuple[int, ...]
    first: int
    second: int
    first_proof: DlogProof
    first_signature: bytes
    context_digest: bytes


@dataclass(frozen=True)
class FirstComponent:
    member: str
    value: int
    proof: DlogProof
    signature: bytes


@dataclass(frozen=True)
class MemberEnvelope:
    """Aggregator -> one member: the online set S of this attempt and the sealed model.

    The client recomputes pkbar_S from the members' keys *as registered at the key
    service* and refuses unless it equals ``aggregate_key``. ``evidence`` holds the
    signed RESPONSE messages (raw wire bytes) and ``first_evidence`` the signed first
    components of members proven to have cheated after a challenge for this same
    model: without them, a client that already answered for this model refuses to
    upload again (docs/PROTOCOL.md 5.4).
    """

    members: tuple[str, ...]  # sorted, unique
    aggregate_key: int  # pkbar_S = prod pk_i^2
    min_online: int
    sealed_model: bytes  # AES-256-GCM, see fedcast.shared.crypto.delivery
    evidence: tuple[bytes, ...] = ()
    first_evidence: tuple[FirstComponent, ...] = ()


@dataclass(frozen=True)
class Challenge:
    """Aggregator -> members: R and every member's signed, proven first component."""

    challenge: int
    firsts: tuple[FirstComponent, ...]


@dataclass(frozen=True)
class Response:
    """Client -> aggregator: T_i = (R^2)^sk_i, its proof, and which R it answers.

    ``challenge_digest`` (fedcast.shared.crypto.elgamal.challenge_digest of R) lets other
    members tell a wrong share for *their* R (evidence of cheating) from an
    answer to another challenge.
    """

    share: int
    proof: EqualityProof
    challenge_digest: bytes


@dataclass(frozen=True)
class RoundResult:
    """Aggregator -> all (broadcast): how the attempt ended."""

    status: RoundStatus
    members: tuple[str, ...]
    detail: str


Body = (
    EnrollRequest
    | ParamsRequest
    | ParamsReply
    | KeysRequest
    | KeysReply
    | RegisterAggregator
    | RevokeRequest
    | Ack
    | ErrorReply
    | Announce
    | Ready
    | MemberEnvelope
    | Upload
    | Challenge
    | Response
    | RoundResult
)


@dataclass(frozen=True)
class Header:
    type: MessageType
    federation: str
    round: int
    attempt: int
    sender: str
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Signed:
    """A decoded message and its signature (checking: :func:`fedcast.shared.wire.serde.verify`)."""

    header: Header
    body: Body
    signature: bytes = field(repr=False)
