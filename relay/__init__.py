"""mailslot relay."""
