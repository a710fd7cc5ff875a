"""One finding per (scenario, construction), and how ``fedcast attack`` prints them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

__all__ = ["Finding", "render_json", "render_text"]


@dataclass(frozen=True)
class Finding:
    """The outcome of one attack against one construction.

    ``recovered`` is True when the attacker reached its goal, decided by comparing
    its output with the true secret values (for ``bad-share``: the round failed and
    the culprit was not named). ``construction`` is ``v2`` for the scheme as built,
    ``v1`` for protocol version 1, ``v2-without-<defense>`` for v2 minus one defense,
    ``plaintext`` for FedMF without any secure aggregation.
    """

    scenario: str
    construction: str
    recovered: bool
    detail: str


def render_json(findings: Sequence[Finding]) -> str:
    """A JSON list, one object per finding with keys scenario, construction, recovered, detail."""
    return json.dumps([asdict(f) for f in findings], indent=1)


def render_text(findings: Sequence[Finding], header: str) -> str:
    """Readable lines: the header, then one block per scenario with one line per construction."""
    lines = [header]
    width = max((len(f.construction) for f in findings), default=0)
    scenario = None
    for f in findings:
        if f.scenario != scenario:
            scenario = f.scenario
            lines.append("")
            lines.append(f"{scenario}")
        verdict = "RECOVERED    " if f.recovered else "not recovered"
        lines.append(f"  {f.construction:<{width}}  {verdict}  {f.detail}")
    return "\n".join(lines)
