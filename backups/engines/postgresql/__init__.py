"""The PostgreSQL engine (engine) with its settings and client-version choice (settings, tools)."""
