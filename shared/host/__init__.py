"""shared.host."""
