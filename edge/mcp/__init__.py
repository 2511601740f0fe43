"""edge.mcp."""
