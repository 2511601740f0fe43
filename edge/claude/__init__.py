"""Claude Code integration: its hooks (``hooks``) and its settings files (``settings``)."""
