"""The ``[unauthenticated]`` and ``[proxy]`` tables of the relay's ``--config`` file and
``relay serve --trusted-proxy``: defaults on without a file, values checked, a bad CIDR
refused as every bad config is (one line naming the file and line, exit 2)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import config_from
from relay.config import LOOPBACK, UnauthenticatedLimits, parse_plans
from relay.errors import ConfigInvalid


def args(tmp_path: Path, config: Path | None, proxies: list[str] | None = None):
    return argparse.Namespace(nats=[], data_dir=tmp_path, config=config, trusted_proxy=proxies)


def test_without_a_file_the_limit_is_on_and_only_a_local_proxy_is_trusted(tmp_path: Path):
    """Loopback is trusted by default: a TLS proxy on the relay's host gets its clients
    counted by their own addresses (untrusted, they would all be loopback: exempt)."""
    config = config_from(args(tmp_path, None))
    assert config.unauthenticated == UnauthenticatedLimits()
    assert (config.unauthenticated.rate, config.unauthenticated.burst) == (10.0, 30)
    assert config.unauthenticated.exempt == LOOPBACK == ("127.0.0.0/8", "::1/128")
    assert config.trusted_proxies == LOOPBACK
    nobody = parse_plans("[proxy]\ntrusted = []\n", "relay.toml")
    assert nobody.proxy.trusted == ()


def test_the_file_and_the_flags_set_them(tmp_path: Path):
    path = tmp_path / "relay.toml"
    path.write_text('[unauthenticated]\nrate = 5\nburst = 20\nexempt = ["192.0.2.0/24"]\n'
                    '[proxy]\ntrusted = ["10.0.0.0/8", "2001:db8::/32"]\n')
    config = config_from(args(tmp_path, path, ["192.168.1.1"]))
    assert config.unauthenticated == UnauthenticatedLimits(rate=5, burst=20,
                                                           exempt=("192.0.2.0/24",))
    assert config.trusted_proxies == ("10.0.0.0/8", "2001:db8::/32", "192.168.1.1/32")
    off = parse_plans("[unauthenticated]\nrate = 0\nexempt = []\n", "relay.toml")
    assert off.unauthenticated.rate == 0 and off.unauthenticated.exempt == ()


@pytest.mark.parametrize(("text", "where"), [
    ('[proxy]\ntrusted = ["10.0.0.1/8"]\n', "relay.toml:2: proxy.trusted: "),
    ('\n[proxy]\ntrusted = ["example.com"]\n', "relay.toml:3: proxy.trusted: "),
    ('[proxy]\ntrusted = "10.0.0.0/8"\n', "relay.toml:2: proxy.trusted: "),
    ('[proxy]\ntrusted = [8]\n', "relay.toml:2: proxy.trusted: "),
    ('[proxy]\ntrust = []\n', "relay.toml:2: proxy.trust: "),
    ('[unauthenticated]\nexempt = ["::1/200"]\n', "relay.toml:2: unauthenticated.exempt: "),
    ('[unauthenticated]\nrate = -1\n', "relay.toml:2: unauthenticated.rate: "),
    ('[unauthenticated]\nrate = "5"\n', "relay.toml:2: unauthenticated.rate: "),
    ('[unauthenticated]\nburst = 0\n', "relay.toml:2: unauthenticated.burst: "),
    ('[unauthenticated]\nburst = 2.5\n', "relay.toml:2: unauthenticated.burst: "),
])
def test_a_bad_value_names_the_file_the_line_and_the_key(text: str, where: str):
    with pytest.raises(ConfigInvalid) as caught:
        parse_plans(text, "relay.toml")
    assert caught.value.message.startswith(where), caught.value.message
    assert "\n" not in caught.value.message
    assert caught.value.exit_code == 2


def test_relay_serve_refuses_a_bad_cidr_in_one_line_with_exit_2(tmp_path: Path):
    path = tmp_path / "relay.toml"
    path.write_text('[proxy]\ntrusted = ["10.0.0.1/8"]\n')
    run = [sys.executable, "-m", "edge", "relay", "serve", "--data-dir", str(tmp_path / "d"),
           "--listen", "127.0.0.1:0"]
    bad_file = subprocess.run([*run, "--config", str(path)], capture_output=True, text=True,
                              timeout=60)
    assert bad_file.returncode == 2, bad_file.stderr
    [line] = bad_file.stderr.strip().splitlines()
    assert f"{path}:2: proxy.trusted: " in line and "host bits set" in line, line
    bad_flag = subprocess.run([*run, "--trusted-proxy", "nonsense"], capture_output=True,
                              text=True, timeout=60)
    assert bad_flag.returncode == 2 and "--trusted-proxy" in bad_flag.stderr, bad_flag.stderr
    assert not (tmp_path / "d").exists()  # nothing was started


def test_the_readme_example_is_valid_and_says_the_defaults():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("**Limits per client address**", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    found = parse_plans(example, "README.md")
    assert found.unauthenticated == UnauthenticatedLimits()  # the example shows the defaults
    assert found.proxy.trusted == ("10.0.0.0/8", "2001:db8:ff::/48")
