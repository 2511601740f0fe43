"""``python -m edge`` is ``mailslot``."""

from edge.cli.main import main

main()
