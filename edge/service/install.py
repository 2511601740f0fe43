"""``mailslot service install|uninstall|status|logs``: where the service's files go on
this host, what is run to (un)load them, and the manifest of what was written.

Flow: ``Host.from_environ()`` (where things are: home, config folder, uid, the root
prefix) → ``plan_install(spec, host)`` → an ``InstallPlan`` (files with their contents,
folders to make, commands to run, notes for the user), which ``--dry-run`` prints and
``apply_install`` carries out; ``uninstall`` reads the manifest and undoes exactly that.

Rules this module keeps:

- nothing is written outside the plan, and every file the plan writes is listed in the
  manifest (``service.json``, 0600: in the edge's config folder for a user service, in
  ``/etc/mailslot/`` for a system one) with the SHA-256 of what was written; ``uninstall``
  removes those files, and a file edited since is left in place and named;
- installing twice is idempotent: an unchanged unit is not rewritten and the service is
  only (re)started as needed (``restart`` when the unit changed, else ``enable --now``);
- commands are looked up on ``PATH`` (``systemctl``, ``launchctl``, ``loginctl``,
  ``journalctl``, ``useradd``), so that a test can put recording stand-ins there; file
  paths of a system install are under ``$MAILSLOT_SERVICE_ROOT`` when set (as packagers'
  ``DESTDIR``: the files are generated into a tree; no root needed);
- ``loginctl enable-linger`` (a user manager that runs without a login session) is only
  run with ``--linger``; without it the plan says when it is needed and how.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.config import EdgePaths, write_atomic
from edge.errors import NeedsRoot, NotInitialized, ServiceError, ServiceManagerFailed, UsageError
from edge.service.units import (
    SYSTEM_HOME,
    Platform,
    Role,
    Scope,
    ServiceSpec,
    launchd_plist,
    log_paths,
    plist_bytes,
    systemd_unit,
)
from shared.errors import MailslotError

ROOT_ENV = "MAILSLOT_SERVICE_ROOT"
MANIFEST_FILE = "service.json"
#: Seconds a service manager's command may take (``enable --now`` waits for READY=1).
COMMAND_TIMEOUT = 120.0
#: Variables a user service carries over from the installing shell: the runtimes an
#: exec route starts are found on the same ``PATH``; the folders are the same.
CARRIED_ENV = ("PATH", "XDG_CONFIG_HOME", "XDG_DATA_HOME")


def this_platform() -> Platform:
    return "macos" if sys.platform == "darwin" else "linux"


@dataclass(frozen=True)
class Host:
    """Where a service's files go on this machine, read once from the environment."""

    home: Path  # the user's home ($HOME)
    config_home: Path  # $XDG_CONFIG_HOME or ~/.config
    root: Path  # "/" or $MAILSLOT_SERVICE_ROOT
    uid: int
    user: str
    environ: Mapping[str, str]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Host:
        home = Path(environ.get("HOME") or Path.home())
        config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
        uid = os.getuid()
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = environ.get("USER", str(uid))
        return cls(home, config_home, Path(environ.get(ROOT_ENV) or "/"), uid, user,
                   dict(environ))

    @property
    def rooted(self) -> bool:
        """True when system paths are under a prefix (packagers, tests)."""
        return self.root != Path("/")

    def system_path(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def unit_file(self, spec: ServiceSpec) -> Path:
        if spec.platform == "macos":
            return self.home / "Library" / "LaunchAgents" / spec.plist_name
        if spec.scope == "system":
            return self.system_path("/etc/systemd/system") / spec.unit_name
        return self.config_home / "systemd" / "user" / spec.unit_name

    def manifest_file(self, scope: Scope, paths: EdgePaths) -> Path:
        if scope == "system":
            return self.system_path("/etc/mailslot") / MANIFEST_FILE
        return paths.config_dir / MANIFEST_FILE

    def linger_file(self) -> Path:
        return self.system_path("/var/lib/systemd/linger") / self.user


@dataclass(frozen=True)
class Command:
    """A command line the plan runs; ``check=False``: a failure is expected at times
    (``launchctl bootout`` of a service not loaded) and ignored."""

    argv: tuple[str, ...]
    check: bool = True

    def text(self) -> str:
        return " ".join(self.argv)


@dataclass(frozen=True)
class PlannedFile:
    path: Path
    content: bytes
    changed: bool  # False: the file is there with this content already


@dataclass(frozen=True)
class InstallPlan:
    spec: ServiceSpec
    unit: PlannedFile
    manifest: Path
    folders: tuple[Path, ...]  # made (0700) when missing; removed by uninstall if empty
    commands: tuple[Command, ...]
    notes: tuple[str, ...] = ()
    #: The system user to create first (``useradd``), or None.
    create_user: str | None = None
    #: Why this plan cannot be carried out (``--dry-run`` still shows it), or None.
    refusal: MailslotError | None = None

    def describe(self, dry_run: bool, ran: Sequence[Command] = ()) -> dict[str, Any]:
        """What ``service install --json`` prints."""
        return {
            "dry_run": dry_run, "role": self.spec.role, "scope": self.spec.scope,
            "platform": self.spec.platform, "name": self.spec.name,
            "unit": str(self.unit.path), "changed": self.unit.changed,
            "content": self.unit.content.decode(), "manifest": str(self.manifest),
            "commands": [list(c.argv) for c in self.commands],
            "ran": [list(c.argv) for c in ran], "notes": list(self.notes),
            "refusal": None if self.refusal is None else self.refusal.to_dict(),
        }


def find_executable(environ: Mapping[str, str] = os.environ,
                    argv0: str | None = None) -> str:
    """The absolute path of the ``mailslot`` being run: ``sys.argv[0]`` when it is the
    installed script, else the script beside this interpreter (a venv's ``bin/``), else
    the one on ``PATH``."""
    first = Path(argv0 if argv0 is not None else sys.argv[0])
    candidates = []
    if first.name == "mailslot":
        candidates.append(Path(os.path.abspath(first)))
    candidates.append(Path(sys.executable).parent / "mailslot")
    found = shutil.which("mailslot", path=environ.get("PATH"))
    if found:
        candidates.append(Path(os.path.abspath(found)))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ServiceError("cannot find the installed `mailslot` executable (not beside "
                       f"{sys.executable}, not on PATH): install mailslot with pip or pipx")


def build_spec(host: Host, paths: EdgePaths, role: Role, scope: Scope, platform: Platform,
               executable: str, args: Sequence[str] = ()) -> ServiceSpec:
    """The service for this host: a user service runs with this shell's
    ``MAILSLOT_HOME`` (or its XDG folders) and ``PATH``; a system one in ``/var/lib``."""
    if scope == "system" and platform == "macos":
        raise UsageError("--system is for Linux (systemd); on macOS install a user agent "
                         "(--user)")
    environment: list[tuple[str, str]] = []
    home = host.environ.get("MAILSLOT_HOME") or None
    if scope == "system":
        home = SYSTEM_HOME
    else:
        if home is not None:
            home = os.path.abspath(os.path.expanduser(home))
        for name in CARRIED_ENV:
            value = host.environ.get(name)
            if value and not (home is not None and name.startswith("XDG_")):
                environment.append((name, value))
    log_dir = str(host.home / "Library" / "Logs" / "mailslot") if platform == "macos" else ""
    try:
        return ServiceSpec(role=role, scope=scope, platform=platform, executable=executable,
                           home=home, environment=tuple(environment), args=tuple(args),
                           log_dir=log_dir)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def unit_content(spec: ServiceSpec) -> bytes:
    if spec.platform == "macos":
        return plist_bytes(launchd_plist(spec))
    return systemd_unit(spec).encode()


def _systemctl(scope: str, *args: str, check: bool = True) -> Command:
    return Command(("systemctl", *(("--user",) if scope == "user" else ()), *args), check)


def plan_install(spec: ServiceSpec, host: Host, paths: EdgePaths,
                 linger: bool = False) -> InstallPlan:
    """What installing ``spec`` on ``host`` writes and runs (nothing is done here)."""
    unit_path = host.unit_file(spec)
    content = unit_content(spec)
    try:
        changed = unit_path.read_bytes() != content
    except OSError:
        changed = True
    notes: list[str] = []
    folders = [unit_path.parent]
    create_user = None
    refusal = _refusal(spec, host, paths)
    if refusal is not None:
        notes.append(refusal.message)
    if spec.platform == "macos":
        domain = f"gui/{host.uid}"
        folders.append(Path(spec.log_dir))
        commands = [
            Command(("launchctl", "enable", f"{domain}/{spec.label}")),
            Command(("launchctl", "bootout", f"{domain}/{spec.label}"), check=False),
            Command(("launchctl", "bootstrap", domain, str(unit_path))),
        ]
    else:
        commands = [_systemctl(spec.scope, "daemon-reload")]
        if changed and unit_path.exists():
            commands += [_systemctl(spec.scope, "enable", spec.unit_name),
                         _systemctl(spec.scope, "restart", spec.unit_name)]
        else:
            commands.append(_systemctl(spec.scope, "enable", "--now", spec.unit_name))
        if spec.scope == "system" and not user_exists(spec.user):
            create_user = spec.user
            commands.insert(0, Command((
                "useradd", "--system", "--user-group", "--home-dir", SYSTEM_HOME,
                "--no-create-home", "--shell", "/usr/sbin/nologin", spec.user)))
        if spec.scope == "user" and not host.linger_file().exists():
            enable = Command(("loginctl", "enable-linger", host.user))
            if linger:
                commands.insert(0, enable)
            else:
                notes.append(
                    f"lingering is off for {host.user}: the user manager, and mailslot with "
                    "it, runs only while you are logged in. On a server without a "
                    f"graphical login run `{enable.text()}` (or install with --linger)")
    return InstallPlan(spec, PlannedFile(unit_path, content, changed),
                       host.manifest_file(spec.scope, paths), tuple(folders),
                       tuple(commands), tuple(notes), create_user, refusal)


def _refusal(spec: ServiceSpec, host: Host, paths: EdgePaths) -> MailslotError | None:
    """Why installing ``spec`` would give a service that cannot run, or None."""
    if spec.scope == "system":
        # ProtectHome=yes hides /home, /root and /run/user from a system unit: a
        # ``mailslot`` installed there could not even be started.
        for hidden in ("/home/", "/root/", "/run/user/"):
            if spec.executable.startswith(hidden):
                return ServiceError(
                    f"{spec.executable} is under {hidden.rstrip('/')}, which a system unit "
                    "cannot see (ProtectHome=yes): install mailslot outside it, e.g. "
                    "`python3 -m venv /opt/mailslot && /opt/mailslot/bin/pip install "
                    "mailslot`, then run `/opt/mailslot/bin/mailslot service install "
                    "--system`")
    if spec.role == "edge":
        system = spec.scope == "system"
        edge_json = (host.system_path(SYSTEM_HOME) / "config" / "edge.json" if system
                     else paths.config_file)
        if not edge_json.exists():
            init = (f"sudo useradd --system --user-group --home-dir {SYSTEM_HOME} "
                    f"--no-create-home --shell /usr/sbin/nologin {spec.user}; sudo install -d "
                    f"-o {spec.user} -g {spec.user} -m 0700 {SYSTEM_HOME}; sudo -u {spec.user} "
                    f"MAILSLOT_HOME={SYSTEM_HOME} mailslot edge init --relay URL --token TOKEN"
                    if system
                    else "mailslot edge init --relay URL --token TOKEN")
            return NotInitialized(f"no edge here yet ({edge_json} is missing): run "
                                  f"`{init}` first, then install the service")
    return None


def user_exists(name: str) -> bool:
    """Whether this machine has a user ``name``."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _needs_root(scope: str, host: Host) -> bool:
    """A system service's files are root's, unless written under a prefix."""
    return scope == "system" and host.uid != 0 and not host.rooted


def require_root(spec: ServiceSpec, host: Host) -> None:
    if _needs_root(spec.scope, host):
        raise NeedsRoot(f"a system service is written to {host.unit_file(spec).parent}: run "
                        "this with sudo (or add --dry-run to see what it would do)")


def run_command(command: Command, environ: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run one command line (found on ``PATH``); ``ServiceManagerFailed`` if it is
    missing, or fails and ``command.check``."""
    try:
        done = subprocess.run(list(command.argv), capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT, env=dict(environ), stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ServiceManagerFailed(f"`{command.argv[0]}` not found on PATH (needed for "
                                   f"`{command.text()}`)") from None
    except subprocess.TimeoutExpired:
        raise ServiceManagerFailed(f"`{command.text()}` did not finish within "
                                   f"{COMMAND_TIMEOUT:g}s") from None
    if command.check and done.returncode != 0:
        said = (done.stderr or done.stdout).strip().replace("\n", " ")[:500]
        raise ServiceManagerFailed(f"`{command.text()}` exited {done.returncode}: {said}")
    return done


# -- the manifest ---------------------------------------------------------------------


@dataclass
class Manifest:
    """``service.json``: per service (``scope:name``) the files and folders written."""

    path: Path
    services: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            raise ServiceError(f"{path}: not a mailslot service manifest ({exc}); remove it "
                               "and the service files by hand") from None
        services = doc.get("services") if isinstance(doc, dict) else None
        if not isinstance(services, dict):
            raise ServiceError(f"{path}: not a mailslot service manifest")
        return cls(path, services)

    def save(self) -> None:
        if not self.services:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        doc = {"version": 1, "services": self.services}
        write_atomic(self.path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


def service_key(spec: ServiceSpec) -> str:
    return f"{spec.scope}:{spec.name}"


def apply_install(plan: InstallPlan, host: Host) -> list[Command]:
    """Write the unit, record it in the manifest, run the commands; return those run."""
    if plan.refusal is not None:
        raise plan.refusal
    require_root(plan.spec, host)
    manifest = Manifest.load(plan.manifest)
    entry = manifest.services.get(service_key(plan.spec), {})
    made = list(entry.get("folders", []))
    for folder in (*plan.folders, plan.manifest.parent):
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        for new in reversed(missing):
            new.mkdir(mode=0o700)
            made.append(str(new))
    if plan.unit.changed:
        write_atomic(plan.unit.path, plan.unit.content)
        os.chmod(plan.unit.path, 0o644)  # systemd and launchd read it; it holds no secret
    manifest.services[service_key(plan.spec)] = {
        "role": plan.spec.role, "scope": plan.spec.scope, "platform": plan.spec.platform,
        "name": plan.spec.name, "label": plan.spec.label,
        "files": {str(plan.unit.path): hashlib.sha256(plan.unit.content).hexdigest()},
        "folders": made, "created_user": entry.get("created_user") or plan.create_user,
        "log_dir": plan.spec.log_dir,
    }
    manifest.save()  # before the commands: a failure below leaves it all listed
    ran = []
    for command in plan.commands:
        run_command(command, host.environ)
        ran.append(command)
    return ran


# -- uninstall, status, logs ----------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    """A service the manifest lists."""

    key: str
    entry: dict[str, Any]
    manifest: Manifest

    @property
    def name(self) -> str:
        return str(self.entry["name"])

    @property
    def scope(self) -> str:
        return str(self.entry["scope"])

    @property
    def platform(self) -> str:
        return str(self.entry["platform"])

    @property
    def unit_file(self) -> Path:
        return Path(next(iter(self.entry["files"])))


def find_installed(host: Host, paths: EdgePaths, scope: Scope,
                   role: Role | None) -> Installed | None:
    """The service of ``role`` (None: the only one) the manifest lists for ``scope``."""
    manifest = Manifest.load(host.manifest_file(scope, paths))
    keys = [k for k, e in manifest.services.items() if role is None or e.get("role") == role]
    if not keys:
        return None
    if len(keys) > 1:
        roles = ", ".join(sorted(str(manifest.services[k].get("role")) for k in keys))
        raise UsageError(f"several services are installed ({roles}): say which with --role")
    return Installed(keys[0], manifest.services[keys[0]], manifest)


def _manager(installed: Installed, *args: str, check: bool = True) -> Command:
    if installed.platform == "macos":
        return Command(("launchctl", *args), check)
    return _systemctl(installed.scope, *args, check=check)


def uninstall(installed: Installed, host: Host) -> dict[str, Any]:
    """Stop and disable the service, remove the files install wrote (unless edited
    since), the folders it made if empty, and its manifest entry."""
    if _needs_root(installed.scope, host):
        raise NeedsRoot("a system service is removed from /etc/systemd/system: run this with "
                        "sudo")
    ran: list[Command] = []
    kept: list[str] = []
    removed: list[str] = []
    if installed.platform == "macos":  # not loaded (any more) is fine: check=False
        stop = _manager(installed, "bootout", f"gui/{host.uid}/{installed.entry['label']}",
                        check=False)
    else:
        stop = _manager(installed, "disable", "--now", f"{installed.name}.service",
                        check=False)
    run_command(stop, host.environ)
    ran.append(stop)
    for path, digest in installed.entry["files"].items():
        file = Path(path)
        try:
            current = hashlib.sha256(file.read_bytes()).hexdigest()
        except FileNotFoundError:
            continue
        if current != digest:
            kept.append(path)
            continue
        file.unlink()
        removed.append(path)
    del installed.manifest.services[installed.key]
    installed.manifest.save()  # the file goes with the last service it lists
    for folder in sorted(installed.entry.get("folders", []), key=len, reverse=True):
        try:
            Path(folder).rmdir()
            removed.append(folder)
        except OSError:
            pass  # not empty (another unit, logs) or gone: it stays
    if installed.platform != "macos":
        reload = _manager(installed, "daemon-reload")
        run_command(reload, host.environ)
        ran.append(reload)
    notes = [f"{path} was edited since it was installed: left in place" for path in kept]
    if installed.entry.get("created_user"):
        notes.append(f"the user {installed.entry['created_user']} and {SYSTEM_HOME} (the "
                     "service's data) are kept; `userdel` and `rm -r` them if you want")
    return {"name": installed.name, "removed": removed, "kept": kept,
            "ran": [list(c.argv) for c in ran], "notes": notes}


def status(installed: Installed, host: Host) -> dict[str, Any]:
    """What the service manager says: ``enabled`` and ``active`` (systemd), ``loaded``
    and ``running`` (launchd)."""
    doc: dict[str, Any] = {"name": installed.name, "scope": installed.scope,
                           "platform": installed.platform, "installed": True,
                           "unit": str(installed.unit_file),
                           "unit_present": installed.unit_file.exists()}
    if installed.platform == "macos":
        target = f"gui/{host.uid}/{installed.entry['label']}"
        done = run_command(_manager(installed, "print", target, check=False), host.environ)
        doc["enabled"] = done.returncode == 0
        doc["active"] = done.returncode == 0 and "state = running" in done.stdout
        doc["state"] = "running" if doc["active"] else ("loaded" if doc["enabled"] else
                                                        "not loaded")
        return doc
    unit = f"{installed.name}.service"
    enabled = run_command(_manager(installed, "is-enabled", unit, check=False), host.environ)
    active = run_command(_manager(installed, "is-active", unit, check=False), host.environ)
    doc["enabled"] = enabled.returncode == 0
    doc["enabled_state"] = enabled.stdout.strip() or "unknown"
    doc["active"] = active.returncode == 0
    doc["state"] = active.stdout.strip() or "unknown"
    return doc


def logs_command(installed: Installed, lines: int, follow: bool) -> Command:
    """``journalctl`` for a systemd unit, ``tail`` of launchd's log files."""
    more = ("-f",) if follow else ()
    if installed.platform == "macos":
        files = log_paths(installed.entry["log_dir"], installed.name)
        return Command(("tail", "-n", str(lines), *more, *files))
    scope = ("--user",) if installed.scope == "user" else ()
    return Command(("journalctl", *scope, "-u", f"{installed.name}.service", "-n", str(lines),
                    "--no-pager", *more))
