"""The ``[approvals]`` table of ``intents.toml``: the autonomy dial's settings, as data.

Part of the intents file's model (``edge.intents.declarations`` holds it), so that the
intents package never imports ``edge.approvals``; the dial that reads these settings is
``edge.approvals.dial``. Actions use the grant alphabet (``[A-Za-z0-9_.:*/-]``, 1-128
characters), in which ``*`` is the only wildcard. No I/O here.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field

from edge.intents.model import Duration, Strict, StrictInt

ACTION_RE = re.compile(r"[A-Za-z0-9_.:*/-]{1,128}")
Action = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:*/-]{1,128}$")]
Decision = Literal["allow", "ask", "deny"]


class Rule(Strict):
    pattern: Action
    decision: Decision


class ApprovalSettings(Strict):
    """The autonomy dial. ``level``: 0 asks for everything; 1 allows read-only actions;
    2 lets the first matching rule decide (no match: ask); 3 asks only for irreversible
    actions. Whatever the level, an action the caller's envelope covers is allowed."""

    level: StrictInt = Field(default=1, ge=0, le=3)
    read_only: list[Action] = ["*:read", "read:*", "*:list", "*:get"]
    irreversible: list[Action] = [
        "*:delete", "delete:*", "deploy:*", "*:deploy", "rm:*", "*:force-push", "payment:*",
    ]
    #: Level 2 only; first match wins.
    rules: list[Rule] = []
    #: How long a request waits for the user before it expires.
    expires: Annotated[Duration, Field(gt=0)] = 3600.0
    #: Consecutive approvals of one action after which promoting it is suggested.
    promote_after: StrictInt = Field(default=10, ge=1)
