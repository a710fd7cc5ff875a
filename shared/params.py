"""System parameters of a federation: the group plus the packing spec (paper 3.1, SysGen).

The super-increasing vector a of the paper is fully determined by the slot
width b (a_t = 2^(b*t)), and b by the encoding (clip bound C, fraction bits f)
and the largest online set allowed (``max_clients``), so those three numbers
and the group are all a party needs to agree on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.encoding import FixedPointEncoding
from fedcast.shared.errors import ConfigurationError, InvalidParametersError, LegacyStateError
from fedcast.shared.packing import PackingLayout

__all__ = ["DEFAULT_MAX_CLIENTS", "SystemParams"]

#: Largest online set the slot width is sized for (b = 29 bits with the default encoding,
#: 70 slots per 2048-bit segment, ~7.3 bytes per parameter).
DEFAULT_MAX_CLIENTS = 1000
_FORMAT = "fedcast.system-params"
_VERSION = 2


@dataclass(frozen=True)
class SystemParams:
    """Group, fixed-point encoding and the maximum online-set size; the layout follows."""

    group: GroupParams
    encoding: FixedPointEncoding = field(default_factory=FixedPointEncoding)
    max_clients: int = DEFAULT_MAX_CLIENTS
    _layout: PackingLayout = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.max_clients, int) or self.max_clients < 2:
            raise ConfigurationError("max_clients must be an int >= 2")
        # Build the layout once now so an impossible combination fails at construction.
        object.__setattr__(
            self,
            "_layout",
            PackingLayout.for_sum(
                max_value=self.encoding.max_encoded,
                max_clients=self.max_clients,
                plaintext_bits=self.group.plaintext_bits,
            ),
        )

    @property
    def layout(self) -> PackingLayout:
        """Slot width b and slots per segment k derived from the fields above."""
        return self._layout

    def n_segments(self, n_params: int) -> int:
        return self.layout.n_segments(n_params)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "group": self.group.to_dict(),
            "frac_bits": self.encoding.frac_bits,
            "clip": self.encoding.clip,
            "max_clients": self.max_clients,
        }

    @classmethod
    def from_dict(cls, data: Any, *, allow_insecure: bool = False) -> SystemParams:
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise InvalidParametersError("not a fedcast system-parameters document")
        if data.get("version") == 1:
            raise LegacyStateError(
                "these system parameters were written by fedcast protocol version 1 (a public prime "
                "modulus, which hides nothing): refused. Start the key service with a new state "
                "directory to generate an RSA modulus, then re-provision devices (docs/SECURITY.md)"
            )
        if data.get("version") != _VERSION:
            raise InvalidParametersError(f"unsupported system-parameters version {data.get('version')!r}")
        group = GroupParams.from_dict(data.get("group"), allow_insecure=allow_insecure)
        try:
            encoding = FixedPointEncoding(int(data["frac_bits"]), float(data["clip"]))
            return cls(group, encoding, int(data["max_clients"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidParametersError(f"system parameters are malformed: {exc}") from exc
