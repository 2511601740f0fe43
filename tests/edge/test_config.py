"""Edge paths and config on a real disk: MAILSLOT_HOME, modes, and clear refusals."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import platformdirs
import pytest
from pydantic import ValidationError

from edge.config import EdgeConfig, EdgePaths, load_config, save_config
from edge.errors import EdgeConfigError, EdgeError
from shared.identity import Identity


@pytest.fixture(scope="module")
def relay() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="module")
def me() -> Identity:
    return Identity.generate()


@pytest.fixture
def paths(tmp_path: Path) -> EdgePaths:
    return EdgePaths.resolve({"MAILSLOT_HOME": str(tmp_path / "home")})


def _doc(relay: Identity, me: Identity, **extra: Any) -> dict[str, Any]:
    return {
        "relay_url": "http://127.0.0.1:7710",
        "identity": me.id,
        "relay_identity": relay.public.to_doc(),
        **extra,
    }


def _write(paths: EdgePaths, text: str) -> None:
    paths.ensure()
    paths.config_file.write_text(text)


def test_mailslot_home_puts_everything_under_one_folder(tmp_path: Path) -> None:
    paths = EdgePaths.resolve({"MAILSLOT_HOME": str(tmp_path)})
    assert paths.config_dir == tmp_path / "config"
    assert paths.data_dir == tmp_path / "data"
    assert paths.keys_dir == tmp_path / "config" / "keys"
    assert paths.key_file == tmp_path / "config" / "keys" / "identity.key"
    assert paths.config_file == tmp_path / "config" / "edge.json"
    assert paths.inbox_file == tmp_path / "data" / "inbox.sqlite3"


def test_without_mailslot_home_platform_dirs_are_used() -> None:
    for environ in ({}, {"MAILSLOT_HOME": ""}):
        paths = EdgePaths.resolve(environ)
        assert paths.config_dir == Path(platformdirs.user_config_dir("mailslot"))
        assert paths.data_dir == Path(platformdirs.user_data_dir("mailslot"))


def test_relative_mailslot_home_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    paths = EdgePaths.resolve({"MAILSLOT_HOME": "edge1"})
    assert paths.config_dir == tmp_path / "edge1" / "config"


def test_ensure_creates_and_tightens_private_dirs(paths: EdgePaths) -> None:
    paths.data_dir.mkdir(parents=True, mode=0o755)
    os.chmod(paths.data_dir, 0o755)
    paths.ensure()
    for directory in (paths.config_dir, paths.keys_dir, paths.data_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    paths.ensure()  # idempotent


def test_save_and_load_round_trip(paths: EdgePaths, relay: Identity, me: Identity) -> None:
    config = EdgeConfig.model_validate(_doc(relay, me, initial_credit=64))
    save_config(paths, config)
    assert stat.S_IMODE(paths.config_file.stat().st_mode) == 0o600
    assert load_config(paths) == config
    assert [p.name for p in paths.config_dir.iterdir() if p.is_file()] == ["edge.json"]
    # Saving again replaces the file atomically and leaves no temp files behind.
    save_config(paths, config.model_copy(update={"keepalive": 5.0}))
    assert load_config(paths).keepalive == 5.0
    assert [p.name for p in paths.config_dir.iterdir() if p.is_file()] == ["edge.json"]


def test_defaults(relay: Identity, me: Identity) -> None:
    config = EdgeConfig.model_validate(_doc(relay, me))
    assert config.initial_credit == 2048
    assert (config.reconnect_base, config.reconnect_cap, config.keepalive) == (0.5, 30.0, 20.0)
    with pytest.raises(ValidationError):
        config.keepalive = 1.0


@pytest.mark.parametrize(
    ("url", "ws"),
    [
        ("http://127.0.0.1:7710", "ws://127.0.0.1:7710/v1/connect"),
        ("http://127.0.0.1:7710/", "ws://127.0.0.1:7710/v1/connect"),
        ("https://relay.example.com", "wss://relay.example.com/v1/connect"),
        ("https://example.com/mailslot/", "wss://example.com/mailslot/v1/connect"),
    ],
)
def test_ws_url(relay: Identity, me: Identity, url: str, ws: str) -> None:
    assert EdgeConfig.model_validate(_doc(relay, me, relay_url=url)).ws_url() == ws


def test_relay_public_is_the_pinned_identity(relay: Identity, me: Identity) -> None:
    config = EdgeConfig.model_validate(_doc(relay, me))
    assert config.relay_public() == relay.public


def test_missing_config_says_run_init(paths: EdgePaths) -> None:
    with pytest.raises(EdgeConfigError) as info:
        load_config(paths)
    assert str(paths.config_file) in str(info.value)
    assert "mailslot edge init" in str(info.value)
    assert isinstance(info.value, EdgeError)


@pytest.mark.parametrize("text", ["{not json", "", "\x00\xff"])
def test_garbage_config_is_not_json(paths: EdgePaths, text: str) -> None:
    _write(paths, text)
    with pytest.raises(EdgeConfigError, match="not valid JSON") as info:
        load_config(paths)
    assert str(paths.config_file) in str(info.value)


def test_non_object_config(paths: EdgePaths) -> None:
    _write(paths, "[1, 2]")
    with pytest.raises(EdgeConfigError, match="JSON object"):
        load_config(paths)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"initial_credit": 0}, "initial_credit"),
        ({"initial_credit": 16385}, "initial_credit"),
        ({"relay_url": "ftp://relay"}, "relay_url"),
        ({"relay_url": "http://"}, "relay_url"),
        ({"identity": "Not-An-Id"}, "identity"),
        ({"keepalive": -1}, "keepalive"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_field_is_named(
    paths: EdgePaths, relay: Identity, me: Identity, change: dict[str, Any], field: str
) -> None:
    _write(paths, json.dumps(_doc(relay, me, **change)))
    with pytest.raises(EdgeConfigError) as info:
        load_config(paths)
    message = str(info.value)
    assert str(paths.config_file) in message
    assert f"field {field}" in message


def test_missing_field_is_named(paths: EdgePaths, relay: Identity, me: Identity) -> None:
    doc = _doc(relay, me)
    del doc["identity"]
    _write(paths, json.dumps(doc))
    with pytest.raises(EdgeConfigError, match="field identity"):
        load_config(paths)


def test_tampered_relay_identity_is_refused(
    paths: EdgePaths, relay: Identity, me: Identity
) -> None:
    doc = _doc(relay, me)
    doc["relay_identity"]["box_key"] = me.public.to_doc()["box_key"]
    _write(paths, json.dumps(doc))
    with pytest.raises(EdgeConfigError, match="field relay_identity"):
        load_config(paths)


def test_backoff_cap_below_base_is_refused(relay: Identity, me: Identity) -> None:
    with pytest.raises(ValidationError, match="reconnect_cap"):
        EdgeConfig.model_validate(_doc(relay, me, reconnect_base=5, reconnect_cap=1))
