"""Deliveries recover in seconds after a crash: a real relay, a real edge daemon process
killed -9 while an exec runtime runs, a real restart. Every wake is delivered soon after
the restart; none that finished runs again; the one cut short runs again with the same
delivery key (at least once, and the runtime can tell), once the runtime the dead daemon
left running has been stopped."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from tests_support import EdgeProcess, post_drafts, wait_until

from edge.store.deliveries import Delivery, DeliveryQueue

WAKES = 10
#: The runtime of the wake after this many finished ones blocks until the edge is killed.
HOLD_AT = 3
KEY_RE = r"msg_[0-9A-HJKMNP-TV-Z]{26}"

RUNTIME = f"""
import os, sys, pathlib
sys.stdin.read()
work = pathlib.Path(sys.argv[1])
key = os.environ["MAILSLOT_DELIVERY"]

def note(line):
    with open(work / "log", "a") as f:
        f.write(line + "\\n")

note(f"start {{key}}")
done = sum(line.startswith("done") for line in (work / "log").read_text().splitlines())
held = work / "held"
if done == {HOLD_AT} and not held.exists():
    held.write_text(f"{{os.getpid()}} {{key}}")
    open(work / "gate").read()  # a fifo nobody opens: blocks until killed
note(f"done {{key}}")
"""


def lines(work: Path, what: str) -> list[str]:
    log = work / "log"
    text = log.read_text() if log.exists() else ""
    return [line.split()[1] for line in text.splitlines() if line.startswith(what)]


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan is reaped by whoever adopted it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def deliveries(engine_file: Path) -> list[Delivery]:
    if not engine_file.exists():
        return []
    queue = DeliveryQueue.open(engine_file)
    try:
        return queue.rows()
    finally:
        queue.close()


async def test_edge_killed_mid_exec_delivery(relay, make_member, tmp_path: Path) -> None:
    member = await make_member()
    assert member.home is not None
    paths = member.paths()
    work = tmp_path / "runtime"
    work.mkdir()
    os.mkfifo(work / "gate")
    (work / "runtime.py").write_text(RUNTIME)
    argv = [sys.executable, str(work / "runtime.py"), str(work)]
    (paths.config_dir / "intents.toml").write_text(
        '[[intent]]\nid = "jobs"\n[intent.match]\ntype = "job.*"\n'
        f'[intent.route]\nkind = "exec"\ntimeout = "60s"\nargv = {json.dumps(argv)}\n')
    edge = EdgeProcess(member.home)
    orphan: int | None = None
    edge.start()
    try:
        responses = await post_drafts(relay.url, member.token, [
            {"to": member.id, "type": "job.run", "priority": "now", "payload": {"n": n}}
            for n in range(WAKES)])
        assert [r.status_code for r in responses] == [202] * WAKES
        held = await wait_until(lambda: (work / "held").exists() and (work / "held").read_text(),
                                30, "a runtime running")
        await wait_until(lambda: len(deliveries(paths.engine_file)) == WAKES, 30,
                         "every wake queued for its runtime")
        edge.kill9()
        pid, interrupted = held.split()
        orphan = int(pid)
        finished = lines(work, "done")
        assert len(finished) == HOLD_AT and interrupted not in finished
        assert lines(work, "start")[-1] == interrupted

        restarted = time.monotonic()
        edge.start()
        await wait_until(lambda: len(lines(work, "done")) == WAKES, 15,
                         "every wake delivered after the restart")
        took = time.monotonic() - restarted
        # the restarted daemon stopped the runtime its previous life left blocked
        await wait_until(lambda: not running(orphan), 15, "the orphaned runtime stopped")
        await wait_until(lambda: all(d.status == "done" for d in deliveries(paths.engine_file)),
                         10, "every delivery recorded done")
        # the dead daemon's lock file was swept; only the running one's is left
        assert len(list(paths.instances_dir.glob("*.lock"))) == 1
    finally:
        edge.kill9()
        if orphan is not None:  # the runtime the kill -9 left behind, still blocked
            with contextlib.suppress(ProcessLookupError):
                os.killpg(orphan, signal.SIGKILL)

    rows = deliveries(paths.engine_file)
    keys = [d.key for d in rows]
    assert len(set(keys)) == WAKES and all(re.fullmatch(KEY_RE, k) for k in keys)
    starts, dones = Counter(lines(work, "start")), Counter(lines(work, "done"))
    assert set(dones) == set(keys) and set(dones.values()) == {1}  # each finished once
    # none of the finished ones ran again; the interrupted one ran again, same key
    assert starts == {k: 2 if k == interrupted else 1 for k in keys}
    assert {d.key: d.attempts for d in rows} == {k: 2 if k == interrupted else 1 for k in keys}
    assert took < 15
