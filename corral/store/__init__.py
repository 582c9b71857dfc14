"""Postgres access through asyncpg and numbered migrations."""
