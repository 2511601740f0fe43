"""edge.service: mailslot as a systemd or launchd service (units, install), and the doctor."""
