"""``relay.clientaddr``: the client address of a request — the peer, or the right-most
``X-Forwarded-For`` entry that is not a trusted proxy when the peer is one — and the KV
key of its bucket. Pure functions: no sockets here (the relay's use of them is in
``test_ratelimit_address.py``, the property tests in ``tests/fuzz/test_fuzz_clientaddr.py``)."""

from __future__ import annotations

import ipaddress
import re

import pytest

from relay.clientaddr import (
    Networks,
    bucket_key,
    client_address,
    parse_address,
    parse_networks,
    scope_client,
    shown,
)

PROXIES = Networks.parse(["10.0.0.0/8", "2001:db8:ff::/48"])
KEY_RE = re.compile(r"[-/_=.a-zA-Z0-9]+")


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("203.0.113.7", "203.0.113.7"),
    (" 203.0.113.7\t", "203.0.113.7"),
    ("203.0.113.7:5678", "203.0.113.7"),
    ("2001:db8::1", "2001:db8::1"),
    ("[2001:db8::1]", "2001:db8::1"),
    ("[2001:db8::1]:443", "2001:db8::1"),
    ("::ffff:203.0.113.7", "203.0.113.7"),  # IPv4-mapped: the IPv4 address
    ("[::ffff:203.0.113.7]:1", "203.0.113.7"),
])
def test_addresses_are_read_with_or_without_a_port(text, expected):
    assert parse_address(text) == ip(expected)


@pytest.mark.parametrize("text", [
    "", " ", "unknown", "_hidden", "203.0.113", "203.0.113.256", "010.0.0.1",
    "203.0.113.7:", "203.0.113.7:port", "203.0.113.7:1234567", "[2001:db8::1", "[2001:db8::1]x",
    "fe80::1%eth0", "[fe80::1%25eth0]", "2001:db8::1:80x", "\uff11.\uff12.\uff13.\uff14", "1.2.3.4, 5.6.7.8",
    "a" * 100,
])
def test_anything_else_is_no_address(text):
    assert parse_address(text) is None


def test_an_untrusted_peer_is_the_client_whatever_the_header_says():
    spoofed = [b"198.51.100.1"]
    assert client_address("203.0.113.7", spoofed, PROXIES) == ip("203.0.113.7")
    assert client_address("203.0.113.7", spoofed, Networks()) == ip("203.0.113.7")


def test_behind_trusted_proxies_the_right_most_untrusted_entry_is_the_client():
    # The client wrote "1.1.1.1, 2.2.2.2" itself; 203.0.113.7 is what our first proxy saw;
    # 10.1.1.1 is a second proxy of ours; 10.2.2.2 (the peer) the last.
    header = [b"1.1.1.1, 2.2.2.2", b"203.0.113.7, 10.1.1.1"]
    assert client_address("10.2.2.2", header, PROXIES) == ip("203.0.113.7")
    assert client_address("10.2.2.2", [b"203.0.113.7"], PROXIES) == ip("203.0.113.7")
    assert client_address("2001:db8:ff::9", [b"2001:db8:1::5"], PROXIES) == ip("2001:db8:1::5")


def test_when_every_hop_is_trusted_the_left_most_is_the_client():
    assert client_address("10.2.2.2", [b"10.0.0.5, 10.1.1.1"], PROXIES) == ip("10.0.0.5")


def test_a_trusted_peer_without_the_header_is_the_client():
    assert client_address("10.2.2.2", [], PROXIES) == ip("10.2.2.2")


@pytest.mark.parametrize("header", [
    [b""], [b"junk"], [b"203.0.113.7,"], [b"203.0.113.7, , 10.1.1.1"], [b"1.2.3.4 5.6.7.8"],
    [b"\xff\xfe"], [b"203.0.113.7, 10.1.1.1, nonsense"], [b"9" * 9000],
])
def test_a_malformed_header_from_a_trusted_proxy_counts_the_peer(header):
    assert client_address("10.2.2.2", header, PROXIES) == ip("10.2.2.2")


def test_junk_the_client_put_left_of_its_own_address_is_never_read():
    header = [b"\xff junk, [::1, 999.1.1.1, 203.0.113.7, 10.1.1.1"]
    assert client_address("10.2.2.2", header, PROXIES) == ip("203.0.113.7")


def test_a_peer_that_is_no_address_is_none():
    assert client_address("testclient", [b"203.0.113.7"], PROXIES) is None
    assert client_address(None, [], PROXIES) is None


def test_scope_client_reads_the_asgi_scope():
    scope = {"client": ("10.2.2.2", 5555),
             "headers": [(b"host", b"relay"), (b"x-forwarded-for", b"203.0.113.7")]}
    assert scope_client(scope, PROXIES) == ip("203.0.113.7")
    assert scope_client(scope, Networks()) == ip("10.2.2.2")
    assert scope_client({"client": None, "headers": []}, PROXIES) is None
    assert scope_client({}, PROXIES) is None


def test_bucket_keys_are_kv_keys_and_ipv6_is_counted_by_its_64():
    assert bucket_key(ip("203.0.113.7")) == "addr.v4.203.0.113.7"
    assert bucket_key(ip("2001:db8:1:2:aaaa::1")) == "addr.v6.2001-0db8-0001-0002"
    assert bucket_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")) == "addr.v6.2001-0db8-0001-0002"
    assert bucket_key(ip("2001:db8:1:3::1")) == "addr.v6.2001-0db8-0001-0003"
    assert bucket_key(None) == "addr.unknown"
    for key in (bucket_key(ip("::")), bucket_key(ip("ffff::")), bucket_key(ip("0.0.0.0"))):
        assert KEY_RE.fullmatch(key), key
    assert shown(ip("2001:db8:1:2::9")) == "2001:db8:1:2::/64"
    assert shown(ip("203.0.113.7")) == "203.0.113.7"


def test_networks_are_cidrs_or_addresses():
    nets = parse_networks(["10.0.0.0/8", "192.0.2.1", " ::1 ", "2001:db8::/32"])
    assert [str(n) for n in nets] == ["10.0.0.0/8", "192.0.2.1/32", "::1/128", "2001:db8::/32"]
    assert ip("10.9.9.9") in Networks(nets) and ip("11.0.0.1") not in Networks(nets)
    assert ip("::ffff:10.0.0.1") not in Networks(nets)  # normalised before it is looked up


@pytest.mark.parametrize("value", ["10.0.0.1/8", "10.0.0.0/33", "example.com", "", 8, None])
def test_a_bad_network_is_refused_by_name(value):
    with pytest.raises(ValueError, match="CIDR"):
        parse_networks([value])
