"""Property: whatever ``edge.json``'s ``retention`` holds — any JSON value for any of its
keys, or an unknown key — ``load_config`` returns a config or refuses with
``EdgeConfigError`` naming ``retention``, never another exception; and an accepted one is
one the daemon's upkeep can compute its cutoffs with (no date out of range, no
infinite wait) and run a pass with on an empty home."""

from __future__ import annotations

import json
import math
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from edge.config import EdgeConfig, EdgePaths, load_config
from edge.errors import EdgeConfigError
from edge.upkeep import Upkeep
from shared.identity import Identity

KEYS = ("inbox_days", "deliveries_days", "engine_days", "log_segment_bytes", "log_segment_days",
        "log_keep_days", "log_max_bytes", "check_every")
VALID: dict[str, Any] = json.loads(EdgeConfig(
    relay_url="https://relay.example", identity=Identity.generate().id,
    relay_identity=Identity.generate().public.to_doc(),
).model_dump_json())

values = (st.none() | st.booleans() | st.text(max_size=8)
          | st.integers(min_value=-(2**70), max_value=2**70)
          | st.floats(allow_nan=True, allow_infinity=True) | st.lists(st.integers(), max_size=2))


@given(st.dictionaries(st.sampled_from((*KEYS, "keep", "")), values, max_size=4))
def test_any_retention_loads_or_is_refused_naming_it(retention: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        paths = EdgePaths(Path(folder) / "config", Path(folder) / "data")
        paths.ensure()
        paths.config_file.write_text(json.dumps({**VALID, "retention": retention},
                                                allow_nan=True))
        try:
            config = load_config(paths)
        except EdgeConfigError as exc:
            assert "field retention" in exc.message
            return
        kept = config.retention
        assert math.isfinite(kept.check_every) and kept.check_every > 0
        now = datetime.now(UTC)
        for days in (kept.inbox_days, kept.deliveries_days, kept.log_keep_days,
                     kept.log_segment_days):
            assert now - timedelta(days=days) <= now
        assert not Upkeep(kept, paths).step().errors
