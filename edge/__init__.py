"""mailslot edge."""
