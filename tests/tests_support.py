"""Small helpers shared by test modules (not fixtures)."""

from __future__ import annotations

from typing import Any


def ids_in_arrival_order(rows: list[Any]) -> list[str]:
    """Inbox rows sorted by arrival (``seq``), as ids."""
    return [row.id for row in sorted(rows, key=lambda r: r.seq)]
