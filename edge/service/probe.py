"""One ``GET /healthz`` to the relay for ``mailslot doctor``: can it be reached, does its
TLS hold, and what time does it say it is.

The standard library's HTTP client on purpose: a probe must tell a TLS failure
(certificate, protocol) from a refused connection from a timeout, and read the answer's
``Date`` header as well as its body; the edge's relay client (``edge.link.relayclient``)
turns all of those into ``relay_unreachable``, which is right for every other command.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

#: Seconds the probe waits for the relay.
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Probe:
    """What one ``GET /healthz`` found. ``error`` set: no HTTP answer (``tls_error`` set
    too when the TLS handshake was what failed)."""

    url: str
    status: int | None = None
    healthy: bool = False
    #: The relay's clock less ours (seconds) at the middle of the request, or None.
    skew: float | None = None
    #: Where the relay's time came from: ``"healthz"`` (ms) or ``"date"`` (the header, 1 s).
    time_source: str | None = None
    error: str | None = None
    tls_error: str | None = None
    elapsed: float = 0.0


def probe_relay(relay_url: str, now: Callable[[], float] = time.time,
                timeout: float = PROBE_TIMEOUT) -> Probe:
    """``GET relay_url/healthz`` once, with certificate checks (the system's CA store)."""
    url = relay_url.rstrip("/") + "/healthz"
    context = ssl.create_default_context() if url.startswith("https:") else None
    request = urllib.request.Request(url, headers={"User-Agent": "mailslot-doctor"})
    sent = now()
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
            status, body, date = answer.status, answer.read(65536), answer.headers.get("Date")
    except urllib.error.HTTPError as exc:  # an answer all the same (503: store lost)
        status, body, date = exc.code, exc.read(65536), exc.headers.get("Date")
        exc.close()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        tls = reason if isinstance(reason, ssl.SSLError) else None
        return Probe(url, error=_describe(reason), tls_error=None if tls is None else
                     _describe(tls), elapsed=time.monotonic() - started)
    middle = (sent + now()) / 2
    doc = _json(body)
    skew, source = None, None
    relay_time = doc.get("time") if isinstance(doc, dict) else None
    if isinstance(relay_time, str):
        with contextlib.suppress(ValueError):
            skew, source = datetime.fromisoformat(relay_time).timestamp() - middle, "healthz"
    if skew is None and date:
        with contextlib.suppress(TypeError, ValueError):
            skew, source = parsedate_to_datetime(date).timestamp() - middle, "date"
    healthy = status == 200 and isinstance(doc, dict) and doc.get("ok") is True
    return Probe(url, status=status, healthy=healthy, skew=skew, time_source=source,
                 elapsed=time.monotonic() - started)


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _describe(reason: object) -> str:
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"certificate not trusted: {reason.verify_message}"
    if isinstance(reason, ssl.SSLError):
        return f"TLS failed: {reason.reason or reason}"
    if isinstance(reason, TimeoutError):
        return "no answer in time"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)
