"""edge.approvals."""
