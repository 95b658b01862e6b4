"""The durable state: one SQLite database in the data directory, through aiosqlite."""
