"""edge.intents."""
