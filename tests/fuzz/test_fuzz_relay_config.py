"""Property: whatever text the relay's plans file (``relay serve --config``) holds — any
text, TOML with any table and any values, a valid file with any limit replaced by any
TOML value — ``parse_plans`` returns a ``PlansFile`` whose default plan exists and whose
limits (and ``[stream] max_bytes``) are in range, or refuses with ``ConfigInvalid`` whose code is one of the
documented ones and whose message starts ``FILE:LINE:`` with a line inside the file.
Never another exception."""

from __future__ import annotations

import math
import re

from hypothesis import given
from hypothesis import strategies as st

from relay.config import PlansFile, parse_plans
from relay.errors import ConfigInvalid

WHERE = "plans.toml"
_PREFIX = re.compile(r"plans\.toml:(\d+): ")
LIMITS = ("account_rate", "account_burst", "token_rate", "token_burst", "max_identities",
          "max_pending")

toml_scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf") if math.isinf(f)
        else repr(f)),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(max_size=20).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"')
                             .replace("\n", "\\n") + '"'),
    st.just("[1, 2]"), st.just("{a = 1}"), st.just("1979-05-27T07:32:00Z"),
)
names = st.one_of(st.sampled_from(["free", "pro", "default", "Bad Name", "x" * 70, ""]),
                  st.text(alphabet="abcXYZ-_.09 ", min_size=1, max_size=8))
keys = st.one_of(st.sampled_from([*LIMITS, "rate", "default_plan", "plans"]),
                 st.text(alphabet="abc_", min_size=1, max_size=6))


@st.composite
def plans_files(draw: st.DrawFn) -> str:
    lines = []
    if draw(st.booleans()):
        lines.append(f'default_plan = "{draw(names)}"')
    if draw(st.booleans()):
        lines.append("[stream]")
        lines.append(f"{draw(st.sampled_from(['max_bytes', 'max_age']))} = {draw(toml_scalars)}")
    for _ in range(draw(st.integers(0, 3))):
        lines.append(f'[plans."{draw(names)}"]')
        for _ in range(draw(st.integers(0, 4))):
            lines.append(f"{draw(keys)} = {draw(toml_scalars)}")
    return "\n".join(lines) + "\n"


def _check(text: str) -> None:
    try:
        found = parse_plans(text, WHERE)
    except ConfigInvalid as exc:
        assert exc.code in ("config_syntax", "config_invalid"), exc.code
        assert exc.exit_code == 2
        match = _PREFIX.match(exc.message)
        assert match is not None, exc.message
        assert 1 <= int(match[1]) <= max(1, text.count("\n") + 1), exc.message
        return
    assert isinstance(found, PlansFile)
    assert found.default_plan in found.plans
    for plan in found.plans.values():
        for name in LIMITS:
            value = getattr(plan, name)
            assert value is None or (math.isfinite(value) and value > 0), (name, value)
    assert isinstance(found.stream.max_bytes, int) and found.stream.max_bytes >= 0


@given(st.text(max_size=200))
def test_any_text(text: str) -> None:
    _check(text)


@given(plans_files())
def test_any_plans_shaped_toml(text: str) -> None:
    _check(text)


@given(st.sampled_from(LIMITS), toml_scalars)
def test_a_valid_file_with_one_limit_replaced(name: str, value: str) -> None:
    _check(f'default_plan = "free"\n[plans.free]\n{name} = {value}\n[plans.pro]\n')
