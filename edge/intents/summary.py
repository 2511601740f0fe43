"""Intents in one line each: what ``mailslot intent list`` and the MCP ``intents_list``
tool show. Pure: values in, values out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edge.intents.model import Intent, Match
from shared.match import describe


def summarize(match: Match) -> str:
    """One line: the criteria that are set, or ``(everything)``."""
    parts = []
    for name in ("type", "source_kind", "source_name", "session"):
        if (patterns := getattr(match, name)) is not None:
            parts.append(f"{name}={','.join(patterns)}")
    if match.priority is not None:
        parts.append(f"priority={','.join(str(p) for p in match.priority)}")
    parts.extend(f"[{describe(p)}]" for p in match.all)
    if match.any:
        parts.append("any[" + " | ".join(describe(p) for p in match.any) + "]")
    return " ".join(parts) or "(everything)"


def intent_rows(intents: Iterable[Intent]) -> list[dict[str, Any]]:
    """One JSON-able row per intent: id, description, paused, critical, the summary, the
    match as set and the route's kind."""
    return [
        {
            "id": i.id,
            "description": i.description,
            "paused": i.paused,
            "critical": i.critical,
            "summary": summarize(i.match),
            "match": i.match.model_dump(mode="json", exclude_defaults=True),
            "route": i.route.kind,
        }
        for i in intents
    ]
