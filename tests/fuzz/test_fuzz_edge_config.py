"""Property: whatever ``edge.json`` holds — any bytes, any JSON, a valid config with any
field replaced by any JSON value, nesting past the parser's depth, non-finite numbers —
``load_config`` returns a config or refuses with ``EdgeConfigError`` (code
``config_error``, a message naming the file), never another exception, and it changes
nothing on disk. Real files in a real folder; the examples' count comes from the
hypothesis profile in ``tests/fuzz/conftest.py``."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config import EdgeConfig, EdgePaths, load_config, save_config
from edge.errors import EdgeConfigError
from shared.identity import Identity

#: Real processes (or deep documents) cost milliseconds each: a third of the profile's
#: examples (20 in ``ci``, hundreds in ``long``).
_REAL_EXAMPLES = max(10, settings().max_examples // 3)

RELAY = Identity.generate()
EDGE = Identity.generate()
VALID: dict[str, Any] = json.loads(EdgeConfig(
    relay_url="https://relay.example", identity=EDGE.id,
    relay_identity=RELAY.public.to_doc(),
).model_dump_json())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _load(data: bytes) -> EdgeConfig | None:
    """Write ``data`` as edge.json and load it; assert the refusal's shape and that the
    file is untouched either way."""
    with tempfile.TemporaryDirectory() as folder:
        paths = EdgePaths(Path(folder) / "config", Path(folder) / "data")
        paths.ensure()
        paths.config_file.write_bytes(data)
        try:
            config = load_config(paths)
        except EdgeConfigError as exc:
            assert exc.code == "config_error"
            assert str(paths.config_file) in exc.message
            config = None
        assert paths.config_file.read_bytes() == data
        return config


def _finite(config: EdgeConfig) -> None:
    """A loaded config is one the daemon can run with: finite, positive timings."""
    for value in (config.reconnect_base, config.reconnect_cap, config.keepalive):
        assert math.isfinite(value) and value > 0


@given(st.binary(max_size=512))
def test_any_bytes(data: bytes) -> None:
    _load(data)


@given(json_values)
def test_any_json_document(doc: Any) -> None:
    config = _load(json.dumps(doc).encode())
    if config is not None:
        _finite(config)


@given(st.sampled_from([*sorted(VALID), "extra"]), json_values)
def test_a_valid_config_with_one_field_replaced(field: str, value: Any) -> None:
    doc = {**VALID, field: value}
    config = _load(json.dumps(doc).encode())
    if config is not None:
        _finite(config)


@given(st.sampled_from(sorted(VALID["relay_identity"])), json_values | st.text())
def test_a_pinned_relay_identity_with_one_key_replaced(key: str, value: Any) -> None:
    doc = {**VALID, "relay_identity": {**VALID["relay_identity"], key: value}}
    assert _load(json.dumps(doc).encode()) is None or value == VALID["relay_identity"][key]


@given(st.sampled_from(["reconnect_base", "reconnect_cap", "keepalive", "initial_credit"]),
       st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400",
                        "123456789012345678901234567890"]))
def test_non_finite_and_huge_numbers_are_refused(field: str, number: str) -> None:
    text = json.dumps(VALID)[:-1] + f', "{field}": {number}}}'
    config = _load(text.encode())
    if not math.isfinite(float(number)):  # NaN, ±Infinity, ±1e400: never a config
        assert config is None, (field, number, config)
    if config is not None:
        _finite(config)
        assert config.initial_credit <= 16384


@settings(max_examples=_REAL_EXAMPLES)
@given(st.integers(min_value=900, max_value=200_000), st.sampled_from("[{"))
def test_nesting_deeper_than_the_parser_goes(depth: int, opener: str) -> None:
    closer = {"[": "]", "{": "}"}[opener]
    inner = '"a":' if opener == "{" else ""
    body = (opener + inner) * depth + "1" + closer * depth
    assert _load(body.encode()) is None


def test_the_valid_config_loads() -> None:
    """The base the mutations start from is itself accepted (so they test something)."""
    with tempfile.TemporaryDirectory() as folder:
        paths = EdgePaths(Path(folder) / "config", Path(folder) / "data")
        save_config(paths, EdgeConfig.model_validate(VALID))
        assert load_config(paths).identity == EDGE.id
