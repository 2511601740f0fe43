"""The new outside inputs of the agent-runtime work, fuzzed in process (pure functions):
Claude Code's hook input on stdin, webhook body templates, and ``intent add --route``.

Properties: each input is either accepted or refused with the documented error —
``HookInputError`` (``hook_input``), a ``ValueError`` from the template check (pydantic
turns it into a config error with its line), ``InvalidIntent`` (``invalid_intent``) —
never another exception; a template that passed the check always renders, to JSON, for
any wake document, however hostile; and a ``--route`` that parses makes an intent that
either validates or is refused by the model, and an exec route's argv is the shell-like
split of what was typed (never a shell).
"""

from __future__ import annotations

import contextlib
import json
import shlex
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge.claude.hooks import (
    HookInput,
    context_text,
    for_session,
    parse_hook_input,
    session_for,
)
from edge.cli.intents import parse_route
from edge.errors import HookInputError, InvalidIntent
from edge.intents.model import Intent
from edge.intents.template import ROOTS, check_template, render_template
from fuzz.strategies import any_text, json_values

many = settings(max_examples=settings.default.max_examples * 4)

# -- Claude Code's hook input ----------------------------------------------------------

hook_fields = st.fixed_dictionaries({}, optional={
    "session_id": st.one_of(any_text, json_values),
    "cwd": st.one_of(any_text, st.sampled_from(["/home/me/src/api", "/", "relative", ""]),
                     json_values),
    "hook_event_name": st.one_of(st.sampled_from(["SessionStart", "Stop"]), any_text),
    "source": st.one_of(st.sampled_from(["startup", "resume", "clear", "compact"]), any_text),
    "transcript_path": any_text, "stop_hook_active": st.booleans(),
})
hook_bytes = st.one_of(
    st.binary(max_size=300),
    any_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
    json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    hook_fields.map(lambda d: json.dumps(d).encode()),
)


@many
@given(hook_bytes)
def test_hook_input_is_parsed_or_refused_as_hook_input(raw: bytes) -> None:
    try:
        hook = parse_hook_input(raw)
    except HookInputError as exc:
        assert exc.code == "hook_input" and exc.message
        return
    assert isinstance(hook, HookInput)
    for value in (hook.session_id, hook.cwd, hook.hook_event_name, hook.source):
        assert value is None or isinstance(value, str)
    # whatever the fields hold, the session and the text are made without surprise
    session = session_for(None, hook, environ={})  # never refuses a folder's name
    assert for_session([], session, hook.cwd) == []
    assert isinstance(context_text([], session, waiting=0), str)


# -- webhook body templates ------------------------------------------------------------

path_text = st.one_of(
    st.lists(st.one_of(st.sampled_from([*ROOTS, "payload", "0", "3", "x-y", "_"]), any_text),
             min_size=1, max_size=5).map(".".join),
    any_text,
)
template_string = st.lists(st.one_of(
    any_text, path_text.map(lambda p: "{" + p + "}"), st.sampled_from(["{{", "}}", "{", "}"])),
    max_size=6).map("".join)
templates = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
              template_string),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(any_text, inner, max_size=4)),
    max_leaves=12,
)
wakes = st.one_of(
    st.fixed_dictionaries({
        "text": st.one_of(any_text, json_values),
        "wake": st.one_of(json_values, st.fixed_dictionaries({
            "session": st.one_of(st.none(), any_text), "intent": any_text,
            "priority": any_text, "events": st.integers()})),
        "interrupts": st.one_of(json_values, st.lists(st.dictionaries(
            st.sampled_from(["id", "type", "payload", "source"]), json_values), max_size=3)),
        "permissions": json_values,
    }),
    st.dictionaries(any_text, json_values, max_size=4),
)


@many
@given(templates, wakes, any_text)
def test_a_template_is_refused_at_load_or_always_renders_to_json(
        template: Any, wake: dict[str, Any], key: str) -> None:
    try:
        check_template(template)
    except ValueError as exc:
        assert str(exc)
        return
    body = render_template(template, wake, key)
    json.dumps(body, allow_nan=False)  # what the webhook sends: always JSON


@given(templates)
def test_a_webhook_route_with_any_template_validates_or_is_refused(template: Any) -> None:
    with contextlib.suppress(ValidationError):
        Intent.model_validate({"id": "t", "route": {
            "kind": "webhook", "url": "http://127.0.0.1:9/x", "template": template}})


# -- intent add --route ----------------------------------------------------------------

route_specs = st.one_of(
    any_text,
    st.tuples(st.sampled_from(["exec", "webhook", "mcp", "record", " exec", "EXEC", ""]),
              st.sampled_from([":", "", "::"]), st.one_of(any_text, st.sampled_from([
                  "'echo hi' there", "http://127.0.0.1:18789/hooks/agent", "https://x.test/",
                  "'unclosed", '"a b" c\\ d', "", "   ", "http://example.com/"]))
              ).map("".join),
)


@many
@given(route_specs)
def test_route_specs_parse_or_are_refused_as_invalid_intent(spec: str) -> None:
    try:
        route = parse_route(spec)
    except InvalidIntent as exc:
        assert exc.code == "invalid_intent" and "--route" in exc.message
        return
    assert route["kind"] in ("exec", "webhook", "mcp", "record")
    if route["kind"] == "exec":
        assert route["argv"] == shlex.split(spec.partition(":")[2])
    with contextlib.suppress(ValidationError):
        Intent.model_validate({"id": "r", "route": route})
