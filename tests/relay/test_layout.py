"""The JetStream layout's names: every subject is built from validated tokens (a dot, a
wildcard or a space in an identity would reach other recipients' subjects), every bucket
is named once, and ``relay.store`` still answers for each name."""

from __future__ import annotations

import pytest

import relay.store
from relay import layout
from relay.layout import (
    BUCKETS,
    control_subject,
    interrupt_subject,
    link_subject,
    notify_subject,
    usage_subject,
)
from shared.envelope import Priority

#: A well-formed identity id, fixed (pytest-xdist workers must collect the same ids).
ME = "x5mpwf5c2jlczrwpkrpkxfwe6zk322fp"


def test_subjects_of_a_valid_identity() -> None:
    assert interrupt_subject(ME, Priority.now) == f"ms.in.{ME}.now"
    assert notify_subject(ME) == f"ms.ntf.{ME}"
    assert control_subject(ME) == f"ms.ctl.{ME}"
    assert usage_subject("acme") == "ms.usage.a.acme"
    assert usage_subject("acme", ME) == f"ms.usage.i.acme.{ME}"
    assert link_subject("acme") == "ms.link.acme.*.*"
    assert link_subject("acme", ME, "s-1_A") == f"ms.link.acme.{ME}.s-1_A"


@pytest.mark.parametrize("bad", ["", "a.b", "*", ">", "a b", ME + ".x", "x" * 200])
def test_no_subject_is_built_from_a_bad_token(bad: str) -> None:
    builds = [lambda: interrupt_subject(bad, Priority.next), lambda: notify_subject(bad),
              lambda: control_subject(bad), lambda: usage_subject(bad),
              lambda: usage_subject("acme", bad), lambda: link_subject(bad)]
    if bad != "*":  # the one wildcard a link's identity and session may be (a count)
        builds += [lambda: link_subject("acme", bad), lambda: link_subject("acme", ME, bad)]
    for build in builds:
        with pytest.raises(ValueError):
            build()


def test_each_bucket_is_named_once_and_the_store_reexports_the_layout() -> None:
    names = [b.name for b in BUCKETS]
    assert len(set(names)) == len(names) == 4
    assert {b.storage for b in BUCKETS} <= {"file", "memory"}
    for name in relay.store.__all__:
        if name != "Store":
            assert getattr(relay.store, name) is getattr(layout, name), name
