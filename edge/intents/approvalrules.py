"""The ``[approvals]`` table of ``intents.toml``: the autonomy dial's settings, as data.

Part of the intents file's model (``edge.intents.declarations`` holds it), so that the
intents package never imports ``edge.approvals``; the dial that reads these settings is
``edge.approvals.dial``. Actions use the grant alphabet (``[A-Za-z0-9_.:*/-]``, 1-128
characters), in which ``*`` is the only wildcard. No I/O here.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from edge.intents.model import Duration, Strict, StrictInt

ACTION_RE = re.compile(r"[A-Za-z0-9_.:*/-]{1,128}")
Action = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:*/-]{1,128}$")]
Decision = Literal["allow", "ask", "deny"]


class Rule(Strict):
    pattern: Action
    decision: Decision


#: A Claude Code tool name, and the name of a field of its input.
ToolName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")]
FieldName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")]


class ClaudeActions(Strict):
    """``[approvals.claude]``: how a Claude Code permission request (``mailslot mcp
    --channel``) becomes an action (``edge.approvals.claude``): ``claude:<Tool>:<words>``
    for a tool whose input field named in ``commands`` holds a shell command,
    ``claude:<Tool>:<path>`` for one named in ``paths``, ``claude:<Tool>`` otherwise."""

    commands: dict[ToolName, FieldName] = {"Bash": "command"}
    paths: dict[ToolName, FieldName] = {"Edit": "file_path", "Write": "file_path"}

    @model_validator(mode="after")
    def _one_kind_per_tool(self) -> Self:
        if both := sorted(set(self.commands) & set(self.paths)):
            raise ValueError(f"tool {both[0]!r} is in both commands and paths")
        return self


class ApprovalSettings(Strict):
    """The autonomy dial. ``level``: 0 asks for everything; 1 allows read-only actions;
    2 lets the first matching rule decide (no match: ask); 3 asks only for irreversible
    actions. Whatever the level, an action the caller's envelope covers is allowed."""

    level: StrictInt = Field(default=1, ge=0, le=3)
    read_only: list[Action] = ["*:read", "read:*", "*:list", "*:get"]
    irreversible: list[Action] = [
        "*:delete", "delete:*", "deploy:*", "*:deploy", "rm:*", "*:force-push", "payment:*",
        "claude:Bash:*",
    ]
    #: Level 2 only; first match wins.
    rules: list[Rule] = []
    #: How long a request waits for the user before it expires.
    expires: Annotated[Duration, Field(gt=0)] = 3600.0
    #: Consecutive approvals of one action after which promoting it is suggested.
    promote_after: StrictInt = Field(default=10, ge=1)
    #: Claude Code permission requests as actions.
    claude: ClaudeActions = ClaudeActions()
