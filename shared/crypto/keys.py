"""Key material: client key pairs and the aggregator's key (crypto note section 1, "Keys").

* Client C_i: sk_i uniform of 256 bits, pk_i = g^sk_i mod N. Everyone uses
  pkbar_i = pk_i^2 (the element rule), so pkbar_S = prod pkbar_i = g^(2 sk_S).
* Aggregator: one alpha with beta = g^alpha (a single key: per-segment keys leaked
  linear relations between segments, crypto note 0.2), and a separate delivery key
  (delta, D = g^delta) used only to derive the per-client model-delivery keys
  (:mod:`fedcast.shared.crypto.delivery`). Both public halves travel with a proof of
  knowledge bound to the federation and the aggregator's Ed25519 key
  (:func:`aggregator_key_context`), and clients use only their squares.

Secrets never appear in ``repr``/``str`` (so never in logs); serialization is
to plain dicts of hex strings (JSON or msgpack friendly, never pickle). File
handling lives in :mod:`fedcast.shared.keystore`, not here: this module does no I/O.
Documents written by protocol version 1 (a prime-modulus group) are refused
with :class:`~fedcast.shared.errors.LegacyStateError`, never converted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gmpy2 import mpz

from fedcast.shared.crypto.group import EXPONENT_BITS, GroupParams, frame
from fedcast.shared.crypto.proofs import DlogProof, prove_dlog, verify_dlog
from fedcast.shared.errors import InvalidKeyError, InvalidProofError, LegacyStateError

__all__ = [
    "REDACTED",
    "AggregatorPublicKey",
    "AggregatorSecretKey",
    "ClientKeyPair",
    "aggregator_key_context",
]

REDACTED = "<redacted>"
_SECRET_FORMAT_CLIENT = "fedcast.client-secret-key"  # noqa: S105 - a format tag
_SECRET_FORMAT_AGGREGATOR = "fedcast.aggregator-secret-key"  # noqa: S105 - a format tag
_FORMAT_VERSION = 2
_CONTEXT_AGGREGATOR = b"fedcast/v2/aggregator-key"


def _exponent(value: Any, what: str) -> mpz:
    if isinstance(value, bool):
        raise InvalidKeyError(f"{what} is not an integer")
    try:
        x = mpz(value)
    except (TypeError, ValueError) as exc:
        raise InvalidKeyError(f"{what} is not an integer") from exc
    if not 0 < x < (1 << EXPONENT_BITS):
        raise InvalidKeyError(f"{what} is outside [1, 2^{EXPONENT_BITS})")
    return x


def _hex(value: Any) -> str:
    return format(mpz(value), "x")


def _parse_hex(data: Any, key: str) -> int:
    try:
        return int(str(data[key]), 16)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidKeyError(f"key field {key!r} is missing or not hex") from exc


def _check_format(data: Any, expected: str) -> None:
    if not isinstance(data, dict) or data.get("format") != expected:
        raise InvalidKeyError(f"not a {expected} document")
    if data.get("version") == 1:
        raise LegacyStateError(
            f"this {expected} was written by fedcast protocol version 1, whose group hides nothing; "
            "it is refused: delete it and let fedcast 2 create new keys in a new federation "
            "(docs/SECURITY.md)"
        )
    if data.get("version") != _FORMAT_VERSION:
        raise InvalidKeyError(f"unsupported {expected} version {data.get('version')!r}")


def _check_group(data: Any, group: GroupParams, what: str) -> None:
    stored = data.get("group")
    if not isinstance(stored, dict) or stored.get("n") != group.to_dict()["n"]:
        raise InvalidKeyError(f"{what} belongs to a different group")


def aggregator_key_context(federation: str, verify_key: bytes) -> bytes:
    """What the proofs of the aggregator's beta and delivery key are bound to."""
    return frame(_CONTEXT_AGGREGATOR, federation.encode(), bytes(verify_key))


@dataclass(frozen=True)
class ClientKeyPair:
    """A client's ElGamal key pair (sk_i, pk_i = g^sk_i mod N)."""

    group: GroupParams
    secret: mpz = field(repr=False)
    public: mpz

    @classmethod
    def generate(cls, group: GroupParams) -> ClientKeyPair:
        sk = group.random_exponent()
        return cls(group, sk, group.power(sk))

    @classmethod
    def from_secret(cls, group: GroupParams, secret: Any) -> ClientKeyPair:
        sk = _exponent(secret, "client secret key")
        return cls(group, sk, group.power(sk))

    @property
    def public_square(self) -> mpz:
        """pkbar_i = pk_i^2: what everyone, the owner included, computes with."""
        return self.public * self.public % self.group.n

    def __repr__(self) -> str:
        return f"ClientKeyPair(public={_hex(self.public)[:16]}..., secret={REDACTED})"

    __str__ = __repr__

    def to_secret_dict(self) -> dict[str, Any]:
        """Secret-key document (the group travels with it so a key is never used in another)."""
        return {
            "format": _SECRET_FORMAT_CLIENT,
            "version": _FORMAT_VERSION,
            "group": self.group.to_dict(),
            "secret": _hex(self.secret),
        }

    @classmethod
    def from_secret_dict(cls, data: Any, group: GroupParams) -> ClientKeyPair:
        """Load a secret-key document and check it belongs to ``group``."""
        _check_format(data, _SECRET_FORMAT_CLIENT)
        _check_group(data, group, "client key")
        return cls.from_secret(group, _parse_hex(data, "secret"))


