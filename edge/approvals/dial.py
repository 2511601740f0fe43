"""The autonomy dial: may a runtime take this action now? A pure function, no I/O.

A runtime asks before acting beyond its permission envelope; ``decide`` answers from the
``[approvals]`` settings (``edge.intents.approvalrules``), the action, and the envelope
the runtime was woken with (``read_permissions``): ``allow``, ``deny``, or ``ask`` the
user (``edge.approvals.desk`` records the request and the answer).

Rules this module keeps:

* ``decide`` is pure: settings, an action and the caller's envelope in, a ``Ruling``
  out. An action the envelope covers is allowed at every level.
* Actions use the grant alphabet (``[A-Za-z0-9_.:*/-]``), so ``*`` is the only wildcard:
  an action with a ``*`` is allowed only by a pattern that covers every action it stands
  for (``covers``), and is asked when it overlaps (``overlaps``) anything irreversible or
  a rule that does not cover it.
* An action named after a Claude Code permission request (``claude:…``,
  ``edge.approvals.claude``) carries text from the session, so only a pattern that
  starts with ``claude:`` allows it (as an envelope entry, a read-only pattern or an
  allow rule): ``*:read`` must not allow ``rm -rf / read`` (``claude:Bash:rm:-rf:/:read``).
  Patterns that ask or deny apply whatever they start with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from edge.approvals.claude import CLAUDE_PREFIX
from edge.errors import InvalidAction
from edge.intents.approvalrules import ACTION_RE, ApprovalSettings, Decision

#: The environment variable naming the runtime's permission envelope (``edge.delivery.deliverer``).
PERMISSIONS_ENV = "MAILSLOT_PERMISSIONS"


def may_allow(pattern: str, action: str) -> bool:
    """Whether ``pattern`` may allow ``action`` at all: any pattern, except that a
    ``claude:`` action is allowed only by a ``claude:`` pattern (see the module's rules)."""
    return not action.startswith(CLAUDE_PREFIX) or pattern.startswith(CLAUDE_PREFIX)


def check_action(action: str) -> str:
    if not isinstance(action, str) or ACTION_RE.fullmatch(action) is None:
        raise InvalidAction(f"action {action!r} is not allowed (must match {ACTION_RE.pattern})")
    return action


def covers(pattern: str, action: str) -> bool:
    """Every action ``action`` stands for matches ``pattern``. In this alphabet ``*`` is
    the only wildcard, so a literal match of the action's text (its ``*`` absorbed by the
    pattern's) is exactly that."""
    return fnmatchcase(action, pattern)


def overlaps(a: str, b: str) -> bool:
    """Some action matches both globs (a walk over the pair of positions)."""
    seen: set[tuple[int, int]] = set()
    todo = [(0, 0)]
    while todo:
        i, j = todo.pop()
        if (i, j) in seen:
            continue
        seen.add((i, j))
        if i == len(a) and j == len(b):
            return True
        x = a[i] if i < len(a) else None
        y = b[j] if j < len(b) else None
        if x == "*":
            todo.append((i + 1, j))  # a's star ends here
            if y is not None and y != "*":
                todo.append((i, j + 1))  # a's star takes b's character
        if y == "*":
            todo.append((i, j + 1))
            if x is not None and x != "*":
                todo.append((i + 1, j))
        if x is not None and x == y and x != "*":
            todo.append((i + 1, j + 1))
    return False


@dataclass(frozen=True)
class HeldPermissions:
    """The envelope a runtime was woken with (``MAILSLOT_PERMISSIONS``)."""

    actions: tuple[str, ...]
    expires_at: datetime
    intent: str | None = None
    path: str | None = None

    def covering(self, action: str, now: datetime) -> str | None:
        """The envelope pattern that allows ``action`` now, if any."""
        if now >= self.expires_at:
            return None
        return next((p for p in self.actions if may_allow(p, action) and covers(p, action)),
                    None)


def read_permissions(environ: Mapping[str, str]) -> HeldPermissions | None:
    """The envelope named by ``MAILSLOT_PERMISSIONS``, or ``None`` if there is none or it
    is unreadable (the request then goes to the dial, which is never more permissive)."""
    name = environ.get(PERMISSIONS_ENV)
    if not name:
        return None
    try:
        doc = json.loads(Path(name).read_text(encoding="utf-8"))
        expires = datetime.fromisoformat(doc["expires_at"])
        actions = doc["actions"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if expires.utcoffset() is None or not isinstance(actions, list):
        return None
    valid = tuple(a for a in actions if isinstance(a, str) and ACTION_RE.fullmatch(a))
    intent = doc.get("intent") if isinstance(doc.get("intent"), str) else None
    return HeldPermissions(valid, expires, intent, name)


@dataclass(frozen=True)
class Ruling:
    """What the dial says about one action: ``decision`` and why, in words and as data
    (``by``: envelope, level, read_only, irreversible, rule, no_rule)."""

    decision: Decision
    by: str
    reason: str
    level: int
    pattern: str | None = None
    rule: int | None = None

    def detail(self) -> dict[str, Any]:
        out: dict[str, Any] = {"by": self.by, "level": self.level}
        if self.pattern is not None:
            out["pattern"] = self.pattern
        if self.rule is not None:
            out["rule"] = self.rule
        return out


def decide(
    settings: ApprovalSettings, action: str, held: HeldPermissions | None, now: datetime
) -> Ruling:
    """The dial's answer for ``action``; see ``ApprovalSettings``."""
    level = settings.level
    if held is not None and (p := held.covering(action, now)) is not None:
        return Ruling("allow", "envelope", f"the permission envelope allows it ({p!r})",
                       level, pattern=p)
    if level == 0:
        return Ruling("ask", "level", "level 0: every action is asked", level)
    if level == 1:
        if (p := next((p for p in settings.read_only
                       if may_allow(p, action) and covers(p, action)), None)) is not None:
            return Ruling("allow", "read_only", f"level 1: read-only ({p!r})", level, pattern=p)
        return Ruling("ask", "level", "level 1: not a read-only action", level)
    if level == 2:
        for index, rule in enumerate(settings.rules):
            if rule.decision == "allow" and not may_allow(rule.pattern, action):
                continue  # a claude: action, a pattern that does not name them
            if covers(rule.pattern, action):
                return Ruling(rule.decision, "rule",
                               f"level 2: rule {rule.pattern!r} says {rule.decision}",
                               level, pattern=rule.pattern, rule=index)
            if overlaps(rule.pattern, action):  # only a wildcard action gets here
                return Ruling("ask", "rule", f"level 2: only part of it matches rule "
                               f"{rule.pattern!r}", level, pattern=rule.pattern, rule=index)
        return Ruling("ask", "no_rule", "level 2: no rule matches", level)
    for p in settings.irreversible:
        if overlaps(p, action):
            return Ruling("ask", "irreversible", f"level 3: irreversible ({p!r})", level,
                           pattern=p)
    return Ruling("allow", "level", "level 3: not irreversible", level)
