"""``mailslot doctor``: everything that makes a home work, checked in the order a user
would fix it, each problem as one ``Check`` with what to do.

The checks: the home's folders and file modes, the identity key, ``edge.json``, the
intents file, the relay (reachable, its TLS, its clock against ours), the daemon
(running, connected), the service (installed, enabled, running), the relay's own folder
and embedded NATS store when this home holds a relay, and free disk. A check whose
prerequisite failed is not run (no relay to probe without a readable ``edge.json``).

Rules this module keeps: it only reads (a fresh home is left as it was: the stores are
not created, no service manager is asked to change anything); every ``Check`` that
fails carries a ``fix`` a user can type or follow; secrets (tokens, the embedded
server's URL) never reach a detail.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge.config import EdgeConfig, EdgePaths, load_config
from edge.intents.file import load_intents
from edge.link.keystore import load_identity
from edge.service.install import Host, Installed, find_installed, status
from edge.service.probe import Probe, probe_relay
from edge.service.units import Scope
from edge.status import edge_status
from shared.errors import MailslotError
from shared.host.lockfile import pid_alive

#: Below this much free space where the home's data is (or the relay's store), a
#: problem: SQLite and JetStream need room to write, and a full disk loses writes.
MIN_FREE_BYTES = 1 << 30
#: The relay's clock may differ from ours by this much before it is a problem: signed
#: requests are refused past 300 s (``shared.auth``), envelopes from the future too.
MAX_SKEW_SECONDS = 30.0
TIME_SYNC_FIX = ("turn on time sync: `timedatectl set-ntp true` (Linux), System Settings > "
                 "General > Date & Time > Set time automatically (macOS)")


@dataclass(frozen=True)
class Check:
    """One thing checked: ``ok``, what was found (``detail``) and, if not ok, what to do."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Setup:
    """What ``doctor`` looks at. ``relay_dir``: this home's relay data folder (the CLI
    resolves it; the edge never imports the relay), ``runtime_file`` the name of the
    file a running relay writes there."""

    paths: EdgePaths
    host: Host
    relay_dir: Path | None = None
    runtime_file: str = "relay.json"
    now: Callable[[], float] = time.time
    min_free: int = MIN_FREE_BYTES
    max_skew: float = MAX_SKEW_SECONDS


def run_checks(setup: Setup) -> list[Check]:
    """Every check that applies to this home, in order."""
    return list(_checks(setup))


def _checks(setup: Setup) -> Iterator[Check]:
    paths = setup.paths
    relay_home = setup.relay_dir is not None and setup.relay_dir.is_dir()
    has_edge = paths.config_file.exists()
    if not has_edge and not relay_home and not paths.key_file.exists():
        yield Check("home", False, f"no edge (and no relay) in {paths.config_dir.parent}",
                    "`mailslot edge init --relay URL --token TOKEN`, or `mailslot up` (check "
                    "MAILSLOT_HOME if you expected one here)")
        yield from _service(setup)
        yield _disk(paths, None, setup.min_free)
        return
    yield from _folders(paths, setup.relay_dir if relay_home else None, not has_edge)
    yield _file_modes(paths, setup.relay_dir if relay_home else None)
    if has_edge or not relay_home:
        yield _key(paths)
        config_check, config = _config(paths)
        yield config_check
        yield _intents(paths)
        if config is not None:
            probe = probe_relay(config.relay_url, now=setup.now)
            yield from _relay(config, probe, setup.max_skew)
            yield _daemon(paths)
    yield from _service(setup)
    if relay_home and setup.relay_dir is not None:
        yield from _relay_store(setup.relay_dir, setup.runtime_file)
    yield _disk(paths, setup.relay_dir if relay_home else None, setup.min_free)


# -- the home -------------------------------------------------------------------------


def _folders(paths: EdgePaths, relay_dir: Path | None, no_edge: bool) -> Iterator[Check]:
    wanted = [] if relay_dir is not None and no_edge else [
        paths.config_dir, paths.keys_dir, paths.data_dir]
    if relay_dir is not None:
        wanted.append(relay_dir)
    problems, fixes = [], []
    for folder in wanted:
        try:
            info = folder.stat()
        except FileNotFoundError:
            problems.append(f"{folder} is missing")
            fixes.append("`mailslot edge init --relay URL --token TOKEN` makes it")
            continue
        if stat.S_IMODE(info.st_mode) & 0o077:
            problems.append(f"{folder} is mode {stat.S_IMODE(info.st_mode):o}, open to others")
            fixes.append(f"chmod 700 {folder}")
        if info.st_uid != os.getuid():
            problems.append(f"{folder} belongs to uid {info.st_uid}, not to you")
            fixes.append(f"chown -R {os.getuid()} {folder} (or run doctor as its owner)")
    if wanted:
        yield Check("folders", not problems, "; ".join(problems) or
                    ", ".join(str(f) for f in wanted) + ": yours, mode 700",
                    "; ".join(dict.fromkeys(fixes)))


