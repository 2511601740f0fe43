"""Who is asking: the client address of a request, for the limits on the endpoints that
come before any credential (``relay.ratelimit.AddressLimiter``). Pure functions, no I/O.

The rule (the usual one, as nginx's ``real_ip_recursive``): the client is the socket's
peer, unless the peer is one of the configured trusted proxies (CIDRs). Then the
``X-Forwarded-For`` list is read from the right — each trusted proxy appended the
address it was talking to — skipping addresses that are themselves trusted proxies; the
first one that is not is the client (if all are, the left-most). Everything left of it
was written by the client and is never looked at, so a client cannot choose the address
it is counted under. A malformed entry within the part that is read (a trusted proxy
would not write one), or a header that is too long, means the peer is the client: never
an error.

The peer and the entries are normalised (``::ffff:1.2.3.4`` is ``1.2.3.4``; an IPv6
zone ``%eth0`` is malformed). ``bucket_key`` names the address in a KV key: IPv4 by
address, IPv6 by its /64 (one host is usually given a whole /64, so it cannot rotate
addresses within it to dodge the limit).

uvicorn's own ``proxy_headers`` is off (``relay.server``): this module is the only place
that reads ``X-Forwarded-For``.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

FORWARDED_FOR = b"x-forwarded-for"
#: IPv6 clients are counted per prefix of this length.
IPV6_PREFIX = 64
#: Longest entry of the header read (``[v6 address]:port`` fits easily); longer is malformed.
_ENTRY_MAX = 64
#: Header bytes read at most (all ``X-Forwarded-For`` lines together); more is malformed.
_HEADER_MAX = 8192
#: The bucket of a request whose peer is no IP address (not over TCP).
UNKNOWN_KEY = "addr.unknown"


def parse_networks(values: Iterable[object]) -> tuple[Network, ...]:
    """Trusted proxies as networks: each a CIDR (``10.0.0.0/8``, ``2001:db8::/32``) or a
    bare address (one host). ``ValueError`` naming the first bad one (host bits set in
    a CIDR is bad: ``10.0.0.1/8`` is probably a typo)."""
    networks: list[Network] = []
    for value in values:
        if not isinstance(value, str):
            raise ValueError(f"trusted proxies must be strings (CIDRs), not {value!r:.64}")
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=True))
        except ValueError as exc:
            raise ValueError(f"{value[:64]!r} is not a CIDR like 10.0.0.0/8: {exc}") from None
    return tuple(networks)


@dataclass(frozen=True)
class Networks:
    """A set of networks: the trusted proxies (whose ``X-Forwarded-For`` is believed),
    the addresses exempt from the limits. Empty: none."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, values: Iterable[object]) -> Networks:
        return cls(parse_networks(values))

    def __contains__(self, address: object) -> bool:
        return any(address in network for network in self.networks)


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> Address | None:
    """One address as a peer or an ``X-Forwarded-For`` entry: ``1.2.3.4``, ``2001:db8::1``,
    ``[2001:db8::1]``, and either with ``:port``; None if it is anything else. Cached
    (a pure function of the text, its answers immutable): the same few peers ask on
    every request, and ``ipaddress`` parsing is most of what a request's gate costs."""
    text = text.strip(" \t")
    if not text or len(text) > _ENTRY_MAX or not text.isascii():
        return None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not _is_port(rest)):
            return None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not _is_port(":" + port):
            return None
    else:
        host = text
    if "%" in host:
        return None  # an IPv6 zone names an interface of the sender's host: not a client
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_port(text: str) -> bool:
    return len(text) in range(2, 7) and text[0] == ":" and text[1:].isdigit()


def client_address(
    peer: str | None, forwarded: Sequence[bytes], trusted: Networks
) -> Address | None:
    """The client of a request from ``peer`` (the socket's, None if not TCP) carrying the
    ``X-Forwarded-For`` header lines ``forwarded`` (in order); None if the peer is no IP
    address. Never raises, whatever the bytes."""
    address = parse_address(peer) if peer is not None else None
    if address is None or not forwarded or address not in trusted:
        return address
    if sum(len(line) for line in forwarded) > _HEADER_MAX:
        return address
    entries = b",".join(forwarded).decode("latin-1").split(",")
    client = address
    for entry in reversed(entries):
        hop = parse_address(entry)
        if hop is None:
            return address  # not what a trusted proxy writes: count the peer
        client = hop
        if hop not in trusted:
            break
    return client


def scope_client(scope: Mapping[str, Any], trusted: Networks) -> Address | None:
    """``client_address`` of an ASGI HTTP or WebSocket scope."""
    peer = scope.get("client")
    host = peer[0] if isinstance(peer, tuple | list) and peer else None
    if not isinstance(host, str):
        return None
    if not trusted.networks:
        return parse_address(host)
    lines = [value for name, value in scope.get("headers", ()) if name == FORWARDED_FOR]
    return client_address(host, lines, trusted)


def bucket_key(address: Address | None) -> str:
    """The ``mailslot_rates`` key of ``address``'s bucket (only ``[-/_=.a-zA-Z0-9]``):
    ``addr.v4.203.0.113.7``; ``addr.v6.2001-0db8-0000-0001``, the /64 it is in;
    ``addr.unknown`` for None."""
    if address is None:
        return UNKNOWN_KEY
    if isinstance(address, ipaddress.IPv4Address):
        return f"addr.v4.{address}"
    prefix = ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False).network_address
    return "addr.v6." + "-".join(prefix.exploded.split(":")[: IPV6_PREFIX // 16])


def shown(address: Address | None) -> str:
    """How a refusal names the bucket it counts against (the client's own address)."""
    if address is None:
        return "this client"
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    prefix = ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False)
    return str(prefix)
