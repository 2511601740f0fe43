"""edge.store: everything the edge keeps on disk.

``db`` is the one SQLite adapter (the only ``sqlite3`` import); on it sit the inbox
(``inbox``, ``inboxschema``, ``claims``), the engine's state (``enginestate``) with its
delivery queue (``deliveries``) and approval requests (``approvals``) in the same file,
and the watches' state (``watchstate``). The activity log (``activity``, ``activityline``,
``activitycheck``) is a hash-chained file of its own; ``instances`` records who is running.
"""
