"""Webhook ingress: a provider's webhook, verified at the door, reduced to a small
interrupt for one identity. ``model`` (what a hook is), ``verify`` (the signature, per
source; the route's order of checks is in its docstring), ``project`` (filter, type,
priority, the payload kept), ``stdwebhooks`` (the ``standardwebhooks`` adapter);
``registry`` (hooks as registry records, the delivery ids kept), ``routes`` (the door and
the admin API), ``cli`` (the ``mailslot relay hook`` parser; ``relay.hookcommands`` runs
them)."""
