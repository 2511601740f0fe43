"""What the tests of programs the edge runs (``edge.spawn`` and its callers: command watches,
exec routes) share: looking processes up in ``/proc``, and arguments a shell would act on."""

from __future__ import annotations

from pathlib import Path

from tests_support import wait_until


def alive(pid: int) -> bool:
    """Running (or stopped), not gone and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


async def all_dead(*pids: int) -> None:
    # SIGKILL is delivered at once but a process takes a moment to die: poll /proc briefly.
    await wait_until(lambda: not any(alive(pid) for pid in pids), timeout=5,
                     what=f"processes {pids} to die")


def shell_traps(tmp_path: Path) -> tuple[Path, list[str]]:
    """A folder ``victim`` holding ``keep.txt``, and texts that, if a shell ever saw them,
    would create ``pwned-*`` files in ``tmp_path`` or remove ``victim``."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    return victim, [
        f"$(touch {tmp_path / 'pwned-subst'})",
        f"; touch {tmp_path / 'pwned-semicolon'}; rm -rf {victim}",
        f"`touch {tmp_path / 'pwned-backtick'}`",
        f"| touch {tmp_path / 'pwned-pipe'}",
        f"&& touch {tmp_path / 'pwned-and'}",
    ]
