"""``relay.cli.config_from``: the one config of ``relay serve``, with the ``--config``
file's plans and ``[stream] max_bytes`` in it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from relay.cli import config_from
from relay.config import DEFAULT_PLAN
from relay.errors import ConfigInvalid


def args(tmp_path: Path, config: Path | None) -> argparse.Namespace:
    return argparse.Namespace(nats=[], data_dir=tmp_path, config=config)


def test_without_a_file_one_default_plan_without_limits(tmp_path: Path) -> None:
    config = config_from(args(tmp_path, None))
    assert list(config.plans) == [DEFAULT_PLAN] and config.default_plan == DEFAULT_PLAN
    assert all(v is None for v in config.plans[DEFAULT_PLAN].model_dump().values())
    assert config.stream.max_bytes == 0


def test_the_file_gives_plans_default_and_stream_bytes(tmp_path: Path) -> None:
    path = tmp_path / "plans.toml"
    path.write_text('default_plan = "free"\n[stream]\nmax_bytes = 1_000_000\n'
                    '[plans.free]\nmax_pending = 10\n[plans.pro]\naccount_rate = 2.5\n')
    config = config_from(args(tmp_path, path))
    assert sorted(config.plans) == ["free", "pro"] and config.default_plan == "free"
    assert config.plans["free"].max_pending == 10
    assert config.plan_of("pro")[1].account_rate == 2.5
    assert config.plan_of("gone")[0] == "free"  # a plan no longer defined: the default
    assert config.stream.max_bytes == 1_000_000


def test_a_bad_file_names_itself_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "plans.toml"
    path.write_text('[stream]\nmax_bytes = -1\n')
    with pytest.raises(ConfigInvalid) as caught:
        config_from(args(tmp_path, path))
    assert caught.value.message.startswith(f"{path}:2: stream.max_bytes: ")
    assert caught.value.exit_code == 2


def test_the_readme_example_is_a_valid_plans_file(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("**Plans** (`relay serve --config FILE`", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "plans.toml"
    path.write_text(example)
    config = config_from(args(tmp_path, path))
    assert config.default_plan == "free" and sorted(config.plans) == ["free", "pro"]
    assert config.plans["free"].max_pending == 10000
    assert config.stream.max_bytes == 10_000_000_000
