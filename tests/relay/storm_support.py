"""A reconnect storm in a process of its own (so that the relay's CPU is the relay's):
``python -m storm_support`` reads ``{"url", "keys": [private identity, base64], "timeout"}``
on stdin, dials every link at once, speaks the real link protocol (challenge, signed
auth, welcome), and when a handshake is refused over HTTP waits its ``Retry-After`` and
dials again, as an edge does. Once every link is in (or ``timeout`` passed) it prints
one JSON tally and closes them all: refusals ``[seconds to the answer, hint]``, links
``[seconds from the start to the welcome, sum of the hints it waited]``, and any other
failure by kind (``closed 4408`` would be an auth timeout).

``run_storm`` starts it from a test and returns the tally.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import websockets
from link_support import linked
from websockets.exceptions import InvalidStatus

from shared.encoding import b64d, b64e
from shared.identity import Identity


async def dial(url: str, identity: Identity, t0: float, tally: dict[str, Any],
               done: asyncio.Event) -> None:
    hints = 0
    while not done.is_set():
        began = time.monotonic()
        try:
            async with linked(url, identity, 60, close_timeout=1):
                tally["links"].append([time.monotonic() - t0, hints])
                await done.wait()
                return
        except InvalidStatus as exc:
            body = json.loads(exc.response.body or b"{}")
            hint = int(exc.response.headers.get("Retry-After", "0"))
            tally["refusals"].append([time.monotonic() - began, hint,
                                      exc.response.status_code, body.get("error")])
            hints += hint
            await asyncio.sleep(hint)  # as told: what is under test
        except websockets.ConnectionClosed as exc:
            kind = f"closed {exc.rcvd.code if exc.rcvd else None}"
            tally["failures"][kind] = tally["failures"].get(kind, 0) + 1
            return
        except (OSError, TimeoutError) as exc:
            kind = type(exc).__name__
            tally["failures"][kind] = tally["failures"].get(kind, 0) + 1
            await asyncio.sleep(1)


async def storm(url: str, identities: list[Identity], timeout: float) -> dict[str, Any]:
    tally: dict[str, Any] = {"refusals": [], "links": [], "failures": {}}
    done = asyncio.Event()
    t0 = time.monotonic()
    tasks = [asyncio.create_task(dial(url, i, t0, tally, done)) for i in identities]
    deadline = t0 + timeout
    while len(tally["links"]) + sum(tally["failures"].values()) < len(identities):
        if time.monotonic() > deadline:
            break
        await asyncio.wait(tasks, timeout=0.1)
    tally["seconds"] = time.monotonic() - t0
    done.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return tally


async def run_storm(url: str, identities: list[Identity], timeout: float = 60
                    ) -> dict[str, Any]:
    """The storm in a child process; its tally."""
    here = Path(__file__).resolve().parent  # tests/relay; link_support is in tests/
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(here), str(here.parent), str(here.parent.parent),
         os.environ.get("PYTHONPATH", "")])}
    request = {"url": url, "timeout": timeout,
               "keys": [b64e(i.to_private_bytes()) for i in identities]}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "storm_support", env=env, cwd=here,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(process.communicate(json.dumps(request).encode()),
                                    timeout + 30)
    assert process.returncode == 0, out[-2000:]
    tally: dict[str, Any] = json.loads(out.splitlines()[-1])
    return tally


def main() -> None:
    request = json.loads(sys.stdin.read())
    identities = [Identity.from_private_bytes(b64d(k)) for k in request["keys"]]
    print(json.dumps(asyncio.run(storm(request["url"], identities, request["timeout"]))))


if __name__ == "__main__":
    main()
