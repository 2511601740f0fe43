"""The delivery tools of ``mailslot mcp`` (``edge.mcp.tools``): their arguments as the
client sends them, their answers, and their refusals with the CLI's codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import EdgePaths
from edge.errors import InvalidArguments, NotRetryable, UnknownDelivery
from edge.mcp.tools import TOOLS, Tools
from edge.store.deliveries import DeliveryQueue

SPECS = {spec.name: spec for spec in TOOLS}


def test_delivery_tools(tmp_path: Path) -> None:
    paths = EdgePaths(tmp_path / "config", tmp_path / "data")
    paths.ensure()
    tools = Tools(paths, "test")

    def call(name: str, **arguments: object) -> dict[str, object]:
        spec = SPECS[name]
        return spec.run(tools, spec.parse(arguments))

    assert call("deliveries_list") == {"deliveries": []}
    queue = DeliveryQueue.open(paths.engine_file)
    try:
        seq = queue.enqueue(wake=1, intent="ci", route={"kind": "mcp"}, session="api",
                            interrupts=["i1"], permissions={}, wake_doc={}, at=0.0,
                            skipped="route mcp disabled: test")
    finally:
        queue.close()
    (row,) = call("deliveries_list", which="failed")["deliveries"]
    assert (row["seq"], row["status"], row["retryable"]) == (seq, "failed", True)
    assert call("deliveries_show", id=str(seq))["session"] == "api"
    assert call("deliveries_retry", id=row["key"])["status"] == "pending"
    with pytest.raises(NotRetryable):
        call("deliveries_retry", id=row["key"])
    with pytest.raises(UnknownDelivery):
        call("deliveries_drop", id="msg_none")
    assert call("deliveries_drop", id=str(seq))["dropped"] is True
    for name, bad in (("deliveries_list", {"which": "all"}), ("deliveries_list", {"limit": -1}),
                      ("deliveries_show", {}), ("deliveries_retry", {"id": ""})):
        with pytest.raises(InvalidArguments):
            call(name, **bad)
