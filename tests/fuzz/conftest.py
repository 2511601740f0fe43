"""Hypothesis settings for the fuzz suite, and the relay it fuzzes.

Two profiles, picked by ``MAILSLOT_FUZZ_PROFILE``:

- ``ci`` (the default, what ``scripts/test`` runs): derandomized, so every run tries the
  same examples and a failure reproduces; a bounded number of examples per test, so the
  whole fuzz suite adds well under a minute.
- ``long`` (``scripts/fuzz``): random, many examples; ``scripts/fuzz`` runs the suite
  over and over with fresh seeds for as long as it is told.

No example database is written (``database=None``): a failure is reported with the
example that caused it, and the ``ci`` profile finds it again. Hypothesis's other caches
(Unicode tables, constants) go to a folder under the system's temp dir, not into the
repository (``HYPOTHESIS_STORAGE_DIRECTORY`` overrides it).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

from fuzz.fuzz_support import Harness, KeepAlive

set_hypothesis_home_dir(
    os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY")
    or Path(tempfile.gettempdir()) / "mailslot-hypothesis"
)

_COMMON = {
    "database": None,
    "deadline": None,  # real processes: timing varies, correctness does not
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}
settings.register_profile("ci", max_examples=60, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=2_000, derandomize=False, **_COMMON)
settings.load_profile(os.environ.get("MAILSLOT_FUZZ_PROFILE", "ci"))


@pytest.fixture(scope="session")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """One real relay (and nats-server) for every fuzz test of the session."""
    h = Harness(tmp_path_factory.mktemp("fuzz"))
    try:
        h.start()
        yield h
    finally:
        h.close()


@pytest.fixture
def http(harness: Harness) -> Iterator[KeepAlive]:
    """A keep-alive HTTP client on the harness's relay, one per test."""
    client = KeepAlive(harness.relay.url)
    try:
        yield client
    finally:
        client.close()
