"""Key material: client key pairs and the aggregator's segment and delivery keys.

* Client C_i: sk_i uniform in [1, q-1], pk_i = g^sk_i (paper 3.1, KeyGen).
* Aggregator: alpha_1..alpha_u with beta_j = g^alpha_j, one pair per packed
  segment (paper 3.4; with one key E_ij / E_ik would cancel the masks and leak
  m_j - m_k), plus a separate delivery key (delta, D = g^delta) used only to
  derive the per-client model-delivery keys (:mod:`shared.crypto.delivery`).

Secrets never appear in ``repr``/``str`` (so never in logs); serialization is
to plain dicts of hex strings (JSON or msgpack friendly, never pickle). File
handling lives in :mod:`shared.keystore`, not here: this module does no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gmpy2
from gmpy2 import mpz

from shared.crypto.batch import check_elements
from shared.crypto.group import GroupParams
from shared.errors import InvalidKeyError

__all__ = [
    "REDACTED",
    "AggregatorPublicKey",
    "AggregatorSecretKey",
    "ClientKeyPair",
]

REDACTED = "<redacted>"
_SECRET_FORMAT_CLIENT = "fedcast.client-secret-key"  # noqa: S105 - a format tag
_SECRET_FORMAT_AGGREGATOR = "fedcast.aggregator-secret-key"  # noqa: S105 - a format tag
_PUBLIC_FORMAT_AGGREGATOR = "fedcast.aggregator-public-key"
_FORMAT_VERSION = 1


def _exponent(group: GroupParams, value: Any, what: str) -> mpz:
    try:
        x = mpz(value)
    except (TypeError, ValueError) as exc:
        raise InvalidKeyError(f"{what} is not an integer") from exc
    if not 0 < x < group.q:
        raise InvalidKeyError(f"{what} is outside [1, q-1]")
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
    if data.get("version") != _FORMAT_VERSION:
        raise InvalidKeyError(f"unsupported {expected} version {data.get('version')!r}")


@dataclass(frozen=True)
class ClientKeyPair:
    """A client's ElGamal key pair (sk_i, pk_i = g^sk_i)."""

    group: GroupParams
    secret: mpz = field(repr=False)
    public: mpz

    @classmethod
    def generate(cls, group: GroupParams) -> ClientKeyPair:
        sk = group.random_exponent()
        return cls(group, sk, group.power(sk))

    @classmethod
    def from_secret(cls, group: GroupParams, secret: Any) -> ClientKeyPair:
        sk = _exponent(group, secret, "client secret key")
        return cls(group, sk, group.power(sk))

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
        if data.get("group", {}).get("p") != group.to_dict()["p"]:
            raise InvalidKeyError("client key belongs to a different group")
        return cls.from_secret(group, _parse_hex(data, "secret"))


@dataclass(frozen=True)
class AggregatorPublicKey:
    """What clients need of the aggregator: beta_1..beta_u and the delivery key D."""

    group: GroupParams
    betas: tuple[mpz, ...]
    delivery: mpz

    @property
    def n_segments(self) -> int:
        return len(self.betas)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _PUBLIC_FORMAT_AGGREGATOR,
            "version": _FORMAT_VERSION,
            "betas": [_hex(b) for b in self.betas],
            "delivery": _hex(self.delivery),
        }

    @classmethod
    def from_dict(cls, data: Any, group: GroupParams) -> AggregatorPublicKey:
        """Parse and validate every element (each is received from another party)."""
        _check_format(data, _PUBLIC_FORMAT_AGGREGATOR)
        raw = data.get("betas")
        if not isinstance(raw, list) or not raw:
            raise InvalidKeyError("aggregator public key has no betas")
        try:
            values = [int(str(b), 16) for b in raw]
            betas = tuple(check_elements(group, values, lambda j: f"beta_{j + 1}"))
        except ValueError as exc:
            raise InvalidKeyError("a beta is not hex") from exc
        if len(set(betas)) != len(betas):
            raise InvalidKeyError("aggregator betas are not distinct")
        delivery = group.check_element(_parse_hex(data, "delivery"), "delivery key")
        return cls(group, betas, delivery)


@dataclass(frozen=True)
class AggregatorSecretKey:
    """alpha_1..alpha_u and the delivery secret delta; only the aggregator holds it."""

    group: GroupParams
    alphas: tuple[mpz, ...] = field(repr=False)
    delivery_secret: mpz = field(repr=False)
    public: AggregatorPublicKey = field(repr=False)

    @classmethod
    def generate(cls, group: GroupParams, n_segments: int) -> AggregatorSecretKey:
        if n_segments < 1:
            raise InvalidKeyError("need at least one segment key")
        alphas: list[mpz] = []
        seen: set[int] = set()
        while len(alphas) < n_segments:  # distinct keys, so no two segments share a mask
            a = group.random_exponent()
            if int(a) not in seen:
                seen.add(int(a))
                alphas.append(a)
        return cls.from_secrets(group, alphas, group.random_exponent())

    @classmethod
    def from_secrets(
        cls, group: GroupParams, alphas: Sequence[Any], delivery_secret: Any
    ) -> AggregatorSecretKey:
        checked = tuple(_exponent(group, a, f"alpha_{j + 1}") for j, a in enumerate(alphas))
        if not checked:
            raise InvalidKeyError("need at least one segment key")
        if len(set(checked)) != len(checked):
            raise InvalidKeyError("segment keys are not distinct")
        delta = _exponent(group, delivery_secret, "delivery secret")
        betas = tuple(gmpy2.powmod(group.g, a, group.p) for a in checked)
        public = AggregatorPublicKey(group, betas, group.power(delta))
        return cls(group, checked, delta, public)

    @property
    def n_segments(self) -> int:
        return len(self.alphas)

    def __repr__(self) -> str:
        return f"AggregatorSecretKey(n_segments={self.n_segments}, alphas={REDACTED})"

    __str__ = __repr__

    def to_secret_dict(self) -> dict[str, Any]:
        return {
            "format": _SECRET_FORMAT_AGGREGATOR,
            "version": _FORMAT_VERSION,
            "group": self.group.to_dict(),
            "alphas": [_hex(a) for a in self.alphas],
            "delivery_secret": _hex(self.delivery_secret),
        }

    @classmethod
    def from_secret_dict(cls, data: Any, group: GroupParams) -> AggregatorSecretKey:
        _check_format(data, _SECRET_FORMAT_AGGREGATOR)
        if data.get("group", {}).get("p") != group.to_dict()["p"]:
            raise InvalidKeyError("aggregator key belongs to a different group")
        raw = data.get("alphas")
        if not isinstance(raw, list):
            raise InvalidKeyError("aggregator key has no alphas")
        try:
            alphas = [int(str(a), 16) for a in raw]
        except ValueError as exc:
            raise InvalidKeyError("an alpha is not hex") from exc
        return cls.from_secrets(group, alphas, _parse_hex(data, "delivery_secret"))
