"""``relay serve --config FILE`` and ``relay account create --plan`` as real commands:
a bad plans file ends ``serve`` with exit 2 naming the file, the line and a code before
anything starts; with a good one, accounts are created under a plan and ``account show``
prints it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests_support import NatsServer, RelayProcess

from relay.adminauth import ADMIN_KEY_FILE


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MAILSLOT_ADMIN_KEY"}
    env.update({"MAILSLOT_HOME": str(home), "MAILSLOT_LOG": "WARNING"})
    return subprocess.run([sys.executable, "-m", "edge", *args], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("text", "line", "code"), [
    ("[plans.free\n", 1, "config_syntax"),
    ('default_plan = "free"\n\n[plans.free]\naccount_rate = 0\n', 4, "config_invalid"),
    ('[plans.free]\nmax_identities = 3\nspeed = 1\n', 3, "config_invalid"),
    ('default_plan = "gold"\n[plans.free]\n', 1, "config_invalid"),
])
def test_a_bad_plans_file_is_exit_2_with_the_file_line_and_code(
    tmp_path: Path, text: str, line: int, code: str
) -> None:
    path = tmp_path / "plans.toml"
    path.write_text(text)
    result = cli(tmp_path, "relay", "serve", "--listen", "127.0.0.1:0", "--config", str(path))
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"mailslot: {code}: {path}:{line}: "), last
    assert not (tmp_path / "relay").exists()  # nothing started, nothing made


def test_a_missing_plans_file_is_exit_2(tmp_path: Path) -> None:
    result = cli(tmp_path, "relay", "serve", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "mailslot: config_unreadable: " in result.stderr


async def test_account_create_with_a_plan_and_show_prints_it(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    path = tmp_path / "plans.toml"
    path.write_text('default_plan = "free"\n[plans.free]\nmax_identities = 3\n'
                    '[plans.pro]\naccount_rate = 50\nmax_connected_edges = 5\n')
    relay = RelayProcess(nats_server.url, tmp_path / "relay", "--config", str(path))
    await relay.start()
    try:
        remote = ("--relay", relay.url, "--admin-key-file",
                  str(relay.data_dir / ADMIN_KEY_FILE))
        made = cli(tmp_path / "laptop", "relay", "account", "create", "acme", "--plan", "pro",
                   *remote)
        assert made.returncode == 0, made.stderr
        shown = cli(tmp_path / "laptop", "relay", "account", "show", "acme", *remote)
        assert "plan       pro: account_rate 50.0" in shown.stdout, shown.stdout
        assert "quotas     connected_edges 0 of 5" in shown.stdout, shown.stdout
        cli(tmp_path / "laptop", "relay", "account", "create", "globex", *remote)
        doc = json.loads(cli(tmp_path / "laptop", "relay", "account", "show", "globex",
                             *remote, "--json").stdout)
        assert doc["usage"]["plan"] == "free" and doc["usage"]["limits"]["max_identities"] == 3
        assert doc["usage"]["quotas"]["identities"] == {"used": 0, "limit": 3}
        changed = cli(tmp_path / "laptop", "relay", "account", "plan", "globex", "pro",
                      *remote)
        assert changed.returncode == 0, changed.stderr
        assert changed.stdout == "account globex now runs under plan pro\n"
        doc = json.loads(cli(tmp_path / "laptop", "relay", "account", "plan", "globex", "free",
                             *remote, "--json").stdout)
        assert (doc["name"], doc["plan"]) == ("globex", "free")
        unknown = cli(tmp_path / "laptop", "relay", "account", "plan", "globex", "gold",
                      *remote)
        assert unknown.returncode == 1 and "mailslot: unknown_plan: " in unknown.stderr
        bad = cli(tmp_path / "laptop", "relay", "account", "create", "x", "--plan", "gold",
                  *remote)
        assert bad.returncode == 1 and "mailslot: unknown_plan: " in bad.stderr
    finally:
        await relay.close()
