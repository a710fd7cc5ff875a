"""fedcast's common library: crypto, encoding, packing, learning, wire format, protocol.

Everything below this package is pure code over ints, bytes and numpy arrays
(no sockets, no asyncio); the services in ``services/`` are thin shells around it.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
