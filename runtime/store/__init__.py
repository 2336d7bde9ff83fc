"""Stores for registrations and session state: SQLite (embedded) and Redis (cluster)."""
