"""edge.link."""
