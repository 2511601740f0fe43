"""Webhook body templates (``edge.intents.template``): what a placeholder becomes, and a
template that cannot work refused when ``intents.toml`` loads, with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import IntentFileError
from edge.intents.file import load_intents
from edge.intents.template import check_template, parse_path, render_template

WAKE = {"text": "mailslot: intent ci woke you for ci.failed",
        "wake": {"intent": "ci", "session": None, "priority": "now", "events": 2},
        "interrupts": [{"id": "01A", "type": "ci.failed", "payload": {"run": 812}},
                       {"id": "01B", "type": "ci.failed"}],
        "permissions": {"actions": ["ci:rerun"]}}


def test_placeholders_become_values_or_text() -> None:
    template = {"message": "{summary}", "sessionKey": "{session}", "ids": ["{interrupts.0.id}",
                "{interrupts.1.id}", "{interrupts.2.id}"], "run": "{payload.run}",
                "doc": "{interrupt}", "line": "{events} x {type}: {payload} {{ok}} {session}",
                "key": "{delivery}", "n": 3, "flag": False, "nothing": None}
    assert render_template(check_template(template), WAKE, "msg_K") == {
        "message": WAKE["text"], "sessionKey": None, "ids": ["01A", "01B", None], "run": 812,
        "doc": WAKE["interrupts"][0], "line": '2 x ci.failed: {"run":812} {ok} ',
        "key": "msg_K", "n": 3, "flag": False, "nothing": None}
    assert parse_path("interrupts.0.payload") == ("interrupts", 0, "payload")


@pytest.mark.parametrize(("template", "why"), [
    ("{nope}", "unknown name 'nope'"), ("{summary", "a lone '{'"), ("a } b", "a lone '}'"),
    ("{wake..intent}", "not a name or an array index"), ("{}", "a path of 1 to"),
    ({"a": [{"b": "{0.x}"}]}, "not a name"), (float("nan"), "NaN"),
])
def test_templates_that_cannot_work_are_refused(template: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_template(template)


def test_a_bad_template_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "intents.toml"
    path.write_text('[[intent]]\nid = "oc"\n[intent.route]\nkind = "webhook"\n'
                    'url = "http://127.0.0.1:18789/hooks/agent"\n'
                    'template = {message = "{sumary}"}\n')
    with pytest.raises(IntentFileError) as refused:
        load_intents(path)
    assert refused.value.line == 6 and "unknown name 'sumary'" in str(refused.value)
