"""edge.engine."""
