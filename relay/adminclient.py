"""The admin API's client, for ``mailslot relay account|token|enrollment|identity …``
(the relay's one httpx adapter). It never opens a store: every command is an HTTP
request to a relay, which does the work.

Which relay, and with which credential (``resolve_target``): ``--relay URL``, else the
relay running in this data folder (``DATA_DIR/relay.json``, its pid alive), else
``relay_not_running``; the credential from ``--admin-key-file FILE``, else
``MAILSLOT_ADMIN_KEY``, else (for the local relay only) ``DATA_DIR/admin.key``, else
``missing_admin_key``. A refusal by the relay is raised as a ``RemoteError`` carrying
the relay's code, so the command exits 1 with ``mailslot: CODE: message``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from relay.adminauth import ADMIN_KEY_FILE, read_admin_key
from relay.config import RUNTIME_FILE
from shared.errors import LocalError, RemoteError

ADMIN_KEY_ENV = "MAILSLOT_ADMIN_KEY"


@dataclass(frozen=True)
class AdminTarget:
    url: str
    key: str
    #: Set when the relay was found in the data folder (not named with ``--relay``):
    #: the line the command prints on stderr to say which relay it talks to.
    note: str | None = None


def running_relay(data_dir: Path) -> dict[str, Any] | None:
    """The running relay's ``relay.json`` (pid, url, nats), or None if none runs."""
    try:
        runtime = json.loads((data_dir / RUNTIME_FILE).read_text())
        os.kill(int(runtime["pid"]), 0)
        str(runtime["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dict(runtime)


def resolve_target(
    relay_url: str | None, key_file: Path | None, data_dir: Path,
    environ: Mapping[str, str] = os.environ,
) -> AdminTarget:
    note = None
    if relay_url:
        url = relay_url.rstrip("/")
    else:
        runtime = running_relay(data_dir)
        if runtime is None:
            raise LocalError(
                f"no relay is running in {data_dir} (start `mailslot relay serve`, or name "
                "one with --relay URL)", code="relay_not_running",
            )
        url = str(runtime["url"]).rstrip("/")
        note = f"using the relay running in {data_dir} (pid {runtime['pid']}) at {url}"
    key = _admin_key(key_file, environ, None if relay_url else data_dir)
    return AdminTarget(url, key, note)


def _admin_key(key_file: Path | None, environ: Mapping[str, str], local: Path | None) -> str:
    try:
        if key_file is not None:
            return read_admin_key(key_file)
        if environ.get(ADMIN_KEY_ENV):
            return environ[ADMIN_KEY_ENV].strip()
        if local is not None and (local / ADMIN_KEY_FILE).exists():
            return read_admin_key(local / ADMIN_KEY_FILE)
    except OSError as exc:
        raise LocalError(f"cannot read the admin key: {exc}", code="missing_admin_key") from exc
    raise LocalError(
        f"no admin credential: pass --admin-key-file FILE or set {ADMIN_KEY_ENV}"
        + (f" (none in {local / ADMIN_KEY_FILE})" if local is not None else ""),
        code="missing_admin_key",
    )


def segment(value: str) -> str:
    """A path segment, quoted (the relay checks it; nothing here is trusted)."""
    return quote(value, safe="")


class AdminClient:
    """One admin API request per call; ``request`` returns the decoded JSON answer."""

    def __init__(self, target: AdminTarget, timeout: float = 30.0) -> None:
        self.target = target
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.target.key}"}
        try:
            response = httpx.request(
                method, self.target.url + path, json=body, headers=headers,
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise LocalError(
                f"cannot reach the relay at {self.target.url}: {exc}", code="relay_unreachable"
            ) from exc
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if response.is_success and doc is not None:
            return doc
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            raise RemoteError(str(doc.get("message") or doc["error"]), code=doc["error"])
        raise RemoteError(
            f"the relay answered {response.status_code} {response.reason_phrase}",
            code="relay_error",
        )
