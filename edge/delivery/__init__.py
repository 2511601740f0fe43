"""edge.delivery."""