def _file_modes(paths: EdgePaths, relay_dir: Path | None) -> Check:
    """Files holding keys or private interrupts that group or others may read."""
    candidates = [paths.key_file, paths.activity_key_file, paths.config_file,
                  paths.config_dir / "up.json", paths.inbox_file, paths.activity_file,
                  paths.engine_file, paths.watches_file]
    if relay_dir is not None:
        candidates += [relay_dir / "admin.key", relay_dir / "relay.json"]
    open_to_others = []
    for file in candidates:
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
        except OSError:
            continue
        if mode & 0o077:
            open_to_others.append((file, mode))
    if not open_to_others:
        return Check("file_modes", True, "keys, config and stores: mode 600")
    detail = "; ".join(f"{file} is mode {mode:o}" for file, mode in open_to_others)
    return Check("file_modes", False, f"open to others: {detail}",
                 "chmod 600 " + " ".join(str(file) for file, _ in open_to_others))


def _key(paths: EdgePaths) -> Check:
    try:
        identity = load_identity(paths.key_file)
    except MailslotError as exc:
        fix = (f"chmod 600 {paths.key_file}" if exc.code == "key_file_error" and "mode" in
               exc.message else "`mailslot edge init --relay URL --token TOKEN` (a new key "
               "is a new identity: enroll it again)")
        return Check("key", False, exc.message, fix)
    return Check("key", True, f"identity {identity.id} in {paths.key_file}")


def _config(paths: EdgePaths) -> tuple[Check, EdgeConfig | None]:
    try:
        config = load_config(paths)
    except MailslotError as exc:
        return Check("edge_json", False, exc.message,
                     "`mailslot edge init --relay URL --token TOKEN`, or correct the field "
                     "named"), None
    return Check("edge_json", True, f"{paths.config_file}: relay {config.relay_url}"), config


def _intents(paths: EdgePaths) -> Check:
    if not paths.intents_file.exists():
        return Check("intents", True, f"no {paths.intents_file.name} yet: interrupts are "
                     "kept in the inbox, nothing is woken")
    try:
        found = load_intents(paths.intents_file)
    except MailslotError as exc:
        return Check("intents", False, exc.message,
                     f"correct {paths.intents_file} at the line named (the daemon keeps the "
                     "last good set meanwhile)")
    return Check("intents", True, f"{len(found.intents)} intent(s), {len(found.watches)} "
                 f"watch(es) in {paths.intents_file}")


# -- the relay --------------------------------------------------------------------------


def _relay(config: EdgeConfig, probe: Probe, max_skew: float) -> Iterator[Check]:
    url = config.relay_url
    if probe.tls_error is not None:
        yield Check("tls", False, f"{url}: {probe.tls_error}",
                    "give the relay a certificate this machine trusts (or, for a private CA, "
                    "set SSL_CERT_FILE); check the URL's scheme and port in edge.json")
        return
    if probe.error is not None:
        yield Check("relay", False, f"{url}: {probe.error}",
                    "start the relay or check edge.json's relay_url, the network and any "
                    "firewall")
        return
    if not probe.healthy:
        yield Check("relay", False, f"{url}/healthz answered {probe.status}",
                    "see the relay's log (`mailslot service logs --role relay` where it runs); "
                    "503 means its NATS store is lost")
    else:
        yield Check("relay", True, f"{url} answers ({probe.elapsed * 1000:.0f} ms)")
    yield tls_check(url)
    if probe.skew is None:
        yield Check("clock", False, "the relay did not say its time",
                    "upgrade the relay (its /healthz reports its time)")
    elif abs(probe.skew) > max_skew:
        ahead = "ahead of" if probe.skew > 0 else "behind"
        yield Check("clock", False, f"the relay's clock is {abs(probe.skew):.0f} s {ahead} "
                    f"this machine's (at most {max_skew:g} s; signed requests fail past 300 s)",
                    TIME_SYNC_FIX + ", here and on the relay")
    else:
        yield Check("clock", True, f"within {abs(probe.skew):.1f} s of the relay's")


