"""``edge.intents.summary``: one line per intent, the rows ``intent list`` and the MCP
``intents_list`` tool share."""

from __future__ import annotations

from edge.intents.model import Intent, Match
from edge.intents.summary import intent_rows, summarize


def test_an_empty_match_is_everything() -> None:
    assert summarize(Match()) == "(everything)"


def test_the_criteria_that_are_set_in_order() -> None:
    match = Match.model_validate({
        "type": ["ci.*"], "source_kind": ["signed", "file"], "priority": "now",
        "all": [{"field": "payload.branch", "op": "eq", "value": "main"}],
    })
    line = summarize(match)
    assert line.startswith("type=ci.* source_kind=signed,file priority=now [")
    assert "payload.branch" in line and "main" in line


def test_rows_carry_the_summary_and_the_match_as_set() -> None:
    intent = Intent.model_validate({"id": "ci", "match": {"type": ["ci.*"]}, "paused": True})
    [row] = intent_rows([intent])
    assert row == {"id": "ci", "description": "", "paused": True, "critical": False,
                   "summary": "type=ci.*", "match": {"type": ["ci.*"]}, "route": row["route"]}
    assert list(row) == ["id", "description", "paused", "critical", "summary", "match", "route"]
