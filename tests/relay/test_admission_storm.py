"""A reconnect storm beyond the handshake cap (``relay.admission``) on a real relay and
NATS: 200 links (``storm_support``, in a process of their own) dial at once into a relay
working on at most 24 handshakes, auth timeout 2 s. The excess is answered
``503 relay_full`` at once, with a ``Retry-After``, before the upgrade; no link is closed
``4408 auth_timeout``; each one that waits as told gets in, all within the hints they
were given."""

from __future__ import annotations

import statistics

from relay_support import relay_config_fixture, ws_url  # noqa: F401
from storm_support import run_storm
from test_drain_idle_edges import enroll_many

LINKS = 200
CAP = 24


async def test_a_storm_beyond_the_handshake_cap_is_shed_fast_and_every_link_gets_in(relay):
    identities = await enroll_many(relay, LINKS, account="storm")
    gate = relay.app.state.handshakes
    gate.cap = CAP
    tally = await run_storm(ws_url(relay), identities, timeout=60)
    print(f"storm: mean {gate.mean_seconds:.3f} s rate {gate.rate():.0f}/s; {len(tally['refusals'])} refusals, hints up to "
          f"{max((h for _, h, *_ in tally['refusals']), default=0)} s, all in after {tally['seconds']:.1f} s")
    assert tally["failures"] == {}  # no 4408 auth_timeout, nothing else
    assert len(tally["links"]) == LINKS
    refusals = tally["refusals"]
    assert len(refusals) >= LINKS // 2  # the storm did go well past the cap
    assert {(status, code) for _, _, status, code in refusals} == {(503, "relay_full")}
    # Refused at once (seen from a client process that is itself busy with the storm).
    assert statistics.median(s for s, *_ in refusals) < 1.5
    assert all(1 <= hint <= 30 for _, hint, *_ in refusals)
    # Each link is in within the hints it was given (plus the relay's own work): most
    # at the first or second try when they come back as told.
    late = [(t, h) for t, h in tally["links"] if t > h + 3.0]
    assert len(late) <= LINKS // 20, late[:10]
    assert gate.active == 0 and gate.refused == len(tally['refusals'])
