"""What this edge is: the installed package's version, as ``mailslot --version`` prints
it, the MCP server names itself (``serverInfo``) and the webhook channel says who calls
(``User-Agent: mailslot/<version>``)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from edge.config import APP_NAME


def package_version() -> str:
    """The installed ``mailslot`` distribution's version; ``unknown`` when run from a
    checkout that was never installed."""
    try:
        return version(APP_NAME)
    except PackageNotFoundError:
        return "unknown"
