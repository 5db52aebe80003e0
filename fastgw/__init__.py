"""fastgw: a small, fast API gateway."""

from __future__ import annotations

__version__ = "0.1.0"


def speedups_active() -> bool:
    """True when the compiled ``fastgw._speedups`` runs the hot path, False for the twin."""
    from . import speedups

    return speedups.IMPLEMENTATION == "c"
