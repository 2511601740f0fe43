"""The identity key file on a real disk: modes, refusals, and no secrets in messages."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from edge.errors import EdgeError, KeyFileError, NotInitialized
from edge.link.keystore import load_identity, save_identity
from shared.identity import Identity


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "config" / "keys" / "identity.key"


def _secrets(identity: Identity) -> list[str]:
    doc = json.loads(identity.to_private_bytes())
    return [doc["sign_seed"], doc["box_seed"]]


def test_round_trip_with_private_modes(key_path: Path) -> None:
    identity = Identity.generate()
    save_identity(key_path, identity)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    loaded = load_identity(key_path)
    assert loaded.id == identity.id
    assert loaded.public == identity.public


def test_existing_key_is_never_overwritten(key_path: Path) -> None:
    first = Identity.generate()
    save_identity(key_path, first)
    with pytest.raises(KeyFileError, match="already exists"):
        save_identity(key_path, Identity.generate())
    assert load_identity(key_path).id == first.id


def test_missing_key_means_not_initialized(key_path: Path) -> None:
    with pytest.raises(NotInitialized, match="mailslot edge init") as info:
        load_identity(key_path)
    assert str(key_path) in str(info.value)
    assert isinstance(info.value, EdgeError)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_readable_by_others_is_refused(key_path: Path, mode: int) -> None:
    identity = Identity.generate()
    save_identity(key_path, identity)
    os.chmod(key_path, mode)
    with pytest.raises(KeyFileError) as info:
        load_identity(key_path)
    message = str(info.value)
    assert f"chmod 600 {key_path}" in message
    assert f"{mode:04o}" in message
    assert not any(secret in message for secret in _secrets(identity))
    os.chmod(key_path, 0o600)
    assert load_identity(key_path).id == identity.id


def test_owner_only_stricter_mode_is_accepted(key_path: Path) -> None:
    save_identity(key_path, Identity.generate())
    os.chmod(key_path, 0o400)
    load_identity(key_path)


@pytest.mark.parametrize(
    "content",
    [b"", b"not json at all", b"[1, 2]", b'{"v": 1, "id": "x"}'],
)
def test_garbage_is_not_an_identity(key_path: Path, content: bytes) -> None:
    key_path.parent.mkdir(parents=True)
    key_path.write_bytes(content)
    os.chmod(key_path, 0o600)
    with pytest.raises(KeyFileError, match="not a mailslot identity") as info:
        load_identity(key_path)
    assert str(key_path) in str(info.value)


def test_mismatched_key_file_keeps_secrets_out_of_the_error(key_path: Path) -> None:
    identity = Identity.generate()
    doc = json.loads(identity.to_private_bytes())
    doc["id"] = Identity.generate().id
    key_path.parent.mkdir(parents=True)
    key_path.write_text(json.dumps(doc))
    os.chmod(key_path, 0o600)
    with pytest.raises(KeyFileError, match="does not match") as info:
        load_identity(key_path)
    assert info.value.__cause__ is None
    assert not any(secret in str(info.value) for secret in _secrets(identity))
    assert not any(secret in repr(info.value) for secret in _secrets(identity))


def test_directory_instead_of_key_is_refused(key_path: Path) -> None:
    key_path.mkdir(parents=True, mode=0o700)
    with pytest.raises(KeyFileError):
        load_identity(key_path)
