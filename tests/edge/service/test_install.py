"""``edge.service.install`` below the command line: which ``mailslot`` a unit runs, the
refusals a plan carries (shown by ``--dry-run``, raised by ``apply_install``), and a
manifest that is not one. Round trips through the commands: tests/edge/cli/test_service.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from service_support import FakeHost

from edge.config import EdgePaths
from edge.errors import ServiceError
from edge.service.install import (
    Host,
    Manifest,
    apply_install,
    build_spec,
    find_executable,
    plan_install,
)


@pytest.fixture
def fake(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


def test_the_unit_runs_the_mailslot_being_run(tmp_path: Path) -> None:
    beside = str(Path(sys.executable).parent / "mailslot")
    assert find_executable({"PATH": ""}, argv0="/nowhere/python") == beside
    script = tmp_path / "bin" / "mailslot"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert find_executable({"PATH": ""}, argv0=str(script)) == str(script)
    script.chmod(0o644)  # not executable: the next candidate
    assert find_executable({"PATH": ""}, argv0=str(script)) == beside


def test_a_system_unit_cannot_run_a_mailslot_under_home(fake: FakeHost) -> None:
    host = Host.from_environ(fake.env())
    paths = EdgePaths(fake.mailslot_home / "config", fake.mailslot_home / "data")
    spec = build_spec(host, paths, "relay", "system", "linux", "/home/me/.local/bin/mailslot")
    plan = plan_install(spec, host, paths)
    assert plan.refusal is not None and "ProtectHome" in plan.refusal.message
    assert any("ProtectHome" in note for note in plan.notes)  # --dry-run shows it
    with pytest.raises(ServiceError, match="ProtectHome"):
        apply_install(plan, host)
    assert not plan.unit.path.exists() and fake.calls() == []


def test_a_broken_manifest_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "service.json"
    path.write_text("[1, 2")
    with pytest.raises(ServiceError, match="not a mailslot service manifest"):
        Manifest.load(path)
    path.write_text('{"services": []}')
    with pytest.raises(ServiceError, match="not a mailslot service manifest"):
        Manifest.load(path)
    assert Manifest.load(tmp_path / "none.json").services == {}
