"""Properties of ``relay.clientaddr`` for any ``X-Forwarded-For`` bytes and any peer:
it never raises; an untrusted peer is always the client; behind trusted proxies the
client is the right-most entry that is not one, whatever the client wrote left of it
(spoofing does not change who is counted); and every bucket key is a valid KV key,
one per IPv6 /64. Then the same headers sent to a real relay behind a trusted proxy
(an in-process relay on a real socket, real nats-server): never a 5xx, and the bucket
it spends from is the one ``relay.clientaddr`` names."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests_support import NatsServer

from fuzz.fuzz_support import SOON, Background
from relay.clientaddr import (
    Networks,
    bucket_key,
    client_address,
    parse_address,
    scope_client,
)
from relay.config import RelayConfig, UnauthenticatedLimits
from relay.server import RelayServer

KEY_RE = re.compile(r"[-/_=.a-zA-Z0-9]+")

ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6)
addresses = st.one_of(ipv4, ipv6)
networks = st.one_of(
    st.builds(lambda a, n: ipaddress.ip_network((a, n), strict=False), ipv4,
              st.integers(0, 32)),
    st.builds(lambda a, n: ipaddress.ip_network((a, n), strict=False), ipv6,
              st.integers(0, 128)),
)
trusted_sets = st.lists(networks, max_size=4).map(lambda n: Networks(tuple(n)))


def written(address: ipaddress.IPv4Address | ipaddress.IPv6Address, style: int) -> str:
    """An address as a proxy may write it: bare, bracketed, with a port."""
    text = str(address)
    if style == 1:
        return f"[{text}]" if address.version == 6 else f"{text}:443"
    if style == 2:
        return f"[{text}]:8080" if address.version == 6 else text
    return text


peers = st.one_of(addresses.map(str), st.text(max_size=40))
header_lines = st.lists(st.binary(max_size=120), max_size=3)


@given(peer=peers, lines=header_lines, trusted=trusted_sets)
def test_any_bytes_any_peer_never_raise(peer: str, lines: list[bytes], trusted: Networks):
    client = client_address(peer, lines, trusted)
    found = parse_address(peer)
    if found is None:
        assert client is None
    elif found not in trusted:
        assert client == found
    assert KEY_RE.fullmatch(bucket_key(client))
    scope = {"client": (peer, 1), "headers": [(b"x-forwarded-for", line) for line in lines]}
    assert scope_client(scope, trusted) == client


@given(
    client=addresses,
    hops=st.lists(st.tuples(addresses, st.integers(0, 2)), max_size=3),
    spoof=st.lists(st.one_of(st.binary(max_size=40), addresses.map(lambda a: str(a).encode())),
                   max_size=4),
    style=st.integers(0, 2),
    trusted=trusted_sets,
    last=addresses,
)
def test_the_right_most_untrusted_entry_is_the_client_whatever_was_spoofed(
    client, hops, spoof, style, trusted, last
):
    """Our proxies (``hops``, and ``last``, the peer; all trusted) each appended what they
    saw; the client wrote ``spoof`` itself. The client is counted, nothing it wrote."""
    ours = [norm(h) for h, _ in hops] + [norm(last)]
    chain = Networks((*trusted.networks, *(ipaddress.ip_network(a) for a in ours)))
    if norm(client) in chain:
        return  # a client inside our own proxies' ranges is one of them
    entries = [written(client, style)] + [written(h, s) for h, s in hops]
    line = b",".join([*spoof, *(e.encode() for e in entries)])
    assert client_address(str(last), [line], chain) == norm(client)


def norm(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> (
        ipaddress.IPv4Address | ipaddress.IPv6Address):
    """The address as ``relay.clientaddr`` counts it (IPv4-mapped IPv6 is IPv4)."""
    found = parse_address(str(address))
    assert found is not None
    return found


@given(address=ipv6, other=st.integers(0, 2**64 - 1))
def test_one_ipv6_64_is_one_bucket(address, other):
    same = ipaddress.IPv6Address((int(address) >> 64 << 64) | other)
    if address.ipv4_mapped is None and same.ipv4_mapped is None:
        assert bucket_key(address) == bucket_key(same)


# -- a real relay behind a trusted proxy --------------------------------------------------

TRUSTED = ("127.0.0.0/8", "10.0.0.0/8", "2001:db8:ff::/48")
BURST = 1_000_000
#: Bytes an HTTP header value may hold (h11 refuses the other control bytes to send).
_VALUE_BYTES = st.sampled_from([9, *range(0x20, 0x7F), *range(0x80, 0x100)])
forwarded_values = st.one_of(
    st.lists(_VALUE_BYTES, max_size=80).map(lambda b: bytes(b).strip(b" \t")),
    st.lists(st.one_of(addresses.map(str), st.sampled_from(["10.1.2.3", "2001:db8:ff::7",
                                                             "junk", "", "[::1]:80"])),
             min_size=1, max_size=4).map(lambda a: ", ".join(a).strip().encode()),
)


@pytest.fixture
def proxied_relay(nats_server: NatsServer, tmp_path: Path) -> Iterator[tuple[Background,
                                                                            RelayServer]]:
    bg = Background()
    server = RelayServer(RelayConfig(
        listen="127.0.0.1:0", nats=(nats_server.url,), data_dir=tmp_path / "relay",
        unauthenticated=UnauthenticatedLimits(rate=0.001, burst=BURST, exempt=()),
        trusted_proxies=TRUSTED,
    ))
    bg.run(server.start())
    try:
        yield bg, server
    finally:
        bg.run(server.stop())
        bg.close()


def test_fuzz_the_relay_spends_from_the_bucket_clientaddr_names(proxied_relay):
    bg, server = proxied_relay
    assert server.store is not None
    store, trusted = server.store, Networks.parse(TRUSTED)
    keys: set[str] = set()

    with httpx.Client(base_url=server.url, timeout=SOON) as http:

        @given(lines=st.lists(forwarded_values, max_size=2))
        def run(lines: list[bytes]) -> None:
            key = bucket_key(client_address("127.0.0.1", lines, trusted))
            before = bg.run(store.rate_get(key))
            headers = [(b"content-type", b"application/json"),
                       *((b"x-forwarded-for", line) for line in lines)]
            response = http.post("/v1/enroll", content=b"{}", headers=headers)
            assert response.status_code == 400, response.text
            assert response.json()["error"] == "malformed"
            after = bg.run(store.rate_get(key))
            assert after is not None, key
            units_before = before[0]["t"] if before is not None else BURST
            assert after[0]["t"] <= units_before - 0.99, (key, before, after)
            keys.add(key)

        run()
    assert len(keys) > 5, keys  # many clients were told apart, not one bucket for all
