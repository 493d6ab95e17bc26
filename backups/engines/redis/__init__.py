"""The Redis engine (engine): RDB snapshots (rdb), copying keys (copy) and a private scratch server
(scratch)."""
