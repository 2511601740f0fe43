"""``python -m edge`` is ``mailslot``."""

from edge.cli import main

main()
