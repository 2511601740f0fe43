"""Claude Code's permission prompts as approval requests: reading a
``notifications/claude/channel/permission_request`` and naming it as an action. Pure, no I/O.

Claude Code sends a channel that declares ``experimental["claude/channel/permission"]``
``{request_id, tool_name, description, input_preview}`` when it is about to ask the user
for a tool permission (``input_preview``: the tool's input as JSON, cut to 200 characters
by Claude Code), and takes the first answer ``{request_id, behavior: "allow"|"deny"}``,
from the terminal or from the channel. ``edge.mcp.permissions`` hands each request to the
approvals desk under the action ``claude_action`` names.

Rules this module keeps:

* Every field is data from the session, never instructions: checked, cut to a size, with
  characters UTF-8 cannot carry replaced, and never put into a command line.
* The action says exactly what would run, or says "some command" (``claude:Bash:*``):
  a command's words are joined with ``:`` only if every word is made of ``[A-Za-z0-9_./-]``
  and words are separated by single spaces (no quoting, expansion, operators, newlines:
  nothing a shell reads differently from its words); a path only if it is absolute and
  of those characters, ``..`` and ``.`` taken out. Anything else, an input preview that
  is not JSON (Claude Code cut it), or an action longer than 128 characters becomes a
  wildcard, which the dial allows only where a pattern covers all of it.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from edge.errors import InvalidPermissionRequest
from edge.intents.approvalrules import ClaudeActions

#: Every action named after a permission request starts with this (see ``edge.approvals.dial``).
CLAUDE_PREFIX = "claude:"
#: Claude Code's ids are five lowercase letters; anything this plain is accepted.
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
TOOL_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")
DESCRIPTION_MAX = 1000
PREVIEW_MAX = 2000
ACTION_MAX = 128
_WORD_RE = re.compile(r"[A-Za-z0-9_./-]+")
_PATH_RE = re.compile(r"/[A-Za-z0-9_./-]*")


@dataclass(frozen=True)
class PermissionRequest:
    """One permission prompt as Claude Code described it (checked and cut)."""

    request_id: str
    tool_name: str
    description: str
    input_preview: str

    def to_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def _text(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, with what UTF-8 cannot hold (a lone
    surrogate from a ``\\ud800`` escape) replaced, so that it can be stored and logged."""
    return value[:limit].encode("utf-8", "replace").decode("utf-8")


def parse_permission_request(params: object) -> PermissionRequest:
    """The request in ``params`` (the notification's params, any JSON). Raises
    ``InvalidPermissionRequest``: with the ``request_id`` when that much was readable (the
    caller answers ``deny``), without it when there is nothing to answer."""
    if not isinstance(params, dict):
        raise InvalidPermissionRequest("the params are not a JSON object")
    request_id = params.get("request_id")
    if not isinstance(request_id, str) or not REQUEST_ID_RE.fullmatch(request_id):
        raise InvalidPermissionRequest("request_id is missing or not 1-64 of [A-Za-z0-9_-]")
    tool = params.get("tool_name")
    if not isinstance(tool, str) or not TOOL_RE.fullmatch(tool):
        raise InvalidPermissionRequest("tool_name is missing or not 1-100 of [A-Za-z0-9_.-]",
                                       request_id)
    description = params.get("description", "")
    preview = params.get("input_preview", "")
    if not isinstance(description, str) or not isinstance(preview, str):
        raise InvalidPermissionRequest("description and input_preview must be strings",
                                       request_id)
    return PermissionRequest(request_id, tool, _text(description, DESCRIPTION_MAX),
                             _text(preview, PREVIEW_MAX))


def claude_action(mapping: ClaudeActions, tool: str, input_preview: str) -> str:
    """The action a permission request for ``tool`` with ``input_preview`` stands for:
    ``claude:<tool>:<words of the command>``, ``claude:<tool>:<path>``, ``claude:<tool>``
    (a tool ``mapping`` names no field for), or ``claude:<tool>:*`` when the input does
    not say exactly (see the module's rules). Always a valid action."""
    base = f"{CLAUDE_PREFIX}{tool}"
    if not TOOL_RE.fullmatch(tool):
        return f"{CLAUDE_PREFIX}*"
    if tool in mapping.commands:
        value = _field(input_preview, mapping.commands[tool])
        tail = None if value is None else _command(value)
    elif tool in mapping.paths:
        value = _field(input_preview, mapping.paths[tool])
        tail = None if value is None else _path(value)
    else:
        return base
    action = f"{base}:{tail}" if tail is not None else f"{base}:*"
    if len(action) > ACTION_MAX:  # the rest could say anything: a wildcard
        action = action[:ACTION_MAX - 1] + "*"
    return action


def _field(preview: str, name: str) -> str | None:
    try:
        doc: Any = json.loads(preview)
    except ValueError:  # not JSON: Claude Code cut a long input at 200 characters
        return None
    value = doc.get(name) if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


def _command(text: str) -> str | None:
    words = text.strip(" ").split(" ")
    if not all(_WORD_RE.fullmatch(word) for word in words if word) or not any(words):
        return None
    return ":".join(word for word in words if word)


def _path(text: str) -> str | None:
    if not _PATH_RE.fullmatch(text):
        return None
    path = posixpath.normpath(text)
    return "/" + path.lstrip("/")  # normpath keeps a leading "//"


def summary(request: PermissionRequest) -> str:
    """The request in words, for the user (``approvals list``, the ``approval.pending``
    notice): the tool and Claude Code's description, both data."""
    about = request.description.strip() or request.input_preview.strip()
    return _text(f"Claude Code asks to use {request.tool_name}"
                 + (f": {about}" if about else ""), DESCRIPTION_MAX)