@dataclass(frozen=True)
class AggregatorPublicKey:
    """What clients need of the aggregator: beta = g^alpha and the delivery key D, with proofs."""

    group: GroupParams
    beta: mpz
    delivery: mpz
    beta_proof: DlogProof
    delivery_proof: DlogProof

    @classmethod
    def verified(
        cls,
        group: GroupParams,
        beta: Any,
        delivery: Any,
        beta_proof: DlogProof,
        delivery_proof: DlogProof,
        *,
        federation: str,
        verify_key: bytes,
    ) -> AggregatorPublicKey:
        """Check both elements (element rule) and both proofs; raise InvalidKeyError otherwise."""
        context = aggregator_key_context(federation, verify_key)
        try:
            verify_dlog(group, beta, beta_proof, frame(b"beta", context), "aggregator beta")
            verify_dlog(
                group, delivery, delivery_proof, frame(b"delivery", context), "aggregator delivery key"
            )
        except InvalidProofError as exc:
            raise InvalidKeyError(str(exc)) from exc
        if mpz(beta) * mpz(beta) % group.n == mpz(delivery) * mpz(delivery) % group.n:
            raise InvalidKeyError("the aggregator's beta and delivery key coincide")
        return cls(group, mpz(beta), mpz(delivery), beta_proof, delivery_proof)

    @property
    def beta_square(self) -> mpz:
        """betabar = beta^2 = g^(2 alpha): the only form clients compute with."""
        return self.beta * self.beta % self.group.n

    @property
    def delivery_square(self) -> mpz:
        return self.delivery * self.delivery % self.group.n


@dataclass(frozen=True)
class AggregatorSecretKey:
    """alpha and the delivery secret delta; only the aggregator holds it."""

    group: GroupParams
    alpha: mpz = field(repr=False)
    delivery_secret: mpz = field(repr=False)

    @classmethod
    def generate(cls, group: GroupParams) -> AggregatorSecretKey:
        alpha, delta = group.random_exponent(), group.random_exponent()
        while delta == alpha:  # pragma: no cover - probability 2^-256
            delta = group.random_exponent()
        return cls(group, alpha, delta)

    @classmethod
    def from_secrets(cls, group: GroupParams, alpha: Any, delivery_secret: Any) -> AggregatorSecretKey:
        a = _exponent(alpha, "alpha")
        delta = _exponent(delivery_secret, "delivery secret")
        if a == delta:
            raise InvalidKeyError("alpha and the delivery secret must differ")
        return cls(group, a, delta)

    def public(self, *, federation: str, verify_key: bytes) -> AggregatorPublicKey:
        """The public key with fresh proofs bound to ``federation`` and the Ed25519 ``verify_key``."""
        group = self.group
        context = aggregator_key_context(federation, verify_key)
        beta, delivery = group.power(self.alpha), group.power(self.delivery_secret)
        return AggregatorPublicKey(
            group,
            beta,
            delivery,
            prove_dlog(group, self.alpha, beta, frame(b"beta", context)),
            prove_dlog(group, self.delivery_secret, delivery, frame(b"delivery", context)),
        )

    def __repr__(self) -> str:
        return f"AggregatorSecretKey(alpha={REDACTED}, delivery_secret={REDACTED})"

    __str__ = __repr__

    def to_secret_dict(self) -> dict[str, Any]:
        return {
            "format": _SECRET_FORMAT_AGGREGATOR,
            "version": _FORMAT_VERSION,
            "group": self.group.to_dict(),
            "alpha": _hex(self.alpha),
            "delivery_secret": _hex(self.delivery_secret),
        }

    @classmethod
    def from_secret_dict(cls, data: Any, group: GroupParams) -> AggregatorSecretKey:
        _check_format(data, _SECRET_FORMAT_AGGREGATOR)
        _check_group(data, group, "aggregator key")
        return cls.from_secrets(group, _parse_hex(data, "alpha"), _parse_hex(data, "delivery_secret"))
