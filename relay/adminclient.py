"""The admin API's client, for ``mailslot relay account|token|enrollment|identity …``
(the relay's one httpx adapter). It never opens a store: every command is an HTTP
request to a relay, which does the work.

Which relay, and with which credential (``resolve_target``): ``--relay URL``, else the
relay running in this data folder (``DATA_DIR/relay.json``, its pid alive), else
``relay_not_running``; the credential from ``--admin-key-file FILE``, else
``MAILSLOT_ADMIN_KEY``, else (for the local relay only) ``DATA_DIR/admin.key``, else
``missing_admin_key``. With ``--sign`` there is no credential: each request is signed
by this ``MAILSLOT_HOME``'s edge identity (``shared.auth.request_header``, as the edge
signs its grants), which the relay must know as an admin identity; the relay is then
``--relay URL``, else the one that identity is enrolled with. A refusal by the relay is
raised as a ``RemoteError`` carrying the relay's code, so the command exits 1 with
``mailslot: CODE: message``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from relay.adminauth import ADMIN_KEY_FILE, read_admin_key
from relay.config import RUNTIME_FILE, relay_data_dir
from shared.auth import request_header
from shared.errors import LocalError, RemoteError
from shared.identity import Identity

ADMIN_KEY_ENV = "MAILSLOT_ADMIN_KEY"
#: This home's edge identity and, when asked (``True``), the URL of the relay it is
#: enrolled with: ``edge.cli.relay`` hands it in as ``args.edge_key`` (the relay never
#: imports ``edge``), and it is called only for ``--sign``.
EdgeKey = Callable[[bool], tuple[Identity, str | None]]


@dataclass(frozen=True)
class AdminTarget:
    url: str
    #: The admin credential, or None when requests are signed by ``signer``.
    key: str | None
    #: Set when the relay was not named with ``--relay`` (found in the data folder, or
    #: the one the signing identity enrolled with): the line the command prints on
    #: stderr to say which relay it talks to.
    note: str | None = None
    signer: Identity | None = None


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
    environ: Mapping[str, str] = os.environ, sign: EdgeKey | None = None,
) -> AdminTarget:
    if sign is not None:
        return _signed_target(relay_url, sign)
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


def _signed_target(relay_url: str | None, sign: EdgeKey) -> AdminTarget:
    identity, enrolled = sign(not relay_url)
    if relay_url:
        return AdminTarget(relay_url.rstrip("/"), None, None, identity)
    if not enrolled:
        raise LocalError("this identity is enrolled with no relay: name one with --relay URL",
                         code="relay_not_running")
    url = enrolled.rstrip("/")
    return AdminTarget(url, None, f"signing as {identity.id} at the relay it is enrolled "
                       f"with, {url}", identity)


def client_from_args(args: argparse.Namespace) -> AdminClient:
    """The client an admin command's flags name (``--relay``, ``--admin-key-file``,
    ``--sign``, ``--data-dir``: ``relay.cli``), after saying on stderr which relay it
    talks to when that was not named."""
    sign: EdgeKey | None = None
    if getattr(args, "sign", False):
        sign = getattr(args, "edge_key", None)
        if sign is None:
            raise LocalError("--sign needs the edge's home (run as `mailslot relay …`)",
                             code="not_initialized")
    target = resolve_target(args.relay, args.admin_key_file,
                            args.data_dir or relay_data_dir(), sign=sign)
    if target.note is not None:
        print(f"mailslot: {target.note}", file=sys.stderr, flush=True)
    return AdminClient(target)


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
        content = b"" if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.target.signer is not None:
            # The relay checks the signature over the path it routes (percent-decoded,
            # without the query) and exactly these body bytes.
            signed_path = unquote(urlsplit(path).path)
            headers["Authorization"] = request_header(
                self.target.signer, method, signed_path, int(time.time()), content)
        else:
            headers["Authorization"] = f"Bearer {self.target.key}"
        try:
            response = httpx.request(
                method, self.target.url + path, content=content, headers=headers,
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
