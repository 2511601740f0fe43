"""``retention`` in ``edge.json``: the defaults a user expects (keep months, bound the
disk), values as written, and every bad value refused naming its field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge.config import EdgePaths, RetentionConfig, load_config
from edge.errors import EdgeConfigError
from shared.identity import Identity


@pytest.fixture
def paths(tmp_path: Path) -> EdgePaths:
    paths = EdgePaths.resolve({"MAILSLOT_HOME": str(tmp_path / "home")})
    paths.ensure()
    return paths


def _write(paths: EdgePaths, **extra: Any) -> None:
    doc = {"relay_url": "http://127.0.0.1:7710", "identity": Identity.generate().id,
           "relay_identity": Identity.generate().public.to_doc(), **extra}
    paths.config_file.write_text(json.dumps(doc))


def test_defaults_keep_months_and_bound_the_disk(paths: EdgePaths) -> None:
    _write(paths)
    retention = load_config(paths).retention
    assert retention == RetentionConfig()
    assert (retention.inbox_days, retention.deliveries_days, retention.log_keep_days) == (90, 90, 180)
    assert (retention.log_segment_bytes, retention.log_max_bytes) == (16 << 20, 1 << 30)
    assert (retention.log_segment_days, retention.check_every) == (7, 300)


def test_values_are_read_as_written(paths: EdgePaths) -> None:
    _write(paths, retention={"inbox_days": 30, "log_max_bytes": 0, "log_keep_days": 0.5})
    retention = load_config(paths).retention
    assert (retention.inbox_days, retention.log_max_bytes, retention.log_keep_days) == (30, 0, 0.5)
    assert retention.deliveries_days == 90


@pytest.mark.parametrize(("retention", "field"), [
    ({"inbox_days": -1}, "retention.inbox_days"),
    ({"log_keep_days": 1e9}, "retention.log_keep_days"),  # no date that far back
    ({"deliveries_days": "soon"}, "retention.deliveries_days"),
    ({"log_segment_bytes": 100}, "retention.log_segment_bytes"),
    ({"log_segment_days": 0}, "retention.log_segment_days"),
    ({"check_every": 0}, "retention.check_every"),
    ({"keep": 1}, "retention.keep"),
    ({"log_max_bytes": 5000, "log_segment_bytes": 4096}, "retention"),
    ("forever", "retention"),
])
def test_bad_values_are_refused_naming_the_field(paths: EdgePaths, retention: Any,
                                                 field: str) -> None:
    _write(paths, retention=retention)
    with pytest.raises(EdgeConfigError, match=f"field {field}"):
        load_config(paths)
