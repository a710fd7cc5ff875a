"""The fedcast command line and benchmarks (the library lives in ``shared``, services in ``services``)."""

from __future__ import annotations

from fedcast.shared import __version__

__all__ = ["__version__"]
