"""``mailslot explain``: an interrupt's decision trace, from the activity log, in plain
words. Kept apart from ``edge.store.activity`` (the tamper-evident file itself): wording
changes often, the log format must not."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge.store.activity import Entry


def explain(interrupt: str, entries: Sequence[Entry], *, tz: tzinfo = UTC) -> str:
    """The decision trace of one interrupt in plain words: a heading, then one line per
    step, times in ``tz``. ``entries`` are its entries in log order (``trace``)."""
    mine = [e for e in entries if e.interrupt == interrupt]
    if not mine:
        return f"no record of interrupt {interrupt} in the activity log"
    first = mine[0].at.astimezone(tz)
    kind = next((e.type for e in mine if e.type), None)
    several = len({e.intent for e in mine if e.intent}) > 1
    lines = [f"interrupt {interrupt}" + (f" ({kind})" if kind else "")
             + f", {first:%Y-%m-%d}, times in {_zone_name(tz, first)}:"]
    day = first.date()
    for entry in mine:
        local = entry.at.astimezone(tz)
        stamp = f"{local:%H:%M:%S}" if local.date() == day else f"{local:%Y-%m-%d %H:%M:%S}"
        day = local.date()
        lines.append(f"{stamp} {describe(entry, name_intent=several)}")
    return "\n".join(lines)


#: Steps whose reason reads as ``…: rule (reason)``; the others as ``… (reason)``.
_COLON_STEPS = frozenset({"rejected", "suppressed", "judged", "outcome", "intents_refused"})
#: Detail keys holding seconds (also any key ending in ``_s``/``_seconds``; ``_ms``: ms).
_DURATION_KEYS = frozenset({"cooldown", "window", "delay", "timeout", "elapsed", "age",
                            "wait", "active_for", "dedupe", "coalesce"})


def describe(entry: Entry, *, name_intent: bool = True) -> str:
    """One entry in plain words, without its time. Known detail keys shape the sentence
    (``reason``, ``rule``, ``until``, ``route``, ``outcome``, ``wake``…); any other key
    follows as ``key value``, so details the engine adds later still show."""
    d = {k: v for k, v in entry.detail.items() if v is not None and v != ""}
    rule = str(d.pop("rule")).replace("_", " ") if "rule" in d else None
    reason = str(d.pop("reason")) if "reason" in d else None
    phrase = _phrase(entry, d, name_intent)
    if reason and reason in phrase:
        reason = None  # the sentence already says it
    extras = [_pair(k, v, entry.at) for k, v in d.items()]
    if entry.step in _COLON_STEPS and (rule or reason):
        phrase += f": {rule or reason}"
        notes = [reason if rule else None, *extras]
    else:
        notes = [reason or rule, *extras]
    words = [n for n in notes if n]
    return phrase + (f" ({', '.join(words)})" if words else "")


def _phrase(entry: Entry, d: dict[str, Any], name_intent: bool) -> str:
    """The sentence for ``entry.step``; pops the detail keys it uses."""
    step, intent = entry.step, entry.intent
    named = f" for intent {intent}" if intent and name_intent else ""
    if step == "received":
        text = f"received {entry.type or 'an interrupt'}"
        if "priority" in d:
            text += f" ({d.pop('priority')})"
        if "source" in d:
            source = d.pop("source")
            parts = source.values() if isinstance(source, dict) else str(source).split("/")
            text += " from " + " ".join(str(p) for p in parts if p not in (None, "", "None"))
        return text
    if step == "verified":
        return "verified" + (f", signed by {d.pop('signer')}" if "signer" in d else "")
    if step == "matched":
        return f"matched intent {intent}" if intent else "matched"
    if step == "unmatched":
        return "no intent matched"
    if step == "judged":
        failure, wake = d.pop("failure", None), d.pop("wake", None)
        answer = f"failed ({failure})" if failure else "wake" if wake else "no wake"
        return f"judge of intent {intent} answered {answer}" if intent else f"judge answered {answer}"
    if step == "suppressed":
        return f"suppressed by intent {intent}" if intent else "suppressed"
    if step == "deferred":
        until = d.pop("until", None) or d.pop("due", None)
        zone = d.pop("zone", None) or d.pop("timezone", None)
        return "deferred" + (f" until {_when(until, zone)}" if until else "") + named
    if step == "coalesced":
        due = d.pop("due", None)
        return "coalesced" + named + (f", wake due {_when(due, None)}" if due else "")
    if step == "woken":
        via = d.pop("route", None) or d.pop("via", None)
        return "woke" + (f" via {via}" if via else "") + named
    if step == "delivered":
        via = d.pop("route", None) or d.pop("to", None)
        return "delivered" + (f" via {via}" if via else "") + named
    if step == "outcome":
        return f"outcome {d.pop('outcome', 'unknown')}" + named
    if step == "activity":
        session = d.pop("session", None)
        return "user active" + (f" in session {session}" if session else "")
    return step.replace("_", " ") + named


def _when(value: Any, zone: Any) -> str:
    """A stored time as ``2026-11-25 08:00 Europe/Berlin``, or with its own offset
    (``2026-11-25 08:00 +01:00``) when no zone is named."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.utcoffset() is None:
        return str(value)
    name = ""
    if zone:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            moment, name = moment.astimezone(ZoneInfo(str(zone))), str(zone)
    if not name:
        offset = moment.strftime("%z")
        name = "UTC" if moment.utcoffset() == timedelta(0) else f"{offset[:3]}:{offset[3:5]}"
    return f"{moment:%Y-%m-%d %H:%M}" + (f":{moment:%S}" if moment.second else "") + f" {name}"


def _pair(key: str, value: Any, at: datetime) -> str:
    """``key value`` for a detail the sentence did not use, in words where the key says
    what the value is (seconds, milliseconds, a time)."""
    label = key.replace("_", " ")
    if isinstance(value, bool):
        return f"{label} {'yes' if value else 'no'}"
    if isinstance(value, int | float):
        for suffix, scale in (("_ms", 0.001), ("_seconds", 1.0), ("_s", 1.0)):
            if key.endswith(suffix):
                return f"{key[:-len(suffix)].replace('_', ' ')} {human_duration(value * scale)}"
        if key in _DURATION_KEYS:
            return f"{label} {human_duration(value)}"
        return f"{label} {value:g}" if isinstance(value, float) else f"{label} {value}"
    if isinstance(value, str) and len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T":
        with contextlib.suppress(ValueError, TypeError):
            moment = datetime.fromisoformat(value)
            if moment <= at:
                return f"{label} {human_duration((at - moment).total_seconds())} ago"
            return f"{label} {_when(value, None)}"
    if isinstance(value, list):
        return f"{label} {', '.join(str(v) for v in value)}"
    if isinstance(value, dict):
        return f"{label} " + ", ".join(f"{k} {v}" for k, v in value.items())
    return f"{label} {value}"


def human_duration(seconds: float) -> str:
    """``850 ms``, ``45 s``, ``12 min``, ``1.5 h``, ``3 d``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f}".removesuffix(".0") + " h"
    return f"{seconds / 86400:.1f}".removesuffix(".0") + " d"


def _zone_name(tz: tzinfo, moment: datetime) -> str:
    return str(getattr(tz, "key", None) or moment.tzname() or "local time")
