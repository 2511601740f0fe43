"""Laptop life at full length (``scripts/laptop``; tests/system/test_laptop.py is the
short version in the suite).

A real nats-server, a real ``relay serve`` process and a real ``mailslot edge run`` with
the default ``edge.json`` (keepalive 20 s, backoff 0.5 s → 30 s), linked through a TCP
proxy (tests/blackhole_support.py):

1. black hole: the proxy stops forwarding both ways for ``--hole`` seconds (sockets stay
   open, as when a laptop's Wi-Fi goes or it changes networks); interrupts are sent
   meanwhile; then traffic flows again. Prints when the edge noticed the dead link
   (target: within the 20 s keepalive), how soon after the restore it linked again, and
   the counts.
2. freeze: the edge is stopped with SIGSTOP for ``--freeze`` seconds (two minutes by
   default, as a laptop lid; the relay pings a link that sent nothing for 120 s and gives
   20 s to answer, so a freeze past 140 s is seen dead by the relay too), interrupts are
   sent meanwhile, then SIGCONT. Prints how long until all arrived, whether the link was
   made anew, and counts.

Every interrupt the relay answered 202 for must be in the inbox exactly once; the script
exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from blackhole_support import BlackHoleProxy  # noqa: E402
from tests_support import (  # noqa: E402
    EdgeProcess,
    Member,
    NatsServer,
    RelayProcess,
    enroll,
    post_drafts,
    wait_until,
)

from edge.config import load_config, save_config  # noqa: E402


def status(member: Member) -> dict[str, object]:
    with member.inbox() as inbox:
        return inbox.status()


def inbox_ids(member: Member) -> list[str]:
    with member.inbox() as inbox:
        return [item.id for item in inbox.list(state=None, limit=100_000)]


async def send(relay: RelayProcess, member: Member, n: int, tag: str) -> set[str]:
    drafts = [{"to": member.id, "type": f"laptop.{tag}", "payload": {"n": i}}
              for i in range(n)]
    responses = await post_drafts(relay.url, member.token, drafts)
    assert all(r.status_code == 202 for r in responses), "a send was refused"
    return {r.json()["id"] for r in responses}


async def linked(member: Member, other_than: object = None, timeout: float = 60) -> object:
    await wait_until(lambda: status(member).get("connected") is True
                     and status(member).get("session") != other_than, timeout, "linked")
    return status(member).get("session")


async def trickle(relay: RelayProcess, member: Member, seconds: float, tag: str,
                  every: float = 2.0) -> set[str]:
    """One interrupt every ``every`` seconds for ``seconds``."""
    sent: set[str] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sent |= await send(relay, member, 1, tag)
        await asyncio.sleep(min(every, max(0.0, deadline - time.monotonic())))
    return sent


async def black_hole(args: argparse.Namespace, relay: RelayProcess, member: Member,
                     proxy: BlackHoleProxy) -> tuple[set[str], bool]:
    session = await linked(member)
    proxy.black_hole()
    holed = time.monotonic()
    noticed: float | None = None

    async def watch() -> None:
        nonlocal noticed
        await wait_until(lambda: status(member).get("connected") is False, args.hole + 60,
                         "noticed")
        noticed = time.monotonic() - holed

    watcher = asyncio.create_task(watch())
    sent = await trickle(relay, member, args.hole, "hole")
    proxy.restore()
    restored = time.monotonic()
    if noticed is None:
        watcher.cancel()
    await linked(member, other_than=session, timeout=120)
    relinked = time.monotonic() - restored
    await wait_until(lambda: sent <= set(inbox_ids(member)), 120, "all arrived")
    arrived = time.monotonic() - restored
    ok = noticed is not None and noticed <= 20 + 2
    print(f"black hole {args.hole:.0f}s: dead link noticed after "
          f"{'never' if noticed is None else f'{noticed:.1f}s'} (target <= 20 s keepalive); "
          f"linked again {relinked:.1f}s after the restore; {len(sent)} sent during the "
          f"hole, all in the inbox {arrived:.1f}s after the restore", flush=True)
    return sent, ok


async def freeze(args: argparse.Namespace, relay: RelayProcess, member: Member,
                 edge: EdgeProcess) -> set[str]:
    session = await linked(member)
    assert edge.process is not None
    edge.process.send_signal(signal.SIGSTOP)
    try:
        sent = await trickle(relay, member, args.freeze, "freeze", every=5.0)
    finally:
        edge.process.send_signal(signal.SIGCONT)
    continued = time.monotonic()
    await wait_until(lambda: sent <= set(inbox_ids(member)), 120, "all arrived")
    arrived = time.monotonic() - continued
    now = await linked(member, timeout=120)
    print(f"freeze {args.freeze:.0f}s: {len(sent)} sent while frozen, all in the inbox "
          f"{arrived:.1f}s after SIGCONT; link {'made anew' if now != session else 'kept'}",
          flush=True)
    return sent


async def run(args: argparse.Namespace, work: Path) -> int:
    nats = NatsServer(work / "nats")
    nats.start()
    relay = RelayProcess(nats.url, work / "relay")
    edge: EdgeProcess | None = None
    try:
        await relay.start()
        member = await enroll(relay, "laptop", work / "edge")
        paths = member.paths()
        defaults = load_config(paths).model_copy(update={
            "reconnect_base": 0.5, "reconnect_cap": 30.0, "keepalive": 20.0})
        async with BlackHoleProxy("127.0.0.1", relay.port) as proxy:
            save_config(paths, defaults.model_copy(update={"relay_url": proxy.url}))
            edge = EdgeProcess(member.home)
            edge.start()
            expected = await send(relay, member, 5, "before")
            ok = True
            if args.hole > 0:
                sent, noticed = await black_hole(args, relay, member, proxy)
                expected |= sent
                ok = ok and noticed
            if args.freeze > 0:
                expected |= await freeze(args, relay, member, edge)
            await wait_until(lambda: expected <= set(inbox_ids(member)), 60, "all in")
            ids = inbox_ids(member)
            once = len(ids) == len(set(ids)) and set(ids) == expected
            print(f"{len(expected)} interrupts answered 202, {len(ids)} in the inbox, "
                  f"{'each exactly once' if once else 'NOT each once'}", flush=True)
            return 0 if once and ok else 1
    finally:
        if edge is not None:
            edge.kill9()
        await relay.close()
        nats.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hole", type=float, default=60.0,
                        help="seconds of black hole (0: skip)")
    parser.add_argument("--freeze", type=float, default=120.0,
                        help="seconds the edge is stopped (0: skip)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mailslot-laptop-"))
    try:
        code = asyncio.run(run(args, work))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
