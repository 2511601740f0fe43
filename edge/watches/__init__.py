"""edge.watches."""
