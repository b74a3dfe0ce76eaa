"""Storage: the database (SQLite embedded, PostgreSQL in production) and its migrations."""
