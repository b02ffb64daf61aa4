"""Storage backends: memory, SQLite (the embedded default) and PostgreSQL."""
