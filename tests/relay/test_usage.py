"""``relay.usage``'s packing of a counter (bytes and interrupts in one integer), as
properties: any sum of packed amounts unpacks to the sums of its parts, negative
intermediate values included (an ack subtracted before its publish was added)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relay.config import Plan
from relay.usage import SHIFT, byte_caps, pack, unpack

sizes = st.integers(min_value=-(2**62), max_value=2**62)
counts = st.integers(min_value=-(SHIFT // 2) + 1, max_value=SHIFT // 2 - 1)


@given(st.lists(st.tuples(st.integers(-(2**40), 2**40), st.integers(-1000, 1000)),
                max_size=50))
def test_a_sum_of_packed_amounts_unpacks_to_the_sums(parts: list[tuple[int, int]]) -> None:
    total = sum(pack(size, count) for size, count in parts)
    assert unpack(total) == (sum(s for s, _ in parts), sum(c for _, c in parts))


@given(sizes, counts)
def test_unpack_inverts_pack(size: int, count: int) -> None:
    assert unpack(pack(size, count)) == (size, count)


def test_only_plans_with_a_byte_cap_keep_a_ledger() -> None:
    assert not byte_caps(Plan())
    assert not byte_caps(Plan(max_pending=5, max_connected_edges=2))
    assert byte_caps(Plan(max_pending_bytes=1))
    assert byte_caps(Plan(max_pending_bytes_per_identity=1))
