"""edge.cli."""