def tls_check(url: str) -> Check:
    """HTTPS, or plain HTTP that never leaves this machine; else a problem."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return Check("tls", True, "HTTPS, certificate verified")
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return Check("tls", True, "plain HTTP on this machine (loopback): nothing leaves it")
    return Check("tls", False, f"{url} is plain HTTP to another machine: tokens and "
                 "interrupts cross the network unencrypted",
                 "serve the relay over HTTPS (a reverse proxy with a certificate) and "
                 "`mailslot edge init --relay https://…` again")


def _daemon(paths: EdgePaths) -> Check:
    if not paths.inbox_file.exists():
        return Check("daemon", False, "the daemon has never run here (no inbox yet)",
                     "`mailslot service install` (or run `mailslot edge run`)")
    try:
        found = edge_status(paths)
    except MailslotError as exc:
        return Check("daemon", False, exc.message, "see `mailslot status`")
    if not found["daemon_running"]:
        return Check("daemon", False, "the edge daemon is not running",
                     "`mailslot service install` (or `mailslot service status` / `mailslot "
                     "edge run`)")
    if not found["connected"]:
        return Check("daemon", False, "the daemon runs but is not connected to the relay",
                     "see its log (`mailslot service logs`): the relay check above, a revoked "
                     "identity or a disabled account")
    return Check("daemon", True, "running, connected to the relay")


# -- the service ----------------------------------------------------------------------


def _service(setup: Setup) -> Iterator[Check]:
    found: list[Installed] = []
    scopes: tuple[Scope, ...] = ("user", "system")
    for scope in scopes:
        manifest = setup.host.manifest_file(scope, setup.paths)
        if scope == "system" and not os.access(manifest, os.R_OK):
            continue  # not installed, or not ours to read (run doctor with sudo)
        try:
            installed = find_installed(setup.host, setup.paths, scope, None)
        except MailslotError as exc:
            yield Check("service", False, exc.message, f"check {manifest}")
            return
        if installed is not None:
            found.append(installed)
    if not found:
        yield Check("service", True, "no service installed: mailslot runs only while you "
                    "start it (`mailslot service install` runs it unattended)")
        return
    for installed in found:
        label = f"{installed.name} ({installed.scope})"
        sudo = "sudo " if installed.scope == "system" else ""
        flag = "--system" if installed.scope == "system" else "--user"
        if not installed.unit_file.exists():
            yield Check("service", False, f"{label}: {installed.unit_file} is missing",
                        f"{sudo}mailslot service install {flag} --role "
                        f"{installed.entry['role']}")
            continue
        try:
            state = status(installed, setup.host)
        except MailslotError as exc:
            yield Check("service", False, f"{label}: {exc.message}",
                        "is the service manager running? (`systemctl --user` needs a login "
                        "session or lingering)")
            continue
        if not state["enabled"]:
            yield Check("service", False, f"{label} is installed but not enabled "
                        f"({state.get('enabled_state', state['state'])})",
                        f"{sudo}mailslot service install {flag} --role "
                        f"{installed.entry['role']} (enables and starts it)")
        elif not state["active"]:
            yield Check("service", False, f"{label} is enabled but {state['state']}",
                        f"`mailslot service logs {flag}` says why; then {sudo}mailslot service "
                        f"install {flag} --role {installed.entry['role']}")
        else:
            yield Check("service", True, f"{label}: enabled, running")


# -- the relay's store, the disk ------------------------------------------------------


def _relay_store(relay_dir: Path, runtime_file: str) -> Iterator[Check]:
    runtime = relay_dir / runtime_file
    try:
        doc = json.loads(runtime.read_text())
    except FileNotFoundError:
        yield Check("relay_store", False, f"no relay is running on {relay_dir}",
                    "`mailslot relay serve` (or `mailslot service install --role relay`)")
        return
    except (OSError, ValueError) as exc:
        yield Check("relay_store", False, f"{runtime}: unreadable ({exc})",
                    "stop the relay, remove the file, start it again")
        return
    if not isinstance(doc, dict) or not pid_alive(doc.get("pid")):
        yield Check("relay_store", False, f"{runtime} names a relay that is gone (pid "
                    f"{doc.get('pid') if isinstance(doc, dict) else '?'}): it did not stop "
                    "cleanly", "start it again: `mailslot relay serve` (or `mailslot service "
                    "install --role relay`)")
        return
    url = doc.get("url")
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        probe = probe_relay(url)
        if not probe.healthy:
            said = probe.error or f"/healthz answered {probe.status}"
            yield Check("relay_store", False, f"the relay (pid {doc['pid']}) at {url}: {said}",
                        "read its log (`mailslot service logs --role relay`); a 503 means its "
                        "NATS store is lost and it is about to exit (code 7)")
            return
    if "nats_pid" not in doc:
        yield Check("relay_store", True, f"relay pid {doc['pid']} running on an outside NATS "
                    "(check that server's own health)")
        return
    store = relay_dir / "jetstream"
    if not pid_alive(doc.get("nats_pid")):
        yield Check("relay_store", False, f"the embedded nats-server (pid {doc.get('nats_pid')}) "
                    "is not running", "the relay restarts it within --nats-restart-timeout; if "
                    "it does not, restart the relay and read its log")
    elif not os.access(store, os.W_OK | os.X_OK):
        yield Check("relay_store", False, f"{store} is missing or not writable",
                    f"chown -R the relay's user {store}; chmod 700 {store}")
    else:
        yield Check("relay_store", True, f"relay pid {doc['pid']}, embedded nats-server pid "
                    f"{doc['nats_pid']}, store {store}")


def _disk(paths: EdgePaths, relay_dir: Path | None, min_free: int) -> Check:
    low = []
    seen = set()
    for place in (paths.data_dir, relay_dir):
        while place is not None and not place.exists():
            place = place.parent
        if place is None:
            continue
        device = os.stat(place).st_dev
        if device in seen:
            continue
        seen.add(device)
        usage = shutil.disk_usage(place)
        if usage.free < min_free:
            low.append(f"{place}: {usage.free / 2**30:.2f} GiB free")
    if low:
        return Check("disk", False, "low on disk: " + "; ".join(low) + f" (want at least "
                     f"{min_free / 2**30:.2f} GiB)", "free some space on that file system")
    return Check("disk", True, f"at least {min_free / 2**30:.2f} GiB free")
